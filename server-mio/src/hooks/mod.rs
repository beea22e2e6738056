//! The external stream-key service and stream events (`--auth-url`).
//!
//! With `--auth-url http://host:port/base`, a channel's key is asked from
//! `GET /base/hmac/{channel}` (janus-ftl-plugin's convention: the answer is the key, as plain
//! text or JSON `{"key": ...}` / `{"hmacKey": ...}`; 4xx means "no such channel") instead of
//! the key file. The client's HMAC is then checked locally as usual. A service that says no,
//! answers too late (3 s, under the FTL client's 5 s) or is down refuses the stream with a
//! status line and a log line; nothing is ever let in unchecked.
//!
//! Stream start, stop and periodic stats go to `POST /base/events` as JSON, one at a time and
//! in order, from a bounded queue that keeps them across an outage (retried with back-off).
//!
//! Everything runs on the server's poll loop on non-blocking sockets. The service's host name
//! is resolved once at start.

pub mod conn;
pub mod http;
pub mod ws;

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use ftl_proto::ChannelId;
use mio::Token;

use self::http::Exchange;

/// How long the service has to answer a key lookup.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the service has to accept an event.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Events kept while the service is unreachable; the oldest are dropped past it.
pub const MAX_QUEUED_EVENTS: usize = 1000;
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What an exchange is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Lookup(ChannelId),
    Event,
}

/// Why the service could not be set up.
#[derive(Debug)]
pub struct HookError(pub String);

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--auth-url: {}", self.0)
    }
}

impl std::error::Error for HookError {}

/// The service's address and the state of talking to it.
pub struct Hooks {
    pub addr: SocketAddr,
    pub host: String,
    base_path: String,
    /// Control connections waiting for each channel's key.
    pub waiting: HashMap<ChannelId, Vec<Token>>,
    /// Exchanges in flight.
    pub exchanges: HashMap<Token, (Purpose, Exchange)>,
    /// Events not yet accepted by the service, oldest first.
    pub events: VecDeque<String>,
    pub event_in_flight: bool,
    pub next_event_try: Instant,
    backoff: Duration,
    pub next_stats: Instant,
    pub stats_interval: Duration,
    pub events_dropped: u64,
    pub events_sent: u64,
    pub lookup_failures: u64,
    /// Live streams: when they started and their latest totals (for the stop event).
    pub live: HashMap<ChannelId, (Instant, serde_json::Value)>,
    /// The WebSocket link, for ws:// URLs.
    pub ws: Option<ws::WsLink>,
    /// TLS settings for https:// and wss://.
    pub tls: Option<conn::Tls>,
    pub ws_token: Option<Token>,
    /// Lookups sent over the link: id to channel and deadline.
    pub ws_pending: HashMap<u64, (ChannelId, Instant)>,
    pub next_id: u64,
}

impl Hooks {
    /// Parses and resolves the service URL (blocking DNS, at start only).
    pub fn new(
        url: &str,
        ca_file: Option<&std::path::Path>,
        stats_interval: Duration,
        now: Instant,
    ) -> Result<Hooks, HookError> {
        let u = url::Url::parse(url).map_err(|e| HookError(format!("{url:?}: {e}")))?;
        let host = u
            .host_str()
            .ok_or_else(|| HookError(format!("{url:?} has no host")))?
            .to_owned();
        let tls_for = |h: &str| {
            conn::Tls::new(h.trim_start_matches('[').trim_end_matches(']'), ca_file).map(Some)
        };
        let (ws, tls) = match u.scheme() {
            "http" => (None, None),
            "https" => (None, tls_for(&host)?),
            "ws" => (Some(ws::WsLink::new(url.to_owned(), now)), None),
            "wss" => (Some(ws::WsLink::new(url.to_owned(), now)), tls_for(&host)?),
            other => {
                return Err(HookError(format!(
                    "unsupported scheme {other}://; use http, https, ws or wss"
                )))
            }
        };
        let port = u.port_or_known_default().unwrap_or(80);
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| HookError(format!("cannot resolve {host}: {e}")))?
            .next()
            .ok_or_else(|| HookError(format!("{host} has no address")))?;
        Ok(Hooks {
            addr,
            host: format!("{host}:{port}"),
            base_path: u.path().trim_end_matches('/').to_owned(),
            waiting: HashMap::new(),
            exchanges: HashMap::new(),
            events: VecDeque::new(),
            event_in_flight: false,
            next_event_try: now,
            backoff: Duration::from_secs(1),
            next_stats: now + stats_interval,
            stats_interval,
            events_dropped: 0,
            events_sent: 0,
            lookup_failures: 0,
            live: HashMap::new(),
            ws,
            tls,
            ws_token: None,
            ws_pending: HashMap::new(),
            next_id: 1,
        })
    }

    /// The path of a channel's key.
    pub fn key_path(&self, channel: ChannelId) -> String {
        format!("{}/hmac/{channel}", self.base_path)
    }

    /// The path events are posted to.
    pub fn events_path(&self) -> String {
        format!("{}/events", self.base_path)
    }

    /// Queues an event (JSON text).
    pub fn push_event(&mut self, event: String) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// The service took the event in flight.
    pub fn event_done(&mut self, now: Instant) {
        self.events.pop_front();
        self.events_sent += 1;
        self.event_in_flight = false;
        self.backoff = Duration::from_secs(1);
        self.next_event_try = now;
    }

    /// The event could not be delivered: try again later.
    pub fn event_failed(&mut self, now: Instant) {
        self.event_in_flight = false;
        self.next_event_try = now + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// The earliest instant the hooks need the loop.
    pub fn deadline(&self) -> Option<Instant> {
        let exchanges = self.exchanges.values().map(|(_, e)| e.deadline);
        let events =
            (!self.events.is_empty() && !self.event_in_flight).then_some(self.next_event_try);
        exchanges
            .chain(events)
            .chain(std::iter::once(self.next_stats))
            .min()
    }
}

/// The key in a service's answer: the body itself, or the `key`/`hmacKey` of a JSON object.
pub fn key_from_body(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let k = v.get("key").or_else(|| v.get("hmacKey"))?.as_str()?;
        return (!k.is_empty()).then(|| k.to_owned());
    }
    (!text.is_empty() && !text.contains(char::is_whitespace)).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_in_answers() {
        assert_eq!(key_from_body(b"secret\n").as_deref(), Some("secret"));
        assert_eq!(key_from_body(br#"{"key":"s1"}"#).as_deref(), Some("s1"));
        assert_eq!(key_from_body(br#"{"hmacKey":"s2"}"#).as_deref(), Some("s2"));
        assert_eq!(key_from_body(b""), None);
        assert_eq!(key_from_body(b"two words"), None);
        assert_eq!(key_from_body(br#"{"other":1}"#), None);
    }

    #[test]
    fn urls() {
        let now = Instant::now();
        let h = Hooks::new(
            "http://127.0.0.1:9/base/",
            None,
            Duration::from_secs(5),
            now,
        )
        .unwrap();
        assert_eq!(h.key_path(ChannelId(7)), "/base/hmac/7");
        assert_eq!(h.events_path(), "/base/events");
        assert!(Hooks::new("ftp://x", None, Duration::from_secs(5), now).is_err());
        assert!(
            Hooks::new("https://127.0.0.1:9", None, Duration::from_secs(5), now)
                .unwrap()
                .tls
                .is_some()
        );
        assert!(Hooks::new(
            "https://127.0.0.1:9",
            Some(std::path::Path::new("/nonexistent.pem")),
            Duration::from_secs(5),
            now
        )
        .is_err());
        assert!(Hooks::new("not a url", None, Duration::from_secs(5), now).is_err());
    }

    #[test]
    fn the_event_queue_is_bounded_and_backs_off() {
        let now = Instant::now();
        let mut h = Hooks::new("http://127.0.0.1:9", None, Duration::from_secs(5), now).unwrap();
        for i in 0..(MAX_QUEUED_EVENTS + 5) {
            h.push_event(format!("{i}"));
        }
        assert_eq!(h.events.len(), MAX_QUEUED_EVENTS);
        assert_eq!(h.events.front().map(String::as_str), Some("5"));
        assert_eq!(h.events_dropped, 5);
        h.event_failed(now);
        assert_eq!(h.next_event_try, now + Duration::from_secs(1));
        h.event_failed(now);
        assert_eq!(h.next_event_try, now + Duration::from_secs(2));
        h.event_done(now);
        assert_eq!(h.events.len(), MAX_QUEUED_EVENTS - 1);
    }
}
