//! Both address families on one port: an IPv6 socket bound to `::` with `IPV6_V6ONLY` off
//! takes IPv4 peers too, which it shows as IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`).
//! Every rule of the server (routing by source, per-address limits, an FTL stream's one
//! source, ICE candidates) compares plain addresses, so peers are taken in [`canonical`] form
//! as they arrive, and written back in the socket's form ([`for_socket`]) as they leave.

use std::io;
use std::net::{IpAddr, SocketAddr};

/// A peer's address as the server compares it: IPv4-mapped IPv6 becomes the IPv4 address.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

/// `to` as a socket bound to an IPv6 address must be given it: an IPv4 destination in its
/// mapped form. Unchanged for IPv4 sockets.
pub fn for_socket(to: SocketAddr, socket_is_v6: bool) -> SocketAddr {
    match (to, socket_is_v6) {
        (SocketAddr::V4(v4), true) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

/// Whether `ip` binds both families (`::`).
pub fn is_dual(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.is_unspecified())
}

/// A socket2 socket for `addr`, taking both families when `addr` is `::`.
pub fn socket(addr: SocketAddr, kind: socket2::Type) -> io::Result<socket2::Socket> {
    let s = socket2::Socket::new(socket2::Domain::for_address(addr), kind, None)?;
    if is_dual(addr.ip()) {
        s.set_only_v6(false)?;
    }
    Ok(s)
}

/// A non-blocking TCP listener on `addr` (both families for `::`).
pub fn tcp_listener(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let s = socket(addr, socket2::Type::STREAM)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(mio::net::TcpListener::from_std(s.into()))
}

/// Whether this host can bind an IPv6 socket at all (IPv6 may be off in the kernel or the
/// container): `::` falls back to `0.0.0.0` when it cannot.
pub fn ipv6_available() -> bool {
    socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)
        .and_then(|s| s.bind(&SocketAddr::from(([0u16; 8], 0)).into()))
        .is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mapped_addresses_round_trip() {
        let v4: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:192.0.2.1]:5000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        assert_eq!(canonical(mapped), v4);
        assert_eq!(canonical(v4), v4);
        assert_eq!(canonical(v6), v6);
        assert_eq!(for_socket(v4, true), mapped);
        assert_eq!(for_socket(v4, false), v4);
        assert_eq!(for_socket(v6, true), v6);
        assert!(is_dual("::".parse().unwrap()));
        assert!(!is_dual("0.0.0.0".parse().unwrap()));
        assert!(!is_dual("::1".parse().unwrap()));
    }

    #[test]
    fn a_dual_socket_takes_ipv4_and_shows_it_mapped() {
        if !ipv6_available() {
            eprintln!("no IPv6 here: skipped");
            return;
        }
        let s = socket("[::]:0".parse().unwrap(), socket2::Type::DGRAM).unwrap();
        s.bind(&"[::]:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        let rx: std::net::UdpSocket = s.into();
        let port = rx.local_addr().unwrap().port();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", ("127.0.0.1", port)).unwrap();
        let mut b = [0u8; 8];
        let (_, from) = rx.recv_from(&mut b).unwrap();
        assert!(from.is_ipv6(), "{from}");
        assert_eq!(canonical(from), tx.local_addr().unwrap());
        rx.send_to(b"y", for_socket(tx.local_addr().unwrap(), true))
            .unwrap();
        let (_, back) = tx.recv_from(&mut b).unwrap();
        assert_eq!(back.port(), port);
    }
}
