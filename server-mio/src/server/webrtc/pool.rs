//! Building `Rtc`s off the loop thread. Each costs 1.5-2.5 ms (crypto self-tests, keys); built
//! on the loop, a burst of joins would stall every stream. A helper thread keeps a few ready
//! and hands them over through a channel and the loop's `mio::Waker`. All share one DTLS
//! certificate generated at start.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use log::warn;
use mio::Waker;
use relay_core::VideoCodec;
use str0m::bwe::Bitrate;
use str0m::{Rtc, RtcConfig};

/// How many ready `Rtc`s the loop keeps at hand.
pub(in crate::server) const WARM: usize = 8;
/// Most video packets str0m keeps per viewer to answer NACKs (RTX), ~0.42 KB a slot (the
/// payload itself is shared by all viewers). The history is bounded by time first
/// ([`RTX_HISTORY`]); this cap only bounds a very high bitrate
/// (1024 slots are 0.5 s at ~12 Mbit/s).
pub(in crate::server) const SEND_BUFFER_VIDEO: usize = 1024;
/// How far back a viewer's NACK can reach: a loss is reported within a round trip or two, so
/// half a second covers any path worth repairing, and a 2.5 Mbit/s stream keeps ~125
/// packets (~52 KB) a viewer instead of str0m's default 3 s.
pub(in crate::server) const RTX_HISTORY: std::time::Duration =
    std::time::Duration::from_millis(500);
/// How long after the last packet of a GOP replay a viewer's RTX history is started afresh.
/// A replay (a join, a keyframe request) sends up to a whole GOP in one instant, and str0m's
/// history grows to hold all of it (~500 slots, ~200 KB, for a 2 s GOP at 2.5 Mbit/s) and
/// never shrinks; once the replay is older than [`RTX_HISTORY`] nothing in it can be asked
/// for again, so a new history sized by the live stream replaces it. Only NACKs for the last
/// half second of live packets at that instant go unanswered, once.
pub(in crate::server) const RTX_RESET_AFTER_REPLAY: std::time::Duration =
    std::time::Duration::from_millis(750);
/// How often a viewer's `Rtc` reports its send statistics: the loss its receiver reports
/// sets its retransmission budget (`relay_core::repair`).
pub(in crate::server) const VIEWER_STATS_INTERVAL: std::time::Duration =
    std::time::Duration::from_secs(1);
/// The same for an estimating viewer: twice as often, so that a trial of the layer above
/// (padding its link, see `relay_core::layers`) that the link cannot carry ends within half a
/// second of the loss it causes. Its transport-wide feedback comes every ~100 ms anyway.
pub(in crate::server) const ESTIMATING_STATS_INTERVAL: std::time::Duration =
    std::time::Duration::from_millis(500);

/// How many ready `Rtc`s of the estimating kind the loop keeps at hand: simulcast streams are
/// few, and one more is built while the first is used.
pub(in crate::server) const WARM_ESTIMATING: usize = 2;
/// The bandwidth estimate an estimating viewer starts from, before its feedback says more:
/// str0m probes from it at once (3x and 6x), so the first second of feedback finds the link.
pub(in crate::server) const INITIAL_ESTIMATE: Bitrate = Bitrate::kbps(1000);

/// Which viewer configuration an `Rtc` was built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum ViewerKind {
    /// No congestion feedback: a stream of one layer has nothing to choose between, so the
    /// estimate would cost every packet for nothing (see [`rtc_config`]).
    Plain,
    /// Transport-wide sequence numbers and str0m's bandwidth estimate (with its probing): a
    /// viewer of a simulcast stream learns which layer its link carries without trying it.
    Estimating,
}

impl ViewerKind {
    fn index(self) -> usize {
        match self {
            ViewerKind::Plain => 0,
            ViewerKind::Estimating => 1,
        }
    }

    fn warm(self) -> usize {
        match self {
            ViewerKind::Plain => WARM,
            ViewerKind::Estimating => WARM_ESTIMATING,
        }
    }
}

enum Request {
    Build(usize, ViewerKind),
    Stop,
}

/// The helper thread and the ready `Rtc`s, per kind.
pub(in crate::server) struct RtcPool {
    /// The DTLS certificate every `Rtc` shares (a publisher's is built on the loop).
    cert: Option<str0m::config::DtlsCert>,
    ready: [Vec<Rtc>; 2],
    requested: [usize; 2],
    tx: Sender<Request>,
    rx: Receiver<(ViewerKind, Rtc)>,
}

/// The configuration every peer's `Rtc` gets: ICE-lite, RTP mode, H.264 (packetization mode 1,
/// the profiles browsers take) and Opus. A viewer negotiates no header extension: the relay does
/// no congestion control towards viewers, so transport-wide sequence numbers (TWCC) would cost a
/// write per packet, feedback to parse and a register of the last 1000 packets (~100 KB) per
/// viewer for nothing; and the mid extension costs str0m a lookup and a string trim per packet
/// (~3 % of the server at 200 viewers) while the answer's `a=ssrc` lines already tell the browser
/// which stream each SSRC belongs to (BUNDLE demultiplexing by signalled SSRC). A publisher keeps
/// str0m's standard set: its encoder's bandwidth estimate lives on our TWCC feedback.
pub(in crate::server) fn rtc_config(publisher: bool) -> RtcConfig {
    let mut cfg = Rtc::builder().set_crypto_provider(crate::dtls::provider());
    if publisher {
        // Receive statistics drive the REMB of publishers that read it (see `feedback`).
        cfg = cfg.set_stats_interval(Some(super::feedback::STATS_INTERVAL));
    } else {
        cfg = cfg
            .set_extension_map(viewer_extensions())
            .set_stats_interval(Some(VIEWER_STATS_INTERVAL));
    }
    cfg.set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .set_send_buffer_video(SEND_BUFFER_VIDEO)
}

/// Adds `codec`'s payload types (each with RTX) to a configuration.
fn add_video(cfg: &mut RtcConfig, codec: VideoCodec) {
    let codecs = cfg.codec_config();
    match codec {
        VideoCodec::H264 => {
            for (pt, rtx, profile) in [
                (108u8, 109u8, 0x42e01fu32),
                (127, 121, 0x42001f),
                (123, 119, 0x4d001f),
                (114, 115, 0x64001f),
            ] {
                codecs.add_h264(pt.into(), Some(rtx.into()), true, profile);
            }
        }
        VideoCodec::H265 => codecs.enable_h265(true),
        VideoCodec::Vp8 => codecs.enable_vp8(true),
        VideoCodec::Vp9 => codecs.enable_vp9(true),
        VideoCodec::Av1 => codecs.enable_av1(true),
    }
}

/// A WHIP publisher's configuration: its video in `video`, the codecs its offer has that the
/// relay passes through, the preferred first (see `whip::publisher_codecs`). str0m answers in
/// this order, and a stack that may send any of them sends the answer's first; one whose
/// encoder is fixed (while its offer lists every codec it knows, as Pion's does) sends its
/// own, which the stream then takes (see `codec_choice`).
pub(in crate::server) fn publisher_config(video: &[VideoCodec]) -> RtcConfig {
    let mut cfg = rtc_config(true);
    if video.is_empty() {
        add_video(&mut cfg, VideoCodec::default());
    }
    for codec in video {
        add_video(&mut cfg, *codec);
    }
    cfg
}

/// A viewer's configuration: every codec the relay passes through, so one `Rtc` kept ready
/// serves a stream in any of them; the stream's codec is picked from the answer.
fn viewer_rtc_config(kind: ViewerKind) -> RtcConfig {
    let mut cfg = rtc_config(false);
    if kind == ViewerKind::Estimating {
        let mut exts = viewer_extensions();
        exts.set(3, str0m::rtp::Extension::TransportSequenceNumber);
        cfg = cfg
            .set_extension_map(exts)
            .set_stats_interval(Some(ESTIMATING_STATS_INTERVAL))
            .enable_bwe(Some(INITIAL_ESTIMATE));
    }
    for codec in VideoCodec::ALL {
        add_video(&mut cfg, codec);
    }
    cfg
}

/// A viewer's `Rtc` configuration and send-stream settings, as the loop uses them: for the
/// per-packet egress benchmark, which drives one viewer's `Rtc` outside the loop.
pub fn viewer_config() -> RtcConfig {
    viewer_rtc_config(ViewerKind::Plain)
}

/// The configuration of a viewer of a simulcast stream (see [`ViewerKind::Estimating`]), for
/// the same benchmark.
pub fn estimating_viewer_config() -> RtcConfig {
    viewer_rtc_config(ViewerKind::Estimating)
}

/// The header extensions a viewer's answer may carry: playout delay only (see
/// `peers::PLAYOUT_DELAY`), at the id Chromium offers it under (str0m takes the offer's id).
fn viewer_extensions() -> str0m::rtp::ExtensionMap {
    let mut map = str0m::rtp::ExtensionMap::empty();
    map.set(6, str0m::rtp::Extension::PlayoutDelay);
    map
}

/// A viewer's video send stream as the loop keeps it. RTX history by time (see
/// [`RTX_HISTORY`]), with the share of retransmissions its budget allows
/// (`relay_core::repair`): queued resends past it are dropped, so a viewer that NACKs
/// everything cannot make the server send its stream twice. And unpaced: an estimating viewer's
/// str0m would otherwise pace the video at its estimate, but the publisher paced it already and
/// a join's GOP replay must reach the viewer at once; the estimate still follows every
/// packet's feedback, and probes go out between packets. (A viewer without the estimate has no
/// pacer: the setting changes nothing there.)
pub fn viewer_video_tx(tx: &mut str0m::rtp::StreamTx, share: f32) {
    tx.set_rtx_cache(SEND_BUFFER_VIDEO, RTX_HISTORY, Some(share));
    tx.set_unpaced(true);
}

impl RtcPool {
    pub(in crate::server) fn start(waker: Arc<Waker>) -> RtcPool {
        let (req_tx, req_rx) = mpsc::channel::<Request>();
        let (rtc_tx, rtc_rx) = mpsc::channel::<(ViewerKind, Rtc)>();
        let cert = crate::dtls::provider().dtls_provider.generate_certificate();
        if cert.is_none() {
            warn!("could not pre-generate a DTLS certificate; each peer makes its own");
        }
        let shared = cert.clone();
        let spawned = thread::Builder::new()
            .name("rtc-builder".into())
            .spawn(move || {
                let cert = shared;
                while let Ok(Request::Build(n, kind)) = req_rx.recv() {
                    for _ in 0..n {
                        let mut cfg = viewer_rtc_config(kind);
                        if let Some(c) = &cert {
                            cfg = cfg.set_dtls_cert(c.clone());
                        }
                        if rtc_tx.send((kind, cfg.build(Instant::now()))).is_err() {
                            return;
                        }
                    }
                    let _ = waker.wake();
                }
            });
        if let Err(e) = spawned {
            warn!("rtc-builder thread: {e}");
        }
        let mut pool = RtcPool {
            cert,
            ready: [Vec::new(), Vec::new()],
            requested: [0, 0],
            tx: req_tx,
            rx: rtc_rx,
        };
        pool.want(ViewerKind::Plain, 0);
        pool.want(ViewerKind::Estimating, 0);
        pool
    }

    /// Moves finished `Rtc`s into the ready lists (call on the waker's event).
    pub(in crate::server) fn collect(&mut self) {
        while let Ok((kind, rtc)) = self.rx.try_recv() {
            let k = kind.index();
            self.requested[k] = self.requested[k].saturating_sub(1);
            self.ready[k].push(rtc);
        }
    }

    /// An `Rtc` for a WHIP publisher, built here (authorized publishers are few; their
    /// configuration differs from the viewers' kept ready).
    pub(in crate::server) fn publisher(&self, video: &[VideoCodec]) -> Rtc {
        let mut cfg = publisher_config(video);
        if let Some(c) = &self.cert {
            cfg = cfg.set_dtls_cert(c.clone());
        }
        cfg.build(Instant::now())
    }

    /// A ready viewer `Rtc` of `kind`, if any; asks for more in the background either way.
    pub(in crate::server) fn take(&mut self, kind: ViewerKind) -> Option<Rtc> {
        let rtc = self.ready[kind.index()].pop();
        self.want(kind, 0);
        rtc
    }

    /// Asks for `waiting` more of `kind` beyond its warm level (a burst of joins waiting).
    pub(in crate::server) fn want(&mut self, kind: ViewerKind, waiting: usize) {
        let k = kind.index();
        let target = kind.warm() + waiting;
        let have = self.ready[k].len() + self.requested[k];
        if have < target {
            let n = target - have;
            self.requested[k] += n;
            let _ = self.tx.send(Request::Build(n, kind));
        }
    }

    pub(in crate::server) fn stop(&mut self) {
        let _ = self.tx.send(Request::Stop);
    }
}
