//! HTTP/1.1 on one port: the viewer site, WHEP, the WebSocket upgrade, the JSON API and
//! metrics. One request per connection (`Connection: close`), parsed with `httparse`, with a
//! bounded request size and a deadline: a connection that stalls or sends too much is closed.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ftl_proto::ChannelId;
use log::{debug, warn};
use mio::event::Event;
use mio::{Interest, Token};

use super::tls::Transport;
use super::{Server, Slot};

/// Most bytes of request head.
const MAX_HEAD: usize = 16 * 1024;
/// Most bytes of request body (an SDP offer is a few KB).
const MAX_BODY: usize = 64 * 1024;
/// From accept to a complete request, and again to a complete response.
const DEADLINE: Duration = Duration::from_secs(10);

/// A parsed request.
#[derive(Debug)]
pub(super) struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request as it came, for a capture: with any credential replaced by `[redacted]`.
    pub fn redacted(&self) -> Vec<u8> {
        let target = if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        };
        let mut out = format!("{} {target} HTTP/1.1\r\n", self.method).into_bytes();
        for (k, v) in &self.headers {
            let v = if k.eq_ignore_ascii_case("authorization") {
                let scheme = v.split(' ').next().unwrap_or_default();
                format!("{scheme} [redacted]")
            } else {
                v.clone()
            };
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }

    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// A response to write.
#[derive(Debug)]
pub(super) struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
    /// A body read from a file as the socket takes it (recordings), after `body`.
    pub file: Option<FileBody>,
    /// `Content-Length` when it is not the body's (a `HEAD` response).
    length: Option<u64>,
}

/// A stretch of a file sent as a body, a chunk at a time as the reader thread reads it and the
/// connection drains it: memory per connection stays at one chunk however large the file,
/// and the loop never reads the disk.
#[derive(Debug)]
pub(super) struct FileBody {
    remaining: u64,
    /// A chunk was asked for and has not come.
    waiting: bool,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body: body.into(),
            file: None,
            length: None,
        }
    }

    /// The body is `len` bytes of a file the reader thread opened for this connection.
    pub fn with_file_body(mut self, len: u64) -> Self {
        self.file = Some(FileBody {
            remaining: len,
            waiting: false,
        });
        self
    }

    /// No body, and `Content-Length: len` (the answer to `HEAD`).
    pub fn with_length(mut self, len: u64) -> Self {
        self.length = Some(len);
        self
    }

    pub fn text(status: u16, body: &str) -> Self {
        Response::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// CORS for players on other origins (WHEP and the API).
    pub fn cors(self) -> Self {
        self.header("Access-Control-Allow-Origin", "*")
            .header(
                "Access-Control-Allow-Methods",
                "GET, POST, PATCH, DELETE, OPTIONS",
            )
            .header(
                "Access-Control-Allow-Headers",
                "Content-Type, Authorization, If-Match",
            )
            .header("Access-Control-Expose-Headers", "Location, Link, ETag")
    }

    pub(in crate::server) fn serialize(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                self.length.unwrap_or(
                    self.body.len() as u64 + self.file.as_ref().map_or(0, |f| f.remaining)
                )
            )
            .as_bytes(),
        );
        out.extend_from_slice(&self.body);
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// What a handler decided.
pub(super) enum Reply {
    Now(Response),
    /// Answered later (a WHEP offer waiting for a viewer to be built).
    Later,
    /// Switch the connection to WebSocket signalling for this channel.
    Upgrade {
        channel: ChannelId,
        accept_key: String,
    },
}

enum State {
    Reading,
    Waiting,
    Writing,
}

/// One HTTP connection.
pub(super) struct HttpConn {
    pub(super) stream: Transport,
    pub(super) peer: SocketAddr,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    /// The rest of a file body, read into `out` as it empties.
    file: Option<FileBody>,
    state: State,
    pub(super) deadline: Instant,
    writable: bool,
    accepted: Instant,
    /// Accepted on the plain-http redirect port: every request gets a redirect to https.
    redirect: bool,
}

impl Server {
    pub(super) fn accept_http(&mut self, now: Instant, redirect: bool) {
        loop {
            let listener = match (redirect, self.redirect_listener.as_ref()) {
                (false, _) => &self.http_listener,
                (true, Some(l)) => l,
                (true, None) => return,
            };
            let (mut stream, peer) = match listener
                .accept()
                .map(|(s, p)| (s, crate::dual_stack::canonical(p)))
            {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("HTTP accept: {e}");
                    return;
                }
            };
            let here = super::addr_group::group(peer.ip());
            let reading_here = self
                .https
                .values()
                .filter(|c| {
                    matches!(c.state, State::Reading)
                        && super::addr_group::group(c.peer.ip()) == here
                })
                .count();
            if reading_here >= self.args.max_http_per_address {
                self.counters.http_refused += 1;
                let _ = stream.write(
                    &Response::text(429, "too many connections from your address")
                        .header("Retry-After", "1")
                        .serialize(),
                );
                continue;
            }
            if self.https.len() + self.wss.len() >= self.args.max_http_connections
                && !self.http_make_room()
            {
                self.counters.http_refused += 1;
                let _ = stream.write(&Response::text(503, "too many connections").serialize());
                continue;
            }
            let mut stream = match (&self.certs, redirect) {
                (Some(c), false) => match Transport::tls(stream, c.config.clone()) {
                    Ok(t) => t,
                    Err(e) => {
                        warn!("TLS: {e}");
                        continue;
                    }
                },
                _ => Transport::Plain(stream),
            };
            let token = self.token(Slot::Http);
            if self
                .poll
                .registry()
                .register(stream.socket(), token, Interest::READABLE)
                .is_err()
            {
                self.slots.remove(&token);
                continue;
            }
            self.https.insert(
                token,
                HttpConn {
                    stream,
                    peer,
                    inbuf: Vec::new(),
                    out: Vec::new(),
                    file: None,
                    state: State::Reading,
                    deadline: now + DEADLINE,
                    writable: false,
                    accepted: now,
                    redirect,
                },
            );
        }
    }

    /// The table is full: closes the oldest connection still sending its request; whether
    /// one was closed. Answered requests and WebSockets are never closed for room.
    fn http_make_room(&mut self) -> bool {
        let oldest = self
            .https
            .iter()
            .filter(|(_, c)| matches!(c.state, State::Reading))
            .min_by_key(|(_, c)| c.accepted)
            .map(|(t, _)| *t);
        let Some(token) = oldest else {
            return false;
        };
        self.counters.http_evicted += 1;
        self.http_close(token);
        true
    }

    pub(super) fn http_event(&mut self, token: Token, ev: &Event, now: Instant) {
        if ev.is_readable() {
            self.http_read(token, now);
        }
        if ev.is_writable() {
            if let Some(c) = self.https.get_mut(&token) {
                if c.stream.flush_tls().is_err() {
                    return self.http_close(token);
                }
            }
            self.http_write(token);
        }
        self.http_interest(token);
    }

    /// Asks for writable events while bytes wait: the response, or TLS records (a handshake
    /// reply is due while the request is still being read).
    fn http_interest(&mut self, token: Token) {
        let Some(c) = self.https.get_mut(&token) else {
            return;
        };
        let want =
            c.stream.wants_write() || (matches!(c.state, State::Writing) && !c.out.is_empty());
        super::want_writable(&self.poll, c.stream.socket(), token, &mut c.writable, want);
    }

    fn http_read(&mut self, token: Token, now: Instant) {
        loop {
            let Some(c) = self.https.get_mut(&token) else {
                return;
            };
            if !matches!(c.state, State::Reading) {
                // Nothing more is read after the request (one request per connection); only a
                // closed connection matters, to forget a WHEP offer still waiting.
                let mut probe = [0u8; 1];
                if matches!(c.stream.read(&mut probe), Ok(0)) && matches!(c.state, State::Waiting) {
                    self.http_close(token);
                }
                return;
            }
            match c.stream.read(&mut self.buf) {
                Ok(0) => return self.http_close(token),
                Ok(n) => {
                    let data = self.buf.get(..n).unwrap_or_default();
                    if c.inbuf.len() + n > MAX_HEAD + MAX_BODY {
                        self.counters.http_errors += 1;
                        return self.http_respond(token, Response::text(413, "request too large"));
                    }
                    c.inbuf.extend_from_slice(data);
                    match parse(&c.inbuf) {
                        Parsed::Partial => {}
                        Parsed::Error(status, why) => {
                            self.counters.http_errors += 1;
                            debug!("HTTP {}: {status} {why}", c.peer);
                            return self.http_respond(token, Response::text(status, why));
                        }
                        Parsed::Done(req) => {
                            c.state = State::Waiting;
                            self.counters.http_requests += 1;
                            if c.redirect {
                                let resp = redirect_to_https(&req, self.addrs.http.port());
                                return self.http_respond(token, resp);
                            }
                            return self.http_dispatch(token, req, now);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.http_interest(token)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        // Not TLS, or a handshake that failed.
                        self.counters.http_errors += 1;
                        debug!("HTTP {}: {e}", c.peer);
                    }
                    return self.http_close(token);
                }
            }
        }
    }

    fn http_dispatch(&mut self, token: Token, req: Request, now: Instant) {
        match self.route(token, &req, now) {
            Reply::Now(resp) => self.http_respond(token, resp),
            Reply::Later => {}
            Reply::Upgrade {
                channel,
                accept_key,
            } => self.ws_upgrade(token, channel, &accept_key, now),
        }
    }

    fn route(&mut self, token: Token, req: &Request, now: Instant) -> Reply {
        let segments: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("GET", ["api", "streams"]) => Reply::Now(self.api_streams(now).cors()),
            ("GET", ["api", "selftest"]) => Reply::Now(
                Response::new(200, "application/json", self.selftest_json().to_string()).cors(),
            ),
            ("GET", ["metrics"]) => Reply::Now(self.metrics(now)),
            ("GET", ["api", "recordings"]) => self.api_recordings(token, req),
            ("GET" | "HEAD", ["recordings", channel, file]) => {
                self.recording_get(token, req, channel, file)
            }
            ("DELETE", ["recordings", channel, file]) => {
                self.recording_delete(token, req, channel, file, now)
            }
            ("OPTIONS", ["recordings", ..]) => {
                Reply::Now(Response::new(204, "text/plain", Vec::new()).cors())
            }
            ("GET", ["websocket"]) => self.ws_request(req),
            ("OPTIONS", ["whep", ..]) | ("OPTIONS", ["whip", ..]) | ("OPTIONS", ["api", ..]) => {
                Reply::Now(Response::new(204, "text/plain", Vec::new()).cors())
            }
            ("POST", ["whep", channel]) => {
                let Ok(channel) = channel.parse::<ChannelId>() else {
                    return Reply::Now(Response::text(404, "no such channel").cors());
                };
                let ct = req.header("Content-Type").unwrap_or_default();
                if !ct.starts_with("application/sdp") {
                    return Reply::Now(
                        Response::text(415, "Content-Type must be application/sdp").cors(),
                    );
                }
                let Ok(offer) = std::str::from_utf8(&req.body) else {
                    return Reply::Now(Response::text(400, "the offer is not UTF-8").cors());
                };
                let pull = self
                    .is_cluster_pull(req)
                    .then(|| super::webrtc::pull::PullAsk {
                        node: req
                            .header(super::webrtc::pull::NODE_HEADER)
                            .unwrap_or_default()
                            .chars()
                            .filter(char::is_ascii_alphanumeric)
                            .take(32)
                            .collect::<String>(),
                        layer: req
                            .header(super::webrtc::pull::LAYER_HEADER)
                            .and_then(|l| l.trim().parse::<u8>().ok())
                            .filter(|l| usize::from(*l) < relay_core::MAX_LAYERS)
                            .map(relay_core::LayerId),
                    });
                let from = self.https.get(&token).map(|c| c.peer);
                self.whep_offer(token, channel, offer.to_owned(), pull, from, now)
            }
            ("DELETE", [kind @ ("whep" | "whip"), _channel, session]) => {
                let found = self.session_delete(session, *kind == "whip");
                let status = if found { 200 } else { 404 };
                Reply::Now(
                    Response::text(status, if found { "ended" } else { "no such session" }).cors(),
                )
            }
            // The WHEP layer extension: which simulcast layer this viewer gets.
            ("POST", ["whep", _channel, session, "layer"]) => {
                Reply::Now(self.whep_layer(session, &req.body, now))
            }
            // Trickle ICE from the player: ICE-lite learns the browser's address from its
            // checks, so candidates are accepted and not needed.
            ("PATCH", ["whep", _, _]) => {
                Reply::Now(Response::new(204, "text/plain", Vec::new()).cors())
            }
            ("POST", ["whip", channel]) => {
                let peer = self.https.get(&token).map(|c| c.peer);
                let Some(peer) = peer else {
                    return Reply::Later;
                };
                self.whip_post(token, channel, req, peer, now)
            }
            // Trickle ICE and ICE restarts (RFC 9725 §4.3): not needed with ICE-lite and a
            // complete offer, so refused as the RFC allows.
            ("PATCH", ["whip", _, _]) => Reply::Now(
                Response::text(405, "trickle ICE is not supported; send a complete offer")
                    .header("Allow", "DELETE, OPTIONS")
                    .cors(),
            ),
            ("GET" | "HEAD", ["thumbnails", file]) => Reply::Now(self.thumbnail_get(req, file)),
            ("GET", _) | ("HEAD", _) => Reply::Now(self.static_file(req)),
            _ => Reply::Now(Response::text(405, "method not allowed")),
        }
    }

    /// Queues a response and closes the connection once it is written.
    pub(super) fn http_respond(&mut self, token: Token, resp: Response) {
        let Some(c) = self.https.get_mut(&token) else {
            return;
        };
        if resp.status >= 400 {
            debug!("HTTP {}: {}", c.peer, resp.status);
        }
        c.out = resp.serialize();
        c.file = resp.file;
        c.state = State::Writing;
        c.deadline = Instant::now() + DEADLINE;
        self.http_write(token);
    }

    fn http_write(&mut self, token: Token) {
        let Some(c) = self.https.get_mut(&token) else {
            return;
        };
        if !matches!(c.state, State::Writing) {
            return;
        }
        loop {
            if c.out.is_empty() {
                match c.file.as_mut() {
                    Some(f) if f.remaining > 0 => {
                        // The next chunk comes from the reader thread; writing resumes then.
                        if !f.waiting {
                            f.waiting = true;
                            if !self.recording_chunk_wanted(token) {
                                return self.http_close(token);
                            }
                        }
                        return;
                    }
                    Some(_) => c.file = None,
                    None => {}
                }
                if c.out.is_empty() {
                    break;
                }
            }
            match c.stream.write(&c.out) {
                Ok(0) => return self.http_close(token),
                Ok(n) => {
                    c.out.drain(..n);
                    if c.file.is_some() {
                        // A long body: the deadline is for a stalled reader, not a slow one.
                        c.deadline = Instant::now() + DEADLINE;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.http_interest(token);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.http_close(token),
            }
        }
        if c.stream.wants_write() {
            // TLS records still on their way: close once they are out.
            return self.http_interest(token);
        }
        self.http_close(token);
    }

    pub(super) fn http_close(&mut self, token: Token) {
        if let Some(mut c) = self.https.remove(&token) {
            let _ = self.poll.registry().deregister(c.stream.socket());
            c.stream.shutdown();
            if c.file.as_ref().is_some_and(|f| f.remaining > 0) {
                self.recording_download_gone(token);
            }
        }
        self.slots.remove(&token);
        self.whip_auth.remove(&token);
        self.viewers_http_gone(token);
    }

    pub(super) fn http_timeouts(&mut self, now: Instant) {
        let due: Vec<Token> = self
            .https
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            self.counters.http_timeouts += 1;
            // Best effort, then close: a peer that stalled sending its request is told so; a
            // request whose answer did not come in time (a stalled disk, a key service) is
            // told to retry.
            if let Some(c) = self.https.get_mut(&t) {
                let said = match c.state {
                    State::Reading => Some(Response::text(408, "request timeout")),
                    State::Waiting => Some(
                        Response::text(503, "no answer in time, retry later")
                            .header("Retry-After", "5")
                            .cors(),
                    ),
                    State::Writing => None,
                };
                if let Some(resp) = said {
                    let _ = c.stream.write(&resp.serialize());
                }
            }
            self.http_close(t);
        }
    }

    /// Takes the connection's stream out of HTTP handling (for a WebSocket).
    pub(super) fn http_take(&mut self, token: Token) -> Option<HttpConn> {
        self.https.remove(&token)
    }
}

impl Server {
    /// The reader thread read the next chunk of `token`'s download: it goes out. An empty
    /// chunk (a read error, a file cut short) ends the body early: the client sees a short
    /// response and the connection closes.
    pub(super) fn http_file_chunk(&mut self, token: Token, bytes: Vec<u8>) {
        let Some(c) = self.https.get_mut(&token) else {
            return;
        };
        let Some(f) = c.file.as_mut() else {
            return;
        };
        f.waiting = false;
        if bytes.is_empty() {
            f.remaining = 0;
            c.file = None;
            return self.http_close(token);
        }
        f.remaining = f.remaining.saturating_sub(bytes.len() as u64);
        c.out = bytes;
        c.deadline = Instant::now() + DEADLINE;
        self.http_write(token);
    }
}

/// `301` to the same path on the https port, for the plain-http redirect listener.
fn redirect_to_https(req: &Request, https_port: u16) -> Response {
    let host = req.header("Host").unwrap_or("localhost");
    // Drop a port from the Host header (keeping an IPv6 literal's brackets).
    let name = match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
            h
        }
        _ => host,
    };
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let target = if req.query.is_empty() {
        req.path.clone()
    } else {
        format!("{}?{}", req.path, req.query)
    };
    Response::text(301, "moved to https")
        .header("Location", format!("https://{name}{port}{target}"))
}

pub(super) enum Parsed {
    Partial,
    Done(Request),
    Error(u16, &'static str),
}

pub(super) fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 48];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_HEAD {
                return Parsed::Error(431, "request head too large");
            }
            return Parsed::Partial;
        }
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(431, "too many headers"),
        Err(_) => return Parsed::Error(400, "malformed request"),
    };
    if head_len > MAX_HEAD {
        return Parsed::Error(431, "request head too large");
    }
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    if find("Transfer-Encoding").is_some() {
        return Parsed::Error(411, "chunked bodies are not supported; send Content-Length");
    }
    let length = match find("Content-Length") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n <= MAX_BODY => n,
            Ok(_) => return Parsed::Error(413, "body too large"),
            Err(_) => return Parsed::Error(400, "bad Content-Length"),
        },
    };
    let Some(body) = buf.get(head_len..head_len + length) else {
        return Parsed::Partial;
    };
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Parsed::Done(Request {
        method: req.method.unwrap_or("GET").to_owned(),
        path: path.to_owned(),
        query: query.to_owned(),
        headers,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_and_bodies() {
        let r = b"POST /whep/7?x=1 HTTP/1.1\r\nContent-Type: application/sdp\r\nContent-Length: 3\r\n\r\nv=0";
        match parse(r) {
            Parsed::Done(req) => {
                assert_eq!(
                    (req.method.as_str(), req.path.as_str(), req.query.as_str()),
                    ("POST", "/whep/7", "x=1")
                );
                assert_eq!(req.body, b"v=0");
                assert_eq!(req.header("content-type"), Some("application/sdp"));
            }
            _ => panic!(),
        }
        assert!(matches!(parse(&r[..r.len() - 1]), Parsed::Partial));
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Partial));
        assert!(matches!(
            parse(b"\x00\x01 / HTTP/1.1\r\n\r\n"),
            Parsed::Error(400, _)
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"),
            Parsed::Error(413, _)
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Parsed::Error(400, _)
        ));
        assert!(matches!(
            parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Error(411, _)
        ));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(100));
        assert!(matches!(parse(many.as_bytes()), Parsed::Error(431, _)));
        let huge = format!("GET /{} HTTP/1.1\r\n", "a".repeat(MAX_HEAD + 1));
        assert!(matches!(parse(huge.as_bytes()), Parsed::Error(431, _)));
    }
}
