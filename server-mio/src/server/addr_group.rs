//! The key every per-address rule counts by (failed authentications, connections still
//! authenticating or sending their request, WebRTC sessions not yet connected, offer rates).
//!
//! An IPv4 address is one key. An IPv6 host is not one address but a /64: a subscriber's
//! prefix (RFC 6177), inside which a host picks and rotates addresses at will (RFC 8981
//! temporary addresses), so a per-address cap on IPv6 /128s caps nothing. IPv4-mapped IPv6
//! addresses (a dual-stack socket's view of an IPv4 peer) count as the IPv4 address they are.

use std::net::{IpAddr, Ipv6Addr};

/// The per-address key of `ip`.
pub(super) fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(group(ip("203.0.113.7")), ip("203.0.113.7"));
        assert_ne!(group(ip("203.0.113.7")), group(ip("203.0.113.8")));
        assert_eq!(
            group(ip("2001:db8:1:2:aaaa::1")),
            group(ip("2001:db8:1:2:ffff:1:2:3"))
        );
        assert_eq!(group(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_ne!(group(ip("2001:db8:1:2::1")), group(ip("2001:db8:1:3::1")));
        assert_eq!(group(ip("::ffff:198.51.100.4")), ip("198.51.100.4"));
        assert_eq!(group(ip("::1")), ip("::"));
    }
}
