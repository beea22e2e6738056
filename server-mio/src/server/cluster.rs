//! The loop's side of a cluster: every second it tells the directory thread what this node
//! carries, and takes the directory snapshots the thread hands back (through the `Waker`).
//! Without `--cluster` none of this exists and the server is standalone.

use std::sync::Arc;
use std::time::Instant;

use ftl_proto::ChannelId;
use log::{info, warn};
use mio::Waker;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

use super::Server;
use crate::cluster::directory::Directory;
use crate::cluster::{LocalState, NodeRecord, Role, Snapshot, StreamRecord, REFRESH};

/// This node's membership.
pub(super) struct ClusterNode {
    dir: Directory,
    pub(super) id: String,
    pub(super) url: String,
    pub(super) snapshot: Snapshot,
    next_publish: Instant,
    /// Since when Redis has answered without a break (after an outage every node needs a
    /// refresh or two to register again: absence means nothing before then).
    up_since: Option<Instant>,
}

impl ClusterNode {
    /// Joins the cluster at `args.cluster`, if given.
    pub(super) fn start(
        args: &crate::config::ServerArgs,
        http: std::net::SocketAddr,
        candidates: &[std::net::SocketAddr],
        waker: Arc<Waker>,
    ) -> Result<Option<ClusterNode>, String> {
        let Some(url) = args.cluster.as_deref() else {
            return Ok(None);
        };
        let dir = Directory::start(url, waker)?;
        let id = Alphanumeric.sample_string(&mut rand::rng(), 10);
        let node_url = match &args.node_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let ip = candidates.first().map_or(http.ip(), |c| c.ip());
                let scheme = if args.tls_cert.is_some() {
                    "https"
                } else {
                    "http"
                };
                let u = format!("{scheme}://{}", std::net::SocketAddr::new(ip, http.port()));
                warn!("cluster: no --node-url given; other nodes and viewers are told {u}");
                u
            }
        };
        info!(
            "cluster: node {id} ({node_url}, role {:?}) joins the directory at {url}",
            args.role
        );
        Ok(Some(ClusterNode {
            dir,
            id,
            url: node_url,
            snapshot: Snapshot::default(),
            next_publish: Instant::now(),
            up_since: None,
        }))
    }
}

impl Server {
    /// Every second: this node's state to the directory thread.
    pub(super) fn cluster_tick(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        if now < c.next_publish {
            return;
        }
        // The streams this node originates (not the ones it pulls).
        let streams: Vec<StreamRecord> = self
            .relay
            .channels()
            .filter(|ch| self.relay.is_live(*ch))
            .filter(|ch| {
                !self
                    .whip_live
                    .get(ch)
                    .is_some_and(|id| self.pulls.is_pull_peer(*id))
            })
            .map(|ch| StreamRecord {
                channel: ch.0,
                node: c.id.clone(),
                url: c.url.clone(),
                protocol: self.protocol_of(ch).unwrap_or("ftl").to_owned(),
                epoch: self.stream_epochs.get(&ch).copied().unwrap_or(0),
            })
            .collect();
        let bitrate_bps: f64 = self
            .relay
            .channels()
            .filter_map(|ch| self.relay.stream_stats(ch, now))
            .map(|s| (s.video.bits_per_second + s.audio.bits_per_second) * s.viewers as f64)
            .sum();
        let state = LocalState {
            node: NodeRecord {
                id: c.id.clone(),
                url: c.url.clone(),
                role: self.args.role,
                viewers: self.viewers.connected(),
                capacity: self.args.max_viewers,
                bitrate_bps,
            },
            streams,
        };
        c.dir.publish(state);
        if let Some(c) = self.cluster.as_mut() {
            c.next_publish = now + REFRESH;
        }
        self.pulls_review(now);
    }

    /// A snapshot from the directory thread (woken through the `Waker`).
    pub(super) fn cluster_intake(&mut self, now: Instant) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if let Some(s) = c.dir.latest() {
            if s.redis_up != c.snapshot.redis_up || s.nodes.len() != c.snapshot.nodes.len() {
                log::debug!(
                    "cluster: Redis {}, {} nodes, {} streams",
                    if s.redis_up { "up" } else { "down" },
                    s.nodes.len(),
                    s.streams.len()
                );
            }
            c.up_since = match (s.redis_up, c.up_since) {
                (false, _) => None,
                (true, None) => Some(now),
                (true, since) => since,
            };
            let settled = c
                .up_since
                .is_some_and(|t| now.saturating_duration_since(t) > crate::cluster::TTL);
            let nodes: Option<Vec<String>> =
                settled.then(|| s.nodes.iter().map(|n| n.id.clone()).collect());
            c.snapshot = s;
            self.pulls_review(now);
            if let Some(nodes) = nodes {
                self.pulls_served_review(&nodes);
            }
        }
    }

    /// The origin of `channel` when it is another node: (node id, URL, stream epoch).
    pub(super) fn cluster_origin_elsewhere(
        &self,
        channel: ChannelId,
    ) -> Option<(String, String, u64)> {
        let c = self.cluster.as_ref()?;
        let s = c.snapshot.origin_of(channel.0)?;
        (s.node != c.id).then(|| (s.node.clone(), s.url.clone(), s.epoch))
    }

    /// A node's URL, from the directory.
    pub(super) fn cluster_node_url(&self, id: &str) -> Option<String> {
        let c = self.cluster.as_ref()?;
        c.snapshot.node(id).map(|n| n.url.clone())
    }

    /// Whether a request comes from another node of the cluster (its Bearer is the cluster
    /// token, compared in constant time).
    pub(super) fn is_cluster_pull(&self, req: &super::http::Request) -> bool {
        let Some(token) = self.args.cluster_token.as_deref() else {
            return false;
        };
        let expected = ftl_proto::StreamKey::new(token.as_bytes());
        super::webrtc::whip::bearer_is_secret(req, &expected)
    }

    /// Why this node takes no ingest (`--role edge`), naming where to stream instead.
    pub(super) fn ingest_refusal(&self) -> Option<String> {
        if self.args.role != Role::Edge {
            return None;
        }
        let origins: Vec<String> = self
            .cluster
            .as_ref()
            .map(|c| {
                c.snapshot
                    .nodes
                    .iter()
                    .filter(|n| n.role != Role::Edge)
                    .map(|n| n.url.clone())
                    .collect()
            })
            .unwrap_or_default();
        Some(if origins.is_empty() {
            "this node is an edge: it takes viewers, not streams".to_owned()
        } else {
            format!(
                "this node is an edge: it takes viewers, not streams; stream to {}",
                origins.join(" or ")
            )
        })
    }

    /// Where a WHEP viewer of `channel` should go instead of this node, if anywhere: when this
    /// node is full, or is an origin and an edge has room, the least loaded node with room
    /// (counted at once, so a burst of viewers spreads before the next directory read).
    pub(super) fn placement(&mut self, channel: ChannelId) -> Option<String> {
        let full = self.viewers.len() + self.viewers.pending() >= self.args.max_viewers;
        let role = self.args.role;
        let c = self.cluster.as_mut()?;
        if !c.snapshot.redis_up || !(full || role == Role::Origin) {
            return None;
        }
        let me = c.id.clone();
        let best = c
            .snapshot
            .nodes
            .iter_mut()
            .filter(|n| n.id != me && n.viewers < n.capacity)
            .filter(|n| role != Role::Origin || full || n.role == Role::Edge)
            .min_by(|a, b| {
                let load = |n: &NodeRecord| n.viewers as f64 / n.capacity.max(1) as f64;
                load(a).total_cmp(&load(b)).then(a.id.cmp(&b.id))
            })?;
        best.viewers += 1;
        Some(format!("{}/whep/{channel}", best.url))
    }

    /// Channels live on other nodes of the cluster.
    pub(super) fn cluster_channels(&self) -> Vec<ChannelId> {
        self.cluster
            .as_ref()
            .map(|c| {
                c.snapshot
                    .streams
                    .iter()
                    .map(|s| ChannelId(s.channel))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What `/api/streams` adds about a channel in a cluster: its origin node.
    pub(super) fn cluster_stream_fields(&self, channel: ChannelId, v: &mut Value) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        if let Some(s) = c.snapshot.origin_of(channel.0) {
            v["origin"] = json!({ "node": s.node, "url": s.url, "protocol": s.protocol });
            if s.node != c.id {
                v["live"] = json!(true);
                v["live_here"] = json!(self.relay.is_live(channel));
            }
        }
    }

    /// The cluster as `/api/streams` shows it: this node, Redis, every node.
    pub(super) fn cluster_json(&self) -> Option<Value> {
        let c = self.cluster.as_ref()?;
        Some(json!({
            "node": c.id,
            "url": c.url,
            "role": self.args.role,
            "redis_up": c.snapshot.redis_up,
            "nodes": c.snapshot.nodes,
        }))
    }

    /// `(redis up, nodes)` for `/metrics`, in a cluster.
    pub(super) fn cluster_gauges(&self) -> Option<(bool, usize)> {
        let c = self.cluster.as_ref()?;
        Some((c.snapshot.redis_up, c.snapshot.nodes.len()))
    }
}
