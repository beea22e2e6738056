//! A connection to the service: plain TCP, or TLS (rustls) over it for https:// and wss://.
//! Both are non-blocking: reads and writes return `WouldBlock` and resume on readiness.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::client::tls::TlsClient;

use super::HookError;

/// TLS settings for one service: the client configuration and the name to verify.
#[derive(Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

impl Tls {
    /// Trusts the bundled Mozilla roots, plus the PEM certificates in `ca_file` if given.
    pub fn new(host: &str, ca_file: Option<&Path>) -> Result<Tls, HookError> {
        let client = TlsClient::new(ca_file).map_err(|e| HookError(format!("--auth-ca {e}")))?;
        let name = TlsClient::server_name(host).map_err(HookError)?;
        Ok(Tls {
            config: client.config,
            name,
        })
    }
}

/// A non-blocking connection, with or without TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    /// Starts connecting (the TCP connect completes on writable readiness).
    pub fn connect(addr: SocketAddr, tls: Option<&Tls>) -> io::Result<Conn> {
        let tcp = TcpStream::connect(addr)?;
        Ok(match tls {
            None => Conn::Plain(tcp),
            Some(t) => {
                let conn = ClientConnection::new(t.config.clone(), t.name.clone())
                    .map_err(io::Error::other)?;
                Conn::Tls(Box::new(StreamOwned::new(conn, tcp)))
            }
        })
    }

    /// The TCP socket, for registration and connect status.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => &mut s.sock,
        }
    }

    /// Whether the TCP connect finished (`Err` when it failed).
    pub fn connected(&mut self) -> io::Result<bool> {
        let tcp = self.tcp();
        if let Some(e) = tcp.take_error()? {
            return Err(e);
        }
        match tcp.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}
