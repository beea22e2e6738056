//! WebSocket signalling, compatible with the seed's viewer protocol: the server sends an
//! `offer`, the browser answers with `answer` and may trickle `candidate`s; `info` carries the
//! viewer count. JSON messages `{"event": <name>, "data": <object>}`, 64 KiB at most; the
//! connection closes when its viewer goes.

use std::io::{self, Write};
use std::time::Instant;

use ftl_proto::ChannelId;
use log::debug;
use mio::{Interest, Token};
use serde_json::Value;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use super::http::{Reply, Request, Response};
use super::tls::Transport;
use super::{Server, Slot};

const MAX_MESSAGE: usize = 64 * 1024;
/// Messages the server ignored before it gives up on a peer.
const MAX_BAD_MESSAGES: u32 = 16;

pub(super) struct WsConn {
    ws: WebSocket<Transport>,
    viewer: Option<u64>,
    bad: u32,
}

impl Server {
    /// `GET /websocket[?channel=N | ?port=P]`: checks the upgrade and picks the channel
    /// (by id, by media port as the seed's multi-stream page does, or the first live one).
    pub(super) fn ws_request(&mut self, req: &Request) -> Reply {
        let upgrade = req
            .header("Upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let Some(key) = req.header("Sec-WebSocket-Key").filter(|_| upgrade) else {
            return Reply::Now(Response::text(400, "expected a WebSocket upgrade"));
        };
        let channel = if let Some(c) = req.query_param("channel") {
            c.parse::<ChannelId>().ok()
        } else if let Some(p) = req.query_param("port") {
            let port: Option<u16> = p.parse().ok();
            self.media
                .iter()
                .find(|(_, m)| Some(m.port) == port)
                .map(|(c, _)| *c)
        } else {
            self.relay
                .channels()
                .find(|c| self.relay.is_live(*c))
                .or_else(|| self.keys.channels().first().map(|c| ChannelId(c.id)))
        };
        match channel {
            Some(channel) if self.keys.get(channel).is_some() || self.relay.is_live(channel) => {
                Reply::Upgrade {
                    channel,
                    accept_key: tungstenite::handshake::derive_accept_key(key.as_bytes()),
                }
            }
            _ => Reply::Now(Response::text(404, "no such channel or stream")),
        }
    }

    pub(super) fn ws_upgrade(
        &mut self,
        token: Token,
        channel: ChannelId,
        accept_key: &str,
        now: Instant,
    ) {
        let Some(mut conn) = self.http_take(token) else {
            return;
        };
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n\r\n"
        );
        // The head is small; a socket that cannot take it at once is not worth keeping.
        if !matches!(conn.stream.write(head.as_bytes()), Ok(n) if n == head.len()) {
            let _ = self.poll.registry().deregister(conn.stream.socket());
            self.slots.remove(&token);
            return;
        }
        let _ = self.poll.registry().reregister(
            conn.stream.socket(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        );
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE))
            .max_write_buffer_size(256 * 1024);
        let ws = WebSocket::from_raw_socket(conn.stream, Role::Server, Some(config));
        self.slots.insert(token, Slot::Ws);
        self.wss.insert(
            token,
            WsConn {
                ws,
                viewer: None,
                bad: 0,
            },
        );
        debug!("WebSocket {} for channel {channel}", conn.peer);
        self.ws_send_json(
            token,
            "stream",
            serde_json::json!({ "live": self.relay.is_live(channel) }),
        );
        self.ws_viewer_create(token, channel, conn.peer, now);
    }

    pub(super) fn ws_is_open(&self, token: Token) -> bool {
        self.wss.contains_key(&token)
    }

    pub(super) fn ws_set_viewer(&mut self, token: Token, id: u64) {
        if let Some(c) = self.wss.get_mut(&token) {
            c.viewer = Some(id);
        }
    }

    pub(super) fn ws_event(&mut self, token: Token, now: Instant) {
        let mut budget = super::READ_BUDGET;
        loop {
            if budget == 0 {
                self.again.push(token);
                break;
            }
            budget -= 1;
            let Some(c) = self.wss.get_mut(&token) else {
                return;
            };
            match c.ws.read() {
                Ok(Message::Text(t)) => {
                    let viewer = c.viewer;
                    self.ws_message(token, viewer, t.as_str(), now);
                }
                Ok(Message::Close(_)) => return self.ws_close(token),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    debug!("WebSocket: {e}");
                    return self.ws_close(token);
                }
            }
        }
        self.ws_flush(token);
    }

    fn ws_message(&mut self, token: Token, viewer: Option<u64>, text: &str, now: Instant) {
        let msg: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let event = msg.get("event").and_then(Value::as_str).unwrap_or_default();
        let data = msg.get("data").cloned().unwrap_or(Value::Null);
        let result = match (event, viewer) {
            ("answer", Some(id)) => match data.get("sdp").and_then(Value::as_str) {
                Some(sdp) => self.ws_answer(id, sdp, now),
                None => Err("answer without sdp".into()),
            },
            ("candidate", Some(id)) => {
                if let Some(c) = data.get("candidate").and_then(Value::as_str) {
                    self.ws_candidate(id, c);
                }
                Ok(())
            }
            _ => Err(format!(
                "unexpected message {:?}",
                event.chars().take(32).collect::<String>()
            )),
        };
        if let Err(e) = result {
            self.counters.ws_bad_messages += 1;
            debug!("WebSocket: {e}");
            self.ws_send_json(token, "error", serde_json::json!({ "message": e }));
            let Some(c) = self.wss.get_mut(&token) else {
                return;
            };
            c.bad += 1;
            if c.bad > MAX_BAD_MESSAGES {
                self.ws_close(token);
            }
        }
    }

    pub(super) fn ws_send_json(&mut self, token: Token, event: &str, data: Value) {
        let Some(c) = self.wss.get_mut(&token) else {
            return;
        };
        let text = serde_json::json!({ "event": event, "data": data }).to_string();
        match c.ws.send(Message::text(text)) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                debug!("WebSocket send: {e}");
                self.ws_close(token);
            }
        }
    }

    fn ws_flush(&mut self, token: Token) {
        let Some(c) = self.wss.get_mut(&token) else {
            return;
        };
        match c.ws.flush() {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => self.ws_close(token),
        }
    }

    /// Its viewer went away: close the signalling connection too.
    pub(super) fn ws_viewer_gone(&mut self, token: Token) {
        if let Some(c) = self.wss.get_mut(&token) {
            c.viewer = None;
            let _ = c.ws.close(None);
            let _ = c.ws.flush();
        }
        self.ws_close(token);
    }

    pub(super) fn ws_close(&mut self, token: Token) {
        if let Some(mut c) = self.wss.remove(&token) {
            let _ = self.poll.registry().deregister(c.ws.get_mut().socket());
            c.ws.get_mut().shutdown();
            self.slots.remove(&token);
            if c.viewer.is_some() {
                self.viewer_drop_ws(token);
            }
        }
    }
}
