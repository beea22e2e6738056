//! What one RTP packet costs on its way to one viewer, outside the loop and the kernel: str0m's
//! whole send path (`write_rtp`, the timeout that stamps the send queue, `poll_output` down to
//! the SRTP datagram) with a viewer's settings, against the floor under it, the AES-256-GCM
//! seal of the same bytes into a fresh buffer (the SRTP profile browsers and str0m pick).
//!
//! The difference is str0m's bookkeeping per packet: what an upstream change could win (see
//! the README's egress section). `cargo bench -p server-mio --bench egress_packet`; the sizes
//! of the values str0m moves per packet are printed first.
//!
//! `egress_codec`: the video of a captured Chromium WHIP session in each codec the relay passes
//! through (`tests/data/captures/whip-*.pcap`), sent to one viewer negotiated in that codec at
//! the capture's own pace, packet sizes and payloads: what one viewer of such a stream costs
//! per second of it, on this path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, Input, Output, Rtc};

const SERVER: &str = "10.0.0.1:5000";
const CLIENT: &str = "10.0.0.2:6000";
/// A full FU-A fragment as FTL carries it.
const PAYLOAD: usize = 1200;

/// A viewer's `Rtc` on the server side, connected (ICE and DTLS) to a receive-only client by
/// passing datagrams between them in memory, and the clock they share.
struct Pair {
    server: Rtc,
    client: Rtc,
    video: (Ssrc, Pt),
    now: Instant,
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Polls `from` until it wants time to pass; its datagrams go into `to`. Returns whether
/// `from` said it connected.
fn pass(
    from: &mut Rtc,
    from_addr: SocketAddr,
    to: &mut Rtc,
    to_addr: SocketAddr,
    now: Instant,
) -> bool {
    let mut connected = false;
    loop {
        match from.poll_output().unwrap() {
            Output::Transmit(t) => {
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Udp,
                        source: from_addr,
                        destination: to_addr,
                        contents: t.contents.as_ref().try_into().unwrap(),
                    },
                );
                to.handle_input(input).unwrap();
            }
            Output::Event(Event::Connected) => connected = true,
            Output::Event(_) => {}
            Output::Timeout(_) => return connected,
        }
    }
}

fn pair() -> Pair {
    pair_in(str0m::format::Codec::H264)
}

/// A connected viewer whose video is in `codec`.
fn pair_in(codec: str0m::format::Codec) -> Pair {
    pair_with(codec, server_mio::server::viewer_config())
}

/// A connected viewer with the server side built from `config`.
fn pair_with(codec: str0m::format::Codec, config: str0m::RtcConfig) -> Pair {
    let mut now = Instant::now();
    let mut server = config.build(now);
    server.add_local_candidate(Candidate::host(addr(SERVER), "udp").unwrap());
    // A browser's side: the standard extensions (transport-wide sequence numbers among them).
    let mut client = Rtc::builder()
        .set_rtp_mode(true)
        .set_extension_map(str0m::rtp::ExtensionMap::standard())
        .build(now);
    client.add_local_candidate(Candidate::host(addr(CLIENT), "udp").unwrap());
    let mut api = client.sdp_api();
    let video_mid: Mid = api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().unwrap();
    let answer = server.sdp_api().accept_offer(offer).unwrap();
    client.sdp_api().accept_answer(pending, answer).unwrap();
    let (mut server_up, mut client_up) = (false, false);
    for _ in 0..2000 {
        client_up |= pass(&mut client, addr(CLIENT), &mut server, addr(SERVER), now);
        server_up |= pass(&mut server, addr(SERVER), &mut client, addr(CLIENT), now);
        if server_up && client_up {
            break;
        }
        now += Duration::from_millis(5);
        client.handle_input(Input::Timeout(now)).unwrap();
        server.handle_input(Input::Timeout(now)).unwrap();
    }
    assert!(server_up && client_up, "the pair did not connect");
    let pt = server
        .codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
        .unwrap();
    let ssrc = {
        let mut api = server.direct_api();
        let tx = api.stream_tx_by_mid(video_mid, None).unwrap();
        server_mio::server::viewer_video_tx(tx, relay_core::repair::RTX_SHARES[0]);
        tx.ssrc()
    };
    Pair {
        server,
        client,
        video: (ssrc, pt),
        now,
    }
}

impl Pair {
    /// Writes video packet `seq` (its timestamp from it) to the server side at `now`.
    fn write(&mut self, seq: u64, payload: &Arc<[u8]>) {
        let (ssrc, pt) = self.video;
        let w = RtpWrite::new(
            pt,
            seq.into(),
            (seq * 270) as u32,
            self.now,
            payload.clone(),
        )
        .nackable(true);
        self.server
            .direct_api()
            .stream_tx(&ssrc)
            .unwrap()
            .write_rtp(w);
    }

    /// `n` packets through the server side, as the loop sends a burst of them: all written,
    /// then one timeout and the polls. Returns the datagram bytes.
    fn send(&mut self, seq: u64, n: u64, payload: &Arc<[u8]>) -> usize {
        // Packets 3 ms apart: a 2.5 Mbit/s stream's pace (RTX history evicts by time).
        self.now += Duration::from_millis(3 * n);
        for s in seq..seq + n {
            self.write(s, payload);
        }
        self.server.handle_input(Input::Timeout(self.now)).unwrap();
        let mut bytes = 0;
        loop {
            match self.server.poll_output().unwrap() {
                Output::Transmit(t) => bytes += t.contents.len(),
                Output::Event(_) => {}
                Output::Timeout(_) => return bytes,
            }
        }
    }
}

/// The video payloads of a captured WHIP session and the offset of each from the first.
fn captured_video(file: &str) -> Vec<(Duration, Arc<[u8]>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/captures")
        .join(file);
    let bytes = std::fs::read(&path).unwrap();
    let sessions = server_mio::capture::reader::read_sessions(&bytes).unwrap();
    let session = sessions.first().unwrap();
    let pts = &session.whip.as_ref().unwrap().video_pts;
    let mut out = Vec::new();
    for (at, _, d) in &session.media_in {
        let Ok(rtp) = ftl_proto::media::RtpPacket::parse(d) else {
            continue;
        };
        if pts.contains(&rtp.payload_type()) {
            out.push((*at, Arc::from(rtp.payload())));
        }
    }
    let first = out.first().map(|(t, _)| *t).unwrap();
    out.into_iter().map(|(t, p)| (t - first, p)).collect()
}

impl Pair {
    /// One pass over a capture's video, each packet written and sent at its captured instant
    /// (after `base`); the polls as the loop does them. Returns datagram bytes.
    fn replay(&mut self, seq: &mut u64, video: &[(Duration, Arc<[u8]>)]) -> usize {
        let base = self.now;
        let mut bytes = 0;
        for (at, payload) in video {
            self.now = base + *at;
            *seq += 1;
            self.write(*seq, payload);
            self.server.handle_input(Input::Timeout(self.now)).unwrap();
            loop {
                match self.server.poll_output().unwrap() {
                    Output::Transmit(t) => bytes += t.contents.len(),
                    Output::Event(_) => {}
                    Output::Timeout(_) => break,
                }
            }
        }
        self.now += Duration::from_millis(33);
        bytes
    }
}

/// Drives an `Rtc` until it wants time to pass, feeding back at once the timeouts that are
/// already due (a paced `Rtc` wants one between packets; the loop does the same, see
/// `viewer_drive`). Returns its datagrams.
fn drain(rtc: &mut Rtc, now: Instant) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..4096 {
        match rtc.poll_output().unwrap() {
            Output::Transmit(t) => out.push(t.contents.to_vec()),
            Output::Event(_) => {}
            Output::Timeout(t) if t <= now => rtc.handle_input(Input::Timeout(now)).unwrap(),
            Output::Timeout(_) => break,
        }
    }
    out
}

fn receive(rtc: &mut Rtc, from: &str, to: &str, datagrams: &[Vec<u8>], now: Instant) {
    for d in datagrams {
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: addr(from),
                destination: addr(to),
                contents: d.as_slice().try_into().unwrap(),
            },
        );
        rtc.handle_input(input).unwrap();
    }
}

impl Pair {
    /// `n` packets 3 ms apart through the server side, the client's feedback (receiver
    /// reports, NACKs, transport-wide feedback where negotiated) fed back to it every 100 ms as
    /// a browser sends it. Returns the time the server side took (the client's is not counted)
    /// and its datagrams' bytes.
    fn send_fed(&mut self, seq: &mut u64, n: u64, payload: &Arc<[u8]>) -> (Duration, usize) {
        let mut spent = Duration::ZERO;
        let mut bytes = 0;
        let mut sent = Vec::new();
        for _ in 0..n {
            self.now += Duration::from_millis(3);
            *seq += 1;
            let s = *seq;
            let t0 = Instant::now();
            self.write(s, payload);
            self.server.handle_input(Input::Timeout(self.now)).unwrap();
            let out = drain(&mut self.server, self.now);
            spent += t0.elapsed();
            bytes += out.iter().map(Vec::len).sum::<usize>();
            sent.extend(out);
            if s % 33 == 0 {
                receive(&mut self.client, SERVER, CLIENT, &sent, self.now);
                sent.clear();
                self.client.handle_input(Input::Timeout(self.now)).unwrap();
                let feedback = drain(&mut self.client, self.now);
                let t0 = Instant::now();
                receive(&mut self.server, CLIENT, SERVER, &feedback, self.now);
                let _ = drain(&mut self.server, self.now);
                spent += t0.elapsed();
            }
        }
        (spent, bytes)
    }
}

/// What a viewer of a simulcast stream costs per packet with its bandwidth estimate
/// (transport-wide sequence numbers, str0m's estimator and probes) against a viewer without
/// (every other viewer), each with its client's feedback coming back.
fn egress_estimating(c: &mut Criterion) {
    use str0m::format::Codec;
    let payload: Arc<[u8]> = vec![0x5c; PAYLOAD].into();
    let mut g = c.benchmark_group("egress_estimating");
    g.throughput(Throughput::Elements(1));
    for (name, config) in [
        ("plain", server_mio::server::viewer_config()),
        ("estimating", server_mio::server::estimating_viewer_config()),
    ] {
        let mut pair = pair_with(Codec::H264, config);
        let mut seq = 1000u64;
        // Warm up: the RTX history and (estimating) the estimator's start.
        let (_, bytes) = pair.send_fed(&mut seq, 2000, &payload);
        assert!(bytes > 2000 * PAYLOAD);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| pair.send_fed(&mut seq, iters, &payload).0)
        });
    }
    g.finish();
}

fn egress_codec(c: &mut Criterion) {
    use str0m::format::Codec;
    let mut g = c.benchmark_group("egress_codec");
    for (name, codec, file) in [
        ("h264", Codec::H264, "whip-320x180.pcap"),
        ("vp8", Codec::Vp8, "whip-vp8-640x360.pcap"),
        ("vp9", Codec::Vp9, "whip-vp9-640x360.pcap"),
        ("av1", Codec::Av1, "whip-av1-640x360.pcap"),
    ] {
        let video = captured_video(file);
        let span = video.last().unwrap().0.as_secs_f64();
        let bytes: usize = video.iter().map(|(_, p)| p.len()).sum();
        println!(
            "{name}: {} video packets in {span:.1} s ({:.0} packets/s, {:.0} kbit/s of payload)",
            video.len(),
            video.len() as f64 / span,
            bytes as f64 * 8.0 / span / 1000.0
        );
        let mut pair = pair_in(codec);
        let mut seq = 1000u64;
        assert!(
            pair.replay(&mut seq, &video) > bytes,
            "{name}: sent less than the payloads"
        );
        g.throughput(Throughput::Elements(video.len() as u64));
        g.bench_function(name, |b| b.iter(|| pair.replay(&mut seq, &video)));
    }
    g.finish();
}

fn egress(c: &mut Criterion) {
    println!(
        "sizes str0m moves per packet: RtpPacket {} bytes, Output {} bytes, Event {} bytes",
        std::mem::size_of::<str0m::rtp::RtpPacket>(),
        std::mem::size_of::<Output>(),
        std::mem::size_of::<Event>()
    );
    let payload: Arc<[u8]> = vec![0x5c; PAYLOAD].into();
    let mut g = c.benchmark_group("egress_packet");
    g.throughput(Throughput::Bytes(PAYLOAD as u64));

    let mut pair = pair();
    let mut seq = 1000u64;
    // Warm the RTX history to its steady size first.
    for _ in 0..400 {
        seq += 1;
        assert!(pair.send(seq, 1, &payload) > PAYLOAD);
    }
    g.bench_function("str0m_write_timeout_poll", |b| {
        b.iter(|| {
            seq += 1;
            pair.send(seq, 1, &payload)
        })
    });
    // A burst of 8 written before one timeout: what the per-call timeout costs, shared.
    g.throughput(Throughput::Bytes(8 * PAYLOAD as u64));
    g.bench_function("str0m_burst_of_8", |b| {
        b.iter(|| {
            seq += 8;
            pair.send(seq, 8, &payload)
        })
    });
    g.throughput(Throughput::Bytes(PAYLOAD as u64));

    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let mut n: u32 = 0;
    g.bench_function("aes256gcm_seal_floor", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let i = n;
            // The header in the clear as additional data, the payload sealed in a new buffer.
            let mut out = Vec::with_capacity(12 + PAYLOAD + 16);
            out.extend_from_slice(&[0x80, 0x66, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
            out.extend_from_slice(&payload);
            let mut iv = [0u8; 12];
            iv[8..].copy_from_slice(&i.to_be_bytes());
            let (head, body) = out.split_at_mut(12);
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(iv),
                    Aad::from(&*head),
                    body,
                )
                .unwrap();
            out.extend_from_slice(tag.as_ref());
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, egress, egress_codec, egress_estimating);
criterion_main!(benches);
