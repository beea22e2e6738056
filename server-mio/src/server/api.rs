//! `GET /api/streams` (JSON) and `GET /metrics` (Prometheus text).

use std::fmt::Write;
use std::time::Instant;

use ftl_proto::ChannelId;
use serde_json::json;

use super::http::Response;
use super::Server;

/// Server-wide counters (per-stream ones live in the relay).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub control_accepted: u64,
    pub control_refused: u64,
    pub auth_failures: u64,
    pub media_datagrams: u64,
    pub http_requests: u64,
    pub http_errors: u64,
    pub http_refused: u64,
    pub http_timeouts: u64,
    pub ws_bad_messages: u64,
    pub webrtc_datagrams: u64,
    pub webrtc_unrouted: u64,
    pub webrtc_send_errors: u64,
    /// WebRTC datagrams the kernel took, the `sendmmsg` calls that carried them, messages of
    /// several datagrams (UDP GSO), datagrams dropped at a full socket buffer.
    pub webrtc_sent: u64,
    pub webrtc_send_calls: u64,
    pub webrtc_gso_messages: u64,
    pub webrtc_send_full: u64,
    pub viewers_created: u64,
    pub viewers_dropped: u64,
    /// Peers (viewers and publishers) that never connected before their deadline.
    pub ice_failures: u64,
    /// ICE-TCP: packets received, connections refused at the limits.
    pub ice_tcp_packets: u64,
    pub ice_tcp_refused: u64,
    /// Binding requests made for peers whose ICE sends none once connected (libnice).
    pub ice_keepalives: u64,
    /// ICE-TCP: packets dropped at a full connection queue, connections closed as stalled.
    pub ice_tcp_dropped: u64,
    pub ice_tcp_stalled: u64,
    pub viewers_refused: u64,
    /// WHEP viewers sent to another node of the cluster (307).
    pub viewers_redirected: u64,
    pub packets_forwarded: u64,
    pub publishers_created: u64,
    pub whip_refused: u64,
    pub whip_packets: u64,
    pub whip_keyframe_requests: u64,
    /// REMBs sent to WHIP publishers (their estimate, or the cap for TWCC publishers).
    pub whip_remb_sent: u64,
    /// WebRTC offers refused for their address's rate, or its count of unconnected sessions.
    pub offers_rate_limited: u64,
    pub offers_pending_capped: u64,
    /// Unconnected sessions let go to make room in a full peer table.
    pub unconnected_evicted: u64,
    /// Reads of the key file after it changed: taken, and refused (the old keys stay).
    pub key_reloads: u64,
    /// Unauthenticated connections closed to make room in a full table.
    pub control_evicted: u64,
    /// Certificate pairs taken while running, and refused (the old one stays).
    pub tls_reloads: u64,
    pub tls_reload_errors: u64,
    pub http_evicted: u64,
    pub key_file_errors: u64,
    /// Viewers' retransmission budgets raised and lowered from their receivers' loss reports.
    pub rtx_budget_raised: u64,
    pub rtx_budget_lowered: u64,
}

impl Server {
    /// Every channel of the key store plus any live one, live first.
    fn channel_list(&self) -> Vec<ChannelId> {
        let mut ids: Vec<ChannelId> = self
            .keys
            .channels()
            .iter()
            .map(|c| ChannelId(c.id))
            .collect();
        for c in self.relay.channels().chain(self.cluster_channels()) {
            if !ids.contains(&c) {
                ids.push(c);
            }
        }
        let cluster = self.cluster_channels();
        ids.sort_by_key(|c| (!(self.relay.is_live(*c) || cluster.contains(c)), *c));
        ids
    }

    pub(super) fn api_streams(&self, now: Instant) -> Response {
        let streams: Vec<_> = self
            .channel_list()
            .into_iter()
            .map(|c| {
                let name = self
                    .keys
                    .get(c)
                    .map(|k| k.name.clone())
                    .unwrap_or_else(|| format!("Channel {c}"));
                let mut v = json!({
                    "channel": c.0,
                    "name": name,
                    "live": self.relay.is_live(c),
                    "viewers": self.relay.channel_viewers(c),
                    "viewers_tcp": self.viewers.connected_tcp(Some(c)),
                    "recording": self.recorder.is_recording(c),
                    "watch": format!("/watch/{c}"),
                    "whep": format!("/whep/{c}"),
                });
                if let Some(t) = self.thumbnails.get(c) {
                    // The query names the picture: a page reloads it only when it changed.
                    let version = t.etag.trim_matches('"');
                    v["thumbnail"] = json!(format!("/thumbnails/{c}.jpg?v={version}"));
                    v["thumbnail_width"] = json!(t.width);
                    v["thumbnail_height"] = json!(t.height);
                } else if let (Some(every), false, Some(_)) = (
                    self.thumbnails.every(),
                    self.relay.is_live(c),
                    self.cluster_origin_elsewhere(c),
                ) {
                    // Live on another node and not carried here: the URL leads to the origin's
                    // picture, and names the interval so pages fetch each new one.
                    let round = self.started.elapsed().as_secs() / every.as_secs().max(1);
                    v["thumbnail"] = json!(format!("/thumbnails/{c}.jpg?v=r{round}"));
                }
                if let Some(m) = self.media.get(&c) {
                    v["media_port"] = json!(m.port);
                }
                self.cluster_stream_fields(c, &mut v);
                if let Some(p) = self.protocol_of(c) {
                    v["protocol"] = json!(p);
                }
                if let Some(f) = self.whip_feedback(c) {
                    v["congestion_control"] = json!(f.control.name());
                    v["remb_bps"] = json!(f.last_remb);
                }
                if let Some(s) = self.relay.stream_stats(c, now) {
                    let codecs: Vec<&str> =
                        [s.codec.map(|c| c.name()), s.has_audio.then_some("opus")]
                            .into_iter()
                            .flatten()
                            .collect();
                    v["bitrate_bps"] =
                        json!((s.video.bits_per_second + s.audio.bits_per_second).round());
                    v["fps"] = json!((s.video.frames_per_second * 10.0).round() / 10.0);
                    v["width"] = json!(s.width);
                    v["height"] = json!(s.height);
                    v["codec"] = json!(s.codec.map(|c| c.name()));
                    v["profile"] = json!(s.profile);
                    if s.codec == Some(relay_core::VideoCodec::H264) {
                        v["profile_level_id"] = json!(s.profile);
                    }
                    v["codecs"] = json!(codecs);
                    v["uptime_s"] = json!(s.uptime.as_secs());
                    v["keyframe_interval_ms"] =
                        json!(s.keyframe_interval.map(|d| d.as_millis() as u64));
                    v["lost"] = json!(s.counters.lost);
                    v["nacked"] = json!(s.counters.nacked);
                    v["recovered"] = json!(s.counters.recovered);
                    v["keyframes"] = json!(s.counters.keyframes);
                    v["b_frames"] = json!(s.b_frames);
                    v["keyframe_requests"] = json!(s.counters.keyframe_requests);
                    v["viewer_restarts"] = json!(s.counters.viewer_restarts);
                    v["viewer_skips"] = json!(s.counters.viewer_skips);
                    v["viewer_skipped_packets"] = json!(s.counters.viewer_skipped_packets);
                    v["viewer_skips_late"] = json!(s.counters.viewer_skips_late);
                    v["viewer_skips_send_failed"] = json!(s.counters.viewer_skips_send_failed);
                    v["late_packets"] = json!(s.counters.late_packets);
                    v["dropped_foreign_source"] = json!(s.counters.dropped_foreign_source);
                    v["layer_switches"] = json!(s.counters.layer_switches);
                    v["layer_trials"] = json!(s.counters.layer_trials);
                    v["layer_trials_failed"] = json!(s.counters.layer_trials_failed);
                    // Simulcast: each video layer, smallest picture first (one without).
                    let layers: Vec<serde_json::Value> = s
                        .layers
                        .iter()
                        .map(|l| {
                            json!({
                                "id": l.id.0,
                                "width": l.width,
                                "height": l.height,
                                "bitrate_bps": l.video.bits_per_second.round(),
                                "fps": (l.video.frames_per_second * 10.0).round() / 10.0,
                                "keyframe_interval_ms":
                                    l.keyframe_interval.map(|d| d.as_millis() as u64),
                                "active": l.active,
                                "viewers": l.viewers,
                            })
                        })
                        .collect();
                    v["layers"] = json!(layers);
                    // Viewers whose layer follows a bandwidth estimate (see
                    // `webrtc::estimate`); the others move on reported loss alone. Shown
                    // with layers, or before them (declared, not sending yet).
                    let estimating = self
                        .viewers
                        .map
                        .values()
                        .filter(|p| p.channel == c && p.estimate.is_some())
                        .count();
                    if s.layers.len() > 1 || estimating > 0 {
                        v["estimating_viewers"] = json!(estimating);
                    }
                }
                v
            })
            .collect();
        let mut body = json!({ "streams": streams });
        if let Some(c) = self.cluster_json() {
            body["cluster"] = c;
        }
        Response::new(200, "application/json", body.to_string())
    }

    pub(super) fn metrics(&self, now: Instant) -> Response {
        let mut m = String::new();
        let c = &self.counters;
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                m,
                "# HELP itg_{name} {help}\n# TYPE itg_{name} counter\nitg_{name} {v}"
            );
        };
        counter(
            "control_connections_total",
            "FTL control connections accepted.",
            c.control_accepted,
        );
        counter(
            "control_refused_total",
            "FTL control connections refused at the limit.",
            c.control_refused,
        );
        counter(
            "auth_failures_total",
            "FTL sessions refused for a wrong key or unknown channel.",
            c.auth_failures,
        );
        counter(
            "media_datagrams_total",
            "Datagrams received on FTL media ports.",
            c.media_datagrams,
        );
        counter(
            "http_requests_total",
            "HTTP requests parsed.",
            c.http_requests,
        );
        counter(
            "http_errors_total",
            "Malformed or oversized HTTP requests.",
            c.http_errors,
        );
        counter(
            "http_timeouts_total",
            "HTTP connections closed at their deadline.",
            c.http_timeouts,
        );
        counter(
            "http_refused_total",
            "HTTP connections refused at the limit.",
            c.http_refused,
        );
        counter(
            "websocket_bad_messages_total",
            "WebSocket messages ignored.",
            c.ws_bad_messages,
        );
        counter(
            "webrtc_datagrams_total",
            "Datagrams received on the WebRTC port.",
            c.webrtc_datagrams,
        );
        counter(
            "webrtc_unrouted_total",
            "WebRTC datagrams that matched no viewer.",
            c.webrtc_unrouted,
        );
        counter(
            "webrtc_send_errors_total",
            "WebRTC datagrams the socket refused.",
            c.webrtc_send_errors,
        );
        counter(
            "webrtc_sent_total",
            "WebRTC datagrams sent over UDP.",
            c.webrtc_sent,
        );
        counter(
            "webrtc_send_calls_total",
            "sendmmsg calls that carried them (datagrams per call = the batching).",
            c.webrtc_send_calls,
        );
        counter(
            "webrtc_gso_messages_total",
            "Messages that carried several datagrams to one peer (UDP GSO).",
            c.webrtc_gso_messages,
        );
        counter(
            "webrtc_send_full_total",
            "WebRTC datagrams dropped because the socket's buffer was full (the peer skips to the next keyframe).",
            c.webrtc_send_full,
        );
        counter(
            "viewers_created_total",
            "Viewer sessions created.",
            c.viewers_created,
        );
        counter(
            "viewers_dropped_total",
            "Viewer sessions ended.",
            c.viewers_dropped,
        );
        counter(
            "ice_keepalives_total",
            "Binding requests made on behalf of connected peers that send none but are still heard from (libnice without consent freshness): each keeps the peer's ICE pair open.",
            c.ice_keepalives,
        );
        counter(
            "ice_tcp_packets_total",
            "Packets received over ICE-TCP connections.",
            c.ice_tcp_packets,
        );
        counter(
            "ice_tcp_refused_total",
            "ICE-TCP connections refused at the limits.",
            c.ice_tcp_refused,
        );
        counter(
            "ice_tcp_dropped_total",
            "Packets dropped because an ICE-TCP connection's queue was full (a viewer far behind).",
            c.ice_tcp_dropped,
        );
        counter(
            "ice_tcp_stalled_total",
            "ICE-TCP connections closed after taking nothing for 10 s while data waited.",
            c.ice_tcp_stalled,
        );
        counter(
            "ice_failures_total",
            "WebRTC peers that never connected (ICE or DTLS) before --viewer-connect-timeout.",
            c.ice_failures,
        );
        counter(
            "viewers_redirected_total",
            "WHEP viewers sent to another node of the cluster (307).",
            c.viewers_redirected,
        );
        counter(
            "viewers_refused_total",
            "Viewer offers refused.",
            c.viewers_refused,
        );
        counter(
            "viewer_rtx_budget_raised_total",
            "Viewers' retransmission budgets raised because their receivers reported more loss.",
            c.rtx_budget_raised,
        );
        counter(
            "viewer_rtx_budget_lowered_total",
            "Viewers' retransmission budgets lowered after their loss stayed low.",
            c.rtx_budget_lowered,
        );
        counter(
            "packets_forwarded_total",
            "RTP packets written to viewers.",
            c.packets_forwarded,
        );
        counter(
            "whip_publishers_total",
            "WHIP offers answered (publishers negotiated).",
            c.publishers_created,
        );
        counter(
            "tls_reloads_total",
            "Renewed TLS certificate pairs taken while running.",
            c.tls_reloads,
        );
        counter(
            "tls_reload_errors_total",
            "Changed TLS certificate files that did not load (the pair in force stays).",
            c.tls_reload_errors,
        );
        counter(
            "control_evicted_total",
            "Unauthenticated FTL connections closed to make room in a full table.",
            c.control_evicted,
        );
        counter(
            "http_evicted_total",
            "HTTP connections still sending their request, closed to make room in a full table.",
            c.http_evicted,
        );
        counter(
            "key_reloads_total",
            "Changes of the key file taken while running.",
            c.key_reloads,
        );
        counter(
            "key_file_errors_total",
            "Changes of the key file refused (missing, corrupt): the last good keys stay in force.",
            c.key_file_errors,
        );
        counter(
            "whip_refused_total",
            "WHIP offers refused (key, channel, SDP, codec, limits).",
            c.whip_refused,
        );
        counter(
            "whip_packets_total",
            "RTP packets received from WHIP publishers.",
            c.whip_packets,
        );
        counter(
            "whip_keyframe_requests_total",
            "PLIs sent to WHIP publishers.",
            c.whip_keyframe_requests,
        );
        counter(
            "offers_rate_limited_total",
            "WebRTC offers (WHEP, WHIP, WebSocket) refused with 429: the address's offer rate.",
            c.offers_rate_limited,
        );
        counter(
            "offers_pending_capped_total",
            "WebRTC offers refused with 429: the address has too many sessions still connecting.",
            c.offers_pending_capped,
        );
        counter(
            "unconnected_evicted_total",
            "Sessions not yet connected let go to make room in a full peer table.",
            c.unconnected_evicted,
        );
        counter(
            "whip_remb_sent_total",
            "REMBs sent to WHIP publishers (the server's estimate, or the cap).",
            c.whip_remb_sent,
        );
        for (name, help, v) in self.recording_metrics() {
            counter(name, help, v);
        }
        let t = self.thumbnails.stats;
        counter("thumbnails_total", "Thumbnails made.", t.made);
        counter(
            "thumbnail_failures_total",
            "Keyframes that gave no thumbnail (did not decode, or a codec with no decoder here).",
            t.failed,
        );
        counter(
            "thumbnail_unchanged_total",
            "Keyframes not decoded because they were the last one again.",
            t.unchanged,
        );
        counter(
            "thumbnail_busy_total",
            "Rounds a stream missed because the thumbnail queue was full.",
            t.busy,
        );
        let _ = writeln!(
            m,
            "# HELP itg_thumbnail_seconds_total Time the thumbnail thread spent decoding, \
             scaling and encoding.\n# TYPE itg_thumbnail_seconds_total counter\n\
             itg_thumbnail_seconds_total {:.6}",
            t.busy_time.as_secs_f64()
        );
        let _ = writeln!(
            m,
            "# HELP itg_dtls_handshakes_total WebRTC DTLS handshakes completed, by the key of \
             the peer's certificate.\n# TYPE itg_dtls_handshakes_total counter"
        );
        for (key, n) in crate::dtls::handshakes() {
            let _ = writeln!(
                m,
                "itg_dtls_handshakes_total{{peer_key=\"{}\"}} {n}",
                key.name()
            );
        }
        let gauges: [(&str, &str, usize); 9] = [
            (
                "pulls_served",
                "Edge nodes pulling a stream from this node (not counted as viewers).",
                self.viewers.pulls(),
            ),
            (
                "pulls",
                "Channels this node pulls from their origin node.",
                self.pulls.map.len(),
            ),
            ("streams_live", "Live streams.", self.relay.live_streams()),
            (
                "viewers",
                "Viewer sessions (connected or connecting).",
                self.viewers.len(),
            ),
            (
                "viewers_connected",
                "Viewers receiving media.",
                self.viewers.connected(),
            ),
            (
                "viewers_connected_tcp",
                "Viewers receiving media over ICE-TCP (the rest use UDP).",
                self.viewers.connected_tcp(None),
            ),
            (
                "control_connections",
                "Open FTL control connections.",
                self.controls.len(),
            ),
            (
                "http_connections",
                "Open HTTP and WebSocket connections.",
                self.https.len() + self.wss.len(),
            ),
            (
                "uptime_seconds",
                "Seconds since start.",
                now.saturating_duration_since(self.started).as_secs() as usize,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                m,
                "# HELP itg_{name} {help}\n# TYPE itg_{name} gauge\nitg_{name} {v}"
            );
        }
        if let Some((up, nodes)) = self.cluster_gauges() {
            let _ = writeln!(
                m,
                "# HELP itg_cluster_redis_up 1 while the cluster directory (Redis) answers.\n# TYPE itg_cluster_redis_up gauge\nitg_cluster_redis_up {}\n# HELP itg_cluster_nodes Nodes in the cluster directory.\n# TYPE itg_cluster_nodes gauge\nitg_cluster_nodes {nodes}",
                u8::from(up)
            );
        }
        type Gauge = (
            &'static str,
            &'static str,
            fn(&relay_core::StreamStats) -> f64,
        );
        let per_stream: [Gauge; 18] = [
            ("stream_bitrate_bps", "Ingest bitrate.", |s| {
                s.video.bits_per_second + s.audio.bits_per_second
            }),
            ("stream_fps", "Ingest frame rate.", |s| {
                s.video.frames_per_second
            }),
            ("stream_viewers", "Viewers of the stream.", |s| {
                s.viewers as f64
            }),
            ("stream_packets_total", "Media packets received.", |s| {
                (s.counters.video_packets + s.counters.audio_packets) as f64
            }),
            (
                "stream_lost_total",
                "Packets lost upstream for good.",
                |s| s.counters.lost as f64,
            ),
            ("stream_nacked_total", "NACK requests sent upstream.", |s| {
                s.counters.nacked as f64
            }),
            (
                "stream_recovered_total",
                "Packets recovered by NACK.",
                |s| s.counters.recovered as f64,
            ),
            (
                "stream_dropped_total",
                "Ingest datagrams dropped (spoofed, foreign, junk, speed test).",
                |s| {
                    let c = &s.counters;
                    (c.dropped_foreign_source
                        + c.dropped_foreign_ssrc
                        + c.dropped_invalid
                        + c.dropped_speed_test
                        + c.dropped_too_old) as f64
                },
            ),
            ("stream_gop_cache_bytes", "Bytes in the GOP cache.", |s| {
                s.gop_bytes as f64
            }),
            (
                "stream_viewer_skips_total",
                "Times a viewer fell behind and skipped to the next keyframe (all reasons).",
                |s| s.counters.viewer_skips as f64,
            ),
            (
                "stream_viewer_skips_late_total",
                "Of those: the stream's packets waited on this server past --late-ms or --late-drop-ms (overload).",
                |s| s.counters.viewer_skips_late as f64,
            ),
            (
                "stream_viewer_skips_send_failed_total",
                "Of those: the UDP socket did not take the viewer's datagrams.",
                |s| s.counters.viewer_skips_send_failed as f64,
            ),
            (
                "stream_viewer_skipped_packets_total",
                "Packets viewers did not get: video while skipping, audio past --late-drop-ms.",
                |s| s.counters.viewer_skipped_packets as f64,
            ),
            (
                "stream_late_packets_total",
                "Video packets read after waiting on this server past --late-ms.",
                |s| s.counters.late_packets as f64,
            ),
            (
                "stream_b_frames",
                "1 if the encoder sends B-frames (browsers stutter on them).",
                |s| f64::from(u8::from(s.b_frames)),
            ),
            (
                "stream_layer_switches_total",
                "Viewers moved from one simulcast layer to another.",
                |s| s.counters.layer_switches as f64,
            ),
            (
                "stream_layer_trials_total",
                "Trials of the layer above by padding a viewer's link, its estimate showing room.",
                |s| s.counters.layer_trials as f64,
            ),
            (
                "stream_layer_trials_failed_total",
                "Trials that showed loss: the viewer stayed on its layer.",
                |s| s.counters.layer_trials_failed as f64,
            ),
        ];
        let live: Vec<(ChannelId, relay_core::StreamStats)> = self
            .relay
            .channels()
            .filter_map(|c| self.relay.stream_stats(c, now).map(|s| (c, s)))
            .collect();
        for (name, help, f) in per_stream {
            let _ = writeln!(m, "# HELP itg_{name} {help}\n# TYPE itg_{name} gauge");
            for (c, s) in &live {
                let _ = writeln!(m, "itg_{name}{{channel=\"{c}\"}} {}", f(s));
            }
        }
        // Simulcast: each layer's audience and rate.
        type LayerGauge = (
            &'static str,
            &'static str,
            fn(&relay_core::LayerStats) -> f64,
        );
        let per_layer: [LayerGauge; 2] = [
            (
                "stream_layer_viewers",
                "Viewers on each video layer of a stream (layer: its id, height: its picture's).",
                |l| l.viewers as f64,
            ),
            (
                "stream_layer_bitrate_bps",
                "Each video layer's ingest bitrate.",
                |l| l.video.bits_per_second.round(),
            ),
        ];
        for (name, help, f) in per_layer {
            let _ = writeln!(m, "# HELP itg_{name} {help}\n# TYPE itg_{name} gauge");
            for (c, s) in &live {
                for l in &s.layers {
                    let (id, height) = (l.id, l.height.unwrap_or(0));
                    let _ = writeln!(
                        m,
                        "itg_{name}{{channel=\"{c}\",layer=\"{id}\",height=\"{height}\"}} {}",
                        f(l)
                    );
                }
            }
        }
        // Which protocol feeds each live stream, as an info metric (labels only).
        let _ = writeln!(
            m,
            "# HELP itg_stream_info A live stream and the protocol it comes in over.\n# TYPE itg_stream_info gauge"
        );
        for (c, _) in &live {
            if let Some(p) = self.protocol_of(*c) {
                let _ = writeln!(m, "itg_stream_info{{channel=\"{c}\",protocol=\"{p}\"}} 1");
            }
        }
        Response::new(200, "text/plain; version=0.0.4", m)
    }
}
