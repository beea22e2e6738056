//! Classifying a datagram received on an FTL media port.
//!
//! Pings (`81 fa`) and sender reports (`80 c8`) also parse as RTP with the marker bit set (PT 122
//! and 72), so the second byte decides first; only then is the datagram read as RTP and matched
//! against the stream's negotiated payload types and SSRCs.

use crate::media::bytes::u8_at;
use crate::media::ping::{FtlPing, PING_TYPE};
use crate::media::rtp::RtpPacket;
use crate::media::sender_report::SenderReport;
use crate::types::Ssrc;
use crate::Error;

/// The payload type and SSRC a track was announced with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackParams {
    pub payload_type: u8,
    pub ssrc: Ssrc,
}

/// What a stream's media port accepts, from the stream's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MediaParams {
    pub video: Option<TrackParams>,
    pub audio: Option<TrackParams>,
}

impl MediaParams {
    /// The parameters announced in a session's metadata.
    pub fn from_metadata(m: &crate::control::Metadata) -> Self {
        MediaParams {
            video: m.video.as_ref().map(|v| TrackParams {
                payload_type: v.payload_type,
                ssrc: v.ssrc,
            }),
            audio: m.audio.as_ref().map(|a| TrackParams {
                payload_type: a.payload_type,
                ssrc: a.ssrc,
            }),
        }
    }
}

/// What a datagram on a media port is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaDatagram<'a> {
    /// RTP on the video track.
    Video(RtpPacket<'a>),
    /// RTP on the audio track.
    Audio(RtpPacket<'a>),
    /// An FTL ping, to be echoed.
    Ping(FtlPing<'a>),
    /// A sender report of one of the stream's tracks.
    SenderReport(SenderReport),
    /// Well-formed RTP or RTCP that belongs to no announced track (wrong SSRC or payload type,
    /// or an RTCP type FTL does not send).
    Foreign { ssrc: Ssrc, packet_type: u8 },
    /// Not parseable as anything FTL sends.
    Invalid(Error),
}

/// Classifies a datagram against the stream's tracks.
pub fn classify<'a>(datagram: &'a [u8], params: &MediaParams) -> MediaDatagram<'a> {
    let second = u8_at(datagram, 1);
    if second == PING_TYPE {
        return match FtlPing::parse(datagram) {
            Ok(p) => MediaDatagram::Ping(p),
            Err(e) => MediaDatagram::Invalid(e),
        };
    }
    // RTCP (RFC 5761 §4); FTL sends only sender reports.
    if crate::media::rtp::is_rtcp(second) {
        if second != crate::media::sender_report::SR_TYPE {
            if let Err(e) = crate::media::bytes::need("RTCP header", datagram, 8) {
                return MediaDatagram::Invalid(e);
            }
            let version = u8_at(datagram, 0) >> 6;
            if version != 2 {
                return MediaDatagram::Invalid(Error::BadVersion(version));
            }
            return MediaDatagram::Foreign {
                ssrc: Ssrc(crate::media::bytes::u32_at(datagram, 4)),
                packet_type: second,
            };
        }
        return match SenderReport::parse(datagram) {
            Ok(sr) if is_track(params, sr.ssrc) => MediaDatagram::SenderReport(sr),
            Ok(sr) => MediaDatagram::Foreign {
                ssrc: sr.ssrc,
                packet_type: second,
            },
            Err(e) => MediaDatagram::Invalid(e),
        };
    }
    let rtp = match RtpPacket::parse(datagram) {
        Ok(p) => p,
        Err(e) => return MediaDatagram::Invalid(e),
    };
    let matches = |t: &Option<TrackParams>| {
        t.is_some_and(|t| t.ssrc == rtp.ssrc() && t.payload_type == rtp.payload_type())
    };
    if matches(&params.video) {
        MediaDatagram::Video(rtp)
    } else if matches(&params.audio) {
        MediaDatagram::Audio(rtp)
    } else {
        MediaDatagram::Foreign {
            ssrc: rtp.ssrc(),
            packet_type: rtp.payload_type(),
        }
    }
}

fn is_track(params: &MediaParams, ssrc: Ssrc) -> bool {
    params.video.is_some_and(|t| t.ssrc == ssrc) || params.audio.is_some_and(|t| t.ssrc == ssrc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ping::build_ping;
    use crate::media::rtp::RtpHeader;
    use crate::media::Nack;

    fn params() -> MediaParams {
        MediaParams {
            video: Some(TrackParams {
                payload_type: 96,
                ssrc: Ssrc(78),
            }),
            audio: Some(TrackParams {
                payload_type: 97,
                ssrc: Ssrc(77),
            }),
        }
    }

    fn rtp(pt: u8, ssrc: u32) -> Vec<u8> {
        RtpHeader {
            marker: true,
            payload_type: pt,
            sequence_number: 1,
            timestamp: 2,
            ssrc: Ssrc(ssrc),
        }
        .build(&[1, 2, 3])
    }

    #[test]
    fn sorts_every_kind() {
        let p = params();
        assert!(matches!(
            classify(&rtp(96, 78), &p),
            MediaDatagram::Video(_)
        ));
        assert!(matches!(
            classify(&rtp(97, 77), &p),
            MediaDatagram::Audio(_)
        ));
        assert!(matches!(
            classify(&build_ping(1), &p),
            MediaDatagram::Ping(_)
        ));
        let sr = SenderReport {
            ssrc: Ssrc(78),
            ntp: 1,
            rtp_timestamp: 2,
            packet_count: 3,
            octet_count: 4,
        };
        assert_eq!(classify(&sr.build(), &p), MediaDatagram::SenderReport(sr));
    }

    #[test]
    fn foreign_and_invalid() {
        let p = params();
        // Right SSRC, wrong payload type; and an unknown SSRC.
        assert_eq!(
            classify(&rtp(97, 78), &p),
            MediaDatagram::Foreign {
                ssrc: Ssrc(78),
                packet_type: 97
            }
        );
        assert_eq!(
            classify(&rtp(96, 5), &p),
            MediaDatagram::Foreign {
                ssrc: Ssrc(5),
                packet_type: 96
            }
        );
        let sr = SenderReport {
            ssrc: Ssrc(5),
            ntp: 0,
            rtp_timestamp: 0,
            packet_count: 0,
            octet_count: 0,
        };
        assert!(matches!(
            classify(&sr.build(), &p),
            MediaDatagram::Foreign { .. }
        ));
        let nack = Nack::new(Ssrc(1), Ssrc(78), &[1]).build();
        assert!(matches!(
            classify(&nack, &p),
            MediaDatagram::Foreign {
                packet_type: 205,
                ..
            }
        ));
        assert!(matches!(classify(&[], &p), MediaDatagram::Invalid(_)));
        assert!(matches!(
            classify(&[0x81, 0xfa], &p),
            MediaDatagram::Invalid(_)
        ));
        assert!(matches!(
            classify(&[0x80, 200, 0, 6], &p),
            MediaDatagram::Invalid(_)
        ));
        assert!(matches!(
            classify(&[0x00; 20], &p),
            MediaDatagram::Invalid(Error::BadVersion(0))
        ));
        // A stream without audio takes no audio.
        let video_only = MediaParams { audio: None, ..p };
        assert!(matches!(
            classify(&rtp(97, 77), &video_only),
            MediaDatagram::Foreign { .. }
        ));
    }

    #[test]
    fn every_prefix_of_every_kind_is_safe() {
        let p = params();
        let sr = SenderReport {
            ssrc: Ssrc(78),
            ntp: 1,
            rtp_timestamp: 2,
            packet_count: 3,
            octet_count: 4,
        };
        let samples = [rtp(96, 78), build_ping(7).to_vec(), sr.build().to_vec()];
        for s in &samples {
            for len in 0..=s.len() {
                let _ = classify(&s[..len], &p);
            }
        }
        for len in 0..64 {
            for fill in [0u8, 0x80, 0xff] {
                let _ = classify(&vec![fill; len], &p);
            }
        }
    }
}
