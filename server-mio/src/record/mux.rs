//! One recording file's muxing state: GOPs in, the bytes to append out (the init segment
//! before the first fragment). Pure, so the whole file format is tested without a disk.

use ftl_proto::media::sps::Sps;
use relay_core::codec::{av1, h265, vp9};
use relay_core::VideoCodec;

use super::assemble::Gop;
use super::fmp4::{self, MuxError, Sample, Tracks, VideoConfig, VideoTrack};

/// How long (seconds of media) a recording may have run before a larger picture no longer
/// starts it over (see [`FileMux::starts_over`]).
const START_OVER_WITHIN_S: f64 = 10.0;

/// The muxing state of one file.
#[derive(Debug)]
pub struct FileMux {
    /// Whether the stream announced audio (the track is there even if the first GOP has none).
    expect_audio: bool,
    /// The video's codec (what a frame's units are, and the sample entry).
    codec: VideoCodec,
    tracks: Option<Tracks>,
    seq: u32,
    last_video_duration: u32,
    /// Media time written so far, in seconds (the longest track).
    pub duration: f64,
}

impl FileMux {
    pub fn new(expect_audio: bool, codec: VideoCodec) -> FileMux {
        FileMux {
            expect_audio,
            codec,
            tracks: None,
            seq: 0,
            last_video_duration: 3000,
            duration: 0.0,
        }
    }

    /// Whether a file of this kind carries `codec`'s video: MP4 players do not agree on a
    /// sample entry for VP8 (it belongs in WebM), so that is the one it does not.
    pub fn carries(codec: VideoCodec) -> bool {
        codec != VideoCodec::Vp8
    }

    /// A fresh muxer for the same stream (a file started over).
    pub fn fresh(&self) -> FileMux {
        FileMux::new(self.expect_audio, self.codec)
    }

    /// Whether `gop` should start the file over: it opens with a larger picture than the one
    /// the file was started with, while the file is young. That is a simulcast publisher's
    /// top layer arriving after the recording began on a smaller one (a browser turns its
    /// upper layers on as its bandwidth estimate grows); the first seconds of the smaller
    /// layer are given up so the file has the top layer's size from its start.
    pub fn starts_over(&self, gop: &Gop) -> bool {
        let Some(old) = self.tracks.as_ref().and_then(|t| t.video.as_ref()) else {
            return false;
        };
        if self.duration >= START_OVER_WITHIN_S {
            return false;
        }
        let Some(first) = gop.video.first().filter(|f| f.keyframe) else {
            return false;
        };
        let Some(new) = video_track(&first.nals, self.codec) else {
            return false;
        };
        let pixels = |t: &VideoTrack| u32::from(t.width) * u32::from(t.height);
        pixels(&new) > pixels(old)
    }

    /// The bytes that put `gop` in the file: the init segment first if this is the first
    /// GOP, then its fragment. `Ok(empty)` when the GOP holds nothing the file's tracks take.
    pub fn push(&mut self, gop: &Gop) -> Result<Vec<u8>, MuxError> {
        let mut out = Vec::new();
        if self.tracks.is_none() {
            let tracks = tracks_of(gop, self.expect_audio, self.codec)?;
            out = fmp4::init_segment(&tracks)?;
            self.tracks = Some(tracks);
        }
        let (has_video, has_audio) = match &self.tracks {
            Some(t) => (t.video.is_some(), t.audio.is_some()),
            None => return Ok(out),
        };
        let video = if has_video {
            self.video_samples(gop)
        } else {
            Vec::new()
        };
        let audio = if has_audio {
            audio_samples(gop)
        } else {
            Vec::new()
        };
        if video.is_empty() && audio.is_empty() {
            return Ok(out);
        }
        for (samples, rate) in [
            (&video, fmp4::VIDEO_TIMESCALE),
            (&audio, fmp4::AUDIO_TIMESCALE),
        ] {
            if let Some(s) = samples.last() {
                let end = (s.decode_time + u64::from(s.duration)) as f64 / f64::from(rate);
                self.duration = self.duration.max(end);
            }
        }
        self.seq += 1;
        out.extend(fmp4::fragment(self.seq, &video, &audio)?);
        Ok(out)
    }

    /// Video samples in decode order. RTP carries presentation times; without B-frames decode
    /// order is presentation order and the offsets are 0. With them, decode times are the
    /// GOP's presentation times in order and each sample's offset is the difference (signed,
    /// as `trun` version 1 allows).
    fn video_samples(&mut self, gop: &Gop) -> Vec<Sample> {
        let mut sorted: Vec<i64> = gop.video.iter().map(|f| f.pts).collect();
        sorted.sort_unstable();
        let mut out: Vec<Sample> = Vec::with_capacity(gop.video.len());
        for (i, f) in gop.video.iter().enumerate() {
            let dts = sorted.get(i).copied().unwrap_or(f.pts).max(0);
            let next = sorted.get(i + 1).copied().or(gop.next_video);
            let duration = match next {
                Some(n) => clamp_u32(n - dts),
                None => self.last_video_duration,
            };
            if next.is_some() {
                self.last_video_duration = duration;
            }
            out.push(Sample {
                decode_time: dts as u64,
                cts: i32::try_from(f.pts - dts).unwrap_or(0),
                duration,
                sync: f.keyframe,
                data: match self.codec {
                    // NAL units behind 4-byte lengths.
                    VideoCodec::H264 | VideoCodec::H265 => fmp4::avcc_sample(&f.nals),
                    // The frame; the OBUs with their sizes.
                    VideoCodec::Vp8 | VideoCodec::Vp9 | VideoCodec::Av1 => f.nals.concat(),
                },
            });
        }
        out
    }
}

fn audio_samples(gop: &Gop) -> Vec<Sample> {
    gop.audio
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let own = fmp4::opus_samples(&a.data).unwrap_or(960);
            let duration = match gop.audio.get(i + 1) {
                Some(n) => clamp_u32(n.time - a.time),
                None => own,
            };
            Sample {
                decode_time: a.time.max(0) as u64,
                cts: 0,
                duration,
                sync: true,
                data: a.data.clone(),
            }
        })
        .collect()
}

fn clamp_u32(v: i64) -> u32 {
    u32::try_from(v.max(1)).unwrap_or(u32::MAX)
}

/// The tracks a file gets, from its first GOP: video when its first frame says what the
/// sample entry needs (H.264: SPS and PPS; H.265: VPS, SPS and PPS; VP9: a keyframe's
/// header; AV1: the sequence header), which every keyframe of FTL and WHIP encoders carries;
/// Opus when announced or present.
fn tracks_of(gop: &Gop, expect_audio: bool, codec: VideoCodec) -> Result<Tracks, MuxError> {
    let units = gop.video.first().map(|f| &f.nals[..]).unwrap_or_default();
    let video = video_track(units, codec);
    let audio = (expect_audio || !gop.audio.is_empty()).then(|| {
        // The TOC's stereo flag (RFC 6716 §3.1); stereo when unknown.
        gop.audio
            .first()
            .and_then(|a| a.data.first())
            .map_or(2, |toc| if toc & 0x04 != 0 { 2 } else { 1 })
    });
    if video.is_none() && audio.is_none() {
        return Err(MuxError::new(
            "the first GOP has nothing that describes its video, and there is no audio",
        ));
    }
    Ok(Tracks { video, audio })
}

/// The video track the first frame describes, if it does.
fn video_track(units: &[Vec<u8>], codec: VideoCodec) -> Option<VideoTrack> {
    let size = |w: u32, h: u32| (u16::try_from(w).unwrap_or(0), u16::try_from(h).unwrap_or(0));
    let (config, (width, height)) = match codec {
        VideoCodec::H264 => {
            let find = |t: u8| {
                units
                    .iter()
                    .find(|n| n.first().is_some_and(|h| h & 0x1f == t))
            };
            let (sps, pps) = (find(7)?, find(8)?);
            let dims = Sps::parse(sps).map_or((0, 0), |s| size(s.width, s.height));
            let config = VideoConfig::Avc {
                sps: sps.clone(),
                pps: pps.clone(),
            };
            (config, dims)
        }
        VideoCodec::H265 => {
            let find = |t: u8| {
                units
                    .iter()
                    .find(|n| n.first().is_some_and(|h| (h >> 1) & 0x3f == t))
            };
            let (vps, sps, pps) = (find(32)?, find(33)?, find(34)?);
            let info = h265::parse_sps(sps)?;
            let dims = size(info.width, info.height);
            let config = VideoConfig::Hevc {
                vps: vps.clone(),
                sps: sps.clone(),
                pps: pps.clone(),
                info,
            };
            (config, dims)
        }
        VideoCodec::Vp9 => {
            let frame = units.first()?;
            let profile = vp9::frame_profile(frame)?;
            let (w, h) = vp9::frame_size(frame)?;
            (VideoConfig::Vp9 { profile }, size(w, h))
        }
        VideoCodec::Av1 => {
            let (obu, info) = units
                .iter()
                .find_map(|o| av1::parse_sequence_header(o).map(|i| (o, i)))?;
            let dims = size(info.width, info.height);
            let config = VideoConfig::Av1 {
                sequence_header: obu.clone(),
                info,
            };
            (config, dims)
        }
        // No sample entry players agree on for VP8 in MP4: not recorded (see the recorder).
        VideoCodec::Vp8 => return None,
    };
    Some(VideoTrack {
        config,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::super::assemble::{AudioFrame, VideoFrame};
    use super::*;
    use mp4_atom::{Any, Decode};
    use relay_core::codec::pack_bits as pack;

    const SPS: &[u8] = include_bytes!("../../../ftl-proto/tests/data/sps-baseline-320x180.bin");
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    fn gop(start: i64, pts_order: &[i64], next: Option<i64>) -> Gop {
        Gop {
            video: pts_order
                .iter()
                .enumerate()
                .map(|(i, p)| VideoFrame {
                    pts: start + p,
                    keyframe: i == 0,
                    nals: if i == 0 {
                        vec![SPS.to_vec(), PPS.to_vec(), vec![0x65, 1]]
                    } else {
                        vec![vec![0x41, 2]]
                    },
                })
                .collect(),
            audio: (0..5)
                .map(|k| AudioFrame {
                    time: start * 48 / 90 + k * 960,
                    data: vec![0xfc, 1],
                })
                .collect(),
            next_video: next,
        }
    }

    fn trun_of(bytes: &[u8], track: u32) -> mp4_atom::Traf {
        let mut c = std::io::Cursor::new(bytes);
        loop {
            if let Any::Moof(m) = Any::decode(&mut c).unwrap() {
                return m
                    .traf
                    .into_iter()
                    .find(|t| t.tfhd.track_id == track)
                    .unwrap();
            }
        }
    }

    #[test]
    fn a_larger_picture_early_on_starts_the_file_over() {
        const VIDEO_640: &[u8] =
            include_bytes!("../../../relay-core/tests/data/video-640x360-30fps-4s.h264");
        let nals = ftl_proto::media::packetize::split_annexb(VIDEO_640);
        let find = |t: u8| {
            nals.iter()
                .find(|n| n.first().is_some_and(|h| h & 0x1f == t))
                .map(|n| n.to_vec())
                .unwrap_or_default()
        };
        let mut big = gop(9000, &[0, 3000], Some(15000));
        big.video[0].nals = vec![find(7), find(8), vec![0x65, 1]];
        let mut m = FileMux::new(true, VideoCodec::H264);
        m.push(&gop(0, &[0, 3000, 6000], Some(9000))).unwrap();
        assert!(m.starts_over(&big), "640x360 after 320x180, 0.1 s in");
        assert!(
            !m.starts_over(&gop(9000, &[0, 3000], None)),
            "the same size"
        );
        let mut fresh = m.fresh();
        let init = fresh.push(&big).unwrap();
        assert_eq!(
            &init[4..8],
            b"ftyp",
            "a new file begins with its init segment"
        );
        assert!(
            !fresh.starts_over(&gop(15000, &[0, 3000], None)),
            "smaller: kept"
        );
        // Past the first seconds a larger picture no longer starts the file over.
        let mut old = FileMux::new(true, VideoCodec::H264);
        let mut t = 0;
        while old.duration < START_OVER_WITHIN_S {
            old.push(&gop(t, &[0, 3000, 6000], Some(t + 9000))).unwrap();
            t += 9000;
        }
        assert!(!old.starts_over(&big));
    }

    #[test]
    fn the_first_gop_brings_the_init_segment_and_sizes_from_the_sps() {
        let mut m = FileMux::new(true, VideoCodec::H264);
        let first = m.push(&gop(0, &[0, 3000, 6000], Some(9000))).unwrap();
        assert_eq!(&first[4..8], b"ftyp");
        let mut c = std::io::Cursor::new(&first[..]);
        let _ = Any::decode(&mut c).unwrap();
        let Any::Moov(moov) = Any::decode(&mut c).unwrap() else {
            panic!("no moov")
        };
        assert_eq!(moov.trak[0].tkhd.width, 320.into());
        assert_eq!(moov.trak[0].tkhd.height, 180.into());
        let second = m.push(&gop(9000, &[0, 3000], None)).unwrap();
        assert_eq!(&second[4..8], b"moof");
        let v = trun_of(&second, 1);
        assert_eq!(v.tfdt.unwrap().base_media_decode_time, 9000);
        // The last frame of a stream takes the duration of the one before.
        let d: Vec<_> = v.trun[0].entries.iter().map(|e| e.duration).collect();
        assert_eq!(d, vec![Some(3000), Some(3000)]);
        // The longer track (audio here: 4800 + 5 x 960 ticks at 48 kHz) makes the duration.
        assert!(
            (m.duration - 9600.0 / 48_000.0).abs() < 1e-9,
            "{}",
            m.duration
        );
    }

    #[test]
    fn b_frames_get_decode_times_in_order_and_offsets() {
        let mut m = FileMux::new(false, VideoCodec::H264);
        // Decode order I0 P3 B1 B2 (presentation times in frames of 3000).
        let bytes = m
            .push(&gop(0, &[0, 9000, 3000, 6000], Some(12000)))
            .unwrap();
        let v = trun_of(&bytes, 1);
        let cts: Vec<_> = v.trun[0].entries.iter().map(|e| e.cts.unwrap()).collect();
        assert_eq!(cts, vec![0, 6000, -3000, -3000]);
        assert!(v.trun[0].entries.iter().all(|e| e.duration == Some(3000)));
    }

    #[test]
    fn a_first_gop_without_parameter_sets_records_audio_only() {
        let mut m = FileMux::new(true, VideoCodec::H264);
        let mut g = gop(0, &[0, 3000], Some(6000));
        g.video[0].nals = vec![vec![0x65, 1]];
        let bytes = m.push(&g).unwrap();
        let mut c = std::io::Cursor::new(&bytes[..]);
        let _ = Any::decode(&mut c).unwrap();
        let Any::Moov(moov) = Any::decode(&mut c).unwrap() else {
            panic!("no moov")
        };
        assert_eq!(moov.trak.len(), 1);
        assert_eq!(moov.trak[0].tkhd.track_id, 2);
        g.audio.clear();
        let mut none = FileMux::new(false, VideoCodec::H264);
        assert!(none.push(&g).is_err());
    }

    /// A GOP of two frames whose first one carries `first`.
    fn gop_of(first: Vec<Vec<u8>>, second: Vec<Vec<u8>>) -> Gop {
        Gop {
            video: vec![
                VideoFrame {
                    pts: 0,
                    keyframe: true,
                    nals: first,
                },
                VideoFrame {
                    pts: 3000,
                    keyframe: false,
                    nals: second,
                },
            ],
            audio: Vec::new(),
            next_video: Some(6000),
        }
    }

    /// The sample entry of the file's video track, and the first fragment's first sample.
    fn entry_and_sample(codec: VideoCodec, gop: &Gop) -> (mp4_atom::Codec, Vec<u8>) {
        let mut m = FileMux::new(false, codec);
        let bytes = m.push(gop).unwrap();
        let mut c = std::io::Cursor::new(&bytes[..]);
        let _ = Any::decode(&mut c).unwrap();
        let Any::Moov(moov) = Any::decode(&mut c).unwrap() else {
            panic!("no moov")
        };
        let entry = moov.trak[0].mdia.minf.stbl.stsd.codecs[0].clone();
        let Any::Moof(_) = Any::decode(&mut c).unwrap() else {
            panic!("no moof")
        };
        let Any::Mdat(mdat) = Any::decode(&mut c).unwrap() else {
            panic!("no mdat")
        };
        (entry, mdat.data)
    }

    #[test]
    fn h265_gets_hvc1_with_its_parameter_sets() {
        const SPS: [u8; 42] = [
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x78, 0xa0, 0x03, 0xc0, 0x80, 0x10, 0xe5, 0x96, 0x56, 0x69, 0x24,
            0xca, 0xf0, 0x16, 0x80, 0x80, 0x00, 0x00, 0x03, 0x00, 0x80, 0x00, 0x00, 0x0f, 0x04,
        ];
        let vps = vec![0x40, 0x01, 0x0c];
        let pps = vec![0x44, 0x01, 0xc1];
        let idr = vec![0x26, 0x01, 0xaf];
        let gop = gop_of(
            vec![vps.clone(), SPS.to_vec(), pps.clone(), idr],
            vec![vec![0x02, 0x01, 0xd0]],
        );
        let (entry, mdat) = entry_and_sample(VideoCodec::H265, &gop);
        let mp4_atom::Codec::Hvc1(h) = entry else {
            panic!("{entry:?}")
        };
        assert_eq!((h.visual.width, h.visual.height), (1920, 1080));
        assert_eq!(
            (h.hvcc.general_profile_idc, h.hvcc.general_level_idc),
            (1, 120)
        );
        assert_eq!(h.hvcc.arrays.len(), 3);
        assert_eq!(h.hvcc.arrays[1].nalus[0], SPS.to_vec());
        // Samples are NAL units behind 4-byte lengths.
        assert_eq!(&mdat[..7], &[0, 0, 0, 3, 0x40, 0x01, 0x0c]);
    }

    #[test]
    fn vp9_gets_vp09_with_its_profile_and_the_frames_as_they_are() {
        // A profile-0 640x360 keyframe's uncompressed header.
        let mut key = pack(&[
            (2, 2),
            (0, 2),
            (0, 1),
            (0, 1),
            (1, 1),
            (0, 1),
            (0x49_83_42, 24),
            (2, 3),
            (0, 1),
            (639, 16),
            (359, 16),
        ]);
        key.extend([0x55; 8]);
        let gop = gop_of(vec![key.clone()], vec![vec![0x86, 1, 2]]);
        let (entry, mdat) = entry_and_sample(VideoCodec::Vp9, &gop);
        let mp4_atom::Codec::Vp09(v) = entry else {
            panic!("{entry:?}")
        };
        assert_eq!(
            (v.visual.width, v.visual.height, v.vpcc.profile),
            (640, 360, 0)
        );
        assert_eq!(&mdat[..key.len()], &key[..]);
        assert_eq!(&mdat[key.len()..], &[0x86, 1, 2]);
    }

    #[test]
    fn av1_gets_av01_with_its_sequence_header() {
        let body = pack(&[
            (0, 3),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 5),
            (0, 12),
            (4, 5),
            (10, 4),
            (10, 4),
            (639, 11),
            (359, 11),
            (0, 1),
            (0, 3),
            (0, 4),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 3),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 1),
            (0, 2),
        ]);
        let mut seq = vec![0x0a, body.len() as u8];
        seq.extend(body);
        let frame = vec![0x32, 2, 0x10, 0x20];
        let gop = gop_of(vec![seq.clone(), frame.clone()], vec![vec![0x32, 1, 0x30]]);
        let (entry, mdat) = entry_and_sample(VideoCodec::Av1, &gop);
        let mp4_atom::Codec::Av01(a) = entry else {
            panic!("{entry:?}")
        };
        assert_eq!((a.visual.width, a.visual.height), (640, 360));
        assert_eq!((a.av1c.seq_profile, a.av1c.seq_level_idx_0), (0, 4));
        assert!(a.av1c.chroma_subsampling_x && a.av1c.chroma_subsampling_y);
        assert_eq!(a.av1c.config_obus, seq);
        // The sample is the OBUs as they are (each with its size).
        assert_eq!(
            &mdat[..seq.len() + frame.len()],
            &[&seq[..], &frame[..]].concat()[..]
        );
    }

    #[test]
    fn vp8_is_not_given_a_video_track() {
        let gop = gop_of(vec![vec![0x50, 0x42, 0]], vec![vec![0x51]]);
        let mut m = FileMux::new(false, VideoCodec::Vp8);
        assert!(m.push(&gop).is_err(), "no track to write");
    }
}
