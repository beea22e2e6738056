//! Synthetic link-layer framing for captures: the server sees TCP payload bytes and UDP
//! datagrams, not packets, so it wraps them in IPv4 + TCP/UDP headers (pcap link type RAW, 101)
//! that Wireshark and tshark read as a normal conversation. The reader takes those and what
//! `tcpdump` writes on loopback (Ethernet, Linux cooked v1/v2).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use pcap_file::DataLink;

/// A transport segment, as recorded or read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        seq: u32,
        ack: u32,
        flags: u8,
        payload: Vec<u8>,
    },
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: Vec<u8>,
    },
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

fn v4(a: SocketAddr) -> Ipv4Addr {
    match a.ip() {
        IpAddr::V4(ip) => ip,
        // Captures are IPv4; IPv6 peers are recorded as their mapped form's low 32 bits.
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED),
    }
}

fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for c in chunks {
        let mut it = c.chunks_exact(2);
        for w in &mut it {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [b] = it.remainder() {
            sum += u32::from(*b) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying `segment` (checksums filled in).
pub fn encode(segment: &Segment) -> Vec<u8> {
    let (src, dst, proto, transport) = match segment {
        Segment::Tcp {
            src,
            dst,
            seq,
            ack,
            flags,
            payload,
        } => {
            let mut t = Vec::with_capacity(20 + payload.len());
            t.extend_from_slice(&src.port().to_be_bytes());
            t.extend_from_slice(&dst.port().to_be_bytes());
            t.extend_from_slice(&seq.to_be_bytes());
            t.extend_from_slice(&ack.to_be_bytes());
            t.push(5 << 4);
            t.push(*flags);
            t.extend_from_slice(&65535u16.to_be_bytes());
            t.extend_from_slice(&[0, 0, 0, 0]);
            t.extend_from_slice(payload);
            (*src, *dst, 6u8, t)
        }
        Segment::Udp { src, dst, payload } => {
            let mut t = Vec::with_capacity(8 + payload.len());
            t.extend_from_slice(&src.port().to_be_bytes());
            t.extend_from_slice(&dst.port().to_be_bytes());
            t.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            t.extend_from_slice(&[0, 0]);
            t.extend_from_slice(payload);
            (*src, *dst, 17u8, t)
        }
    };
    let (s, d) = (v4(src).octets(), v4(dst).octets());
    let len = (transport.len() as u16).to_be_bytes();
    let pseudo = [
        s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], 0, proto, len[0], len[1],
    ];
    let mut transport = transport;
    let sum = checksum(&[&pseudo, &transport]).to_be_bytes();
    let at = if proto == 6 { 16 } else { 6 };
    if let Some(dst) = transport.get_mut(at..at + 2) {
        dst.copy_from_slice(&sum);
    }
    let total = ((20 + transport.len()) as u16).to_be_bytes();
    let mut ip = vec![0x45, 0, total[0], total[1], 0, 0, 0x40, 0, 64, proto, 0, 0];
    ip.extend_from_slice(&s);
    ip.extend_from_slice(&d);
    let sum = checksum(&[&ip]).to_be_bytes();
    ip[10] = sum[0];
    ip[11] = sum[1];
    ip.extend_from_slice(&transport);
    ip
}

/// Reads a segment from a captured frame of the given link type; `None` for anything that is
/// not IPv4 TCP or UDP (ARP, IPv6, fragments, truncated frames).
pub fn decode(link: DataLink, frame: &[u8]) -> Option<Segment> {
    let ip = match link {
        DataLink::RAW | DataLink::IPV4 => frame,
        DataLink::ETHERNET => match frame.get(12..14)? {
            [0x08, 0x00] => frame.get(14..)?,
            _ => return None,
        },
        DataLink::LINUX_SLL => match frame.get(14..16)? {
            [0x08, 0x00] => frame.get(16..)?,
            _ => return None,
        },
        DataLink::LINUX_SLL2 => match frame.get(0..2)? {
            [0x08, 0x00] => frame.get(20..)?,
            _ => return None,
        },
        _ => return None,
    };
    let first = *ip.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let frag = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]);
    if frag & 0x3fff != 0 || ihl < 20 {
        return None;
    }
    let proto = *ip.get(9)?;
    let src_ip = Ipv4Addr::new(*ip.get(12)?, *ip.get(13)?, *ip.get(14)?, *ip.get(15)?);
    let dst_ip = Ipv4Addr::new(*ip.get(16)?, *ip.get(17)?, *ip.get(18)?, *ip.get(19)?);
    let t = ip.get(ihl..total.min(ip.len()))?;
    let port = |at: usize| Some(u16::from_be_bytes([*t.get(at)?, *t.get(at + 1)?]));
    let src = SocketAddr::new(src_ip.into(), port(0)?);
    let dst = SocketAddr::new(dst_ip.into(), port(2)?);
    match proto {
        6 => {
            let word = |at: usize| {
                Some(u32::from_be_bytes([
                    *t.get(at)?,
                    *t.get(at + 1)?,
                    *t.get(at + 2)?,
                    *t.get(at + 3)?,
                ]))
            };
            let off = usize::from(*t.get(12)? >> 4) * 4;
            Some(Segment::Tcp {
                src,
                dst,
                seq: word(4)?,
                ack: word(8)?,
                flags: *t.get(13)?,
                payload: t.get(off..)?.to_vec(),
            })
        }
        17 => Some(Segment::Udp {
            src,
            dst,
            payload: t.get(8..)?.to_vec(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checksums() {
        let a: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:8084".parse().unwrap();
        let seg = Segment::Tcp {
            src: a,
            dst: b,
            seq: 7,
            ack: 9,
            flags: PSH | ACK,
            payload: b"HMAC\r\n\r\n".to_vec(),
        };
        let bytes = encode(&seg);
        assert_eq!(
            checksum(&[&bytes[..20]]),
            0,
            "IPv4 header checksum verifies"
        );
        assert_eq!(decode(DataLink::RAW, &bytes), Some(seg));
        let udp = Segment::Udp {
            src: a,
            dst: b,
            payload: vec![1, 2, 3],
        };
        let bytes = encode(&udp);
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&[0x08, 0x00]);
        eth.extend_from_slice(&bytes);
        assert_eq!(decode(DataLink::ETHERNET, &eth), Some(udp));
        assert_eq!(decode(DataLink::ETHERNET, &[0u8; 13]), None);
        for len in 0..bytes.len() {
            let _ = decode(DataLink::RAW, &bytes[..len]);
        }
    }
}
