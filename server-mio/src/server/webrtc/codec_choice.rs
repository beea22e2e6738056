//! Which codec a WHIP publisher's stream is in, when its answer names several.
//!
//! The answer names every video codec of the offer that the relay passes through, H.264 first
//! (`whip::publisher_codecs`). A stack that can encode any of them (a browser, aiortc) sends
//! the answer's first. A stack whose encoder is fixed sends its own, and many of those offer
//! every codec their library knows: Pion's default media engine offers VP8, VP9, H.264 and
//! more whatever its track carries, and its sender fails ("codec is not supported by
//! remote") if the answer leaves its codec out. So the stream's codec is the one the first
//! video packet comes in: the stream starts with that packet (a few milliseconds after DTLS,
//! and it is the keyframe an encoder starts with), not before, so no viewer is ever told the
//! wrong codec. A publisher whose video does not come within [`CODEC_WAIT`] starts in the
//! preferred codec, as an answer naming one would have had it. What comes before (its audio)
//! is held, [`MAX_HELD`] packets at most, and goes to the relay first once the stream starts:
//! nothing the publisher sent is lost to the wait.
//!
//! Once the codec is known, video in another (an encoder that switched mid-stream) is
//! dropped and logged once: the viewers' sessions were negotiated for the first.

use std::time::{Duration, Instant};

use log::{info, warn};
use relay_core::VideoCodec;
use str0m::media::Pt;
use str0m::rtp::RtpPacket;

use super::peers::Role;
use super::whip::Publisher;
use crate::server::Server;

/// How long a connected publisher's stream waits for its first video packet to tell its codec.
pub(in crate::server) const CODEC_WAIT: Duration = Duration::from_secs(1);
/// Packets held while the codec is not known: [`CODEC_WAIT`] of Opus is 50; a publisher
/// sending more than this of something else loses the oldest.
const MAX_HELD: usize = 128;

impl Publisher {
    /// The codec a payload type of its video stands for.
    fn codec_of(&self, pt: Pt) -> Option<VideoCodec> {
        self.video_pts
            .iter()
            .find(|(p, _)| *p == pt)
            .map(|(_, c)| *c)
    }

    /// The codec its stream takes without video: the answer's first.
    fn preferred(&self) -> Option<VideoCodec> {
        self.video_pts.first().map(|(_, c)| *c)
    }

    /// Whether the stream waits for the first video packet to start.
    pub(in crate::server) fn codec_pending(&self) -> bool {
        self.video_codec.is_none() && !self.video_pts.is_empty()
    }

    /// A video packet in a codec other than its stream's: dropped, the first one logged.
    pub(in crate::server) fn other_codec(&mut self, id: u64, pt: Pt) {
        self.other_codec_packets += 1;
        if self.other_codec_packets == 1 {
            warn!(
                "WHIP publisher {id}: video in {:?} (payload type {pt}) while its stream is in \
                 {:?}; dropped (the encoder switched codecs mid-stream: viewers were \
                 negotiated for the first)",
                self.codec_of(pt),
                self.video_codec
            );
        }
    }
}

impl Server {
    /// A packet of a publisher whose stream waits for its codec (`Server::publisher_rtp`
    /// sends it here): held, unless it is video, which decides the codec: the stream starts,
    /// what was held goes to the relay, then this packet.
    pub(in crate::server) fn publisher_codec_waits(
        &mut self,
        id: u64,
        pkt: RtpPacket,
        now: Instant,
    ) {
        let Some(Role::Publisher(p)) = self.viewers.map.get_mut(&id).map(|v| &mut v.role) else {
            return;
        };
        let Some(codec) = p.codec_of(pkt.header.payload_type) else {
            if p.held.len() >= MAX_HELD {
                p.held.pop_front();
            }
            p.held.push_back(pkt);
            return;
        };
        p.video_codec = Some(codec);
        p.codec_wait = None;
        info!(
            "WHIP publisher {id}: its video comes in {} (its answer named {})",
            codec.label(),
            names(&p.video_pts)
        );
        self.publisher_starts(id, now);
        self.publisher_rtp(id, pkt, now);
    }

    /// The codec is known: the stream starts, and what was held goes to the relay.
    fn publisher_starts(&mut self, id: u64, now: Instant) {
        self.publisher_connected(id, now);
        let held = match self.viewers.map.get_mut(&id).map(|v| &mut v.role) {
            Some(Role::Publisher(p)) => std::mem::take(&mut p.held),
            _ => return,
        };
        for pkt in held {
            self.publisher_rtp(id, pkt, now);
        }
    }

    /// Run with a publisher's timeouts: when its stream has waited [`CODEC_WAIT`] for video,
    /// it starts in the preferred codec.
    pub(in crate::server) fn publisher_codec_timeout(&mut self, id: u64, now: Instant) {
        let Some(Role::Publisher(p)) = self.viewers.map.get_mut(&id).map(|v| &mut v.role) else {
            return;
        };
        if p.codec_wait.is_none_or(|t| now < t) {
            return;
        }
        p.video_codec = p.preferred();
        p.codec_wait = None;
        info!(
            "WHIP publisher {id}: no video within {} ms of connecting; its stream is in {}",
            CODEC_WAIT.as_millis(),
            p.video_codec.map_or("no video", |c| c.label())
        );
        self.publisher_starts(id, now);
    }
}

/// The distinct codecs of a list of payload types, for logs.
fn names(pts: &[(Pt, VideoCodec)]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for (_, c) in pts {
        if !out.contains(&c.label()) {
            out.push(c.label());
        }
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::webrtc::pool::publisher_config;
    use crate::server::webrtc::whip::{check_offer, publisher_codecs, Offerer};
    use std::net::SocketAddr;

    /// A Pion-like offer: every codec it knows, VP8 first.
    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99 102 103 45\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:98 VP9/90000\r\na=fmtp:98 profile-id=0\r\na=rtpmap:99 rtx/90000\r\na=fmtp:99 apt=98\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\na=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\na=rtpmap:45 ulpfec/90000\r\n";

    fn answered(offer: &str) -> (String, Publisher) {
        let (parsed, preferred) = check_offer(offer, Offerer::Publisher).unwrap();
        let codecs = publisher_codecs(offer, preferred);
        let mut rtc = publisher_config(&codecs).build(Instant::now());
        let answer = rtc.sdp_api().accept_offer(parsed).unwrap().to_sdp_string();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let p = Publisher::negotiated(&rtc, &answer, from, None);
        (answer, p)
    }

    #[test]
    fn the_answer_names_every_relayed_codec_of_the_offer_h264_first() {
        let (answer, p) = answered(OFFER);
        let m = answer.lines().find(|l| l.starts_with("m=video")).unwrap();
        assert_eq!(
            m, "m=video 9 UDP/TLS/RTP/SAVPF 102 103 96 97 98 99",
            "{answer}"
        );
        assert!(!answer.contains("ulpfec"));
        assert!(p.codec_pending());
        assert_eq!(p.codec_of(96.into()), Some(VideoCodec::Vp8));
        assert_eq!(p.codec_of(98.into()), Some(VideoCodec::Vp9));
        assert_eq!(p.codec_of(102.into()), Some(VideoCodec::H264));
        assert_eq!(p.codec_of(97.into()), None, "RTX is unwrapped by str0m");
        assert_eq!(p.preferred(), Some(VideoCodec::H264));
    }

    #[test]
    fn an_offer_of_one_codec_is_decided_by_its_answer() {
        let vp8_only = OFFER
            .replace(" 96 97 98 99 102 103 45", " 96 97")
            .lines()
            .filter(|l| {
                !l.contains(":98 ")
                    && !l.contains(":99 ")
                    && !l.contains(":102 ")
                    && !l.contains(":103 ")
                    && !l.contains(":45 ")
            })
            .map(|l| format!("{l}\r\n"))
            .collect::<String>();
        let (answer, p) = answered(&vp8_only);
        assert!(
            answer.contains("m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\n"),
            "{answer}"
        );
        assert!(!p.codec_pending());
        assert_eq!(p.video_codec, Some(VideoCodec::Vp8));
    }

    #[test]
    fn a_pull_keeps_the_codec_the_origin_named() {
        let (parsed, preferred) = check_offer(OFFER, Offerer::Publisher).unwrap();
        let codecs = publisher_codecs(OFFER, preferred);
        let mut rtc = publisher_config(&codecs).build(Instant::now());
        let answer = rtc.sdp_api().accept_offer(parsed).unwrap().to_sdp_string();
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let p = Publisher::negotiated(&rtc, &answer, from, Some(VideoCodec::Vp9));
        assert_eq!(p.video_codec, Some(VideoCodec::Vp9));
        assert!(p.video_pts.iter().all(|(_, c)| *c == VideoCodec::Vp9));
    }
}
