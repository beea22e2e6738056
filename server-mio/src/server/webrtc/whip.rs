//! WHIP ingest (RFC 9725): a publisher's offer over HTTP, then its media over WebRTC on the
//! shared peer table and UDP port, fed into the relay as a stream of the RTP source kind.
//!
//! - `POST /whip/{channel}` with `Authorization: Bearer <channel>-<secret>` (the OBS stream
//!   key) and an SDP offer: `201` with the answer, `Location` and `ETag`. The key is checked
//!   like FTL's (locally, or through `--auth-url`), and a wrong one counts toward the same
//!   per-address limit of failed authentications.
//! - The stream starts when ICE and DTLS complete; like an FTL session, a newer publisher of
//!   the channel (FTL or WHIP) replaces it and its viewers carry on.
//! - `DELETE` on the `Location` ends it; so do ICE or DTLS failure and `--media-timeout`
//!   without media.
//! - The relay asks for keyframes when its GOP cache cannot serve a viewer; they go to the
//!   publisher as a PLI.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ftl_proto::control::auth;
use ftl_proto::media::{RtpHeader, SenderReport};
use ftl_proto::{ChannelId, Ssrc, StreamKey};
use log::{info, warn};
use mio::Token;
use rand::distr::{Alphanumeric, SampleString};
use relay_core::{
    EndReason, LayerId, MediaKind as RelayKind, RtpIn, StreamParams, VideoCodec, MAX_LAYERS,
};
use str0m::change::SdpOffer;
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::RtpPacket;
use str0m::{Event, Rtc};

use super::codec_choice::CODEC_WAIT;
use super::feedback::{self, Feedback};
use super::layers::PublisherLayers;
use super::peers::{guarded, mids_from_sdp, Role, Signal};
use crate::capture::SessionCapture;
use crate::server::hooks::KeyAnswer;
use crate::server::http::{Reply, Request, Response};
use crate::server::Server;

/// What the relay knows a WHIP publisher's stream by, for logs and events.
pub(in crate::server) const PROTOCOL: &str = "whip";

/// How a Firefox viewer gets H.264, named in its refusal.
pub(in crate::server) const FIREFOX_H264: &str = "In Firefox: about:addons, Plugins, enable \
    \"OpenH264 Video Codec provided by Cisco Systems\" (Firefox downloads it on first use).";

/// The codecs a publisher may send, named in refusals.
const SUPPORTED: &str = "H.264 (packetization-mode=1), H.265, VP8, VP9 or AV1 video and Opus audio";

/// A publisher's side of the peer table.
pub(in crate::server) struct Publisher {
    /// Where the offer came from (logs, the failed-authentication limit).
    pub(in crate::server) from: SocketAddr,
    video_mid: Option<Mid>,
    /// The codec of its video: known from the answer when it names one, else from the first
    /// video packet (see `codec_choice`).
    pub(super) video_codec: Option<VideoCodec>,
    /// The payload types its video may come in, each with its codec, the preferred first.
    pub(super) video_pts: Vec<(Pt, VideoCodec)>,
    /// While its codec is not known yet: when to stop waiting for its video and take the
    /// preferred codec (see `codec_choice`). Its stream starts once the codec is known.
    pub(super) codec_wait: Option<Instant>,
    /// Video packets in a codec other than its stream's, dropped (an encoder that switched).
    pub(super) other_codec_packets: u64,
    /// What came while its codec was not known (see `codec_choice`), for the relay once known.
    pub(super) held: VecDeque<RtpPacket>,
    audio_pts: Vec<Pt>,
    /// Its simulcast layers (one without).
    layers: PublisherLayers,
    /// Whether this publisher owns its channel's live stream.
    live: bool,
    /// The last sender report seen per track (audio, then each video layer), to pass on only
    /// new ones.
    reports: [Option<SystemTime>; 1 + MAX_LAYERS],
    /// Why its stream ends when it leaves: the connection was lost, unless a `DELETE` or the
    /// shutdown said otherwise first.
    pub(in crate::server) end: EndReason,
    /// With `--capture`: the offer and answer, then the RTP and sender reports as the relay
    /// got them (decrypted), so the session replays like an FTL one.
    capture: Option<Box<SessionCapture>>,
    /// Congestion feedback towards it (REMB, the cap).
    pub(in crate::server) feedback: Option<Feedback>,
    /// An edge's pull of one more layer of a simulcast: its video feeds this layer of the
    /// stream the channel's main pull owns, and it never starts, owns or ends a stream.
    pub(in crate::server) feeds_layer: Option<LayerId>,
    /// The layer its video is filed under when another node named it: an edge's main pull of
    /// a simulcast takes the origin's id of the top layer (as its layer pulls take theirs), so a
    /// layer has one id across the cluster and a watch page served by the origin can fix its
    /// viewer on the edge by the origin's ids.
    pub(in crate::server) video_layer: Option<LayerId>,
}

impl Publisher {
    /// How many video layers its offer declared (see `PublisherLayers::declared`).
    pub(in crate::server) fn declared_layers(&self) -> usize {
        self.layers.declared()
    }

    /// A publisher of what `rtc` negotiated in `sdp` (the session's answer, or the origin's
    /// answer to an edge's pull): the payload types of each track (RTX is unwrapped by str0m).
    /// Its video is in `video` when that is known (the origin's word for a pull); else in the
    /// codec the answer names, or, when it names several, in the one its first video packet
    /// comes in.
    pub(in crate::server) fn negotiated(
        rtc: &Rtc,
        sdp: &str,
        from: SocketAddr,
        video: Option<VideoCodec>,
    ) -> Publisher {
        let codecs = rtc.codec_config().params().to_vec();
        let mut publisher = Publisher {
            from,
            video_mid: None,
            video_codec: None,
            video_pts: Vec::new(),
            codec_wait: None,
            other_codec_packets: 0,
            held: VecDeque::new(),
            audio_pts: Vec::new(),
            layers: PublisherLayers::default(),
            live: false,
            reports: [None; 1 + MAX_LAYERS],
            end: EndReason::ControlLost,
            capture: None,
            feedback: None,
            feeds_layer: None,
            video_layer: None,
        };
        for (mid, kind) in mids_from_sdp(sdp) {
            let mid = Mid::from(mid.as_str());
            let Some(media) = rtc.media(mid) else {
                continue;
            };
            if kind == MediaKind::Video {
                publisher.layers = PublisherLayers::new(media.rids_rx());
            }
            let remote = media.remote_pts();
            for p in codecs.iter().filter(|p| remote.contains(&p.pt())) {
                match (kind, p.spec().codec) {
                    (MediaKind::Video, _) => {
                        let Some(c) = relay_codec(p) else { continue };
                        // One video section is relayed: the first with a relayed codec.
                        let first = publisher.video_mid.is_none_or(|m| m == mid);
                        if first && video.is_none_or(|v| v == c) {
                            publisher.video_mid = Some(mid);
                            publisher.video_pts.push((p.pt(), c));
                        }
                    }
                    (MediaKind::Audio, Codec::Opus) => publisher.audio_pts.push(p.pt()),
                    _ => {}
                }
            }
        }
        let mut codecs = publisher.video_pts.iter().map(|(_, c)| *c);
        let first = codecs.next();
        if codecs.all(|c| Some(c) == first) {
            publisher.video_codec = first;
        }
        publisher
    }

    /// Whether anything usable was negotiated.
    pub(in crate::server) fn has_media(&self) -> bool {
        !self.video_pts.is_empty() || !self.audio_pts.is_empty()
    }
}

/// An offer waiting for the key service's answer.
pub(in crate::server) struct WhipAuth {
    channel: ChannelId,
    secret: StreamKey,
    offer: SdpOffer,
    /// The video codecs its answer may name, the preferred first (see `publisher_codecs`).
    video: Vec<VideoCodec>,
    from: SocketAddr,
    /// The request with its key redacted, kept only with `--capture`.
    request: Option<Vec<u8>>,
}

/// The bearer token of a request, if any.
fn bearer(req: &Request) -> Option<&str> {
    let v = req.header("Authorization")?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// The secret a request's Bearer token presents for `channel` (the OBS form
/// `<channel>-<secret>`, or the bare secret); `None` without a token or for another channel.
pub(in crate::server) fn presented_key(req: &Request, channel: ChannelId) -> Option<StreamKey> {
    let key = bearer(req)?;
    let (key_channel, secret) =
        StreamKey::parse_obs(key).unwrap_or_else(|_| (channel, StreamKey::new(key.as_bytes())));
    (key_channel == channel).then_some(secret)
}

/// Whether a request's Bearer token is exactly `expected`, compared in constant time.
pub(in crate::server) fn bearer_is_secret(req: &Request, expected: &StreamKey) -> bool {
    bearer(req).is_some_and(|t| same_key(expected, &StreamKey::new(t.as_bytes())))
}

/// Compares two keys in constant time (HMACs of a fixed message, compared by `verify`).
pub(in crate::server) fn same_key(expected: &StreamKey, presented: &StreamKey) -> bool {
    let digest = auth::digest(presented, b"itg-whip");
    auth::verify(expected, b"itg-whip", &digest)
}

/// Whose offer is checked: the refusal says what that side can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Offerer {
    /// A WHIP publisher: its encoder must send what the relay passes through.
    Publisher,
    /// A WHEP viewer of a stream in this codec (H.264 while nothing is live): its browser must
    /// decode what the relay passes through (there is no transcoding), so an offer that offers
    /// video must offer that codec.
    Viewer(VideoCodec),
}

/// The relay's name for a codec str0m negotiated, if the relay passes it through (H.264 only
/// in packetization mode 1: mode 0 sends a NAL unit per packet, which encoders here do not).
pub(in crate::server) fn relay_codec(p: &str0m::format::PayloadParams) -> Option<VideoCodec> {
    match p.spec().codec {
        Codec::H264 if p.spec().format.packetization_mode == Some(1) => Some(VideoCodec::H264),
        Codec::H265 => Some(VideoCodec::H265),
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        Codec::Av1 => Some(VideoCodec::Av1),
        _ => None,
    }
}

/// The video codecs the first video section of `sdp` offers, in its order of preference (the
/// `m=` line's payload list), those the relay passes through only.
pub(in crate::server) fn offered_video_codecs(sdp: &str) -> Vec<VideoCodec> {
    let mut order: Vec<&str> = Vec::new();
    let mut maps: Vec<(&str, VideoCodec)> = Vec::new();
    let mut h264: Vec<&str> = Vec::new();
    let mut mode1: Vec<&str> = Vec::new();
    let mut in_video = false;
    let mut seen_video = false;
    for line in sdp.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            in_video = !seen_video && m.starts_with("video ");
            if in_video {
                seen_video = true;
                order = m.split(' ').skip(3).collect();
            }
        } else if !in_video {
            continue;
        } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
            let (pt, codec) = map.split_once(' ').unwrap_or((map, ""));
            let name = codec.split('/').next().unwrap_or("").to_ascii_uppercase();
            let codec = match name.as_str() {
                "H264" => {
                    h264.push(pt);
                    continue;
                }
                "H265" => VideoCodec::H265,
                "VP8" => VideoCodec::Vp8,
                "VP9" => VideoCodec::Vp9,
                "AV1" => VideoCodec::Av1,
                _ => continue,
            };
            maps.push((pt, codec));
        } else if let Some(fmtp) = line.strip_prefix("a=fmtp:") {
            let (pt, params) = fmtp.split_once(' ').unwrap_or((fmtp, ""));
            if params
                .split(';')
                .any(|p| p.trim().eq_ignore_ascii_case("packetization-mode=1"))
            {
                mode1.push(pt);
            }
        }
    }
    maps.extend(
        h264.iter()
            .filter(|pt| mode1.contains(pt))
            .map(|pt| (*pt, VideoCodec::H264)),
    );
    let mut out: Vec<VideoCodec> = Vec::new();
    for pt in order {
        if let Some((_, c)) = maps.iter().find(|(p, _)| *p == pt) {
            if !out.contains(c) {
                out.push(*c);
            }
        }
    }
    out
}

/// The video codecs a publisher's answer names: those of `sdp`'s first video section that the
/// relay passes through, `preferred` (see `check_offer`) first, then in the offer's order.
pub(in crate::server) fn publisher_codecs(
    sdp: &str,
    preferred: Option<VideoCodec>,
) -> Vec<VideoCodec> {
    let Some(preferred) = preferred else {
        return Vec::new();
    };
    let mut codecs = vec![preferred];
    codecs.extend(
        offered_video_codecs(sdp)
            .into_iter()
            .filter(|c| *c != preferred),
    );
    codecs
}

/// Checks an offer before any WebRTC state is made: it parses, it has media, and the media
/// is what the relay passes through. Returns the offer and, for a publisher offering video,
/// the codec its answer names first: H.264 when it is among those offered (every viewer's
/// browser decodes it), else the publisher's first choice (see `publisher_codecs`).
pub(in crate::server) fn check_offer(
    sdp: &str,
    who: Offerer,
) -> Result<(SdpOffer, Option<VideoCodec>), (u16, String)> {
    let offer = parse_offer(sdp)?;
    let video = check_media(sdp, who)?;
    Ok((offer, video))
}

/// The server's own reading of an offer's text, once str0m has parsed it: the media it has,
/// and the video codec a publisher's stream or a viewer's session will be in.
pub(in crate::server) fn check_media(
    sdp: &str,
    who: Offerer,
) -> Result<Option<VideoCodec>, (u16, String)> {
    let mids = mids_from_sdp(sdp);
    let has = |k: MediaKind| mids.iter().any(|(_, kind)| *kind == k);
    if !has(MediaKind::Video) && !has(MediaKind::Audio) {
        return Err((400, "the offer has no audio or video to publish".into()));
    }
    let opus = {
        let mut section: Option<&str> = None;
        let mut found = false;
        for line in sdp.lines() {
            if let Some(m) = line.strip_prefix("m=") {
                section = m.split(' ').next();
            } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                let codec = map
                    .split_once(' ')
                    .map_or("", |(_, c)| c)
                    .to_ascii_lowercase();
                found |= section == Some("audio") && codec.starts_with("opus/48000");
            }
        }
        found
    };
    let offered = offered_video_codecs(sdp);
    let mut video = None;
    if has(MediaKind::Video) {
        match who {
            Offerer::Publisher => {
                video = offered
                    .iter()
                    .find(|c| **c == VideoCodec::H264)
                    .or(offered.first())
                    .copied();
                if video.is_none() {
                    return Err((
                        406,
                        format!("the offer's video is in no codec this server takes; it takes {SUPPORTED}"),
                    ));
                }
            }
            Offerer::Viewer(want) if !offered.contains(&want) => {
                let name = want.label();
                let hint = if want == VideoCodec::H264 {
                    format!("{FIREFOX_H264} Or watch without video: offer audio only.")
                } else {
                    "Watch in a browser that decodes it, or without video: offer audio only."
                        .to_owned()
                };
                return Err((
                    406,
                    format!(
                        "this stream is {name} and your browser offered no {name} decoder; the \
                         server relays the streamer's video as it is. {hint}"
                    ),
                ));
            }
            Offerer::Viewer(want) => video = Some(want),
        }
    }
    if !has(MediaKind::Video) && !opus {
        return Err((
            406,
            match who {
                Offerer::Publisher => {
                    format!("the offer's audio is not Opus; this server takes {SUPPORTED}")
                }
                Offerer::Viewer(_) => {
                    "your browser offered no Opus decoder for the audio".to_owned()
                }
            },
        ));
    }
    Ok(video)
}

/// str0m's SDP parser on untrusted text: an error or a panic is a `400`.
pub(in crate::server) fn parse_offer(sdp: &str) -> Result<SdpOffer, (u16, String)> {
    match guarded(|| SdpOffer::from_sdp_string(sdp)) {
        Ok(Ok(offer)) => Ok(offer),
        Ok(Err(e)) => Err((400, format!("invalid SDP offer: {e}"))),
        Err(p) => {
            warn!("str0m's SDP parser panicked: {p}");
            Err((400, "invalid SDP offer".into()))
        }
    }
}

fn ntp_of(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    // Seconds and a 32-bit fraction, as in RTCP (only differences are used).
    (d.as_secs() << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

impl Server {
    /// `POST /whip/{channel}`.
    pub(in crate::server) fn whip_post(
        &mut self,
        token: Token,
        channel: &str,
        req: &Request,
        from: SocketAddr,
        now: Instant,
    ) -> Reply {
        if let Some(why) = self.ingest_refusal() {
            return Reply::Now(self.whip_refused(from, channel, Response::text(403, &why)));
        }
        if let Err(resp) = self.offer_admission(Some(from), now) {
            return Reply::Now(self.whip_refused(from, channel, resp));
        }
        let auth = match self.whip_request(channel, req, from, now) {
            Ok(auth) => auth,
            Err(resp) => return Reply::Now(self.whip_refused(from, channel, resp)),
        };
        if self.hooks.is_some() {
            let channel = auth.channel;
            self.whip_auth.insert(token, auth);
            self.hook_lookup(channel, token, now);
            return Reply::Later;
        }
        let answer = match self.keys.get(auth.channel) {
            Some(c) => KeyAnswer::Key(c.stream_key()),
            None => KeyAnswer::Unknown,
        };
        Reply::Now(self.whip_checked(auth, &answer, now))
    }

    /// Counts and logs a refusal; every WHIP refusal passes here.
    fn whip_refused(
        &mut self,
        from: SocketAddr,
        channel: impl std::fmt::Display,
        resp: Response,
    ) -> Response {
        self.counters.whip_refused += 1;
        let why = String::from_utf8_lossy(&resp.body);
        warn!(
            "WHIP {from}: channel {channel}: {} {}",
            resp.status,
            why.trim()
        );
        resp.cors()
    }

    /// A wrong key: counted toward the per-address limit like FTL's.
    fn whip_auth_failed(&mut self, from: SocketAddr, now: Instant) {
        self.counters.auth_failures += 1;
        self.note_auth_failure(from.ip(), now);
    }

    /// Checks what can be checked before the key is known: the address's record, the channel,
    /// the content type, the bearer token's form and the offer.
    fn whip_request(
        &mut self,
        channel: &str,
        req: &Request,
        from: SocketAddr,
        now: Instant,
    ) -> Result<WhipAuth, Response> {
        if self.auth_blocked(from.ip(), now) {
            return Err(
                Response::text(429, "too many failed authentications, retry later")
                    .header("Retry-After", self.args.auth_fail_window.to_string()),
            );
        }
        let channel = channel
            .parse::<ChannelId>()
            .map_err(|_| Response::text(404, "no such channel"))?;
        let ct = req.header("Content-Type").unwrap_or_default();
        if !ct.starts_with("application/sdp") {
            return Err(Response::text(415, "Content-Type must be application/sdp"));
        }
        let key = bearer(req).ok_or_else(|| {
            Response::text(401, "missing Authorization: Bearer <stream key>")
                .header("WWW-Authenticate", "Bearer")
        })?;
        let (key_channel, secret) =
            StreamKey::parse_obs(key).unwrap_or_else(|_| (channel, StreamKey::new(key.as_bytes())));
        if key_channel != channel {
            self.whip_auth_failed(from, now);
            return Err(Response::text(
                401,
                "the stream key belongs to another channel",
            ));
        }
        let offer = std::str::from_utf8(&req.body)
            .map_err(|_| Response::text(400, "the offer is not UTF-8"))?;
        let (parsed, preferred) = check_offer(offer, Offerer::Publisher)
            .map_err(|(status, why)| Response::text(status, &why))?;
        let video = publisher_codecs(offer, preferred);
        let offer = parsed;
        Ok(WhipAuth {
            channel,
            secret,
            offer,
            video,
            from,
            request: self.args.capture.is_some().then(|| req.redacted()),
        })
    }

    /// The key service answered for an offer waiting on `token`.
    pub(in crate::server) fn whip_key_answer(
        &mut self,
        token: Token,
        answer: &KeyAnswer,
        now: Instant,
    ) {
        let Some(auth) = self.whip_auth.remove(&token) else {
            return;
        };
        let resp = self.whip_checked(auth, answer, now);
        self.http_respond(token, resp);
    }

    /// Judges the key and the limits, then answers with a publisher's `Rtc` (built here).
    fn whip_checked(&mut self, auth: WhipAuth, answer: &KeyAnswer, now: Instant) -> Response {
        let (channel, from) = (auth.channel, auth.from);
        let refusal = match answer {
            KeyAnswer::Key(k) if same_key(k, &auth.secret) => None,
            KeyAnswer::Key(_) => {
                self.whip_auth_failed(from, now);
                Some(Response::text(401, "wrong stream key"))
            }
            KeyAnswer::Unknown => {
                self.whip_auth_failed(from, now);
                Some(Response::text(404, "no such channel"))
            }
            KeyAnswer::Failed(_) => Some(Response::text(500, "key service unavailable")),
        };
        let refusal = refusal.or_else(|| {
            let full =
                !self.relay.is_live(channel) && self.relay.live_streams() >= self.args.max_streams;
            let peers = self.viewers.len() + self.viewers.pending() >= self.args.max_viewers;
            match (full, peers) {
                (true, _) => Some(Response::text(503, "stream limit reached")),
                (_, true) => Some(Response::text(503, "peer limit reached")),
                _ => None,
            }
        });
        if let Some(resp) = refusal {
            return self.whip_refused(from, channel, resp);
        }
        let rtc = self.pool.publisher(&auth.video);
        self.whip_answer(rtc, auth, now)
    }

    /// Answers an authorized offer with a fresh `Rtc`: a publisher joins the peer table.
    pub(in crate::server) fn whip_answer(
        &mut self,
        mut rtc: Rtc,
        auth: WhipAuth,
        now: Instant,
    ) -> Response {
        let WhipAuth {
            channel,
            offer,
            from,
            request,
            ..
        } = auth;
        // Layers signalled by SSRC group rather than RIDs (only the offer says).
        let sim = super::layers::sim_group(&offer.to_sdp_string());
        let answer_sdp = match self.accept_offer(&mut rtc, offer) {
            Ok(a) => a,
            Err(resp) => return self.whip_refused(from, channel, resp),
        };
        let mut publisher = Publisher::negotiated(&rtc, &answer_sdp, from, None);
        publisher.layers = std::mem::take(&mut publisher.layers).with_sim(sim);
        if publisher.video_pts.is_empty() && publisher.audio_pts.is_empty() {
            let why = format!("nothing usable was negotiated; this server takes {SUPPORTED}");
            return self.whip_refused(from, channel, Response::text(406, &why));
        }
        let cap = self.args.whip_max_bitrate;
        let answer_sdp = feedback::with_cap(&answer_sdp, cap);
        publisher.feedback = Some(Feedback::new(&answer_sdp, cap));
        let session = Alphanumeric.sample_string(&mut rand::rng(), 24);
        let resp =
            self.session_created(answer_sdp, &format!("/whip/{channel}/{session}"), &session);
        if let Some(request) = request {
            publisher.capture = self.whip_capture(from, &request, &resp, now);
        }
        let origin = Some(crate::server::addr_group::group(from.ip()));
        let id = self.viewer_insert(
            rtc,
            channel,
            Signal::Whip(session.clone()),
            None,
            origin,
            now,
        );
        if let Some(p) = self.viewers.map.get_mut(&id) {
            p.role = Role::Publisher(Box::new(publisher));
        }
        self.viewers.by_whip.insert(session.clone(), id);
        self.counters.publishers_created += 1;
        info!("channel {channel}: WHIP publisher {id} from {from} negotiated");
        self.viewer_drive(id, now);
        resp
    }

    /// Opens a publisher's capture: its HTTP exchange (key redacted) comes first, as the
    /// control connection of an FTL capture does.
    fn whip_capture(
        &self,
        from: SocketAddr,
        request: &[u8],
        resp: &Response,
        now: Instant,
    ) -> Option<Box<SessionCapture>> {
        let dir = self.args.capture.as_ref()?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stem = format!("whip-{secs}-{}-{}", from.ip(), from.port()).replace(':', "_");
        let limits = crate::capture::Limits {
            max_file_bytes: self.args.capture_max_mb.saturating_mul(1024 * 1024),
            max_files: self.args.capture_files.max(1),
        };
        match SessionCapture::create(dir, &stem, from, self.addrs.http, limits, now) {
            Ok(mut c) => {
                c.control_in(request, now);
                c.control_out(&resp.serialize(), now);
                Some(Box::new(c))
            }
            Err(e) => {
                warn!("capture in {}: {e}", dir.display());
                None
            }
        }
    }

    /// Events of a publisher's `Rtc`.
    pub(in crate::server) fn publisher_event(&mut self, id: u64, e: Event, now: Instant) {
        match e {
            Event::Connected => self.publisher_connected(id, now),
            Event::RtpPacket(pkt) => {
                self.publisher_rtp(id, pkt, now);
            }
            Event::MediaIngressStats(stats) => {
                let Some(peer) = self.viewers.map.get_mut(&id) else {
                    return;
                };
                let Role::Publisher(p) = &mut peer.role else {
                    return;
                };
                if p.video_mid != Some(stats.mid) {
                    return;
                }
                let Some(f) = p.feedback.as_mut() else {
                    return;
                };
                if f.on_stats(&mut peer.rtc, stats.mid, stats.bytes, stats.loss, now) {
                    self.counters.whip_remb_sent += 1;
                    self.viewers_mark_dirty(id);
                }
            }
            Event::IceConnectionStateChange(str0m::IceConnectionState::Disconnected) => {
                self.viewer_drop(id, "ICE disconnected");
            }
            Event::Closed => self.viewer_drop(id, "closed by the publisher"),
            _ => {}
        }
    }

    /// A publisher's RTP packet: into the relay (and its capture), with any new sender report;
    /// while its stream waits for its codec, to `codec_choice` instead.
    pub(in crate::server) fn publisher_rtp(&mut self, id: u64, pkt: RtpPacket, now: Instant) {
        let server = self.addrs.webrtc;
        let Some(peer) = self.viewers.map.get_mut(&id) else {
            return;
        };
        let remote = peer.remote();
        let channel = peer.channel;
        let Role::Publisher(p) = &mut peer.role else {
            return;
        };
        if p.codec_wait.is_some() {
            self.publisher_codec_waits(id, pkt, now);
            return;
        }
        if !p.live && p.feeds_layer.is_none() {
            return;
        }
        let pt = pkt.header.payload_type;
        let kind = if p
            .video_pts
            .iter()
            .any(|(q, c)| *q == pt && Some(*c) == p.video_codec)
        {
            RelayKind::Video
        } else if p.video_pts.iter().any(|(q, _)| *q == pt) {
            p.other_codec(id, pt);
            return;
        } else if p.audio_pts.contains(&pt) {
            RelayKind::Audio
        } else {
            return;
        };
        let layer = match (kind, p.feeds_layer.or(p.video_layer)) {
            (RelayKind::Audio, _) => LayerId(0),
            (RelayKind::Video, Some(l)) => l,
            (RelayKind::Video, None) => p.layers.layer(*pkt.header.ssrc, || {
                let rtc = &mut peer.rtc;
                let ssrc = pkt.header.ssrc;
                pkt.header.ext_vals.rid.or_else(|| {
                    guarded(|| rtc.direct_api().stream_rx(&ssrc).and_then(|rx| rx.rid()))
                        .ok()
                        .flatten()
                })
            }),
        };
        let slot = match kind {
            RelayKind::Audio => 0,
            RelayKind::Video => 1 + usize::from(layer.0).min(MAX_LAYERS - 1),
        };
        let report = pkt
            .last_sender_info
            .filter(|i| p.reports.get(slot).copied().flatten() != Some(i.ntp_time));
        if let Some(info) = report {
            if let Some(r) = p.reports.get_mut(slot) {
                *r = Some(info.ntp_time);
            }
            let sr = SenderReport {
                ssrc: Ssrc(*info.ssrc),
                ntp: ntp_of(info.ntp_time),
                rtp_timestamp: info.rtp_time.numer() as u32,
                packet_count: info.sender_packet_count,
                octet_count: info.sender_octet_count,
            };
            if let (Some(c), Some(remote)) = (p.capture.as_mut(), remote) {
                c.media(remote, server, &sr.build(), now);
            }
            self.relay
                .handle_sender_report(channel, kind, layer, sr.ntp, sr.rtp_timestamp, now);
        }
        if let (Some(c), Some(remote)) = (p.capture.as_mut(), remote) {
            let header = RtpHeader {
                marker: pkt.header.marker,
                payload_type: *pt,
                sequence_number: pkt.header.sequence_number,
                timestamp: pkt.header.timestamp,
                ssrc: Ssrc(*pkt.header.ssrc),
            };
            c.media(remote, server, &header.build(&pkt.payload), now);
        }
        let rtp = RtpIn {
            kind,
            layer,
            seq: pkt.header.sequence_number,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            payload: pkt.payload,
        };
        self.counters.whip_packets += 1;
        self.relay
            .handle_rtp_queued(channel, rtp, self.rtc_waited, now);
        self.drain_relay(now);
    }

    /// ICE and DTLS are up: the publisher's stream goes live, replacing any other.
    pub(in crate::server) fn publisher_connected(&mut self, id: u64, now: Instant) {
        let Some(peer) = self.viewers.map.get_mut(&id) else {
            return;
        };
        let channel = peer.channel;
        let Role::Publisher(p) = &mut peer.role else {
            return;
        };
        if let Some(layer) = p.feeds_layer {
            info!("channel {channel}: pulling layer {layer} too (peer {id})");
            return;
        }
        if p.codec_pending() {
            // Its first video packet tells the codec (see `codec_choice`).
            p.codec_wait.get_or_insert(now + CODEC_WAIT);
            return;
        }
        let p = &**p;
        let from = p.from;
        let params = StreamParams::Rtp {
            video: p.video_mid.and(p.video_codec),
            audio: !p.audio_pts.is_empty(),
        };
        let (has_video, has_audio) = (p.video_mid.is_some(), !p.audio_pts.is_empty());
        let connect_ms = now.saturating_duration_since(peer.created).as_millis();
        self.take_over(channel, None, now);
        if let Err(e) = self.relay.start_stream(channel, params, now) {
            warn!("channel {channel}: WHIP publisher {id} refused: {e}");
            self.viewer_drop(id, "stream limit reached");
            return;
        }
        if let Some(Role::Publisher(p)) = self.viewers.map.get_mut(&id).map(|p| &mut p.role) {
            p.live = true;
        }
        self.whip_live.insert(channel, id);
        info!("channel {channel}: streaming over WHIP from {from} (connected in {connect_ms} ms)");
        self.viewers_stream_state(channel, true);
        self.hook_whip_started(channel, from, has_video, has_audio, now);
        self.drain_relay(now);
    }

    /// The relay wants a keyframe of `channel`'s video layer `layer`: a PLI to its publisher,
    /// on that layer's RTP stream.
    pub(in crate::server) fn whip_request_keyframe(&mut self, channel: ChannelId, layer: LayerId) {
        // A layer an edge pulls on its own: the PLI goes to that pull.
        let id = match self.pulls.layer_peer(channel, layer) {
            Some(id) => id,
            None => match self.whip_live.get(&channel) {
                Some(&id) => id,
                None => return,
            },
        };
        let Some(peer) = self.viewers.map.get_mut(&id) else {
            return;
        };
        let Role::Publisher(p) = &peer.role else {
            return;
        };
        let Some(mid) = p.video_mid else {
            return;
        };
        let rid = if p.feeds_layer.is_some() {
            None
        } else {
            p.layers.rid(layer)
        };
        let ssrc = p.layers.ssrc(layer);
        let rtc = &mut peer.rtc;
        let asked = guarded(|| {
            let mut api = rtc.direct_api();
            let rx = match ssrc {
                Some(s) => api.stream_rx(&s.into()),
                None => api.stream_rx_by_mid(mid, rid),
            };
            rx.map(|rx| rx.request_keyframe(KeyframeRequestKind::Pli))
                .is_some()
        });
        if matches!(asked, Ok(true)) {
            self.counters.whip_keyframe_requests += 1;
            log::debug!("channel {channel}: PLI to WHIP publisher {id}");
            self.viewers_mark_dirty(id);
        }
    }

    /// A publisher left the peer table: its stream ends if it still owns the channel.
    pub(in crate::server) fn publisher_gone(
        &mut self,
        id: u64,
        channel: ChannelId,
        mut p: Publisher,
        why: &str,
    ) {
        if let Some(mut c) = p.capture.take() {
            c.finish(Instant::now());
            info!("capture written: {}", c.path().display());
        }
        info!(
            "channel {channel}: WHIP publisher {id} from {} left ({why})",
            p.from
        );
        if self.whip_live.get(&channel) != Some(&id) {
            return;
        }
        self.whip_live.remove(&channel);
        let now = Instant::now();
        let stats = self.relay.stream_stats(channel, now);
        self.relay.stop_stream(channel, p.end);
        self.viewers_stream_state(channel, false);
        self.hook_stream_ended(channel, p.end, stats, now);
    }

    /// Before a new stream goes live on `channel`: whoever owns it now (an FTL session other
    /// than `except`, or a WHIP publisher) is told and let go, and a `stream_stop` with reason
    /// `replaced` is sent. The relay's stream itself is replaced by the new start.
    pub(in crate::server) fn take_over(
        &mut self,
        channel: ChannelId,
        except: Option<Token>,
        now: Instant,
    ) {
        if let Some(old) = self.whip_live.remove(&channel) {
            info!("channel {channel}: a new session replaces WHIP publisher {old}");
            let stats = self.relay.stream_stats(channel, now);
            self.hook_stream_ended(channel, EndReason::Replaced, stats, now);
            self.viewer_drop(old, "replaced by a newer session");
        }
        self.ftl_let_go(channel, except, now);
    }

    /// The channel's key was revoked: every WHIP publisher of the channel (live, or still
    /// connecting) presented the old key, so each is dropped; the live one's stream ends with
    /// `reason`. Returns how many went.
    pub(in crate::server) fn whip_revoke(
        &mut self,
        channel: ChannelId,
        reason: EndReason,
    ) -> usize {
        let ids: Vec<u64> = self
            .viewers
            .map
            .iter()
            .filter(|(_, p)| p.channel == channel && matches!(p.role, Role::Publisher(_)))
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            self.publisher_ends(id, reason);
            self.viewer_drop(id, "the stream key was revoked");
        }
        ids.len()
    }

    /// The WHIP publisher that owns `channel`'s stream timed out in the relay.
    pub(in crate::server) fn whip_timed_out(&mut self, channel: ChannelId, now: Instant) -> bool {
        let Some(id) = self.whip_live.remove(&channel) else {
            return false;
        };
        self.viewers_stream_state(channel, false);
        self.hook_stream_ended(channel, EndReason::MediaTimeout, None, now);
        self.viewer_drop(id, "no media");
        true
    }

    /// The congestion feedback towards `channel`'s live WHIP publisher.
    pub(in crate::server) fn whip_feedback(&self, channel: ChannelId) -> Option<&Feedback> {
        let id = self.whip_live.get(&channel)?;
        match &self.viewers.map.get(id)?.role {
            Role::Publisher(p) => p.feedback.as_ref(),
            Role::Viewer => None,
        }
    }

    /// Which protocol feeds `channel`'s live stream.
    pub(in crate::server) fn protocol_of(&self, channel: ChannelId) -> Option<&'static str> {
        if self.whip_live.contains_key(&channel) {
            Some(PROTOCOL)
        } else if self.media.contains_key(&channel) {
            Some("ftl")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::change::SdpAnswer;

    const H264: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

    #[test]
    fn offers_are_judged_by_their_codecs() {
        assert!(check_offer(H264, Offerer::Publisher).is_ok());
        let vp8 = H264.replace("H264/90000", "VP8/90000").replace(
            "a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
            "",
        );
        assert_eq!(
            check_offer(&vp8, Offerer::Publisher).unwrap().1,
            Some(VideoCodec::Vp8)
        );
        let (status, why) = check_offer(&vp8, Offerer::Viewer(VideoCodec::H264)).unwrap_err();
        assert_eq!(status, 406);
        assert!(why.contains("H.264") && why.contains("OpenH264"), "{why}");
        let (status, why) = check_offer(H264, Offerer::Viewer(VideoCodec::Av1)).unwrap_err();
        assert_eq!(status, 406);
        assert!(why.contains("this stream is AV1"), "{why}");
        let theora = vp8.replace("VP8/90000", "theora/90000");
        let (status, why) = check_offer(&theora, Offerer::Publisher).unwrap_err();
        assert_eq!(status, 406);
        assert!(why.contains("VP9") && why.contains("Opus"), "{why}");
        let mode0 = H264.replace("packetization-mode=1", "packetization-mode=0");
        assert_eq!(check_offer(&mode0, Offerer::Publisher).unwrap_err().0, 406);
        assert_eq!(
            check_offer("garbage", Offerer::Publisher).unwrap_err().0,
            400
        );
        let rejected = H264.replace("m=video 9", "m=video 0");
        assert_eq!(
            check_offer(&rejected, Offerer::Publisher).unwrap_err().0,
            400
        );
    }

    #[test]
    fn bearer_tokens_and_keys() {
        let req = |v: &str| Request {
            method: "POST".into(),
            path: "/whip/1".into(),
            query: String::new(),
            headers: vec![("authorization".into(), v.into())],
            body: Vec::new(),
        };
        assert_eq!(bearer(&req("Bearer 77-abc")), Some("77-abc"));
        assert_eq!(bearer(&req("bearer  77-abc ")), Some("77-abc"));
        assert_eq!(bearer(&req("Basic dXNlcg==")), None);
        assert_eq!(bearer(&req("Bearer")), None);
        let k = StreamKey::new(b"secret".to_vec());
        assert!(same_key(&k, &StreamKey::new(b"secret".to_vec())));
        assert!(!same_key(&k, &StreamKey::new(b"secreT".to_vec())));
        assert!(!same_key(&k, &StreamKey::new(Vec::new())));
    }

    #[test]
    fn a_data_channel_in_an_offer_is_refused_in_the_answer() {
        let with_app = H264.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1")
            + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
               a=mid:1\r\na=sctp-port:5000\r\n";
        let (offer, video) = check_offer(&with_app, Offerer::Publisher).unwrap();
        let video = publisher_codecs(&with_app, video);
        let mut rtc = super::super::pool::publisher_config(&video).build(Instant::now());
        let answer = rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();
        assert!(answer.contains("m=application 9"), "str0m answers it");
        let answer = super::super::peers::refuse_data_channels(&answer);
        assert!(answer.contains("m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n"));
        assert!(answer.contains("a=group:BUNDLE 0\r\n"), "{answer}");
        assert!(answer.contains("m=video 9 "));
        // It parses back, also with the cap's bandwidth line (str0m takes one per section).
        assert!(SdpAnswer::from_sdp_string(&answer).is_ok());
        let capped = super::super::feedback::with_cap(&answer, 2500);
        assert!(capped.contains("b=AS:2500\r\n"));
        assert!(SdpAnswer::from_sdp_string(&capped).is_ok(), "{capped}");
        // Without a data channel the answer is as str0m wrote it.
        let plain = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n";
        assert_eq!(super::super::peers::refuse_data_channels(plain), plain);
    }
}
