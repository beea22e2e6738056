//! A connection to the service: plain TCP, or TLS (rustls) over it for https:// and wss://.
//! Both are non-blocking: reads and writes return `WouldBlock` and resume on readiness.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

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
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| HookError(format!("--auth-ca {}: {e}", path.display())))?;
            for c in certs {
                let c = c.map_err(|e| HookError(format!("--auth-ca {}: {e}", path.display())))?;
                roots
                    .add(c)
                    .map_err(|e| HookError(format!("--auth-ca {}: {e}", path.display())))?;
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HookError(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| HookError(format!("TLS name {host:?}: {e}")))?;
        Ok(Tls {
            config: Arc::new(config),
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
