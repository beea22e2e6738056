//! Per-packet cost of ingest plus fan-out: one video datagram in, one forwarding decision per
//! viewer out (drained, as the server does). Reported per packet-viewer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ftl_proto::control::Metadata;
use ftl_proto::media::packetize::{access_units, packetize_nal, split_annexb, FTL_MAX_PAYLOAD};
use ftl_proto::media::{MediaParams, RtpHeader};
use ftl_proto::{ChannelId, Ssrc};
use relay_core::{
    LayerId, MediaKind, Output, Quality, Relay, RelayConfig, RtpIn, StreamParams, VideoCodec,
};

const VIDEO: &[u8] = include_bytes!("../tests/data/video-320x180-30fps-4s.h264");

fn payloads() -> Vec<(Vec<u8>, bool, u32)> {
    let nals = split_annexb(VIDEO);
    let mut out = Vec::new();
    for (i, au) in access_units(&nals).iter().enumerate() {
        let mut p = Vec::new();
        for nal in au {
            packetize_nal(nal, FTL_MAX_PAYLOAD, &mut p);
        }
        let n = p.len();
        for (j, payload) in p.into_iter().enumerate() {
            out.push((payload, j + 1 == n, i as u32 * 3000));
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let payloads = payloads();
    let mut group = c.benchmark_group("ingest_and_fanout");
    group.measurement_time(Duration::from_secs(4));
    for viewers in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(viewers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(viewers),
            &viewers,
            |b, &viewers| {
                let t0 = Instant::now();
                let mut relay = Relay::new(RelayConfig::default());
                let params = StreamParams::Ftl {
                    media: MediaParams::from_metadata(&Metadata::reference(77)),
                    peer_ip: "127.0.0.1".parse().unwrap(),
                };
                relay.start_stream(ChannelId(77), params, t0).unwrap();
                for _ in 0..viewers {
                    relay.add_viewer(ChannelId(77), t0).unwrap();
                }
                while relay.poll_output().is_some() {}
                let from = "127.0.0.1:5000".parse().unwrap();
                let mut seq: u16 = 0;
                let mut i = 0usize;
                let mut lap = 0u32;
                let mut datagram = Vec::with_capacity(1500);
                b.iter(|| {
                    let (payload, marker, ts) = &payloads[i];
                    datagram.clear();
                    RtpHeader {
                        marker: *marker,
                        payload_type: 96,
                        sequence_number: seq,
                        timestamp: ts.wrapping_add(lap * 360_000),
                        ssrc: Ssrc(78),
                    }
                    .write(payload, &mut datagram);
                    let now = t0
                        + Duration::from_micros(
                            u64::from(lap) * 4_000_000 + u64::from(*ts) * 100 / 9,
                        );
                    relay.handle_datagram(ChannelId(77), from, &datagram, now);
                    let n = drain(&mut relay);
                    seq = seq.wrapping_add(1);
                    i += 1;
                    if i == payloads.len() {
                        i = 0;
                        lap += 1;
                    }
                    n
                });
            },
        );
    }
    group.finish();
}

/// Simulcast against one layer, from a WebRTC publisher: each step feeds one packet of every
/// layer (the same payloads, as the cost does not depend on what they hold) to 300 viewers,
/// spread evenly over the layers. Reported per packet forwarded to a viewer, so the figures
/// compare directly: what a viewer costs when the stream has three layers instead of one.
fn bench_layers(c: &mut Criterion) {
    let payloads = payloads();
    let mut group = c.benchmark_group("simulcast_fanout");
    group.measurement_time(Duration::from_secs(4));
    const VIEWERS: usize = 300;
    for layers in [1u8, 3] {
        group.throughput(Throughput::Elements(VIEWERS as u64));
        group.bench_with_input(BenchmarkId::new("layers", layers), &layers, |b, &layers| {
            let t0 = Instant::now();
            let mut relay = Relay::new(RelayConfig::default());
            let params = StreamParams::Rtp {
                video: Some(VideoCodec::H264),
                audio: false,
            };
            relay.start_stream(ChannelId(77), params, t0).unwrap();
            let mut seq: u16 = 0;
            let mut i = 0usize;
            let mut lap = 0u32;
            let feed = |relay: &mut Relay, i: usize, lap: u32, seq: u16| {
                let (payload, marker, ts) = &payloads[i];
                let now = t0
                    + Duration::from_micros(u64::from(lap) * 4_000_000 + u64::from(*ts) * 100 / 9);
                for layer in 0..layers {
                    let rtp = RtpIn {
                        kind: MediaKind::Video,
                        layer: LayerId(layer),
                        seq,
                        timestamp: ts.wrapping_add(lap * 360_000),
                        marker: *marker,
                        payload: payload.as_slice().into(),
                    };
                    relay.handle_rtp(ChannelId(77), rtp, now);
                }
                now
            };
            // Every layer sends before the viewers join, each then fixed on its share.
            while i < 40 {
                feed(&mut relay, i, 0, seq);
                seq = seq.wrapping_add(1);
                i += 1;
            }
            for n in 0..VIEWERS {
                let v = relay.add_viewer(ChannelId(77), t0).unwrap();
                let layer = LayerId((n % usize::from(layers)) as u8);
                relay
                    .set_viewer_quality(v, Quality::Fixed(layer), t0)
                    .unwrap();
            }
            while relay.poll_output().is_some() {}
            b.iter(|| {
                feed(&mut relay, i, lap, seq);
                let n = drain(&mut relay);
                seq = seq.wrapping_add(1);
                i += 1;
                if i == payloads.len() {
                    i = 0;
                    lap += 1;
                }
                n
            });
        });
    }
    group.finish();
}

/// Takes what the relay put out; the bytes forwarded (so nothing is optimized away).
fn drain(relay: &mut Relay) -> usize {
    let mut n = 0;
    while let Some(o) = relay.poll_output() {
        if let Output::Forward(f) = o {
            n += f.payload.len();
        }
    }
    n
}

criterion_group!(benches, bench, bench_layers);
criterion_main!(benches);
