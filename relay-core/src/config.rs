//! Limits and timings of the relay. Every bound on memory or work a peer can cause is here.

use std::time::Duration;

/// Loss repair towards the FTL client.
#[derive(Debug, Clone)]
pub struct NackConfig {
    /// A gap is NACKed only when still open this long after it was seen: packets reordered by
    /// less than this are not asked for again (the reorder window).
    pub reorder_delay: Duration,
    /// Between two NACKs for the same packet (about one round trip).
    pub retry_interval: Duration,
    /// NACKs per missing packet before giving up.
    pub max_retries: u32,
    /// Give up on a missing packet this long after it went missing, whatever the retries.
    pub give_up_after: Duration,
    /// Most packets tracked as missing per track; a larger gap is an outage, not loss.
    pub max_missing: usize,
}

impl Default for NackConfig {
    fn default() -> Self {
        NackConfig {
            reorder_delay: Duration::from_millis(10),
            retry_interval: Duration::from_millis(50),
            max_retries: 4,
            give_up_after: Duration::from_millis(500),
            max_missing: 512,
        }
    }
}

/// The relay's configuration.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Live streams at once.
    pub max_streams: usize,
    /// Viewers in total.
    pub max_viewers: usize,
    /// Viewers on one channel.
    pub max_viewers_per_channel: usize,
    /// Most bytes the GOP cache of one stream holds; a longer GOP disables the cache until the
    /// next keyframe (joiners then wait for it).
    pub gop_max_bytes: usize,
    /// Most time the GOP cache of one stream spans (OBS's simple mode uses ~8 s keyframes).
    pub gop_max_duration: Duration,
    /// A viewer whose reported backlog exceeds this many bytes skips to the next keyframe.
    pub max_viewer_backlog: usize,
    /// A video packet that waited on this machine longer than this before the relay got it
    /// (the loop could not keep up) makes a share of the stream's live viewers skip to the next
    /// keyframe (see [`RelayConfig::late_share`]), so delay stops growing.
    pub late_after: Duration,
    /// The share of live viewers skipped per step while late: one in this many (at least one).
    pub late_share: usize,
    /// Steps while late are at least this far apart, so the loop sees the relief of one
    /// step before the next (packets read while catching up are still old).
    pub late_step: Duration,
    /// A packet that waited longer than this is delivered to no viewer: delivered that late it
    /// would only hold viewers behind (the stepwise skips of [`RelayConfig::late_after`] did not
    /// relieve the loop enough). Every live viewer's video skips to the next keyframe that is
    /// itself on time; late audio is dropped. Taps (edge pulls) still get it.
    pub late_drop_after: Duration,
    /// A stream without media for this long ends.
    pub media_timeout: Duration,
    /// The RTP timestamp spacing of cached frames replayed to a joining viewer (see
    /// [`crate::viewer`]), in 90 kHz ticks.
    pub catch_up_ticks: u32,
    /// A viewer's keyframe requests are answered from the cache at most this often.
    pub keyframe_request_interval: Duration,
    /// A watching viewer's keyframe request is answered from the cache only while the cached
    /// GOP is younger than this, where the encoder can be asked for a keyframe instead: the
    /// replay sends all of it at once, and a viewer that asks is often one whose link just
    /// lost packets (a browser publisher's GOP runs until someone asks, often many seconds).
    /// Joins always start from the cache.
    pub restart_replay_max_age: Duration,
    /// Keyframes are asked of an encoder that can be asked (a WebRTC publisher) at most this
    /// often per stream.
    pub upstream_keyframe_interval: Duration,
    pub nack: NackConfig,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            max_streams: 100,
            max_viewers: 10_000,
            max_viewers_per_channel: 10_000,
            gop_max_bytes: 16 * 1024 * 1024,
            gop_max_duration: Duration::from_secs(12),
            max_viewer_backlog: 2 * 1024 * 1024,
            late_after: Duration::from_millis(200),
            late_share: 8,
            late_step: Duration::from_millis(40),
            late_drop_after: Duration::from_millis(300),
            media_timeout: Duration::from_secs(15),
            catch_up_ticks: 90,
            keyframe_request_interval: Duration::from_secs(1),
            restart_replay_max_age: Duration::from_millis(500),
            upstream_keyframe_interval: Duration::from_secs(1),
            nack: NackConfig::default(),
        }
    }
}
