//! Congestion feedback to WebRTC publishers: what lets a browser's encoder send what its link
//! carries, and never more than the operator allows.
//!
//! - **Transport-wide congestion control** (TWCC): a publisher that negotiated the
//!   `transport-cc` feedback and the transport-wide sequence number extension estimates its own
//!   bandwidth from the arrival times the server reports; str0m writes those reports (every
//!   ~100 ms) for every publisher that negotiated them. Browsers do.
//! - **REMB**: a publisher that negotiated only `goog-remb` sends what the receiver allows;
//!   the server estimates that from what arrives and what is lost
//!   ([`relay_core::ingest_rate::IngestRate`]) and sends it every stats interval.
//! - **The cap** (`--whip-max-bitrate`): written into the answer's video section as `b=AS`
//!   (kbit/s, RFC 4566), which browsers and GStreamer apply to their encoder; and sent as the
//!   REMB of TWCC publishers too, for stacks that read only one of them. One `b=` line only:
//!   str0m's parser (and so every str0m-based WHIP client) takes at most one per section, so
//!   `b=TIAS` beside it would make the answer unreadable to them.
//!
//! A publisher that ignores feedback (OBS's WHIP output sends its configured bitrate) is
//! unaffected by all of it.

use std::time::{Duration, Instant};

use relay_core::ingest_rate::IngestRate;
use str0m::bwe::Bitrate;
use str0m::media::Mid;
use str0m::Rtc;

use super::peers::guarded;

/// How often str0m reports a publisher's receive statistics (the REMB cadence).
pub(in crate::server) const STATS_INTERVAL: Duration = Duration::from_millis(500);

/// What a publisher negotiated, read from the answer the server gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Control {
    /// Transport-wide congestion control: the publisher estimates; the cap goes as REMB.
    Twcc,
    /// REMB only: the server's estimate goes as REMB.
    Remb,
    /// No feedback the publisher reads: only the answer's bandwidth lines apply.
    None,
}

impl Control {
    /// Its name in the API.
    pub(in crate::server) fn name(self) -> &'static str {
        match self {
            Control::Twcc => "twcc",
            Control::Remb => "remb",
            Control::None => "none",
        }
    }
}

/// A publisher's feedback state.
#[derive(Debug)]
pub(in crate::server) struct Feedback {
    pub(in crate::server) control: Control,
    rate: IngestRate,
    cap_bps: Option<u64>,
    /// The last REMB sent (bit/s), for the API.
    pub(in crate::server) last_remb: Option<u64>,
}

impl Feedback {
    /// Feedback for a publisher answered with `answer`, under `cap_kbps` (0: none).
    pub(in crate::server) fn new(answer: &str, cap_kbps: u64) -> Feedback {
        let cap_bps = (cap_kbps > 0).then(|| cap_kbps.saturating_mul(1000));
        Feedback {
            control: negotiated(answer),
            rate: IngestRate::new(cap_bps),
            cap_bps,
            last_remb: None,
        }
    }

    /// The video stream's receive statistics (cumulative bytes, the loss the latest receiver
    /// report carried): sends the REMB this publisher should get, if any. Returns whether one
    /// was queued.
    pub(in crate::server) fn on_stats(
        &mut self,
        rtc: &mut Rtc,
        mid: Mid,
        bytes: u64,
        loss: Option<f32>,
        now: Instant,
    ) -> bool {
        let bps = match self.control {
            Control::Remb => self.rate.on_sample(bytes, loss, now),
            Control::Twcc => self.cap_bps,
            Control::None => None,
        };
        let Some(bps) = bps else {
            return false;
        };
        let sent = guarded(|| {
            rtc.direct_api()
                .stream_rx_by_mid(mid, None)
                .map(|rx| rx.request_remb(Bitrate::bps(bps)))
                .is_some()
        });
        let sent = matches!(sent, Ok(true));
        if sent {
            self.last_remb = Some(bps);
        }
        sent
    }
}

/// Which congestion control the answer's video section settled on.
fn negotiated(answer: &str) -> Control {
    let mut video = false;
    let (mut twcc_fb, mut twcc_ext, mut remb) = (false, false, false);
    for line in answer.lines() {
        if let Some(m) = line.strip_prefix("m=") {
            video = m.starts_with("video") && !m.starts_with("video 0 ");
        } else if video {
            if line.starts_with("a=rtcp-fb:") && line.ends_with(" transport-cc") {
                twcc_fb = true;
            } else if line.starts_with("a=rtcp-fb:") && line.ends_with(" goog-remb") {
                remb = true;
            } else if line.starts_with("a=extmap:") && line.contains("transport-wide-cc") {
                twcc_ext = true;
            }
        }
    }
    match (twcc_fb && twcc_ext, remb) {
        (true, _) => Control::Twcc,
        (false, true) => Control::Remb,
        (false, false) => Control::None,
    }
}

/// `answer` with the operator's cap in its video sections: `b=AS` after the section's `c=`
/// line (RFC 4566's order). Nothing changes without a cap.
pub(in crate::server) fn with_cap(answer: &str, cap_kbps: u64) -> String {
    if cap_kbps == 0 {
        return answer.to_owned();
    }
    let mut out = String::with_capacity(answer.len() + 64);
    let mut video = false;
    for line in answer.lines() {
        if line.starts_with("m=") {
            video = line.starts_with("m=video") && !line.starts_with("m=video 0 ");
        }
        if video && line.starts_with("b=") {
            // Ours replaces whatever str0m wrote.
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
        if video && line.starts_with("c=") {
            out.push_str(&format!("b=AS:{cap_kbps}\r\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
        a=rtcp-fb:111 transport-cc\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n\
        a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
        a=rtpmap:96 H264/90000\r\na=rtcp-fb:96 transport-cc\r\na=rtcp-fb:96 goog-remb\r\n";

    #[test]
    fn the_answer_says_which_feedback_a_publisher_reads() {
        assert_eq!(negotiated(ANSWER), Control::Twcc);
        let remb_only = ANSWER.replace("a=rtcp-fb:96 transport-cc\r\n", "");
        assert_eq!(negotiated(&remb_only), Control::Remb);
        // The extension alone is not TWCC; nor is the audio section's feedback.
        let no_ext = ANSWER.replace("transport-wide-cc", "abs-send-time");
        assert_eq!(negotiated(&no_ext), Control::Remb);
        let none = remb_only.replace("a=rtcp-fb:96 goog-remb\r\n", "");
        assert_eq!(negotiated(&none), Control::None);
    }

    #[test]
    fn the_cap_goes_into_the_video_section_only() {
        let capped = with_cap(ANSWER, 2500);
        let video = capped.split("m=video").nth(1).unwrap_or_default();
        assert!(
            video
                .starts_with(" 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\nb=AS:2500\r\na=mid:1"),
            "{capped}"
        );
        let audio = capped.split("m=video").next().unwrap_or_default();
        assert!(!audio.contains("b="));
        assert_eq!(with_cap(ANSWER, 0), ANSWER);
        // Applied twice, one set of lines.
        assert_eq!(with_cap(&capped, 2500), capped);
    }
}
