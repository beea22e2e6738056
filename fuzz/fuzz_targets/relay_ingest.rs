//! The relay fed arbitrary datagrams on a live stream's media port, or arbitrary RTP from a
//! WebRTC peer, with viewers joining, falling behind and asking for keyframes, replacements
//! between the two source kinds, and time moving. Input: records of
//! `[len: u8][dt_ms: u8][flags: u8][len bytes]`.
#![no_main]

use std::time::{Duration, Instant};

use ftl_proto::control::Metadata;
use ftl_proto::media::MediaParams;
use ftl_proto::ChannelId;
use libfuzzer_sys::fuzz_target;
use relay_core::{LayerId, MediaKind, Relay, RelayConfig, RtpIn, StreamParams, VideoCodec};

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut now = t0;
    let config = RelayConfig {
        gop_max_bytes: 64 * 1024,
        max_viewer_backlog: 1000,
        ..RelayConfig::default()
    };
    let mut relay = Relay::new(config);
    let channel = ChannelId(77);
    let params = StreamParams::Ftl {
        media: MediaParams::from_metadata(&Metadata::reference(77)),
        peer_ip: "127.0.0.1".parse().unwrap(),
    };
    let rtp_params = StreamParams::Rtp {
        video: Some(VideoCodec::H264),
        audio: true,
    };
    relay.start_stream(channel, params.clone(), now).unwrap();
    let from = "127.0.0.1:5000".parse().unwrap();
    let mut viewers = vec![relay.add_viewer(channel, now).unwrap()];
    let mut rest = data;
    while let [len, dt, flags, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (datagram, tail) = tail.split_at(len);
        rest = tail;
        now += Duration::from_millis(u64::from(*dt));
        if relay.poll_timeout().is_some_and(|t| t <= now) {
            relay.handle_timeout(now);
        }
        // A few bits of flags turn some datagrams' headers into the stream's own.
        let mut d = datagram.to_vec();
        if flags & 1 != 0 && d.len() >= 12 {
            d[0] = 0x80;
            d[1] = (d[1] & 0x80) | if flags & 2 != 0 { 96 } else { 97 };
            d[8..12].copy_from_slice(&(if flags & 2 != 0 { 78u32 } else { 77 }).to_be_bytes());
        }
        // Bit 2: the datagram waited on the machine (0 to 2.55 s): the overload policy.
        let queued = if flags & 4 != 0 {
            Duration::from_millis(u64::from(*dt) * 10)
        } else {
            Duration::ZERO
        };
        if flags & 8 != 0 {
            // As a WebRTC peer hands it over: header fields from the first bytes, the rest as
            // payload.
            let field = |i: usize| d.get(i).copied().unwrap_or(0);
            let rtp = RtpIn {
                kind: if flags & 2 != 0 {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                },
                // Simulcast layers, some past the most a stream keeps.
                layer: LayerId((field(6) >> 1) & 7),
                seq: u16::from_be_bytes([field(0), field(1)]),
                timestamp: u32::from_be_bytes([field(2), field(3), field(4), field(5)]),
                marker: field(6) & 1 != 0,
                payload: d.get(7..).unwrap_or_default().into(),
            };
            relay.handle_rtp_queued(channel, rtp, queued, now);
        } else {
            relay.handle_datagram_queued(channel, from, &d, queued, now);
        }
        match flags >> 4 {
            1 => viewers.push(relay.add_viewer(channel, now).unwrap_or(viewers[0])),
            2 => relay.remove_viewer(viewers[viewers.len() - 1]),
            3 => relay.report_backlog(viewers[0], usize::from(*dt) * 100),
            4 => {
                let _ = relay.request_keyframe(viewers[0], now);
            }
            5 => relay.stop_stream(channel, relay_core::EndReason::Disconnect),
            6 => {
                let _ = relay.start_stream(channel, params.clone(), now);
            }
            7 => {
                let _ = relay.start_stream(channel, rtp_params.clone(), now);
            }
            8 => {
                let link = relay_core::LinkReport {
                    loss: Some(f32::from(*dt) / 255.0),
                    estimate_bps: (dt & 1 != 0).then(|| u64::from(*dt) * 10_000),
                };
                let v = viewers[viewers.len() - 1];
                // A trial the link gives way under, now and then, between reports.
                if relay.viewer_link(v, link, now).is_some_and(|pad| pad > 0) && dt & 2 != 0 {
                    relay.viewer_trial_failed(v, now);
                }
            }
            9 => {
                let quality = match dt % 5 {
                    4 => relay_core::Quality::Auto,
                    n => relay_core::Quality::Fixed(LayerId(n)),
                };
                let _ = relay.set_viewer_quality(viewers[0], quality, now);
            }
            _ => {}
        }
        while relay.poll_output().is_some() {}
    }
});
