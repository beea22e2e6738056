//! The recordings' reader: listings, file reads and deletes on a thread of their own, the
//! writer's pattern turned around. The loop never waits on a disk: a listing walks directories
//! and reads each file's boxes for its duration, a download reads the file, a delete unlinks
//! it; on a slow, stalled or network disk each may take seconds, which on the loop would be
//! seconds without media for every viewer.
//!
//! The loop asks through a bounded queue ([`MAX_QUEUED`] jobs: past it the request is answered
//! `503`), and the answers come back through a channel and the loop's `Waker`. A download is
//! read a chunk at a time, the next only when the connection took the last, so memory per
//! download is one chunk however large the file and however slow the reader.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::{error, info};
use mio::Waker;

use super::index;

/// Most jobs waiting for the reader.
pub const MAX_QUEUED: usize = 256;
/// Bytes of a download read at a time.
pub const CHUNK: usize = 64 * 1024;
/// Most downloads open at once (each holds a file descriptor on the reader's side).
const MAX_OPEN: usize = 512;

/// What the reader is asked. `token` is the HTTP connection's, for the answer.
#[derive(Debug)]
pub enum Job {
    /// The recordings, newest first (of one channel, or all).
    List {
        token: usize,
        only: Option<u32>,
    },
    /// A download of `path`: its size and the stretch a `Range` header asks for. The file
    /// stays open for [`Job::Chunk`] unless `head` (a `HEAD` request).
    Open {
        token: usize,
        path: PathBuf,
        range: Option<String>,
        head: bool,
    },
    /// The next chunk of an open download.
    Chunk {
        token: usize,
    },
    /// The connection went away: let its file go.
    Close {
        token: usize,
    },
    /// Unlink `path` (a file being written is refused).
    Delete {
        token: usize,
        path: PathBuf,
    },
    Stop,
}

/// One recording in a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub channel: u32,
    pub name: String,
    pub start: Option<String>,
    pub duration_s: f64,
    pub size: u64,
    /// Still being written.
    pub recording: bool,
    /// Its poster image exists (see [`index::poster_of`]).
    pub poster: bool,
}

/// A download's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    NotFound,
    Unsatisfiable {
        size: u64,
    },
    /// `len` bytes from `start` of a file of `size` (`partial`: a range was asked for;
    /// `head`: no body follows).
    Ok {
        size: u64,
        start: u64,
        len: u64,
        partial: bool,
        head: bool,
        /// A poster image, not a recording.
        image: bool,
    },
}

/// A delete's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Done,
    NotFound,
    StillWriting,
    Failed(String),
}

/// What the reader answers.
#[derive(Debug)]
pub enum Done {
    List {
        token: usize,
        items: Vec<Listed>,
    },
    Opened {
        token: usize,
        opened: Opened,
    },
    /// The next bytes of a download; empty when it ended (or could not be read).
    Chunk {
        token: usize,
        bytes: Vec<u8>,
    },
    Deleted {
        token: usize,
        result: Deleted,
    },
}

/// The loop's handle on the reader thread.
pub struct Reader {
    tx: SyncSender<Job>,
    rx: Receiver<Done>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Starts the thread on `root`; `open` lists the files the writer has open (never
    /// deleted, shown as recording). `delay` slows every job (tests of a disk that stalls).
    pub fn start(
        root: PathBuf,
        open: Arc<Mutex<Vec<PathBuf>>>,
        waker: Arc<Waker>,
        delay: Duration,
    ) -> std::io::Result<Reader> {
        let (tx, jobs) = mpsc::sync_channel(MAX_QUEUED);
        let (done_tx, rx) = mpsc::channel();
        let mut w = Worker {
            root,
            open,
            delay,
            files: HashMap::new(),
            durations: HashMap::new(),
        };
        let thread = thread::Builder::new()
            .name("recordings-reader".into())
            .spawn(move || {
                while let Ok(job) = jobs.recv() {
                    if matches!(job, Job::Stop) {
                        return;
                    }
                    if let Some(done) = w.run(job) {
                        if done_tx.send(done).is_err() {
                            return;
                        }
                        let _ = waker.wake();
                    }
                }
            })?;
        Ok(Reader {
            tx,
            rx,
            thread: Some(thread),
        })
    }

    /// Asks for `job`; `false` when the queue is full (the disk is that far behind).
    pub fn ask(&self, job: Job) -> bool {
        match self.tx.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The answers ready now.
    pub fn answers(&self) -> Vec<Done> {
        self.rx.try_iter().collect()
    }
}

impl Drop for Reader {
    /// Asks the thread to end, without waiting: it only reads, so nothing is lost, and a
    /// stalled disk must not hold up the shutdown.
    fn drop(&mut self) {
        let _ = self.tx.try_send(Job::Stop);
        drop(self.thread.take());
    }
}

struct Worker {
    root: PathBuf,
    open: Arc<Mutex<Vec<PathBuf>>>,
    delay: Duration,
    /// Open downloads by connection: the file and the bytes still to send.
    files: HashMap<usize, (File, u64)>,
    /// Durations already read from finished files: path → (size, duration).
    durations: HashMap<PathBuf, (u64, f64)>,
}

impl Worker {
    /// Does one job; `None` for jobs with nothing to answer.
    fn run(&mut self, job: Job) -> Option<Done> {
        if !self.delay.is_zero() {
            thread::sleep(self.delay);
        }
        match job {
            Job::List { token, only } => Some(Done::List {
                token,
                items: self.list(only),
            }),
            Job::Open {
                token,
                path,
                range,
                head,
            } => Some(Done::Opened {
                token,
                opened: self.open(token, &path, range.as_deref(), head),
            }),
            Job::Chunk { token } => Some(Done::Chunk {
                token,
                bytes: self.chunk(token),
            }),
            Job::Close { token } => {
                self.files.remove(&token);
                None
            }
            Job::Delete { token, path } => Some(Done::Deleted {
                token,
                result: self.delete(&path),
            }),
            Job::Stop => None,
        }
    }

    fn is_open(&self, path: &Path) -> bool {
        self.open
            .lock()
            .map(|o| o.iter().any(|p| p == path))
            .unwrap_or(true)
    }

    fn list(&mut self, only: Option<u32>) -> Vec<Listed> {
        let files = index::files(&self.root);
        let mut out = Vec::new();
        for f in files.iter().rev() {
            if only.is_some_and(|c| c != f.channel) {
                continue;
            }
            let live = self.is_open(&f.path);
            let duration = match self.durations.get(&f.path) {
                Some((size, d)) if *size == f.size => *d,
                _ => {
                    let d = index::duration(&f.path).unwrap_or(0.0);
                    if !live {
                        self.durations.insert(f.path.clone(), (f.size, d));
                    }
                    d
                }
            };
            out.push(Listed {
                channel: f.channel,
                name: f.name.clone(),
                start: index::start_of(&f.name),
                duration_s: (duration * 1000.0).round() / 1000.0,
                size: f.size,
                recording: live,
                poster: index::poster_of(&f.path).is_file(),
            });
        }
        self.durations
            .retain(|p, _| files.iter().any(|f| f.path == *p));
        out
    }

    fn open(&mut self, token: usize, path: &Path, range: Option<&str>, head: bool) -> Opened {
        self.files.remove(&token);
        let Ok(mut file) = File::open(path) else {
            return Opened::NotFound;
        };
        let size = match file.metadata() {
            Ok(m) if m.is_file() => m.len(),
            _ => return Opened::NotFound,
        };
        let (start, len, partial) = match range.map(|r| parse_range(r, size)) {
            None | Some(RangeReq::Ignore) => (0, size, false),
            Some(RangeReq::Unsatisfiable) => return Opened::Unsatisfiable { size },
            Some(RangeReq::Bytes(a, b)) => (a, b - a + 1, true),
        };
        if !head && len > 0 {
            if file.seek(SeekFrom::Start(start)).is_err() {
                return Opened::NotFound;
            }
            if self.files.len() >= MAX_OPEN {
                // The oldest-numbered connection's download gives way (it ends short).
                if let Some(k) = self.files.keys().min().copied() {
                    self.files.remove(&k);
                }
            }
            self.files.insert(token, (file, len));
        }
        Opened::Ok {
            size,
            start,
            len,
            partial,
            head,
            image: path.extension().is_some_and(|e| e == "jpg"),
        }
    }

    fn chunk(&mut self, token: usize) -> Vec<u8> {
        let Some((file, remaining)) = self.files.get_mut(&token) else {
            return Vec::new();
        };
        let want = usize::try_from(*remaining).unwrap_or(usize::MAX).min(CHUNK);
        let mut buf = vec![0u8; want];
        match file.read(&mut buf) {
            Ok(n) if n > 0 => {
                buf.truncate(n);
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.files.remove(&token);
                }
                buf
            }
            _ => {
                self.files.remove(&token);
                Vec::new()
            }
        }
    }

    fn delete(&mut self, path: &Path) -> Deleted {
        if !path.is_file() {
            return Deleted::NotFound;
        }
        if self.is_open(path) {
            return Deleted::StillWriting;
        }
        match fs::remove_file(path) {
            Ok(()) => {
                let _ = fs::remove_file(index::poster_of(path));
                info!("recording {} deleted on request", path.display());
                self.durations.remove(path);
                Deleted::Done
            }
            Err(e) => {
                error!("recording {}: cannot delete: {e}", path.display());
                Deleted::Failed(e.to_string())
            }
        }
    }
}

/// A `Range` header against a file of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeReq {
    /// Not one byte range we serve (another unit, several ranges, malformed): the whole file.
    Ignore,
    Unsatisfiable,
    /// First and last byte, inclusive.
    Bytes(u64, u64),
}

/// Reads a `Range` header (RFC 9110 section 14.2): one byte range, else the whole file.
pub fn parse_range(h: &str, size: u64) -> RangeReq {
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
