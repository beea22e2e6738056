//! The relay driven by synthetic FTL sessions built from the fixtures, on a virtual clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::*;
use ftl_proto::media::h264;
use ftl_proto::{ChannelId, Ssrc};
use relay_core::*;

fn play(h: &mut Harness, channel: u32, sent: &[Sent]) {
    for s in sent {
        h.feed(channel, peer(), &s.bytes, s.at);
    }
}

fn assert_contiguous(fs: &[&Forward]) {
    for w in fs.windows(2) {
        assert_eq!(
            w[1].seq,
            w[0].seq + 1,
            "gap between {} and {}",
            w[0].seq,
            w[1].seq
        );
    }
}

#[test]
fn a_viewer_present_from_the_start_gets_every_packet_bit_exact() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    play(&mut h, 77, &sent);
    let video = h.video(v);
    let expected = video_payloads_from_keyframe(&sent, 0);
    assert_eq!(video.len(), expected.len());
    for (f, e) in video.iter().zip(&expected) {
        assert_eq!(&f.payload[..], &e[..]);
    }
    assert!(video[0].keyframe && !video[0].cached);
    assert!(video[0].seq < 1 << 15);
    assert_contiguous(&video);
    // Timestamps keep their spacing (3000 ticks a frame) and markers close frames.
    let markers = video.iter().filter(|f| f.marker).count();
    assert_eq!(markers, 120);
    let frame_ts: Vec<u32> = video
        .iter()
        .filter(|f| f.marker)
        .map(|f| f.timestamp)
        .collect();
    assert!(frame_ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 3000));
    // Audio: every Opus packet in order.
    let audio = h.audio(v);
    let opus = opus_packets();
    assert_eq!(
        audio.len(),
        sent.iter()
            .filter(|s| s.kind == Some(MediaKind::Audio))
            .count()
    );
    for (f, p) in audio.iter().zip(&opus) {
        assert_eq!(&f.payload[..], &p[..]);
    }
    assert_contiguous(&audio);
    assert!(audio
        .windows(2)
        .all(|w| w[1].timestamp.wrapping_sub(w[0].timestamp) == 960));
    // Nothing lost, nothing NACKed, and the SPS told the real size.
    assert!(h.nacked().is_empty());
    let stats = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    assert_eq!((stats.width, stats.height), (Some(320), Some(180)));
    assert_eq!(stats.counters.keyframes, 4);
    assert_eq!(stats.counters.lost, 0);
    assert_eq!(stats.keyframe_interval, Some(Duration::from_secs(1)));
    assert!(h.events.iter().any(|(_, e)| matches!(
        e,
        Event::VideoFormat {
            width: 320,
            height: 180,
            ..
        }
    )));
}

#[test]
fn a_late_joiner_starts_at_the_cached_keyframe_and_catches_up() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    // Join 1.5 s in: half-way through the second GOP.
    let (before, after): (Vec<Sent>, Vec<Sent>) = sent
        .iter()
        .cloned()
        .partition(|s| s.at < Duration::from_millis(1500));
    play(&mut h, 77, &before);
    let v = h.join(77);
    let cached: Vec<Forward> = h.forwards[&v].clone();
    assert!(!cached.is_empty());
    assert!(cached
        .iter()
        .all(|f| f.cached && f.kind == MediaKind::Video));
    assert!(cached[0].keyframe);
    assert_eq!(
        h264::inspect(&cached[0].payload).unwrap().first_nal,
        h264::NalType::Sps
    );
    // Cached frames are 90 ticks (1 ms) apart instead of 3000.
    let frame_ts: Vec<u32> = cached
        .iter()
        .filter(|f| f.marker)
        .map(|f| f.timestamp)
        .collect();
    assert!(frame_ts.len() >= 14, "{}", frame_ts.len());
    assert!(frame_ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 90));
    play(&mut h, 77, &after);
    let video = h.video(v);
    let expected = video_payloads_from_keyframe(&sent, 1);
    assert_eq!(video.len(), expected.len());
    assert!(video
        .iter()
        .zip(&expected)
        .all(|(f, e)| f.payload[..] == e[..]));
    assert_contiguous(&video);
    // After the cache, live frames run at their real spacing again.
    let live_ts: Vec<u32> = video
        .iter()
        .filter(|f| !f.cached && f.marker)
        .map(|f| f.timestamp)
        .collect();
    assert!(live_ts.windows(2).all(|w| w[1].wrapping_sub(w[0]) == 3000));
    // Audio starts live, at the first packet after the join.
    let audio = h.audio(v);
    assert!(!audio.is_empty() && audio.iter().all(|f| !f.cached));
}

#[test]
fn a_viewer_joining_before_any_keyframe_waits_for_one() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    // Lose the first keyframe's packets entirely (as if the client skipped them).
    let first_p_frame = sent
        .iter()
        .position(|s| s.kind == Some(MediaKind::Video) && s.bytes[12] & 0x1f == 1)
        .unwrap();
    let v = h.join(77);
    play(&mut h, 77, &sent[first_p_frame..]);
    let video = h.video(v);
    assert!(video[0].keyframe);
    assert_eq!(video.len(), video_payloads_from_keyframe(&sent, 1).len());
}

#[test]
fn gaps_are_nacked_after_the_reorder_delay_and_retransmissions_recovered() {
    let sent = session(&SessionSpec::default());
    let video_idx: Vec<usize> = (0..sent.len())
        .filter(|&i| sent[i].kind == Some(MediaKind::Video))
        .collect();
    let lost = [video_idx[40], video_idx[41], video_idx[100]];
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    let mut resent = false;
    for (i, s) in sent.iter().enumerate() {
        if lost.contains(&i) {
            continue;
        }
        h.feed(77, peer(), &s.bytes, s.at);
        // Answer the NACKs for the first two losses once, like the FTL client's resend ring.
        if !resent && !h.nacked().is_empty() && s.at > sent[lost[0]].at + Duration::from_millis(20)
        {
            for &l in &lost[..2] {
                let r = h.feed(77, peer(), &sent[l].bytes, h.now.duration_since(h.t0));
                assert_eq!(r, Ingest::Recovered(MediaKind::Video));
            }
            resent = true;
        }
    }
    h.advance_to(sent.last().unwrap().at + Duration::from_secs(1));
    let nacked = h.nacked();
    let seq = |i: usize| sent[i].seq;
    assert_eq!(nacked[0], (Ssrc(78), seq(lost[0])));
    assert_eq!(nacked[1], (Ssrc(78), seq(lost[1])));
    // The first NACK came after the reorder delay, not at once.
    let first_at = h
        .transmits
        .iter()
        .find(|t| ftl_proto::media::Nack::parse(&t.3).is_ok())
        .unwrap()
        .0;
    assert!(first_at >= sent[lost[1] + 1].at + Duration::from_millis(10));
    // The never-resent packet was asked for max_retries times, then given up.
    let third = nacked.iter().filter(|(_, s)| *s == seq(lost[2])).count();
    assert_eq!(third, 4);
    let stats = h.relay.stream_stats(ChannelId(77), h.now).unwrap().counters;
    assert_eq!((stats.missing, stats.recovered, stats.lost), (3, 2, 1));
    // The viewer got the recovered packets with their proper numbers; one gap remains.
    let video = h.video(v);
    assert_eq!(
        video.len(),
        video_payloads_from_keyframe(&sent, 0).len() - 1
    );
    let mut seqs: Vec<u64> = video.iter().map(|f| f.seq).collect();
    seqs.sort_unstable();
    let gaps = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(gaps, 1);
}

#[test]
fn reordering_inside_the_window_is_not_nacked() {
    let mut sent = session(&SessionSpec::default());
    let vi: Vec<usize> = (0..sent.len())
        .filter(|&i| sent[i].kind == Some(MediaKind::Video))
        .collect();
    // Swap two video packets far apart in the list but 1 ms apart in time.
    let (a, b) = (vi[30], vi[31]);
    sent.swap(a, b);
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    play(&mut h, 77, &sent);
    assert!(h.nacked().is_empty());
    let c = h.relay.stream_stats(ChannelId(77), h.now).unwrap().counters;
    assert_eq!((c.missing, c.reordered, c.lost), (1, 1, 0));
    assert_eq!(
        h.video(v).len(),
        video_payloads_from_keyframe(&sent, 0).len()
    );
}

#[test]
fn duplicates_are_dropped() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    for s in &sent {
        h.feed(77, peer(), &s.bytes, s.at);
        if s.kind.is_some() {
            assert_eq!(
                h.feed(77, peer(), &s.bytes, s.at),
                Ingest::Dropped(Drop::Duplicate)
            );
        }
    }
    let n = sent.iter().filter(|s| s.kind.is_some()).count();
    assert_eq!(h.forwards[&v].len(), n);
    assert_eq!(
        h.relay
            .stream_stats(ChannelId(77), h.now)
            .unwrap()
            .counters
            .duplicates,
        n as u64
    );
}

#[test]
fn spoofed_foreign_and_junk_datagrams_change_nothing() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    let spoofer: std::net::SocketAddr = "127.0.0.2:40000".parse().unwrap();
    for s in &sent {
        assert_eq!(
            h.feed(77, spoofer, &s.bytes, s.at),
            Ingest::Dropped(Drop::ForeignSource)
        );
        let mut foreign = s.bytes.clone();
        if s.kind.is_some() {
            foreign[11] ^= 0x55; // another SSRC
            assert_eq!(
                h.feed(77, peer(), &foreign, s.at),
                Ingest::Dropped(Drop::ForeignSsrc)
            );
        }
        h.feed(77, peer(), &s.bytes, s.at);
        assert!(matches!(
            h.feed(77, peer(), &[0x12, 0x34], s.at),
            Ingest::Dropped(Drop::Invalid(_))
        ));
    }
    let reference = {
        let mut clean = Harness::new(RelayConfig::default());
        clean.start(77);
        let cv = clean.join(77);
        play(&mut clean, 77, &sent);
        clean.forwards[&cv].clone()
    };
    assert_eq!(h.forwards[&v].len(), reference.len());
    for (a, b) in h.forwards[&v].iter().zip(&reference) {
        assert_eq!(
            (a.seq, a.timestamp, &a.payload),
            (b.seq, b.timestamp, &b.payload)
        );
    }
    // Pings were echoed to the sender only.
    assert!(h.transmits.iter().all(|t| t.2 == peer()));
}

/// A session's media comes from one source: once the client's port sent a valid datagram,
/// another port of the same address (a stray sender of an ended session that reached the same
/// media port, a second client behind the same NAT) is dropped and counted, however valid its
/// datagrams, and the viewer gets exactly what the bound source sent.
#[test]
fn after_the_first_valid_datagram_another_port_of_the_same_address_is_foreign() {
    let sent = session(&SessionSpec::default());
    let stray_spec = SessionSpec {
        first_video_seq: 40_000,
        first_audio_seq: 50_000,
        ..SessionSpec::default()
    };
    let stray = session(&stray_spec);
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    let other_port = std::net::SocketAddr::new(peer().ip(), peer().port() + 1);
    // Junk from the other port first binds nothing.
    assert!(matches!(
        h.feed(77, other_port, &[0x80, 0x60], sent[0].at),
        Ingest::Dropped(Drop::Invalid(_))
    ));
    for (s, x) in sent.iter().zip(stray.iter().cycle()) {
        h.feed(77, peer(), &s.bytes, s.at);
        assert_eq!(
            h.feed(77, other_port, &x.bytes, s.at),
            Ingest::Dropped(Drop::ForeignSource)
        );
    }
    let stats = h.relay.stream_stats(ChannelId(77), h.now).unwrap();
    assert_eq!(stats.counters.dropped_foreign_source, sent.len() as u64);
    let reference = {
        let mut clean = Harness::new(RelayConfig::default());
        clean.start(77);
        let cv = clean.join(77);
        play(&mut clean, 77, &sent);
        clean.forwards[&cv].clone()
    };
    assert_eq!(h.forwards[&v].len(), reference.len());
    for (a, b) in h.forwards[&v].iter().zip(&reference) {
        assert_eq!(
            (a.seq, a.timestamp, &a.payload),
            (b.seq, b.timestamp, &b.payload)
        );
    }
}

/// A media port handed out again: the source of the session that ended there is refused,
/// even when it is the first to send to the new stream, so it cannot bind the stream to itself.
#[test]
fn the_source_of_an_ended_session_on_the_same_port_is_refused() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    let old = std::net::SocketAddr::new(peer().ip(), peer().port() + 7);
    h.relay.refuse_source(ChannelId(77), old);
    // The old client speaks first, then the new one; the old one goes on.
    assert_eq!(
        h.feed(77, old, &sent[0].bytes, sent[0].at),
        Ingest::Dropped(Drop::ForeignSource)
    );
    for s in &sent {
        h.feed(77, peer(), &s.bytes, s.at);
        assert_eq!(
            h.feed(77, old, &s.bytes, s.at),
            Ingest::Dropped(Drop::ForeignSource)
        );
    }
    assert_eq!(h.relay.ingest_source(ChannelId(77)), Some(peer()));
    let n = sent.iter().filter(|s| s.kind.is_some()).count();
    assert_eq!(h.forwards[&v].len(), n);
}

#[test]
fn sequence_numbers_and_timestamps_wrap() {
    let spec = SessionSpec {
        first_video_seq: 65_500,
        first_audio_seq: 65_530,
        first_video_ts: u32::MAX - 100_000,
        first_audio_ts: u32::MAX - 10_000,
        ..SessionSpec::default()
    };
    let sent = session(&spec);
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    play(&mut h, 77, &sent);
    let video = h.video(v);
    assert_eq!(video.len(), video_payloads_from_keyframe(&sent, 0).len());
    assert_contiguous(&video);
    let audio = h.audio(v);
    assert_contiguous(&audio);
    assert!(audio
        .windows(2)
        .all(|w| w[1].timestamp.wrapping_sub(w[0].timestamp) == 960));
    assert!(h.nacked().is_empty());
    // Wall clock runs forward across the timestamp wrap.
    assert!(video.windows(2).all(|w| w[1].wallclock >= w[0].wallclock));
}

#[test]
fn obs_speed_test_burst_never_reaches_a_viewer_nor_gets_nacked() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    // 1 s of 1392-byte garbage on the audio SSRC, timestamp 0, numbers 0..; then the stream.
    for i in 0..1000u16 {
        let junk = ftl_proto::media::RtpHeader {
            marker: false,
            payload_type: 97,
            sequence_number: i,
            timestamp: 0,
            ssrc: Ssrc(77),
        }
        .build(&[0xa5; 1392]);
        let r = h.feed(77, peer(), &junk, Duration::from_millis(u64::from(i)));
        assert_eq!(r, Ingest::Dropped(Drop::SpeedTest));
    }
    let offset = Duration::from_millis(1000);
    for s in &sent {
        h.feed(77, peer(), &s.bytes, s.at + offset);
    }
    assert!(h.audio(v).iter().all(|f| f.payload.len() < 1000));
    assert_eq!(
        h.audio(v).len(),
        sent.iter()
            .filter(|s| s.kind == Some(MediaKind::Audio))
            .count()
    );
    assert!(h.nacked().is_empty());
    let c = h.relay.stream_stats(ChannelId(77), h.now).unwrap().counters;
    assert_eq!(c.dropped_speed_test, 1000);
}

#[test]
fn a_restarted_stream_resumes_its_viewers_without_a_gap_in_numbering() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    play(&mut h, 77, &sent);
    let before = h.forwards[&v].len();
    h.relay.stop_stream(ChannelId(77), EndReason::Disconnect);
    h.drain();
    assert!(h.events.iter().any(|(_, e)| *e
        == Event::StreamEnded {
            channel: ChannelId(77),
            reason: EndReason::Disconnect
        }));
    assert_eq!(
        h.relay.channel_viewers(ChannelId(77)),
        1,
        "viewers stay attached"
    );
    // The same client streams again, numbering from 0 again, 2 s later.
    let offset = sent.last().unwrap().at + Duration::from_secs(2);
    h.advance_to(offset);
    h.start(77);
    for s in &sent {
        h.feed(77, peer(), &s.bytes, s.at + offset);
    }
    let video = h.video(v);
    assert_eq!(h.forwards[&v].len(), 2 * before);
    assert_contiguous(&video);
    // Time moved on by about the 2 s pause, not backwards.
    let last_first = video[video.len() / 2 - 1].timestamp;
    let first_second = video[video.len() / 2].timestamp;
    let step = first_second.wrapping_sub(last_first);
    assert!((150_000..250_000).contains(&step), "{step}");
}

#[test]
fn two_streams_are_isolated() {
    let a = session(&SessionSpec::default());
    let b = session(&SessionSpec {
        channel: 88,
        first_video_seq: 1000,
        ..SessionSpec::default()
    });
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    h.start(88);
    let va = h.join(77);
    let vb = h.join(88);
    let mut all: Vec<(u32, &Sent)> = a
        .iter()
        .map(|s| (77, s))
        .chain(b.iter().map(|s| (88, s)))
        .collect();
    all.sort_by_key(|(_, s)| s.at);
    for (c, s) in all {
        h.feed(c, peer(), &s.bytes, s.at);
        // Channel 88's packets sent to 77's port are foreign there.
        if c == 88 && s.kind.is_some() {
            assert_eq!(
                h.feed(77, peer(), &s.bytes, s.at),
                Ingest::Dropped(Drop::ForeignSsrc)
            );
        }
    }
    assert_eq!(h.forwards[&va].len(), h.forwards[&vb].len());
    assert_eq!(h.relay.live_streams(), 2);
    h.relay.stop_stream(ChannelId(77), EndReason::Disconnect);
    assert!(h.relay.is_live(ChannelId(88)));
}

#[test]
fn a_slow_viewer_skips_to_the_next_keyframe() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let slow = h.join(77);
    let fast = h.join(77);
    for s in &sent {
        // Behind from 0.5 s to 1.2 s in.
        let behind = s.at >= Duration::from_millis(500) && s.at < Duration::from_millis(1200);
        h.relay
            .report_backlog(slow, if behind { 10 << 20 } else { 0 });
        h.feed(77, peer(), &s.bytes, s.at);
    }
    let slow_v = h.video(slow);
    assert_contiguous(&slow_v);
    let stats = h.relay.viewer_stats(slow).unwrap();
    assert_eq!(stats.skips, 1);
    assert!(stats.skipped_packets > 0);
    assert_eq!(
        slow_v.len() as u64 + stats.skipped_packets,
        h.video(fast).len() as u64
    );
    // The stream's counters sum its viewers' skips.
    let counters = h.relay.stream_stats(ChannelId(77), h.now).unwrap().counters;
    assert_eq!(counters.viewer_skips, 1);
    assert_eq!(counters.viewer_skipped_packets, stats.skipped_packets);
    // It resumed exactly at the keyframe at 2 s (the one at 1 s came while it was behind).
    let resumed = slow_v
        .iter()
        .position(|f| f.keyframe && f.timestamp > 90_000 * 3 / 2)
        .unwrap();
    assert!(slow_v[resumed].keyframe);
    assert_eq!(
        h264::inspect(&slow_v[resumed].payload).unwrap().first_nal,
        h264::NalType::Sps
    );
    // Its timestamps kept their mapping: the same as the fast viewer's from there.
    let fast_ts: Vec<u32> = h.video(fast).iter().map(|f| f.timestamp).collect();
    assert!(fast_ts.contains(&slow_v[resumed].timestamp));
}

#[test]
fn keyframe_requests_are_answered_from_the_cache_and_rate_limited() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    let (before, after): (Vec<Sent>, Vec<Sent>) = sent
        .iter()
        .cloned()
        .partition(|s| s.at < Duration::from_millis(1500));
    play(&mut h, 77, &before);
    let n = h.forwards[&v].len();
    let last_video_seq = h.video(v).last().unwrap().seq;
    h.relay.request_keyframe(v, h.now).unwrap();
    h.drain();
    let replay: Vec<Forward> = h.forwards[&v][n..].to_vec();
    assert!(replay[0].keyframe && replay.iter().all(|f| f.cached));
    assert_eq!(replay[0].seq, last_video_seq + 1);
    h.relay
        .request_keyframe(v, h.now + Duration::from_millis(100))
        .unwrap();
    h.drain();
    assert_eq!(
        h.forwards[&v].len(),
        n + replay.len(),
        "second request within 1 s ignored"
    );
    play(&mut h, 77, &after);
    let video = h.video(v);
    let mut seqs: Vec<u64> = video.iter().map(|f| f.seq).collect();
    let len = seqs.len();
    seqs.dedup();
    assert_eq!(seqs.len(), len);
    assert_contiguous(&video);
    let s = h.relay.viewer_stats(v).unwrap();
    assert_eq!(
        (s.keyframes_from_cache, s.keyframe_requests_ignored),
        (1, 1)
    );
    assert!(matches!(
        h.relay.request_keyframe(ViewerId(999), h.now),
        Err(Error::UnknownViewer(_))
    ));
}

#[test]
fn a_stream_without_media_times_out() {
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    assert_eq!(h.relay.poll_timeout(), Some(h.at(Duration::from_secs(15))));
    h.advance_to(Duration::from_secs(16));
    assert!(!h.relay.is_live(ChannelId(77)));
    assert!(h.events.iter().any(|(at, e)| *at == Duration::from_secs(15)
        && *e
            == Event::StreamEnded {
                channel: ChannelId(77),
                reason: EndReason::MediaTimeout
            }));
    assert_eq!(h.relay.channels().count(), 0, "no state left behind");
}

#[test]
fn a_gop_longer_than_the_cache_bound_is_not_cached() {
    let sent = session(&SessionSpec::default());
    let config = RelayConfig {
        gop_max_bytes: 10_000,
        ..RelayConfig::default()
    };
    let mut h = Harness::new(config);
    h.start(77);
    let (before, after): (Vec<Sent>, Vec<Sent>) = sent
        .iter()
        .cloned()
        .partition(|s| s.at < Duration::from_millis(1500));
    play(&mut h, 77, &before);
    let v = h.join(77);
    assert!(h.forwards[&v].is_empty(), "nothing cached to replay");
    play(&mut h, 77, &after);
    assert!(h.video(v)[0].keyframe && !h.video(v)[0].cached);
    assert!(
        h.relay
            .stream_stats(ChannelId(77), h.now)
            .unwrap()
            .counters
            .gop_overflows
            >= 1
    );
}

#[test]
fn limits_are_enforced_with_clear_errors() {
    let config = RelayConfig {
        max_streams: 1,
        max_viewers: 3,
        max_viewers_per_channel: 2,
        ..RelayConfig::default()
    };
    let mut h = Harness::new(config);
    h.start(1);
    assert_eq!(
        h.relay.start_stream(ChannelId(2), params(2), h.now),
        Err(Error::TooManyStreams { limit: 1 })
    );
    // Replacing the live stream of the same channel is allowed.
    h.relay
        .start_stream(ChannelId(1), params(1), h.now)
        .unwrap();
    h.join(1);
    h.join(1);
    assert_eq!(
        h.relay.add_viewer(ChannelId(1), h.now),
        Err(Error::ChannelFull {
            channel: ChannelId(1),
            limit: 2
        })
    );
    h.join(2);
    assert_eq!(
        h.relay.add_viewer(ChannelId(3), h.now),
        Err(Error::TooManyViewers { limit: 3 })
    );
    assert_eq!(
        h.relay.channels().collect::<Vec<_>>(),
        [ChannelId(1), ChannelId(2)]
    );
}

#[test]
fn viewer_churn_leaves_no_state_behind() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let mut viewers = Vec::new();
    for (i, s) in sent.iter().enumerate() {
        h.feed(77, peer(), &s.bytes, s.at);
        if i % 3 == 0 {
            viewers.push(h.join(77));
        }
        if i % 5 == 0 && !viewers.is_empty() {
            let v = viewers.remove(viewers.len() / 2);
            h.relay.remove_viewer(v);
        }
    }
    for v in viewers.drain(..) {
        h.relay.remove_viewer(v);
    }
    h.relay.remove_viewer(ViewerId(1)); // already gone: ignored
    assert_eq!(h.relay.viewer_count(), 0);
    assert_eq!(h.relay.channel_viewers(ChannelId(77)), 0);
    h.relay.stop_stream(ChannelId(77), EndReason::Disconnect);
    assert_eq!(h.relay.channels().count(), 0);
}

#[test]
fn sender_reports_put_audio_and_video_on_one_clock() {
    let sent = session(&SessionSpec {
        first_audio_ts: 12_345,
        first_video_ts: 999_999,
        ..SessionSpec::default()
    });
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let v = h.join(77);
    play(&mut h, 77, &sent);
    // Packets captured at the same moment map to the same wall clock, whatever their bases.
    let video = h.video(v);
    let audio = h.audio(v);
    let v2 = video
        .iter()
        .find(|f| f.timestamp.wrapping_sub(video[0].timestamp) == 2 * 90_000)
        .unwrap();
    let a2 = audio
        .iter()
        .find(|f| f.timestamp.wrapping_sub(12_345) == 2 * 48_000)
        .unwrap();
    let skew = if v2.wallclock > a2.wallclock {
        v2.wallclock - a2.wallclock
    } else {
        a2.wallclock - v2.wallclock
    };
    assert!(skew < Duration::from_millis(1), "{skew:?}");
}

#[test]
fn pings_are_echoed_unchanged() {
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    let ping = ftl_proto::media::build_ping(123_456);
    assert_eq!(h.feed(77, peer(), &ping, Duration::ZERO), Ingest::Ping);
    assert_eq!(
        h.transmits,
        [(Duration::ZERO, ChannelId(77), peer(), ping.to_vec())]
    );
    assert_eq!(
        h.feed(5, peer(), &ping, Duration::ZERO),
        Ingest::Dropped(Drop::NotLive)
    );
}

#[test]
fn every_short_datagram_is_handled() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig::default());
    h.start(77);
    h.join(77);
    for s in sent.iter().take(50) {
        for len in 0..=64.min(s.bytes.len()) {
            h.feed(77, peer(), &s.bytes[..len], s.at);
        }
        for fill in [0u8, 0x80, 0xff] {
            for len in 0..64 {
                h.feed(77, peer(), &vec![fill; len], s.at);
            }
        }
    }
    assert!(h.relay.is_live(ChannelId(77)));
}

#[test]
fn a_tap_gets_what_a_viewer_gets_without_being_audience_and_ends_with_the_stream() {
    let sent = session(&SessionSpec::default());
    let mut h = Harness::new(RelayConfig {
        max_viewers_per_channel: 1,
        ..RelayConfig::default()
    });
    // No tap without a live stream.
    assert!(h.relay.add_tap(ChannelId(77), h.now).is_err());
    h.start(77);
    let viewer = h.join(77);
    let tap = h.relay.add_tap(ChannelId(77), h.now).unwrap();
    // Not counted: the channel's one viewer slot is the viewer's, and the stats say one.
    assert_eq!(h.relay.channel_viewers(ChannelId(77)), 1);
    assert_eq!(h.relay.viewer_count(), 1);
    // Never skips, whatever backlog is reported for it.
    h.relay.report_backlog(tap, 10 << 20);
    play(&mut h, 77, &sent);
    let payloads =
        |v| -> Vec<Vec<u8>> { h.forwards[&v].iter().map(|f| f.payload.to_vec()).collect() };
    assert_eq!(payloads(tap), payloads(viewer));
    // A tap's keyframe request is answered from the cache like a viewer's.
    let n = h.forwards[&tap].len();
    h.relay.request_keyframe(tap, h.now).unwrap();
    h.drain();
    let replay = &h.forwards[&tap][n..];
    assert!(!replay.is_empty() && replay[0].keyframe && replay.iter().all(|f| f.cached));
    assert_contiguous(&h.video(tap));
    assert_eq!(
        h.relay.stream_stats(ChannelId(77), h.now).unwrap().viewers,
        1
    );
    // Gone with the stream: a new stream does not feed it.
    h.relay.stop_stream(ChannelId(77), EndReason::Disconnect);
    h.drain();
    assert!(h.relay.request_keyframe(tap, h.now).is_err());
    let n = h.forwards[&tap].len();
    let nv = h.forwards[&viewer].len();
    h.start(77);
    play(&mut h, 77, &sent[..50]);
    assert_eq!(h.forwards[&tap].len(), n);
    assert!(h.forwards[&viewer].len() > nv);
}
