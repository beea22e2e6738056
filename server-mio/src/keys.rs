//! The stream key store: channels with id, name and secret, kept as JSON in the data dir with
//! file mode 0600 (it holds secrets).
//!
//! A corrupt or unreadable file is an error at start, never replaced by a silent default.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ftl_proto::{ChannelId, StreamKey};
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One channel a streamer may stream to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: u32,
    pub name: String,
    pub key: String,
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
const SECRET_LEN: usize = 32;

impl KeyStore {
    /// Opens the key file in `data_dir`; a missing file is an empty store (nothing is written
    /// until a channel is added).
    pub fn open(data_dir: &Path) -> Result<KeyStore, KeyError> {
        let path = data_dir.join(FILE_NAME);
        let channels = match fs::read(&path) {
            Ok(bytes) => {
                let file: File = serde_json::from_slice(&bytes)
                    .map_err(|e| KeyError::Corrupt(path.clone(), e.to_string()))?;
                for c in &file.channels {
                    if c.id == 0 || c.id > ChannelId::MAX || c.key.is_empty() {
                        return Err(KeyError::Corrupt(path, format!("bad channel {}", c.id)));
                    }
                }
                file.channels
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(KeyError::Io(path, e)),
        };
        Ok(KeyStore { path, channels })
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
    fn save(&self) -> Result<(), KeyError> {
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
