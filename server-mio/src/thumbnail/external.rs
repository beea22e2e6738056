//! Keyframes of the codecs OpenH264 does not read (H.265, VP8, VP9, AV1) decoded by FFmpeg's
//! decoders, as an `ffmpeg` process given one frame on its standard input (in IVF for VP8,
//! VP9 and AV1, Annex B for H.265) that answers one PPM picture on its standard output. The
//! server stays one binary: where no `ffmpeg` is installed those streams have no thumbnail
//! (the error says so), and H.264 never needs it.
//!
//! Bounded like any other input: the process gets at most [`DEADLINE`] (then it is killed),
//! it hands back a picture of at most [`MAX_SIDE`] a side, and only this thread waits.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use image::RgbImage;
use relay_core::VideoCodec;

use super::picture::PictureError;

/// How long one decode may take.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// The largest side of the picture ffmpeg hands back (scaled down in ffmpeg when larger).
pub const MAX_SIDE: u32 = 1920;

/// An IVF file of one frame (the container FFmpeg reads VP8, VP9 and AV1 from a pipe in).
fn ivf(fourcc: &[u8; 4], frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + frame.len());
    out.extend_from_slice(b"DKIF");
    out.extend_from_slice(&0u16.to_le_bytes()); // version
    out.extend_from_slice(&32u16.to_le_bytes()); // header size
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&0u16.to_le_bytes()); // width: the bitstream says
    out.extend_from_slice(&0u16.to_le_bytes()); // height
    out.extend_from_slice(&30u32.to_le_bytes()); // time base
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // frames
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes()); // pts
    out.extend_from_slice(frame);
    out
}

/// What FFmpeg is given for one keyframe of `codec` (its units as
/// [`VideoCodec::frame_units`] gives them), and the input format to name.
pub fn container(codec: VideoCodec, units: &[Vec<u8>]) -> Option<(Vec<u8>, &'static str)> {
    match codec {
        VideoCodec::H264 | VideoCodec::H265 => {
            let mut out = Vec::new();
            for u in units {
                out.extend_from_slice(&[0, 0, 0, 1]);
                out.extend_from_slice(u);
            }
            Some((
                out,
                if codec == VideoCodec::H264 {
                    "h264"
                } else {
                    "hevc"
                },
            ))
        }
        VideoCodec::Vp8 => Some((ivf(b"VP80", units.first()?), "ivf")),
        VideoCodec::Vp9 => Some((ivf(b"VP90", units.first()?), "ivf")),
        VideoCodec::Av1 => {
            // A temporal unit: the delimiter the RTP payload leaves out, then the OBUs.
            let mut tu = vec![0x12, 0x00];
            for u in units {
                tu.extend_from_slice(u);
            }
            Some((ivf(b"AV01", &tu), "ivf"))
        }
    }
}

/// Decodes one keyframe with the `ffmpeg` at `ffmpeg`.
pub fn decode(
    ffmpeg: &Path,
    codec: VideoCodec,
    units: &[Vec<u8>],
) -> Result<RgbImage, PictureError> {
    let (input, format) =
        container(codec, units).ok_or_else(|| PictureError::Decode("no frame".into()))?;
    let mut child = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-threads",
            "1",
        ])
        .args(["-f", format, "-i", "pipe:0"])
        // At most `MAX_SIDE` a side before it comes back: a picture declared huge costs
        // ffmpeg's decoder, not this process's memory.
        .arg("-vf")
        .arg(format!(
            "scale=w='min(iw,{MAX_SIDE})':h='min(ih,{MAX_SIDE})':force_original_aspect_ratio=decrease"
        ))
        .args([
            "-frames:v",
            "1",
            "-f",
            "image2pipe",
            "-c:v",
            "ppm",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            PictureError::NoDecoder(format!(
                "{} thumbnails need ffmpeg ({}: {e})",
                codec.label(),
                ffmpeg.display()
            ))
        })?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(PictureError::Decode("ffmpeg's pipes".into()));
    };
    // Writing and reading on threads of their own: neither side of the pipes can hold the
    // other, and the wait below has a deadline.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = mpsc::channel();
    let limit = u64::from(MAX_SIDE) * u64::from(MAX_SIDE) * 3 + 64;
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let read = stdout.take(limit + 1).read_to_end(&mut out);
        let _ = tx.send(read.map(|_| out));
    });
    let answer = rx.recv_timeout(DEADLINE);
    let _ = child.kill();
    let _ = child.wait();
    let _ = writer.join();
    let bytes = match answer {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(PictureError::Decode(format!("ffmpeg: {e}"))),
        Err(_) => return Err(PictureError::Decode("ffmpeg took too long".into())),
    };
    if bytes.is_empty() {
        return Err(PictureError::Decode(format!(
            "ffmpeg decoded no {} picture",
            codec.label()
        )));
    }
    if bytes.len() as u64 > limit {
        return Err(PictureError::TooLarge("ffmpeg's picture".into()));
    }
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Pnm)
        .map_err(|e| PictureError::Decode(format!("ffmpeg's picture: {e}")))?;
    Ok(img.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thumbnail::picture::make_with;

    /// One 320x180 keyframe of `codec`, made by ffmpeg's encoder `encoder`, as the units
    /// [`VideoCodec::frame_units`] would give for it.
    fn keyframe(codec: VideoCodec, encoder: &str) -> Vec<Vec<u8>> {
        keyframe_of_size(codec, encoder, "320x180")
    }

    fn keyframe_of_size(codec: VideoCodec, encoder: &str, size: &str) -> Vec<Vec<u8>> {
        let (format, extra): (&str, &[&str]) = match codec {
            VideoCodec::H265 => ("hevc", &["-x265-params", "log-level=none"]),
            VideoCodec::Av1 => ("ivf", &["-cpu-used", "8"]),
            _ => ("ivf", &[]),
        };
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi"])
            .arg("-i")
            .arg(format!("testsrc=size={size}:rate=30"))
            .args(["-frames:v", "1"])
            .args(["-c:v", encoder])
            .args(extra)
            .args(["-f", format, "pipe:1"])
            .output()
            .unwrap_or_else(|e| unreachable!("ffmpeg: {e}"));
        assert!(out.status.success(), "{encoder}");
        let data = out.stdout;
        if codec == VideoCodec::H265 {
            return ftl_proto::media::packetize::split_annexb(&data)
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
        }
        let frame = data.get(44..).unwrap_or_default().to_vec();
        if codec == VideoCodec::Av1 {
            // The IVF frame is a temporal unit: its delimiter is what RTP leaves out.
            return vec![frame.get(2..).unwrap_or_default().to_vec()];
        }
        vec![frame]
    }

    #[test]
    fn every_other_codec_decodes_through_ffmpeg() {
        let ffmpeg = Path::new("ffmpeg");
        for (codec, encoder) in [
            (VideoCodec::Vp8, "libvpx"),
            (VideoCodec::Vp9, "libvpx-vp9"),
            (VideoCodec::Av1, "libaom-av1"),
            (VideoCodec::H265, "libx265"),
        ] {
            let units = keyframe(codec, encoder);
            let p = make_with(codec, &units, 160, Some(ffmpeg));
            let p = p.unwrap_or_else(|e| unreachable!("{codec:?}: {e}"));
            assert_eq!(
                (p.width, p.height, p.source),
                (160, 90, (320, 180)),
                "{codec:?}"
            );
            // Garbage in the same container: an error, not a picture.
            let junk: Vec<Vec<u8>> = units.iter().map(|u| vec![0x5a; u.len()]).collect();
            assert!(
                make_with(codec, &junk, 160, Some(ffmpeg)).is_err(),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn a_large_picture_comes_back_from_ffmpeg_already_smaller() {
        let units = keyframe_of_size(VideoCodec::Vp8, "libvpx", "2560x1440");
        let p = make_with(VideoCodec::Vp8, &units, 640, Some(Path::new("ffmpeg")));
        let p = p.unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(p.source, (MAX_SIDE, MAX_SIDE * 9 / 16), "scaled in ffmpeg");
        assert_eq!((p.width, p.height), (640, 360));
    }

    #[test]
    fn a_missing_ffmpeg_is_named() {
        let got = make_with(
            VideoCodec::Vp8,
            &[vec![0u8; 10]],
            160,
            Some(Path::new("/nonexistent/ffmpeg")),
        );
        match got {
            Err(PictureError::NoDecoder(why)) => assert!(why.contains("need ffmpeg"), "{why}"),
            other => unreachable!("{other:?}"),
        }
        assert_eq!(
            make_with(VideoCodec::Vp9, &[vec![0u8; 10]], 160, None),
            Err(PictureError::Codec(VideoCodec::Vp9))
        );
    }
}
