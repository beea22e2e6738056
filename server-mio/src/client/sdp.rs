//! The lines of a server's SDP a client needs before ICE: where to send (RFC 8839 candidates).

use std::net::SocketAddr;

/// The first UDP candidate of an SDP (a server's UDP address).
pub fn udp_candidate(sdp: &str) -> Option<SocketAddr> {
    first_candidate(sdp, |f| {
        f.get(2).is_some_and(|p| p.eq_ignore_ascii_case("udp"))
    })
}

/// The first ICE-TCP passive host candidate of an SDP (the server's TCP address).
pub fn tcp_candidate(sdp: &str) -> Option<SocketAddr> {
    first_candidate(sdp, |f| {
        f.get(2).is_some_and(|p| p.eq_ignore_ascii_case("tcp"))
            && f.windows(2).any(|w| w == ["tcptype", "passive"])
    })
}

/// The address of the first `a=candidate` line whose fields pass `wanted`.
fn first_candidate(sdp: &str, wanted: impl Fn(&[&str]) -> bool) -> Option<SocketAddr> {
    sdp.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("a=candidate:")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        if !wanted(&f) {
            return None;
        }
        let ip: std::net::IpAddr = f.get(4)?.parse().ok()?;
        let port: u16 = f.get(5)?.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_passive_tcp_candidate() {
        let sdp = "v=0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\n\
                   a=candidate:2 1 tcp 1671430143 127.0.0.1 5001 typ host tcptype passive\r\n";
        assert_eq!(tcp_candidate(sdp), Some("127.0.0.1:5001".parse().unwrap()));
        assert_eq!(
            tcp_candidate("a=candidate:1 1 tcp 1 127.0.0.1 9 typ host tcptype active\r\n"),
            None
        );
        assert_eq!(
            tcp_candidate("a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n"),
            None
        );
        assert_eq!(udp_candidate(sdp), Some("127.0.0.1:5000".parse().unwrap()));
    }
}
