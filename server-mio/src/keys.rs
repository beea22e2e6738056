//! The stream key store: channels with id, name and secret, kept as JSON in the data dir with
//! file mode 0600 (it holds secrets).
//!
//! A corrupt or unreadable file is an error at start, never replaced by a silent default. The
//! running server sees changes (the `keys` commands, or an edit) with [`KeyStore::changed`], a
//! `stat` cheap enough for a timer, then [`KeyStore::reload`]: a file that is missing, corrupt
//! or half-written keeps the last good set in force.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ftl_proto::{ChannelId, StreamKey};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::file_stamp::FileStamp;

/// One channel a streamer may stream to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: u32,
    pub name: String,
    pub key: String,
    /// Whether this channel's streams are recorded: `None` follows `--record`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<bool>,
}

impl Channel {
    /// The stream key OBS needs: `<channel>-<secret>`.
    pub fn obs_key(&self) -> String {
        format!("{}-{}", self.id, self.key)
    }

    /// The secret as the HMAC key.
    pub fn stream_key(&self) -> StreamKey {
        StreamKey::new(self.key.as_bytes())
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    channels: Vec<Channel>,
}

/// The key file and its channels.
#[derive(Debug)]
pub struct KeyStore {
    path: PathBuf,
    channels: Vec<Channel>,
    /// The file as last read (or last found unreadable), to see changes without reading it.
    stamp: Option<FileStamp>,
}

/// What a reload changed, by channel id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KeyChanges {
    pub added: Vec<u32>,
    pub removed: Vec<u32>,
    /// Channels whose secret changed: sessions that authenticated with the old one must go.
    pub rotated: Vec<u32>,
}

impl KeyChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.rotated.is_empty()
    }
}

/// Parses and checks the file's bytes.
fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Channel>, KeyError> {
    let file: File = serde_json::from_slice(bytes)
        .map_err(|e| KeyError::Corrupt(path.to_owned(), e.to_string()))?;
    for c in &file.channels {
        if c.id == 0 || c.id > ChannelId::MAX || c.key.is_empty() {
            return Err(KeyError::Corrupt(
                path.to_owned(),
                format!("bad channel {}", c.id),
            ));
        }
    }
    Ok(file.channels)
}

/// Errors of the key store, naming the file.
#[derive(Debug)]
pub enum KeyError {
    Io(PathBuf, std::io::Error),
    Corrupt(PathBuf, String),
    NoSuchChannel(u32),
    ChannelExists(u32),
    InvalidChannel(u32),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            KeyError::Corrupt(p, e) => write!(f, "{}: not a valid key file: {e}", p.display()),
            KeyError::NoSuchChannel(c) => write!(f, "no channel {c}"),
            KeyError::ChannelExists(c) => write!(f, "channel {c} exists already"),
            KeyError::InvalidChannel(c) => {
                write!(
                    f,
                    "channel id {c} is out of range (1 to {})",
                    ChannelId::MAX
                )
            }
        }
    }
}

impl std::error::Error for KeyError {}

const FILE_NAME: &str = "keys.json";
/// Written by a running server beside the key file, and kept current: its process id, HTTP
/// address, live channels and how many key file changes it took. The `keys` commands read it
/// (no network, TLS or not) to show what is live and to wait for a change to be taken.
const RUNNING_FILE: &str = "server.json";

/// A running server's state, as it notes it in its data dir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub pid: u32,
    pub http: Option<std::net::SocketAddr>,
    /// Live channels and the protocol feeding each.
    #[serde(default)]
    pub live: Vec<(u32, String)>,
    #[serde(default)]
    pub key_reloads: u64,
}

/// Notes the running server's state in `data_dir` (best effort; written whole, then renamed).
pub fn note_running(data_dir: &Path, r: &Running) {
    let (path, tmp) = (
        data_dir.join(RUNNING_FILE),
        data_dir.join("server.json.tmp"),
    );
    if let Ok(body) = serde_json::to_vec(r) {
        if fs::write(&tmp, body).is_ok() {
            let _ = fs::rename(&tmp, &path);
        }
    }
}

/// Removes the note at shutdown.
pub fn forget_running(data_dir: &Path) {
    let _ = fs::remove_file(data_dir.join(RUNNING_FILE));
}

/// The server running on `data_dir`, if its note names a live process.
pub fn running(data_dir: &Path) -> Option<Running> {
    let r: Running = serde_json::from_slice(&fs::read(data_dir.join(RUNNING_FILE)).ok()?).ok()?;
    Path::new(&format!("/proc/{}", r.pid)).exists().then_some(r)
}

const SECRET_LEN: usize = 32;

impl KeyStore {
    /// Opens the key file in `data_dir`; a missing file is an empty store (nothing is written
    /// until a channel is added).
    pub fn open(data_dir: &Path) -> Result<KeyStore, KeyError> {
        let path = data_dir.join(FILE_NAME);
        let before = FileStamp::of(&path);
        let channels = match fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(KeyError::Io(path, e)),
        };
        Ok(KeyStore {
            path,
            channels,
            stamp: before,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file on disk differs from the version last read (one `stat`).
    pub fn changed(&self) -> bool {
        FileStamp::of(&self.path) != self.stamp
    }

    /// Reads the file again. On success the new set is in force and the differences are
    /// returned; on failure (missing, unreadable, corrupt, half-written) the last good set
    /// stays in force, and the same version of the file is not reported again.
    pub fn reload(&mut self) -> Result<KeyChanges, KeyError> {
        // Stamped before reading: a write that lands during the read is seen next time.
        self.stamp = FileStamp::of(&self.path);
        let bytes = fs::read(&self.path).map_err(|e| KeyError::Io(self.path.clone(), e))?;
        let channels = parse(&self.path, &bytes)?;
        let mut changes = KeyChanges::default();
        for c in &channels {
            match self.channels.iter().find(|o| o.id == c.id) {
                None => changes.added.push(c.id),
                Some(o) if o.key != c.key => changes.rotated.push(c.id),
                Some(_) => {}
            }
        }
        for o in &self.channels {
            if !channels.iter().any(|c| c.id == o.id) {
                changes.removed.push(o.id);
            }
        }
        self.channels = channels;
        Ok(changes)
    }

    /// The channels, by id.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// The channel with this id.
    pub fn get(&self, id: ChannelId) -> Option<&Channel> {
        self.channels.iter().find(|c| c.id == id.0)
    }

    /// Adds a channel with a fresh secret (and a random id unless given). Saves the file.
    pub fn add(&mut self, id: Option<u32>, name: Option<String>) -> Result<Channel, KeyError> {
        let mut rng = rand::rng();
        let id = match id {
            Some(0) => return Err(KeyError::InvalidChannel(0)),
            Some(id) if id > ChannelId::MAX => return Err(KeyError::InvalidChannel(id)),
            Some(id) if self.channels.iter().any(|c| c.id == id) => {
                return Err(KeyError::ChannelExists(id))
            }
            Some(id) => id,
            None => loop {
                let id = rng.random_range(100_000..1_000_000);
                if !self.channels.iter().any(|c| c.id == id) {
                    break id;
                }
            },
        };
        let channel = Channel {
            id,
            name: name.unwrap_or_else(|| format!("Channel {id}")),
            key: Alphanumeric.sample_string(&mut rng, SECRET_LEN),
            record: None,
        };
        self.channels.push(channel.clone());
        self.channels.sort_by_key(|c| c.id);
        self.save()?;
        Ok(channel)
    }

    /// Gives a channel a new secret. Saves the file.
    pub fn rotate(&mut self, id: u32) -> Result<Channel, KeyError> {
        let c = self
            .channels
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(KeyError::NoSuchChannel(id))?;
        c.key = Alphanumeric.sample_string(&mut rand::rng(), SECRET_LEN);
        let c = c.clone();
        self.save()?;
        Ok(c)
    }

    /// Sets whether a channel's streams are recorded (`None`: as `--record` says). Saves the
    /// file.
    pub fn set_record(&mut self, id: u32, record: Option<bool>) -> Result<Channel, KeyError> {
        let c = self
            .channels
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or(KeyError::NoSuchChannel(id))?;
        c.record = record;
        let c = c.clone();
        self.save()?;
        Ok(c)
    }

    /// Removes a channel. Saves the file.
    pub fn remove(&mut self, id: u32) -> Result<Channel, KeyError> {
        let i = self
            .channels
            .iter()
            .position(|c| c.id == id)
            .ok_or(KeyError::NoSuchChannel(id))?;
        let c = self.channels.remove(i);
        self.save()?;
        Ok(c)
    }

    /// Writes the file atomically (temporary file, then rename), mode 0600.
    fn save(&mut self) -> Result<(), KeyError> {
        let io = |e| KeyError::Io(self.path.clone(), e);
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&File {
            channels: self.channels.clone(),
        })
        .map_err(|e| KeyError::Corrupt(self.path.clone(), e.to_string()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)?;
        self.stamp = FileStamp::of(&self.path);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "itg-keys-{}-{}",
            std::process::id(),
            rand::rng().random::<u32>()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn add_rotate_remove_persist() {
        let d = dir();
        let mut s = KeyStore::open(&d).unwrap();
        assert!(s.channels().is_empty());
        let c = s.add(Some(77), Some("main".into())).unwrap();
        assert_eq!(c.key.len(), 32);
        assert!(c.obs_key().starts_with("77-"));
        let mode = fs::metadata(d.join("keys.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let r = s.rotate(77).unwrap();
        assert_ne!(r.key, c.key);
        let again = KeyStore::open(&d).unwrap();
        assert_eq!(again.get(ChannelId(77)).unwrap().key, r.key);
        assert!(matches!(
            s.add(Some(77), None),
            Err(KeyError::ChannelExists(77))
        ));
        assert!(matches!(
            s.add(Some(0), None),
            Err(KeyError::InvalidChannel(0))
        ));
        let random = s.add(None, None).unwrap();
        assert!((100_000..1_000_000).contains(&random.id));
        s.remove(77).unwrap();
        assert!(matches!(s.remove(77), Err(KeyError::NoSuchChannel(77))));
        assert_eq!(KeyStore::open(&d).unwrap().channels().len(), 1);
    }

    #[test]
    fn reloads_report_changes_and_bad_files_keep_the_last_good_set() {
        let d = dir();
        let mut server = KeyStore::open(&d).unwrap();
        assert!(!server.changed());
        let mut cli = KeyStore::open(&d).unwrap();
        let a = cli.add(Some(1), None).unwrap();
        cli.add(Some(2), None).unwrap();
        assert!(server.changed());
        let c = server.reload().unwrap();
        assert_eq!(c.added, vec![1, 2]);
        assert!(!server.changed());
        let mut cli = KeyStore::open(&d).unwrap();
        cli.rotate(1).unwrap();
        cli.remove(2).unwrap();
        cli.add(Some(3), None).unwrap();
        let c = server.reload().unwrap();
        assert_eq!(
            c,
            KeyChanges {
                added: vec![3],
                removed: vec![2],
                rotated: vec![1]
            }
        );
        assert_ne!(server.get(ChannelId(1)).unwrap().key, a.key);
        // Half-written, corrupt, then missing: the last good set stays, each reported once.
        let good = fs::read(d.join("keys.json")).unwrap();
        fs::write(d.join("keys.json"), &good[..good.len() / 2]).unwrap();
        assert!(server.changed());
        assert!(matches!(server.reload(), Err(KeyError::Corrupt(..))));
        assert!(
            !server.changed(),
            "the same bad version is not reported again"
        );
        assert_eq!(server.channels().len(), 2);
        fs::remove_file(d.join("keys.json")).unwrap();
        assert!(server.changed());
        assert!(matches!(server.reload(), Err(KeyError::Io(..))));
        assert_eq!(server.channels().len(), 2);
        fs::write(d.join("keys.json"), &good).unwrap();
        assert!(server.reload().unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_file_is_an_error() {
        let d = dir();
        fs::write(d.join("keys.json"), b"{not json").unwrap();
        assert!(matches!(KeyStore::open(&d), Err(KeyError::Corrupt(..))));
        fs::write(
            d.join("keys.json"),
            br#"{"channels":[{"id":0,"name":"x","key":"k"}]}"#,
        )
        .unwrap();
        assert!(matches!(KeyStore::open(&d), Err(KeyError::Corrupt(..))));
    }
}
