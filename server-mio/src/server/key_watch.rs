//! The files the server watches from the loop: the key file and the TLS certificate pair.
//!
//! The key file: every `KEY_CHECK` one `stat`; when the file changed,
//! it is read again and the differences take effect at once. A channel added can go live; a
//! channel removed, or whose key was rotated, loses every session that authenticated with the
//! old key (FTL `410`, WHIP dropped; `stream_stop` reason `key_removed` or `key_rotated`). A
//! file that cannot be read keeps the last good keys in force. With `--auth-url` the key
//! service decides, and the file is only watched for the `keys` commands' sake.

use std::time::{Duration, Instant};

use ftl_proto::ChannelId;
use log::{error, info, warn};
use relay_core::EndReason;

use super::Server;

/// How often the key file is looked at.
pub(super) const KEY_CHECK: Duration = Duration::from_millis(250);

impl Server {
    /// A renewed certificate pair serves the next connections; one that does not load keeps
    /// the pair in force.
    fn tls_refresh(&mut self) {
        let Some(certs) = self.certs.as_mut() else {
            return;
        };
        match certs.refresh() {
            Ok(false) => {}
            Ok(true) => {
                self.counters.tls_reloads += 1;
                info!("TLS: a new certificate pair is in force");
            }
            Err(e) => {
                self.counters.tls_reload_errors += 1;
                error!("TLS: {e}; the certificate in force stays");
            }
        }
    }

    /// When the key file is next looked at.
    pub(super) fn keys_deadline(&self) -> Instant {
        self.keys_check_at
    }

    pub(super) fn keys_timeout(&mut self, now: Instant) {
        if now < self.keys_check_at {
            return;
        }
        self.keys_check_at = now + KEY_CHECK;
        self.tls_refresh();
        self.keys_reload(now);
        self.note_running();
    }

    /// Keeps `server.json` current (live channels, key changes taken) when it changed.
    fn note_running(&mut self) {
        let live: Vec<(u32, String)> = self
            .relay
            .channels()
            .filter(|c| self.relay.is_live(*c))
            .map(|c| (c.0, self.protocol_of(c).unwrap_or("ftl").to_owned()))
            .collect();
        let key_reloads = self.counters.key_reloads;
        if live == self.running.live && key_reloads == self.running.key_reloads {
            return;
        }
        self.running.live = live;
        self.running.key_reloads = key_reloads;
        if let Some(dir) = self.keys.path().parent() {
            crate::keys::note_running(dir, &self.running);
        }
    }

    fn keys_reload(&mut self, now: Instant) {
        if !self.keys.changed() {
            return;
        }
        let changes = match self.keys.reload() {
            Ok(c) => c,
            Err(e) => {
                self.counters.key_file_errors += 1;
                error!("key file: {e}; the keys in force stay as they were");
                return;
            }
        };
        self.counters.key_reloads += 1;
        if changes.is_empty() {
            return;
        }
        info!(
            "key file {}: added {:?}, removed {:?}, rotated {:?}",
            self.keys.path().display(),
            changes.added,
            changes.removed,
            changes.rotated
        );
        if self.hooks.is_some() {
            return;
        }
        let revoked = changes
            .removed
            .iter()
            .map(|c| (*c, EndReason::KeyRemoved))
            .chain(changes.rotated.iter().map(|c| (*c, EndReason::KeyRotated)));
        for (channel, reason) in revoked.collect::<Vec<_>>() {
            let channel = ChannelId(channel);
            let live = self.relay.is_live(channel);
            let n = self.ftl_revoke(channel, reason, now) + self.whip_revoke(channel, reason);
            if n > 0 {
                warn!(
                    "channel {channel}: {} (the stream key was {}): {n} session(s) let go{}",
                    if live {
                        "stream ended"
                    } else {
                        "sessions closed"
                    },
                    if reason == EndReason::KeyRemoved {
                        "removed"
                    } else {
                        "rotated"
                    },
                    if live { "" } else { " before going live" }
                );
            }
        }
        self.drain_relay(now);
    }
}
