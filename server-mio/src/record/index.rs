//! Where recordings live and what they hold: `DATA/recordings/<channel>/<UTC start>.mp4`
//! (`20261201T214512Z.mp4`, a `-N` suffix when two streams of a channel start in the same
//! second), listed with their start, duration and size. Names are checked against that
//! pattern before any path is built from a request, so no request reaches another file.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use mp4_atom::{Decode, Moof};

use super::fmp4::{AUDIO_TIMESCALE, AUDIO_TRACK, VIDEO_TIMESCALE, VIDEO_TRACK};

/// One recording file on disk.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: PathBuf,
    pub channel: u32,
    pub name: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// The file name of a recording that starts at `at` (UTC), with `n` > 0 as a suffix.
pub fn file_name(at: SystemTime, n: u32) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, mo, d, h, mi, s) = civil(secs);
    let suffix = if n > 0 {
        format!("-{n}")
    } else {
        String::new()
    };
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z{suffix}.mp4")
}

/// Whether `name` is a recording's file name (and nothing else: no separators, no dots but
/// the extension's).
pub fn valid_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".mp4") else {
        return false;
    };
    let (time, suffix) = stem.split_once('-').unwrap_or((stem, "1"));
    let b = time.as_bytes();
    b.len() == 16
        && b.iter().enumerate().all(|(i, c)| match i {
            8 => *c == b'T',
            15 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
        && !suffix.is_empty()
        && suffix.len() <= 4
        && suffix.bytes().all(|c| c.is_ascii_digit())
}

/// The poster image of a recording (its first keyframe): the same name, `.jpg`.
pub fn poster_of(recording: &Path) -> PathBuf {
    recording.with_extension("jpg")
}

/// The recording a poster's file name belongs to (`<start>.jpg` for `<start>.mp4`), if the
/// name is well formed.
pub fn recording_of_poster(name: &str) -> Option<String> {
    let mp4 = format!("{}.mp4", name.strip_suffix(".jpg")?);
    valid_name(&mp4).then_some(mp4)
}

/// The start time of a recording from its name, as RFC 3339 (`2026-12-01T21:45:12Z`).
pub fn start_of(name: &str) -> Option<String> {
    if !valid_name(name) {
        return None;
    }
    let t = name.get(..16)?;
    Some(format!(
        "{}-{}-{}T{}:{}:{}Z",
        t.get(0..4)?,
        t.get(4..6)?,
        t.get(6..8)?,
        t.get(9..11)?,
        t.get(11..13)?,
        t.get(13..15)?
    ))
}

/// The path of a recording named by a request, if the channel and name are well formed.
pub fn path_of(root: &Path, channel: &str, name: &str) -> Option<PathBuf> {
    let channel: u32 = channel.parse().ok()?;
    valid_name(name).then(|| root.join(channel.to_string()).join(name))
}

/// Every recording under `root`, oldest first (by name within a channel, channels in order).
pub fn files(root: &Path) -> Vec<FileInfo> {
    let mut out = Vec::new();
    let Ok(dirs) = fs::read_dir(root) else {
        return out;
    };
    for d in dirs.flatten() {
        let Some(channel) = d.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(entries) = fs::read_dir(d.path()) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            if !valid_name(&name) || !meta.is_file() {
                continue;
            }
            out.push(FileInfo {
                path: e.path(),
                channel,
                name,
                size: meta.len(),
                modified: meta.modified().unwrap_or(UNIX_EPOCH),
            });
        }
    }
    out.sort_by(|a, b| (a.channel, &a.name).cmp(&(b.channel, &b.name)));
    out
}

/// The media time a fragmented MP4 holds, in seconds: the end of the last complete fragment
/// of its video track (its audio track when it has no video). Reads only box headers and the
/// `moof` boxes (small), never the media.
pub fn duration(path: &Path) -> Option<f64> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut pos = 0u64;
    let (mut video_end, mut audio_end) = (0u64, 0u64);
    while pos + 8 <= len {
        f.seek(SeekFrom::Start(pos)).ok()?;
        let mut head = [0u8; 16];
        f.read_exact(&mut head[..8]).ok()?;
        let mut size = u64::from(u32::from_be_bytes(head[..4].try_into().ok()?));
        if size == 1 {
            f.read_exact(&mut head[8..16]).ok()?;
            size = u64::from_be_bytes(head[8..16].try_into().ok()?);
        }
        if size < 8 || pos + size > len {
            break; // a box cut short: the file ends before it
        }
        if &head[4..8] == b"moof" && size <= 1 << 20 {
            let mut body = vec![0u8; usize::try_from(size).ok()?];
            f.seek(SeekFrom::Start(pos)).ok()?;
            f.read_exact(&mut body).ok()?;
            // The fragment counts only if its mdat is complete too.
            let complete = fragment_complete(&mut f, pos + size, len);
            if let (Ok(moof), true) = (Moof::decode(&mut &body[..]), complete) {
                for traf in &moof.traf {
                    let start = traf.tfdt.as_ref().map_or(0, |t| t.base_media_decode_time);
                    let dur: u64 = traf
                        .trun
                        .iter()
                        .flat_map(|t| &t.entries)
                        .map(|e| u64::from(e.duration.unwrap_or(0)))
                        .sum();
                    match traf.tfhd.track_id {
                        VIDEO_TRACK => video_end = video_end.max(start + dur),
                        AUDIO_TRACK => audio_end = audio_end.max(start + dur),
                        _ => {}
                    }
                }
            }
        }
        pos += size;
    }
    Some(if video_end > 0 {
        video_end as f64 / f64::from(VIDEO_TIMESCALE)
    } else {
        audio_end as f64 / f64::from(AUDIO_TIMESCALE)
    })
}

fn fragment_complete(f: &mut File, at: u64, len: u64) -> bool {
    let mut head = [0u8; 8];
    if f.seek(SeekFrom::Start(at)).is_err() || f.read_exact(&mut head).is_err() {
        return false;
    }
    let size = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
    &head[4..8] == b"mdat" && size >= 8 && at + size <= len
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm), with the time of day.
fn civil(secs: u64) -> (u64, u64, u64, u64, u64, u64) {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_are_utc_start_times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_161_512); // 2026-12-01T21:45:12Z
        assert_eq!(file_name(t, 0), "20261201T214512Z.mp4");
        assert_eq!(file_name(t, 2), "20261201T214512Z-2.mp4");
        assert_eq!(file_name(UNIX_EPOCH, 0), "19700101T000000Z.mp4");
        // 2024-02-29 (a leap day).
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(file_name(leap, 0), "20240229T000000Z.mp4");
        assert_eq!(
            start_of("20261201T214512Z.mp4").as_deref(),
            Some("2026-12-01T21:45:12Z")
        );
    }

    #[test]
    fn only_recording_names_pass() {
        assert!(valid_name("20261201T214512Z.mp4"));
        assert!(valid_name("20261201T214512Z-12.mp4"));
        for bad in [
            "../keys.json",
            "20261201T214512Z.mp4/..",
            "..%2f20261201T214512Z.mp4",
            "20261201T214512Z-.mp4",
            "20261201T214512Z-1-1.mp4",
            "20261201X214512Z.mp4",
            "20261201T214512Z.MP4",
            ".mp4",
            "",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        let root = Path::new("/data/recordings");
        assert_eq!(
            path_of(root, "77", "20261201T214512Z.mp4"),
            Some(root.join("77/20261201T214512Z.mp4"))
        );
        assert_eq!(path_of(root, "..", "20261201T214512Z.mp4"), None);
        assert_eq!(path_of(root, "77", "../../x.mp4"), None);
    }
}
