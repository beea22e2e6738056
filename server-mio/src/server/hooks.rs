//! The loop's side of the key service and events (see `crate::hooks`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ftl_proto::control::{Metadata, StatusCode};
use ftl_proto::ChannelId;
use log::{debug, warn};
use mio::{Interest, Token};
use relay_core::{EndReason, StreamStats};
use serde_json::{json, Value};

use super::{Server, Slot};
use crate::hooks::http::{Exchange, Progress, Reply};
use crate::hooks::{key_from_body, Purpose, EVENT_TIMEOUT, LOOKUP_TIMEOUT};

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A stream end's reason as events name it.
fn reason_name(r: EndReason) -> &'static str {
    match r {
        EndReason::Disconnect => "disconnect",
        EndReason::Replaced => "replaced",
        EndReason::MediaTimeout => "media_timeout",
        EndReason::Shutdown => "shutdown",
        EndReason::ControlLost => "control_lost",
        EndReason::KeyRemoved => "key_removed",
        EndReason::KeyRotated => "key_rotated",
    }
}

/// What the key service (or the local key store) says about a channel, for FTL sessions and
/// WHIP offers alike.
pub(super) enum KeyAnswer {
    Key(ftl_proto::StreamKey),
    /// No such channel.
    Unknown,
    /// No usable answer: the stream is refused with 500, never let in unchecked.
    Failed(String),
}

fn totals(s: &StreamStats) -> Value {
    let c = &s.counters;
    json!({
        "video_packets": c.video_packets,
        "audio_packets": c.audio_packets,
        "bytes": c.bytes,
        "frames": c.frames,
        "keyframes": c.keyframes,
        "lost": c.lost,
        "nacked": c.nacked,
        "recovered": c.recovered,
    })
}

impl Server {
    /// Asks the service for `channel`'s key on behalf of control connection `token`.
    pub(super) fn hook_lookup(&mut self, channel: ChannelId, token: Token, now: Instant) {
        let Some(h) = self.hooks.as_mut() else { return };
        let waiting = h.waiting.entry(channel).or_default();
        waiting.push(token);
        if waiting.len() > 1 {
            return; // a lookup for this channel is in flight already
        }
        if let Some(link) = h.ws.as_mut() {
            let id = h.next_id;
            h.next_id += 1;
            let request =
                json!({ "type": "key_request", "id": id, "channel": channel.0 }).to_string();
            if link.send(request, now) {
                h.ws_pending.insert(id, (channel, now + LOOKUP_TIMEOUT));
            } else {
                self.hook_lookup_done(channel, Err("not connected".into()), now);
            }
            return;
        }
        let path = h.key_path(channel);
        match Exchange::start(
            h.addr,
            h.tls.as_ref(),
            &h.host,
            "GET",
            &path,
            None,
            now + LOOKUP_TIMEOUT,
        ) {
            Ok(ex) => self.hook_register(Purpose::Lookup(channel), ex),
            Err(e) => self.hook_lookup_done(channel, Err(format!("connect: {e}")), now),
        }
    }

    fn hook_register(&mut self, purpose: Purpose, mut ex: Exchange) {
        let token = self.token(Slot::Hook);
        if let Err(e) = self.poll.registry().register(
            ex.stream.tcp(),
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("key service: {e}");
        }
        if let Some(h) = self.hooks.as_mut() {
            h.exchanges.insert(token, (purpose, ex));
        }
    }

    /// Readiness on an exchange's socket.
    pub(super) fn hook_event(&mut self, token: Token, now: Instant) {
        if self
            .hooks
            .as_ref()
            .is_some_and(|h| h.ws_token == Some(token))
        {
            return self.hook_link_event(now);
        }
        let progress = match self
            .hooks
            .as_mut()
            .and_then(|h| h.exchanges.get_mut(&token))
        {
            Some((_, ex)) => ex.progress(),
            None => return,
        };
        match progress {
            Progress::Pending => {}
            Progress::Done(reply) => self.hook_finish(token, Ok(reply), now),
            Progress::Failed(e) => self.hook_finish(token, Err(e), now),
        }
    }

    fn hook_finish(&mut self, token: Token, result: Result<Reply, String>, now: Instant) {
        self.slots.remove(&token);
        let Some((purpose, mut ex)) = self.hooks.as_mut().and_then(|h| h.exchanges.remove(&token))
        else {
            return;
        };
        let _ = self.poll.registry().deregister(ex.stream.tcp());
        match purpose {
            Purpose::Lookup(channel) => self.hook_lookup_done(channel, result, now),
            Purpose::Event => {
                let Some(h) = self.hooks.as_mut() else { return };
                match result {
                    Ok(r) if (200..300).contains(&r.status) => h.event_done(now),
                    Ok(r) => {
                        debug!("events: the service answered {}", r.status);
                        h.event_failed(now);
                    }
                    Err(e) => {
                        debug!("events: {e}");
                        h.event_failed(now);
                    }
                }
                self.hooks_pump(now);
            }
        }
    }

    /// The service's answer about `channel`: every waiting session gets it.
    fn hook_lookup_done(
        &mut self,
        channel: ChannelId,
        result: Result<Reply, String>,
        now: Instant,
    ) {
        let waiting = self
            .hooks
            .as_mut()
            .and_then(|h| h.waiting.remove(&channel))
            .unwrap_or_default();
        let answer = match result {
            Ok(r) if r.status == 200 => match key_from_body(&r.body) {
                Some(k) => KeyAnswer::Key(ftl_proto::StreamKey::new(k.into_bytes())),
                None => KeyAnswer::Failed("an answer without a key".into()),
            },
            Ok(r) if (400..500).contains(&r.status) => KeyAnswer::Unknown,
            Ok(r) => KeyAnswer::Failed(format!("status {}", r.status)),
            Err(e) => KeyAnswer::Failed(e),
        };
        if let KeyAnswer::Failed(why) = &answer {
            warn!("key service: lookup for channel {channel} failed: {why}; refusing the stream");
            if let Some(h) = self.hooks.as_mut() {
                h.lookup_failures += 1;
            }
        }
        for token in waiting {
            if self.whip_auth.contains_key(&token) {
                self.whip_key_answer(token, &answer, now);
                continue;
            }
            if self.recorder.deletes.contains_key(&token) {
                self.recording_delete_answer(token, &answer, now);
                continue;
            }
            let Some(conn) = self.controls.get_mut(&token) else {
                continue;
            };
            let peer = conn.peer();
            let failed = match &answer {
                KeyAnswer::Key(key) => {
                    let bad = conn.session.provide_key(key, now).is_err();
                    if bad {
                        warn!("FTL: {peer}: wrong stream key for channel {channel}");
                    }
                    bad
                }
                KeyAnswer::Unknown => {
                    warn!("FTL: {peer}: the key service knows no channel {channel}");
                    let _ = conn.session.reject_unknown_channel();
                    true
                }
                KeyAnswer::Failed(_) => {
                    conn.session
                        .refuse(StatusCode::INTERNAL_ERROR, "key service unavailable");
                    false
                }
            };
            if failed {
                self.counters.auth_failures += 1;
                self.note_auth_failure(peer.ip(), now);
            }
            self.pump_control(token, now);
        }
    }

    /// The WebSocket link made progress or has messages.
    fn hook_link_event(&mut self, now: Instant) {
        let Some(h) = self.hooks.as_mut() else { return };
        let Some(link) = h.ws.as_mut() else { return };
        if !link.is_open() {
            link.advance(now);
        }
        let incoming = link.read(now);
        let down = link.retry_at().is_some();
        let mut answers = Vec::new();
        for crate::hooks::ws::Incoming::Key { id, key } in incoming {
            if let Some((channel, _)) = h.ws_pending.remove(&id) {
                let reply = match key {
                    Ok(k) => Reply {
                        status: 200,
                        body: k.into_bytes(),
                    },
                    Err(e) => Reply {
                        status: 404,
                        body: e.into_bytes(),
                    },
                };
                answers.push((channel, reply));
            }
        }
        if down {
            self.hook_link_down(now);
        }
        for (channel, reply) in answers {
            self.hook_lookup_done(channel, Ok(reply), now);
        }
        self.hooks_pump(now);
    }

    /// The link broke: lookups in flight fail (the sessions get a refusal, never a pass).
    fn hook_link_down(&mut self, now: Instant) {
        let Some(h) = self.hooks.as_mut() else { return };
        if let Some(t) = h.ws_token.take() {
            self.slots.remove(&t);
        }
        let failed: Vec<ChannelId> = h.ws_pending.drain().map(|(_, (c, _))| c).collect();
        for c in failed {
            self.hook_lookup_done(c, Err("connection to the key service lost".into()), now);
        }
    }

    /// Deadlines, event sending and periodic stats.
    pub(super) fn hooks_timeouts(&mut self, now: Instant) {
        // The WebSocket link: reconnect when due; fail lookups past their deadline.
        if let Some(h) = self.hooks.as_mut() {
            let addr = h.addr;
            let tls = h.tls.clone();
            if let Some(link) = h.ws.as_mut() {
                if link.retry_at().is_some_and(|t| t <= now) {
                    match crate::hooks::conn::Conn::connect(addr, tls.as_ref()) {
                        Ok(stream) => link.link = crate::hooks::ws::Link::Connecting(stream),
                        Err(e) => {
                            debug!("key service: {e}");
                            link.fail(now);
                        }
                    }
                    if let Some(stream) = link.stream_mut() {
                        let token = Token(self.next_token);
                        self.next_token += 1;
                        self.slots.insert(token, Slot::Hook);
                        let _ = self.poll.registry().register(
                            stream.tcp(),
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        );
                        h.ws_token = Some(token);
                    }
                }
            }
            let expired: Vec<u64> = h
                .ws_pending
                .iter()
                .filter(|(_, (_, d))| *d <= now)
                .map(|(id, _)| *id)
                .collect();
            let channels: Vec<ChannelId> = expired
                .iter()
                .filter_map(|id| h.ws_pending.remove(id))
                .map(|(c, _)| c)
                .collect();
            for c in channels {
                self.hook_lookup_done(c, Err("no answer in time".into()), now);
            }
        }
        let Some(h) = self.hooks.as_ref() else { return };
        let expired: Vec<Token> = h
            .exchanges
            .iter()
            .filter(|(_, (_, e))| e.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            self.hook_finish(t, Err("no answer in time".into()), now);
        }
        if self.hooks.as_ref().is_some_and(|h| h.next_stats <= now) {
            let channels: Vec<ChannelId> = self
                .relay
                .channels()
                .filter(|c| self.relay.is_live(*c))
                .collect();
            for c in channels {
                let Some(s) = self.relay.stream_stats(c, now) else {
                    continue;
                };
                let event = json!({
                    "event": "stream_stats",
                    "channel": c.0,
                    "protocol": self.protocol_of(c).unwrap_or("ftl"),
                    "b_frames": s.b_frames,
                    "time_ms": unix_ms(),
                    "viewers": s.viewers,
                    "bitrate_bps": (s.video.bits_per_second + s.audio.bits_per_second).round(),
                    "fps": s.video.frames_per_second,
                    "width": s.width,
                    "height": s.height,
                    "lost": s.counters.lost,
                    "uptime_s": s.uptime.as_secs(),
                });
                if let Some(h) = self.hooks.as_mut() {
                    if let Some(l) = h.live.get_mut(&c) {
                        l.1 = totals(&s);
                    }
                    h.push_event(event.to_string());
                }
            }
            if let Some(h) = self.hooks.as_mut() {
                h.next_stats = now + h.stats_interval;
            }
        }
        self.hooks_pump(now);
    }

    /// Sends the oldest queued event when nothing is in flight and the back-off allows.
    fn hooks_pump(&mut self, now: Instant) {
        let Some(h) = self.hooks.as_mut() else { return };
        if let Some(link) = h.ws.as_mut() {
            // Over the link, events go out in order as long as it is open.
            while let Some(event) = h.events.front().cloned() {
                let mut msg: Value = serde_json::from_str(&event).unwrap_or(Value::Null);
                msg["type"] = json!("event");
                if !link.send(msg.to_string(), now) {
                    break;
                }
                h.events.pop_front();
                h.events_sent += 1;
            }
            let down = link.retry_at().is_some();
            if down && h.ws_token.is_some() {
                self.hook_link_down(now);
            }
            return;
        }
        if h.event_in_flight || h.next_event_try > now {
            return;
        }
        let Some(event) = h.events.front().cloned() else {
            return;
        };
        let path = h.events_path();
        match Exchange::start(
            h.addr,
            h.tls.as_ref(),
            &h.host,
            "POST",
            &path,
            Some(event.as_bytes()),
            now + EVENT_TIMEOUT,
        ) {
            Ok(ex) => {
                h.event_in_flight = true;
                self.hook_register(Purpose::Event, ex);
            }
            Err(e) => {
                debug!("events: {e}");
                h.event_failed(now);
            }
        }
    }

    pub(super) fn hook_stream_started(
        &mut self,
        channel: ChannelId,
        metadata: &Metadata,
        port: u16,
        now: Instant,
    ) {
        let details = json!({
            "media_port": port,
            "vendor": { "name": metadata.vendor_name, "version": metadata.vendor_version },
            "video": metadata.video.as_ref().map(|v| json!({
                "codec": "H264", "width": v.width, "height": v.height,
                "payload_type": v.payload_type, "ssrc": v.ssrc.0,
            })),
            "audio": metadata.audio.as_ref().map(|a| json!({
                "codec": "OPUS", "payload_type": a.payload_type, "ssrc": a.ssrc.0,
            })),
        });
        self.hook_start_event(channel, "ftl", details, now);
    }

    /// A WHIP publisher's stream went live.
    pub(super) fn hook_whip_started(
        &mut self,
        channel: ChannelId,
        from: std::net::SocketAddr,
        video: bool,
        audio: bool,
        now: Instant,
    ) {
        let details = json!({
            "from": from.ip().to_string(),
            "video": video.then(|| json!({ "codec": "H264" })),
            "audio": audio.then(|| json!({ "codec": "OPUS" })),
        });
        self.hook_start_event(channel, super::webrtc::whip::PROTOCOL, details, now);
    }

    /// `stream_start`: the fields every protocol has, then the protocol's own `details`.
    fn hook_start_event(
        &mut self,
        channel: ChannelId,
        protocol: &str,
        details: Value,
        now: Instant,
    ) {
        let Some(h) = self.hooks.as_mut() else { return };
        h.live.insert(channel, (now, Value::Null));
        let mut event = json!({
            "event": "stream_start",
            "channel": channel.0,
            "protocol": protocol,
            "time_ms": unix_ms(),
            // Known once the first frames are in; a `stream_update` says so then.
            "b_frames": false,
        });
        if let (Some(e), Value::Object(d)) = (event.as_object_mut(), details) {
            e.extend(d);
        }
        h.push_event(event.to_string());
        self.hooks_pump(now);
    }

    /// Something about a live stream that its `stream_start` could not say yet: B-frames.
    pub(super) fn hook_stream_update(&mut self, channel: ChannelId, now: Instant) {
        let protocol = self.protocol_of(channel).unwrap_or("ftl");
        let b_frames = self
            .relay
            .stream_stats(channel, now)
            .is_some_and(|s| s.b_frames);
        let Some(h) = self.hooks.as_mut() else { return };
        let event = json!({
            "event": "stream_update",
            "channel": channel.0,
            "protocol": protocol,
            "time_ms": unix_ms(),
            "b_frames": b_frames,
        });
        h.push_event(event.to_string());
        self.hooks_pump(now);
    }

    pub(super) fn hook_stream_ended(
        &mut self,
        channel: ChannelId,
        reason: EndReason,
        stats: Option<StreamStats>,
        now: Instant,
    ) {
        let Some(h) = self.hooks.as_mut() else { return };
        let (started, last) = h.live.remove(&channel).unwrap_or((now, Value::Null));
        let event = json!({
            "event": "stream_stop",
            "channel": channel.0,
            "time_ms": unix_ms(),
            "reason": reason_name(reason),
            "duration_ms": now.saturating_duration_since(started).as_millis() as u64,
            "totals": stats.as_ref().map_or(last, totals),
        });
        h.push_event(event.to_string());
        self.hooks_pump(now);
    }
}
