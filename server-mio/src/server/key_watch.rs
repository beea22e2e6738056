//! The key file, watched from the loop (every `FILE_CHECK`, one `stat`); when the file changed,
//! it is read again and the differences take effect at once. A channel added can go live; a
//! channel removed, or whose key was rotated, loses every session that authenticated with the
//! old key (FTL `410`, WHIP dropped; `stream_stop` reason `key_removed` or `key_rotated`). A
//! file that cannot be read keeps the last good keys in force. With `--auth-url` the key
//! service decides, and the file is only watched for the `keys` commands' sake.

use std::time::Instant;

use ftl_proto::ChannelId;
use log::{error, info, warn};
use relay_core::EndReason;

use super::Server;

impl Server {
    /// Keeps `server.json` current (live channels, key changes taken) when it changed.
    pub(super) fn note_running(&mut self) {
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

    pub(super) fn keys_reload(&mut self, now: Instant) {
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
        // A channel's recording setting may have changed: live streams follow it now.
        self.recording_reconcile(now);
        self.drain_relay(now);
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
