//! Properties over random viewer joins and leaves and random upstream loss, and determinism.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use ftl_proto::media::h264;
use proptest::prelude::*;
use relay_core::*;

/// A viewer's life: join and leave offsets in milliseconds.
///
/// The rule for inputs at equal instants: the relay takes inputs in the order they are called,
/// and the harness (like the server's loop) takes joins and leaves due at an instant before the
/// packet that arrives at that instant. So a viewer joining at the very instant a keyframe
/// arrives gets the cached GOP and then that keyframe live; the oracle below judges a viewer by
/// the packets fed before its join, not by comparing instants.
#[derive(Debug, Clone)]
struct Life {
    join: u64,
    leave: u64,
}

fn lives() -> impl Strategy<Value = Vec<Life>> {
    prop::collection::vec((0u64..4000, 0u64..4500), 1..6).prop_map(|v| {
        v.into_iter()
            .map(|(a, b)| Life {
                join: a.min(b),
                leave: a.max(b),
            })
            .collect()
    })
}

struct Run {
    h: Harness,
    sent: Vec<Sent>,
    lost: BTreeSet<usize>,
    /// Each viewer with its life and the index of the first input packet fed after it joined.
    viewers: Vec<(ViewerId, Life, usize)>,
}

fn run(lives: &[Life], lost: &BTreeSet<usize>) -> Run {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let mut pending: Vec<(usize, Life)> = lives.iter().cloned().enumerate().collect();
    let mut viewers: Vec<(ViewerId, Life, usize)> = Vec::new();
    let mut left = BTreeSet::new();
    for (i, s) in sent.iter().enumerate() {
        h.advance_to(s.at);
        pending.retain(|(_, life)| {
            if Duration::from_millis(life.join) <= s.at {
                let v = h.join(77);
                viewers.push((v, life.clone(), i));
                false
            } else {
                true
            }
        });
        for (v, life, _) in &viewers {
            if Duration::from_millis(life.leave) <= s.at && left.insert(*v) {
                h.relay.remove_viewer(*v);
            }
        }
        if !lost.contains(&i) {
            h.feed(77, peer(), &s.bytes, s.at);
        }
    }
    h.advance_to(sent.last().unwrap().at + Duration::from_secs(1));
    Run {
        h,
        sent,
        lost: lost.clone(),
        viewers,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Every viewer's video begins with a keyframe, its payloads are exactly the input's from
    /// there (minus what was lost upstream), and its numbering has gaps only where packets
    /// were lost.
    #[test]
    fn every_viewer_gets_a_clean_stream(
        lives in lives(),
        loss in prop::collection::btree_set(0usize..600, 0..25),
    ) {
        check_clean_streams(&lives, &loss)?;
    }

    /// The same input gives the same outputs, packet for packet.
    #[test]
    fn replays_are_deterministic(
        lives in lives(),
        loss in prop::collection::btree_set(0usize..600, 0..10),
    ) {
        let a = run(&lives, &loss);
        let b = run(&lives, &loss);
        prop_assert_eq!(normalize(&a.h), normalize(&b.h));
    }
}

/// The oracle of `every_viewer_gets_a_clean_stream`: every viewer's video begins with a
/// keyframe, its payloads are exactly the input's from there (minus what was lost upstream),
/// and its numbering has gaps only where packets were lost.
fn check_clean_streams(lives: &[Life], loss: &BTreeSet<usize>) -> Result<(), TestCaseError> {
    let r = run(lives, loss);
    let video: Vec<(usize, &Sent)> = r
        .sent
        .iter()
        .enumerate()
        .filter(|(_, s)| s.kind == Some(MediaKind::Video))
        .collect();
    // Only video packets count as lost for the video check.
    let lost: BTreeSet<usize> = r
        .lost
        .iter()
        .copied()
        .filter(|i| r.sent[*i].kind == Some(MediaKind::Video))
        .collect();
    for (v, _life, joined_before) in &r.viewers {
        let got = r.h.video(*v);
        if got.is_empty() {
            continue;
        }
        prop_assert!(got[0].keyframe);
        prop_assert!(h264::inspect(&got[0].payload).unwrap().starts_keyframe());
        // Find where in the input the viewer started.
        // Parameter sets repeat in every GOP: match the first few packets, not just one.
        let delivered_from = |start: usize| -> Vec<&(usize, &Sent)> {
            video[start..]
                .iter()
                .filter(|(i, _)| !lost.contains(i))
                .collect()
        };
        let start = (0..video.len())
            .find(|&p| {
                let d = delivered_from(p);
                got.len() <= d.len()
                    && got
                        .iter()
                        .zip(&d)
                        .take(8)
                        .all(|(f, (_, s))| s.bytes[12..] == f.payload[..])
            })
            .expect("the viewer's first packets are a run of the input");
        let delivered = delivered_from(start);
        // It started at the newest GOP fed before it joined (from the cache), or at the
        // first one after.
        let start_idx = delivered[0].0;
        let newer_sps = video.iter().find(|(i, s)| {
            !lost.contains(i) && *i > start_idx && i < joined_before && s.bytes[12] & 0x1f == 7
        });
        prop_assert!(
            newer_sps.is_none(),
            "started at packet {} though packet {:?} (a newer keyframe) was fed before its join (packet {})",
            start_idx, newer_sps.map(|(i, _)| i), joined_before
        );
        prop_assert!(got.len() <= delivered.len());
        for (k, f) in got.iter().enumerate() {
            prop_assert_eq!(&f.payload[..], &delivered[k].1.bytes[12..]);
            if k > 0 {
                // Gaps in numbering equal the packets lost between the two.
                let (a, b) = (delivered[k - 1].0, delivered[k].0);
                let lost_between = lost.range(a..b).count() as u64;
                prop_assert_eq!(f.seq, got[k - 1].seq + 1 + lost_between);
            }
        }
    }
    Ok(())
}

/// Cases proptest found once, kept by name so they run whatever the regressions file holds.
#[test]
fn joins_at_the_instant_of_a_keyframe() {
    for join in [999, 1000, 1001, 2000] {
        let lives = [Life { join, leave: join }];
        check_clean_streams(&lives, &BTreeSet::new()).unwrap();
        let lives = [Life {
            join,
            leave: join + 500,
        }];
        check_clean_streams(&lives, &BTreeSet::new()).unwrap();
    }
}

/// Every output with instants turned into offsets from the harness's start.
fn normalize(h: &Harness) -> Vec<String> {
    let mut out = Vec::new();
    for (v, fs) in &h.forwards {
        for f in fs {
            out.push(format!(
                "{v} {:?} {} {} {:?} {} {} {} {:?}",
                f.kind,
                f.seq,
                f.timestamp,
                f.wallclock.duration_since(h.t0),
                f.marker,
                f.keyframe,
                f.cached,
                &f.payload[..f.payload.len().min(8)]
            ));
        }
    }
    for t in &h.transmits {
        out.push(format!("{t:?}"));
    }
    for e in &h.events {
        out.push(format!("{e:?}"));
    }
    out
}
