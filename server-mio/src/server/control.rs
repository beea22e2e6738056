//! FTL control connections (TCP) and the media socket of each live stream (UDP).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use ftl_proto::control::{
    CloseReason, ServerConfig, ServerEvent, ServerSession, StatusCode, NONCE_LEN,
};
use ftl_proto::media::MediaParams;
use ftl_proto::ChannelId;
use log::{debug, info, warn};
use mio::event::Event;
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Token};
use rand::RngCore;
use relay_core::{EndReason, StreamParams};

use super::{MediaSocket, Server, Slot, READ_BUDGET};

/// Most bytes waiting to be written to an FTL client; a client that does not read its replies
/// (a PING flood) is cut off past it.
const MAX_PENDING_WRITE: usize = 64 * 1024;
/// Media datagrams read before the relay is drained (see `read_media_budget`).
const DRAIN_EVERY: usize = 32;

/// One FTL control connection.
pub(super) struct ControlConn {
    stream: TcpStream,
    peer: SocketAddr,
    pub(super) session: ServerSession,
    out: Vec<u8>,
    writable: bool,
    /// The channel this connection streams, once its stream started.
    live: Option<ChannelId>,
    /// When it was accepted, and whether its key was accepted: connections that have not
    /// authenticated are capped per address and are the ones let go when the table is full.
    accepted: Instant,
    authenticated: bool,
    /// The session's recording, with `--capture`.
    pub(super) capture: Option<crate::capture::SessionCapture>,
}

impl ControlConn {
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// Writes what is pending; errors close the connection later.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Server {
    pub(super) fn accept_control(&mut self, now: Instant) {
        loop {
            let (mut stream, peer) = match self
                .ftl_listener
                .accept()
                .map(|(s, p)| (s, crate::dual_stack::canonical(p)))
            {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("FTL accept: {e}");
                    return;
                }
            };
            if self.auth_blocked(peer.ip(), now) {
                self.counters.control_refused += 1;
                debug!("FTL: refusing {peer}: too many failed authentications");
                let _ = stream.write(
                    &StatusCode::UNAUTHORIZED.reply_line("too many failed attempts, retry later"),
                );
                continue;
            }
            let here = super::addr_group::group(peer.ip());
            let unauthenticated_here = self
                .controls
                .values()
                .filter(|c| !c.authenticated && super::addr_group::group(c.peer.ip()) == here)
                .count();
            if unauthenticated_here >= self.args.max_ftl_per_address {
                self.counters.control_refused += 1;
                debug!("FTL: refusing {peer}: {unauthenticated_here} connections from it are still authenticating");
                let _ = stream.write(
                    &StatusCode::INTERNAL_ERROR
                        .reply_line("too many connections from your address"),
                );
                continue;
            }
            if self.controls.len() >= self.args.max_control_connections
                && !self.control_make_room(now)
            {
                self.counters.control_refused += 1;
                warn!(
                    "FTL: refusing {peer}: {} control connections open, all authenticated",
                    self.controls.len()
                );
                let _ =
                    stream.write(&StatusCode::INTERNAL_ERROR.reply_line("too many connections"));
                continue;
            }
            let token = self.token(Slot::Control);
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE)
            {
                warn!("FTL register: {e}");
                self.slots.remove(&token);
                continue;
            }
            let mut nonce = [0u8; NONCE_LEN];
            rand::rng().fill_bytes(&mut nonce);
            let config = ServerConfig {
                keepalive_timeout: self.args.keepalive(),
                ..ServerConfig::default()
            };
            debug!("FTL: connection from {peer}");
            self.counters.control_accepted += 1;
            let capture = self.args.capture.as_ref().and_then(|dir| {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let stem = format!("ftl-{secs}-{}-{}", peer.ip(), peer.port()).replace(':', "_");
                let limits = crate::capture::Limits {
                    max_file_bytes: self.args.capture_max_mb.saturating_mul(1024 * 1024),
                    max_files: self.args.capture_files.max(1),
                };
                match crate::capture::SessionCapture::create(
                    dir,
                    &stem,
                    peer,
                    self.addrs.ftl,
                    limits,
                    now,
                ) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        warn!("capture in {}: {e}", dir.display());
                        None
                    }
                }
            });
            self.controls.insert(
                token,
                ControlConn {
                    stream,
                    peer,
                    session: ServerSession::new(config, nonce, now),
                    out: Vec::new(),
                    writable: false,
                    live: None,
                    accepted: now,
                    authenticated: false,
                    capture,
                },
            );
        }
    }

    /// The table is full: closes the oldest connection that has not authenticated, so a
    /// newcomer gets a chance; whether one was closed.
    fn control_make_room(&mut self, now: Instant) -> bool {
        let oldest = self
            .controls
            .iter()
            .filter(|(_, c)| !c.authenticated)
            .min_by_key(|(_, c)| c.accepted)
            .map(|(t, c)| (*t, c.peer));
        let Some((token, peer)) = oldest else {
            return false;
        };
        self.counters.control_evicted += 1;
        debug!("FTL: closing {peer}, the oldest unauthenticated connection, to make room");
        if let Some(c) = self.controls.get_mut(&token) {
            c.session.refuse(
                StatusCode::INTERNAL_ERROR,
                "server busy, connection recycled",
            );
        }
        self.pump_control(token, now);
        // A client that does not read its refusal is closed all the same.
        if self.controls.contains_key(&token) {
            self.drop_control(token);
        }
        true
    }

    pub(super) fn control_event(&mut self, token: Token, ev: &Event, now: Instant) {
        if ev.is_readable() {
            self.control_read(token, now);
        }
        self.pump_control(token, now);
    }

    /// Reads what the client sent, at most [`READ_BUDGET`] chunks per wake-up.
    pub(super) fn control_read(&mut self, token: Token, now: Instant) {
        for _ in 0..READ_BUDGET {
            let Some(conn) = self.controls.get_mut(&token) else {
                return;
            };
            if conn.session.is_closed() {
                return;
            }
            match conn.stream.read(&mut self.buf) {
                Ok(0) => {
                    conn.session.handle_eof();
                    return self.pump_control(token, now);
                }
                Ok(n) => {
                    let data = self.buf.get(..n).unwrap_or_default();
                    if let Some(c) = conn.capture.as_mut() {
                        c.control_in(data, now);
                    }
                    let _ = conn.session.handle_input(data, now);
                    self.pump_control(token, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.session.handle_eof();
                    return self.pump_control(token, now);
                }
            }
        }
        self.again.push(token);
    }

    pub(super) fn control_timeouts(&mut self, now: Instant) {
        let due: Vec<Token> = self
            .controls
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            if let Some(c) = self.controls.get_mut(&t) {
                c.session.handle_timeout(now);
            }
            self.pump_control(t, now);
        }
    }

    /// Runs the session's events and writes its replies; closes the connection when done.
    pub(super) fn pump_control(&mut self, token: Token, now: Instant) {
        loop {
            let Some(conn) = self.controls.get_mut(&token) else {
                return;
            };
            let Some(ev) = conn.session.poll_event() else {
                break;
            };
            self.control_session_event(token, ev, now);
        }
        let Some(conn) = self.controls.get_mut(&token) else {
            return;
        };
        while let Some(b) = conn.session.poll_transmit() {
            if let Some(c) = conn.capture.as_mut() {
                c.control_out(&b, now);
            }
            conn.out.extend_from_slice(&b);
        }
        let failed = conn.flush().is_err() || conn.out.len() > MAX_PENDING_WRITE;
        let done = conn.session.is_closed() && conn.out.is_empty();
        if failed || done {
            if failed && !conn.session.is_closed() {
                conn.session.handle_eof();
                // Run the close event (ends the stream), then drop.
                return self.pump_control(token, now);
            }
            self.drop_control(token);
            return;
        }
        let want = !conn.out.is_empty();
        super::want_writable(
            &self.poll,
            &mut conn.stream,
            token,
            &mut conn.writable,
            want,
        );
    }

    fn control_session_event(&mut self, token: Token, ev: ServerEvent, now: Instant) {
        match ev {
            ServerEvent::KeyRequested { channel } if self.hooks.is_some() => {
                self.hook_lookup(channel, token, now);
            }
            ServerEvent::KeyRequested { channel } => {
                let key = self.keys.get(channel).map(|c| c.stream_key());
                let Some(conn) = self.controls.get_mut(&token) else {
                    return;
                };
                let peer = conn.peer;
                let failed = match key {
                    Some(key) => {
                        let bad = conn.session.provide_key(&key, now).is_err();
                        if bad {
                            warn!("FTL: {peer}: wrong stream key for channel {channel}");
                        }
                        bad
                    }
                    None => {
                        warn!("FTL: {peer}: unknown channel {channel}");
                        let _ = conn.session.reject_unknown_channel();
                        true
                    }
                };
                if failed {
                    self.counters.auth_failures += 1;
                    self.note_auth_failure(peer.ip(), now);
                }
            }
            ServerEvent::Authenticated { channel } => {
                if let Some(conn) = self.controls.get_mut(&token) {
                    conn.authenticated = true;
                    debug!("FTL: {} authenticated for channel {channel}", conn.peer);
                }
            }
            ServerEvent::MetadataReady { channel, metadata } => {
                self.start_stream(token, channel, &metadata, now);
            }
            ServerEvent::Streaming { channel, port } => {
                if let Some(conn) = self.controls.get(&token) {
                    info!(
                        "channel {channel}: streaming from {} to UDP port {port}",
                        conn.peer
                    );
                }
            }
            ServerEvent::Closed { reason } => {
                let Some(conn) = self.controls.get_mut(&token) else {
                    return;
                };
                let peer = conn.peer;
                match &reason {
                    CloseReason::Error(e) => info!("FTL: {peer}: session ended: {e}"),
                    other => debug!("FTL: {peer}: session ended: {other:?}"),
                }
                if let Some(channel) = conn.live.take() {
                    let end = match reason {
                        CloseReason::Disconnect => EndReason::Disconnect,
                        CloseReason::Refused(StatusCode::SERVER_TERMINATE) => EndReason::Replaced,
                        _ => EndReason::ControlLost,
                    };
                    self.end_stream(channel, token, end);
                }
            }
        }
    }

    /// Whether `ip` failed authentication too often lately.
    pub(super) fn auth_blocked(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        let ip = super::addr_group::group(ip);
        let window = std::time::Duration::from_secs(self.args.auth_fail_window);
        match self.auth_failures.get(&ip) {
            Some((n, since)) if now.saturating_duration_since(*since) < window => {
                *n >= self.args.auth_fail_limit
            }
            Some(_) => {
                self.auth_failures.remove(&ip);
                false
            }
            None => false,
        }
    }

    pub(super) fn note_auth_failure(&mut self, ip: std::net::IpAddr, now: Instant) {
        let ip = super::addr_group::group(ip);
        let window = std::time::Duration::from_secs(self.args.auth_fail_window);
        // Bounded: expired entries go first; past the bound the table starts over (an attacker
        // spread over that many addresses is not slowed by a per-address limit anyway).
        if self.auth_failures.len() >= 4096 {
            self.auth_failures
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < window);
            if self.auth_failures.len() >= 4096 {
                self.auth_failures.clear();
            }
        }
        let e = self.auth_failures.entry(ip).or_insert((0, now));
        if now.saturating_duration_since(e.1) >= window {
            *e = (0, now);
        }
        e.0 += 1;
        if e.0 == self.args.auth_fail_limit {
            warn!(
                "FTL: {ip}: {} failed authentications; refusing it for {}s",
                e.0,
                window.as_secs()
            );
        }
    }

    /// Allocates a media port and starts the relay's stream; a live stream on the channel is
    /// replaced (its old control connection is told 410).
    fn start_stream(
        &mut self,
        token: Token,
        channel: ChannelId,
        metadata: &ftl_proto::control::Metadata,
        now: Instant,
    ) {
        let Some(peer) = self.controls.get(&token).map(|c| c.peer) else {
            return;
        };
        if let Some(why) = self.ingest_refusal() {
            warn!("channel {channel}: FTL ingest from {peer} refused: {why}");
            if let Some(c) = self.controls.get_mut(&token) {
                c.session.refuse(StatusCode::INTERNAL_ERROR, &why);
            }
            return;
        }
        // Replacement: the newest authenticated session wins (the wire reference's rule),
        // whichever protocol the live one came in over.
        self.take_over(channel, Some(token), now);
        if !self.relay.is_live(channel) && self.relay.live_streams() >= self.args.max_streams {
            warn!(
                "channel {channel}: refused, {} streams live",
                self.relay.live_streams()
            );
            if let Some(c) = self.controls.get_mut(&token) {
                c.session
                    .refuse(StatusCode::INTERNAL_ERROR, "stream limit reached");
            }
            return;
        }
        let (socket, port) = match self.bind_media_port(now) {
            Ok(x) => x,
            Err(e) => {
                warn!("channel {channel}: no media port: {e}");
                if let Some(c) = self.controls.get_mut(&token) {
                    c.session
                        .refuse(StatusCode::INTERNAL_ERROR, "no media port available");
                }
                return;
            }
        };
        let params = StreamParams::Ftl {
            media: MediaParams::from_metadata(metadata),
            peer_ip: peer.ip(),
        };
        if let Err(e) = self.relay.start_stream(channel, params, now) {
            warn!("channel {channel}: {e}");
            if let Some(c) = self.controls.get_mut(&token) {
                c.session.refuse(StatusCode::INTERNAL_ERROR, &e.to_string());
            }
            return;
        }
        if let Some(stale) = self.media_ports.stale_source(port, now) {
            self.relay.refuse_source(channel, stale);
        }
        let media_token = self.token(Slot::Media(channel));
        let mut socket = socket;
        // Arrival stamps tell the relay when the loop falls behind this stream (overload).
        if !crate::recv_stamp::enable(&socket) {
            debug!("channel {channel}: no receive timestamps on the media socket");
        }
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, media_token, Interest::READABLE)
        {
            warn!("channel {channel}: media socket: {e}");
        }
        self.media.insert(
            channel,
            MediaSocket {
                token: media_token,
                socket,
                port,
                owner: token,
            },
        );
        self.media_tokens.insert(media_token, channel);
        if let Some(c) = self.controls.get_mut(&token) {
            c.live = Some(channel);
            let _ = c.session.assign_port(port, now);
        }
        self.viewers_stream_state(channel, true);
        self.hook_stream_started(channel, metadata, port, now);
    }

    /// Lets go of an FTL session that owns `channel`'s stream (other than `except`): it is
    /// told 410 and its media port is freed; a `stream_stop` with reason `replaced` is sent.
    pub(super) fn ftl_let_go(&mut self, channel: ChannelId, except: Option<Token>, now: Instant) {
        let Some(old) = self.media.get(&channel).map(|m| m.owner) else {
            return;
        };
        if Some(old) == except {
            return;
        }
        info!("channel {channel}: a new session replaces the live FTL session");
        let stats = self.relay.stream_stats(channel, now);
        self.hook_stream_ended(channel, EndReason::Replaced, stats, now);
        if let Some(c) = self.controls.get_mut(&old) {
            c.live = None;
            c.session
                .refuse(StatusCode::SERVER_TERMINATE, "replaced by a newer session");
        }
        self.close_media(channel);
        self.pump_control(old, now);
    }

    /// A media socket on the next port of the range (round-robin, freed ports resting first;
    /// see `media_ports.rs`), or one the system picks with `--media-ports 0`.
    fn bind_media_port(&mut self, now: Instant) -> io::Result<(UdpSocket, u16)> {
        if self.media_ports.any() {
            let s = super::udp_socket(SocketAddr::new(self.args.addr, 0))?;
            let port = s.local_addr()?.port();
            return Ok((s, port));
        }
        let used: Vec<u16> = self.media.values().map(|m| m.port).collect();
        for port in self.media_ports.candidates(&used, now) {
            if let Ok(s) = super::udp_socket(SocketAddr::new(self.args.addr, port)) {
                self.media_ports.taken(port);
                return Ok((s, port));
            }
        }
        let (lo, hi) = self.args.media_ports;
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("all of {lo}-{hi} in use"),
        ))
    }

    /// Ends a stream owned by `owner` and frees its media port.
    /// The channel's key was revoked (removed or rotated): every FTL session of the channel
    /// was checked against the old key, so each is told (`410`) and closed, and the live one's
    /// stream ends with `reason`. Returns how many sessions went.
    pub(super) fn ftl_revoke(
        &mut self,
        channel: ChannelId,
        reason: EndReason,
        now: Instant,
    ) -> usize {
        let tokens: Vec<Token> = self
            .controls
            .iter()
            .filter(|(_, c)| c.session.channel() == Some(channel))
            .map(|(t, _)| *t)
            .collect();
        for &t in &tokens {
            self.end_stream(channel, t, reason);
            if let Some(c) = self.controls.get_mut(&t) {
                c.live = None;
                c.session
                    .refuse(StatusCode::SERVER_TERMINATE, "the stream key was revoked");
            }
            self.pump_control(t, now);
        }
        tokens.len()
    }

    fn end_stream(&mut self, channel: ChannelId, owner: Token, reason: EndReason) {
        if self.media.get(&channel).is_some_and(|m| m.owner == owner) {
            let now = Instant::now();
            let stats = self.relay.stream_stats(channel, now);
            self.close_media(channel);
            self.relay.stop_stream(channel, reason);
            self.viewers_stream_state(channel, false);
            self.hook_stream_ended(channel, reason, stats, now);
        }
    }

    fn close_media(&mut self, channel: ChannelId) {
        if let Some(mut m) = self.media.remove(&channel) {
            let _ = self.poll.registry().deregister(&mut m.socket);
            self.slots.remove(&m.token);
            self.media_tokens.remove(&m.token);
            let source = self.relay.ingest_source(channel);
            self.media_ports.freed(m.port, Instant::now(), source);
            debug!("channel {channel}: media port {} freed", m.port);
        }
    }

    fn drop_control(&mut self, token: Token) {
        if let Some(mut c) = self.controls.remove(&token) {
            if let Some(mut cap) = c.capture.take() {
                cap.finish(Instant::now());
                info!("capture written: {}", cap.path().display());
            }
            if let Some(channel) = c.live.take() {
                self.end_stream(channel, token, EndReason::ControlLost);
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        self.slots.remove(&token);
    }

    /// A stream ended by the relay (media timeout): close its control connection too.
    pub(super) fn stream_timed_out(&mut self, channel: ChannelId, now: Instant) {
        if self.whip_timed_out(channel, now) {
            return;
        }
        let Some(owner) = self.media.get(&channel).map(|m| m.owner) else {
            return;
        };
        self.close_media(channel);
        self.viewers_stream_state(channel, false);
        self.hook_stream_ended(channel, EndReason::MediaTimeout, None, now);
        if let Some(c) = self.controls.get_mut(&owner) {
            c.live = None;
            c.session
                .refuse(StatusCode::NO_MEDIA_TIMEOUT, "no media received");
        }
        self.pump_control(owner, now);
    }

    pub(super) fn read_media(&mut self, channel: ChannelId, now: Instant) {
        self.read_media_budget(channel, now);
        self.drain_relay(now);
    }

    /// Reads up to [`READ_BUDGET`] datagrams, draining the relay every [`DRAIN_EVERY`]: the
    /// packets of a burst (a keyframe) then reach each viewer together, written and sent in
    /// one go (a GSO run), while the relay's queue stays bounded.
    fn read_media_budget(&mut self, channel: ChannelId, now: Instant) {
        for i in 0..READ_BUDGET {
            if i > 0 && i % DRAIN_EVERY == 0 {
                self.drain_relay(now);
            }
            let Some(m) = self.media.get(&channel) else {
                return;
            };
            match self.stamps.recv_from(&m.socket, &mut self.buf) {
                Ok((n, from, waited)) => {
                    let data = self.buf.get(..n).unwrap_or_default();
                    self.counters.media_datagrams += 1;
                    let local = SocketAddr::new(self.addrs.ftl.ip(), m.port);
                    if let Some(cap) = self
                        .controls
                        .get_mut(&m.owner)
                        .and_then(|c| c.capture.as_mut())
                    {
                        cap.media(from, local, data, now);
                    }
                    let waited = waited.unwrap_or_default();
                    self.relay
                        .handle_datagram_queued(channel, from, data, waited, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    debug!("channel {channel}: media recv: {e}");
                }
                Err(e) => {
                    debug!("channel {channel}: media recv: {e}");
                    return;
                }
            }
        }
        // Budget spent: the socket stays readable and mio (edge-triggered) would not tell us
        // again, so come back on the next iteration through a zero timeout.
        if let Some(m) = self.media.get(&channel) {
            self.again.push(m.token);
        }
    }

    /// Sends a datagram from a stream's media port (ping echo, NACK).
    pub(super) fn send_media(&mut self, channel: ChannelId, to: SocketAddr, bytes: &[u8]) {
        if let Some(m) = self.media.get(&channel) {
            let local = SocketAddr::new(self.addrs.ftl.ip(), m.port);
            if let Some(cap) = self
                .controls
                .get_mut(&m.owner)
                .and_then(|c| c.capture.as_mut())
            {
                cap.media(local, to, bytes, Instant::now());
            }
            let v6 = m.socket.local_addr().is_ok_and(|a| a.is_ipv6());
            if let Err(e) = m
                .socket
                .send_to(bytes, crate::dual_stack::for_socket(to, v6))
            {
                debug!("channel {channel}: media send to {to}: {e}");
            }
        }
    }
}
