//! Shared harness for the control-session tests: a virtual clock, the wire reference's test
//! vector, and a bounded pump that runs a client and a server session against each other.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ftl_proto::control::*;
use ftl_proto::{ChannelId, StreamKey};

/// The wire reference's nonce: bytes 0x00..0x3f.
pub fn counting_nonce() -> Nonce {
    let mut n = [0u8; NONCE_LEN];
    for (i, b) in n.iter_mut().enumerate() {
        *b = i as u8;
    }
    n
}

/// The wire reference's digest for secret `testkey` and [`counting_nonce`].
pub const REFERENCE_DIGEST: &str = concat!(
    "fc74e95e8a8beddd570e37bed704e9b86db409c285dfd0cd01915f6f5f88b37f",
    "2a10b431e5bacb444570541efe83a8bc6e58c4a87427fa604e034c30f5e000b4"
);

/// A virtual clock: tests say `t(offset)` and print offsets.
pub struct Clock {
    pub t0: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock { t0: Instant::now() }
    }
    pub fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }
}

/// Everything a server session put out after some input.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ServerOut {
    pub bytes: Vec<u8>,
    pub events: Vec<ServerEvent>,
}

pub fn drain_server(s: &mut ServerSession) -> ServerOut {
    let mut out = ServerOut::default();
    while let Some(b) = s.poll_transmit() {
        out.bytes.extend_from_slice(&b);
    }
    while let Some(e) = s.poll_event() {
        out.events.push(e);
    }
    out
}

/// How the harness answers the server's decisions.
pub struct Answers {
    pub keys: Vec<(ChannelId, StreamKey)>,
    pub port: u16,
}

/// Feeds `chunks` to a server, answering decisions as `answers` says; returns all output.
pub fn run_server(
    server: &mut ServerSession,
    chunks: &[&[u8]],
    answers: &Answers,
    now: Instant,
) -> ServerOut {
    let mut all = ServerOut::default();
    for chunk in chunks {
        let _ = server.handle_input(chunk, now);
        answer_all(server, answers, now, &mut all);
    }
    all
}

fn answer_all(server: &mut ServerSession, answers: &Answers, now: Instant, all: &mut ServerOut) {
    // Bounded: each round either answers a decision or ends.
    for _ in 0..16 {
        let out = drain_server(server);
        let done = out.events.is_empty();
        all.bytes.extend_from_slice(&out.bytes);
        for ev in out.events {
            match &ev {
                ServerEvent::KeyRequested { channel } => {
                    match answers.keys.iter().find(|(c, _)| c == channel) {
                        Some((_, key)) => {
                            let _ = server.provide_key(key, now);
                        }
                        None => server.reject_unknown_channel().unwrap(),
                    }
                }
                ServerEvent::MetadataReady { .. } => server.assign_port(answers.port, now).unwrap(),
                _ => {}
            }
            all.events.push(ev);
        }
        if done {
            return;
        }
    }
    panic!("server kept producing events");
}

/// Runs a client and a server against each other until both are quiet; returns the client's
/// events and the server's events. Bounded: a broken session fails, it never hangs.
pub fn handshake(
    client: &mut ClientSession,
    server: &mut ServerSession,
    answers: &Answers,
    now: Instant,
) -> (Vec<ClientEvent>, Vec<ServerEvent>) {
    let mut client_events = Vec::new();
    let mut server_events = Vec::new();
    for _ in 0..32 {
        let mut moved = false;
        while let Some(b) = client.poll_transmit() {
            moved = true;
            let out = run_server(server, &[&b], answers, now);
            server_events.extend(out.events);
            if !out.bytes.is_empty() {
                let _ = client.handle_input(&out.bytes, now);
            }
        }
        while let Some(b) = server.poll_transmit() {
            moved = true;
            let _ = client.handle_input(&b, now);
        }
        while let Some(e) = client.poll_event() {
            moved = true;
            client_events.push(e);
        }
        if !moved {
            return (client_events, server_events);
        }
    }
    panic!("handshake did not settle");
}

/// The bytes the reference client sends for channel 77, key `testkey`, and [`counting_nonce`],
/// up to and including the `.` line.
pub fn reference_client_bytes(metadata: &Metadata) -> Vec<u8> {
    let mut b = b"HMAC\r\n\r\n".to_vec();
    b.extend_from_slice(format!("CONNECT 77 ${REFERENCE_DIGEST}\r\n\r\n").as_bytes());
    for l in metadata.to_lines() {
        b.extend_from_slice(l.as_bytes());
        b.extend_from_slice(b"\r\n\r\n");
    }
    b.extend_from_slice(b".\r\n\r\n");
    b
}

pub fn testkey_answers() -> Answers {
    Answers {
        keys: vec![(ChannelId(77), StreamKey::new("testkey"))],
        port: 9000,
    }
}
