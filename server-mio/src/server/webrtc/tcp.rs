//! ICE over TCP (RFC 6544, passive side): viewers whose networks block UDP reach the same
//! str0m peers over a TCP connection to `--webrtc-tcp-port`, each packet framed as RFC 4571
//! says. A connection is routed to its peer by the ICE username of its first STUN request,
//! then by the connection itself. Every buffer is bounded: one frame in, `MAX_OUT` out (a viewer
//! whose socket backs up loses packets like a slow UDP viewer and recovers at a keyframe).

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;
use mio::{Interest, Token};
use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::framing::{frame, Deframer};
use super::peers::guarded;
use crate::server::{Server, Slot};

/// Most bytes waiting to be written to one connection.
const MAX_OUT: usize = 512 * 1024;
/// From accept to the first STUN request that names a peer.
const ROUTE_DEADLINE: Duration = Duration::from_secs(10);
/// Most open ICE-TCP connections.
const MAX_CONNECTIONS: usize = 2048;

/// One ICE-TCP connection.
pub(in crate::server) struct IceTcpConn {
    stream: TcpStream,
    peer: SocketAddr,
    deframer: Deframer,
    out: Vec<u8>,
    writable: bool,
    /// The peer (viewer or publisher) it carries, once its first STUN request named one.
    id: Option<u64>,
    deadline: Option<Instant>,
}

/// The ICE-TCP connections by token and by remote address (where str0m sends).
#[derive(Default)]
pub(in crate::server) struct IceTcp {
    conns: HashMap<Token, IceTcpConn>,
    by_addr: HashMap<SocketAddr, Token>,
}

impl Server {
    /// The connections carrying peer `id`.
    pub(in crate::server) fn ice_tcp_tokens_of(&self, id: u64) -> Vec<Token> {
        self.ice_tcp
            .conns
            .iter()
            .filter(|(_, c)| c.id == Some(id))
            .map(|(t, _)| *t)
            .collect()
    }
}

impl IceTcp {
    pub(in crate::server) fn next_deadline(&self) -> Option<Instant> {
        self.conns.values().filter_map(|c| c.deadline).min()
    }
}

impl Server {
    pub(in crate::server) fn accept_ice_tcp(&mut self, now: Instant) {
        loop {
            let Some(listener) = self.ice_tcp_listener.as_ref() else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("ICE-TCP accept: {e}");
                    return;
                }
            };
            let unrouted_here = self
                .ice_tcp
                .conns
                .values()
                .filter(|c| c.id.is_none() && c.peer.ip() == peer.ip())
                .count();
            if unrouted_here >= self.args.max_http_per_address
                || self.ice_tcp.conns.len() >= MAX_CONNECTIONS
            {
                self.counters.ice_tcp_refused += 1;
                continue;
            }
            let _ = stream.set_nodelay(true);
            let token = self.token(Slot::IceTcp);
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE)
                .is_err()
            {
                self.slots.remove(&token);
                continue;
            }
            self.ice_tcp.by_addr.insert(peer, token);
            self.ice_tcp.conns.insert(
                token,
                IceTcpConn {
                    stream,
                    peer,
                    deframer: Deframer::default(),
                    out: Vec::new(),
                    writable: false,
                    id: None,
                    deadline: Some(now + ROUTE_DEADLINE),
                },
            );
        }
    }

    /// A connection whose read budget ran out.
    pub(in crate::server) fn ice_tcp_again(&mut self, token: Token, now: Instant) {
        self.ice_tcp_read(token, now);
    }

    pub(in crate::server) fn ice_tcp_event(
        &mut self,
        token: Token,
        ev: &mio::event::Event,
        now: Instant,
    ) {
        if ev.is_writable() {
            self.ice_tcp_flush(token);
        }
        if ev.is_readable() {
            self.ice_tcp_read(token, now);
        }
    }

    fn ice_tcp_read(&mut self, token: Token, now: Instant) {
        let local = self.addrs.webrtc_tcp.unwrap_or(self.addrs.webrtc);
        for _ in 0..crate::server::READ_BUDGET {
            let Some(c) = self.ice_tcp.conns.get_mut(&token) else {
                return;
            };
            let n = match c.stream.read(&mut self.buf) {
                Ok(0) => return self.ice_tcp_close(token, "closed by the peer"),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.ice_tcp_close(token, "read error"),
            };
            let mut rest = 0;
            while rest < n {
                let Some(c) = self.ice_tcp.conns.get_mut(&token) else {
                    return;
                };
                let input = self.buf.get(rest..n).unwrap_or_default();
                let (r, used) = c.deframer.next(input);
                rest += used;
                // The frame is borrowed from the connection's reassembler, not copied.
                let packet = match r {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return self.ice_tcp_close(token, &e.to_string()),
                };
                let Some(id) = c.id.or_else(|| self.viewers.route_stun(packet)) else {
                    self.counters.webrtc_unrouted += 1;
                    return self.ice_tcp_close(token, "no peer for its first packet");
                };
                c.id = Some(id);
                c.deadline = None;
                let peer = c.peer;
                let Some(v) = self.viewers.map.get_mut(&id) else {
                    return self.ice_tcp_close(token, "its peer is gone");
                };
                let Ok(contents) = packet.try_into() else {
                    continue;
                };
                let input = Input::Receive(
                    now,
                    Receive {
                        proto: Protocol::Tcp,
                        source: peer,
                        destination: local,
                        contents,
                    },
                );
                if !v.rtc.accepts(&input) {
                    self.counters.webrtc_unrouted += 1;
                    continue;
                }
                self.counters.ice_tcp_packets += 1;
                v.note_input(true);
                if let Ok(Err(e)) = guarded(|| v.rtc.handle_input(input)) {
                    debug!("peer {id} over TCP: {e}");
                }
                self.viewer_drive(id, now);
            }
        }
        self.again.push(token);
    }

    /// A packet str0m sends over TCP: framed onto its connection, or dropped when that
    /// connection is gone or backed up.
    pub(in crate::server) fn ice_tcp_send(&mut self, to: SocketAddr, packet: &[u8]) {
        let Some(&token) = self.ice_tcp.by_addr.get(&to) else {
            self.counters.webrtc_send_errors += 1;
            return;
        };
        let Some(c) = self.ice_tcp.conns.get_mut(&token) else {
            return;
        };
        if c.out.len() + packet.len() + 2 > MAX_OUT || frame(packet, &mut c.out).is_err() {
            self.counters.webrtc_send_errors += 1;
            return;
        }
        self.ice_tcp_flush(token);
    }

    fn ice_tcp_flush(&mut self, token: Token) {
        let Some(c) = self.ice_tcp.conns.get_mut(&token) else {
            return;
        };
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return self.ice_tcp_close(token, "write failed"),
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.ice_tcp_close(token, "write failed"),
            }
        }
        let want = !c.out.is_empty();
        crate::server::want_writable(&self.poll, &mut c.stream, token, &mut c.writable, want);
    }

    pub(in crate::server) fn ice_tcp_close(&mut self, token: Token, why: &str) {
        if let Some(mut c) = self.ice_tcp.conns.remove(&token) {
            debug!("ICE-TCP {}: closed ({why})", c.peer);
            let _ = self.poll.registry().deregister(&mut c.stream);
            if self.ice_tcp.by_addr.get(&c.peer) == Some(&token) {
                self.ice_tcp.by_addr.remove(&c.peer);
            }
        }
        self.slots.remove(&token);
    }

    pub(in crate::server) fn ice_tcp_timeouts(&mut self, now: Instant) {
        let due: Vec<Token> = self
            .ice_tcp
            .conns
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            self.ice_tcp_close(t, "no STUN request in time");
        }
    }
}
