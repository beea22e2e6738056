//! Viewers on real networks: datagrams lost on the way or refused by a firewall on the way out,
//! and what the server's repair makes of them. Tests that change the network run in a network
//! namespace of their own (nftables rules there touch nothing else).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn nft(rules: &str) {
    let mut c = Command::new("nft")
        .arg("-f")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("nft (Debian's nftables) is needed");
    use std::io::Write;
    c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "nft refused:\n{rules}");
}

/// A firewall on the server's way out refuses 1 in 10 of a viewer's video datagrams (`EPERM`
/// from `sendmmsg`): a loss like any other, which the viewer's NACKs repair; not a slow viewer,
/// so it is never skipped to a keyframe. (The retransmissions, on their own SSRC, pass: a rule
/// that refused them at random too would now and then refuse one packet's every resend within
/// its history, a loss no repair wins, and make the test a lottery.)
#[test]
fn refused_sends_are_losses_not_a_slow_viewer() {
    if !in_private_netns("refused_sends_are_losses_not_a_slow_viewer") {
        return;
    }
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(12)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 77).is_some()));
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(viewer.drive(Duration::from_secs(5), |v| v.video_count > 30));
    let video = *viewer.video[0].header.ssrc;
    viewer.keep_packets = false;
    let port = viewer.local_addr().port();
    // The SSRC sits 8 bytes into the RTP header, behind the 8 of UDP's: bit 128 of the
    // transport header.
    nft(&format!(
        "table inet itg_refuse {{\n chain out {{\n  type filter hook output priority 0;\n  \
         udp dport {port} @th,128,32 {video:#010x} numgen random mod 10 == 0 drop\n }}\n}}\n"
    ));
    let before = viewer.video_count;
    viewer.drive(Duration::from_secs(6), |_| false);
    nft("delete table inet itg_refuse");
    viewer.drive(Duration::from_millis(800), |_| false);
    let info = stream_info(&server, 77).unwrap();
    let refused = server.metric("itg_webrtc_send_errors_total");
    eprintln!(
        "refused sends: {refused}; viewer: {} video since, {} lost for good; skips for failed \
         sends {}",
        viewer.video_count - before,
        viewer.video_lost(),
        info["viewer_skips_send_failed"]
    );
    assert!(
        refused >= 10.0,
        "the firewall refused too little: {refused}"
    );
    assert_eq!(
        info["viewer_skips_send_failed"], 0,
        "a refused send skipped the viewer"
    );
    assert!(
        viewer.video_count - before > 300,
        "video stalled: {}",
        viewer.video_count - before
    );
    assert_eq!(
        viewer.video_lost(),
        0,
        "NACKs did not repair what was refused"
    );
    let _ = streamer.stop();
}

/// The SSRC of an SRTP datagram (clear in the header).
fn ssrc_of(d: &[u8]) -> u32 {
    u32::from_be_bytes([d[8], d[9], d[10], d[11]])
}

/// A packet lost twice (the media and its first retransmission) is still repaired: the
/// viewer NACKs it again and the server answers again from its history.
#[test]
fn a_repeated_nack_is_answered_again() {
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(10)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 77).is_some()));
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(viewer.drive(Duration::from_secs(5), |v| v.video.len() > 30
        && !v.audio.is_empty()));
    let video = *viewer.video[0].header.ssrc;
    let audio = *viewer.audio[0].header.ssrc;
    let state = std::sync::Arc::new(std::sync::Mutex::new((None::<u16>, 0u32)));
    let s = state.clone();
    viewer.drop_filter = Some(Box::new(move |d: &[u8]| {
        let mut st = s.lock().unwrap();
        let ssrc = ssrc_of(d);
        if ssrc == video && st.0.is_none() {
            st.0 = Some(u16::from_be_bytes([d[2], d[3]]));
            return true; // the media packet
        }
        if ssrc != video && ssrc != audio {
            st.1 += 1;
            return st.1 == 1; // its first retransmission
        }
        false
    }));
    viewer.drive(Duration::from_secs(3), |_| false);
    let (target, retransmissions) = *state.lock().unwrap();
    eprintln!("dropped seq {target:?}; retransmissions seen {retransmissions}");
    assert!(target.is_some());
    assert!(
        retransmissions >= 2,
        "the repeated NACK went unanswered ({retransmissions} retransmission)"
    );
    assert!(
        viewer
            .video
            .iter()
            .any(|p| Some(p.header.sequence_number) == target),
        "the twice-lost packet never arrived"
    );
    assert_eq!(viewer.video_lost(), 0);
    let _ = streamer.stop();
}

/// A viewer joins a step above the clean share; after a calm period it comes down to the
/// clean share (15 %). Then on 20 % loss (retransmissions included) it
/// gets the retransmission budget its loss calls for at the next keyframe, and from then on
/// every packet is repaired; the clean share would drop a share of the resends.
#[test]
fn heavy_loss_raises_the_repair_budget_and_everything_is_repaired() {
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(34)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 77).is_some()));
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(viewer.drive(Duration::from_secs(5), |v| v.video_count > 30));
    // The joining step falls after `FALL_AFTER` of calm, applied at the next keyframe.
    let fall = relay_core::RepairBudget::FALL_AFTER + Duration::from_secs(8);
    let lowered = viewer.drive(fall, |_| {
        server.metric("itg_viewer_rtx_budget_lowered_total") >= 1.0
    });
    assert!(lowered, "a clean viewer's joining budget did not come down");
    assert_eq!(server.metric("itg_viewer_rtx_budget_raised_total"), 0.0);
    // 20 % of datagrams, at random (seeded): a fixed period would line up with the
    // receiver's NACK retries and lose the same packet's every resend.
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(20);
    viewer.drop_filter = Some(Box::new(move |_: &[u8]| {
        rand::Rng::random_bool(&mut rng, 0.2)
    }));
    let raised = viewer.drive(Duration::from_secs(8), |_| {
        server.metric("itg_viewer_rtx_budget_raised_total") >= 1.0
    });
    assert!(raised, "the budget did not rise for a viewer on 20 % loss");
    viewer.drive(Duration::from_millis(300), |_| false);
    // Holes from before now may stay open (the clean share refused some resends, and the
    // rise started the history afresh); none past the newest packet seen now may.
    let newest = viewer.video.iter().map(|p| *p.seq_no).max().unwrap_or(0);
    let dropped = viewer.dropped;
    viewer.drive(Duration::from_secs(5), |_| false);
    viewer.drop_filter = None;
    viewer.drive(Duration::from_millis(800), |_| false);
    let mut seqs: Vec<u64> = viewer.video.iter().map(|p| *p.seq_no).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let end = seqs.last().copied().unwrap_or(0);
    let holes_before = seqs
        .windows(2)
        .filter(|w| w[1] <= newest)
        .map(|w| w[1] - w[0] - 1)
        .sum::<u64>();
    let open: Vec<u64> = (newest + 1..end)
        .filter(|s| seqs.binary_search(s).is_err())
        .collect();
    eprintln!(
        "budget raised {}; holes before the rise settled: {holes_before}; packets since: {}; \
         open since: {open:?}; dropped {}",
        server.metric("itg_viewer_rtx_budget_raised_total"),
        end - newest,
        viewer.dropped - dropped
    );
    assert!(
        viewer.dropped - dropped > 60,
        "little was dropped: {}",
        viewer.dropped - dropped
    );
    assert!(end - newest > 300, "video stalled: {}", end - newest);
    assert!(
        open.is_empty(),
        "packets went unrepaired on 20 % loss: {open:?}"
    );
    let _ = streamer.stop();
}

/// Keyframes carry the playout-delay extension (minimum 0, maximum `--playout-delay-max-ms`):
/// the browser keeps its jitter buffer as small as the network allows.
#[test]
fn keyframes_tell_the_browser_to_hold_video_back_as_little_as_it_can() {
    let server = TestServer::start_with(|a| a.playout_delay_max_ms = 250);
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(8)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 77).is_some()));
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(viewer.drive(Duration::from_secs(5), |v| v.video.len() > 200));
    let with: Vec<_> = viewer
        .video
        .iter()
        .filter(|p| p.header.ext_vals.play_delay_max.is_some())
        .collect();
    assert!(!with.is_empty(), "no packet carried the playout delay");
    for p in &with {
        let min = p.header.ext_vals.play_delay_min.unwrap();
        let max = p.header.ext_vals.play_delay_max.unwrap();
        assert_eq!(min.rebase(str0m::media::Frequency::MILLIS).numer(), 0);
        assert_eq!(max.rebase(str0m::media::Frequency::MILLIS).numer(), 250);
        // H.264 in RTP: a keyframe's first packet starts with an SPS (7), or a STAP-A (24)
        // or FU-A (28) holding one.
        let nal = p.payload[0] & 0x1f;
        assert!(
            matches!(nal, 7 | 24 | 28 | 5),
            "on a non-keyframe packet (NAL {nal})"
        );
    }
    assert!(
        with.len() * 10 < viewer.video.len(),
        "on {} of {} packets",
        with.len(),
        viewer.video.len()
    );
    let _ = streamer.stop();
}

/// Whether an RTP payload starts an H.264 keyframe (an SPS first, alone or aggregated, as the
/// FTL client packetizes access units; or an IDR slice).
fn starts_keyframe(payload: &[u8]) -> bool {
    match payload.first().map(|b| b & 0x1f) {
        Some(7) | Some(5) => true,
        Some(24) => payload.get(3).is_some_and(|b| b & 0x1f == 7),
        Some(28) => payload
            .get(1)
            .is_some_and(|b| b & 0x80 != 0 && b & 0x1f == 5),
        _ => false,
    }
}

/// When repair cannot win (everything lost for longer than the retransmission history), the
/// viewer's keyframe request is answered at once from the GOP cache: a clean restart, not a
/// freeze until the encoder's next keyframe.
#[test]
fn a_viewer_whose_repair_cannot_win_restarts_from_the_cached_keyframe() {
    let server = TestServer::start();
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(10)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 77).is_some()));
    let mut viewer = Viewer::whep(server.addrs.http, 77).unwrap();
    assert!(viewer.drive(Duration::from_secs(5), |v| v.video.len() > 30));
    let ssrc = viewer.video[0].header.ssrc;
    // An outage longer than the history a NACK can reach.
    viewer.drop_filter = Some(Box::new(|_: &[u8]| true));
    viewer.drive(Duration::from_millis(900), |_| false);
    viewer.drop_filter = None;
    let before = viewer.video.len();
    let asked = std::time::Instant::now();
    viewer
        .rtc
        .direct_api()
        .stream_rx(&ssrc)
        .expect("the video stream")
        .request_keyframe(str0m::media::KeyframeRequestKind::Pli);
    let got = viewer.drive(Duration::from_secs(2), |v| {
        v.video
            .iter()
            .skip(before)
            .any(|p| starts_keyframe(&p.payload))
    });
    let waited = asked.elapsed();
    let info = stream_info(&server, 77).unwrap();
    eprintln!(
        "keyframe {waited:?} after the request; restarts from the cache {}",
        info["viewer_restarts"]
    );
    assert!(got, "no keyframe after the request");
    assert!(
        waited < Duration::from_millis(300),
        "the keyframe took {waited:?}"
    );
    assert_eq!(info["viewer_restarts"], 1, "not answered from the cache");
    let _ = streamer.stop();
}
