//! Fragmented MP4 (ISO BMFF with movie fragments): an init segment (`ftyp` + `moov` naming a
//! video track (H.264 `avc1`, H.265 `hvc1`, VP9 `vp09` or AV1 `av01`) and an Opus track) and then one fragment (`moof` + `mdat`) per GOP. Every
//! fragment is complete on its own, so a file cut anywhere after a fragment plays up to it,
//! and a file still being written plays too. Boxes are built with the `mp4-atom` crate; this
//! module decides what goes in them.
//!
//! Track 1 is video at 90 kHz (the RTP clock), track 2 is Opus at 48 kHz (ISO BMFF's Opus
//! mapping: an `Opus` sample entry with a `dOps` box, one Opus packet per sample).

use mp4_atom::{
    Audio, Av01, Av1c, Avc1, Avcc, Codec, Dinf, Dops, Dref, Encode, Ftyp, Hdlr, Hvc1, HvcCArray,
    Hvcc, Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Opus, Smhd, Stbl, Stsd, Tfdt, Tfhd,
    Tkhd, Traf, Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd, Vp09, VpcC,
};
use relay_core::codec::{av1::Av1SequenceHeader, h265::H265Sps};

/// Track ids in the file.
pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
/// Media timescales: the RTP clocks, so timestamps need no conversion.
pub const VIDEO_TIMESCALE: u32 = 90_000;
pub const AUDIO_TIMESCALE: u32 = 48_000;

/// `sample_flags` of a sync sample (depends on nothing) and of any other.
const SYNC: u32 = 0x0200_0000;
const NON_SYNC: u32 = 0x0101_0000;

/// Why a segment could not be built.
#[derive(Debug)]
pub struct MuxError(String);

impl std::fmt::Display for MuxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MP4: {}", self.0)
    }
}

impl std::error::Error for MuxError {}

impl MuxError {
    pub fn new(why: &str) -> MuxError {
        MuxError(why.to_owned())
    }
}

impl From<mp4_atom::Error> for MuxError {
    fn from(e: mp4_atom::Error) -> Self {
        MuxError(e.to_string())
    }
}

/// What the init segment announces.
#[derive(Debug, Clone)]
pub struct Tracks {
    /// The H.264 track: its SPS and PPS (for `avcC`) and picture size.
    pub video: Option<VideoTrack>,
    /// The Opus track: channel count.
    pub audio: Option<u8>,
}

#[derive(Debug, Clone)]
pub struct VideoTrack {
    pub config: VideoConfig,
    pub width: u16,
    pub height: u16,
}

/// What a video track's sample entry needs to describe its codec.
#[derive(Debug, Clone)]
pub enum VideoConfig {
    /// H.264: the SPS and PPS (`avcC`).
    Avc { sps: Vec<u8>, pps: Vec<u8> },
    /// H.265: the VPS, SPS and PPS, and what the SPS says (`hvcC`).
    Hevc {
        vps: Vec<u8>,
        sps: Vec<u8>,
        pps: Vec<u8>,
        info: H265Sps,
    },
    /// VP9: the profile (`vpcC`; 8-bit 4:2:0 as WebRTC encoders send it).
    Vp9 { profile: u8 },
    /// AV1: the sequence header OBU and what it says (`av1C`).
    Av1 {
        sequence_header: Vec<u8>,
        info: Av1SequenceHeader,
    },
}

/// One sample: its decode time in the track's timescale, its composition offset (presentation
/// minus decode; only B-frames make it non-zero), its duration, and its bytes (H.264: AVCC,
/// NAL units each behind a 4-byte length; Opus: one packet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub decode_time: u64,
    pub cts: i32,
    pub duration: u32,
    pub sync: bool,
    pub data: Vec<u8>,
}

/// `ftyp` and `moov`.
pub fn init_segment(tracks: &Tracks) -> Result<Vec<u8>, MuxError> {
    let mut out = Vec::new();
    Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![
            b"iso6".into(),
            b"cmfc".into(),
            b"mp41".into(),
            b"avc1".into(),
            b"av01".into(),
            b"Opus".into(),
        ],
    }
    .encode(&mut out)?;
    let mut trak = Vec::new();
    let mut trex = Vec::new();
    if let Some(v) = &tracks.video {
        trak.push(video_trak(v)?);
        trex.push(trex_for(VIDEO_TRACK));
    }
    if let Some(channels) = tracks.audio {
        trak.push(audio_trak(channels));
        trex.push(trex_for(AUDIO_TRACK));
    }
    if trak.is_empty() {
        return Err(MuxError("no track to record".into()));
    }
    Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: 1.into(),
            volume: 1.into(),
            next_track_id: AUDIO_TRACK + 1,
            ..Default::default()
        },
        mvex: Some(Mvex { mehd: None, trex }),
        trak,
        ..Default::default()
    }
    .encode(&mut out)?;
    Ok(out)
}

fn trex_for(track_id: u32) -> Trex {
    Trex {
        track_id,
        default_sample_description_index: 1,
        ..Default::default()
    }
}

fn video_trak(v: &VideoTrack) -> Result<Trak, MuxError> {
    let visual = Visual {
        data_reference_index: 1,
        width: v.width,
        height: v.height,
        ..Default::default()
    };
    let entry: Codec = match &v.config {
        VideoConfig::Avc { sps, pps } => Avc1 {
            visual,
            avcc: Avcc::new(sps, pps)?,
            btrt: None,
            colr: None,
            pasp: None,
            taic: None,
            fiel: None,
        }
        .into(),
        VideoConfig::Hevc {
            vps,
            sps,
            pps,
            info,
        } => {
            let g = &info.general;
            let array = |nal_unit_type: u8, nal: &Vec<u8>| HvcCArray {
                completeness: true,
                nal_unit_type,
                nalus: vec![nal.clone()],
            };
            Hvc1 {
                visual,
                hvcc: Hvcc {
                    configuration_version: 1,
                    general_profile_space: g[0] >> 6,
                    general_tier_flag: g[0] & 0x20 != 0,
                    general_profile_idc: g[0] & 0x1f,
                    general_profile_compatibility_flags: [g[1], g[2], g[3], g[4]],
                    general_constraint_indicator_flags: [g[5], g[6], g[7], g[8], g[9], g[10]],
                    general_level_idc: g[11],
                    min_spatial_segmentation_idc: 0,
                    parallelism_type: 0,
                    chroma_format_idc: info.chroma_format_idc,
                    bit_depth_luma_minus8: info.bit_depth_luma_minus8,
                    bit_depth_chroma_minus8: info.bit_depth_chroma_minus8,
                    avg_frame_rate: 0,
                    constant_frame_rate: 0,
                    num_temporal_layers: 1,
                    temporal_id_nested: true,
                    length_size_minus_one: 3,
                    arrays: vec![array(32, vps), array(33, sps), array(34, pps)],
                },
                ..Default::default()
            }
            .into()
        }
        VideoConfig::Vp9 { profile } => Vp09 {
            visual,
            vpcc: VpcC {
                profile: *profile,
                level: 0,
                bit_depth: 8,
                chroma_subsampling: 1,
                video_full_range_flag: false,
                color_primaries: 2,
                transfer_characteristics: 2,
                matrix_coefficients: 2,
                codec_initialization_data: Vec::new(),
            },
            btrt: None,
            colr: None,
            pasp: None,
        }
        .into(),
        VideoConfig::Av1 {
            sequence_header,
            info,
        } => Av01 {
            visual,
            av1c: Av1c {
                seq_profile: info.profile,
                seq_level_idx_0: info.level,
                seq_tier_0: info.tier != 0,
                high_bitdepth: info.high_bitdepth,
                twelve_bit: info.twelve_bit,
                monochrome: info.monochrome,
                chroma_subsampling_x: info.subsampling_x,
                chroma_subsampling_y: info.subsampling_y,
                chroma_sample_position: info.chroma_sample_position,
                initial_presentation_delay: None,
                config_obus: sequence_header.clone(),
            },
            btrt: None,
            ccst: None,
            colr: None,
            pasp: None,
            taic: None,
        }
        .into(),
    };
    let tkhd = Tkhd {
        track_id: VIDEO_TRACK,
        width: v.width.into(),
        height: v.height.into(),
        ..Default::default()
    };
    let header = Minf {
        vmhd: Some(Vmhd::default()),
        ..Default::default()
    };
    Ok(trak(tkhd, VIDEO_TIMESCALE, b"vide", "Video", header, entry))
}

fn audio_trak(channels: u8) -> Trak {
    let opus = Opus {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(channels),
            sample_size: 16,
            sample_rate: 48_000u16.into(),
        },
        dops: Dops {
            output_channel_count: channels,
            // libopus's encoder delay, what ffmpeg and browsers expect when nothing else says.
            pre_skip: 312,
            input_sample_rate: 48_000,
            output_gain: 0,
        },
        btrt: None,
    };
    let tkhd = Tkhd {
        track_id: AUDIO_TRACK,
        alternate_group: 1,
        volume: 1.into(),
        ..Default::default()
    };
    let header = Minf {
        smhd: Some(Smhd::default()),
        ..Default::default()
    };
    trak(tkhd, AUDIO_TIMESCALE, b"soun", "Audio", header, opus.into())
}

/// A track of one sample description: `tkhd` (enabled), the media timescale and handler, and
/// `minf` with its media header (`vmhd`/`smhd`) already in.
fn trak(
    tkhd: Tkhd,
    timescale: u32,
    handler: &[u8; 4],
    name: &str,
    header: Minf,
    codec: Codec,
) -> Trak {
    Trak {
        tkhd: Tkhd {
            enabled: true,
            in_movie: true,
            ..tkhd
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: handler.into(),
                name: name.into(),
            },
            minf: Minf {
                dinf: Dinf {
                    dref: Dref {
                        urls: vec![Url::default()],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![codec],
                    },
                    ..Default::default()
                },
                ..header
            },
        },
        ..Default::default()
    }
}

/// One fragment: `moof` (sequence number `seq`, from 1) and `mdat` with the video samples
/// and then the audio samples. Tracks without samples are left out.
pub fn fragment(seq: u32, video: &[Sample], audio: &[Sample]) -> Result<Vec<u8>, MuxError> {
    let tracks: Vec<(u32, &[Sample])> = [(VIDEO_TRACK, video), (AUDIO_TRACK, audio)]
        .into_iter()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if tracks.is_empty() {
        return Err(MuxError("an empty fragment".into()));
    }
    // The data offsets depend on the size of the moof itself, which does not depend on their
    // values (always 32 bits): build it once to measure, then again with the offsets.
    let build = |offsets: &[i32]| -> Moof {
        Moof {
            mfhd: Mfhd {
                sequence_number: seq,
            },
            traf: tracks
                .iter()
                .zip(offsets)
                .map(|((track, samples), offset)| traf(*track, samples, *offset))
                .collect(),
        }
    };
    let mut probe = Vec::new();
    build(&vec![0; tracks.len()]).encode(&mut probe)?;
    let mut offsets = Vec::with_capacity(tracks.len());
    let mut at = probe.len() + 8;
    let mut payload = 0usize;
    for (_, samples) in &tracks {
        offsets.push(i32::try_from(at).map_err(|_| MuxError("a fragment over 2 GiB".into()))?);
        let bytes: usize = samples.iter().map(|s| s.data.len()).sum();
        at += bytes;
        payload += bytes;
    }
    let mut out = Vec::with_capacity(probe.len() + 8 + payload);
    build(&offsets).encode(&mut out)?;
    let mut data = Vec::with_capacity(payload);
    for (_, samples) in &tracks {
        for s in *samples {
            data.extend_from_slice(&s.data);
        }
    }
    Mdat { data }.encode(&mut out)?;
    Ok(out)
}

fn traf(track_id: u32, samples: &[Sample], data_offset: i32) -> Traf {
    Traf {
        tfhd: Tfhd {
            track_id,
            default_base_is_moof: true,
            ..Default::default()
        },
        tfdt: Some(Tfdt {
            base_media_decode_time: samples.first().map_or(0, |s| s.decode_time),
        }),
        trun: vec![Trun {
            data_offset: Some(data_offset),
            entries: samples
                .iter()
                .map(|s| TrunEntry {
                    duration: Some(s.duration),
                    size: Some(u32::try_from(s.data.len()).unwrap_or(u32::MAX)),
                    flags: Some(if s.sync { SYNC } else { NON_SYNC }),
                    cts: Some(s.cts),
                })
                .collect(),
        }],
        ..Default::default()
    }
}

/// NAL units as one AVCC sample: each behind its length as 4 bytes big-endian.
pub fn avcc_sample(nals: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nals.iter().map(|n| n.len() + 4).sum());
    for n in nals {
        let len = u32::try_from(n.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(n);
    }
    out
}

/// Samples (48 kHz) in one Opus packet, from its TOC byte (RFC 6716 §3.1); `None` when the
/// packet is malformed.
pub fn opus_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    // Frame length in 48 kHz samples by configuration (SILK, hybrid, CELT).
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * frames;
    // At most 120 ms in one packet.
    (frames > 0 && total <= 5760).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Decode};

    const SPS: &[u8] = include_bytes!("../../../ftl-proto/tests/data/sps-baseline-320x180.bin");
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    fn sample(t: u64, sync: bool, n: usize) -> Sample {
        Sample {
            decode_time: t,
            cts: 0,
            duration: 3000,
            sync,
            data: vec![7; n],
        }
    }

    #[test]
    fn the_init_segment_decodes_back_with_both_tracks() {
        let tracks = Tracks {
            video: Some(VideoTrack {
                config: VideoConfig::Avc {
                    sps: SPS.to_vec(),
                    pps: PPS.to_vec(),
                },
                width: 320,
                height: 180,
            }),
            audio: Some(2),
        };
        let bytes = init_segment(&tracks).unwrap();
        let mut c = std::io::Cursor::new(&bytes[..]);
        let Any::Ftyp(_) = Any::decode(&mut c).unwrap() else {
            panic!("no ftyp first")
        };
        let Any::Moov(moov) = Any::decode(&mut c).unwrap() else {
            panic!("no moov")
        };
        assert_eq!(moov.trak.len(), 2);
        assert_eq!(moov.trak[0].tkhd.track_id, VIDEO_TRACK);
        assert_eq!(moov.trak[0].mdia.mdhd.timescale, VIDEO_TIMESCALE);
        assert_eq!(moov.trak[1].mdia.mdhd.timescale, AUDIO_TIMESCALE);
        assert_eq!(moov.mvex.unwrap().trex.len(), 2);
        assert!(init_segment(&Tracks {
            video: None,
            audio: None
        })
        .is_err());
    }

    #[test]
    fn a_fragment_points_each_track_at_its_bytes() {
        let video = vec![sample(0, true, 100), sample(3000, false, 40)];
        let audio = vec![Sample {
            decode_time: 960,
            cts: 0,
            duration: 960,
            sync: true,
            data: vec![9; 30],
        }];
        let bytes = fragment(3, &video, &audio).unwrap();
        let mut c = std::io::Cursor::new(&bytes[..]);
        let Any::Moof(moof) = Any::decode(&mut c).unwrap() else {
            panic!("no moof")
        };
        let Any::Mdat(mdat) = Any::decode(&mut c).unwrap() else {
            panic!("no mdat")
        };
        assert_eq!(moof.mfhd.sequence_number, 3);
        assert_eq!(mdat.data.len(), 170);
        // Offsets are from the start of the moof (default-base-is-moof).
        let v = &moof.traf[0];
        let a = &moof.traf[1];
        let vo = v.trun[0].data_offset.unwrap() as usize;
        let ao = a.trun[0].data_offset.unwrap() as usize;
        assert_eq!(bytes[vo..vo + 100], [7; 100]);
        assert_eq!(bytes[ao..ao + 30], [9; 30]);
        assert_eq!(v.tfdt.as_ref().unwrap().base_media_decode_time, 0);
        assert_eq!(a.tfdt.as_ref().unwrap().base_media_decode_time, 960);
        assert_eq!(v.trun[0].entries[0].flags, Some(SYNC));
        assert_eq!(v.trun[0].entries[1].flags, Some(NON_SYNC));
        // A track without samples is left out; nothing at all is an error.
        let only_audio = fragment(1, &[], &audio).unwrap();
        let Any::Moof(m) = Any::decode(&mut std::io::Cursor::new(&only_audio[..])).unwrap() else {
            panic!("no moof")
        };
        assert_eq!(m.traf.len(), 1);
        assert_eq!(m.traf[0].tfhd.track_id, AUDIO_TRACK);
        assert!(fragment(1, &[], &[]).is_err());
    }

    #[test]
    fn opus_durations_come_from_the_toc() {
        // CELT 20 ms, one frame (config 31, code 0): what OBS sends.
        assert_eq!(opus_samples(&[0xf8, 1, 2]), Some(960));
        // SILK 60 ms, two frames (config 3, code 1).
        assert_eq!(opus_samples(&[0x19]), Some(5760));
        // Code 3 with 3 frames of 20 ms CELT.
        assert_eq!(opus_samples(&[0xfb, 0x03]), Some(2880));
        assert_eq!(opus_samples(&[0xfb, 0x00]), None);
        assert_eq!(opus_samples(&[]), None);
    }

    #[test]
    fn avcc_samples_carry_lengths() {
        assert_eq!(
            avcc_sample(&[vec![0x65, 1], vec![0x41]]),
            vec![0, 0, 0, 2, 0x65, 1, 0, 0, 0, 1, 0x41]
        );
    }
}
