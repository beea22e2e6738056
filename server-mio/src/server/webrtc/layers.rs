//! Simulcast where it meets WebRTC: a publisher's RIDs as the relay's video layers, and the
//! WHEP layer extension with which a viewer chooses its layer. What a viewer gets and when it
//! switches is decided in `relay_core::layers`; this room only names layers on the wire.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use relay_core::{LayerId, Quality, MAX_LAYERS};
use serde_json::Value;
use str0m::media::{Rid, Rids};

use crate::server::http::Response;
use crate::server::Server;

/// The most SSRCs one publisher's video may be learned under (its layers, and a few more for
/// an encoder that restarts a layer under a new SSRC): the table stays a handful of entries.
const MAX_SSRCS: usize = 2 * MAX_LAYERS;

/// A publisher's video layers: its RIDs in the order its offer lists them (a layer's
/// [`LayerId`] is its place there), and the SSRCs learned for them. Without simulcast, one
/// layer, 0.
#[derive(Debug, Default)]
pub(in crate::server) struct PublisherLayers {
    rids: Vec<Rid>,
    by_ssrc: Vec<(u32, LayerId)>,
    /// Layers signalled by SSRC (`a=ssrc-group:SIM`, as stacks before RIDs do): a layer's id
    /// is its SSRC's place in the group.
    sim: Vec<u32>,
}

impl PublisherLayers {
    /// The layers of a video media's receive RIDs as negotiated.
    pub(in crate::server) fn new(rids: &Rids) -> PublisherLayers {
        PublisherLayers {
            rids: match rids {
                Rids::Specific(r) => r.clone(),
                Rids::None | Rids::Any => Vec::new(),
            },
            by_ssrc: Vec::new(),
            sim: Vec::new(),
        }
    }

    /// How many layers the publisher's offer declared (RIDs, or an SSRC group): known from the
    /// negotiation on, before each layer's first packet (a browser holds its upper layers back
    /// until its estimate allows them).
    pub(in crate::server) fn declared(&self) -> usize {
        self.rids.len().max(self.sim.len())
    }

    /// Layers signalled as an SSRC group (see [`sim_group`]), where the offer has no RIDs.
    pub(in crate::server) fn with_sim(mut self, ssrcs: Vec<u32>) -> PublisherLayers {
        if self.rids.is_empty() {
            self.sim = ssrcs;
        }
        self
    }

    /// The SSRC of a layer signalled by SSRC group (where a keyframe request for it goes).
    pub(in crate::server) fn ssrc(&self, layer: LayerId) -> Option<u32> {
        self.sim.get(usize::from(layer.0)).copied()
    }

    /// The layer of a video packet on `ssrc`: known, or learned from its RID (`rid` looks it
    /// up: the header extension, or str0m's stream). A RID the offer did not list, or one past
    /// the 256th, gets a layer the relay keeps no room for, so it never mixes into another.
    pub(in crate::server) fn layer(
        &mut self,
        ssrc: u32,
        rid: impl FnOnce() -> Option<Rid>,
    ) -> LayerId {
        if let Some((_, l)) = self.by_ssrc.iter().find(|(s, _)| *s == ssrc) {
            return *l;
        }
        if !self.sim.is_empty() {
            // An SSRC outside the group gets a layer the relay keeps no room for.
            let layer = self
                .sim
                .iter()
                .position(|s| *s == ssrc)
                .and_then(|i| u8::try_from(i).ok())
                .map_or(LayerId(u8::MAX), LayerId);
            if self.by_ssrc.len() < MAX_SSRCS {
                self.by_ssrc.push((ssrc, layer));
            }
            return layer;
        }
        if self.rids.is_empty() {
            return LayerId(0);
        }
        let Some(rid) = rid() else {
            return LayerId(0); // not known yet: str0m routes simulcast by RID, so rare
        };
        let layer = self
            .rids
            .iter()
            .position(|r| *r == rid)
            .and_then(|i| u8::try_from(i).ok())
            .map_or(LayerId(u8::MAX), LayerId);
        if self.by_ssrc.len() < MAX_SSRCS {
            self.by_ssrc.push((ssrc, layer));
        }
        layer
    }

    /// The RID a keyframe request for `layer` goes to (`None`: the one stream there is).
    pub(in crate::server) fn rid(&self, layer: LayerId) -> Option<Rid> {
        self.rids.get(usize::from(layer.0)).copied()
    }
}

/// The SSRCs of a video section's `a=ssrc-group:SIM` (simulcast signalled by SSRC, the
/// smallest picture first as such offers list them), at most [`MAX_LAYERS`] distinct ones;
/// empty when there is none or it is malformed.
pub(in crate::server) fn sim_group(sdp: &str) -> Vec<u32> {
    let mut video = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            video = m.starts_with("video ");
            continue;
        }
        let Some(rest) = line.strip_prefix("a=ssrc-group:SIM ").filter(|_| video) else {
            continue;
        };
        let mut out: Vec<u32> = Vec::new();
        for part in rest.split_ascii_whitespace() {
            let Ok(ssrc) = part.parse::<u32>() else {
                return Vec::new();
            };
            if out.contains(&ssrc) || out.len() >= MAX_LAYERS {
                return Vec::new();
            }
            out.push(ssrc);
        }
        return if out.len() >= 2 { out } else { Vec::new() };
    }
    Vec::new()
}

/// Where each network's viewers last were among a simulcast's layers (counted from the top),
/// by address group (an IPv4 address, an IPv6 /64): a viewer who comes back starts on the
/// layer its link carried then instead of the middle one. Bounded in entries and age.
#[derive(Debug, Default)]
pub(in crate::server) struct LinkMemory {
    places: HashMap<IpAddr, (usize, Instant)>,
}

impl LinkMemory {
    /// Networks remembered at most.
    const MAX: usize = 4096;
    /// How long a place is worth remembering (links change).
    const TTL: Duration = Duration::from_secs(30 * 60);

    /// Notes where a viewer of `group` was when it left.
    pub(in crate::server) fn remember(&mut self, group: IpAddr, from_top: usize, now: Instant) {
        if self.places.len() >= Self::MAX && !self.places.contains_key(&group) {
            self.places
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < Self::TTL);
            if self.places.len() >= Self::MAX {
                let oldest = self
                    .places
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(g, _)| *g);
                if let Some(g) = oldest {
                    self.places.remove(&g);
                }
            }
        }
        self.places.insert(group, (from_top, now));
    }

    /// Where a viewer of `group` starts, if its network was seen lately.
    pub(in crate::server) fn recall(&self, group: IpAddr, now: Instant) -> Option<usize> {
        self.places
            .get(&group)
            .filter(|(_, at)| now.saturating_duration_since(*at) < Self::TTL)
            .map(|(p, _)| *p)
    }
}

/// What the body of `POST …/layer` asks for: `{"encodingId": "<layer id>"}` (a number or its
/// string), or `{}`, `{"encodingId": null}` or `"auto"` for the viewer's link to decide.
pub(in crate::server) fn layer_request(body: &[u8]) -> Result<Quality, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Quality::Auto);
    }
    let body: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    match body.get("encodingId") {
        None | Some(Value::Null) => Ok(Quality::Auto),
        Some(Value::String(s)) if s == "auto" => Ok(Quality::Auto),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .and_then(|n| u8::try_from(n).ok())
            .map(|n| Quality::Fixed(LayerId(n)))
            .ok_or_else(|| "encodingId must be a layer id or \"auto\"".to_owned()),
    }
}

impl Server {
    /// `POST /whep/{channel}/{session}/layer` (the WHEP layer extension): fixes the viewer on
    /// a simulcast layer (its id, as `/api/streams` lists the layers) or gives it back to its
    /// link. Answers with the layer it is on and the one it moves to.
    pub(in crate::server) fn whep_layer(
        &mut self,
        session: &str,
        body: &[u8],
        now: Instant,
    ) -> Response {
        let peer = self
            .viewers
            .by_whep
            .get(session)
            .and_then(|id| self.viewers.map.get(id));
        let estimate = peer.and_then(|v| v.estimate.as_ref()).map(|e| e.last());
        let Some(viewer) = peer.and_then(|v| v.relay_id()) else {
            return Response::text(404, "no such session, or not connected yet").cors();
        };
        let quality = match layer_request(body) {
            Ok(q) => q,
            Err(why) => return Response::text(400, &why).cors(),
        };
        if let Err(e) = self.relay.set_viewer_quality(viewer, quality, now) {
            return Response::text(404, &e.to_string()).cors();
        }
        self.drain_relay(now);
        let (on, to) = self.relay.viewer_layer(viewer).unzip();
        let body = serde_json::json!({
            "layer": on.map(|l| l.0),
            "target": to.flatten().map(|l| l.0),
            "auto": quality == Quality::Auto,
        });
        let body = match estimate {
            // Its link's bandwidth estimate, where its layer follows one (null before the
            // first).
            Some(e) => {
                let mut body = body;
                body["estimate_bps"] = serde_json::json!(e);
                body
            }
            None => body,
        };
        Response::new(200, "application/json", body.to_string()).cors()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_groups_are_read_from_the_video_section_only() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ssrc-group:SIM 1 2\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc-group:FID 10 11\r\n\
                   a=ssrc-group:SIM 10 20 30\r\n";
        assert_eq!(sim_group(sdp), [10, 20, 30]);
        assert!(sim_group(&sdp.replace("SIM 10 20 30", "SIM 10 20 30 40")).is_empty());
        assert!(sim_group(&sdp.replace("SIM 10 20 30", "SIM 10 10")).is_empty());
        assert!(sim_group(&sdp.replace("SIM 10 20 30", "SIM 10 x")).is_empty());
        assert!(sim_group(&sdp.replace("SIM 10 20 30", "SIM 10")).is_empty());
        assert!(sim_group("m=video 9 X 96\r\n").is_empty());
        let mut layers = PublisherLayers::default().with_sim(vec![10, 20, 30]);
        assert_eq!(layers.layer(20, || None), LayerId(1));
        assert_eq!(layers.layer(30, || None), LayerId(2));
        assert_eq!(layers.layer(99, || None), LayerId(u8::MAX));
        assert_eq!(layers.ssrc(LayerId(0)), Some(10));
    }

    #[test]
    fn link_memory_is_bounded_and_forgets() {
        let t0 = Instant::now();
        let mut m = LinkMemory::default();
        let ip = |n: u32| IpAddr::from(std::net::Ipv4Addr::from(n));
        m.remember(ip(1), 2, t0);
        assert_eq!(m.recall(ip(1), t0), Some(2));
        assert_eq!(m.recall(ip(2), t0), None);
        assert_eq!(m.recall(ip(1), t0 + LinkMemory::TTL), None, "too old");
        for n in 0..(LinkMemory::MAX as u32 + 10) {
            m.remember(ip(100 + n), 0, t0 + Duration::from_millis(u64::from(n)));
        }
        assert!(m.places.len() <= LinkMemory::MAX);
        assert_eq!(
            m.recall(
                ip(100 + LinkMemory::MAX as u32 + 9),
                t0 + Duration::from_secs(5)
            ),
            Some(0),
            "the newest is kept"
        );
    }

    #[test]
    fn layer_requests_read_as_the_extension_spells_them() {
        assert_eq!(layer_request(b""), Ok(Quality::Auto));
        assert_eq!(layer_request(b"{}"), Ok(Quality::Auto));
        assert_eq!(layer_request(br#"{"encodingId":null}"#), Ok(Quality::Auto));
        assert_eq!(
            layer_request(br#"{"encodingId":"auto"}"#),
            Ok(Quality::Auto)
        );
        let two = Ok(Quality::Fixed(LayerId(2)));
        assert_eq!(layer_request(br#"{"encodingId":"2"}"#), two);
        assert_eq!(layer_request(br#"{"encodingId":2}"#), two);
        for bad in [
            &br#"{"encodingId":"x"}"#[..],
            br#"{"encodingId":256}"#,
            br#"{"encodingId":-1}"#,
            br#"{"encodingId":[1]}"#,
            b"{not json",
            b"\xff",
        ] {
            assert!(layer_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rids_name_layers_in_offer_order_and_unknown_ones_never_alias() {
        let rid = |s: &str| Rid::from(s);
        let mut l = PublisherLayers::new(&Rids::Specific(vec![rid("q"), rid("h"), rid("f")]));
        assert_eq!(l.layer(10, || Some(rid("f"))), LayerId(2));
        // Learned: no lookup the second time.
        assert_eq!(l.layer(10, || panic!("looked up again")), LayerId(2));
        assert_eq!(l.layer(11, || Some(rid("q"))), LayerId(0));
        assert_eq!(l.layer(12, || Some(rid("zz"))), LayerId(u8::MAX));
        assert_eq!(l.rid(LayerId(1)), Some(rid("h")));
        assert_eq!(l.rid(LayerId(5)), None);
        // A flood of SSRCs is answered without the table growing.
        for ssrc in 100..1000 {
            let _ = l.layer(ssrc, || Some(rid("h")));
        }
        assert!(l.by_ssrc.len() <= MAX_SSRCS);
        // Without simulcast everything is layer 0, with nothing learned.
        let mut one = PublisherLayers::new(&Rids::None);
        assert_eq!(one.layer(7, || Some(rid("f"))), LayerId(0));
        assert_eq!(one.rid(LayerId(0)), None);
    }
}
