//! The relay: channels, their live streams and their viewers, and the queue of outputs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ftl_proto::ChannelId;
use log::{debug, info};

use crate::codec::VideoCodec;
use crate::config::RelayConfig;
use crate::ids::Ids;
use crate::layers::{LayerChooser, LayerId, LinkReport, Move, Quality, MAX_LAYERS};
use crate::stats::{StreamStats, ViewerStats};
use crate::stream::{RtpIn, Stream, StreamParams};
use crate::types::{
    Drop, EndReason, Event, Forward, Ingest, MediaKind, Output, SkipReason, ViewerId,
};
use crate::viewer::{TrackState, Viewer};
use crate::Error;

/// A channel: at most one live stream, and the viewers attached to it whether live or not.
#[derive(Debug)]
struct Channel {
    stream: Option<Stream>,
    /// Sorted by id (a join inserts in order).
    viewers: Vec<Viewer>,
    /// Taps of the live stream (recorders): fed like viewers, never counted as audience,
    /// never behind, gone with the stream.
    taps: Vec<Viewer>,
    /// Where the next overload step starts among the viewers (so skips go round), and when
    /// the last step was.
    late_cursor: usize,
    late_step_at: Option<Instant>,
}

/// The relay core. See the crate documentation for the call order.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    channels: BTreeMap<ChannelId, Channel>,
    /// Lookup only (never iterated), so its order cannot leak into outputs.
    viewer_channel: HashMap<ViewerId, ChannelId>,
    /// The same for taps.
    tap_channel: HashMap<ViewerId, ChannelId>,
    ids: Ids,
    live: usize,
    outputs: VecDeque<Output>,
}

impl Relay {
    /// A relay with no channels.
    pub fn new(config: RelayConfig) -> Self {
        Relay {
            config,
            channels: BTreeMap::new(),
            viewer_channel: HashMap::new(),
            tap_channel: HashMap::new(),
            ids: Ids::default(),
            live: 0,
            outputs: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Starts a stream on `channel` (its control session completed the handshake). A stream
    /// already live there is replaced: its viewers stay and continue with the new media from its
    /// first keyframe.
    pub fn start_stream(
        &mut self,
        channel: ChannelId,
        params: StreamParams,
        now: Instant,
    ) -> Result<(), Error> {
        if !params.has_tracks() {
            return Err(Error::NoTracks(channel));
        }
        let replacing = self
            .channels
            .get(&channel)
            .is_some_and(|c| c.stream.is_some());
        if !replacing && self.live >= self.config.max_streams {
            return Err(Error::TooManyStreams {
                limit: self.config.max_streams,
            });
        }
        if replacing {
            self.end_stream(channel, EndReason::Replaced);
        }
        let source = params.source_name();
        let mut stream = Stream::new(channel, params, &self.config, now);
        let ch = self.channels.entry(channel).or_insert_with(|| Channel {
            stream: None,
            viewers: Vec::new(),
            taps: Vec::new(),
            late_cursor: 0,
            late_step_at: None,
        });
        info!("channel {channel}: stream started ({source})");
        self.outputs
            .push_back(Output::Event(Event::StreamStarted { channel }));
        // Viewers waiting (a replaced stream's): a keyframe gets them going soonest.
        if !ch.viewers.is_empty() {
            stream.want_keyframe(now, &mut self.outputs);
        }
        ch.stream = Some(stream);
        self.live += 1;
        Ok(())
    }

    /// Ends the stream on `channel`, if any. Viewers stay attached and wait for the next one.
    pub fn stop_stream(&mut self, channel: ChannelId, reason: EndReason) {
        self.end_stream(channel, reason);
        self.drop_channel_if_empty(channel);
    }

    /// Feeds one datagram received on `channel`'s media port from `from`. Accepted media is
    /// fanned out to the channel's viewers as [`Output::Forward`]s.
    pub fn handle_datagram(
        &mut self,
        channel: ChannelId,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Ingest {
        self.handle_datagram_queued(channel, from, datagram, Duration::ZERO, now)
    }

    /// [`Relay::handle_datagram`] for a datagram that waited `queued` on this machine before
    /// it was read (the caller's socket receive timestamp). Past
    /// [`RelayConfig::late_after`], the machine is not keeping up: a share of the channel's
    /// viewers skips to the next keyframe, in turn, so what is sent stays near live; past
    /// [`RelayConfig::late_drop_after`] the datagram reaches no viewer at all.
    pub fn handle_datagram_queued(
        &mut self,
        channel: ChannelId,
        from: SocketAddr,
        datagram: &[u8],
        queued: Duration,
        now: Instant,
    ) -> Ingest {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Ingest::Dropped(Drop::NotLive);
        };
        let Some(stream) = ch.stream.as_mut() else {
            return Ingest::Dropped(Drop::NotLive);
        };
        let (ingest, packet) = stream.ingest(from, datagram, now, &mut self.outputs);
        if let Some((kind, pkt)) = packet {
            fan_out(ch, kind, &pkt, queued, &self.config, now, &mut self.outputs);
        }
        ingest
    }

    /// Feeds one RTP packet of a stream started with [`StreamParams::Rtp`] (a WebRTC peer that
    /// already decrypted and repaired it). Accepted media is fanned out like FTL's.
    pub fn handle_rtp(&mut self, channel: ChannelId, rtp: RtpIn, now: Instant) -> Ingest {
        self.handle_rtp_queued(channel, rtp, Duration::ZERO, now)
    }

    /// [`Relay::handle_rtp`] for a packet whose datagram waited `queued` on this machine (see
    /// [`Relay::handle_datagram_queued`]).
    pub fn handle_rtp_queued(
        &mut self,
        channel: ChannelId,
        rtp: RtpIn,
        queued: Duration,
        now: Instant,
    ) -> Ingest {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Ingest::Dropped(Drop::NotLive);
        };
        let Some(stream) = ch.stream.as_mut() else {
            return Ingest::Dropped(Drop::NotLive);
        };
        let (ingest, packet) = stream.ingest_rtp(rtp, now, &mut self.outputs);
        if let Some((kind, pkt)) = packet {
            fan_out(ch, kind, &pkt, queued, &self.config, now, &mut self.outputs);
        }
        ingest
    }

    /// A sender report of a WebRTC peer's track: `rtp_timestamp` was captured at NTP time
    /// `ntp` (64-bit fixed point). Both tracks map through one anchor, so they stay in sync.
    pub fn handle_sender_report(
        &mut self,
        channel: ChannelId,
        kind: MediaKind,
        layer: LayerId,
        ntp: u64,
        rtp_timestamp: u32,
        now: Instant,
    ) {
        if let Some(stream) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.stream.as_mut())
        {
            stream.sender_report(kind, layer, ntp, rtp_timestamp, now);
        }
    }

    /// Attaches a new viewer to `channel` (live or not). If the channel has a cached GOP, the
    /// viewer's first packets are queued at once.
    pub fn add_viewer(&mut self, channel: ChannelId, now: Instant) -> Result<ViewerId, Error> {
        self.add_viewer_from(channel, None, now)
    }

    /// [`Relay::add_viewer`], starting on the layer `from_top` places below the stream's
    /// largest (0: the largest) when the stream has simulcast layers: where this viewer's
    /// link carried it last time (see [`Relay::viewer_place`]). `None`: the middle layer.
    /// Either way the nearest layer with a cached GOP, so the first picture comes at once.
    pub fn add_viewer_from(
        &mut self,
        channel: ChannelId,
        from_top: Option<usize>,
        now: Instant,
    ) -> Result<ViewerId, Error> {
        if self.viewer_channel.len() >= self.config.max_viewers {
            return Err(Error::TooManyViewers {
                limit: self.config.max_viewers,
            });
        }
        let ch = self.channels.entry(channel).or_insert_with(|| Channel {
            stream: None,
            viewers: Vec::new(),
            taps: Vec::new(),
            late_cursor: 0,
            late_step_at: None,
        });
        if ch.viewers.len() >= self.config.max_viewers_per_channel {
            let limit = self.config.max_viewers_per_channel;
            self.drop_channel_if_empty(channel);
            return Err(Error::ChannelFull { channel, limit });
        }
        let id = self.ids.take();
        let (viewer, cached) = joined(
            id,
            Join::Viewer(from_top),
            ch.stream.as_mut(),
            &self.config,
            now,
            &mut self.outputs,
        );
        if let (false, Some(stream)) = (cached, ch.stream.as_mut()) {
            // Nothing cached to start from: ask the encoder, if it can be asked.
            stream.want_keyframe_of(viewer.layer, now, &mut self.outputs);
        }
        let at = ch.viewers.partition_point(|v| v.id < id);
        ch.viewers.insert(at, viewer);
        self.viewer_channel.insert(id, channel);
        debug!("channel {channel}: viewer {id} joined");
        self.outputs.push_back(Output::Event(Event::ViewerJoined {
            channel,
            viewer: id,
        }));
        Ok(id)
    }

    /// Attaches a tap to `channel`'s live stream: it gets every packet a viewer would, from the
    /// cached keyframe on (or the next one), with its own gap-free numbering, but it is not
    /// audience (no viewer count, no limit, no events) and never skips. It ends with the
    /// stream (after [`Event::StreamEnded`] its id is unknown). For recorders.
    pub fn add_tap(&mut self, channel: ChannelId, now: Instant) -> Result<ViewerId, Error> {
        self.add_tap_on(channel, TapLayer::Top, now)
    }

    /// A tap of the video layer `layer` says (see [`TapLayer`]). A tap pinned to a layer stays
    /// on it when the layer stops (an edge's viewers move; the tap carries the layer again
    /// when it comes back) and starts from that layer's cache, or asks the encoder for one of
    /// its keyframes.
    pub fn add_tap_on(
        &mut self,
        channel: ChannelId,
        layer: TapLayer,
        now: Instant,
    ) -> Result<ViewerId, Error> {
        let ch = self
            .channels
            .get_mut(&channel)
            .filter(|c| c.stream.is_some())
            .ok_or(Error::UnknownChannel(channel))?;
        let id = self.ids.take();
        let joining = match layer {
            TapLayer::Pinned(l) => Join::Pinned(l),
            TapLayer::Top | TapLayer::Largest => Join::Tap,
        };
        let (mut tap, _) = joined(
            id,
            joining,
            ch.stream.as_mut(),
            &self.config,
            now,
            &mut self.outputs,
        );
        tap.largest_only = layer == TapLayer::Largest;
        ch.taps.push(tap);
        self.tap_channel.insert(id, channel);
        Ok(id)
    }

    /// Detaches a tap before its stream ends (unknown ids are ignored).
    pub fn remove_tap(&mut self, tap: ViewerId) {
        if let Some(c) = self.tap_channel.remove(&tap) {
            self.ids.give_back(tap);
            if let Some(ch) = self.channels.get_mut(&c) {
                ch.taps.retain(|t| t.id != tap);
            }
        }
    }

    /// Detaches a viewer. Unknown ids are ignored (the viewer may have left already).
    pub fn remove_viewer(&mut self, viewer: ViewerId) {
        let Some(channel) = self.viewer_channel.remove(&viewer) else {
            return;
        };
        self.ids.give_back(viewer);
        if let Some(ch) = self.channels.get_mut(&channel) {
            if let Ok(i) = ch.viewers.binary_search_by_key(&viewer, |v| v.id) {
                ch.viewers.remove(i);
            }
        }
        debug!("channel {channel}: viewer {viewer} left");
        self.outputs
            .push_back(Output::Event(Event::ViewerLeft { channel, viewer }));
        self.drop_channel_if_empty(channel);
    }

    /// The caller's view of how much it still holds for this viewer (bytes queued towards it).
    /// Over `max_viewer_backlog`, the viewer's video skips to the next keyframe.
    pub fn report_backlog(&mut self, viewer: ViewerId, bytes: usize) {
        if let Some(v) = self.viewer_mut(viewer) {
            v.backlog = bytes;
        }
    }

    /// Makes the viewer's video skip to the next keyframe, from its next packet (the caller
    /// could not deliver what it was given: its socket refused the datagrams). Counted by
    /// reason in the stream's counters. Unknown ids and taps are ignored.
    pub fn skip_to_keyframe(&mut self, viewer: ViewerId, reason: SkipReason) {
        if let Some(v) = self.viewer_mut(viewer) {
            v.skip = Some(reason);
        }
    }

    /// The viewer's decoder asked for a keyframe (PLI/FIR). It is answered from the GOP cache,
    /// at most once per `keyframe_request_interval`. When the cache cannot answer (empty), an
    /// encoder that can be asked (a WebRTC publisher) is asked; FTL's cannot.
    /// Taps ask the same way (an edge's pull of this stream).
    pub fn request_keyframe(&mut self, viewer: ViewerId, now: Instant) -> Result<(), Error> {
        let channel = *self
            .viewer_channel
            .get(&viewer)
            .or_else(|| self.tap_channel.get(&viewer))
            .ok_or(Error::UnknownViewer(viewer))?;
        let Some(ch) = self.channels.get_mut(&channel) else {
            return Err(Error::UnknownViewer(viewer));
        };
        let v = match ch.viewers.binary_search_by_key(&viewer, |v| v.id) {
            Ok(i) => ch.viewers.get_mut(i),
            Err(_) => ch.taps.iter_mut().find(|t| t.id == viewer),
        };
        let Some(v) = v else {
            return Err(Error::UnknownViewer(viewer));
        };
        let interval = self.config.keyframe_request_interval;
        let recent = v
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < interval);
        let is_cached = |s: &Stream, l: LayerId| s.layer(l).is_some_and(|l| l.gop.is_valid());
        // A viewer on its way to another layer restarts on that one when it is cached: its
        // move lands now, instead of being undone by a replay of the layer it leaves.
        let layer = match (v.target, ch.stream.as_ref()) {
            (Some(t), Some(s)) if is_cached(s, t) => t,
            _ => v.layer,
        };
        // From the cache while its replay is short or the encoder cannot be asked.
        let max_age = self.config.restart_replay_max_age;
        let cached = |s: &Stream| {
            is_cached(s, layer)
                && (!s.keyframes_on_demand()
                    || s.layer(layer)
                        .and_then(|l| l.gop.age(now))
                        .is_some_and(|a| a <= max_age))
        };
        match ch.stream.as_mut() {
            Some(stream) if !recent && cached(stream) => {
                v.last_keyframe_request = Some(now);
                v.stats.keyframes_from_cache += 1;
                stream.counters.viewer_restarts += 1;
                if layer != v.layer {
                    v.layer = layer;
                    v.stats.layer_switches += 1;
                    stream.counters.layer_switches += 1;
                    v.chooser.switched(now);
                }
                replay_gop(v, stream, &self.config, now, &mut self.outputs);
            }
            Some(stream) if !cached(stream) && stream.keyframes_on_demand() => {
                v.stats.keyframes_from_encoder += 1;
                stream.want_keyframe_of(layer, now, &mut self.outputs);
            }
            _ => v.stats.keyframe_requests_ignored += 1,
        }
        Ok(())
    }

    /// What a viewer's link showed over its last reporting interval (its receiver report, a
    /// bandwidth estimate): on a stream with video layers, a viewer on `Quality::Auto` may be
    /// moved a layer down or up (see [`crate::layers`]). Unknown ids are ignored.
    ///
    /// Returns, when it changes, the rate in bits per second the caller should fill the
    /// viewer's link to with padding: the layer above's (with a tenth more) for a trial of it,
    /// 0 when the trial ends or the viewer moved.
    pub fn viewer_link(
        &mut self,
        viewer: ViewerId,
        report: LinkReport,
        now: Instant,
    ) -> Option<u64> {
        let (ch, i) = self.locate(viewer)?;
        let ch = self.channels.get_mut(&ch)?;
        let (stream, v) = (ch.stream.as_mut()?, ch.viewers.get_mut(i)?);
        if v.quality != Quality::Auto || stream.layers.len() < 2 {
            return None;
        }
        let active = sending_layers(stream, now);
        let on = v.target.unwrap_or(v.layer);
        let pos = active.iter().position(|id| *id == on)?;
        let rate =
            |id: Option<&LayerId>| id.and_then(|id| stream.layer(*id)).map(|l| l.bitrate(now));
        let here = rate(active.get(pos)).unwrap_or(0);
        // A layer that just started sending has no rate yet: nothing to weigh a move up by.
        let above = rate(active.get(pos + 1)).filter(|r| *r > 0);
        let to = match v.chooser.report(report, here, above, pos > 0, now) {
            Move::Stay => return None,
            Move::Trial => {
                stream.counters.layer_trials += 1;
                let pad =
                    (above.unwrap_or(here) as f64 * f64::from(LayerChooser::TRIAL_PADDING)) as u64;
                debug!("viewer {viewer}: trial of layer above at {pad} bit/s ({report:?})");
                return Some(pad);
            }
            Move::EndTrial => {
                stream.counters.layer_trials_failed += 1;
                debug!("viewer {viewer}: trial failed ({report:?})");
                return Some(0);
            }
            Move::Down => pos.checked_sub(1).and_then(|p| active.get(p)),
            Move::Up => active.get(pos + 1),
        };
        if let Some(&to) = to {
            debug!("viewer {viewer}: to layer {to} ({report:?})");
            if v.retarget(to) {
                stream.want_keyframe_of(to, now, &mut self.outputs);
            }
        }
        // A move ends any trial.
        Some(0)
    }

    /// A viewer's trial of the layer above failed between its reports (its link gave way
    /// under the padding: see [`crate::layers`]): it ends now, counted as failed. Whether one
    /// was running; the caller stops the padding.
    pub fn viewer_trial_failed(&mut self, viewer: ViewerId, now: Instant) -> bool {
        let aborted = (|| {
            let (ch, i) = self.locate(viewer)?;
            let ch = self.channels.get_mut(&ch)?;
            let (stream, v) = (ch.stream.as_mut()?, ch.viewers.get_mut(i)?);
            v.chooser.abort_trial(now).then(|| {
                stream.counters.layer_trials_failed += 1;
            })
        })();
        if aborted.is_some() {
            debug!("viewer {viewer}: trial failed between reports");
        }
        aborted.is_some()
    }

    /// Sets which layer a viewer wants: the best its link carries, or a fixed one (from the
    /// watch page's quality menu). A fixed layer the stream does not have is an error.
    pub fn set_viewer_quality(
        &mut self,
        viewer: ViewerId,
        quality: Quality,
        now: Instant,
    ) -> Result<(), Error> {
        let (ch, i) = self.locate(viewer).ok_or(Error::UnknownViewer(viewer))?;
        let ch = self
            .channels
            .get_mut(&ch)
            .ok_or(Error::UnknownViewer(viewer))?;
        let v = ch.viewers.get_mut(i).ok_or(Error::UnknownViewer(viewer))?;
        if let Quality::Fixed(layer) = quality {
            let stream = ch
                .stream
                .as_mut()
                .filter(|s| s.layer(layer).is_some())
                .ok_or(Error::UnknownLayer(layer))?;
            if v.retarget(layer) {
                stream.want_keyframe_of(layer, now, &mut self.outputs);
            }
        }
        v.quality = quality;
        v.chooser.moved(now);
        Ok(())
    }

    /// Where a viewer is among its stream's layers, counted from the largest (0), when the
    /// stream has more than one and the viewer's link chooses (`Quality::Auto`): what a
    /// server remembers of a viewer's link for its next visit ([`Relay::add_viewer_from`]).
    pub fn viewer_place(&self, viewer: ViewerId) -> Option<usize> {
        let (ch, i) = self.locate(viewer)?;
        let ch = self.channels.get(&ch)?;
        let v = ch.viewers.get(i)?;
        let ranked = ch.stream.as_ref()?.ranked();
        if ranked.len() < 2 || v.quality != Quality::Auto {
            return None;
        }
        let on = v.target.unwrap_or(v.layer);
        let pos = ranked.iter().position(|l| *l == on)?;
        Some(ranked.len() - 1 - pos)
    }

    /// How many video layers `channel`'s live stream has (0 when it is not live). A viewer of a
    /// stream of more than one gets a bandwidth estimate for choosing between them.
    pub fn layer_count(&self, channel: ChannelId) -> usize {
        self.channels
            .get(&channel)
            .and_then(|ch| ch.stream.as_ref())
            .map_or(0, |s| s.ranked().len())
    }

    /// What a viewer of a simulcast stream that follows its link would move up to: the bits
    /// per second of the next layer up now sending. Its bandwidth estimate has to show room
    /// for this, so it is what the estimate probes for. `None` when there is nothing to probe
    /// for now: a viewer at the top, on a fixed layer, of a stream of one layer, or one that
    /// could not start a trial of the layer above now (see `LayerChooser::may_trial`).
    pub fn viewer_next_rate(&self, viewer: ViewerId, now: Instant) -> Option<u64> {
        let (ch, i) = self.locate(viewer)?;
        let ch = self.channels.get(&ch)?;
        let stream = ch.stream.as_ref()?;
        let v = ch.viewers.get(i)?;
        if v.quality != Quality::Auto || stream.layers.len() < 2 || !v.chooser.may_trial(now) {
            return None;
        }
        let on = v.target.unwrap_or(v.layer);
        let active = sending_layers(stream, now);
        let pos = active.iter().position(|id| *id == on)?;
        let above = stream.layer(*active.get(pos + 1)?)?;
        Some(above.bitrate(now)).filter(|r| *r > 0)
    }

    /// The layer a viewer is on, and the one it is moving to.
    pub fn viewer_layer(&self, viewer: ViewerId) -> Option<(LayerId, Option<LayerId>)> {
        let (ch, i) = self.locate(viewer)?;
        let v = self.channels.get(&ch)?.viewers.get(i)?;
        Some((v.layer, v.target))
    }

    /// A viewer's channel and index there.
    fn locate(&self, viewer: ViewerId) -> Option<(ChannelId, usize)> {
        let channel = *self.viewer_channel.get(&viewer)?;
        let ch = self.channels.get(&channel)?;
        let i = ch.viewers.binary_search_by_key(&viewer, |v| v.id).ok()?;
        Some((channel, i))
    }

    /// Next thing for the caller to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Relay::handle_timeout`] has work (NACKs or a keyframe request due, a stream's
    /// media timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.channels
            .values()
            .filter_map(|c| c.stream.as_ref())
            .map(Stream::poll_timeout)
            .min()
    }

    /// Sends due NACKs and keyframe requests, and ends streams whose media stopped.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for (channel, ch) in &mut self.channels {
            if let Some(stream) = ch.stream.as_mut() {
                if stream.handle_timeout(now, &mut self.outputs) {
                    timed_out.push(*channel);
                }
            }
        }
        for channel in timed_out {
            info!(
                "channel {channel}: no media for {:?}",
                self.config.media_timeout
            );
            self.stop_stream(channel, EndReason::MediaTimeout);
        }
    }

    /// Where `channel`'s FTL media comes from, once its client sent a valid datagram.
    pub fn ingest_source(&self, channel: ChannelId) -> Option<SocketAddr> {
        self.channels.get(&channel)?.stream.as_ref()?.source()
    }

    /// `from` may never become `channel`'s FTL source: the source of a session that ended on
    /// the same media port a moment ago, whose encoder may still be sending there.
    pub fn refuse_source(&mut self, channel: ChannelId, from: SocketAddr) {
        if let Some(s) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.stream.as_mut())
        {
            s.refuse_source(from);
        }
    }

    /// Whether `channel` has a live stream.
    pub fn is_live(&self, channel: ChannelId) -> bool {
        self.channels
            .get(&channel)
            .is_some_and(|c| c.stream.is_some())
    }

    /// Channels with a stream or viewers, in order.
    pub fn channels(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.keys().copied()
    }

    /// Live streams.
    pub fn live_streams(&self) -> usize {
        self.live
    }

    /// Viewers in total.
    pub fn viewer_count(&self) -> usize {
        self.viewer_channel.len()
    }

    /// Viewers attached to `channel`.
    pub fn channel_viewers(&self, channel: ChannelId) -> usize {
        self.channels.get(&channel).map_or(0, |c| c.viewers.len())
    }

    /// The channel a viewer watches.
    pub fn viewer_channel(&self, viewer: ViewerId) -> Option<ChannelId> {
        self.viewer_channel.get(&viewer).copied()
    }

    /// Statistics of `channel`'s live stream.
    pub fn stream_stats(&self, channel: ChannelId, now: Instant) -> Option<StreamStats> {
        let ch = self.channels.get(&channel)?;
        let mut stats = ch.stream.as_ref()?.stats(ch.viewers.len(), now);
        for l in &mut stats.layers {
            l.viewers = ch.viewers.iter().filter(|v| v.layer == l.id).count();
        }
        Some(stats)
    }

    /// The codec of `channel`'s video, and its profile once a parameter set gave it (H.264:
    /// the SDP `profile-level-id`).
    pub fn video_codec(&self, channel: ChannelId) -> Option<(VideoCodec, Option<&str>)> {
        self.channels.get(&channel)?.stream.as_ref()?.video_codec()
    }

    /// The latest whole keyframe of `channel`'s largest picture, from the GOP cache: what a
    /// thumbnail is made of. `None` while no whole keyframe is cached.
    pub fn keyframe(&self, channel: ChannelId) -> Option<crate::types::Keyframe> {
        self.channels.get(&channel)?.stream.as_ref()?.keyframe()
    }

    /// Asks the publisher for a keyframe of `channel`'s largest picture when the latest is
    /// older than `older_than`: what keeps a still picture of a stream current when its
    /// encoder sends keyframes only when asked (browsers). Only sources that can be asked
    /// (WHIP); the usual rate limit applies. Whether a request was made.
    pub fn refresh_keyframe(
        &mut self,
        channel: ChannelId,
        older_than: Duration,
        now: Instant,
    ) -> bool {
        let Some(stream) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.stream.as_mut())
        else {
            return false;
        };
        stream.refresh_keyframe(older_than, now, &mut self.outputs)
    }

    /// Statistics of one viewer.
    pub fn viewer_stats(&self, viewer: ViewerId) -> Option<ViewerStats> {
        let channel = self.viewer_channel.get(&viewer)?;
        let ch = self.channels.get(channel)?;
        let i = ch.viewers.binary_search_by_key(&viewer, |v| v.id).ok()?;
        ch.viewers.get(i).map(|v| v.stats)
    }

    fn viewer_mut(&mut self, viewer: ViewerId) -> Option<&mut Viewer> {
        let channel = self.viewer_channel.get(&viewer)?;
        let ch = self.channels.get_mut(channel)?;
        let i = ch.viewers.binary_search_by_key(&viewer, |v| v.id).ok()?;
        ch.viewers.get_mut(i)
    }

    fn end_stream(&mut self, channel: ChannelId, reason: EndReason) {
        let Some(ch) = self.channels.get_mut(&channel) else {
            return;
        };
        if ch.stream.take().is_none() {
            return;
        }
        self.live -= 1;
        for t in ch.taps.drain(..) {
            self.tap_channel.remove(&t.id);
            self.ids.give_back(t.id);
        }
        for v in &mut ch.viewers {
            v.video.reset();
            v.audio.reset();
            // The next stream's layers are its own: start again on its first.
            v.layer = LayerId(0);
            v.target = None;
        }
        info!("channel {channel}: stream ended ({reason:?})");
        self.outputs
            .push_back(Output::Event(Event::StreamEnded { channel, reason }));
    }

    fn drop_channel_if_empty(&mut self, channel: ChannelId) {
        if self
            .channels
            .get(&channel)
            .is_some_and(|c| c.stream.is_none() && c.viewers.is_empty())
        {
            self.channels.remove(&channel);
        }
    }
}

/// Hands one accepted packet to every viewer of the channel, whichever source it came from;
/// a video packet that waited `queued` past the deadline first takes an overload step.
fn fan_out(
    ch: &mut Channel,
    kind: MediaKind,
    pkt: &crate::Packet,
    queued: Duration,
    config: &RelayConfig,
    now: Instant,
    outputs: &mut VecDeque<Output>,
) {
    if kind == MediaKind::Video && queued > config.late_after {
        overload_step(ch, config, now);
    }
    if kind == MediaKind::Video {
        follow_layers(ch, pkt, now, outputs);
    }
    let too_late = queued > config.late_drop_after;
    let mut skips = 0;
    let mut skipped = 0;
    let (mut late, mut refused, mut switches) = (0, 0, 0);
    for t in &mut ch.taps {
        if let Some(f) = t.on_packet(kind, pkt, usize::MAX, false, now) {
            outputs.push_back(Output::Forward(f));
        }
    }
    for v in &mut ch.viewers {
        let s = &v.stats;
        let before = (
            s.skips,
            s.skipped_packets,
            s.skips_late,
            s.skips_send_failed,
            s.layer_switches,
        );
        if let Some(f) = v.on_packet(kind, pkt, config.max_viewer_backlog, too_late, now) {
            outputs.push_back(Output::Forward(f));
        }
        skips += v.stats.skips - before.0;
        skipped += v.stats.skipped_packets - before.1;
        late += v.stats.skips_late - before.2;
        refused += v.stats.skips_send_failed - before.3;
        switches += v.stats.layer_switches - before.4;
    }
    if let Some(s) = ch.stream.as_mut() {
        s.counters.viewer_skips += skips;
        s.counters.viewer_skipped_packets += skipped;
        s.counters.viewer_skips_late += late;
        s.counters.viewer_skips_send_failed += refused;
        s.counters.layer_switches += switches;
    }
}

/// Keeps members on layers that send, as a video packet of layer `pkt.layer` arrives: taps
/// follow the top layer; a viewer whose layer stopped (a publisher drops its upper layers when
/// its uplink narrows) moves to the best one still sending below it, or the nearest above.
/// Only streams with more than one layer have anything to do here.
fn follow_layers(
    ch: &mut Channel,
    pkt: &crate::Packet,
    now: Instant,
    outputs: &mut VecDeque<Output>,
) {
    let Some(stream) = ch.stream.as_mut() else {
        return;
    };
    if stream.layers.len() < 2 {
        return;
    }
    // The layers from the smallest picture up, and whether each sends (on the stack: this
    // runs for every video packet of a simulcast).
    let mut layers = [(LayerId(0), false); MAX_LAYERS];
    let mut n = 0;
    for (slot, id) in layers.iter_mut().zip(stream.ranked()) {
        *slot = (*id, stream.layer(*id).is_some_and(|l| l.active(now)));
        n += 1;
    }
    let ranked = layers.get(..n).unwrap_or_default();
    let top = ranked.iter().rev().find(|(_, a)| *a).map(|(id, _)| *id);
    let largest = ranked.last().map(|(id, _)| *id);
    let all_sending = ranked.iter().all(|(_, a)| *a);
    // What each tap that is not pinned should carry (see `TapLayer`).
    let tap_wants = |t: &Viewer| if t.largest_only { largest } else { top };
    let taps_on_top = ch
        .taps
        .iter()
        .filter(|t| t.quality == Quality::Auto)
        .all(|t| Some(t.target.unwrap_or(t.layer)) == tap_wants(t));
    if all_sending && taps_on_top {
        return; // the common path
    }
    let sending = |id: LayerId| ranked.iter().any(|(l, a)| *l == id && *a);
    // Which layers' keyframes are now wanted, by place in `ranked`.
    let mut wanted = [false; MAX_LAYERS];
    let mut want = |to: LayerId| {
        if let Some(w) = ranked
            .iter()
            .position(|(id, _)| *id == to)
            .and_then(|i| wanted.get_mut(i))
        {
            *w = true;
        }
    };
    for t in ch.taps.iter_mut().filter(|t| t.quality == Quality::Auto) {
        let goal = tap_wants(t);
        if let Some(to) = goal.filter(|to| t.target.unwrap_or(t.layer) != *to) {
            if t.retarget(to) {
                want(to);
            }
        }
    }
    for v in ch.viewers.iter_mut().filter(|_| !all_sending) {
        let on = v.target.unwrap_or(v.layer);
        if on == pkt.layer || sending(on) {
            continue;
        }
        let pos = ranked.iter().position(|(id, _)| *id == on).unwrap_or(0);
        let below = ranked.iter().take(pos).rev().find(|(_, a)| *a);
        let above = ranked.iter().skip(pos + 1).find(|(_, a)| *a);
        if let Some((to, _)) = below.or(above) {
            debug!("viewer {}: layer {on} stopped, to layer {to}", v.id);
            if v.retarget(*to) {
                v.chooser.moved(now);
                want(*to);
            }
        }
    }
    for ((layer, _), w) in ranked.iter().zip(wanted) {
        if w {
            stream.want_keyframe_of(*layer, now, outputs);
        }
    }
}

/// One step of the overload policy: a late video packet marks the next share of the viewers
/// that are live (in turn, from where the last step stopped) to skip to the next keyframe.
/// Steps are `late_step` apart: what one step saves shows only in packets read after it.
fn overload_step(ch: &mut Channel, config: &RelayConfig, now: Instant) {
    if let Some(s) = ch.stream.as_mut() {
        s.counters.late_packets += 1;
    }
    if ch
        .late_step_at
        .is_some_and(|t| now.saturating_duration_since(t) < config.late_step)
    {
        return;
    }
    ch.late_step_at = Some(now);
    let n = ch.viewers.len();
    let mut share = (n / config.late_share.max(1)).max(1);
    for _ in 0..n {
        if share == 0 {
            break;
        }
        let i = ch.late_cursor % n;
        ch.late_cursor = i + 1;
        if let Some(v) = ch.viewers.get_mut(i) {
            if v.video.state == TrackState::Live && v.skip.is_none() {
                v.skip = Some(SkipReason::Late);
                share -= 1;
            }
        }
    }
}

/// Which video layer a tap carries (see [`Relay::add_tap_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapLayer {
    /// The largest picture that is sending, following it down when it stops: what an edge's
    /// main pull carries (its viewers need a picture that goes on).
    Top,
    /// The largest picture there is, moving up when a larger layer appears and never down: a
    /// recording keeps one size (a paused top layer is a pause in the file, not a switch to a
    /// smaller picture the file's track does not describe).
    Largest,
    /// That layer only: an edge's pull of one more layer of a simulcast.
    Pinned(LayerId),
}

/// Who joins a channel (see [`joined`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Join {
    /// A viewer, and where its link carried it last time (layers from the top).
    Viewer(Option<usize>),
    /// A tap of the top layer (recordings, edge pulls of one layer).
    Tap,
    /// A tap of one layer, whatever happens to the others.
    Pinned(LayerId),
}

/// A new member of a channel (viewer or tap), started from the stream's cached GOP when there
/// is one; whether it was.
/// A viewer starts on the middle layer (a tap on the top one), or the nearest to it that has a
/// GOP cached, so its first picture comes at once; its link moves it from there.
fn joined(
    id: ViewerId,
    joining: Join,
    stream: Option<&mut Stream>,
    config: &RelayConfig,
    now: Instant,
    outputs: &mut VecDeque<Output>,
) -> (Viewer, bool) {
    let mut viewer = Viewer::new(id);
    viewer.chooser.moved(now);
    let Some(s) = stream else {
        return (viewer, false);
    };
    if let Join::Pinned(layer) = joining {
        viewer.quality = Quality::Fixed(layer);
        viewer.layer = layer;
        let cached = s.layer(layer).is_some_and(|l| l.gop.is_valid());
        if cached {
            replay_gop(&mut viewer, s, config, now, outputs);
        } else {
            s.want_keyframe_of(layer, now, outputs);
        }
        return (viewer, cached);
    }
    let ranked = s.ranked();
    let top = ranked.len().saturating_sub(1);
    let want = match joining {
        Join::Tap => top,
        Join::Viewer(Some(from_top)) => top.saturating_sub(from_top),
        Join::Viewer(None) | Join::Pinned(_) => top / 2,
    };
    let cached = |i: &usize| {
        ranked
            .get(*i)
            .and_then(|id| s.layer(*id))
            .is_some_and(|l| l.gop.is_valid())
    };
    let start = (0..ranked.len())
        .filter(cached)
        .min_by_key(|i| i.abs_diff(want))
        .or(Some(want).filter(|_| !ranked.is_empty()));
    if let Some(layer) = start.and_then(|i| ranked.get(i)) {
        viewer.layer = *layer;
    }
    let cached = start.as_ref().is_some_and(cached);
    if cached {
        replay_gop(&mut viewer, s, config, now, outputs);
    }
    (viewer, cached)
}

/// Queues the cached GOP for one viewer (join or keyframe request).
/// A stream's video layers now sending, smallest picture first: those a viewer moves among.
fn sending_layers(stream: &Stream, now: Instant) -> Vec<LayerId> {
    stream
        .ranked()
        .iter()
        .copied()
        .filter(|id| stream.layer(*id).is_some_and(|l| l.active(now)))
        .collect()
}

fn replay_gop(
    viewer: &mut Viewer,
    stream: &Stream,
    config: &RelayConfig,
    now: Instant,
    outputs: &mut VecDeque<Output>,
) {
    let Some(gop) = stream.layer(viewer.layer).map(|l| &l.gop) else {
        return;
    };
    if !gop.is_valid() {
        return;
    }
    viewer.target = None;
    let id = viewer.id;
    let stats = &mut viewer.stats;
    viewer
        .video
        .replay(gop.packets(), config.catch_up_ticks, now, |pkt, seq, ts| {
            stats.sent_packets += 1;
            stats.sent_bytes += pkt.payload.len() as u64;
            outputs.push_back(Output::Forward(Forward {
                viewer: id,
                kind: MediaKind::Video,
                seq,
                timestamp: ts,
                wallclock: pkt.wallclock,
                marker: pkt.marker,
                keyframe: pkt.keyframe,
                cached: true,
                payload: pkt.payload.clone(),
            }));
        });
    debug_assert!(viewer.video.state == TrackState::Live);
}
