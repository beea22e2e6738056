//! From one keyframe to a small JPEG: decode (H.264 by Cisco's OpenH264, compiled from its
//! source by the `openh264` crate; the other codecs by an installed `ffmpeg`, see
//! [`super::external`]), scale down keeping the aspect ratio, encode (`image`).
//!
//! Only keyframes are decoded: one picture needs no earlier frame, so the cost is one frame
//! per thumbnail whatever the stream's frame rate. Everything here runs on the thumbnail
//! thread (or the recording writer for posters), never on the media loop; every failure is a
//! [`PictureError`] that costs that one picture.

use std::fmt;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::{ImageBuffer, Rgb, RgbImage};
use openh264::decoder::Decoder;
use openh264::formats::YUVSource;
use relay_core::{VideoCodec, VideoInfo};

/// Pictures larger than this (8K UHD) are not decoded: the decoder's buffers would be
/// hundreds of megabytes for a thumbnail.
pub const MAX_PIXELS: u64 = 7680 * 4320;
/// A keyframe larger than this is not decoded (no real encoder makes one).
pub const MAX_KEYFRAME_BYTES: usize = 8 * 1024 * 1024;
/// JPEG quality: small files that still read well at the size they are shown.
const JPEG_QUALITY: u8 = 80;

/// Why no picture came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PictureError {
    /// A codec no decoder here reads (without `ffmpeg`, thumbnails are made of H.264 only).
    Codec(VideoCodec),
    /// The decoder for it is missing (no `ffmpeg` where it was looked for).
    NoDecoder(String),
    TooLarge(String),
    /// The bitstream did not decode to a picture.
    Decode(String),
    Encode(String),
}

impl fmt::Display for PictureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PictureError::Codec(c) => write!(f, "no thumbnails of {} video", c.label()),
            PictureError::NoDecoder(why) => f.write_str(why),
            PictureError::TooLarge(what) => write!(f, "too large for a thumbnail: {what}"),
            PictureError::Decode(e) => write!(f, "the keyframe does not decode: {e}"),
            PictureError::Encode(e) => write!(f, "JPEG: {e}"),
        }
    }
}

/// A picture made: the JPEG and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// The decoded picture's size (before scaling).
    pub source: (u32, u32),
}

/// Whether thumbnails can be made of this codec here: H.264 always, the others with an
/// `ffmpeg` to decode them.
pub fn decodes(codec: VideoCodec, ffmpeg: Option<&Path>) -> bool {
    codec == VideoCodec::H264 || ffmpeg.is_some()
}

/// The size a `w`x`h` picture is scaled to so that it is at most `max_width` wide (never
/// larger than it was), both sides even and at least 2.
pub fn scaled_size(w: u32, h: u32, max_width: u32) -> (u32, u32) {
    if w <= max_width || w == 0 {
        return (w.max(2) & !1, h.max(2) & !1);
    }
    let sh = (u64::from(h) * u64::from(max_width) + u64::from(w) / 2) / u64::from(w);
    let sh = u32::try_from(sh).unwrap_or(u32::MAX);
    (max_width.max(2) & !1, sh.max(2) & !1)
}

/// Decodes one H.264 keyframe (its NAL units, without start codes: what
/// [`VideoCodec::frame_units`] gives) and makes a JPEG at most `max_width` wide.
pub fn make(codec: VideoCodec, units: &[Vec<u8>], max_width: u32) -> Result<Picture, PictureError> {
    Decoders::new(None).make(codec, units, max_width)
}

/// [`make`] for any codec: those OpenH264 does not read go to the `ffmpeg` at `ffmpeg`.
pub fn make_with(
    codec: VideoCodec,
    units: &[Vec<u8>],
    max_width: u32,
    ffmpeg: Option<&Path>,
) -> Result<Picture, PictureError> {
    Decoders::new(ffmpeg.map(Path::to_path_buf)).make(codec, units, max_width)
}

/// The first stage of [`make`]: an H.264 keyframe decoded to RGB at its own size.
pub fn decode(codec: VideoCodec, units: &[Vec<u8>]) -> Result<RgbImage, PictureError> {
    if codec != VideoCodec::H264 {
        return Err(PictureError::Codec(codec));
    }
    Decoders::new(None).decode_h264(units)
}

/// The decoders a thread keeps from one picture to the next: OpenH264's, made once and kept
/// (its buffers are not allocated anew for every picture, which would leave the allocator
/// holding more memory after each; it is dropped after an error, so a bitstream that upset it
/// cannot spoil the next picture), and where `ffmpeg` is for the other codecs.
pub struct Decoders {
    h264: Option<Decoder>,
    ffmpeg: Option<PathBuf>,
}

impl Decoders {
    pub fn new(ffmpeg: Option<PathBuf>) -> Decoders {
        Decoders { h264: None, ffmpeg }
    }

    /// Where `ffmpeg` is, if anywhere.
    pub fn ffmpeg_path(&self) -> Option<PathBuf> {
        self.ffmpeg.clone()
    }

    /// Decodes one keyframe of any codec and makes a JPEG at most `max_width` wide.
    pub fn make(
        &mut self,
        codec: VideoCodec,
        units: &[Vec<u8>],
        max_width: u32,
    ) -> Result<Picture, PictureError> {
        let full = match (codec, self.ffmpeg.as_deref()) {
            (VideoCodec::H264, _) => self.decode_h264(units)?,
            (_, Some(ffmpeg)) => {
                let total: usize = units.iter().map(Vec::len).sum();
                if total > MAX_KEYFRAME_BYTES {
                    return Err(PictureError::TooLarge(format!("a {total}-byte keyframe")));
                }
                super::external::decode(ffmpeg, codec, units)?
            }
            (_, None) => return Err(PictureError::Codec(codec)),
        };
        let source = full.dimensions();
        let small = scale(full, max_width);
        let jpeg = encode(&small)?;
        Ok(Picture {
            jpeg,
            width: small.width(),
            height: small.height(),
            source,
        })
    }

    fn decode_h264(&mut self, units: &[Vec<u8>]) -> Result<RgbImage, PictureError> {
        let total: usize = units.iter().map(|u| u.len() + 4).sum();
        if total > MAX_KEYFRAME_BYTES {
            return Err(PictureError::TooLarge(format!("a {total}-byte keyframe")));
        }
        if units.is_empty() {
            return Err(PictureError::Decode("no NAL unit".into()));
        }
        // A parameter set declaring a huge picture is refused before the decoder allocates
        // for it (a single NAL unit is a valid RTP payload, which is what `inspect` reads).
        for unit in units {
            if let Some(VideoInfo {
                format: Some(f), ..
            }) = VideoCodec::H264.inspect(unit)
            {
                if u64::from(f.width) * u64::from(f.height) > MAX_PIXELS {
                    return Err(PictureError::TooLarge(format!("{}x{}", f.width, f.height)));
                }
            }
        }
        let mut stream = Vec::with_capacity(total);
        for unit in units {
            stream.extend_from_slice(&[0, 0, 0, 1]);
            stream.extend_from_slice(unit);
        }
        let decoder = match self.h264.as_mut() {
            Some(d) => d,
            None => self
                .h264
                .insert(Decoder::new().map_err(|e| PictureError::Decode(e.to_string()))?),
        };
        let picture = decode_with(decoder, &stream);
        if picture.is_err() {
            self.h264 = None;
        }
        picture
    }
}

/// One Annex B keyframe through an OpenH264 decoder, to RGB.
fn decode_with(decoder: &mut Decoder, stream: &[u8]) -> Result<RgbImage, PictureError> {
    let yuv = match decoder.decode(stream) {
        Ok(Some(yuv)) => Some(yuv),
        Ok(None) => None,
        Err(e) => return Err(PictureError::Decode(e.to_string())),
    };
    let yuv = match yuv {
        Some(y) => y,
        None => decoder
            .flush_remaining()
            .map_err(|e| PictureError::Decode(e.to_string()))?
            .into_iter()
            .next()
            .ok_or_else(|| PictureError::Decode("no picture".into()))?,
    };
    let (w, h) = yuv.dimensions();
    if w == 0 || h == 0 || (w as u64) * (h as u64) > MAX_PIXELS {
        return Err(PictureError::TooLarge(format!("{w}x{h}")));
    }
    let mut rgb = vec![0u8; w * h * 3];
    yuv.write_rgb8(&mut rgb);
    ImageBuffer::from_raw(w as u32, h as u32, rgb)
        .ok_or_else(|| PictureError::Decode("picture buffer".into()))
}

/// The second stage: at most `max_width` wide, the aspect ratio kept (see [`scaled_size`]).
pub fn scale(full: RgbImage, max_width: u32) -> RgbImage {
    let (tw, th) = scaled_size(full.width(), full.height(), max_width);
    if (tw, th) == full.dimensions() {
        full
    } else {
        image::imageops::thumbnail(&full, tw, th)
    }
}

/// The last stage: the JPEG.
pub fn encode(picture: &RgbImage) -> Result<Vec<u8>, PictureError> {
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY)
        .encode_image(picture)
        .map_err(|e| PictureError::Encode(e.to_string()))?;
    Ok(jpeg)
}

/// A plain placeholder picture (dark grey, 16:9) for `?fallback=placeholder`.
pub fn placeholder(width: u32) -> Vec<u8> {
    let (w, h) = scaled_size(width, width * 9 / 16, width);
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> = ImageBuffer::from_pixel(w, h, Rgb([32, 34, 40]));
    let mut jpeg = Vec::new();
    // Encoding a flat picture into memory does not fail; an empty body would be the outcome.
    let _ = JpegEncoder::new_with_quality(&mut jpeg, JPEG_QUALITY).encode_image(&img);
    jpeg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_keep_the_aspect_and_never_grow() {
        assert_eq!(scaled_size(1920, 1080, 640), (640, 360));
        assert_eq!(scaled_size(1280, 720, 640), (640, 360));
        assert_eq!(scaled_size(320, 180, 640), (320, 180));
        assert_eq!(scaled_size(1080, 1920, 640), (640, 1138));
        assert_eq!(scaled_size(641, 3, 640), (640, 2));
        assert_eq!(scaled_size(0, 0, 640), (2, 2));
    }

    #[test]
    fn garbage_is_an_error_not_a_picture() {
        let junk = vec![vec![0x65, 0x88, 0x84, 0x00, 0xff, 0x13], vec![0x67; 40]];
        assert!(matches!(
            make(VideoCodec::H264, &junk, 640),
            Err(PictureError::Decode(_))
        ));
        assert!(make(VideoCodec::H264, &[], 640).is_err());
        assert_eq!(
            make(VideoCodec::Vp8, &junk, 640),
            Err(PictureError::Codec(VideoCodec::Vp8))
        );
    }

    const VIDEO: &[u8] =
        include_bytes!("../../../relay-core/tests/data/video-320x180-30fps-4s.h264");

    /// The NAL units of the fixture's first keyframe (parameter sets through the IDR slices).
    fn first_keyframe() -> Vec<Vec<u8>> {
        let nals = ftl_proto::media::packetize::split_annexb(VIDEO);
        let start = nals
            .iter()
            .position(|n| n.first().map(|b| b & 0x1f) == Some(7));
        let start = start.unwrap_or_default();
        nals.iter()
            .skip(start)
            .take_while(|n| n.first().map(|b| b & 0x1f) != Some(1))
            .map(|n| n.to_vec())
            .collect()
    }

    #[test]
    fn a_keyframe_becomes_a_jpeg_that_decodes_back() {
        let p = make(VideoCodec::H264, &first_keyframe(), 640).unwrap_or_else(|e| {
            unreachable!("{e}");
        });
        assert_eq!((p.width, p.height, p.source), (320, 180, (320, 180)));
        let back = image::load_from_memory(&p.jpeg).map(|i| i.to_rgb8());
        let back = back.unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(back.dimensions(), (320, 180));
        let small = make(VideoCodec::H264, &first_keyframe(), 160).map(|p| (p.width, p.height));
        assert_eq!(small, Ok((160, 90)));
    }

    #[test]
    fn scrambled_slices_do_not_make_a_picture() {
        let mut seed = 0x2545_f491_u32;
        let units: Vec<Vec<u8>> = first_keyframe()
            .into_iter()
            .map(|mut n| {
                if n.first().map(|b| b & 0x1f) == Some(5) {
                    for b in n.iter_mut().skip(1) {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        *b = seed as u8;
                    }
                }
                n
            })
            .collect();
        let got = make(VideoCodec::H264, &units, 640);
        assert!(matches!(got, Err(PictureError::Decode(_))), "{got:?}");
    }

    #[test]
    fn one_decoder_serves_picture_after_picture_and_recovers_from_garbage() {
        let mut d = Decoders::new(None);
        let good = first_keyframe();
        let junk = vec![vec![0x65, 0x88, 0x84, 0x00, 0xff, 0x13]];
        for round in 0..3 {
            let p = d.make(VideoCodec::H264, &good, 640);
            assert_eq!(
                p.map(|p| (p.width, p.height)),
                Ok((320, 180)),
                "round {round}"
            );
            assert!(d.make(VideoCodec::H264, &junk, 640).is_err());
        }
        // The same picture from a kept decoder as from a fresh one.
        let kept = d.make(VideoCodec::H264, &good, 640).map(|p| p.jpeg);
        let fresh = make(VideoCodec::H264, &good, 640).map(|p| p.jpeg);
        assert_eq!(kept, fresh);
    }

    #[test]
    fn placeholder_is_a_jpeg() {
        let p = placeholder(640);
        assert_eq!(p.get(..2), Some(&[0xff, 0xd8][..]));
    }
}
