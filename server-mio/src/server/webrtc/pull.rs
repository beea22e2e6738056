//! Edge pulls: a node asked for a channel that another node of the cluster originates pulls it
//! from there over WHEP, once per channel however many viewers it serves here, and feeds the
//! pulled RTP into its own relay exactly as a WHIP publisher's (the same peer role). The WHEP
//! exchange (an HTTP request that may take a while) runs on a short-lived thread, which builds
//! the `Rtc` too and hands both back through the loop's `Waker`; the peer then lives in the
//! shared peer table, routed by the origin's address.
//!
//! The origin serves a pull as a WHEP viewer fed by a relay tap (`Viewer::pull_node`), lets it
//! go when its stream ends or its node leaves the directory.
//!
//! A pull ends a grace period after the last viewer here leaves, when the directory no longer
//! shows the stream on its origin (its viewers see "offline", as on the origin), or when the
//! stream there restarted (a new pull follows at once, and the viewers resume).

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftl_proto::ChannelId;
use log::{info, warn};
use mio::Waker;
use relay_core::{LayerId, VideoCodec, MAX_LAYERS};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

use super::peers::{Role, Signal};
use super::whip::Publisher;
use crate::client::http::request_to;
use crate::client::sdp::udp_candidate;
use crate::client::tls::TlsClient;
use crate::client::url::endpoint;
use crate::server::Server;

/// The header naming the pulling node (the origin lets its pull go when the node leaves the
/// directory, instead of waiting for ICE to give up).
pub(in crate::server) const NODE_HEADER: &str = "X-ITG-Node";
/// The header of a pull's offer that pins it to one video layer of a simulcast (the origin's
/// layer id), for an edge that carries every layer.
pub(in crate::server) const LAYER_HEADER: &str = "X-ITG-Layer";
/// The header of a WHEP answer listing the stream's video layers, smallest picture first
/// (`0,2,1`), when it has more than one: what an edge pulls besides the top one.
pub(in crate::server) const LAYERS_HEADER: &str = "X-ITG-Layers";

/// What an edge's pull asks of the origin: the pulling node, and the one layer it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::server) struct PullAsk {
    /// The node's id (empty when its offer did not say).
    pub(in crate::server) node: String,
    /// The layer it carries (`None`: the top one, following it, with the audio).
    pub(in crate::server) layer: Option<relay_core::LayerId>,
}

/// How long a pull outlives the last viewer here.
pub(in crate::server) const GRACE: Duration = Duration::from_secs(10);
/// After a failed pull, the next try waits this long.
const RETRY: Duration = Duration::from_secs(2);
/// An origin that has not answered a pull's offer by then is given up on (and tried again).
const ANSWER_DEADLINE: Duration = Duration::from_secs(15);

/// A pull's own UDP socket. An origin serves every pull from its one WebRTC port, so two pulls
/// of one edge from one origin would share a 5-tuple on the edge's shared socket, and their
/// datagrams (DTLS, SRTP with each pull's own keys) could not be told apart by address: each
/// pull has a port of its own instead.
pub(in crate::server) struct OwnSocket {
    pub(in crate::server) socket: mio::net::UdpSocket,
    pub(in crate::server) token: mio::Token,
    pub(in crate::server) local: std::net::SocketAddr,
}

impl OwnSocket {
    /// Sends one datagram (a pull sends little: STUN, RTCP).
    pub(in crate::server) fn send(&self, to: std::net::SocketAddr, bytes: &[u8]) {
        let to = crate::dual_stack::for_socket(to, self.local.is_ipv6());
        if let Err(e) = self.socket.send_to(bytes, to) {
            log::debug!("pull socket {}: send to {to}: {e}", self.local);
        }
    }
}

/// One more layer of a simulcast pulled beside the main pull (which carries the top layer and
/// the audio), so viewers here choose among the same layers as at the origin.
pub(in crate::server) struct LayerPull {
    /// The layer's id at the origin (what the offer asks for), and its id here: the same, so a
    /// layer has one id across the cluster (the main pull's video takes the top layer's).
    origin_layer: LayerId,
    pub(in crate::server) here: LayerId,
    pub(in crate::server) peer: Option<u64>,
}

/// One channel pulled (or being pulled) from its origin.
pub(in crate::server) struct Pull {
    /// The origin node and its stream's epoch when the pull began.
    origin: String,
    epoch: u64,
    /// The peer in the peer table, once the origin answered.
    pub(in crate::server) peer: Option<u64>,
    /// Since when no viewer here watches it.
    idle_since: Option<Instant>,
    /// When the offer went out.
    asked: Instant,
    /// The other layers of a simulcast, pulled one each.
    pub(in crate::server) layers: Vec<LayerPull>,
}

/// What a signalling thread hands back.
struct Signalled {
    channel: ChannelId,
    epoch: u64,
    /// The layer (origin's id) a pull of one layer asked for.
    layer: Option<LayerId>,
    result: Result<Answered, String>,
}

/// The origin's answer to a pull.
struct Answered {
    /// The `Rtc` that made the offer.
    rtc: Rtc,
    sdp: String,
    /// The session's `Location` at the origin.
    location: Option<String>,
    /// The codec the origin says the stream is in.
    codec: Option<VideoCodec>,
    /// The stream's layers at the origin, smallest first (empty: one layer).
    layers: Vec<LayerId>,
}

/// The pulls of this node.
pub(in crate::server) struct Pulls {
    pub(in crate::server) map: HashMap<ChannelId, Pull>,
    /// Channels whose last try failed, and when to try again.
    retry_at: HashMap<ChannelId, Instant>,
    tx: Sender<Signalled>,
    rx: Receiver<Signalled>,
    /// Whom `https://` origins may be certified by (the public roots, `--cluster-ca`).
    pub(in crate::server) tls: Option<TlsClient>,
}

impl Default for Pulls {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel();
        Pulls {
            map: HashMap::new(),
            retry_at: HashMap::new(),
            tx,
            rx,
            tls: None,
        }
    }
}

impl Pulls {
    /// Whether `peer` is a pull (its stream is not this node's to announce).
    pub(in crate::server) fn is_pull_peer(&self, peer: u64) -> bool {
        self.map
            .values()
            .any(|p| p.peer == Some(peer) || p.layers.iter().any(|l| l.peer == Some(peer)))
    }

    /// The pull that carries `layer` of `channel` on its own (not the main one).
    pub(in crate::server) fn layer_peer(&self, channel: ChannelId, layer: LayerId) -> Option<u64> {
        self.map
            .get(&channel)?
            .layers
            .iter()
            .find(|l| l.here == layer)
            .and_then(|l| l.peer)
    }
}

/// The WHEP exchange with the origin, on its own thread: an offer to receive H.264 and Opus,
/// the cluster token as Bearer, the answer accepted. An `https://` origin's certificate is
/// checked against its URL's host with `tls`.
fn signal(
    origin: &str,
    channel: ChannelId,
    token: &str,
    node: &str,
    tls: Option<&TlsClient>,
    layer: Option<LayerId>,
) -> Result<Answered, String> {
    let to = endpoint(origin).map_err(|e| e.to_string())?;
    // The edge is the DTLS client here; its DTLS is the server's (OpenSSL) as on the origin.
    // Every codec the relay passes through: the origin's stream may be in any of them.
    let mut rtc = Rtc::builder()
        .set_crypto_provider(crate::dtls::provider())
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_h264(true)
        .enable_h265(true)
        .enable_vp8(true)
        .enable_vp9(true)
        .enable_av1(true)
        .build(Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    // A pull of one more layer is video only: the main pull carries the audio.
    if layer.is_none() {
        api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    }
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let auth = format!("Bearer {token}");
    let layer_value = layer.map(|l| l.0.to_string());
    let mut headers = vec![
        ("Content-Type", "application/sdp"),
        ("Authorization", auth.as_str()),
        (NODE_HEADER, node),
    ];
    if let Some(l) = &layer_value {
        headers.push((LAYER_HEADER, l.as_str()));
    }
    let r = request_to(
        &to,
        tls,
        "POST",
        &format!("/whep/{channel}"),
        &headers,
        offer.to_sdp_string().as_bytes(),
    )
    .map_err(|e| format!("{origin}: {e}"))?;
    if r.status != 201 {
        return Err(format!(
            "{origin} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body).trim()
        ));
    }
    let sdp = String::from_utf8(r.body.clone()).map_err(|_| "the answer is not UTF-8")?;
    let answer = SdpAnswer::from_sdp_string(&sdp).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;
    let codec = r.header(super::peers::CODEC_HEADER).and_then(|name| {
        VideoCodec::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name.trim()))
    });
    let layers = r
        .header(LAYERS_HEADER)
        .map(parse_layers)
        .unwrap_or_default();
    Ok(Answered {
        rtc,
        sdp,
        location: r.header("Location").map(str::to_owned),
        codec,
        layers,
    })
}

/// The origin's list of layers (`0,2,1`): at most [`MAX_LAYERS`] distinct ids below it, or
/// none when anything in it is off.
fn parse_layers(header: &str) -> Vec<LayerId> {
    let mut out: Vec<LayerId> = Vec::new();
    for part in header.split(',') {
        let Some(id) = part
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|i| usize::from(*i) < MAX_LAYERS)
        else {
            return Vec::new();
        };
        if out.contains(&LayerId(id)) || out.len() >= MAX_LAYERS {
            return Vec::new();
        }
        out.push(LayerId(id));
    }
    out
}

impl Server {
    /// A viewer here wants `channel`: pull it from its origin if it lives elsewhere.
    pub(in crate::server) fn pull_wanted(&mut self, channel: ChannelId, now: Instant) {
        if self.relay.is_live(channel) || self.pulls.map.contains_key(&channel) {
            return;
        }
        if self.pulls.retry_at.get(&channel).is_some_and(|t| now < *t) {
            return;
        }
        let Some((origin_id, origin_url, epoch)) = self.cluster_origin_elsewhere(channel) else {
            return;
        };
        let Some(token) = self.args.cluster_token.clone() else {
            warn!("channel {channel}: lives on {origin_url}, but no --cluster-token is set to pull it");
            self.pulls
                .retry_at
                .insert(channel, now + Duration::from_secs(60));
            return;
        };
        info!("channel {channel}: pulling it from {origin_url}");
        self.pulls.map.insert(
            channel,
            Pull {
                origin: origin_id,
                epoch,
                peer: None,
                idle_since: None,
                asked: now,
                layers: Vec::new(),
            },
        );
        if !self.pull_signal(channel, origin_url, token, epoch, None) {
            self.pulls.map.remove(&channel);
        }
    }

    /// Starts the WHEP exchange of a pull (of one layer, or the main one) on its own thread;
    /// whether the thread started.
    fn pull_signal(
        &mut self,
        channel: ChannelId,
        origin_url: String,
        token: String,
        epoch: u64,
        layer: Option<LayerId>,
    ) -> bool {
        let tx = self.pulls.tx.clone();
        let waker: Arc<Waker> = self.waker.clone();
        let node = self
            .cluster
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default();
        let tls = self.pulls.tls.clone();
        let spawned = std::thread::Builder::new()
            .name("pull".into())
            .spawn(move || {
                // A panic in the exchange (str0m on the origin's answer) is a failed pull, not
                // a pull waiting forever.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    signal(&origin_url, channel, &token, &node, tls.as_ref(), layer)
                }))
                .unwrap_or_else(|_| Err("the exchange with the origin panicked".to_owned()));
                let _ = tx.send(Signalled {
                    channel,
                    epoch,
                    layer,
                    result,
                });
                let _ = waker.wake();
            });
        spawned.is_ok()
    }

    /// Answers from the signalling threads (the loop was woken).
    pub(in crate::server) fn pulls_ready(&mut self, now: Instant) {
        while let Ok(s) = self.pulls.rx.try_recv() {
            if let Some(layer) = s.layer {
                self.layer_pull_ready(s.channel, s.epoch, layer, s.result, now);
                continue;
            }
            let current = self
                .pulls
                .map
                .get(&s.channel)
                .is_some_and(|p| p.epoch == s.epoch && p.peer.is_none());
            match s.result {
                Err(e) => {
                    warn!("channel {}: pull failed: {e}", s.channel);
                    if current {
                        self.pulls.map.remove(&s.channel);
                        self.pulls.retry_at.insert(s.channel, now + RETRY);
                    }
                }
                Ok(a) if current => {
                    let layers = a.layers.clone();
                    self.pull_connect(s.channel, a, None, now);
                    self.pull_layers(s.channel, &layers);
                }
                Ok(_) => {}
            }
        }
    }

    /// The main pull is up and the origin's stream has several layers: one pull more for each
    /// but the top one (which the main pull carries), each pinned to its layer at the origin.
    fn pull_layers(&mut self, channel: ChannelId, layers: &[LayerId]) {
        let Some((_, top)) = layers.split_last() else {
            return;
        };
        if top.is_empty() {
            return;
        }
        let origin = self.cluster_origin_elsewhere(channel);
        let token = self.args.cluster_token.clone();
        let (Some(p), Some((_, url, _)), Some(token)) =
            (self.pulls.map.get_mut(&channel), origin, token)
        else {
            return;
        };
        if p.peer.is_none() || !p.layers.is_empty() {
            return;
        }
        let epoch = p.epoch;
        for l in top {
            p.layers.push(LayerPull {
                origin_layer: *l,
                here: *l,
                peer: None,
            });
        }
        info!(
            "channel {channel}: {} layers at the origin, pulling each",
            layers.len()
        );
        for l in top {
            self.pull_signal(channel, url.clone(), token.clone(), epoch, Some(*l));
        }
    }

    /// The origin answered a pull of one layer.
    fn layer_pull_ready(
        &mut self,
        channel: ChannelId,
        epoch: u64,
        layer: LayerId,
        result: Result<Answered, String>,
        now: Instant,
    ) {
        let wanted = self.pulls.map.get(&channel).is_some_and(|p| {
            p.epoch == epoch
                && p.peer.is_some()
                && p.layers
                    .iter()
                    .any(|l| l.origin_layer == layer && l.peer.is_none())
        });
        match result {
            Err(e) => {
                warn!("channel {channel}: pull of layer {layer} failed: {e}");
                if let Some(p) = self.pulls.map.get_mut(&channel) {
                    p.layers
                        .retain(|l| l.origin_layer != layer || l.peer.is_some());
                }
            }
            Ok(a) if wanted => self.pull_connect(channel, a, Some(layer), now),
            Ok(a) => {
                // Too late (the pull ended): let the origin's session go.
                let url = self
                    .cluster_origin_elsewhere(channel)
                    .map(|(_, url, _)| url);
                self.pull_delete_at(url, a.location);
            }
        }
    }

    /// A pull that could not be set up: the main one is tried again later; one of a layer is
    /// left out (the viewers here choose among the others).
    fn pull_failed(&mut self, channel: ChannelId, layer: Option<LayerId>, now: Instant) {
        match layer {
            None => {
                self.pulls.map.remove(&channel);
                self.pulls.retry_at.insert(channel, now + RETRY);
            }
            Some(layer) => {
                if let Some(p) = self.pulls.map.get_mut(&channel) {
                    p.layers.retain(|l| l.origin_layer != layer);
                }
            }
        }
    }

    /// The origin answered: the pull joins the peer table as the channel's publisher, or, for
    /// a pull of one layer, as the feeder of that layer.
    fn pull_connect(
        &mut self,
        channel: ChannelId,
        answered: Answered,
        layer: Option<LayerId>,
        now: Instant,
    ) {
        let Answered {
            mut rtc,
            sdp,
            location,
            codec,
            layers,
        } = answered;
        let sdp = sdp.as_str();
        let Some(origin) = udp_candidate(sdp) else {
            warn!("channel {channel}: the origin's answer has no UDP candidate");
            self.pull_failed(channel, layer, now);
            return;
        };
        let ip = self.viewers.destination_for(origin, self.addrs.webrtc).ip();
        let socket = match crate::server::udp_socket(std::net::SocketAddr::new(ip, 0))
            .and_then(|s| s.local_addr().map(|a| (s, a)))
        {
            Ok(x) => x,
            Err(e) => {
                warn!("channel {channel}: no socket for the pull: {e}");
                self.pull_failed(channel, layer, now);
                return;
            }
        };
        if let Ok(c) = Candidate::host(socket.1, "udp") {
            rtc.add_local_candidate(c);
        }
        let mut publisher = Publisher::negotiated(&rtc, sdp, origin, codec);
        if !publisher.has_media() {
            warn!("channel {channel}: the origin offered nothing this node can relay");
            self.pull_failed(channel, layer, now);
            return;
        }
        let here = layer.and_then(|l| {
            self.pulls
                .map
                .get(&channel)?
                .layers
                .iter()
                .find(|x| x.origin_layer == l)
                .map(|x| x.here)
        });
        publisher.feeds_layer = here;
        if layer.is_none() && layers.len() > 1 {
            // The main pull carries the top layer: under the origin's id for it.
            publisher.video_layer = layers.last().copied();
        }
        let id = self.viewer_insert(
            rtc,
            channel,
            Signal::Pull(location.clone()),
            None,
            None,
            now,
        );
        let (mut udp, local) = socket;
        let token = self.token(crate::server::Slot::PullUdp(id));
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut udp, token, mio::Interest::READABLE)
        {
            warn!("channel {channel}: pull socket: {e}");
        }
        if let Some(v) = self.viewers.map.get_mut(&id) {
            v.role = Role::Publisher(Box::new(publisher));
            v.own_socket = Some(Box::new(OwnSocket {
                socket: udp,
                token,
                local,
            }));
            v.note_remote(origin);
        }
        if let Some(p) = self.pulls.map.get_mut(&channel) {
            match layer {
                None => p.peer = Some(id),
                Some(l) => {
                    if let Some(x) = p.layers.iter_mut().find(|x| x.origin_layer == l) {
                        x.peer = Some(id);
                    }
                }
            }
        }
        self.viewer_drive(id, now);
    }

    /// Datagrams on a pull's own socket, for its peer only.
    pub(in crate::server) fn pull_read(&mut self, id: u64, now: Instant) {
        for _ in 0..crate::server::READ_BUDGET {
            let Some(v) = self.viewers.map.get_mut(&id) else {
                return;
            };
            let Some(s) = v.own_socket.as_ref() else {
                return;
            };
            let (n, source) = match s.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => (n, crate::dual_stack::canonical(from)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("pull {id}: recv: {e}");
                    return;
                }
            };
            let destination = s.local;
            let Ok(contents) = self.buf.get(..n).unwrap_or_default().try_into() else {
                continue;
            };
            let input = str0m::Input::Receive(
                now,
                str0m::net::Receive {
                    proto: str0m::net::Protocol::Udp,
                    source,
                    destination,
                    contents,
                },
            );
            self.counters.webrtc_datagrams += 1;
            // No arrival stamps on a pull's socket: its media counts as read on arrival.
            self.rtc_waited = std::time::Duration::ZERO;
            match super::peers::guarded(|| v.rtc.handle_input(input)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::debug!("pull {id}: input: {e}"),
                Err(p) => {
                    warn!("pull {id}: str0m panicked on input: {p}");
                    self.viewer_drop(id, "internal error");
                    return;
                }
            }
            self.viewer_drive(id, now);
        }
        if let Some(t) = self
            .viewers
            .map
            .get(&id)
            .and_then(|v| v.own_socket.as_ref())
            .map(|s| s.token)
        {
            self.again.push(t);
        }
    }

    /// The pull's peer left the table (the origin let go, ICE failed, or it was ended here).
    pub(in crate::server) fn pull_gone(&mut self, channel: ChannelId, id: u64) {
        let Some(p) = self.pulls.map.get_mut(&channel) else {
            return;
        };
        if p.peer == Some(id) {
            // The main pull: its layers go with it.
            let layers: Vec<u64> = p.layers.drain(..).filter_map(|l| l.peer).collect();
            self.pulls.map.remove(&channel);
            for l in layers {
                self.viewer_drop(l, "its main pull ended");
            }
        } else {
            p.layers.retain(|l| l.peer != Some(id));
        }
    }

    /// Tells the origin at once that a pull's session (at `path` on the node at `url`) is
    /// over, instead of letting its peer time out; on a short-lived thread.
    fn pull_delete_at(&self, url: Option<String>, path: Option<String>) {
        let (Some(url), Some(path)) = (url, path) else {
            return;
        };
        let tls = self.pulls.tls.clone();
        let _ = std::thread::Builder::new()
            .name("pull-end".into())
            .spawn(move || {
                if let Ok(to) = endpoint(&url) {
                    let _ = request_to(&to, tls.as_ref(), "DELETE", &path, &[], b"");
                }
            });
    }

    /// Ends a pull here, with its pulls of more layers; its stream ends (viewers see
    /// "offline" and stay for the next).
    pub(in crate::server) fn pull_end(&mut self, channel: ChannelId, why: &str) {
        let Some(p) = self.pulls.map.remove(&channel) else {
            return;
        };
        info!("channel {channel}: pull ends ({why})");
        let url = self.cluster_node_url(&p.origin);
        let peers = p.layers.iter().filter_map(|l| l.peer).chain(p.peer);
        for id in peers {
            let location = match self.viewers.map.get(&id).map(|v| &v.signal) {
                Some(Signal::Pull(l)) => l.clone(),
                _ => None,
            };
            self.viewer_drop(id, why);
            self.pull_delete_at(url.clone(), location);
        }
    }

    /// After each directory snapshot and every second: pulls start for channels viewers here
    /// wait for, and end when their origin's stream is gone or restarted, or after the grace
    /// period without viewers.
    pub(in crate::server) fn pulls_review(&mut self, now: Instant) {
        let channels: Vec<ChannelId> = self.pulls.map.keys().copied().collect();
        for c in channels {
            let origin = self.cluster_origin_elsewhere(c);
            let Some(p) = self.pulls.map.get_mut(&c) else {
                continue;
            };
            if p.peer.is_none() && now.saturating_duration_since(p.asked) > ANSWER_DEADLINE {
                warn!("channel {c}: the origin did not answer the pull in time");
                self.pulls.map.remove(&c);
                self.pulls.retry_at.insert(c, now + RETRY);
                continue;
            }
            match origin {
                None => {
                    self.pull_end(c, "the stream ended on its origin");
                    continue;
                }
                Some((node, _, epoch)) if node != p.origin || epoch != p.epoch => {
                    self.pull_end(c, "the stream restarted on its origin");
                    continue;
                }
                Some(_) => {}
            }
            let viewers = self.relay.channel_viewers(c);
            if viewers > 0 {
                p.idle_since = None;
            } else if p.idle_since.get_or_insert(now).elapsed() >= GRACE {
                self.pull_end(c, "no viewers left here");
            }
        }
        // Viewers waiting here for a stream that lives elsewhere.
        let waiting: Vec<ChannelId> = self
            .relay
            .channels()
            .filter(|c| !self.relay.is_live(*c) && self.relay.channel_viewers(*c) > 0)
            .collect();
        for c in waiting {
            self.pull_wanted(c, now);
        }
    }

    // The origin's side: the pulls it serves.

    /// Pulls of nodes no longer in the directory are let go at once (a dead edge's peer would
    /// otherwise wait for ICE to give up).
    pub(in crate::server) fn pulls_served_review(&mut self, nodes: &[String]) {
        let gone: Vec<u64> = self
            .viewers
            .map
            .iter()
            .filter(|(_, v)| {
                v.pull_node
                    .as_ref()
                    .is_some_and(|n| !n.is_empty() && !nodes.contains(n))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            self.viewer_drop(id, "its node left the cluster");
        }
    }

    /// `channel`'s stream ended: the edges pulling it are let go (their taps are gone; an
    /// edge pulls again when the directory shows the stream back).
    pub(in crate::server) fn pulls_served_end(&mut self, channel: ChannelId) {
        let ids: Vec<u64> = self
            .viewers
            .map
            .iter()
            .filter(|(_, v)| v.is_pull() && v.channel == channel)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.viewer_drop(id, "the pulled stream ended");
        }
    }
}
