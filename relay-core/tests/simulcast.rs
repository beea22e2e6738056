//! Simulcast: a WebRTC publisher's video layers, each viewer on one of them, switches at the
//! target layer's keyframes with the viewer's numbering and timing running on.
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

const SMALL: LayerId = LayerId(2);
const MIDDLE: LayerId = LayerId(0);
const LARGE: LayerId = LayerId(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One publisher's three layers (ids in the order a browser's offer might list them, which
/// says nothing of their sizes), sent frame by frame in step, audio with the middle one.
fn layers(loops: u32) -> Vec<(LayerId, Sent)> {
    let spec = |video, audio, seq| SessionSpec {
        loops,
        video,
        audio,
        pings: false,
        sender_reports: false,
        first_video_seq: seq,
        ..SessionSpec::default()
    };
    let mut all: Vec<(LayerId, Sent)> = Vec::new();
    for (id, video, audio, seq) in [
        (MIDDLE, VIDEO, true, 100),
        (LARGE, VIDEO_LARGE, false, 30_000),
        (SMALL, VIDEO_SMALL, false, 65_000),
    ] {
        all.extend(
            session(&spec(video, audio, seq))
                .into_iter()
                .map(|s| (id, s)),
        );
    }
    all.sort_by_key(|(_, s)| s.at);
    all
}

fn feed_until(h: &mut Harness, sent: &[(LayerId, Sent)], from: &mut usize, until: Duration) {
    while let Some((id, s)) = sent.get(*from) {
        if s.at >= until {
            break;
        }
        h.feed_rtp_layer(77, *id, s);
        *from += 1;
    }
}

/// A harness whose channel 77 is a WebRTC source fed `sent` up to `until`; with where the
/// feeding stopped.
fn fed(sent: Vec<(LayerId, Sent)>, until: Duration) -> (Vec<(LayerId, Sent)>, Harness, usize) {
    let mut h = Harness::new(RelayConfig::default());
    h.start_rtp(77);
    let mut i = 0;
    feed_until(&mut h, &sent, &mut i, until);
    (sent, h, i)
}

/// The payloads one layer sent from the keyframe at or after `at` on.
fn layer_from_keyframe(sent: &[(LayerId, Sent)], layer: LayerId, at: Duration) -> Vec<Vec<u8>> {
    let video: Vec<&Sent> = sent
        .iter()
        .filter(|(id, s)| *id == layer && s.kind == Some(MediaKind::Video))
        .map(|(_, s)| s)
        .collect();
    let start = video
        .iter()
        .position(|s| s.at >= at && s.bytes[12] & 0x1f == 7)
        .unwrap();
    video[start..]
        .iter()
        .map(|s| s.bytes[12..].to_vec())
        .collect()
}

/// Every video payload one layer sends.
fn payloads_of(sent: &[(LayerId, Sent)], layer: LayerId) -> std::collections::HashSet<Vec<u8>> {
    sent.iter()
        .filter(|(id, s)| *id == layer && s.kind == Some(MediaKind::Video))
        .map(|(_, s)| s.bytes[12..].to_vec())
        .collect()
}

/// `sent` without what `layer` sends from `from` until `to` (the publisher pauses it).
fn paused(
    sent: &[(LayerId, Sent)],
    layer: LayerId,
    from: Duration,
    to: Duration,
) -> Vec<(LayerId, Sent)> {
    sent.iter()
        .filter(|(id, s)| *id != layer || s.at < from || s.at >= to)
        .cloned()
        .collect()
}

/// The viewer's video numbering has no gap and its timestamps never go back nor jump ahead
/// of the real time between its packets.
fn assert_continuous(h: &Harness, v: ViewerId) {
    let video = h.video(v);
    for w in video.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "a gap in the viewer's numbering");
        let step = w[1].timestamp.wrapping_sub(w[0].timestamp);
        let real = w[1].wallclock.saturating_duration_since(w[0].wallclock);
        let real_ticks = real.as_micros() as u32 * 9 / 100;
        assert!(
            step <= real_ticks + 3000,
            "time went back or jumped: {step} ticks over {real:?}"
        );
    }
}

#[test]
fn layers_rank_by_picture_size_and_a_viewer_starts_on_the_middle_one_from_its_cache() {
    let (sent, mut h, mut i) = fed(layers(1), ms(1600));
    let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    let sizes: Vec<(LayerId, Option<u32>)> = st.layers.iter().map(|l| (l.id, l.width)).collect();
    assert_eq!(
        sizes,
        vec![(SMALL, Some(160)), (MIDDLE, Some(320)), (LARGE, Some(640))]
    );
    assert_eq!(
        (st.width, st.height),
        (Some(640), Some(360)),
        "the top layer's"
    );
    let v = h.join(77);
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, None)));
    let first = h.video(v)[0];
    assert!(first.cached && first.keyframe);
    feed_until(&mut h, &sent, &mut i, ms(4000));
    let got: Vec<Vec<u8>> = h.video(v).iter().map(|f| f.payload.to_vec()).collect();
    assert_eq!(got, layer_from_keyframe(&sent, MIDDLE, ms(1000)));
    assert_continuous(&h, v);
    let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    let on: Vec<usize> = st.layers.iter().map(|l| l.viewers).collect();
    assert_eq!(on, vec![0, 1, 0]);
}

#[test]
fn a_chosen_layer_starts_at_its_next_keyframe_which_is_asked_for_and_numbering_runs_on() {
    let (sent, mut h, mut i) = fed(layers(1), ms(1600));
    let v = h.join(77);
    feed_until(&mut h, &sent, &mut i, ms(1700));
    h.keyframe_requests.clear();
    h.relay
        .set_viewer_quality(v, Quality::Fixed(LARGE), h.now)
        .unwrap();
    h.drain();
    assert_eq!(
        h.keyframe_requests,
        vec![(h.now - h.t0, ChannelId(77), LARGE)],
        "the target layer's keyframe is asked of the publisher at once"
    );
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, Some(LARGE))));
    // Until the large layer's next keyframe (1.5 s, every 45 frames) the viewer stays put.
    let before = h.video(v).len();
    feed_until(&mut h, &sent, &mut i, ms(4000));
    assert_eq!(h.relay.viewer_layer(v), Some((LARGE, None)));
    let got: Vec<Vec<u8>> = h.video(v)[before..]
        .iter()
        .map(|f| f.payload.to_vec())
        .collect();
    let large = layer_from_keyframe(&sent, LARGE, ms(1700));
    let middle: Vec<Vec<u8>> = sent
        .iter()
        .filter(|(id, s)| *id == MIDDLE && s.kind == Some(MediaKind::Video) && s.at >= ms(1700))
        .map(|(_, s)| s.bytes[12..].to_vec())
        .collect();
    let switch = got.len() - large.len();
    assert!(
        got.ends_with(&large),
        "the large layer from its keyframe on"
    );
    assert!(
        middle.starts_with(&got[..switch]),
        "the middle layer until then"
    );
    assert!(switch > 0 && h.video(v)[before + switch].keyframe);
    assert_continuous(&h, v);
    let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    assert_eq!(st.counters.layer_switches, 1);
    assert_eq!(h.relay.viewer_stats(v).unwrap().layer_switches, 1);
    // A layer the stream does not have is refused.
    assert!(matches!(
        h.relay
            .set_viewer_quality(v, Quality::Fixed(LayerId(9)), h.now),
        Err(Error::UnknownLayer(LayerId(9)))
    ));
}

#[test]
fn loss_moves_a_viewer_down_and_calm_moves_it_back_up() {
    let (sent, mut h, mut i) = fed(layers(5), ms(1000));
    let v = h.join(77);
    let lossy = LinkReport {
        loss: Some(0.3),
        estimate_bps: None,
    };
    let clean = LinkReport {
        loss: Some(0.0),
        estimate_bps: None,
    };
    // Just joined: its reports settle first.
    h.relay.viewer_link(v, lossy, h.now);
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, None)));
    feed_until(&mut h, &sent, &mut i, ms(3600));
    h.relay.viewer_link(v, lossy, h.now);
    h.drain();
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, Some(SMALL))));
    assert!(h.keyframe_requests.iter().any(|r| r.2 == SMALL));
    feed_until(&mut h, &sent, &mut i, ms(4500));
    assert_eq!(h.relay.viewer_layer(v), Some((SMALL, None)));
    // Calm for the first wait: one layer up.
    let mut at = 4500;
    while at < 19_000 && h.relay.viewer_layer(v).unwrap().1.is_none() {
        at += 1000;
        feed_until(&mut h, &sent, &mut i, ms(at));
        h.relay.viewer_link(v, clean, h.now);
    }
    assert_eq!(h.relay.viewer_layer(v), Some((SMALL, Some(MIDDLE))));
    assert!(at >= 3600 + 10_000, "tried up after {at} ms");
    assert_continuous(&h, v);
}

/// With a bandwidth estimate a viewer never tries a layer: room in the estimate starts a trial
/// (the caller pads the link to the layer above's rate), clean reports through it move the
/// viewer up; loss in a trial ends it and the viewer stays where it is.
#[test]
fn an_estimate_moves_a_viewer_up_only_through_a_clean_trial() {
    let (sent, mut h, mut i) = fed(layers(5), ms(1000));
    let v = h.join(77);
    let report = |loss: f32| LinkReport {
        loss: Some(loss),
        estimate_bps: Some(50_000_000),
    };
    let mut at = 1000;
    let mut step = |h: &mut Harness, i: &mut usize, loss: f32| {
        at += 1000;
        feed_until(h, &sent, i, ms(at));
        let pad = h.relay.viewer_link(v, report(loss), h.now);
        h.drain();
        pad
    };
    // Settling after the join, then room twice: a trial padding to the top layer's rate.
    let mut pads = Vec::new();
    for _ in 0..4 {
        pads.push(step(&mut h, &mut i, 0.0));
    }
    let top = h.relay.stream_stats(ChannelId(77), h.now).unwrap().layers[2]
        .video
        .bits_per_second;
    assert_eq!(
        pads[..3],
        [None, None, None],
        "settle, room once, room twice"
    );
    let pad = pads[3].expect("a trial") as f64;
    assert!(
        (pad / top - 1.1).abs() < 0.05,
        "padded to {pad} bit/s for a layer of {top}"
    );
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, None)), "no move yet");
    // Loss in the trial: it ends (padding off), the viewer stays, nothing is asked of the
    // encoder.
    let asked = h.keyframe_requests.len();
    assert_eq!(step(&mut h, &mut i, 0.05), Some(0));
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, None)));
    assert_eq!(h.keyframe_requests.len(), asked);
    // The next trial waits (10 s after a first failure); this one is clean: up.
    let mut outcome = Vec::new();
    for _ in 0..14 {
        outcome.push(step(&mut h, &mut i, 0.0));
        if h.relay.viewer_layer(v).unwrap().1.is_some() {
            break;
        }
    }
    let trial = outcome
        .iter()
        .position(|p| p.is_some_and(|b| b > 0))
        .unwrap();
    assert!(
        trial >= 9,
        "the second trial came {trial} s after the failed one"
    );
    assert_eq!(
        outcome[trial + 1..trial + 3],
        [None, None],
        "two clean reports into the trial"
    );
    assert_eq!(outcome[trial + 3], Some(0), "up, and the padding ends");
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, Some(LARGE))));
    let c = h.relay.stream_stats(ChannelId(77), h.now).unwrap().counters;
    assert_eq!((c.layer_trials, c.layer_trials_failed), (2, 1));
    feed_until(&mut h, &sent, &mut i, ms(at + 3000));
    assert_eq!(h.relay.viewer_layer(v), Some((LARGE, None)));
    assert_continuous(&h, v);
}

#[test]
fn a_layer_that_stops_moves_its_viewers_to_one_that_sends_and_taps_take_the_top() {
    let (sent, mut h, mut i) = fed(layers(2), ms(1600));
    let tap = h.relay.add_tap(ChannelId(77), h.now).unwrap();
    let v = h.join(77);
    h.relay
        .set_viewer_quality(v, Quality::Fixed(LARGE), h.now)
        .unwrap();
    feed_until(&mut h, &sent, &mut i, ms(3200));
    assert_eq!(h.relay.viewer_layer(v), Some((LARGE, None)));
    // The publisher stops its top layer (its uplink narrowed).
    let rest: Vec<(LayerId, Sent)> = sent[i..]
        .iter()
        .filter(|(id, _)| *id != LARGE)
        .cloned()
        .collect();
    let mut j = 0;
    feed_until(&mut h, &rest, &mut j, ms(4000));
    assert_eq!(h.relay.viewer_layer(v).unwrap().0, LARGE, "not yet idle");
    feed_until(&mut h, &rest, &mut j, ms(8000));
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, None)));
    assert_continuous(&h, v);
    let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    let active: Vec<bool> = st.layers.iter().map(|l| l.active).collect();
    assert_eq!(active, vec![true, true, false]);
    // The tap started on the top layer and followed it down to the best that still sends.
    let tap_video = h.video(tap);
    assert!(tap_video[0].keyframe);
    assert_eq!(tap_video[0].payload.len(), {
        let large = layer_from_keyframe(&sent, LARGE, ms(1500));
        large[0].len()
    });
    for w in tap_video.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "a gap in the tap's numbering");
    }
    let last_middle = rest[..j]
        .iter()
        .rev()
        .find(|(id, s)| *id == MIDDLE && s.kind == Some(MediaKind::Video))
        .map(|(_, s)| s.bytes[12..].to_vec())
        .unwrap();
    assert_eq!(
        tap_video.last().unwrap().payload.to_vec(),
        last_middle,
        "the tap is on the middle layer now"
    );
}

#[test]
fn a_fourth_layer_is_dropped() {
    let (sent, mut h, _) = fed(layers(1), ms(500));
    let video = sent
        .iter()
        .find(|(_, s)| s.kind == Some(MediaKind::Video))
        .unwrap();
    assert_eq!(
        h.feed_rtp_layer(77, LayerId(7), &video.1),
        Some(Ingest::Dropped(Drop::ExtraLayer))
    );
    let st = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    assert_eq!(st.layers.len(), MAX_LAYERS);
    assert_eq!(st.counters.dropped_extra_layer, 1);
}

#[test]
fn a_viewer_on_an_upper_layer_plays_the_next_stream_of_one_layer() {
    let (sent, mut h, mut i) = fed(layers(1), ms(1600));
    let v = h.join(77);
    h.relay
        .set_viewer_quality(v, Quality::Fixed(LARGE), h.now)
        .unwrap();
    feed_until(&mut h, &sent, &mut i, ms(3500));
    assert_eq!(h.relay.viewer_layer(v), Some((LARGE, None)));
    h.relay.stop_stream(ChannelId(77), EndReason::Disconnect);
    // An FTL stream takes the channel: one layer, 0.
    let next = session(&SessionSpec {
        first_video_seq: 5000,
        ..SessionSpec::default()
    });
    let before = h.video(v).len();
    h.start(77);
    for s in &next {
        h.feed(77, peer(), &s.bytes, s.at + ms(4000));
    }
    let got: Vec<Vec<u8>> = h.video(v)[before..]
        .iter()
        .map(|f| f.payload.to_vec())
        .collect();
    assert_eq!(got, video_payloads_from_keyframe(&next, 0));
    assert_eq!(h.relay.viewer_layer(v), Some((LayerId(0), None)));
}

#[test]
fn a_keyframe_request_during_a_move_restarts_the_viewer_on_the_layer_it_moves_to() {
    let (sent, mut h, mut i) = fed(layers(1), ms(1700));
    let v = h.join(77);
    feed_until(&mut h, &sent, &mut i, ms(2200));
    h.relay
        .set_viewer_quality(v, Quality::Fixed(SMALL), h.now)
        .unwrap();
    h.drain();
    assert_eq!(h.relay.viewer_layer(v), Some((MIDDLE, Some(SMALL))));
    // The browser asks for a keyframe before the small layer's next one (3 s).
    let before = h.video(v).len();
    h.relay.request_keyframe(v, h.now).unwrap();
    h.drain();
    assert_eq!(h.relay.viewer_layer(v), Some((SMALL, None)));
    let replay: Vec<Vec<u8>> = h.video(v)[before..]
        .iter()
        .map(|f| f.payload.to_vec())
        .collect();
    let small_gop: Vec<Vec<u8>> = sent
        .iter()
        .filter(|(id, s)| {
            *id == SMALL && s.kind == Some(MediaKind::Video) && s.at >= ms(2000) && s.at < ms(2200)
        })
        .map(|(_, s)| s.bytes[12..].to_vec())
        .collect();
    assert_eq!(replay, small_gop, "the small layer's cached GOP");
    feed_until(&mut h, &sent, &mut i, ms(4000));
    assert_continuous(&h, v);
    assert_eq!(h.relay.viewer_stats(v).unwrap().layer_switches, 1);
}

/// A tap pinned to a layer (an edge's pull of one layer): it starts from that layer's cache,
/// carries that layer's packets only, stays on it while the layer stops (the unpinned tap
/// and the viewers move) and carries it again, numbering on, when it comes back.
#[test]
fn a_pinned_tap_carries_its_layer_only_and_waits_for_it_when_it_stops() {
    let (sent, mut h, mut i) = fed(layers(3), ms(1600));
    let small = h
        .relay
        .add_tap_on(ChannelId(77), TapLayer::Pinned(SMALL), h.now)
        .unwrap();
    let large = h
        .relay
        .add_tap_on(ChannelId(77), TapLayer::Pinned(LARGE), h.now)
        .unwrap();
    feed_until(&mut h, &sent, &mut i, ms(3200));
    let got: Vec<Vec<u8>> = h.video(small).iter().map(|f| f.payload.to_vec()).collect();
    let expected: Vec<Vec<u8>> = layer_from_keyframe(&sent, SMALL, ms(1000))
        .into_iter()
        .take(got.len())
        .collect();
    assert_eq!(got, expected, "the small layer from its cache on");
    assert!(h.video(small)[0].cached);
    // The large layer stops for about 3 s, then sends again from a keyframe (as an encoder
    // restarts a layer).
    let before = h.video(large).len();
    let gap_from = ms(3200);
    let gap_to = sent
        .iter()
        .find(|(id, s)| *id == LARGE && s.at >= ms(6100) && s.bytes[12] & 0x1f == 7)
        .map(|(_, s)| s.at)
        .unwrap();
    let rest = paused(&sent[i..], LARGE, gap_from, gap_to);
    let mut j = 0;
    feed_until(&mut h, &rest, &mut j, ms(6000));
    assert_eq!(
        h.video(large).len(),
        before,
        "nothing while its layer is idle"
    );
    feed_until(&mut h, &rest, &mut j, ms(9000));
    let large_video = h.video(large);
    assert!(large_video.len() > before + 30, "its layer again");
    let resumed = &large_video[before..];
    assert!(resumed[0].keyframe, "from the layer's next keyframe");
    let from_kf = layer_from_keyframe(&sent, LARGE, gap_to);
    assert_eq!(resumed[0].payload.to_vec(), from_kf[0]);
    // Numbering runs on, but for the packets the layer did not send (this test drops them; a
    // browser that pauses a layer sends on from the next number).
    for (k, w) in large_video.windows(2).enumerate() {
        if k + 1 != before {
            assert_eq!(
                w[1].seq,
                w[0].seq + 1,
                "a gap in the pinned tap's numbering"
            );
        } else {
            assert!(w[1].seq > w[0].seq);
        }
    }
    // Only its layer, all along: every packet is one of the large layer's.
    let large_payloads = payloads_of(&sent, LARGE);
    assert!(large_video
        .iter()
        .all(|f| large_payloads.contains(&f.payload.to_vec())));
}

/// A viewer told where its link carried it last time starts there (from its cache), not on
/// the middle layer; its place is read back from the top.
#[test]
fn a_returning_viewer_starts_where_its_link_carried_it_last_time() {
    let (_, mut h, _) = fed(layers(1), ms(1600));
    for (from_top, layer) in [
        (Some(0), LARGE),
        (Some(2), SMALL),
        (Some(9), SMALL),
        (None, MIDDLE),
    ] {
        let v = h
            .relay
            .add_viewer_from(ChannelId(77), from_top, h.now)
            .unwrap();
        h.drain();
        assert_eq!(h.relay.viewer_layer(v), Some((layer, None)), "{from_top:?}");
        let first = h.video(v)[0];
        assert!(first.cached && first.keyframe);
        let expected = match layer {
            l if l == LARGE => 0,
            l if l == MIDDLE => 1,
            _ => 2,
        };
        assert_eq!(h.relay.viewer_place(v), Some(expected));
        h.relay
            .set_viewer_quality(v, Quality::Fixed(layer), h.now)
            .unwrap();
        assert_eq!(
            h.relay.viewer_place(v),
            None,
            "a fixed choice is not the link's"
        );
    }
}

/// A recording's tap (`TapLayer::Largest`) joins before the larger layers exist, moves up to
/// the largest as it appears, and stays on it while it pauses (a pause in the file), where a
/// `Top` tap follows it down to the best layer still sending.
#[test]
fn a_recording_tap_moves_up_to_the_largest_layer_and_never_down() {
    let sent = layers(3);
    let mut h = Harness::new(RelayConfig::default());
    h.start_rtp(77);
    // Only the small layer at first.
    let small_only: Vec<(LayerId, Sent)> = sent
        .iter()
        .filter(|(id, s)| *id == SMALL || s.kind != Some(MediaKind::Video))
        .filter(|(_, s)| s.at < ms(1200))
        .cloned()
        .collect();
    let mut i = 0;
    feed_until(&mut h, &small_only, &mut i, ms(1200));
    let rec = h
        .relay
        .add_tap_on(ChannelId(77), TapLayer::Largest, h.now)
        .unwrap();
    let follow = h.relay.add_tap(ChannelId(77), h.now).unwrap();
    // Every layer from 1.2 s on.
    let rest: Vec<(LayerId, Sent)> = sent
        .iter()
        .filter(|(_, s)| s.at >= ms(1200))
        .cloned()
        .collect();
    let mut j = 0;
    feed_until(&mut h, &rest, &mut j, ms(3500));
    let large_payloads = payloads_of(&sent, LARGE);
    let on_large = |v: ViewerId, h: &Harness| {
        h.video(v)
            .last()
            .is_some_and(|f| large_payloads.contains(&f.payload.to_vec()))
    };
    assert!(on_large(rec, &h), "the recording moved up to the largest");
    assert!(on_large(follow, &h));
    // The large layer pauses for 3 s.
    let pause = paused(&rest[j..], LARGE, ms(0), ms(6500));
    let before = h.video(rec).len();
    let mut k = 0;
    feed_until(&mut h, &pause, &mut k, ms(6000));
    let still = h.video(rec).len();
    assert_eq!(
        still, before,
        "a pause in the recording, no smaller picture"
    );
    assert!(
        !on_large(follow, &h),
        "the Top tap went down to a layer still sending"
    );
    feed_until(&mut h, &pause, &mut k, ms(9000));
    assert!(
        on_large(rec, &h),
        "the recording goes on with the largest when it is back"
    );
}
