//! Receiving a UDP datagram together with how long it waited in the socket: the kernel stamps
//! each datagram on arrival (`SO_TIMESTAMPNS`), so the loop can tell when it has fallen behind
//! its ingest (the relay's overload policy, `Relay::handle_datagram_queued`). Through `nix`'s
//! safe wrappers; a socket without stamps reads as it always did, with no wait known.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, SystemTime};

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage,
};
use nix::sys::time::TimeSpec;

/// Asks the kernel to stamp the socket's datagrams on arrival; whether it will. The kernel
/// turns stamping on a moment after the first socket asks; a datagram that arrives before is
/// stamped when read (it reads as not having waited), which errs on the side of no skip.
pub fn enable(socket: &impl AsFd) -> bool {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).is_ok()
}

/// The control-message space one read needs, kept so a read allocates nothing.
#[derive(Debug)]
pub struct Stamps {
    cmsg: Vec<u8>,
}

impl Default for Stamps {
    fn default() -> Self {
        Stamps {
            cmsg: nix::cmsg_space!(TimeSpec),
        }
    }
}

impl Stamps {
    /// One datagram: its length, sender, and how long it waited since the kernel received it
    /// (`None` without a stamp). A datagram whose source is not an IP address is read and
    /// refused with `InvalidData` (the caller goes on reading).
    pub fn recv_from(
        &mut self,
        socket: &impl AsRawFd,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
        recv_from(socket, buf, &mut self.cmsg)
    }
}

fn recv_from(
    socket: &impl AsRawFd,
    buf: &mut [u8],
    cmsg: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<Duration>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let from = msg.address.as_ref().and_then(to_std).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "datagram without an IP source address",
        )
    })?;
    let mut waited = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                let arrived = SystemTime::UNIX_EPOCH + Duration::from(ts);
                waited = Some(
                    SystemTime::now()
                        .duration_since(arrived)
                        .unwrap_or(Duration::ZERO),
                );
            }
        }
    }
    // An IPv4 peer of a dual-stack socket shows as `::ffff:a.b.c.d`: taken as `a.b.c.d`.
    Ok((msg.bytes, crate::dual_stack::canonical(from), waited))
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    if let Some(v6) = a.as_sockaddr_in6() {
        return Some(SocketAddr::V6(SocketAddrV6::from(*v6)));
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn tells_how_long_a_datagram_waited() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(enable(&rx));
        // The kernel turns arrival stamping on shortly after the first socket asks (a datagram
        // that arrives before is stamped when it is read): give it that moment.
        std::thread::sleep(Duration::from_millis(100));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"early", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(120));
        tx.send_to(b"late", rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let mut stamps = Stamps::default();
        let (n, from, waited) = stamps.recv_from(&rx, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"early");
        assert_eq!(from, tx.local_addr().unwrap());
        let early = waited.unwrap();
        let (n, _, waited) = stamps.recv_from(&rx, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"late");
        let late = waited.unwrap();
        // The stamp is taken where the kernel's receive path runs, which a busy machine may
        // defer a little: compare the two rather than trusting the sleep to the millisecond.
        assert!(early > late, "{early:?} vs {late:?}");
        assert!(early >= Duration::from_millis(60), "{early:?}");
        let e = stamps.recv_from(&rx, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn without_stamps_no_wait_is_known() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        let mut buf = [0u8; 8];
        let (n, _, waited) = Stamps::default().recv_from(&rx, &mut buf).unwrap();
        assert_eq!((n, waited), (1, None));
    }
}
