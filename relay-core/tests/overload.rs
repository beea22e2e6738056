//! The overload policy on a virtual clock: media that waited on the machine before the relay
//! got it (`handle_datagram_queued`) makes viewers skip to the next keyframe instead of
//! staying behind; past `late_drop_after` nothing late is delivered at all.
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

/// Instants (from the session's start) of the datagrams that begin a keyframe (SPS first).
fn keyframes(sent: &[Sent]) -> Vec<Duration> {
    sent.iter()
        .filter(|s| s.kind == Some(MediaKind::Video) && s.bytes[12] & 0x1f == 7)
        .map(|s| s.at)
        .collect()
}

/// Feeds the session; a datagram sent within `late` is handed over as having waited `wait`.
fn play_with_wait(h: &mut Harness, sent: &[Sent], late: (Duration, Duration), wait: Duration) {
    for s in sent {
        h.advance_to(s.at);
        let queued = if s.at >= late.0 && s.at < late.1 {
            wait
        } else {
            Duration::ZERO
        };
        h.relay
            .handle_datagram_queued(ChannelId(77), peer(), &s.bytes, queued, h.now);
        h.drain();
    }
}

fn gap_free(fs: &[&Forward]) -> bool {
    fs.windows(2).all(|w| w[1].seq == w[0].seq + 1)
}

#[test]
fn packets_past_the_deadline_reach_no_viewer_and_everyone_restarts_at_a_keyframe_on_time() {
    let sent = session(&SessionSpec::default());
    let keys = keyframes(&sent);
    assert!(keys.len() >= 3, "the fixture has keyframes at {keys:?}");
    // Late from just before the second keyframe until just before the third: the late
    // window holds a keyframe, which must not restart anyone.
    let late = (
        keys[1] - Duration::from_millis(100),
        keys[2] - Duration::from_millis(50),
    );
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let viewers: Vec<ViewerId> = (0..16).map(|_| h.join(77)).collect();
    let tap = h.relay.add_tap(ChannelId(77), h.now).unwrap();
    play_with_wait(&mut h, &sent, late, Duration::from_millis(600));

    // Payloads found once in the session (SPS and PPS repeat at each keyframe, Opus frames
    // can repeat: audio is counted instead).
    let unique = |p: &[u8]| sent.iter().filter(|s| &s.bytes[12..] == p).count() == 1;
    let late_payloads: Vec<&[u8]> = sent
        .iter()
        .filter(|s| s.kind == Some(MediaKind::Video) && s.at >= late.0 && s.at < late.1)
        .map(|s| &s.bytes[12..])
        .filter(|p| unique(p))
        .collect();
    assert!(late_payloads.len() > 20);
    let audio = |on_time: bool| {
        sent.iter()
            .filter(|s| s.kind == Some(MediaKind::Audio))
            .filter(|s| (s.at >= late.0 && s.at < late.1) != on_time)
            .count()
    };
    assert!(audio(false) > 10);
    for v in &viewers {
        let got = &h.forwards[v];
        assert!(
            !got.iter().any(|f| late_payloads.contains(&&f.payload[..])),
            "viewer {v:?} got a packet past the deadline"
        );
        assert_eq!(
            h.audio(*v).len(),
            audio(true),
            "late audio is dropped, the rest kept"
        );
        let video = h.video(*v);
        assert!(gap_free(&video), "numbering stays gap-free across the skip");
        // Live again from the first keyframe after the late window.
        let resumed = video.iter().filter(|f| f.keyframe).count();
        assert!(resumed >= 2, "viewer {v:?} restarted at a keyframe on time");
    }
    // The tap (an edge's pull) is not the machine's to protect: it gets everything.
    let tapped = &h.forwards[&tap];
    assert!(late_payloads
        .iter()
        .all(|p| tapped.iter().any(|f| &f.payload[..] == *p)));

    let stats = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    assert_eq!(
        stats.counters.viewer_skips_late, 16,
        "each viewer skipped once"
    );
    assert!(stats.counters.late_packets > 0);
    assert!(stats.counters.viewer_skipped_packets >= late_payloads.len() as u64);
}

#[test]
fn late_packets_before_the_deadline_make_a_share_skip_in_turn() {
    let sent = session(&SessionSpec::default());
    let keys = keyframes(&sent);
    let late = (
        keys[1] + Duration::from_millis(50),
        keys[1] + Duration::from_millis(400),
    );
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let viewers: Vec<ViewerId> = (0..16).map(|_| h.join(77)).collect();
    play_with_wait(&mut h, &sent, late, Duration::from_millis(250));

    let stats = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    let skips = stats.counters.viewer_skips_late;
    // Two a step (one in eight of 16), steps at least 40 ms apart: several steps in a 350 ms
    // window, never the whole audience at once.
    assert!(skips >= 4 && skips % 2 == 0, "{skips} late skips");
    assert!(stats.counters.late_packets > 0);
    // Those that did not skip got the late packets; everyone is gap-free and live at the end.
    let late_video: Vec<&[u8]> = sent
        .iter()
        .filter(|s| s.kind == Some(MediaKind::Video) && s.at >= late.0 && s.at < late.1)
        .map(|s| &s.bytes[12..])
        .collect();
    let delivered_late = viewers
        .iter()
        .filter(|v| {
            h.forwards[v]
                .iter()
                .any(|f| f.payload[..] == *late_video[late_video.len() - 1])
        })
        .count();
    assert_eq!(delivered_late as u64, 16 - skips);
    for v in &viewers {
        assert!(gap_free(&h.video(*v)));
        let last = h.video(*v).last().map(|f| f.payload.clone()).unwrap();
        let last_sent = sent
            .iter()
            .rev()
            .find(|s| s.kind == Some(MediaKind::Video))
            .unwrap();
        assert_eq!(&last[..], &last_sent.bytes[12..], "live at the end");
    }
}
