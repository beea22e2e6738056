//! The thread that talks to Redis for the loop: registers this node and its streams every
//! second, reads the directory back, and hands the snapshot over (a channel of one, and the
//! loop's `Waker`). Every Redis call is bounded by a timeout; an outage is logged once, retried
//! with back-off (1 s doubling to 10 s) and ends with a log line when Redis answers again.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::Waker;
use redis::{Client, Connection};

use super::{node_key, stream_key, LocalState, NodeRecord, Snapshot, StreamRecord, EVENTS, TTL};

/// Longest wait for any one Redis call.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The loop's handle on the directory thread.
pub struct Directory {
    state_tx: SyncSender<LocalState>,
    snapshots: Receiver<Snapshot>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Directory {
    /// Checks the URL and starts the thread (which connects on its own, retrying).
    pub fn start(url: &str, waker: Arc<Waker>) -> Result<Directory, String> {
        let client = Client::open(url).map_err(|e| format!("--cluster {url}: {e}"))?;
        let (state_tx, state_rx) = mpsc::sync_channel::<LocalState>(1);
        let (snap_tx, snapshots) = mpsc::sync_channel::<Snapshot>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let mut w = Worker {
            client,
            url: url.to_owned(),
            con: None,
            backoff: Duration::from_secs(1),
            retry_at: Instant::now(),
            down_since: None,
            announced: BTreeSet::new(),
            last: Snapshot::default(),
        };
        let s = stop.clone();
        let thread = thread::Builder::new()
            .name("cluster".into())
            .spawn(move || w.run(&state_rx, &snap_tx, &waker, &s))
            .map_err(|e| e.to_string())?;
        Ok(Directory {
            state_tx,
            snapshots,
            stop,
            thread: Some(thread),
        })
    }

    /// The node's current state, for the next refresh (a newer one replaces one not yet
    /// taken).
    pub fn publish(&self, state: LocalState) {
        match self.state_tx.try_send(state) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => {}
        }
    }

    /// The newest snapshot handed over since the last call.
    pub fn latest(&self) -> Option<Snapshot> {
        self.snapshots.try_iter().last()
    }
}

impl Drop for Directory {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Worker {
    client: Client,
    url: String,
    con: Option<Connection>,
    backoff: Duration,
    retry_at: Instant,
    down_since: Option<Instant>,
    /// Channels this node announced as started (to announce their stop).
    announced: BTreeSet<u32>,
    last: Snapshot,
}

impl Worker {
    fn run(
        &mut self,
        states: &Receiver<LocalState>,
        snapshots: &SyncSender<Snapshot>,
        waker: &Waker,
        stop: &AtomicBool,
    ) {
        let mut state: Option<LocalState> = None;
        while !stop.load(Ordering::SeqCst) {
            match states.recv_timeout(Duration::from_millis(200)) {
                Ok(s) => state = Some(s),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            let Some(s) = state.as_ref() else { continue };
            let snapshot = self.refresh(s);
            if snapshot != self.last || !snapshot.redis_up {
                self.last = snapshot.clone();
                if snapshots.try_send(snapshot).is_ok() {
                    let _ = waker.wake();
                }
            }
        }
        // A clean stop leaves the directory at once instead of at the TTL.
        if let (Some(s), Some(con)) = (state.as_ref(), self.con.as_mut()) {
            let mut p = redis::pipe();
            p.del(node_key(&s.node.id)).ignore();
            for st in &s.streams {
                p.del(stream_key(st.channel)).ignore();
                p.publish(EVENTS, event("stop", st)).ignore();
            }
            let _ = p.query::<()>(con);
        }
    }

    /// Writes this node's records, announces changes, reads the directory.
    fn refresh(&mut self, s: &LocalState) -> Snapshot {
        self.connect();
        let Some(con) = self.con.as_mut() else {
            return Snapshot {
                redis_up: false,
                ..self.last.clone()
            };
        };
        match exchange(con, s, &mut self.announced) {
            Ok((nodes, streams)) => {
                if let Some(since) = self.down_since.take() {
                    info!(
                        "cluster: Redis {} answers again after {} s; registered again",
                        self.url,
                        since.elapsed().as_secs()
                    );
                }
                self.backoff = Duration::from_secs(1);
                Snapshot {
                    redis_up: true,
                    nodes,
                    streams,
                }
            }
            Err(e) => {
                self.lost(&e.to_string());
                Snapshot {
                    redis_up: false,
                    ..self.last.clone()
                }
            }
        }
    }

    fn connect(&mut self) {
        if self.con.is_none() && Instant::now() >= self.retry_at {
            match self.client.get_connection_with_timeout(CALL_TIMEOUT) {
                Ok(c) => {
                    let _ = c.set_read_timeout(Some(CALL_TIMEOUT));
                    let _ = c.set_write_timeout(Some(CALL_TIMEOUT));
                    self.con = Some(c);
                }
                Err(e) => self.lost(&e.to_string()),
            }
        }
    }

    fn lost(&mut self, why: &str) {
        self.con = None;
        if self.down_since.is_none() {
            warn!(
                "cluster: Redis {}: {why}; local ingest and viewers go on, retrying",
                self.url
            );
            self.down_since = Some(Instant::now());
            // What was announced is gone from Redis by its TTL; announce again when back.
            self.announced.clear();
        }
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

fn event(what: &str, s: &StreamRecord) -> String {
    serde_json::json!({ "event": what, "channel": s.channel, "node": s.node, "url": s.url })
        .to_string()
}

/// One round trip set: this node's records (with their TTL), start and stop events, then the
/// directory.
fn exchange(
    con: &mut Connection,
    s: &LocalState,
    announced: &mut BTreeSet<u32>,
) -> redis::RedisResult<(Vec<NodeRecord>, Vec<StreamRecord>)> {
    let ttl = TTL.as_secs();
    let mut p = redis::pipe();
    let node = serde_json::to_string(&s.node).unwrap_or_default();
    p.set_ex(node_key(&s.node.id), node, ttl).ignore();
    let live: BTreeSet<u32> = s.streams.iter().map(|st| st.channel).collect();
    for st in &s.streams {
        let rec = serde_json::to_string(st).unwrap_or_default();
        p.set_ex(stream_key(st.channel), rec, ttl).ignore();
        if !announced.contains(&st.channel) {
            p.publish(EVENTS, event("start", st)).ignore();
        }
    }
    let stopped: Vec<u32> = announced.difference(&live).copied().collect();
    for c in &stopped {
        // Only our own record: another node may originate the channel now.
        p.cmd("EVAL")
            .arg("if redis.call('GET', KEYS[1]) and string.find(redis.call('GET', KEYS[1]), ARGV[1], 1, true) then return redis.call('DEL', KEYS[1]) end return 0")
            .arg(1)
            .arg(stream_key(*c))
            .arg(format!("\"node\":\"{}\"", s.node.id))
            .ignore();
        let stop = StreamRecord {
            channel: *c,
            node: s.node.id.clone(),
            url: s.node.url.clone(),
            protocol: String::new(),
            epoch: 0,
        };
        p.publish(EVENTS, event("stop", &stop)).ignore();
    }
    p.query::<()>(con)?;
    *announced = live;
    let nodes = read_all::<NodeRecord>(con, "itg:node:*")?;
    let mut streams = read_all::<StreamRecord>(con, "itg:stream:*")?;
    streams.sort_by_key(|st| st.channel);
    Ok((nodes, streams))
}

/// Every record under a key pattern (SCAN, then MGET), parsed; unparsable ones are skipped.
fn read_all<T: serde::de::DeserializeOwned>(
    con: &mut Connection,
    pattern: &str,
) -> redis::RedisResult<Vec<T>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500)
            .query(con)?;
        keys.extend(batch);
        cursor = next;
        // Bounded: a directory is nodes and live channels, not millions of keys.
        if cursor == 0 || keys.len() > 100_000 {
            break;
        }
    }
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    keys.sort();
    keys.dedup();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(con)?;
    Ok(values
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_str(&v).ok())
        .collect())
}
