//! The loop's side of recording: a relay tap per recorded stream, its packets assembled into
//! GOPs here (cheap: payloads are shared, then copied once per GOP) and handed to the writer
//! thread, which alone touches the disk. A stream that starts opens a file, one that ends
//! (or is replaced) closes it; whether a channel records is `--record` unless its key-store
//! entry says otherwise, and a change of that setting takes effect on a live stream at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use ftl_proto::ChannelId;
use log::{info, warn};
use mio::Token;
use relay_core::{Forward, ViewerId};

use super::Server;
use crate::record::assemble::Assembler;
use crate::record::index;
use crate::record::reader::Reader;
use crate::record::writer::{Retention, Writer};
use relay_core::VideoCodec;

/// One stream being recorded.
struct Active {
    id: u64,
    channel: ChannelId,
    assembler: Assembler,
    /// GOPs are being dropped (the disk is behind): logged once per gap.
    dropping: u64,
}

/// The recordings of the live streams.
pub(super) struct Recorder {
    pub(super) writer: Option<Writer>,
    pub(super) root: PathBuf,
    by_tap: HashMap<ViewerId, Active>,
    next_id: u64,
    /// Listings, downloads and deletes, on a thread of their own (see `record::reader`).
    pub(super) reader: Option<Reader>,
    /// `DELETE`s waiting for the key service, by HTTP connection.
    pub(super) deletes: HashMap<Token, super::recordings_http::PendingDelete>,
}

impl Recorder {
    /// Starts the writer and reader threads under `DATA/recordings`.
    pub(super) fn start(
        data_dir: &std::path::Path,
        args: &crate::config::ServerArgs,
        waker: std::sync::Arc<mio::Waker>,
    ) -> std::io::Result<Recorder> {
        let root = data_dir.join("recordings");
        let retention = Retention {
            max_bytes: args
                .record_max_gb
                .filter(|g| *g > 0.0)
                .map(|g| (g * 1e9) as u64),
            max_age: args
                .record_max_days
                .filter(|d| *d > 0.0)
                .map(|d| Duration::from_secs_f64(d * 86_400.0)),
        };
        let writer = Writer::start(
            root.clone(),
            retention,
            args.record_queue_kb.saturating_mul(1024),
            Duration::from_millis(args.record_write_delay_ms),
            args.thumbnail_decoder(),
        )?;
        let reader = Reader::start(
            root.clone(),
            writer.open.clone(),
            waker,
            Duration::from_millis(args.record_read_delay_ms),
        )?;
        Ok(Recorder {
            writer: Some(writer),
            root,
            by_tap: HashMap::new(),
            next_id: 1,
            reader: Some(reader),
            deletes: HashMap::new(),
        })
    }

    /// The tap recording `channel`'s stream (a handful of live recordings: a scan).
    fn tap_of(&self, channel: ChannelId) -> Option<ViewerId> {
        self.by_tap
            .iter()
            .find(|(_, a)| a.channel == channel)
            .map(|(t, _)| *t)
    }

    pub(super) fn is_recording(&self, channel: ChannelId) -> bool {
        self.tap_of(channel).is_some()
    }
}

impl Server {
    /// Whether `channel`'s streams are recorded now.
    fn wants_recording(&self, channel: ChannelId) -> bool {
        self.keys
            .get(channel)
            .and_then(|c| c.record)
            .unwrap_or(self.args.record)
    }

    /// A stream started: a file for it, if the channel records.
    pub(super) fn recording_start(&mut self, channel: ChannelId, now: Instant) {
        if !self.wants_recording(channel) || self.recorder.is_recording(channel) {
            return;
        }
        let Some(writer) = self.recorder.writer.as_ref() else {
            return;
        };
        let codec = self
            .relay
            .video_codec(channel)
            .map_or(VideoCodec::H264, |(c, _)| c);
        if !crate::record::mux::FileMux::carries(codec) {
            warn!(
                "channel {channel}: not recorded: {} video is not recorded (MP4 does not carry it \
                 well); publish in H.264, VP9 or AV1 to record",
                codec.label()
            );
            return;
        }
        // The largest layer of a simulcast, and only upwards: one picture size per file.
        let tap = match self
            .relay
            .add_tap_on(channel, relay_core::TapLayer::Largest, now)
        {
            Ok(t) => t,
            Err(e) => {
                warn!("channel {channel}: not recorded: {e}");
                return;
            }
        };
        let dir = self.recorder.root.join(channel.0.to_string());
        let start = SystemTime::now();
        let path = (0..1000)
            .map(|n| dir.join(index::file_name(start, n)))
            .find(|p| !p.exists())
            .unwrap_or_else(|| dir.join(index::file_name(start, 1000)));
        let expect_audio = self
            .relay
            .stream_stats(channel, now)
            .is_some_and(|s| s.has_audio);
        let id = self.recorder.next_id;
        self.recorder.next_id += 1;
        writer.open(id, path, expect_audio, codec);
        self.recorder.by_tap.insert(
            tap,
            Active {
                id,
                channel,
                assembler: Assembler::new(codec),
                dropping: 0,
            },
        );
    }

    /// A packet of the relay for a recorder; `false` when it is not one (a viewer's).
    pub(super) fn recording_packet(&mut self, f: &Forward) -> bool {
        // Every packet to every viewer passes here: nothing to look up when nothing records.
        if self.recorder.by_tap.is_empty() {
            return false;
        }
        let Some(a) = self.recorder.by_tap.get_mut(&f.viewer) else {
            return false;
        };
        if let Some(gop) = a.assembler.push(f) {
            let Some(writer) = self.recorder.writer.as_ref() else {
                return true;
            };
            if writer.gop(a.id, gop) {
                if a.dropping > 0 {
                    warn!(
                        "channel {}: recording resumes after {} GOPs dropped (the disk was behind)",
                        a.channel, a.dropping
                    );
                    a.dropping = 0;
                }
            } else {
                if a.dropping == 0 {
                    warn!(
                        "channel {}: the disk is behind ({} MB queued): recording drops GOPs until it catches up",
                        a.channel,
                        writer.queued() / 1_000_000
                    );
                }
                a.dropping += 1;
            }
        }
        true
    }

    /// A stream ended (or recording was turned off): the file is finished.
    pub(super) fn recording_stop(&mut self, channel: ChannelId) {
        let Some(tap) = self.recorder.tap_of(channel) else {
            return;
        };
        self.relay.remove_tap(tap);
        let Some(mut a) = self.recorder.by_tap.remove(&tap) else {
            return;
        };
        if let Some(writer) = self.recorder.writer.as_ref() {
            if let Some(gop) = a.assembler.finish() {
                writer.gop(a.id, gop);
            }
            writer.close(a.id);
        }
        if a.assembler.frames_dropped > 0 {
            info!(
                "channel {channel}: recording left out {} broken GOP starts (packets lost upstream)",
                a.assembler.frames_dropped
            );
        }
    }

    /// The key file changed: live channels start or stop recording as their setting says.
    pub(super) fn recording_reconcile(&mut self, now: Instant) {
        let live: Vec<ChannelId> = self
            .relay
            .channels()
            .filter(|c| self.relay.is_live(*c))
            .collect();
        for c in live {
            match (self.wants_recording(c), self.recorder.is_recording(c)) {
                (true, false) => self.recording_start(c, now),
                (false, true) => {
                    info!("channel {c}: recording turned off");
                    self.recording_stop(c);
                }
                _ => {}
            }
        }
    }

    /// Recording counters for `/metrics`: (name, help, value).
    pub(super) fn recording_metrics(&self) -> Vec<(&'static str, &'static str, u64)> {
        let Some(w) = self.recorder.writer.as_ref() else {
            return Vec::new();
        };
        let s = &w.stats;
        let table: [(&'static str, &'static str, &std::sync::atomic::AtomicU64); 6] = [
            ("recordings_total", "Recording files started.", &s.files),
            (
                "recording_fragments_total",
                "MP4 fragments (GOPs) written.",
                &s.fragments,
            ),
            (
                "recording_bytes_total",
                "Bytes written to recordings.",
                &s.bytes,
            ),
            (
                "recording_dropped_gops_total",
                "GOPs left out of recordings because the disk was behind.",
                &s.dropped_gops,
            ),
            (
                "recording_errors_total",
                "Recordings ended by a write error (a full disk).",
                &s.errors,
            ),
            (
                "recordings_deleted_total",
                "Recordings deleted by retention.",
                &s.deleted,
            ),
        ];
        table
            .into_iter()
            .map(|(name, help, v)| (name, help, v.load(Ordering::Relaxed)))
            .collect()
    }
}
