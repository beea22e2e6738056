//! Live thumbnails: every `--thumbnail-every` seconds the latest whole keyframe of each live
//! stream (from the relay's GOP cache) is decoded, scaled and written as JPEG on a thread of
//! its own, so the media loop only copies a handful of payload pointers.
//!
//! Bounds: at most one job per stream in flight and a short queue (a stream whose job cannot be
//! queued waits for the next round); a keyframe whose bytes are those of the last one is not
//! decoded again; a job that fails or panics costs that thumbnail only (logged once per
//! stream). The loop keeps the pictures; `GET /thumbnails/<channel>.jpg` serves them.

pub mod external;
pub mod picture;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use ftl_proto::ChannelId;
use log::{debug, info, warn};
use mio::Waker;
use relay_core::{Keyframe, Relay, VideoCodec};

use picture::PictureError;

/// Jobs waiting for the thread at most (each is a few payload pointers).
const QUEUE: usize = 8;
/// How often the loop looks for streams that are due (and for new streams' first keyframe).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// One live stream's thumbnail as served.
#[derive(Debug, Clone)]
pub struct Thumb {
    pub jpeg: Arc<[u8]>,
    /// A strong validator: the JPEG's hash.
    pub etag: String,
    pub width: u32,
    pub height: u32,
    /// When this picture was taken (for `Last-Modified`).
    pub taken: SystemTime,
}

/// Counters for `/metrics`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThumbStats {
    pub made: u64,
    pub failed: u64,
    /// Keyframes not decoded because their bytes were those of the last one.
    pub unchanged: u64,
    /// Rounds a stream missed because the queue was full.
    pub busy: u64,
    /// Time the thread spent decoding, scaling and encoding.
    pub busy_time: Duration,
}

struct Job {
    channel: ChannelId,
    keyframe: Keyframe,
    max_width: u32,
}

enum Outcome {
    Made(picture::Picture, u64),
    Unchanged,
    Failed(PictureError),
}

struct Done {
    channel: ChannelId,
    outcome: Outcome,
    took: Duration,
}

/// The loop's view of one stream.
#[derive(Default)]
struct Entry {
    thumb: Option<Thumb>,
    in_flight: bool,
    /// The keyframe last handed to the thread (RTP timestamp).
    last_ts: Option<u32>,
    next_at: Option<Instant>,
    /// A failure was logged for this stream.
    told: bool,
}

/// Thumbnails of the live streams and the thread that makes them.
pub struct Thumbnails {
    every: Option<Duration>,
    max_width: u32,
    /// The `ffmpeg` that decodes the codecs OpenH264 does not (`None`: H.264 only).
    ffmpeg: Option<PathBuf>,
    entries: HashMap<ChannelId, Entry>,
    tx: Option<SyncSender<Job>>,
    rx: Option<Receiver<Done>>,
    thread: Option<JoinHandle<()>>,
    next_check: Option<Instant>,
    pub stats: ThumbStats,
    placeholder: Arc<[u8]>,
}

impl Thumbnails {
    /// Starts the thread unless `every` is zero (thumbnails off). `ffmpeg` decodes the codecs
    /// other than H.264.
    pub fn start(
        every: Duration,
        max_width: u32,
        ffmpeg: Option<PathBuf>,
        waker: Arc<Waker>,
    ) -> std::io::Result<Self> {
        let max_width = max_width.clamp(16, 3840);
        let mut t = Thumbnails {
            every: None,
            max_width,
            ffmpeg,
            entries: HashMap::new(),
            tx: None,
            rx: None,
            thread: None,
            next_check: None,
            stats: ThumbStats::default(),
            placeholder: picture::placeholder(max_width).into(),
        };
        if every.is_zero() {
            return Ok(t);
        }
        let (tx, jobs) = mpsc::sync_channel::<Job>(QUEUE);
        let (done_tx, rx) = mpsc::channel();
        let decoders = picture::Decoders::new(t.ffmpeg.clone());
        let thread = thread::Builder::new()
            .name("thumbnails".into())
            .spawn(move || run(jobs, done_tx, waker, decoders))?;
        t.every = Some(every);
        t.tx = Some(tx);
        t.rx = Some(rx);
        t.thread = Some(thread);
        t.next_check = Some(Instant::now());
        Ok(t)
    }

    /// Whether thumbnails are made at all.
    pub fn enabled(&self) -> bool {
        self.every.is_some()
    }

    /// When [`Thumbnails::tick`] wants to run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.next_check
    }

    /// Hands the thread a keyframe of every stream that is due and has a new one; forgets
    /// streams that ended. Returns the streams due whose keyframe is the one already made
    /// into a picture: an encoder that sends keyframes only when asked (a browser) is asked
    /// by the caller ([`Relay::refresh_keyframe`]), so their thumbnails move too.
    pub fn tick(&mut self, relay: &Relay, now: Instant) -> Vec<ChannelId> {
        let mut stale = Vec::new();
        let (Some(every), Some(tx)) = (self.every, self.tx.as_ref()) else {
            return stale;
        };
        if self.next_check.is_some_and(|t| t > now) {
            return stale;
        }
        self.next_check = Some(now + CHECK_EVERY);
        self.entries.retain(|c, _| relay.is_live(*c));
        for channel in relay.channels() {
            if !relay.is_live(channel) {
                continue;
            }
            let e = self.entries.entry(channel).or_default();
            if e.in_flight || e.next_at.is_some_and(|t| t > now) {
                continue;
            }
            let Some(keyframe) = relay.keyframe(channel) else {
                continue;
            };
            if e.last_ts == Some(keyframe.ts) {
                // No keyframe since the last picture: look again next check.
                stale.push(channel);
                continue;
            }
            if !picture::decodes(keyframe.codec, self.ffmpeg.as_deref()) {
                if !e.told {
                    e.told = true;
                    info!(
                        "channel {channel}: no thumbnails of {} video",
                        keyframe.codec.label()
                    );
                }
                e.next_at = Some(now + every);
                continue;
            }
            let ts = keyframe.ts;
            match tx.try_send(Job {
                channel,
                keyframe,
                max_width: self.max_width,
            }) {
                Ok(()) => {
                    e.in_flight = true;
                    e.last_ts = Some(ts);
                    e.next_at = Some(now + every);
                }
                Err(TrySendError::Full(_)) => self.stats.busy += 1,
                Err(TrySendError::Disconnected(_)) => {
                    warn!("the thumbnail thread is gone: no more thumbnails");
                    self.every = None;
                    self.next_check = None;
                    return stale;
                }
            }
        }
        stale
    }

    /// The interval between two pictures of a stream, when thumbnails are on.
    pub fn every(&self) -> Option<Duration> {
        self.every
    }

    /// Takes what the thread finished (after a wake).
    pub fn collect(&mut self, relay: &Relay) {
        let Some(rx) = self.rx.as_ref() else {
            return;
        };
        while let Ok(done) = rx.try_recv() {
            self.stats.busy_time += done.took;
            let live = relay.is_live(done.channel);
            let Some(e) = self.entries.get_mut(&done.channel) else {
                continue;
            };
            e.in_flight = false;
            if !live {
                continue;
            }
            match done.outcome {
                Outcome::Made(p, hash) => {
                    self.stats.made += 1;
                    debug!(
                        "channel {}: thumbnail {}x{} ({} bytes) in {:?}",
                        done.channel,
                        p.width,
                        p.height,
                        p.jpeg.len(),
                        done.took
                    );
                    e.told = false;
                    e.thumb = Some(Thumb {
                        jpeg: p.jpeg.into(),
                        etag: format!("\"{hash:016x}\""),
                        width: p.width,
                        height: p.height,
                        taken: SystemTime::now(),
                    });
                }
                Outcome::Unchanged => self.stats.unchanged += 1,
                Outcome::Failed(err) => {
                    self.stats.failed += 1;
                    if !e.told {
                        e.told = true;
                        warn!("channel {}: no thumbnail: {err}", done.channel);
                    }
                }
            }
        }
    }

    /// The current thumbnail of a live stream.
    pub fn get(&self, channel: ChannelId) -> Option<&Thumb> {
        self.entries.get(&channel)?.thumb.as_ref()
    }

    /// The picture served in place of a missing thumbnail when one is asked for.
    pub fn placeholder(&self) -> Arc<[u8]> {
        self.placeholder.clone()
    }

    /// Ends the thread (queued jobs are dropped).
    pub fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Thumbnails {
    fn drop(&mut self) {
        self.stop();
    }
}

fn hash_of<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// Makes one H.264 thumbnail from a keyframe's RTP payloads as the thread does (with a fresh
/// decoder): what the fuzz target feeds.
pub fn thumbnail_of(
    codec: VideoCodec,
    payloads: &[Arc<[u8]>],
    max_width: u32,
) -> Result<picture::Picture, PictureError> {
    let units = codec.frame_units(payloads.iter().map(|p| &p[..]));
    picture::make(codec, &units, max_width)
}

/// The thread: one job at a time; the keyframe last decoded per stream is remembered by hash
/// so an unchanged one costs a hash, not a decode.
fn run(
    jobs: Receiver<Job>,
    done: mpsc::Sender<Done>,
    waker: Arc<Waker>,
    mut decoders: picture::Decoders,
) {
    let mut last: HashMap<ChannelId, u64> = HashMap::new();
    while let Ok(job) = jobs.recv() {
        let started = Instant::now();
        let key = hash_of(job.keyframe.payloads.iter().map(|p| &p[..]));
        let outcome = if last.get(&job.channel) == Some(&key) {
            Outcome::Unchanged
        } else {
            let codec = job.keyframe.codec;
            let made = catch_unwind(AssertUnwindSafe(|| {
                let units = codec.frame_units(job.keyframe.payloads.iter().map(|p| &p[..]));
                decoders.make(codec, &units, job.max_width)
            }));
            if made.is_err() {
                // A decoder that panicked is not used again.
                decoders = picture::Decoders::new(decoders.ffmpeg_path());
            }
            match made {
                Ok(Ok(p)) => {
                    last.insert(job.channel, key);
                    let etag = hash_of([&p.jpeg[..]]);
                    Outcome::Made(p, etag)
                }
                Ok(Err(e)) => Outcome::Failed(e),
                Err(_) => Outcome::Failed(PictureError::Decode("the decoder panicked".into())),
            }
        };
        if last.len() > 4096 {
            last.clear();
        }
        let sent = done.send(Done {
            channel: job.channel,
            outcome,
            took: started.elapsed(),
        });
        if sent.is_err() {
            return;
        }
        let _ = waker.wake();
    }
}
