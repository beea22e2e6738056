//! One recording file's muxing state: GOPs in, the bytes to append out (the init segment
//! before the first fragment). Pure, so the whole file format is tested without a disk.

use ftl_proto::media::sps::Sps;

use super::assemble::Gop;
use super::fmp4::{self, MuxError, Sample, Tracks, VideoTrack};

/// The muxing state of one file.
#[derive(Debug)]
pub struct FileMux {
    /// Whether the stream announced audio (the track is there even if the first GOP has none).
    expect_audio: bool,
    tracks: Option<Tracks>,
    seq: u32,
    last_video_duration: u32,
    /// Media time written so far, in seconds (the longest track).
    pub duration: f64,
}

impl FileMux {
    pub fn new(expect_audio: bool) -> FileMux {
        FileMux {
            expect_audio,
            tracks: None,
            seq: 0,
            last_video_duration: 3000,
            duration: 0.0,
        }
    }

    /// The bytes that put `gop` in the file: the init segment first if this is the first
    /// GOP, then its fragment. `Ok(empty)` when the GOP holds nothing the file's tracks take.
    pub fn push(&mut self, gop: &Gop) -> Result<Vec<u8>, MuxError> {
        let mut out = Vec::new();
        if self.tracks.is_none() {
            let tracks = tracks_of(gop, self.expect_audio)?;
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
                data: fmp4::avcc_sample(&f.nals),
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

/// The tracks a file gets, from its first GOP: H.264 when its first frame carries the SPS and
/// PPS (every keyframe of FTL and WHIP encoders does), Opus when announced or present.
fn tracks_of(gop: &Gop, expect_audio: bool) -> Result<Tracks, MuxError> {
    let nals = gop.video.first().map(|f| &f.nals[..]).unwrap_or_default();
    let find = |t: u8| {
        nals.iter()
            .find(|n| n.first().is_some_and(|h| h & 0x1f == t))
    };
    let video = match (find(7), find(8)) {
        (Some(sps), Some(pps)) => {
            let (width, height) = Sps::parse(sps)
                .map(|s| {
                    (
                        u16::try_from(s.width).unwrap_or(0),
                        u16::try_from(s.height).unwrap_or(0),
                    )
                })
                .unwrap_or((0, 0));
            Some(VideoTrack {
                sps: sps.clone(),
                pps: pps.clone(),
                width,
                height,
            })
        }
        _ => None,
    };
    let audio = (expect_audio || !gop.audio.is_empty()).then(|| {
        // The TOC's stereo flag (RFC 6716 §3.1); stereo when unknown.
        gop.audio
            .first()
            .and_then(|a| a.data.first())
            .map_or(2, |toc| if toc & 0x04 != 0 { 2 } else { 1 })
    });
    if video.is_none() && audio.is_none() {
        return Err(MuxError::new(
            "the first GOP has no SPS and PPS, and there is no audio",
        ));
    }
    Ok(Tracks { video, audio })
}

#[cfg(test)]
mod tests {
    use super::super::assemble::{AudioFrame, VideoFrame};
    use super::*;
    use mp4_atom::{Any, Decode};

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
    fn the_first_gop_brings_the_init_segment_and_sizes_from_the_sps() {
        let mut m = FileMux::new(true);
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
        let mut m = FileMux::new(false);
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
        let mut m = FileMux::new(true);
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
        let mut none = FileMux::new(false);
        assert!(none.push(&g).is_err());
    }
}
