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
use log::{error, info, warn};
use relay_core::{Forward, ViewerId};
use serde_json::json;

use super::http::{Request, Response};
use super::Server;
use crate::record::assemble::Assembler;
use crate::record::index;
use crate::record::writer::{Retention, Writer};

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
    /// Durations already read from finished files: path → (size, duration).
    durations: HashMap<PathBuf, (u64, f64)>,
}

impl Recorder {
    /// Starts the writer thread under `DATA/recordings`.
    pub(super) fn start(
        data_dir: &std::path::Path,
        args: &crate::config::ServerArgs,
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
        )?;
        Ok(Recorder {
            writer: Some(writer),
            root,
            by_tap: HashMap::new(),
            next_id: 1,
            durations: HashMap::new(),
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
        let tap = match self.relay.add_tap(channel, now) {
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
        writer.open(id, path, expect_audio);
        self.recorder.by_tap.insert(
            tap,
            Active {
                id,
                channel,
                assembler: Assembler::default(),
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

    /// `GET /api/recordings[?channel=N]`.
    pub(super) fn api_recordings(&mut self, req: &Request) -> Response {
        let only: Option<u32> = match req.query_param("channel") {
            Some(c) => match c.parse() {
                Ok(c) => Some(c),
                Err(_) => return Response::text(400, "channel must be a number").cors(),
            },
            None => None,
        };
        let files = index::files(&self.recorder.root);
        let mut list = Vec::new();
        for f in files.iter().rev() {
            if only.is_some_and(|c| c != f.channel) {
                continue;
            }
            let live = self
                .recorder
                .writer
                .as_ref()
                .is_some_and(|w| w.is_open(&f.path));
            let duration = match self.recorder.durations.get(&f.path) {
                Some((size, d)) if *size == f.size => *d,
                _ => {
                    let d = index::duration(&f.path).unwrap_or(0.0);
                    if !live {
                        self.recorder.durations.insert(f.path.clone(), (f.size, d));
                    }
                    d
                }
            };
            list.push(json!({
                "channel": f.channel,
                "file": f.name,
                "url": format!("/recordings/{}/{}", f.channel, f.name),
                "start": index::start_of(&f.name),
                "duration_s": (duration * 1000.0).round() / 1000.0,
                "size": f.size,
                "recording": live,
            }));
        }
        self.recorder
            .durations
            .retain(|p, _| files.iter().any(|f| f.path == *p));
        Response::new(
            200,
            "application/json",
            json!({ "recordings": list }).to_string(),
        )
        .cors()
    }

    /// `GET`/`HEAD /recordings/<channel>/<file>`, with single byte ranges (RFC 9110 §14).
    pub(super) fn recording_get(&self, req: &Request, channel: &str, name: &str) -> Response {
        let Some(path) = index::path_of(&self.recorder.root, channel, name) else {
            return Response::text(404, "no such recording");
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => return Response::text(404, "no such recording"),
        };
        let size = match file.metadata() {
            Ok(m) if m.is_file() => m.len(),
            _ => return Response::text(404, "no such recording"),
        };
        let range = match req.header("Range").map(|r| parse_range(r, size)) {
            None | Some(RangeReq::Ignore) => None,
            Some(RangeReq::Unsatisfiable) => {
                return Response::text(416, "range not satisfiable")
                    .header("Content-Range", format!("bytes */{size}"));
            }
            Some(RangeReq::Bytes(a, b)) => Some((a, b)),
        };
        let (status, start, len) = match range {
            Some((a, b)) => (206, a, b - a + 1),
            None => (200, 0, size),
        };
        let mut resp = Response::new(status, "video/mp4", Vec::new())
            .header("Accept-Ranges", "bytes")
            .header("Cache-Control", "no-cache");
        if status == 206 {
            resp = resp.header(
                "Content-Range",
                format!("bytes {start}-{}/{size}", start + len - 1),
            );
        }
        if req.method == "HEAD" {
            return resp.with_length(len);
        }
        resp.with_file(file, start, len)
    }

    /// `DELETE /recordings/<channel>/<file>`: the channel's stream key as Bearer.
    pub(super) fn recording_delete(
        &mut self,
        req: &Request,
        channel: &str,
        name: &str,
    ) -> Response {
        let Some(path) = index::path_of(&self.recorder.root, channel, name) else {
            return Response::text(404, "no such recording").cors();
        };
        let Ok(id) = channel.parse::<u32>() else {
            return Response::text(404, "no such recording").cors();
        };
        let authorized = self.keys.get(ChannelId(id)).is_some_and(|c| {
            super::webrtc::whip::bearer_is_key(req, ChannelId(id), &c.stream_key())
        });
        if !authorized {
            return Response::text(401, "deleting a recording needs the channel's stream key")
                .header("WWW-Authenticate", "Bearer")
                .cors();
        }
        if !path.is_file() {
            return Response::text(404, "no such recording").cors();
        }
        if self
            .recorder
            .writer
            .as_ref()
            .is_some_and(|w| w.is_open(&path))
        {
            return Response::text(409, "this recording is still being written").cors();
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                info!("recording {} deleted on request", path.display());
                Response::text(200, "deleted").cors()
            }
            Err(e) => {
                error!("recording {}: cannot delete: {e}", path.display());
                Response::text(500, "cannot delete").cors()
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

/// A `Range` header against a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RangeReq {
    /// Not one byte range we serve (another unit, several ranges, malformed): the whole file.
    Ignore,
    Unsatisfiable,
    /// First and last byte, inclusive.
    Bytes(u64, u64),
}

pub(super) fn parse_range(h: &str, size: u64) -> RangeReq {
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeReq::Ignore;
    };
    if spec.contains(',') {
        return RangeReq::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (parse(a), parse(b)) {
        // bytes=-N: the last N bytes.
        (None, Some(n)) if a.is_empty() => {
            if n == 0 || size == 0 {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Bytes(size.saturating_sub(n), size - 1)
            }
        }
        (Some(first), None) if b.is_empty() => {
            if first >= size {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Bytes(first, size - 1)
            }
        }
        (Some(first), Some(last)) if first <= last => {
            if first >= size {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Bytes(first, last.min(size - 1))
            }
        }
        _ => RangeReq::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 100), RangeReq::Bytes(0, 99));
        assert_eq!(parse_range("bytes=10-19", 100), RangeReq::Bytes(10, 19));
        assert_eq!(parse_range("bytes=90-200", 100), RangeReq::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeReq::Bytes(90, 99));
        assert_eq!(parse_range("bytes=-500", 100), RangeReq::Bytes(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeReq::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeReq::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeReq::Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), RangeReq::Ignore);
        assert_eq!(parse_range("bytes=+1-2", 100), RangeReq::Ignore);
        assert_eq!(
            parse_range("bytes=18446744073709551615-", 100),
            RangeReq::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=0-", 0), RangeReq::Unsatisfiable);
    }
}
