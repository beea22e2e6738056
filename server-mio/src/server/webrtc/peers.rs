//! The table of WebRTC peers: one str0m `Rtc` each, all on one UDP socket. A peer is a viewer
//! (fed by the relay) or a WHIP publisher (feeding it, see `whip.rs`); what differs is its
//! [`Role`], not its routing.
//!
//! Datagrams are routed by source address (known peers) or, for STUN from a new address, by
//! the local ICE username fragment in the request; never by asking every `Rtc`. Each viewer's
//! next timeout sits in a heap, so only viewers that are due or got input are touched. Every
//! call into a viewer's `Rtc` is isolated with `catch_unwind`: a str0m bug drops that viewer,
//! not the loop.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use ftl_proto::ChannelId;
use log::{debug, info, warn};
use mio::Token;
use rand::distr::{Alphanumeric, SampleString};
use relay_core::{
    EndReason, Event as RelayEvent, Forward, MediaKind as RelayKind, Output, SkipReason,
    VideoCodec, ViewerId,
};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::ice::StunMessage;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output as RtcOutput, Rtc};

use super::pool::ViewerKind;
use super::whip::{check_offer, Offerer};
use crate::server::http::{Reply, Response};
use crate::server::{Server, READ_BUDGET};

/// Datagrams gathered before the send batch goes out while viewers are being driven.
const SEND_AHEAD: usize = 64;
/// The response header of a WHEP answer that names the stream's video codec (an edge's pull
/// relays the stream as this; the answer may name other codecs too).
pub(in crate::server) const CODEC_HEADER: &str = "ITG-Video-Codec";
/// Packets written to one viewer before it is driven at once: a GOP replay (hundreds of
/// packets) then passes through str0m's send queue in slices; that queue keeps the capacity
/// of its longest moment for the viewer's life (~0.4 KB a packet).
const WRITE_AHEAD: usize = 32;

/// Timeouts already due that one drive of a viewer feeds straight back (see `viewer_drive`);
/// past this many the rest wait for the loop's next turn, so no peer holds the loop.
const IMMEDIATE_TIMEOUTS: usize = 256;

/// The share of a viewer's video bytes a trial's padding may take besides its repair budget
/// (see `Viewer::rtx_cap`): the padding fills the link to 1.25 times the layer above, which
/// runs at about twice the rate of the one the viewer is on.
const TRIAL_RTX_ALLOWANCE: f32 = 0.6;

/// How long a paced `Rtc` that asked for its clock at once but sent nothing waits for it.
const PACED_IDLE_WAIT: Duration = Duration::from_millis(1);

/// How a viewer was signalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::server) enum Signal {
    /// WHEP session id (the `Location`'s last segment).
    Whep(String),
    /// WebSocket connection.
    Ws(Token),
    /// WHIP session id (a publisher's `Location`).
    Whip(String),
    /// This node's pull of a channel from its origin (the origin's session URL path).
    Pull(Option<String>),
}

/// What a peer is to the relay.
pub(in crate::server) enum Role {
    /// Watches a channel: the relay's packets go to it.
    Viewer,
    /// Publishes to a channel over WHIP: its packets go to the relay.
    Publisher(Box<super::whip::Publisher>),
}

pub(in crate::server) struct Viewer {
    pub(in crate::server) rtc: Rtc,
    pub(in crate::server) channel: ChannelId,
    relay_id: Option<ViewerId>,
    video: Option<(Mid, Pt)>,
    audio: Option<(Mid, Pt)>,
    /// The send streams' SSRCs (video, audio), found by mid on the first write: str0m finds a
    /// stream by SSRC in a map, by mid only by walking its streams and comparing.
    tx_ssrc: (Option<Ssrc>, Option<Ssrc>),
    /// When the video RTX history is started afresh, after a GOP replay grew it (see
    /// `pool::RTX_RESET_AFTER_REPLAY`).
    rtx_reset: Option<Instant>,
    /// How much of what it is sent may be retransmissions, from its receiver's loss reports
    /// and the repair it takes (see `relay_core::repair`).
    repair: relay_core::RepairBudget,
    /// Its video and video-retransmission SSRCs, and the datagrams of each sent since its
    /// last statistics: the repair it took.
    repair_ssrcs: Option<(u32, u32)>,
    repair_sent: (u64, u64),
    /// Packets handed to it since it was last driven.
    unsent: usize,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    pub(in crate::server) created: Instant,
    connected_at: Option<Instant>,
    /// Whether the last input came over ICE-TCP, and whether the session connected over it
    /// (DTLS completes on the selected pair, so the input before `Connected` tells).
    last_tcp: bool,
    tcp: bool,
    pub(in crate::server) signal: Signal,
    /// An edge node's pull of this channel (a `WHEP` offer with the cluster token), and the
    /// pulling node's id as its offer said: fed by a relay tap, not counted as audience,
    /// dropped when the stream ends (see `pull.rs`).
    pub(in crate::server) pull_node: Option<String>,
    /// The one video layer a pull carries (an edge that carries every layer of a simulcast).
    pub(in crate::server) pull_layer: Option<relay_core::LayerId>,
    timeout: Instant,
    pending_offer: Option<SdpPendingOffer>,
    pub(in crate::server) role: Role,
    /// While it has not connected: the address group it is counted under (see `admission`).
    origin: Option<IpAddr>,
    /// A socket of its own (an edge's pull: see `pull.rs`), instead of the shared one.
    pub(in crate::server) own_socket: Option<Box<super::pull::OwnSocket>>,
    /// Its bandwidth estimate, where its `Rtc` makes one (a viewer of a simulcast stream: see
    /// `pool::ViewerKind`).
    pub(in crate::server) estimate: Option<super::estimate::Estimate>,
    /// Its liveness by its traffic, for stacks that send no binding requests once connected.
    pub(in crate::server) keepalive: super::keepalive::Keepalive,
    /// Its VP8 picture numbering across layer switches, where the stream is VP8.
    vp8: Option<super::vp8::Vp8Ids>,
}

impl Viewer {
    /// Whether this peer is an edge node's pull of its channel.
    pub(in crate::server) fn is_pull(&self) -> bool {
        self.pull_node.is_some()
    }

    /// Where its media comes from, known ahead (a pull's origin).
    pub(in crate::server) fn note_remote(&mut self, addr: SocketAddr) {
        if !self.addrs.contains(&addr) {
            self.addrs.push(addr);
        }
    }

    /// Whether its session connected (ICE and DTLS).
    pub(in crate::server) fn connected(&self) -> bool {
        self.connected_at.is_some()
    }

    /// An input was taken from UDP or from an ICE-TCP connection.
    pub(in crate::server) fn note_input(&mut self, tcp: bool) {
        self.last_tcp = tcp;
    }

    /// How much of its video may be retransmissions (str0m drops queued resends past it): its
    /// repair budget, and during a trial of the layer above as much more as the trial's
    /// padding takes (str0m pads with retransmissions, and counts them against the same cap:
    /// without the allowance a trial would starve the repair of the media it competes with).
    pub(in crate::server) fn rtx_cap(&self) -> f32 {
        let share = self.repair.share();
        if self.estimate.as_ref().is_some_and(|e| e.padding()) {
            (share + TRIAL_RTX_ALLOWANCE).min(0.95)
        } else {
            share
        }
    }

    /// Starts its video send stream's RTX history afresh with the cap in force
    /// ([`Viewer::rtx_cap`]; see `pool::viewer_video_tx`).
    pub(in crate::server) fn renew_video_tx(&mut self) {
        let (Some(ssrc), cap) = (self.tx_ssrc.0, self.rtx_cap()) else {
            return;
        };
        let rtc = &mut self.rtc;
        let _ = guarded(|| {
            if let Some(tx) = rtc.direct_api().stream_tx(&ssrc) {
                super::pool::viewer_video_tx(tx, cap);
            }
        });
    }

    /// Does [`Viewer::renew_video_tx`] when it is next driven at or after `at`.
    pub(in crate::server) fn renew_video_tx_at(&mut self, at: Instant) {
        self.rtx_reset = Some(at);
    }

    /// Its id in the relay, once it connected (viewers only).
    pub(in crate::server) fn relay_id(&self) -> Option<ViewerId> {
        self.relay_id
    }

    /// The address its media comes from (the latest ICE nominated), once it has sent any.
    pub(in crate::server) fn remote(&self) -> Option<SocketAddr> {
        self.addrs.last().copied()
    }
}

pub(in crate::server) enum Pending {
    Whep {
        token: Token,
        channel: ChannelId,
        offer: SdpOffer,
        /// An edge's pull: the node's id and the layer it asks for.
        pull: Option<super::pull::PullAsk>,
        /// The address group it is counted under (see `admission`).
        origin: Option<IpAddr>,
    },
    Ws {
        token: Token,
        channel: ChannelId,
        origin: Option<IpAddr>,
    },
}

impl Pending {
    fn token(&self) -> Token {
        match self {
            Pending::Whep { token, .. } | Pending::Ws { token, .. } => *token,
        }
    }

    fn origin(&self) -> Option<IpAddr> {
        match self {
            Pending::Whep { origin, .. } | Pending::Ws { origin, .. } => *origin,
        }
    }
}

/// Hashes a peer id (a counter the server assigns, never a peer's input) with one
/// multiplication: the map is read for every packet written to a viewer, where SipHash's
/// resistance to chosen keys buys nothing.
#[derive(Default)]
pub(in crate::server) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing: spreads consecutive ids over the high bits the table uses.
        self.0 = id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Peers by id.
pub(in crate::server) type PeerMap = HashMap<u64, Viewer, std::hash::BuildHasherDefault<IdHasher>>;

/// All viewers and their indexes.
pub(in crate::server) struct Viewers {
    pub(in crate::server) map: PeerMap,
    by_addr: HashMap<SocketAddr, u64>,
    by_ufrag: HashMap<String, u64>,
    /// Relay viewer (by its slot) to peer id: looked up for every forwarded packet.
    by_relay: Vec<Option<(ViewerId, u64)>>,
    pub(in crate::server) by_whep: HashMap<String, u64>,
    /// WHIP session id to publisher.
    pub(in crate::server) by_whip: HashMap<String, u64>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    dirty: Vec<u64>,
    /// The relay's packets for viewers gathered while it is drained, then written viewer by
    /// viewer (see [`Server::viewers_forward`]).
    forwards: Vec<Forward>,
    pub(in crate::server) pending: VecDeque<Pending>,
    pub(in crate::server) candidates: Vec<SocketAddr>,
    /// Fair shares of the table for sessions that have not connected.
    pub(in crate::server) admission: super::admission::Admission,
    /// Where each network's viewers last were among a simulcast's layers.
    pub(in crate::server) links: super::layers::LinkMemory,
    next_id: u64,
}

/// The host candidates advertised to viewers: the bind address, or every interface address
/// for a wildcard bind (of both families for `::`, IPv4 for `0.0.0.0`; IPv6 link-local
/// addresses need a scope and are left out); plus the public `--ip`s.
pub(in crate::server) fn host_candidates(
    bind: IpAddr,
    port: u16,
    public: &[IpAddr],
) -> Vec<SocketAddr> {
    let mut ips: Vec<IpAddr> = Vec::new();
    let dual = crate::dual_stack::is_dual(bind);
    if bind.is_unspecified() {
        if let Ok(ifs) = if_addrs::get_if_addrs() {
            for i in ifs {
                let ip = i.ip();
                let family = dual || ip.is_ipv4() == bind.is_ipv4();
                let link_local =
                    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80);
                if family && !link_local && !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        if ips.is_empty() {
            ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
    } else {
        ips.push(bind);
    }
    for p in public {
        if !ips.contains(p) {
            ips.push(*p);
        }
    }
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect()
}

impl Viewers {
    pub(in crate::server) fn new(
        candidates: Vec<SocketAddr>,
        admission: super::admission::Admission,
    ) -> Self {
        Viewers {
            map: PeerMap::default(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_relay: Vec::new(),
            by_whep: HashMap::new(),
            by_whip: HashMap::new(),
            heap: BinaryHeap::new(),
            dirty: Vec::new(),
            forwards: Vec::new(),
            pending: VecDeque::new(),
            candidates,
            admission,
            links: super::layers::LinkMemory::default(),
            next_id: 1,
        }
    }

    fn relay_unlink(&mut self, rid: ViewerId) {
        if let Some(e) = self.by_relay.get_mut(rid.slot()) {
            if e.is_some_and(|(r, _)| r == rid) {
                *e = None;
            }
        }
    }

    /// The peer a relay viewer id stands for.
    fn by_relay(&self, rid: ViewerId) -> Option<u64> {
        match self.by_relay.get(rid.slot()) {
            Some(Some((r, id))) if *r == rid => Some(*id),
            _ => None,
        }
    }

    pub(in crate::server) fn next_timeout(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    pub(in crate::server) fn len(&self) -> usize {
        self.map.len()
    }

    /// Viewers receiving media (edges' pulls are not audience).
    pub(in crate::server) fn connected(&self) -> usize {
        self.map
            .values()
            .filter(|v| v.relay_id.is_some() && !v.is_pull())
            .count()
    }

    /// Edges' pulls being served.
    pub(in crate::server) fn pulls(&self) -> usize {
        self.map
            .values()
            .filter(|v| v.relay_id.is_some() && v.is_pull())
            .count()
    }

    pub(in crate::server) fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Connected viewers whose media goes over ICE-TCP, in all or of one channel.
    pub(in crate::server) fn connected_tcp(&self, channel: Option<ChannelId>) -> usize {
        self.map
            .values()
            .filter(|v| v.relay_id.is_some() && v.tcp)
            .filter(|v| channel.is_none_or(|c| v.channel == c))
            .count()
    }

    /// The peer a STUN request is for, by the local half of its ICE username: how a packet
    /// from an address (UDP) or a connection (TCP) not seen before finds its peer.
    pub(in crate::server) fn route_stun(&self, packet: &[u8]) -> Option<u64> {
        let m = StunMessage::parse(packet).ok()?;
        let (local, _) = m.split_username()?;
        self.by_ufrag.get(local).copied()
    }

    /// The local address a datagram from `source` was sent to, as str0m's ICE-lite wants it:
    /// the advertised candidate of the same scope (loopback to loopback).
    /// Packets from `addr` go to peer `id` (a pull: the origin answers from there).
    /// The server's own address that a peer at `source` reaches (one of the candidates).
    pub(in crate::server) fn destination_for(
        &self,
        source: SocketAddr,
        fallback: SocketAddr,
    ) -> SocketAddr {
        let same_scope = |c: &&SocketAddr| {
            c.ip().is_loopback() == source.ip().is_loopback() && c.is_ipv4() == source.is_ipv4()
        };
        self.candidates
            .iter()
            .find(same_scope)
            .copied()
            .unwrap_or(fallback)
    }
}

/// Records that relay viewer `rid` is peer `id` (its slot's entry).
fn relay_link(table: &mut Vec<Option<(ViewerId, u64)>>, rid: ViewerId, id: u64) {
    let slot = rid.slot();
    if table.len() <= slot {
        table.resize(slot + 1, None);
    }
    if let Some(e) = table.get_mut(slot) {
        *e = Some((rid, id));
    }
}

/// The `(mid, kind)` of each audio and video m-line of an SDP that is not rejected (port 0).
pub(in crate::server) fn mids_from_sdp(sdp: &str) -> Vec<(String, MediaKind)> {
    let mut out = Vec::new();
    let mut kind: Option<MediaKind> = None;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            let mut words = m.split(' ');
            let k = words.next();
            let port = words.next();
            kind = match (k, port) {
                (_, Some("0")) => None,
                (Some("video"), _) => Some(MediaKind::Video),
                (Some("audio"), _) => Some(MediaKind::Audio),
                _ => None,
            };
        } else if let (Some(mid), Some(k)) = (line.strip_prefix("a=mid:"), kind) {
            out.push((mid.trim().to_owned(), k));
        }
    }
    out
}

/// An answer with its data channel section refused (port 0, out of the BUNDLE group, RFC 8843
/// section 7.3.3). Peers here carry media only: DTLS is their key exchange and its session
/// is dropped once the keys are out (see `crate::dtls`), so a data channel could never open;
/// refusing it in the answer tells the peer so at once instead of leaving it waiting.
/// str0m answers every `m=application` it is offered.
pub(in crate::server) fn refuse_data_channels(answer: &str) -> String {
    let mut refused: Vec<String> = Vec::new();
    let mut in_app = false;
    for line in answer.lines() {
        if line.starts_with("m=") {
            in_app = line.starts_with("m=application");
        } else if let (true, Some(mid)) = (in_app, line.strip_prefix("a=mid:")) {
            refused.push(mid.trim().to_owned());
        }
    }
    if refused.is_empty() {
        return answer.to_owned();
    }
    let mut out = String::with_capacity(answer.len());
    for line in answer.lines() {
        if let Some(rest) = line.strip_prefix("m=application ") {
            let proto = rest.split_once(' ').map_or("", |(_, p)| p);
            out.push_str(&format!("m=application 0 {proto}\r\n"));
        } else if let Some(mids) = line.strip_prefix("a=group:BUNDLE") {
            let kept: Vec<&str> = mids
                .split_whitespace()
                .filter(|m| !refused.iter().any(|r| r == m))
                .collect();
            out.push_str(&format!("a=group:BUNDLE {}\r\n", kept.join(" ")));
        } else {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// str0m's SDP answer parser on untrusted text (a WebSocket viewer's answer).
pub(in crate::server) fn parse_answer(sdp: &str) -> Result<SdpAnswer, String> {
    match guarded(|| SdpAnswer::from_sdp_string(sdp)) {
        Ok(Ok(a)) => Ok(a),
        Ok(Err(e)) => Err(format!("invalid SDP answer: {e}")),
        Err(p) => Err(format!("invalid SDP answer (parser failed: {p})")),
    }
}

/// A trickled `candidate:` line, if str0m can read it.
pub(in crate::server) fn parse_candidate(line: &str) -> Option<Candidate> {
    let line = line.trim_start_matches("a=");
    guarded(|| Candidate::from_sdp_string(line).ok())
        .ok()
        .flatten()
}

/// A call into a peer's `Rtc` through [`guarded`]: its value, or why the peer has to go (an
/// error from str0m, or a panic inside it; logged here).
fn rtc_outcome<T, E: std::fmt::Display>(
    id: u64,
    r: Result<Result<T, E>, String>,
) -> Result<T, &'static str> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            debug!("viewer {id}: {e}");
            Err("connection error")
        }
        Err(p) => {
            warn!("viewer {id}: str0m panicked: {p}");
            Err("internal error")
        }
    }
}

/// Runs `f` on a viewer's `Rtc`, turning a panic into an error.
pub(in crate::server) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

impl Server {
    /// A WHEP offer: answered at once with a ready `Rtc`, or as soon as one is built.
    pub(in crate::server) fn whep_offer(
        &mut self,
        token: Token,
        channel: ChannelId,
        offer: String,
        pull: Option<super::pull::PullAsk>,
        from: Option<SocketAddr>,
        now: Instant,
    ) -> Reply {
        if pull.is_some() && !self.relay.is_live(channel) {
            return Reply::Now(Response::text(404, "the channel is not live on this node").cors());
        }
        let known = self.keys.get(channel).is_some()
            || self.relay.is_live(channel)
            || self.cluster_channels().contains(&channel);
        if !known {
            return Reply::Now(Response::text(404, "no such channel").cors());
        }
        // An offer this relay cannot serve is refused by name, before any WebRTC state: an
        // answer that rejects its video would leave the browser without a transport at all.
        let codec = self
            .relay
            .video_codec(channel)
            .map_or(VideoCodec::H264, |(c, _)| c);
        let offer = match check_offer(&offer, Offerer::Viewer(codec)) {
            Ok((o, _)) => o,
            Err((status, why)) => {
                self.counters.viewers_refused += 1;
                debug!("WHEP channel {channel}: {status} {why}");
                return Reply::Now(Response::text(status, &why).cors());
            }
        };
        if pull.is_none() {
            if let Some(to) = self.placement(channel) {
                debug!("WHEP channel {channel}: viewer sent to {to}");
                self.counters.viewers_redirected += 1;
                return Reply::Now(
                    Response::text(307, "served by another node")
                        .header("Location", to)
                        .cors(),
                );
            }
        }
        // A cluster's pull is not a stranger's offer.
        let from = from.filter(|_| pull.is_none());
        let origin = match self.offer_admission(from, now) {
            Ok(o) => o,
            Err(resp) => return Reply::Now(resp),
        };
        if let Err(resp) = self.viewer_admission(channel) {
            return Reply::Now(resp);
        }
        if pull.is_none() {
            self.pull_wanted(channel, now);
        }
        let kind = self.viewer_kind(channel, pull.is_some());
        match self.pool.take(kind) {
            Some(rtc) => Reply::Now(self.whep_answer(rtc, kind, channel, offer, pull, origin, now)),
            None => {
                if let Some(g) = origin {
                    self.viewers.admission.opened(g);
                }
                self.viewers.pending.push_back(Pending::Whep {
                    token,
                    channel,
                    offer,
                    pull,
                    origin,
                });
                self.pool.want(kind, self.viewers.pending.len());
                Reply::Later
            }
        }
    }

    /// A stranger's offer (WHEP, WebSocket, WHIP) from `from`: within its address's share of
    /// the table and offer rate (see `admission`), or `429` with `Retry-After`. Returns the
    /// address group the session will be counted under (none for the cluster's own pulls).
    pub(in crate::server) fn offer_admission(
        &mut self,
        from: Option<SocketAddr>,
        now: Instant,
    ) -> Result<Option<IpAddr>, Response> {
        let Some(from) = from else {
            return Ok(None);
        };
        let group = crate::server::addr_group::group(from.ip());
        match self.viewers.admission.offer(group, now) {
            Ok(()) => Ok(Some(group)),
            Err(refusal) => {
                match refusal {
                    super::admission::Refusal::Rate(_) => self.counters.offers_rate_limited += 1,
                    super::admission::Refusal::Pending => self.counters.offers_pending_capped += 1,
                }
                debug!("offer from {from}: {}", refusal.reason());
                Err(Response::text(429, refusal.reason())
                    .header("Retry-After", refusal.retry_after().to_string())
                    .cors())
            }
        }
    }

    /// Room for one more peer: the table's and the channel's limits. A full table makes room
    /// by letting its oldest unconnected session go (never a connected one).
    pub(in crate::server) fn viewer_admission(
        &mut self,
        channel: ChannelId,
    ) -> Result<(), Response> {
        let total = self.viewers.len() + self.viewers.pending();
        if total >= self.args.max_viewers && !self.evict_oldest_unconnected() {
            return Err(Response::text(503, "viewer limit reached")
                .header("Retry-After", "5")
                .cors());
        }
        if self.relay.channel_viewers(channel) >= self.args.max_viewers_per_channel {
            return Err(Response::text(503, "channel viewer limit reached").cors());
        }
        Ok(())
    }

    /// Lets the oldest session that has not connected go: a WebRTC peer still connecting, or
    /// else an offer still waiting for its `Rtc` (told `503`). Whether one went.
    fn evict_oldest_unconnected(&mut self) -> bool {
        let oldest = self
            .viewers
            .map
            .iter()
            .filter(|(_, v)| v.connected_at.is_none())
            .min_by_key(|(id, v)| (v.created, **id))
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.counters.unconnected_evicted += 1;
            if matches!(
                self.viewers.map.get(&id).map(|v| &v.role),
                Some(Role::Publisher(_))
            ) {
                self.publisher_ends(id, EndReason::Disconnect);
            }
            self.viewer_drop(id, "made room in a full table");
            return true;
        }
        let Some(p) = self.viewers.pending.pop_front() else {
            return false;
        };
        self.counters.unconnected_evicted += 1;
        if let Some(g) = p.origin() {
            self.viewers.admission.settled(g);
        }
        self.http_respond(
            p.token(),
            Response::text(503, "viewer limit reached")
                .header("Retry-After", "5")
                .cors(),
        );
        true
    }

    /// Adds the host candidates and accepts a parsed offer (WHEP or WHIP): the answer's SDP,
    /// or the refusal (`400` for an offer str0m cannot take, `500` for a str0m panic).
    pub(in crate::server) fn accept_offer(
        &self,
        rtc: &mut Rtc,
        offer: SdpOffer,
    ) -> Result<String, Response> {
        self.add_host_candidates(rtc);
        match guarded(|| rtc.sdp_api().accept_offer(offer)) {
            Ok(Ok(a)) => Ok(refuse_data_channels(&a.to_sdp_string())),
            Ok(Err(e)) => Err(Response::text(
                400,
                &format!("cannot accept the offer: {e}"),
            )),
            Err(p) => {
                warn!("str0m panicked accepting an offer: {p}");
                Err(Response::text(500, "internal error"))
            }
        }
    }

    /// The server's candidates for a peer: UDP on every advertised address, and ICE over TCP
    /// beside it at a lower priority so UDP wins where it works.
    fn add_host_candidates(&self, rtc: &mut Rtc) {
        for c in &self.viewers.candidates {
            if let Ok(c) = Candidate::host(*c, "udp") {
                rtc.add_local_candidate(c);
            }
        }
        if let Some(tcp) = self.addrs.webrtc_tcp {
            for c in &self.viewers.candidates {
                let addr = SocketAddr::new(c.ip(), tcp.port());
                if let Ok(c) = Candidate::builder()
                    .tcp()
                    .host(addr)
                    .tcptype(str0m::net::TcpType::Passive)
                    .build()
                {
                    rtc.add_local_candidate(c);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn whep_answer(
        &mut self,
        mut rtc: Rtc,
        kind: ViewerKind,
        channel: ChannelId,
        offer: SdpOffer,
        pull: Option<super::pull::PullAsk>,
        origin: Option<IpAddr>,
        now: Instant,
    ) -> Response {
        let parsed = self.accept_offer(&mut rtc, offer);
        let answer_sdp = match parsed {
            Ok(a) => a,
            Err(resp) => {
                if resp.status != 500 {
                    self.counters.viewers_refused += 1;
                }
                return resp.cors();
            }
        };
        let session = Alphanumeric.sample_string(&mut rand::rng(), 24);
        let id = self.viewer_insert(
            rtc,
            channel,
            Signal::Whep(session.clone()),
            None,
            origin,
            now,
        );
        self.viewer_estimating(id, kind);
        if let (Some(v), Some(ask)) = (self.viewers.map.get_mut(&id), pull) {
            match ask.layer {
                Some(l) => info!(
                    "channel {channel}: node {} pulls its layer {l} (peer {id})",
                    ask.node
                ),
                None => info!("channel {channel}: node {} pulls it (peer {id})", ask.node),
            }
            v.pull_node = Some(ask.node);
            v.pull_layer = ask.layer;
        }
        if let Err(why) = self.viewer_media(id, &mids_from_sdp(&answer_sdp)) {
            self.viewer_drop(id, "no usable media");
            self.counters.viewers_refused += 1;
            return Response::text(400, why).cors();
        }
        self.viewers.by_whep.insert(session.clone(), id);
        self.viewer_drive(id, now);
        let location = format!("/whep/{channel}/{session}");
        let resp = self
            .session_created(answer_sdp, &location, &session)
            .header(
                "Link",
                format!("<{location}/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\""),
            );
        // The stream's layers, smallest first, when it has several: an edge pulls each.
        let layers: Vec<String> = self
            .relay
            .stream_stats(channel, now)
            .map(|s| s.layers.iter().map(|l| l.id.0.to_string()).collect())
            .unwrap_or_default();
        let resp = if layers.len() > 1 {
            resp.header(super::pull::LAYERS_HEADER, layers.join(","))
        } else {
            resp
        };
        // The stream's codec: an edge's pull relays it as this (its answer may name others).
        match self.relay.video_codec(channel) {
            Some((codec, _)) => resp.header(CODEC_HEADER, codec.name().to_owned()),
            None => resp,
        }
    }

    /// `201 Created` for a WHEP or WHIP session: the answer, its `Location` and `ETag`, and the
    /// ICE servers as `Link` headers (RFC 9725 §4.4).
    pub(in crate::server) fn session_created(
        &self,
        answer: String,
        location: &str,
        etag: &str,
    ) -> Response {
        let mut resp = Response::new(201, "application/sdp", answer)
            .header("Location", location.to_owned())
            .header("ETag", format!("\"{etag}\""))
            .cors();
        for s in &self.args.ice_servers {
            resp = resp.header("Link", format!("<{s}>; rel=\"ice-server\""));
        }
        resp
    }

    /// Ends the peer of a WHEP or WHIP session id; whether there was one.
    pub(in crate::server) fn session_delete(&mut self, session: &str, whip: bool) -> bool {
        let table = if whip {
            &self.viewers.by_whip
        } else {
            &self.viewers.by_whep
        };
        let Some(id) = table.get(session).copied() else {
            return false;
        };
        if whip {
            self.publisher_ends(id, EndReason::Disconnect);
            self.viewer_drop(id, "WHIP session deleted");
        } else {
            self.viewer_drop(id, "WHEP session deleted");
        }
        true
    }

    /// A WebSocket viewer: the server offers (the seed's protocol).
    pub(in crate::server) fn ws_viewer_create(
        &mut self,
        token: Token,
        channel: ChannelId,
        from: SocketAddr,
        now: Instant,
    ) {
        let admitted = self
            .offer_admission(Some(from), now)
            .and_then(|origin| self.viewer_admission(channel).map(|()| origin));
        let origin = match admitted {
            Ok(o) => o,
            Err(resp) => {
                let why = String::from_utf8_lossy(&resp.body).trim().to_owned();
                self.ws_send_json(token, "error", serde_json::json!({ "message": why }));
                return;
            }
        };
        self.pull_wanted(channel, now);
        let kind = self.viewer_kind(channel, false);
        match self.pool.take(kind) {
            Some(rtc) => self.ws_offer(token, rtc, kind, channel, origin, now),
            None => {
                if let Some(g) = origin {
                    self.viewers.admission.opened(g);
                }
                self.viewers.pending.push_back(Pending::Ws {
                    token,
                    channel,
                    origin,
                });
                self.pool.want(kind, self.viewers.pending.len());
            }
        }
    }

    fn ws_offer(
        &mut self,
        token: Token,
        mut rtc: Rtc,
        kind: ViewerKind,
        channel: ChannelId,
        origin: Option<IpAddr>,
        now: Instant,
    ) {
        self.add_host_candidates(&mut rtc);
        let made = guarded(|| {
            let mut api = rtc.sdp_api();
            let stream = Some(format!("itg-{channel}"));
            let v = api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                stream.clone(),
                Some("video".into()),
                None,
            );
            let a = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                stream,
                Some("audio".into()),
                None,
            );
            api.apply().map(|(offer, pending)| (offer, pending, v, a))
        });
        let Ok(Some((offer, pending, vmid, amid))) = made else {
            warn!("could not make an offer for a WebSocket viewer");
            return;
        };
        let id = self.viewer_insert(rtc, channel, Signal::Ws(token), Some(pending), origin, now);
        self.viewer_estimating(id, kind);
        if let Some(v) = self.viewers.map.get_mut(&id) {
            // Payload types are known once the answer arrives; the mids are ours already.
            v.video = Some((vmid, Pt::from(0)));
            v.audio = Some((amid, Pt::from(0)));
            v.tx_ssrc = (None, None);
        }
        self.ws_set_viewer(token, id);
        self.ws_send_json(
            token,
            "offer",
            serde_json::json!({ "type": "offer", "sdp": offer.to_sdp_string() }),
        );
        self.viewer_drive(id, now);
    }

    /// The browser's answer to a WebSocket offer.
    pub(in crate::server) fn ws_answer(
        &mut self,
        id: u64,
        sdp: &str,
        now: Instant,
    ) -> Result<(), String> {
        let v = self.viewers.map.get_mut(&id).ok_or("no viewer")?;
        let pending = v.pending_offer.take().ok_or("no offer pending")?;
        let answer = parse_answer(sdp)?;
        match guarded(|| v.rtc.sdp_api().accept_answer(pending, answer)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("cannot accept the answer: {e}")),
            Err(p) => return Err(format!("internal error: {p}")),
        }
        self.viewer_media(id, &[]).map_err(str::to_owned)?;
        // The same rule as a WHEP offer's: the relay passes the stream's codec through, so a
        // browser that cannot decode it is told so by name instead of getting a black picture.
        if let Some(v) = self.viewers.map.get(&id).filter(|v| v.video.is_none()) {
            let codec = self
                .relay
                .video_codec(v.channel)
                .map_or(VideoCodec::H264, |(c, _)| c);
            let name = codec.label();
            let hint = if codec == VideoCodec::H264 {
                super::whip::FIREFOX_H264
            } else {
                "Watch in a browser that decodes it."
            };
            let message = format!(
                "your browser's answer has no {name} decoder, and this server relays the \
                 streamer's {name} as it is. {hint}"
            );
            if let Signal::Ws(token) = v.signal {
                let data = serde_json::json!({ "message": message, "codec": codec.name() });
                self.ws_send_json(token, "error", data);
            }
            self.counters.viewers_refused += 1;
            self.viewer_drop(id, "no decoder for the stream's codec");
            return Ok(());
        }
        self.viewer_drive(id, now);
        Ok(())
    }

    /// A trickled candidate from a WebSocket viewer (not needed with ICE-lite, but harmless).
    pub(in crate::server) fn ws_candidate(&mut self, id: u64, candidate: &str) {
        if let Some(v) = self.viewers.map.get_mut(&id) {
            if let Some(c) = parse_candidate(candidate) {
                let _ = guarded(|| v.rtc.add_remote_candidate(c));
            }
        }
    }

    /// A new peer, counted under `origin`'s unconnected share until it connects.
    pub(in crate::server) fn viewer_insert(
        &mut self,
        mut rtc: Rtc,
        channel: ChannelId,
        signal: Signal,
        pending_offer: Option<SdpPendingOffer>,
        origin: Option<IpAddr>,
        now: Instant,
    ) -> u64 {
        if let Some(g) = origin {
            self.viewers.admission.opened(g);
        }
        let id = self.viewers.next_id;
        self.viewers.next_id += 1;
        let creds = rtc.direct_api().local_ice_credentials();
        let ufrag = creds.ufrag;
        self.viewers.by_ufrag.insert(ufrag.clone(), id);
        let deadline = now + Duration::from_secs(self.args.viewer_connect_timeout);
        self.viewers.heap.push(Reverse((deadline, id)));
        self.viewers.map.insert(
            id,
            Viewer {
                rtc,
                channel,
                relay_id: None,
                video: None,
                audio: None,
                tx_ssrc: (None, None),
                rtx_reset: None,
                repair: relay_core::RepairBudget::joining(),
                repair_ssrcs: None,
                repair_sent: (0, 0),
                unsent: 0,
                ufrag,
                addrs: Vec::new(),
                created: now,
                connected_at: None,
                last_tcp: false,
                tcp: false,
                signal,
                pull_node: None,
                pull_layer: None,
                timeout: now,
                pending_offer,
                role: Role::Viewer,
                origin,
                own_socket: None,
                estimate: None,
                keepalive: super::keepalive::Keepalive::new(creds.pass),
                vp8: None,
            },
        );
        self.counters.viewers_created += 1;
        id
    }

    /// Finds each negotiated media's mid and payload type (the browser's numbers, not FTL's).
    fn viewer_media(
        &mut self,
        id: u64,
        answer_mids: &[(String, MediaKind)],
    ) -> Result<(), &'static str> {
        let (stream_codec, stream_profile) = self
            .viewers
            .map
            .get(&id)
            .and_then(|v| self.relay.video_codec(v.channel))
            .map(|(c, p)| (c, p.map(str::to_owned)))
            .unwrap_or_default();
        let profile = stream_profile
            .as_deref()
            .filter(|_| stream_codec == VideoCodec::H264)
            .and_then(|p| u32::from_str_radix(p, 16).ok());
        // VP9's profile (0, or 2 for 10-bit) must match the decoder's.
        let vp9_profile = stream_profile
            .as_deref()
            .filter(|_| stream_codec == VideoCodec::Vp9)
            .and_then(|p| p.strip_prefix("profile-id="))
            .and_then(|p| p.parse::<u32>().ok());
        let Some(v) = self.viewers.map.get_mut(&id) else {
            return Err("no viewer");
        };
        v.vp8 = (stream_codec == VideoCodec::Vp8).then(super::vp8::Vp8Ids::default);
        // Polling yields MediaAdded for media the offer created.
        let mut added: Vec<(Mid, MediaKind)> = Vec::new();
        for (mid, kind) in [
            v.video.map(|(m, _)| (m, MediaKind::Video)),
            v.audio.map(|(m, _)| (m, MediaKind::Audio)),
        ]
        .into_iter()
        .flatten()
        {
            added.push((mid, kind));
        }
        if added.is_empty() {
            // WHEP: the browser's offer created the media. str0m announces it only once media
            // can flow, so take the mids from the answer.
            added = answer_mids
                .iter()
                .map(|(m, k)| (Mid::from(m.as_str()), *k))
                .collect();
        }
        let codecs = v.rtc.codec_config().params().to_vec();
        let mut video = None;
        let mut audio = None;
        for &(mid, kind) in &added {
            let Some(media) = v.rtc.media(mid) else {
                continue;
            };
            let remote = media.remote_pts();
            let usable = codecs.iter().filter(|p| remote.contains(&p.pt()));
            match kind {
                MediaKind::Video if stream_codec != VideoCodec::H264 => {
                    let same: Vec<_> = usable
                        .filter(|p| super::whip::relay_codec(p) == Some(stream_codec))
                        .collect();
                    let exact = same.iter().find(|p| {
                        vp9_profile.is_some() && p.spec().format.profile_id == vp9_profile
                    });
                    if let Some(p) = exact.or(same.first()) {
                        video = Some((mid, p.pt()));
                    }
                }
                MediaKind::Video => {
                    let h264: Vec<_> = usable
                        .filter(|p| {
                            p.spec().codec == Codec::H264
                                && p.spec().format.packetization_mode == Some(1)
                        })
                        .collect();
                    let exact = h264
                        .iter()
                        .find(|p| profile.is_some() && p.spec().format.profile_level_id == profile);
                    let same_profile = h264.iter().find(|p| {
                        let a = p.spec().format.profile_level_id.map(|x| x >> 16);
                        profile.is_some() && a == profile.map(|x| x >> 16)
                    });
                    if let Some(p) = exact.or(same_profile).or(h264.first()) {
                        video = Some((mid, p.pt()));
                    }
                }
                MediaKind::Audio => {
                    if let Some(p) = usable.into_iter().find(|p| p.spec().codec == Codec::Opus) {
                        audio = Some((mid, p.pt()));
                    }
                }
            }
        }
        log::debug!(
            "viewer {id}: media {added:?} -> video {video:?} audio {audio:?}; codecs {:?}",
            codecs
                .iter()
                .map(|p| (p.pt(), p.spec().codec))
                .collect::<Vec<_>>()
        );
        v.video = video;
        v.audio = audio;
        v.tx_ssrc = (None, None);
        if let Some((mid, _)) = video {
            // RTX history by time, not str0m's 3 s default (see pool.rs).
            let share = v.repair.share();
            let _ = guarded(|| {
                if let Some(tx) = v.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    super::pool::viewer_video_tx(tx, share);
                }
            });
        }
        if v.video.is_none() && v.audio.is_none() {
            return Err("the offer has no H.264 (packetization mode 1) video nor Opus audio");
        }
        Ok(())
    }

    /// Hands freshly built `Rtc`s to waiting viewers.
    pub(in crate::server) fn pool_ready(&mut self, now: Instant) {
        self.pool.collect();
        while let Some(p) = self.viewers.pending.pop_front() {
            let kind = match &p {
                Pending::Whep { channel, pull, .. } => self.viewer_kind(*channel, pull.is_some()),
                Pending::Ws { channel, .. } => self.viewer_kind(*channel, false),
            };
            let Some(rtc) = self.pool.take(kind) else {
                self.viewers.pending.push_front(p);
                self.pool.want(kind, self.viewers.pending.len());
                return;
            };
            // Counted again as the peer it becomes.
            if let Some(g) = p.origin() {
                self.viewers.admission.settled(g);
            }
            match p {
                Pending::Whep {
                    token,
                    channel,
                    offer,
                    pull,
                    origin,
                } => {
                    let resp = self.whep_answer(rtc, kind, channel, offer, pull, origin, now);
                    self.http_respond(token, resp);
                }
                Pending::Ws {
                    token,
                    channel,
                    origin,
                } => {
                    if self.ws_is_open(token) {
                        self.ws_offer(token, rtc, kind, channel, origin, now);
                    }
                }
            }
        }
    }

    /// An HTTP connection went away: forget a WHEP offer it was waiting on.
    pub(in crate::server) fn viewers_http_gone(&mut self, token: Token) {
        let admission = &mut self.viewers.admission;
        self.viewers.pending.retain(|p| {
            let gone = p.token() == token;
            if let (true, Some(g)) = (gone, p.origin()) {
                admission.settled(g);
            }
            !gone
        });
    }

    pub(in crate::server) fn read_webrtc(&mut self, now: Instant) {
        for _ in 0..READ_BUDGET {
            let (n, source) = match self.stamps.recv_from(&self.rtc_socket, &mut self.buf) {
                Ok((n, source, waited)) => {
                    self.rtc_waited = waited.unwrap_or_default();
                    (n, source)
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    debug!("WebRTC recv: {e}");
                    continue;
                }
                Err(e) => {
                    debug!("WebRTC recv: {e}");
                    return;
                }
            };
            self.counters.webrtc_datagrams += 1;
            let data = self.buf.get(..n).unwrap_or_default();
            let id = match self.viewers.by_addr.get(&source) {
                Some(id) => Some(*id),
                None => self.viewers.route_stun(data),
            };
            let Some(id) = id else {
                self.counters.webrtc_unrouted += 1;
                continue;
            };
            let destination = self.viewers.destination_for(source, self.addrs.webrtc);
            let Some(v) = self.viewers.map.get_mut(&id) else {
                continue;
            };
            let Ok(contents) = data.try_into() else {
                self.counters.webrtc_unrouted += 1;
                continue;
            };
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source,
                    destination,
                    contents,
                },
            );
            if !v.rtc.accepts(&input) {
                self.counters.webrtc_unrouted += 1;
                continue;
            }
            match guarded(|| v.rtc.handle_input(input)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    debug!("viewer {id}: input: {e}");
                }
                Err(p) => {
                    warn!("viewer {id}: str0m panicked on input: {p}");
                    self.viewer_drop(id, "internal error");
                    continue;
                }
            }
            v.note_input(false);
            v.keepalive
                .on_input(Protocol::Udp, source, destination, data, now);
            if !v.addrs.contains(&source) && v.addrs.len() < 8 {
                v.addrs.push(source);
                self.viewers.by_addr.insert(source, id);
            }
            self.viewer_drive(id, now);
        }
        self.again.push(crate::server::WEBRTC_SOCKET);
    }

    /// Polls a peer's `Rtc` until it wants a timeout; sends its datagrams, handles events.
    pub(in crate::server) fn viewer_drive(&mut self, id: u64, now: Instant) {
        let connect_timeout = Duration::from_secs(self.args.viewer_connect_timeout);
        let mut immediate = 0;
        // Whether str0m put anything out since the last timeout fed back at once.
        let mut progress = true;
        loop {
            let Some(v) = self.viewers.map.get_mut(&id) else {
                return;
            };
            let out = match rtc_outcome(id, guarded(|| v.rtc.poll_output())) {
                Ok(o) => o,
                Err(why) => return self.viewer_drop(id, why),
            };
            match out {
                // Its answer to a request made for the peer: the peer did not ask.
                RtcOutput::Transmit(t) if v.keepalive.swallows(&t.contents) => {
                    progress = true;
                }
                RtcOutput::Transmit(t) if t.proto == Protocol::Tcp => {
                    progress = true;
                    self.ice_tcp_send(t.destination, &t.contents);
                }
                RtcOutput::Transmit(t) => {
                    progress = true;
                    if let Some((video, rtx)) = v.repair_ssrcs {
                        match rtp_ssrc(&t.contents) {
                            Some(s) if s == video => v.repair_sent.0 += 1,
                            Some(s) if s == rtx => v.repair_sent.1 += 1,
                            _ => {}
                        }
                    }
                    match &v.own_socket {
                        Some(s) => s.send(t.destination, &t.contents),
                        None => self.udp_out.push(t.destination, id, t.contents.into()),
                    }
                }
                RtcOutput::Timeout(t) => {
                    if v.connected_at.is_none() && now >= v.created + connect_timeout {
                        // ICE (or DTLS) never completed: usually a blocked port or a wrong
                        // advertised address (see /api/selftest).
                        self.counters.ice_failures += 1;
                        return self.viewer_drop(id, "did not connect in time");
                    }
                    if !v.rtc.is_alive() {
                        return self.viewer_drop(id, "closed");
                    }
                    let t = if v.connected_at.is_none() {
                        t.min(v.created + connect_timeout)
                    } else {
                        t
                    };
                    let paced = v.estimate.is_some();
                    if t <= now && paced && progress && immediate < IMMEDIATE_TIMEOUTS {
                        // A paced `Rtc` (an estimating viewer's) wants its clock between two
                        // packets: give it now rather than one loop turn per packet.
                        immediate += 1;
                        progress = false;
                        match rtc_outcome(id, guarded(|| v.rtc.handle_input(Input::Timeout(now)))) {
                            Ok(()) => continue,
                            Err(why) => return self.viewer_drop(id, why),
                        }
                    }
                    // A paced `Rtc` that wants its clock again at once without having sent anything
                    // (its pacer has nothing it may send yet) waits a moment instead: fed back at
                    // once it would hold the loop in a spin.
                    let t = if paced && t <= now && !progress {
                        now + PACED_IDLE_WAIT
                    } else {
                        t
                    };
                    if t != v.timeout || t <= now {
                        v.timeout = t.max(now);
                        self.viewers.heap.push(Reverse((v.timeout, id)));
                    }
                    return;
                }
                RtcOutput::Event(e) => self.viewer_event(id, e, now),
            }
        }
    }

    fn viewer_event(&mut self, id: u64, e: Event, now: Instant) {
        let Some(v) = self.viewers.map.get_mut(&id) else {
            return;
        };
        // Viewers and publishers alike: from now on the connect deadline no longer applies,
        // and the session no longer counts toward its address's unconnected share.
        if matches!(e, Event::Connected) {
            v.connected_at = Some(now);
            v.tcp = v.last_tcp;
            if let Some(g) = v.origin.take() {
                self.viewers.admission.settled(g);
            }
        }
        if matches!(v.role, Role::Publisher(_)) {
            return self.publisher_event(id, e, now);
        }
        match e {
            Event::Connected if v.is_pull() => {
                let layer = match v.pull_layer {
                    Some(l) => relay_core::TapLayer::Pinned(l),
                    None => relay_core::TapLayer::Top,
                };
                match self.relay.add_tap_on(v.channel, layer, now) {
                    Ok(rid) => {
                        v.relay_id = Some(rid);
                        relay_link(&mut self.viewers.by_relay, rid, id);
                        self.drain_relay(now);
                    }
                    Err(_) => self.viewer_drop(id, "the pulled stream ended"),
                }
            }
            Event::Connected => match self.relay.add_viewer_from(
                v.channel,
                v.remote()
                    .map(|a| crate::server::addr_group::group(a.ip()))
                    .and_then(|g| self.viewers.links.recall(g, now)),
                now,
            ) {
                Ok(rid) => {
                    v.relay_id = Some(rid);
                    relay_link(&mut self.viewers.by_relay, rid, id);
                    info!(
                        "channel {}: viewer {id} connected in {} ms{}",
                        v.channel,
                        now.saturating_duration_since(v.created).as_millis(),
                        if v.estimate.is_some() {
                            ", estimating its bandwidth"
                        } else {
                            ""
                        }
                    );
                    self.viewer_probe_for(id, None, now);
                    self.drain_relay(now);
                }
                Err(err) => {
                    warn!("channel {}: viewer {id} refused: {err}", v.channel);
                    self.viewer_drop(id, "limit reached");
                }
            },
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.viewer_drop(id, "ICE disconnected");
            }
            Event::Closed => self.viewer_drop(id, "closed by the viewer"),
            Event::KeyframeRequest(_) => {
                if let Some(rid) = v.relay_id {
                    let _ = self.relay.request_keyframe(rid, now);
                    self.drain_relay(now);
                }
            }
            Event::EgressBitrateEstimate(kind) => self.viewer_estimate(id, &kind, now),
            Event::PeerStats(s) => {
                if let Some(e) = v.estimate.as_mut() {
                    e.on_feedback(s.egress_loss_fraction, now);
                }
            }
            Event::MediaEgressStats(s) if v.video.is_some_and(|(mid, _)| mid == s.mid) => {
                let (sent, resent) = std::mem::take(&mut v.repair_sent);
                // A trial's padding goes out as retransmissions (str0m pads with RTX): not
                // repair, so the interval's resends do not count toward the budget.
                let padded = v.estimate.as_ref().is_some_and(|e| e.padding());
                let report = relay_core::repair::RepairReport {
                    loss: s.loss,
                    sent,
                    resent: if padded { 0 } else { resent },
                };
                log::trace!("viewer {id}: {report:?} (padded: {padded}, rtx datagrams {resent})");
                v.repair.report(report, now);
                if let Some(rid) = v.relay_id {
                    // The same report moves a viewer of a simulcast between layers.
                    let link = super::estimate::link_report(v.estimate.as_ref(), s.loss, now);
                    let pad = self.relay.viewer_link(rid, link, now);
                    self.viewer_probe_for(id, pad, now);
                    self.drain_relay(now);
                }
            }
            _ => {}
        }
    }

    /// Runs the timeouts of viewers that are due.
    pub(in crate::server) fn viewers_timeouts(&mut self, now: Instant) {
        while let Some(Reverse((t, id))) = self.viewers.heap.peek().copied() {
            if t > now {
                break;
            }
            self.viewers.heap.pop();
            let Some(v) = self.viewers.map.get_mut(&id) else {
                continue;
            };
            if v.timeout > now && v.connected_at.is_some() {
                continue; // a stale heap entry
            }
            self.peer_keepalive(id, now);
            self.publisher_codec_timeout(id, now);
            let Some(v) = self.viewers.map.get_mut(&id) else {
                continue;
            };
            match guarded(|| v.rtc.handle_input(Input::Timeout(now))) {
                Ok(_) => self.viewer_drive(id, now),
                Err(p) => {
                    warn!("viewer {id}: str0m panicked on timeout: {p}");
                    self.viewer_drop(id, "internal error");
                }
            }
        }
    }

    /// Drains the relay: packets to viewers, datagrams to FTL clients, events.
    pub(in crate::server) fn drain_relay(&mut self, now: Instant) {
        while let Some(o) = self.relay.poll_output() {
            if let Output::Forward(f) = o {
                if !self.recording_packet(&f) {
                    self.viewers.forwards.push(f);
                }
                continue;
            }
            // Whatever else the relay says comes after the packets it put out before.
            self.viewers_forward(now);
            match o {
                Output::Forward(_) => {}
                Output::Transmit { channel, to, bytes } => self.send_media(channel, to, &bytes),
                Output::RequestKeyframe { channel, layer } => {
                    self.whip_request_keyframe(channel, layer)
                }
                Output::Event(e) => match e {
                    RelayEvent::StreamStarted { channel } => {
                        self.stream_epochs.insert(channel, rand::random());
                        self.recording_start(channel, now);
                    }
                    RelayEvent::StreamEnded { channel, reason } => {
                        self.recording_stop(channel);
                        self.pulls_served_end(channel);
                        if reason == EndReason::MediaTimeout {
                            self.stream_timed_out(channel, now);
                        }
                    }
                    RelayEvent::ViewerJoined { channel, .. }
                    | RelayEvent::ViewerLeft { channel, .. } => {
                        self.ws_broadcast_info(channel);
                    }
                    RelayEvent::VideoFormat {
                        channel,
                        layer,
                        width,
                        height,
                        codec,
                        profile,
                    } => {
                        info!(
                            "channel {channel}: video {} {width}x{height}, profile {profile}{}",
                            codec.name(),
                            if layer.0 > 0 {
                                format!(" (layer {layer})")
                            } else {
                                String::new()
                            }
                        );
                    }
                    RelayEvent::BFrames { channel } => self.hook_stream_update(channel, now),
                },
            }
        }
        self.viewers_forward(now);
    }

    /// Writes the gathered packets viewer by viewer and drives each viewer right after its
    /// packets: its str0m state is touched once while warm in the cache, instead of once to
    /// write and again to send after every other viewer's state went through the cache (the
    /// relay puts packets out packet by packet). The sort is stable: each viewer's packets
    /// keep their order, and a burst to one viewer still leaves as one GSO run.
    fn viewers_forward(&mut self, now: Instant) {
        if self.viewers.forwards.is_empty() {
            return;
        }
        let mut forwards = std::mem::take(&mut self.viewers.forwards);
        forwards.sort_by_key(|f| f.viewer.slot());
        let mut last = None;
        for f in forwards.drain(..) {
            let id = self.viewers.by_relay(f.viewer);
            if let Some(prev) = last.filter(|p| Some(*p) != id) {
                self.viewer_send(prev, now);
            }
            last = id;
            if let Some(id) = id {
                self.viewer_write(id, f, now);
            }
        }
        if let Some(prev) = last {
            self.viewer_send(prev, now);
        }
        self.viewers.forwards = forwards;
    }

    /// Writes one of the relay's packets to the peer `id` it stands for.
    fn viewer_write(&mut self, id: u64, f: Forward, now: Instant) {
        let Some(v) = self.viewers.map.get_mut(&id) else {
            return;
        };
        let track = match f.kind {
            RelayKind::Video => v.video,
            RelayKind::Audio => v.audio,
        };
        let Some((mid, pt)) = track else { return };
        let video = f.kind == RelayKind::Video;
        if video && f.cached {
            v.rtx_reset = Some(now + super::pool::RTX_RESET_AFTER_REPLAY);
        }
        // A new retransmission budget starts with a keyframe: the history it clears holds
        // only what the keyframe makes unnecessary (see `relay_core::repair`).
        let budget = if video && f.keyframe && !f.cached {
            let before = v.repair.share();
            v.repair.take_change().inspect(|share| {
                if *share > before {
                    self.counters.rtx_budget_raised += 1;
                } else {
                    self.counters.rtx_budget_lowered += 1;
                }
                debug!(
                    "viewer {id}: retransmissions up to {share} of its stream ({:.0} % loss)",
                    100.0 * v.repair.loss()
                );
            })
        } else {
            None
        };
        // (With a trial's allowance while one runs.)
        let budget = budget.map(|_| v.rtx_cap());
        // Every keyframe tells the browser how little it may hold video back (see
        // `--playout-delay-max-ms`); the browser keeps the latest it was told.
        let delay = (video && f.keyframe).then_some(self.args.playout_delay_max_ms);
        // VP8 picture IDs that run on across layer switches (see `vp8`).
        let vp8 = v
            .vp8
            .as_mut()
            .filter(|_| video)
            .and_then(|ids| ids.patch(&f.payload, f.keyframe));
        v.unsent += 1;
        let unsent = v.unsent;
        let cached = if video {
            &mut v.tx_ssrc.0
        } else {
            &mut v.tx_ssrc.1
        };
        let mut ssrcs = None;
        let written = guarded(|| {
            let mut api = v.rtc.direct_api();
            let tx = match *cached {
                Some(ssrc) => api.stream_tx(&ssrc),
                None => api.stream_tx_by_mid(mid, None),
            };
            let Some(tx) = tx else {
                return false;
            };
            if cached.is_none() && video {
                if let Some(rtx) = tx.rtx() {
                    ssrcs = Some((*tx.ssrc(), *rtx));
                }
            }
            *cached = Some(tx.ssrc());
            if let Some(share) = budget {
                super::pool::viewer_video_tx(tx, share);
            }
            let mut w = RtpWrite::new(pt, f.seq.into(), f.timestamp, f.wallclock, f.payload)
                .marker(f.marker)
                .nackable(video);
            if let Some(patch) = vp8 {
                w = w.vp8_patch(patch);
            }
            if let Some(max_ms) = delay {
                let ext = str0m::rtp::ExtensionValues {
                    play_delay_min: Some(str0m::media::MediaTime::from_hundredths(0)),
                    play_delay_max: Some(str0m::media::MediaTime::from_hundredths(u64::from(
                        max_ms / 10,
                    ))),
                    ..Default::default()
                };
                w = w.ext_vals(ext);
            }
            tx.write_rtp(w);
            true
        });
        if ssrcs.is_some() {
            v.repair_ssrcs = ssrcs;
        }
        match written {
            Ok(true) => {
                self.counters.packets_forwarded += 1;
                if unsent >= WRITE_AHEAD {
                    // A GOP replay: send what is written before writing more, so str0m's
                    // send queue (which never shrinks) stays this short.
                    self.viewer_send(id, now);
                }
            }
            Ok(false) => {}
            Err(p) => {
                warn!("viewer {id}: str0m panicked on write: {p}");
                self.viewer_drop(id, "internal error");
            }
        }
    }

    /// Sets why a publisher's stream ends when it leaves (no-op for a viewer).
    pub(in crate::server) fn publisher_ends(&mut self, id: u64, reason: EndReason) {
        if let Some(Role::Publisher(p)) = self.viewers.map.get_mut(&id).map(|v| &mut v.role) {
            p.end = reason;
        }
    }

    /// Marks a peer to be driven at the end of this iteration (it has something to send).
    pub(in crate::server) fn viewers_mark_dirty(&mut self, id: u64) {
        if self.viewers.dirty.last() != Some(&id) {
            self.viewers.dirty.push(id);
        }
    }

    /// Sends what the peers marked dirty outside the relay's fan-out put out (that one drives
    /// each viewer as it goes, see [`Server::viewers_forward`]), flushing the send batch every
    /// [`SEND_AHEAD`] datagrams and once more at the iteration's end.
    pub(in crate::server) fn viewers_flush(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.viewers.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for id in &dirty {
            self.viewer_send(*id, now);
        }
        dirty.clear();
        self.viewers.dirty = dirty;
    }

    /// Drives one viewer that was written to: str0m stamps what was written (its timeout) and
    /// puts out the SRTP datagrams, which join the send batch.
    fn viewer_send(&mut self, id: u64, now: Instant) {
        let Some(v) = self.viewers.map.get_mut(&id) else {
            return;
        };
        v.unsent = 0;
        if v.rtx_reset.is_some_and(|t| now >= t) {
            v.rtx_reset = None;
            v.renew_video_tx();
        }
        match guarded(|| v.rtc.handle_input(Input::Timeout(now))) {
            Ok(_) => {
                self.viewer_drive(id, now);
                // Send as we go: the first viewers' packets leave while the next ones are
                // still being encrypted (halves the mean wait of a burst fanned out to
                // many viewers); a batch this size still takes few system calls.
                if self.udp_out.len() >= SEND_AHEAD {
                    self.udp_flush();
                }
            }
            Err(p) => {
                warn!("viewer {id}: str0m panicked: {p}");
                self.viewer_drop(id, "internal error");
            }
        }
    }

    /// Sends the batched datagrams (see `send_batch`). A viewer whose datagrams the socket
    /// would not take (its buffer full: the machine sends less than the viewers need) skips to
    /// the next keyframe instead of being sent a picture with holes.
    pub(in crate::server) fn udp_flush(&mut self) {
        if self.udp_out.is_empty() {
            return;
        }
        let f = self.udp_out.flush(&self.rtc_socket);
        self.counters.webrtc_sent += f.datagrams;
        self.counters.webrtc_send_calls += f.calls;
        self.counters.webrtc_gso_messages += f.gso_messages;
        self.counters.webrtc_send_full += f.would_block;
        self.counters.webrtc_send_errors += f.errors;
        if self.udp_out.dropped().is_empty() {
            return;
        }
        let mut ids = self.udp_out.dropped().to_vec();
        ids.sort_unstable();
        ids.dedup();
        debug!(
            "{} datagrams not sent to {} peers",
            f.would_block + f.errors,
            ids.len()
        );
        for id in ids {
            if let Some(rid) = self.viewers.map.get(&id).and_then(|v| v.relay_id) {
                self.relay.skip_to_keyframe(rid, SkipReason::SendFailed);
            }
        }
    }

    /// The channel went live or offline: tell its WebSocket viewers.
    pub(in crate::server) fn viewers_stream_state(&mut self, channel: ChannelId, live: bool) {
        for t in self.ws_tokens(channel) {
            self.ws_send_json(t, "stream", serde_json::json!({ "live": live }));
        }
    }

    fn ws_broadcast_info(&mut self, channel: ChannelId) {
        let n = self.relay.channel_viewers(channel);
        for t in self.ws_tokens(channel) {
            self.ws_send_json(t, "info", serde_json::json!({ "no_connections": n }));
        }
    }

    /// The WebSocket connections of a channel's viewers.
    fn ws_tokens(&self, channel: ChannelId) -> Vec<Token> {
        self.viewers
            .map
            .values()
            .filter(|v| v.channel == channel)
            .filter_map(|v| match v.signal {
                Signal::Ws(t) => Some(t),
                Signal::Whep(_) | Signal::Whip(_) | Signal::Pull(_) => None,
            })
            .collect()
    }

    /// Removes a viewer and everything that points at it.
    pub(in crate::server) fn viewer_drop(&mut self, id: u64, why: &str) {
        let Some(mut v) = self.viewers.map.remove(&id) else {
            return;
        };
        if let Some(g) = v.origin.take() {
            self.viewers.admission.settled(g);
        }
        self.viewers.by_ufrag.remove(&v.ufrag);
        for a in &v.addrs {
            if self.viewers.by_addr.get(a) == Some(&id) {
                self.viewers.by_addr.remove(a);
            }
        }
        if let Some(rid) = v.relay_id {
            self.viewers.relay_unlink(rid);
            if v.is_pull() {
                self.relay.remove_tap(rid);
            } else {
                // Where its link carried it, for its network's next viewer.
                if let (Some(place), Some(remote)) = (self.relay.viewer_place(rid), v.remote()) {
                    let group = crate::server::addr_group::group(remote.ip());
                    self.viewers.links.remember(group, place, Instant::now());
                }
                self.relay.remove_viewer(rid);
            }
        }
        match &v.signal {
            Signal::Whep(s) => {
                self.viewers.by_whep.remove(s);
            }
            Signal::Ws(t) => self.ws_viewer_gone(*t),
            Signal::Whip(s) => {
                self.viewers.by_whip.remove(s);
            }
            Signal::Pull(_) => self.pull_gone(v.channel, id),
        }
        let _ = guarded(|| v.rtc.disconnect());
        if let Some(mut s) = v.own_socket.take() {
            let _ = self.poll.registry().deregister(&mut s.socket);
            self.slots.remove(&s.token);
        }
        for t in self.ice_tcp_tokens_of(id) {
            self.ice_tcp_close(t, "its peer left");
        }
        if let Role::Publisher(p) = v.role {
            self.publisher_gone(id, v.channel, *p, why);
            return;
        }
        self.counters.viewers_dropped += 1;
        info!("channel {}: viewer {id} left ({why})", v.channel);
    }

    /// Drops the viewer signalled over this WebSocket, if any.
    pub(in crate::server) fn viewer_drop_ws(&mut self, token: Token) {
        let id = self
            .viewers
            .map
            .iter()
            .find(|(_, v)| v.signal == Signal::Ws(token))
            .map(|(id, _)| *id);
        if let Some(id) = id {
            self.viewer_drop(id, "signalling closed");
        }
        self.viewers_http_gone(token);
    }

    pub(in crate::server) fn viewers_close_all(&mut self, now: Instant) {
        let ids: Vec<u64> = self.viewers.map.keys().copied().collect();
        for id in ids {
            if let Some(v) = self.viewers.map.get_mut(&id) {
                let _ = guarded(|| v.rtc.disconnect());
            }
            self.viewer_drive(id, now);
            self.publisher_ends(id, EndReason::Shutdown);
            self.viewer_drop(id, "server shutting down");
        }
    }
}

/// The SSRC of an (S)RTP packet, which SRTP leaves in the clear; `None` for RTCP and anything
/// shorter than a header.
fn rtp_ssrc(d: &[u8]) -> Option<u32> {
    if ftl_proto::media::rtp::is_rtcp(*d.get(1)?) {
        return None;
    }
    Some(u32::from_be_bytes(d.get(8..12)?.try_into().ok()?))
}
