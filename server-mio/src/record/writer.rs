//! The recording writer: a thread of its own, so that the loop never waits on a disk. The
//! loop hands it whole GOPs through a channel whose bytes are bounded (`--record-queue-kb`); when
//! the disk falls that far behind, the loop drops whole GOPs (counted, logged once per gap)
//! and the live stream never notices. A write error (a full disk) ends that recording with an
//! error line; the server and the other recordings go on. Retention runs here too.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime};

use log::{error, info, warn};
use relay_core::VideoCodec;

use super::assemble::Gop;
use super::index;
use super::mux::FileMux;

/// How often retention runs besides at the end of each recording.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// What the writer is asked to do.
enum Job {
    Open {
        id: u64,
        path: PathBuf,
        expect_audio: bool,
        codec: VideoCodec,
    },
    Gop {
        id: u64,
        gop: Gop,
        bytes: usize,
    },
    Close {
        id: u64,
    },
    Stop,
}

/// Counters shared with the loop (for `/metrics`).
#[derive(Debug, Default)]
pub struct RecordStats {
    pub files: AtomicU64,
    pub fragments: AtomicU64,
    pub bytes: AtomicU64,
    /// GOPs dropped because the disk was behind.
    pub dropped_gops: AtomicU64,
    /// Recordings ended by a write error.
    pub errors: AtomicU64,
    /// Files deleted by retention.
    pub deleted: AtomicU64,
}

/// Retention limits (`None`: no limit).
#[derive(Debug, Clone, Copy, Default)]
pub struct Retention {
    pub max_bytes: Option<u64>,
    pub max_age: Option<Duration>,
}

/// The loop's handle on the writer thread.
pub struct Writer {
    tx: Sender<Job>,
    queued: Arc<AtomicUsize>,
    /// Most bytes of GOPs waiting for the disk.
    max_queued: usize,
    pub stats: Arc<RecordStats>,
    /// Files being written (never deleted by retention or `DELETE`).
    pub open: Arc<Mutex<Vec<PathBuf>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread. `delay` slows every fragment write (tests of a disk that stalls);
    /// `ffmpeg` decodes the posters of recordings in codecs other than H.264.
    pub fn start(
        root: PathBuf,
        retention: Retention,
        max_queued: usize,
        delay: Duration,
        ffmpeg: Option<PathBuf>,
    ) -> std::io::Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(RecordStats::default());
        let open = Arc::new(Mutex::new(Vec::new()));
        let mut w = Worker {
            root,
            retention,
            delay,
            queued: queued.clone(),
            stats: stats.clone(),
            open: open.clone(),
            files: HashMap::new(),
            decoders: crate::thumbnail::picture::Decoders::new(ffmpeg),
        };
        let thread = thread::Builder::new()
            .name("recorder".into())
            .spawn(move || w.run(&rx))?;
        Ok(Writer {
            tx,
            queued,
            max_queued,
            stats,
            open,
            thread: Some(thread),
        })
    }

    pub fn open(&self, id: u64, path: PathBuf, expect_audio: bool, codec: VideoCodec) {
        let _ = self.tx.send(Job::Open {
            id,
            path,
            expect_audio,
            codec,
        });
    }

    /// Queues a GOP; `false` (and nothing queued) when the disk is too far behind.
    pub fn gop(&self, id: u64, gop: Gop) -> bool {
        let bytes = gop.bytes();
        if self.queued.load(Ordering::Relaxed) + bytes > self.max_queued {
            self.stats.dropped_gops.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.queued.fetch_add(bytes, Ordering::Relaxed);
        if self.tx.send(Job::Gop { id, gop, bytes }).is_err() {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn close(&self, id: u64) {
        let _ = self.tx.send(Job::Close { id });
    }

    /// Bytes waiting for the disk.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn is_open(&self, path: &Path) -> bool {
        self.open
            .lock()
            .map(|o| o.iter().any(|p| p == path))
            .unwrap_or(true)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.tx.send(Job::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct OpenFile {
    path: PathBuf,
    file: Option<File>,
    mux: FileMux,
    /// Bytes of whole segments in the file (a failed write is cut back to this).
    written: u64,
    codec: VideoCodec,
    /// The poster image was made (or tried) from the first keyframe.
    poster_done: bool,
}

struct Worker {
    root: PathBuf,
    retention: Retention,
    delay: Duration,
    queued: Arc<AtomicUsize>,
    stats: Arc<RecordStats>,
    open: Arc<Mutex<Vec<PathBuf>>>,
    files: HashMap<u64, OpenFile>,
    /// What posters are decoded with (kept from one recording to the next).
    decoders: crate::thumbnail::picture::Decoders,
}

/// The recording's poster: its first keyframe as a JPEG beside it (`<start>.jpg`), for the
/// recordings list. Made here, on the writer's thread, once per recording; a keyframe that
/// does not decode (or a codec with no decoder here) leaves the recording without one.
fn write_poster(
    recording: &Path,
    codec: VideoCodec,
    units: &[Vec<u8>],
    decoders: &mut crate::thumbnail::picture::Decoders,
) {
    let path = index::poster_of(recording);
    let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decoders.make(codec, units, POSTER_WIDTH)
    }));
    if made.is_err() {
        // A decoder that panicked is not used again.
        *decoders = crate::thumbnail::picture::Decoders::new(decoders.ffmpeg_path());
    }
    let jpeg = match made {
        Ok(Ok(p)) => p.jpeg,
        Ok(Err(e)) => {
            info!("recording {}: no poster: {e}", recording.display());
            return;
        }
        Err(_) => {
            warn!(
                "recording {}: no poster: the decoder panicked",
                recording.display()
            );
            return;
        }
    };
    let tmp = path.with_extension("jpg.tmp");
    let written = fs::write(&tmp, &jpeg).and_then(|()| fs::rename(&tmp, &path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        warn!(
            "recording {}: cannot write its poster: {e}",
            recording.display()
        );
    }
}

/// Width of recording posters (the list shows them small).
const POSTER_WIDTH: u32 = 640;

impl Worker {
    fn run(&mut self, rx: &Receiver<Job>) {
        self.retain();
        loop {
            match rx.recv_timeout(RETENTION_EVERY) {
                Ok(Job::Open {
                    id,
                    path,
                    expect_audio,
                    codec,
                }) => self.open(id, path, expect_audio, codec),
                Ok(Job::Gop { id, gop, bytes }) => {
                    self.write(id, &gop);
                    self.queued.fetch_sub(bytes, Ordering::Relaxed);
                }
                Ok(Job::Close { id }) => {
                    self.close(id);
                    self.retain();
                }
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => self.retain(),
            }
        }
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for id in ids {
            self.close(id);
        }
    }

    fn open(&mut self, id: u64, path: PathBuf, expect_audio: bool, codec: VideoCodec) {
        let file = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| OpenOptions::new().write(true).create_new(true).open(&path));
        let file = match file {
            Ok(f) => {
                info!("recording to {}", path.display());
                self.stats.files.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut o) = self.open.lock() {
                    o.push(path.clone());
                }
                Some(f)
            }
            Err(e) => {
                error!("recording: cannot create {}: {e}", path.display());
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        };
        self.files.insert(
            id,
            OpenFile {
                path,
                file,
                mux: FileMux::new(expect_audio, codec),
                written: 0,
                codec,
                poster_done: false,
            },
        );
    }

    fn write(&mut self, id: u64, gop: &Gop) {
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        let Some(file) = f.file.as_mut() else {
            return;
        };
        if !self.delay.is_zero() {
            thread::sleep(self.delay);
        }
        if f.mux.starts_over(gop) {
            // The top layer of a simulcast arrived after the recording began on a smaller one.
            match file.set_len(0).and_then(|()| file.seek(SeekFrom::Start(0))) {
                Ok(_) => {
                    info!(
                        "recording {}: a larger picture came {:.1} s in (a simulcast's top \
                         layer): the file starts over with it",
                        f.path.display(),
                        f.mux.duration
                    );
                    f.mux = f.mux.fresh();
                    f.written = 0;
                    f.poster_done = false;
                }
                Err(e) => warn!("recording {}: cannot start over: {e}", f.path.display()),
            }
        }
        let result = f
            .mux
            .push(gop)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                file.write_all(&bytes)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| e.to_string())
                    .map(|()| bytes.len())
            });
        match result {
            Ok(0) => {}
            Ok(n) => {
                f.written += n as u64;
                self.stats.fragments.fetch_add(1, Ordering::Relaxed);
                self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                if !f.poster_done {
                    if let Some(frame) = gop.video.iter().find(|v| v.keyframe) {
                        f.poster_done = true;
                        write_poster(&f.path, f.codec, &frame.nals, &mut self.decoders);
                    }
                }
            }
            Err(e) => {
                // A fragment written in part is cut off: the file plays up to the last whole one.
                let _ = file.set_len(f.written);
                error!(
                    "recording {}: {e}; the recording ends here (the stream goes on)",
                    f.path.display()
                );
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                f.file = None;
                self.forget_open(id);
            }
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(f) = self.files.remove(&id) {
            if f.file.is_some() {
                info!(
                    "recording {} ends: {:.1} s",
                    f.path.display(),
                    f.mux.duration
                );
            }
            let empty = f.written == 0;
            drop(f.file);
            if let Ok(mut o) = self.open.lock() {
                o.retain(|p| *p != f.path);
            }
            // A stream that ended before its first keyframe leaves no empty file behind.
            if empty {
                let _ = fs::remove_file(&f.path);
                let _ = fs::remove_file(index::poster_of(&f.path));
            }
        }
    }

    fn forget_open(&mut self, id: u64) {
        if let Some(f) = self.files.get(&id) {
            if let Ok(mut o) = self.open.lock() {
                o.retain(|p| *p != f.path);
            }
        }
    }

    /// Deletes recordings past the age limit, then the oldest until under the size limit;
    /// never a file being written.
    fn retain(&mut self) {
        if self.retention.max_bytes.is_none() && self.retention.max_age.is_none() {
            return;
        }
        let open: Vec<PathBuf> = self.open.lock().map(|o| o.clone()).unwrap_or_default();
        let mut all: Vec<(SystemTime, u64, PathBuf)> = index::files(&self.root)
            .into_iter()
            .filter(|f| !open.contains(&f.path))
            .map(|f| (f.modified, f.size, f.path))
            .collect();
        // Oldest first (by name: the start time; ties by modification time).
        all.sort_by(|a, b| a.2.file_name().cmp(&b.2.file_name()).then(a.0.cmp(&b.0)));
        let now = SystemTime::now();
        let mut total: u64 = index::files(&self.root).iter().map(|f| f.size).sum();
        for (modified, size, path) in all {
            let too_old = self
                .retention
                .max_age
                .is_some_and(|age| now.duration_since(modified).unwrap_or_default() > age);
            let too_big = self.retention.max_bytes.is_some_and(|max| total > max);
            if !(too_old || too_big) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    let _ = fs::remove_file(index::poster_of(&path));
                    total = total.saturating_sub(size);
                    self.stats.deleted.fetch_add(1, Ordering::Relaxed);
                    info!(
                        "recording {} deleted ({})",
                        path.display(),
                        if too_old { "age" } else { "size" }
                    );
                }
                Err(e) => warn!("recording {}: cannot delete: {e}", path.display()),
            }
        }
    }
}
