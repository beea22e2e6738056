//! Recording one ingest session (control bytes both ways, every media datagram both ways) as a
//! pcap file, rotated by size.

use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::DataLink;

use super::frame::{encode, Segment, ACK, FIN, PSH, SYN};

/// Size limits of one session's capture.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Start a new file past this many bytes.
    pub max_file_bytes: u64,
    /// Keep at most this many files of one session; the oldest is deleted.
    pub max_files: u32,
}

/// A capture being written.
pub struct SessionCapture {
    dir: PathBuf,
    stem: String,
    part: u32,
    writer: Option<PcapWriter<BufWriter<File>>>,
    written: u64,
    limits: Limits,
    client: SocketAddr,
    server: SocketAddr,
    /// Next TCP sequence numbers, client to server and back.
    c_seq: u32,
    s_seq: u32,
    wall0: SystemTime,
    t0: Instant,
}

impl SessionCapture {
    /// Opens `<dir>/<stem>.pcap` and records the TCP handshake of the control connection.
    pub fn create(
        dir: &Path,
        stem: &str,
        client: SocketAddr,
        server: SocketAddr,
        limits: Limits,
        now: Instant,
    ) -> io::Result<SessionCapture> {
        fs::create_dir_all(dir)?;
        let mut c = SessionCapture {
            dir: dir.to_owned(),
            stem: stem.to_owned(),
            part: 0,
            writer: None,
            written: 0,
            limits,
            client,
            server,
            c_seq: 1_000,
            s_seq: 50_000,
            wall0: SystemTime::now(),
            t0: now,
        };
        c.open()?;
        c.tcp(true, SYN, &[], now);
        c.tcp(false, SYN | ACK, &[], now);
        c.tcp(true, ACK, &[], now);
        Ok(c)
    }

    /// The file being written now.
    pub fn path(&self) -> PathBuf {
        self.part_path(self.part)
    }

    fn part_path(&self, part: u32) -> PathBuf {
        if part == 0 {
            self.dir.join(format!("{}.pcap", self.stem))
        } else {
            self.dir.join(format!("{}.{part}.pcap", self.stem))
        }
    }

    fn open(&mut self) -> io::Result<()> {
        let file = BufWriter::new(File::create(self.part_path(self.part))?);
        let header = PcapHeader {
            datalink: DataLink::RAW,
            ..PcapHeader::default()
        };
        self.writer = Some(PcapWriter::with_header(file, header).map_err(io::Error::other)?);
        self.written = 24;
        if self.part >= self.limits.max_files {
            let _ = fs::remove_file(self.part_path(self.part - self.limits.max_files));
        }
        Ok(())
    }

    fn write(&mut self, segment: &Segment, now: Instant) {
        let bytes = encode(segment);
        if self.written + bytes.len() as u64 + 16 > self.limits.max_file_bytes && self.written > 24
        {
            self.part += 1;
            if let Err(e) = self.open() {
                log::warn!("capture {}: {e}; stopped", self.path().display());
                self.writer = None;
            }
        }
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let at = self.wall0 + now.saturating_duration_since(self.t0);
        let ts = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        match w.write_packet(&PcapPacket::new(ts, bytes.len() as u32, &bytes)) {
            Ok(n) => self.written += n as u64,
            Err(e) => {
                log::warn!("capture {}: {e}; stopped", self.path().display());
                self.writer = None;
            }
        }
    }

    fn tcp(&mut self, from_client: bool, flags: u8, payload: &[u8], now: Instant) {
        let (src, dst, seq, ack) = if from_client {
            (self.client, self.server, self.c_seq, self.s_seq)
        } else {
            (self.server, self.client, self.s_seq, self.c_seq)
        };
        let advance = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        if from_client {
            self.c_seq = self.c_seq.wrapping_add(advance);
        } else {
            self.s_seq = self.s_seq.wrapping_add(advance);
        }
        let seg = Segment::Tcp {
            src,
            dst,
            seq,
            ack,
            flags,
            payload: payload.to_vec(),
        };
        self.write(&seg, now);
    }

    /// Control bytes from the client.
    pub fn control_in(&mut self, bytes: &[u8], now: Instant) {
        for chunk in bytes.chunks(1400) {
            self.tcp(true, PSH | ACK, chunk, now);
        }
    }

    /// Control bytes to the client.
    pub fn control_out(&mut self, bytes: &[u8], now: Instant) {
        for chunk in bytes.chunks(1400) {
            self.tcp(false, PSH | ACK, chunk, now);
        }
    }

    /// A datagram on the media port, either way.
    pub fn media(&mut self, src: SocketAddr, dst: SocketAddr, datagram: &[u8], now: Instant) {
        self.write(
            &Segment::Udp {
                src,
                dst,
                payload: datagram.to_vec(),
            },
            now,
        );
    }

    /// The session ended: records the connection's close and flushes the file.
    pub fn finish(&mut self, now: Instant) {
        self.tcp(true, FIN | ACK, &[], now);
        self.tcp(false, FIN | ACK, &[], now);
        if let Some(w) = self.writer.take() {
            let mut inner = w.into_writer();
            let _ = io::Write::flush(&mut inner);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_the_newest_files() {
        let dir = std::env::temp_dir().join(format!(
            "itg-rotate-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let server: SocketAddr = "127.0.0.1:8084".parse().unwrap();
        let limits = Limits {
            max_file_bytes: 10_000,
            max_files: 3,
        };
        let now = Instant::now();
        let mut c = SessionCapture::create(&dir, "s", client, server, limits, now).unwrap();
        c.control_in(b"HMAC\r\n\r\n", now);
        for i in 0..100u32 {
            c.media(
                client,
                "127.0.0.1:9000".parse().unwrap(),
                &[i as u8; 1000],
                now + Duration::from_millis(u64::from(i)),
            );
        }
        c.finish(now + Duration::from_secs(1));
        let mut files: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files.len(), 3, "{files:?}");
        for f in &files {
            let bytes = fs::read(dir.join(f)).unwrap();
            assert!(bytes.len() <= 10_000 + 1100, "{f}: {}", bytes.len());
            let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
            assert!(r.next_packet().is_some());
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
