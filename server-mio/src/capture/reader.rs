//! Reading ingest sessions back from a pcap file: ours, or `tcpdump -i lo`'s. The control
//! connection's bytes are reassembled per direction (retransmissions and reordering handled by
//! sequence number); media is every UDP datagram between the client's IP and the port the
//! server assigned.
//!
//! A WHIP session (written by the server only: its media is encrypted on the wire) is the
//! same shape: its HTTP offer and answer stand where FTL's control connection does, and its
//! media is the decrypted RTP and sender reports sent to the WebRTC port the answer named.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use pcap_file::pcap::PcapReader;

use super::frame::{decode, Segment, FIN, SYN};

/// One recorded ingest session; times are offsets from the session's first packet.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// Control bytes from the client, in order, each chunk with the time it completed.
    pub control_in: Vec<(Duration, Vec<u8>)>,
    /// Control bytes to the client.
    pub control_out: Vec<(Duration, Vec<u8>)>,
    /// The media port the server assigned (from its `Use UDP port` reply).
    pub media_port: Option<u16>,
    /// Datagrams from the client to the media port, with their source address.
    pub media_in: Vec<(Duration, SocketAddr, Vec<u8>)>,
    /// Datagrams from the media port to the client (NACKs, ping echoes).
    pub media_out: Vec<(Duration, SocketAddr, Vec<u8>)>,
    /// Set for a WHIP session: what its offer and answer said.
    pub whip: Option<WhipExchange>,
}

/// The HTTP exchange that opened a WHIP session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhipExchange {
    /// The channel of the request's path.
    pub channel: Option<u32>,
    /// The server's status (`201` when the publisher was taken).
    pub status: u16,
    /// Payload types of the stream's video (in `video_codec`) and Opus formats.
    pub video_pts: Vec<u8>,
    /// The codec of the stream's video: the answer's when it names one; when it names several,
    /// the one the first video datagram came in, as the server decides (see [`Self::settle`]).
    pub video_codec: Option<relay_core::VideoCodec>,
    pub audio_pts: Vec<u8>,
    /// Every video payload type of the answer in a codec the relay passes through, in order.
    pub video_named: Vec<(u8, relay_core::VideoCodec)>,
}

impl WhipExchange {
    /// Reads the request and response bytes of a WHIP `POST`; the media port is the first
    /// candidate's of the answer.
    pub fn parse(request: &[u8], response: &[u8]) -> Option<(WhipExchange, Option<u16>)> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(request).ok()?;
        let channel = req
            .path?
            .strip_prefix("/whip/")?
            .split(['/', '?'])
            .next()?
            .parse()
            .ok();
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let body = match resp.parse(response).ok()? {
            httparse::Status::Complete(n) => response.get(n..).unwrap_or_default(),
            httparse::Status::Partial => &[],
        };
        let mut w = WhipExchange {
            channel,
            status: resp.code?,
            ..WhipExchange::default()
        };
        let mut port = None;
        let mut section = "";
        for line in String::from_utf8_lossy(body).lines() {
            if let Some(m) = line.strip_prefix("m=") {
                section = if m.starts_with("video") {
                    "video"
                } else if m.starts_with("audio") {
                    "audio"
                } else {
                    ""
                };
            } else if let Some(map) = line.strip_prefix("a=rtpmap:") {
                let (pt, codec) = map.split_once(' ').unwrap_or((map, ""));
                let Ok(pt) = pt.parse::<u8>() else { continue };
                let codec = codec.to_ascii_lowercase();
                let name = codec.split('/').next().unwrap_or("");
                let video = relay_core::VideoCodec::ALL
                    .into_iter()
                    .find(|c| c.name().eq_ignore_ascii_case(name));
                if let Some(video) = video.filter(|_| section == "video") {
                    if !w.video_named.iter().any(|(p, _)| *p == pt) {
                        w.video_named.push((pt, video));
                    }
                } else if section == "audio"
                    && codec.starts_with("opus/")
                    && !w.audio_pts.contains(&pt)
                {
                    w.audio_pts.push(pt);
                }
            } else if let Some(c) = line.strip_prefix("a=candidate:") {
                // foundation component transport priority address port typ ...
                if port.is_none() {
                    port = c.split(' ').nth(5).and_then(|p| p.parse().ok());
                }
            }
        }
        w.settle(None);
        Some((w, port))
    }

    /// Takes the stream's video codec: that of payload type `first_video` when the answer
    /// names it, else the answer's first; `video_pts` become that codec's.
    pub fn settle(&mut self, first_video: Option<u8>) {
        let named = |pt: u8| self.video_named.iter().find(|(p, _)| *p == pt);
        let codec = first_video
            .and_then(named)
            .or(self.video_named.first())
            .map(|(_, c)| *c);
        self.video_codec = codec;
        self.video_pts = self
            .video_named
            .iter()
            .filter(|(_, c)| Some(*c) == codec)
            .map(|(p, _)| *p)
            .collect();
    }
}

/// Why a capture could not be read.
#[derive(Debug)]
pub struct ReadError(pub String);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "capture: {}", self.0)
    }
}

impl std::error::Error for ReadError {}

/// One direction of a TCP connection being reassembled.
#[derive(Default)]
struct Direction {
    next: Option<u32>,
    pending: BTreeMap<u32, (Duration, Vec<u8>)>,
    out: Vec<(Duration, Vec<u8>)>,
}

impl Direction {
    fn segment(&mut self, at: Duration, seq: u32, flags: u8, payload: Vec<u8>) {
        if flags & SYN != 0 {
            self.next = Some(seq.wrapping_add(1));
        }
        if payload.is_empty() {
            return;
        }
        let next = *self.next.get_or_insert(seq);
        // Drop what was already taken (retransmissions); keep what overlaps the edge.
        let behind = next.wrapping_sub(seq) as i32;
        let (seq, payload) = if behind > 0 {
            let skip = behind as usize;
            if skip >= payload.len() {
                return;
            }
            (next, payload.get(skip..).unwrap_or_default().to_vec())
        } else {
            (seq, payload)
        };
        self.pending.entry(seq).or_insert((at, payload));
        while let Some(n) = self.next {
            let Some((t, p)) = self.pending.remove(&n) else {
                break;
            };
            self.next = Some(n.wrapping_add(p.len() as u32));
            let _ = t;
            self.out.push((at, p));
        }
        // Bound the reorder buffer: a capture that lost a segment for good cannot be replayed
        // past it anyway.
        while self.pending.len() > 4096 {
            self.pending.pop_first();
        }
    }
}

struct Conn {
    first: Duration,
    a: SocketAddr,
    b: SocketAddr,
    a_to_b: Direction,
    b_to_a: Direction,
}

/// Reads every FTL session (a TCP connection whose client starts with `HMAC`) and every WHIP
/// session (one whose client starts with `POST /whip/`) in a capture.
pub fn read_sessions(bytes: &[u8]) -> Result<Vec<Recorded>, ReadError> {
    let mut reader = PcapReader::new(bytes).map_err(|e| ReadError(e.to_string()))?;
    let link = reader.header().datalink;
    let mut conns: Vec<Conn> = Vec::new();
    let mut udp: Vec<(Duration, SocketAddr, SocketAddr, Vec<u8>)> = Vec::new();
    while let Some(p) = reader.next_packet() {
        let p = p.map_err(|e| ReadError(e.to_string()))?;
        let at = p.timestamp;
        match decode(link, &p.data) {
            Some(Segment::Tcp {
                src,
                dst,
                seq,
                flags,
                payload,
                ..
            }) => {
                let i = match conns
                    .iter()
                    .position(|c| (c.a == src && c.b == dst) || (c.a == dst && c.b == src))
                {
                    Some(i) => i,
                    None => {
                        if flags & FIN != 0 && payload.is_empty() {
                            continue;
                        }
                        conns.push(Conn {
                            first: at,
                            a: src,
                            b: dst,
                            a_to_b: Direction::default(),
                            b_to_a: Direction::default(),
                        });
                        conns.len() - 1
                    }
                };
                let Some(c) = conns.get_mut(i) else { continue };
                let dir = if c.a == src {
                    &mut c.a_to_b
                } else {
                    &mut c.b_to_a
                };
                dir.segment(at, seq, flags, payload);
            }
            Some(Segment::Udp { src, dst, payload }) => udp.push((at, src, dst, payload)),
            None => {}
        }
    }
    let mut sessions = Vec::new();
    for c in conns {
        // The client is the side that asked for the nonce.
        let (client, server, cin, cout) = if opens_session(&c.a_to_b.out) {
            (c.a, c.b, c.a_to_b.out, c.b_to_a.out)
        } else if opens_session(&c.b_to_a.out) {
            (c.b, c.a, c.b_to_a.out, c.a_to_b.out)
        } else {
            continue;
        };
        let rel = |t: Duration| t.saturating_sub(c.first);
        let replies: Vec<u8> = cout.iter().flat_map(|(_, b)| b.clone()).collect();
        let (whip, media_port) = if starts_with(&cin, b"POST /whip/") {
            let request: Vec<u8> = cin.iter().flat_map(|(_, b)| b.clone()).collect();
            match WhipExchange::parse(&request, &replies) {
                Some((w, port)) => (Some(w), port),
                None => continue,
            }
        } else {
            (None, port_from_replies(&replies))
        };
        let mut rec = Recorded {
            whip,
            client: Some(client),
            server: Some(server),
            control_in: cin.into_iter().map(|(t, b)| (rel(t), b)).collect(),
            control_out: cout.into_iter().map(|(t, b)| (rel(t), b)).collect(),
            media_port,
            ..Recorded::default()
        };
        if let Some(port) = media_port {
            for (t, src, dst, p) in &udp {
                if *t < c.first {
                    continue;
                }
                // A WHIP publisher's media may come from another address than its offer.
                let from_client = src.ip() == client.ip() || rec.whip.is_some();
                if from_client && dst.ip() == server.ip() && dst.port() == port {
                    rec.media_in.push((rel(*t), *src, p.clone()));
                } else if dst.ip() == client.ip() && src.ip() == server.ip() && src.port() == port {
                    rec.media_out.push((rel(*t), *dst, p.clone()));
                }
            }
        }
        if let Some(w) = rec.whip.as_mut() {
            // RTCP's packet types read as 72-79, which no video payload type of an answer is.
            let first_video = rec.media_in.iter().find_map(|(_, _, d)| {
                let pt = ftl_proto::media::RtpPacket::parse(d).ok()?.payload_type();
                w.video_named.iter().any(|(p, _)| *p == pt).then_some(pt)
            });
            w.settle(first_video);
        }
        sessions.push(rec);
    }
    Ok(sessions)
}

fn starts_with(chunks: &[(Duration, Vec<u8>)], prefix: &[u8]) -> bool {
    chunks.first().is_some_and(|(_, b)| b.starts_with(prefix))
}

fn opens_session(chunks: &[(Duration, Vec<u8>)]) -> bool {
    starts_with(chunks, b"HMAC") || starts_with(chunks, b"POST /whip/")
}

/// The port of the server's `200 ... Use UDP port N` reply.
pub fn port_from_replies(replies: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(replies);
    text.lines().find_map(|l| {
        let rest = l.split_once(" Use UDP port ")?.1;
        rest.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use relay_core::VideoCodec;

    #[test]
    fn a_whip_answer_naming_several_codecs_settles_on_the_one_that_came() {
        let request = b"POST /whip/77 HTTP/1.1\r\nContent-Type: application/sdp\r\n\r\n";
        let response = b"HTTP/1.1 201 Created\r\nContent-Type: application/sdp\r\n\r\n\
            v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102 103 96 97\r\na=rtpmap:102 H264/90000\r\n\
            a=rtpmap:103 rtx/90000\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 20000 typ host\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n";
        let (mut w, port) = WhipExchange::parse(request, response).unwrap();
        assert_eq!(port, Some(20000));
        assert_eq!(
            w.video_named,
            vec![(102, VideoCodec::H264), (96, VideoCodec::Vp8)]
        );
        // Before any media: the answer's first.
        assert_eq!(
            (w.video_codec, w.video_pts.clone()),
            (Some(VideoCodec::H264), vec![102])
        );
        w.settle(Some(96));
        assert_eq!(
            (w.video_codec, w.video_pts.clone()),
            (Some(VideoCodec::Vp8), vec![96])
        );
        assert_eq!(w.audio_pts, vec![111]);
        // A payload type the answer did not name changes nothing but falls back to the first.
        w.settle(Some(100));
        assert_eq!(w.video_codec, Some(VideoCodec::H264));
    }

    #[test]
    fn reassembles_out_of_order_and_retransmitted_segments() {
        let mut d = Direction::default();
        let t = Duration::ZERO;
        d.segment(t, 99, SYN, vec![]);
        d.segment(t, 104, 0, b"world".to_vec());
        d.segment(t, 100, 0, b"hell".to_vec());
        d.segment(t, 100, 0, b"hell".to_vec());
        d.segment(t, 102, 0, b"llo".to_vec());
        let all: Vec<u8> = d.out.iter().flat_map(|(_, b)| b.clone()).collect();
        assert_eq!(all, b"hellworld");
        assert_eq!(
            port_from_replies(b"200 abc\n200\n200 hi. Use UDP port 9001\n"),
            Some(9001)
        );
    }
}
