//! The network path of a client's str0m peer (the probe viewer, the WHIP client): a UDP
//! socket, or one TCP connection to a server's ICE-TCP passive candidate (RFC 6544) carrying
//! RFC 4571 frames. Both look the same to the peer: packets in with their source, packets out
//! to a destination.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use str0m::net::Protocol;
use str0m::Candidate;

use super::framing::{frame, Deframer};

/// Frames read but not yet taken: bounded, a reader that falls this far behind loses the rest.
const MAX_PENDING: usize = 4096;

enum Kind {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        remote: SocketAddr,
        deframer: Deframer,
        /// Framed packets the socket did not take yet.
        out: Vec<u8>,
        pending: VecDeque<Vec<u8>>,
        chunk: Vec<u8>,
    },
}

/// A UDP socket or an ICE-TCP connection.
pub struct Link {
    kind: Kind,
    local: SocketAddr,
}

impl Link {
    /// Wraps a bound UDP socket.
    pub fn udp(sock: UdpSocket) -> io::Result<Link> {
        let local = sock.local_addr()?;
        Ok(Link {
            kind: Kind::Udp(sock),
            local,
        })
    }

    /// Connects to an ICE-TCP passive candidate. `recv_buffer` sets the socket's receive buffer
    /// (small values make a reader that pauses back the server up quickly, for tests).
    pub fn tcp(remote: SocketAddr, recv_buffer: Option<usize>) -> io::Result<Link> {
        let s = socket2::Socket::new(
            socket2::Domain::for_address(remote),
            socket2::Type::STREAM,
            None,
        )?;
        if let Some(n) = recv_buffer {
            s.set_recv_buffer_size(n)?;
        }
        s.connect_timeout(&remote.into(), Duration::from_secs(5))?;
        let stream: TcpStream = s.into();
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        Ok(Link {
            kind: Kind::Tcp {
                stream,
                remote,
                deframer: Deframer::default(),
                out: Vec::new(),
                pending: VecDeque::new(),
                chunk: vec![0; 64 * 1024],
            },
            local,
        })
    }

    pub fn local(&self) -> SocketAddr {
        self.local
    }

    pub fn protocol(&self) -> Protocol {
        match self.kind {
            Kind::Udp(_) => Protocol::Udp,
            Kind::Tcp { .. } => Protocol::Tcp,
        }
    }

    /// The host candidate to give str0m for this link.
    pub fn candidate(&self) -> Result<Candidate, str0m::error::IceError> {
        let proto = match self.kind {
            Kind::Udp(_) => "udp",
            Kind::Tcp { .. } => "tcp",
        };
        Candidate::host(self.local, proto)
    }

    /// `None`: reads return `WouldBlock` at once; `Some(d)`: they wait up to `d` (then
    /// `WouldBlock` or `TimedOut`). Writes to TCP stay buffered either way.
    pub fn set_wait(&self, wait: Option<Duration>) -> io::Result<()> {
        match (&self.kind, wait) {
            (Kind::Udp(s), None) => s.set_nonblocking(true),
            (Kind::Udp(s), Some(d)) => {
                s.set_nonblocking(false)?;
                s.set_read_timeout(Some(d))
            }
            (Kind::Tcp { stream, .. }, None) => stream.set_nonblocking(true),
            (Kind::Tcp { stream, .. }, Some(d)) => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(d))?;
                stream.set_write_timeout(Some(Duration::from_secs(1)))
            }
        }
    }

    /// Sends one packet to `to` (TCP: framed onto the connection, whatever `to` says).
    pub fn send(&mut self, to: SocketAddr, packet: &[u8]) -> io::Result<()> {
        match &mut self.kind {
            Kind::Udp(s) => s.send_to(packet, to).map(|_| ()),
            Kind::Tcp { out, .. } => {
                frame(packet, out).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                self.flush()
            }
        }
    }

    /// Writes what the TCP connection takes now of the queued frames.
    pub fn flush(&mut self) -> io::Result<()> {
        let Kind::Tcp { stream, out, .. } = &mut self.kind else {
            return Ok(());
        };
        while !out.is_empty() {
            match stream.write(out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    out.drain(..n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Receives one packet into `buf`: its length and source.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Kind::Tcp {
            stream,
            remote,
            deframer,
            pending,
            chunk,
            ..
        } = &mut self.kind
        else {
            return match &self.kind {
                Kind::Udp(s) => s.recv_from(buf),
                Kind::Tcp { .. } => Err(io::ErrorKind::Unsupported.into()),
            };
        };
        if pending.is_empty() {
            let n = stream.read(chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let mut input = chunk.get(..n).unwrap_or_default();
            loop {
                let (r, used) = deframer.next(input);
                input = input.get(used..).unwrap_or_default();
                match r {
                    Ok(Some(f)) if pending.len() < MAX_PENDING => pending.push_back(f.to_vec()),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
        }
        let Some(p) = pending.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let dst = buf
            .get_mut(..p.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "packet too long"))?;
        dst.copy_from_slice(&p);
        Ok((p.len(), *remote))
    }
}

/// The local address that reaches `server` (the host candidate to offer).
pub fn local_ip_towards(server: SocketAddr) -> io::Result<IpAddr> {
    if server.ip().is_loopback() {
        return Ok(server.ip());
    }
    let probe = UdpSocket::bind(SocketAddr::new(
        if server.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    ))?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}
