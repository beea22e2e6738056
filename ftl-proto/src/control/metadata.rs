//! Stream metadata: the attribute lines between `CONNECT` and `.`.
//!
//! The reference client sends, in order: `ProtocolVersion`, `VendorName`, `VendorVersion`, then
//! the video block (`Video: true`, `VideoCodec`, `VideoHeight`, `VideoWidth`, `VideoPayloadType`,
//! `VideoIngestSSRC`) and the audio block (`Audio: true`, `AudioCodec`, `AudioPayloadType`,
//! `AudioIngestSSRC`), each block only if that track exists. Typed attributes are parsed as they
//! arrive (a bad value is refused on its line); unknown ones are kept as strings, because clients
//! add vendor attributes and refusing them would break streams for no reason.

use crate::types::Ssrc;
use crate::Error;

/// `ProtocolVersion: <major>.<minor>`. Seen as `0.9` and `0.2`; any value is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolVersion {
    pub major: u32,
    pub minor: u32,
}

/// Video codecs the FTL client enum knows. Only H.264 can be relayed to browsers untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoCodec {
    H264,
    Vp8,
    Other(String),
}

/// Audio codecs the FTL client enum knows. Only Opus can be relayed to browsers untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioCodec {
    Opus,
    Aac,
    Other(String),
}

/// The announced video track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoTrack {
    pub codec: VideoCodec,
    /// As announced. The reference client hard-codes 1280x720: take the real size from the SPS.
    pub width: u32,
    pub height: u32,
    pub payload_type: u8,
    pub ssrc: Ssrc,
}

/// The announced audio track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioTrack {
    pub codec: AudioCodec,
    pub payload_type: u8,
    pub ssrc: Ssrc,
}

/// Everything a client announced about its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub protocol_version: ProtocolVersion,
    pub vendor_name: String,
    pub vendor_version: String,
    pub video: Option<VideoTrack>,
    pub audio: Option<AudioTrack>,
    /// Attributes this crate does not know, in arrival order.
    pub extra: Vec<(String, String)>,
}

/// The largest width or height accepted in `VideoWidth`/`VideoHeight` (8K is 7680).
pub const MAX_DIMENSION: u32 = 16384;

impl Metadata {
    /// Metadata as the reference client sends it for an H.264 + Opus stream on `channel`'s
    /// SSRCs (audio `channel`, video `channel + 1`).
    pub fn reference(channel: u32) -> Metadata {
        Metadata {
            protocol_version: ProtocolVersion { major: 0, minor: 9 },
            vendor_name: "itg-ftl-client".into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            video: Some(VideoTrack {
                codec: VideoCodec::H264,
                width: 1280,
                height: 720,
                payload_type: 96,
                ssrc: Ssrc(channel.wrapping_add(1)),
            }),
            audio: Some(AudioTrack {
                codec: AudioCodec::Opus,
                payload_type: 97,
                ssrc: Ssrc(channel),
            }),
            extra: Vec::new(),
        }
    }

    /// The attribute lines in the reference client's order, without line terminators.
    pub fn to_lines(&self) -> Vec<String> {
        let mut l = vec![
            format!(
                "ProtocolVersion: {}.{}",
                self.protocol_version.major, self.protocol_version.minor
            ),
            format!("VendorName: {}", self.vendor_name),
            format!("VendorVersion: {}", self.vendor_version),
        ];
        if let Some(v) = &self.video {
            l.push("Video: true".into());
            l.push(format!("VideoCodec: {}", video_codec_name(&v.codec)));
            l.push(format!("VideoHeight: {}", v.height));
            l.push(format!("VideoWidth: {}", v.width));
            l.push(format!("VideoPayloadType: {}", v.payload_type));
            l.push(format!("VideoIngestSSRC: {}", v.ssrc));
        }
        if let Some(a) = &self.audio {
            l.push("Audio: true".into());
            l.push(format!("AudioCodec: {}", audio_codec_name(&a.codec)));
            l.push(format!("AudioPayloadType: {}", a.payload_type));
            l.push(format!("AudioIngestSSRC: {}", a.ssrc));
        }
        for (k, v) in &self.extra {
            l.push(format!("{k}: {v}"));
        }
        l
    }
}

fn video_codec_name(c: &VideoCodec) -> &str {
    match c {
        VideoCodec::H264 => "H264",
        VideoCodec::Vp8 => "VP8",
        VideoCodec::Other(s) => s,
    }
}

fn audio_codec_name(c: &AudioCodec) -> &str {
    match c {
        AudioCodec::Opus => "OPUS",
        AudioCodec::Aac => "AAC",
        AudioCodec::Other(s) => s,
    }
}

/// Collects attribute lines and validates the whole set at the end-of-metadata line.
#[derive(Debug, Clone, Default)]
pub struct MetadataBuilder {
    protocol_version: Option<ProtocolVersion>,
    vendor_name: Option<String>,
    vendor_version: Option<String>,
    video: Option<bool>,
    video_codec: Option<VideoCodec>,
    video_width: Option<u32>,
    video_height: Option<u32>,
    video_pt: Option<u8>,
    video_ssrc: Option<Ssrc>,
    audio: Option<bool>,
    audio_codec: Option<AudioCodec>,
    audio_pt: Option<u8>,
    audio_ssrc: Option<Ssrc>,
    extra: Vec<(String, String)>,
    count: usize,
}

impl MetadataBuilder {
    /// Takes one `Name: value` attribute. `max_attributes` bounds the total count.
    pub fn add(&mut self, name: &str, value: &str, max_attributes: usize) -> Result<(), Error> {
        if self.count >= max_attributes {
            return Err(Error::TooManyAttributes {
                limit: max_attributes,
            });
        }
        self.count += 1;
        let bad = |reason| Error::BadAttribute {
            name: name.to_owned(),
            value: value.to_owned(),
            reason,
        };
        match name {
            "ProtocolVersion" => {
                let (maj, min) = value
                    .split_once('.')
                    .ok_or_else(|| bad("not major.minor"))?;
                let v = ProtocolVersion {
                    major: parse_decimal(maj).ok_or_else(|| bad("not major.minor"))?,
                    minor: parse_decimal(min).ok_or_else(|| bad("not major.minor"))?,
                };
                set(&mut self.protocol_version, v, name)
            }
            "VendorName" => set(&mut self.vendor_name, value.to_owned(), name),
            "VendorVersion" => set(&mut self.vendor_version, value.to_owned(), name),
            "Video" => set(
                &mut self.video,
                parse_bool(value).ok_or_else(|| bad("not true/false"))?,
                name,
            ),
            "Audio" => set(
                &mut self.audio,
                parse_bool(value).ok_or_else(|| bad("not true/false"))?,
                name,
            ),
            "VideoCodec" => {
                let c = match value {
                    "H264" => VideoCodec::H264,
                    "VP8" => VideoCodec::Vp8,
                    other => VideoCodec::Other(other.to_owned()),
                };
                set(&mut self.video_codec, c, name)
            }
            "AudioCodec" => {
                let c = match value {
                    "OPUS" => AudioCodec::Opus,
                    "AAC" => AudioCodec::Aac,
                    other => AudioCodec::Other(other.to_owned()),
                };
                set(&mut self.audio_codec, c, name)
            }
            "VideoWidth" | "VideoHeight" => {
                let v = parse_decimal(value)
                    .filter(|v| *v <= MAX_DIMENSION)
                    .ok_or_else(|| bad("not a size up to 16384"))?;
                let slot = if name == "VideoWidth" {
                    &mut self.video_width
                } else {
                    &mut self.video_height
                };
                set(slot, v, name)
            }
            "VideoPayloadType" | "AudioPayloadType" => {
                let pt = parse_decimal(value)
                    .filter(|v| *v <= 127)
                    .ok_or_else(|| bad("not a payload type 0-127"))?;
                let slot = if name == "VideoPayloadType" {
                    &mut self.video_pt
                } else {
                    &mut self.audio_pt
                };
                set(slot, pt as u8, name)
            }
            "VideoIngestSSRC" | "AudioIngestSSRC" => {
                let ssrc = Ssrc(parse_decimal(value).ok_or_else(|| bad("not a 32-bit SSRC"))?);
                let slot = if name == "VideoIngestSSRC" {
                    &mut self.video_ssrc
                } else {
                    &mut self.audio_ssrc
                };
                set(slot, ssrc, name)
            }
            _ => {
                self.extra.push((name.to_owned(), value.to_owned()));
                Ok(())
            }
        }
    }

    /// Validates the set at the `.` line: required attributes present, codecs relayable, no
    /// payload type or SSRC shared between the tracks.
    pub fn finish(self) -> Result<Metadata, Error> {
        let protocol_version = self
            .protocol_version
            .ok_or(Error::MissingAttribute("ProtocolVersion"))?;
        let video = if self.video == Some(true) {
            let codec = self
                .video_codec
                .ok_or(Error::MissingAttribute("VideoCodec"))?;
            if codec != VideoCodec::H264 {
                return Err(Error::UnsupportedCodec {
                    kind: "video",
                    codec: video_codec_name(&codec).to_owned(),
                });
            }
            Some(VideoTrack {
                codec,
                width: self.video_width.unwrap_or(0),
                height: self.video_height.unwrap_or(0),
                payload_type: self
                    .video_pt
                    .ok_or(Error::MissingAttribute("VideoPayloadType"))?,
                ssrc: self
                    .video_ssrc
                    .ok_or(Error::MissingAttribute("VideoIngestSSRC"))?,
            })
        } else {
            None
        };
        let audio = if self.audio == Some(true) {
            let codec = self
                .audio_codec
                .ok_or(Error::MissingAttribute("AudioCodec"))?;
            if codec != AudioCodec::Opus {
                return Err(Error::UnsupportedCodec {
                    kind: "audio",
                    codec: audio_codec_name(&codec).to_owned(),
                });
            }
            Some(AudioTrack {
                codec,
                payload_type: self
                    .audio_pt
                    .ok_or(Error::MissingAttribute("AudioPayloadType"))?,
                ssrc: self
                    .audio_ssrc
                    .ok_or(Error::MissingAttribute("AudioIngestSSRC"))?,
            })
        } else {
            None
        };
        match (&video, &audio) {
            (None, None) => return Err(Error::NoTracks),
            (Some(v), Some(a)) if v.payload_type == a.payload_type => {
                return Err(Error::PayloadTypeCollision(v.payload_type))
            }
            (Some(v), Some(a)) if v.ssrc == a.ssrc => return Err(Error::SsrcCollision(v.ssrc.0)),
            _ => {}
        }
        Ok(Metadata {
            protocol_version,
            vendor_name: self.vendor_name.unwrap_or_default(),
            vendor_version: self.vendor_version.unwrap_or_default(),
            video,
            audio,
            extra: self.extra,
        })
    }
}

fn set<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), Error> {
    if slot.is_some() {
        return Err(Error::DuplicateAttribute(name.to_owned()));
    }
    *slot = Some(value);
    Ok(())
}

/// Plain decimal digits that fit a `u32`; no sign, no spaces.
fn parse_decimal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(lines: &[(&str, &str)]) -> Result<Metadata, Error> {
        let mut b = MetadataBuilder::default();
        for (k, v) in lines {
            b.add(k, v, 64)?;
        }
        b.finish()
    }

    fn reference_pairs() -> Vec<(String, String)> {
        Metadata::reference(77)
            .to_lines()
            .iter()
            .map(|l| {
                let (k, v) = l.split_once(": ").unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    #[test]
    fn reference_lines_round_trip() {
        let pairs = reference_pairs();
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        assert_eq!(build(&refs).unwrap(), Metadata::reference(77));
        assert_eq!(pairs[0], ("ProtocolVersion".into(), "0.9".into()));
        assert_eq!(pairs[8], ("VideoIngestSSRC".into(), "78".into()));
    }

    #[test]
    fn video_only_and_audio_only() {
        let v = build(&[
            ("ProtocolVersion", "0.2"),
            ("Video", "true"),
            ("VideoCodec", "H264"),
            ("VideoPayloadType", "96"),
            ("VideoIngestSSRC", "5"),
        ])
        .unwrap();
        assert!(v.audio.is_none());
        assert_eq!(v.video.unwrap().width, 0);
        let a = build(&[
            ("ProtocolVersion", "0.9"),
            ("Audio", "true"),
            ("AudioCodec", "OPUS"),
            ("AudioPayloadType", "97"),
            ("AudioIngestSSRC", "5"),
            ("Video", "false"),
        ])
        .unwrap();
        assert!(a.video.is_none() && a.audio.is_some());
    }

    #[test]
    fn unknown_attributes_are_kept() {
        let mut b = MetadataBuilder::default();
        b.add("ProtocolVersion", "0.9", 64).unwrap();
        b.add("X-Custom", "hello: world", 64).unwrap();
        b.add("Audio", "true", 64).unwrap();
        b.add("AudioCodec", "OPUS", 64).unwrap();
        b.add("AudioPayloadType", "97", 64).unwrap();
        b.add("AudioIngestSSRC", "1", 64).unwrap();
        let m = b.finish().unwrap();
        assert_eq!(m.extra, [("X-Custom".into(), "hello: world".into())]);
    }

    #[test]
    fn bad_values_are_refused_on_their_line() {
        let cases = [
            ("ProtocolVersion", "nine"),
            ("ProtocolVersion", "0."),
            ("Video", "yes"),
            ("VideoWidth", "-1"),
            ("VideoWidth", "16385"),
            ("VideoHeight", "1e3"),
            ("VideoPayloadType", "128"),
            ("AudioPayloadType", " 97"),
            ("VideoIngestSSRC", "4294967296"),
            ("AudioIngestSSRC", "0x10"),
        ];
        for (k, v) in cases {
            let mut b = MetadataBuilder::default();
            let err = b.add(k, v, 64).unwrap_err();
            assert!(
                matches!(err, Error::BadAttribute { .. }),
                "{k}: {v} gave {err}"
            );
        }
    }

    #[test]
    fn duplicates_and_count_limit() {
        let mut b = MetadataBuilder::default();
        b.add("Video", "true", 3).unwrap();
        assert_eq!(
            b.add("Video", "true", 3),
            Err(Error::DuplicateAttribute("Video".into()))
        );
        b.add("A", "1", 3).unwrap();
        assert_eq!(
            b.add("B", "2", 3),
            Err(Error::TooManyAttributes { limit: 3 })
        );
    }

    #[test]
    fn finish_checks_the_whole_set() {
        let base = [("ProtocolVersion", "0.9")];
        assert_eq!(build(&base), Err(Error::NoTracks));
        assert_eq!(
            build(&[("Video", "true")]),
            Err(Error::MissingAttribute("ProtocolVersion"))
        );
        assert_eq!(
            build(&[
                ("ProtocolVersion", "0.9"),
                ("Video", "true"),
                ("VideoCodec", "H264")
            ]),
            Err(Error::MissingAttribute("VideoPayloadType"))
        );
        let vp8 = build(&[
            ("ProtocolVersion", "0.9"),
            ("Video", "true"),
            ("VideoCodec", "VP8"),
        ]);
        assert!(matches!(
            vp8,
            Err(Error::UnsupportedCodec { kind: "video", .. })
        ));
        let aac = build(&[
            ("ProtocolVersion", "0.9"),
            ("Audio", "true"),
            ("AudioCodec", "AAC"),
        ]);
        assert!(matches!(
            aac,
            Err(Error::UnsupportedCodec { kind: "audio", .. })
        ));
        let mut m = Metadata::reference(1);
        if let Some(a) = m.audio.as_mut() {
            a.payload_type = 96;
        }
        assert_eq!(rebuild(&m), Err(Error::PayloadTypeCollision(96)));
        let mut m = Metadata::reference(1);
        if let Some(a) = m.audio.as_mut() {
            a.ssrc = Ssrc(2);
        }
        assert_eq!(rebuild(&m), Err(Error::SsrcCollision(2)));
    }

    fn rebuild(m: &Metadata) -> Result<Metadata, Error> {
        let mut b = MetadataBuilder::default();
        for l in m.to_lines() {
            let (k, v) = l.split_once(": ").unwrap();
            b.add(k, v, 64)?;
        }
        b.finish()
    }
}
