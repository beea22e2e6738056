//! ICE over TCP (RFC 6544, passive side): viewers whose networks block UDP reach the same
//! str0m peers over a TCP connection to `--webrtc-tcp-port`, each packet framed as RFC 4571
//! says. A connection is routed to its peer by the ICE username of its first STUN request,
//! then by the connection itself. Every buffer is bounded: one frame in, `MAX_OUT` out.
//!
//! **A viewer whose connection backs up** (its network is slower than the stream, or it stops
//! reading) never blocks the loop: what the kernel does not take waits in the connection's own
//! queue, whose size is reported to the relay as the viewer's backlog (only ICE-TCP viewers
//! report one: the UDP socket is shared and never holds one viewer's packets). Past
//! `--tcp-viewer-backlog-kb` the relay skips the viewer's video to the next keyframe (delay
//! stops growing, audio goes on); past `MAX_OUT` even audio and RTCP are dropped; a
//! connection that takes nothing for `STALL_LIMIT` while data waits is closed.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::debug;
use mio::net::TcpStream;
use mio::{Interest, Token};
use str0m::net::{Protocol, Receive};
use str0m::Input;

use super::peers::guarded;
use crate::client::framing::{frame, Deframer};
use crate::server::{Server, Slot};

/// Most bytes waiting to be written to one connection.
const MAX_OUT: usize = 1024 * 1024;
/// A connection that takes no byte for this long while data waits is closed.
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// From accept to the first STUN request that names a peer.
const ROUTE_DEADLINE: Duration = Duration::from_secs(10);
/// Most open ICE-TCP connections.
const MAX_CONNECTIONS: usize = 2048;

/// One ICE-TCP connection.
pub(in crate::server) struct IceTcpConn {
    stream: TcpStream,
    peer: SocketAddr,
    deframer: Deframer,
    /// Framed packets waiting for the socket, from `sent` on (compacted as it drains).
    out: Vec<u8>,
    sent: usize,
    /// Since when queued data has waited without the socket taking a byte.
    stalled_since: Option<Instant>,
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

impl IceTcpConn {
    /// Bytes queued and not yet taken by the kernel.
    fn backlog(&self) -> usize {
        self.out.len() - self.sent
    }
}

impl IceTcp {
    pub(in crate::server) fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .flat_map(|c| [c.deadline, c.stalled_since.map(|t| t + STALL_LIMIT)])
            .flatten()
            .min()
    }
}

impl Server {
    pub(in crate::server) fn accept_ice_tcp(&mut self, now: Instant) {
        loop {
            let Some(listener) = self.ice_tcp_listener.as_ref() else {
                return;
            };
            let (mut stream, peer) = match listener
                .accept()
                .map(|(s, p)| (s, crate::dual_stack::canonical(p)))
            {
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
            // The kernel's send buffer sized like our own bound (`SO_SNDBUF`), so that a
            // connection that backs up shows in our queue (and the relay's skip) within a
            // second, not after megabytes of autotuned buffer; the default 256 KiB still
            // carries ~14 Mbit/s at a 150 ms round trip.
            let kernel = self.args.tcp_viewer_backlog_kb.saturating_mul(1024);
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(kernel);
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
                    sent: 0,
                    stalled_since: None,
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
                v.keepalive
                    .on_input(Protocol::Tcp, peer, local, packet, now);
                // No arrival stamp through a TCP stream: not a late packet.
                self.rtc_waited = Duration::ZERO;
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
        if c.backlog() + packet.len() + 2 > MAX_OUT || frame(packet, &mut c.out).is_err() {
            self.counters.webrtc_send_errors += 1;
            self.counters.ice_tcp_dropped += 1;
            return;
        }
        // Behind already: the kernel will not take more now, and the backlog is reported.
        if c.stalled_since.is_none() {
            self.ice_tcp_flush(token);
        } else {
            let (id, backlog) = (c.id, c.backlog());
            self.report_backlog(id, backlog);
        }
    }

    fn ice_tcp_flush(&mut self, token: Token) {
        let Some(c) = self.ice_tcp.conns.get_mut(&token) else {
            return;
        };
        let mut wrote = false;
        while c.sent < c.out.len() {
            match c.stream.write(c.out.get(c.sent..).unwrap_or_default()) {
                Ok(0) => return self.ice_tcp_close(token, "write failed"),
                Ok(n) => {
                    c.sent += n;
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.ice_tcp_close(token, "write failed"),
            }
        }
        if c.sent == c.out.len() {
            c.out.clear();
            c.sent = 0;
            c.stalled_since = None;
        } else {
            if c.sent >= c.out.len() / 2 {
                c.out.drain(..c.sent);
                c.sent = 0;
            }
            if wrote || c.stalled_since.is_none() {
                c.stalled_since = Some(Instant::now());
            }
        }
        let want = c.sent < c.out.len();
        crate::server::want_writable(&self.poll, &mut c.stream, token, &mut c.writable, want);
        let (id, backlog) = (c.id, c.backlog());
        self.report_backlog(id, backlog);
    }

    /// Tells the relay how far behind the viewer on this connection is.
    fn report_backlog(&mut self, id: Option<u64>, bytes: usize) {
        let rid = id
            .and_then(|id| self.viewers.map.get(&id))
            .and_then(|v| v.relay_id());
        if let Some(rid) = rid {
            self.relay.report_backlog(rid, bytes);
        }
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
        let stalled: Vec<Token> = self
            .ice_tcp
            .conns
            .iter()
            .filter(|(_, c)| c.stalled_since.is_some_and(|s| s + STALL_LIMIT <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in stalled {
            self.counters.ice_tcp_stalled += 1;
            self.ice_tcp_close(t, "took nothing for 10 s");
        }
    }
}
