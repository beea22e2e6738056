//! The relay's second source: RTP that a WebRTC peer (a WHIP publisher) already decrypted and
//! repaired. Same fan-out, GOP cache and viewers as FTL; no NACKs of its own; keyframes can be
//! asked of the encoder.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use ftl_proto::ChannelId;
use relay_core::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Video payloads a viewer got, in order.
fn payloads(h: &Harness, v: ViewerId) -> Vec<Vec<u8>> {
    h.video(v).iter().map(|f| f.payload.to_vec()).collect()
}

/// When the fixture's second keyframe (its SPS) was sent.
fn second_keyframe_at(sent: &[Sent]) -> Duration {
    sent.iter()
        .filter(|s| s.kind == Some(MediaKind::Video) && s.bytes[12] & 0x1f == 7)
        .nth(1)
        .unwrap()
        .at
}

#[test]
fn an_rtp_stream_reaches_viewers_exactly_as_an_ftl_stream_does() {
    let sent = session(&SessionSpec::default());
    let mut ftl = Harness::new(RelayConfig::default());
    ftl.start(77);
    let fv = ftl.join(77);
    let mut rtp = Harness::new(RelayConfig::default());
    rtp.start_rtp(77);
    let rv = rtp.join(77);
    let mut late = None;
    for s in &sent {
        ftl.feed(77, peer(), &s.bytes, s.at);
        rtp.feed_rtp(77, s);
        if late.is_none() && s.at >= ms(1500) {
            late = Some((ftl.join(77), rtp.join(77)));
        }
    }
    let expected = video_payloads_from_keyframe(&sent, 0);
    assert_eq!(payloads(&rtp, rv), expected);
    assert_eq!(payloads(&ftl, fv), payloads(&rtp, rv));
    // A late joiner gets the cached GOP at once from both sources, the same packets.
    let (fl, rl) = late.unwrap();
    assert!(rtp.video(rl)[0].cached && rtp.video(rl)[0].keyframe);
    assert_eq!(payloads(&ftl, fl), payloads(&rtp, rl));
    let fwd = |h: &Harness, v| -> Vec<(u64, u32, bool)> {
        h.video(v)
            .iter()
            .map(|f| (f.seq, f.timestamp, f.marker))
            .collect()
    };
    assert_eq!(fwd(&ftl, fl), fwd(&rtp, rl), "same numbering and timing");
    assert_eq!(rtp.audio(rv).len(), ftl.audio(fv).len());
    assert!(!rtp.audio(rv).is_empty());
    // The cache served everyone: the encoder was never asked.
    assert!(rtp.keyframe_requests.is_empty());
    assert!(ftl.keyframe_requests.is_empty());
}

#[test]
fn the_wrong_source_kind_is_dropped() {
    let sent = session(&SessionSpec::default());
    let video = sent
        .iter()
        .find(|s| s.kind == Some(MediaKind::Video))
        .unwrap();
    let mut h = Harness::new(RelayConfig::default());
    h.start_rtp(77);
    h.start(78);
    assert_eq!(
        h.feed(77, peer(), &video.bytes, ms(0)),
        Ingest::Dropped(Drop::ForeignSource)
    );
    assert_eq!(
        h.feed_rtp(78, video),
        Some(Ingest::Dropped(Drop::ForeignSource))
    );
    assert_eq!(h.feed_rtp(79, video), Some(Ingest::Dropped(Drop::NotLive)));
    let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    assert_eq!(st.counters.video_packets, 0);
}

#[test]
fn gaps_are_left_to_the_peer_and_never_nacked() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start_rtp(77);
    let v = h.join(77);
    let mut late = Vec::new();
    for (i, s) in sent.iter().enumerate() {
        if i % 17 == 5 && s.kind.is_some() {
            late.push(s.clone());
            continue;
        }
        h.feed_rtp(77, s);
        // The peer's own repair brings a packet back a little later.
        if late.len() > 2 {
            let r = late.remove(0);
            let mut r = r.clone();
            r.at = s.at;
            h.feed_rtp(77, &r);
        }
    }
    h.advance_to(sent.last().unwrap().at + ms(2000));
    assert!(h.transmits.is_empty(), "an RTP stream sends no NACKs");
    let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    assert!(st.counters.missing > 0);
    assert_eq!(st.counters.nacked, 0);
    assert!(!h.video(v).is_empty());
}

#[test]
fn a_joiner_with_nothing_cached_gets_a_keyframe_asked_of_the_encoder() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start_rtp(77);
    // Media starts mid-GOP: drop everything before the second keyframe's frame.
    let second_kf = second_keyframe_at(&sent);
    let mid: Vec<&Sent> = sent.iter().filter(|s| s.at >= ms(200)).collect();
    h.feed_rtp(77, mid[0]);
    assert!(h.keyframe_requests.is_empty(), "nobody is waiting yet");
    let v = h.join(77);
    assert_eq!(
        h.keyframe_requests,
        vec![(h.now - h.t0, ChannelId(77), LayerId(0))],
        "asked at once"
    );
    // A second joiner within the interval does not ask again.
    let w = h.join(77);
    assert_eq!(h.keyframe_requests.len(), 1);
    // No keyframe comes for a while: the request is repeated once a second, not more.
    for s in &mid {
        if s.at >= second_kf {
            break;
        }
        h.feed_rtp(77, s);
    }
    let n = h.keyframe_requests.len();
    let span = second_kf - ms(200);
    assert!(
        n as u128 >= span.as_millis() / 1000 && n as u128 <= span.as_millis() / 1000 + 1,
        "{n} requests over {span:?}"
    );
    for pair in h.keyframe_requests.windows(2) {
        assert!(pair[1].0 - pair[0].0 >= Duration::from_secs(1));
    }
    // The keyframe arrives: both viewers start there and the requests stop.
    for s in mid.iter().filter(|s| s.at >= second_kf) {
        h.feed_rtp(77, s);
    }
    h.advance_to(sent.last().unwrap().at + ms(3000));
    let expected = video_payloads_from_keyframe(&sent, 1);
    assert_eq!(payloads(&h, v), expected);
    assert_eq!(payloads(&h, w), expected);
    assert_eq!(
        h.keyframe_requests.len(),
        n,
        "no request once a keyframe came"
    );
    let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    assert_eq!(st.counters.keyframe_requests as usize, n);
}

#[test]
fn a_viewer_pli_goes_to_the_cache_first_and_to_the_encoder_when_it_is_empty() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig {
        gop_max_bytes: 12_000,
        ..RelayConfig::default()
    });
    h.start_rtp(77);
    let v = h.join(77);
    // Up to half a GOP: the cache holds it, and a PLI is answered from there.
    for s in sent.iter().filter(|s| s.at < ms(300)) {
        h.feed_rtp(77, s);
    }
    h.advance_to(ms(300));
    assert!(
        h.relay
            .stream_stats(ChannelId(77), h.now)
            .unwrap()
            .gop_bytes
            > 0
    );
    h.relay.request_keyframe(v, h.now).unwrap();
    h.drain();
    assert!(h.video(v).iter().any(|f| f.cached));
    assert!(h.keyframe_requests.is_empty());
    // The GOP outgrows the (small) cache: a PLI now goes to the encoder.
    let mut overflowed = false;
    for s in sent.iter().filter(|s| s.at >= ms(300)) {
        h.feed_rtp(77, s);
        let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
        if st.counters.gop_overflows > 0 && st.gop_bytes == 0 {
            overflowed = true;
            break;
        }
    }
    assert!(overflowed, "the fixture's GOP outgrows 12 kB");
    h.advance_to(h.now - h.t0 + ms(1000));
    h.relay.request_keyframe(v, h.now).unwrap();
    h.drain();
    assert_eq!(h.keyframe_requests.len(), 1);
    let vs = h.relay.viewer_stats(v).unwrap();
    assert_eq!((vs.keyframes_from_cache, vs.keyframes_from_encoder), (1, 1));
}

/// A browser publisher's GOP runs until someone asks for a keyframe: a replay of a GOP that
/// old would send seconds of the stream at once to a viewer that just lost packets. Past
/// `restart_replay_max_age` a watching viewer's PLI goes to the encoder; an FTL stream (which
/// cannot be asked) still answers from the cache.
#[test]
fn a_pli_late_in_a_long_gop_goes_to_the_encoder_not_to_a_replay() {
    let sent = session(&SessionSpec::default());
    let second_kf = second_keyframe_at(&sent);
    let late = ms(900);
    assert!(second_kf > late, "the fixture's first GOP runs past 900 ms");
    for rtp in [true, false] {
        let mut h = Harness::new(RelayConfig::default());
        if rtp {
            h.start_rtp(77);
        } else {
            h.start(77);
        }
        let v = h.join(77);
        for s in sent.iter().filter(|s| s.at < late) {
            if rtp {
                h.feed_rtp(77, s);
            } else {
                h.feed(77, peer(), &s.bytes, s.at);
            }
        }
        h.advance_to(late);
        h.drain();
        let before = h.video(v).len();
        h.relay.request_keyframe(v, h.now).unwrap();
        h.drain();
        let replayed = h.video(v)[before..].iter().filter(|f| f.cached).count();
        let vs = h.relay.viewer_stats(v).unwrap();
        if rtp {
            assert_eq!(replayed, 0, "no replay of a 900 ms GOP");
            assert_eq!(h.keyframe_requests.len(), 1);
            assert_eq!((vs.keyframes_from_cache, vs.keyframes_from_encoder), (0, 1));
        } else {
            assert!(replayed > 20, "FTL: the GOP replayed ({replayed} packets)");
            assert!(h.keyframe_requests.is_empty());
            assert_eq!((vs.keyframes_from_cache, vs.keyframes_from_encoder), (1, 0));
        }
    }
}

#[test]
fn an_ftl_stream_never_asks_for_keyframes() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    for s in sent.iter().filter(|s| s.at >= ms(200)) {
        h.feed(77, peer(), &s.bytes, s.at);
        if s.at >= ms(300) && h.relay.channel_viewers(ChannelId(77)) == 0 {
            let v = h.join(77);
            h.relay.request_keyframe(v, h.now).unwrap();
            h.drain();
        }
    }
    h.advance_to(ms(10_000));
    assert!(h.keyframe_requests.is_empty());
}

#[test]
fn replacement_both_ways_keeps_viewers_going_with_continuous_numbering() {
    let sent = session(&SessionSpec::default());
    let half = ms(2000);
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    for s in sent.iter().filter(|s| s.at < half) {
        h.feed(77, peer(), &s.bytes, s.at);
    }
    let before = h.video(v).len();
    // A WHIP publisher takes the channel over; its viewer needs a keyframe.
    h.start_rtp(77);
    assert_eq!(
        h.keyframe_requests.len(),
        0,
        "no video from the publisher yet"
    );
    let restarted = session(&SessionSpec {
        first_video_seq: 40_000,
        first_video_ts: 123_456,
        ..SessionSpec::default()
    });
    // Its media starts mid-GOP (the publisher's first keyframe was lost or it sent none).
    for s in restarted.iter().filter(|s| s.at >= ms(200)) {
        let mut s = s.clone();
        s.at += half;
        h.feed_rtp(77, &s);
    }
    assert_eq!(
        h.keyframe_requests.first().map(|r| r.0),
        Some(half + ms(200)),
        "asked as soon as its video arrived"
    );
    let got = h.video(v);
    assert!(got.len() > before);
    assert!(got[before].keyframe);
    assert_eq!(
        got[before..]
            .iter()
            .map(|f| f.payload.to_vec())
            .collect::<Vec<_>>(),
        video_payloads_from_keyframe(&restarted, 1)
    );
    // Numbering runs on across the replacement.
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    // And back to FTL: the viewer continues again.
    let n = got.len();
    h.start(77);
    let third = session(&SessionSpec {
        first_video_seq: 9,
        ..SessionSpec::default()
    });
    for s in &third {
        h.feed(77, peer(), &s.bytes, s.at + half * 3);
    }
    let got = h.video(v);
    assert!(got[n].keyframe && got.len() > n);
    for w in got.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1);
    }
    let ends: Vec<_> = h
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::StreamEnded { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![EndReason::Replaced, EndReason::Replaced]);
}

/// A harness with a stream on channel 77 from either source.
fn started(rtp: bool) -> Harness {
    let mut h = Harness::new(RelayConfig::default());
    if rtp {
        h.start_rtp(77);
    } else {
        h.start(77);
    }
    h
}

/// Feeds one datagram of a session through either source.
fn feed(h: &mut Harness, rtp: bool, s: &Sent) {
    if rtp {
        h.feed_rtp(77, s);
    } else {
        h.feed(77, peer(), &s.bytes, s.at);
    }
}

/// A frame of B slices (slice_type 1) between P frames, as x264 with `bframes=2` sends.
fn b_frame_payload() -> Vec<u8> {
    vec![0x01, 0xa0, 0x11, 0x22]
}

#[test]
fn b_frames_are_flagged_once_for_either_source() {
    for rtp in [false, true] {
        let sent = session(&SessionSpec::default());
        let mut h = started(rtp);
        let mut n = 0;
        for s in &sent {
            if s.at > ms(500) && s.kind == Some(MediaKind::Video) && n < 3 {
                // Rewrite a few single-NAL P payloads into B slices.
                if s.bytes[12] & 0x1f == 1 && s.bytes.len() > 14 {
                    let mut b = s.clone();
                    b.bytes.truncate(12);
                    b.bytes.extend(b_frame_payload());
                    n += 1;
                    feed(&mut h, rtp, &b);
                    continue;
                }
            }
            feed(&mut h, rtp, s);
            if s.at <= ms(500) {
                let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
                assert!(!st.b_frames, "a stream without B-frames is never flagged");
            }
        }
        assert!(n > 0);
        let flagged: Vec<_> = h
            .events
            .iter()
            .filter(|(_, e)| matches!(e, Event::BFrames { .. }))
            .collect();
        assert_eq!(flagged.len(), 1, "said once (rtp {rtp})");
        assert!(h.relay.stream_stats(ChannelId(77), h.now).unwrap().b_frames);
    }
}

#[test]
fn the_fixture_has_no_b_frames() {
    for rtp in [false, true] {
        let sent = session(&SessionSpec::default());
        let mut h = started(rtp);
        for s in &sent {
            feed(&mut h, rtp, s);
        }
        assert!(!h
            .events
            .iter()
            .any(|(_, e)| matches!(e, Event::BFrames { .. })));
    }
}

/// Real encoder output: x264's default 2 B-frames are flagged within the first GOP over
/// either source; the same encoder without B-frames never is.
#[test]
fn ffmpeg_b_frames_are_found_within_the_first_gop() {
    for rtp in [false, true] {
        for (video, has_b) in [(VIDEO_B_FRAMES, true), (VIDEO_HIGH, false)] {
            let sent = session(&SessionSpec {
                video,
                loops: 2,
                ..SessionSpec::default()
            });
            let mut h = started(rtp);
            for s in &sent {
                feed(&mut h, rtp, s);
            }
            let flagged: Vec<Duration> = h
                .events
                .iter()
                .filter(|(_, e)| matches!(e, Event::BFrames { .. }))
                .map(|(t, _)| *t)
                .collect();
            let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
            assert_eq!(st.b_frames, has_b, "rtp {rtp}, B-frames {has_b}");
            if has_b {
                assert_eq!(flagged.len(), 1, "said once (rtp {rtp})");
                // A GOP is 30 frames at 30 fps: one second.
                assert!(flagged[0] < ms(1000), "flagged at {:?}", flagged[0]);
            } else {
                assert!(flagged.is_empty(), "rtp {rtp}: {flagged:?}");
            }
        }
    }
}

#[test]
fn rtp_sender_reports_share_one_clock() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start_rtp(77);
    let v = h.join(77);
    // Both tracks' reports: video ts 0 and audio ts 0 both at NTP 1000 s.
    let ntp = 1000u64 << 32;
    h.relay
        .handle_sender_report(ChannelId(77), MediaKind::Video, LayerId(0), ntp, 0, h.now);
    h.relay
        .handle_sender_report(ChannelId(77), MediaKind::Audio, LayerId(0), ntp, 0, h.now);
    for s in &sent {
        h.feed_rtp(77, s);
    }
    let a = h.audio(v);
    let vid = h.video(v);
    // Audio packet n (ts n*960) and the video frame at the same media time map to the same
    // wallclock, whatever their arrival.
    let a50 = a.iter().find(|f| f.timestamp == 50 * 960).unwrap();
    let v30 = vid.iter().find(|f| f.timestamp == 30 * 3000).unwrap();
    assert_eq!(a50.wallclock, v30.wallclock);
    assert_eq!(a50.wallclock - h.t0, Duration::from_secs(1));
}

/// The payloads of the `k`-th keyframe's frame of a session (the packets sharing its
/// timestamp, from its parameter sets on).
fn keyframe_payloads(sent: &[Sent], k: usize) -> Vec<Vec<u8>> {
    let video: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.kind == Some(MediaKind::Video))
        .collect();
    let first = video
        .iter()
        .enumerate()
        .filter(|(_, s)| s.bytes[12] & 0x1f == 7)
        .map(|(i, _)| i)
        .nth(k)
        .unwrap();
    let ts = &video[first].bytes[4..8];
    video[first..]
        .iter()
        .take_while(|s| &s.bytes[4..8] == ts)
        .map(|s| s.bytes[12..].to_vec())
        .collect()
}

#[test]
fn the_cached_keyframe_is_given_whole_for_a_still_picture() {
    let sent = session(&SessionSpec::default());
    for rtp in [false, true] {
        let mut h = started(rtp);
        assert_eq!(h.relay.keyframe(ChannelId(77)), None);
        let mut seen = Vec::new();
        for s in &sent {
            feed(&mut h, rtp, s);
            if let Some(k) = h.relay.keyframe(ChannelId(77)) {
                if seen.last() != Some(&k.ts) {
                    seen.push(k.ts);
                    let got: Vec<Vec<u8>> = k.payloads.iter().map(|p| p.to_vec()).collect();
                    assert_eq!(got, keyframe_payloads(&sent, seen.len() - 1), "rtp: {rtp}");
                    assert_eq!(k.codec, VideoCodec::H264);
                    assert_eq!(k.size, Some((320, 180)));
                }
            }
        }
        assert_eq!(
            seen.len(),
            4,
            "every keyframe of the 4 s fixture, once whole"
        );
    }
}

#[test]
fn an_old_keyframe_is_refreshed_only_from_sources_that_can_be_asked() {
    let sent = session(&SessionSpec::default());
    for rtp in [false, true] {
        let mut h = started(rtp);
        for s in sent.iter().filter(|s| s.at < ms(500)) {
            feed(&mut h, rtp, s);
        }
        // Fresh: nothing to ask.
        assert!(!h.relay.refresh_keyframe(ChannelId(77), ms(10_000), h.now));
        h.advance_to(ms(11_000));
        let asked = h.relay.refresh_keyframe(ChannelId(77), ms(10_000), h.now);
        h.drain();
        assert_eq!(asked, rtp, "rtp: {rtp}");
        let expected = if rtp { 1 } else { 0 };
        assert_eq!(h.keyframe_requests.len(), expected, "rtp: {rtp}");
    }
}
