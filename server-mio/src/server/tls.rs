//! TLS on the HTTP port (`--tls-cert`, `--tls-key`): rustls driven by hand over the mio
//! socket, so a handshake is one more non-blocking read like any other, under the same
//! deadline and limits as a plain request. The certificate pair is re-read when either file
//! changes (a renewal needs no restart); a pair that does not load keeps the one in force.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{error, info};
use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use crate::file_stamp::FileStamp;

/// A connection of the HTTP port: plain, or TLS over the same socket.
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub(super) struct TlsStream {
    sock: TcpStream,
    conn: ServerConnection,
}

impl Transport {
    pub(super) fn tls(sock: TcpStream, config: Arc<ServerConfig>) -> io::Result<Transport> {
        let conn = ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Transport::Tls(Box::new(TlsStream { sock, conn })))
    }

    /// The socket, to register with the poll.
    pub(super) fn socket(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.sock,
        }
    }

    /// Whether TLS records wait for the socket to take them (then: wait for writable).
    pub(super) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Pushes pending TLS records to the socket, as far as it takes them.
    pub(super) fn flush_tls(&mut self) -> io::Result<()> {
        if let Transport::Tls(t) = self {
            t.push()?;
        }
        Ok(())
    }

    pub(super) fn shutdown(&mut self) {
        if let Transport::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.push();
        }
        let _ = self.socket().shutdown(std::net::Shutdown::Both);
    }
}

impl TlsStream {
    fn push(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Transport::Plain(s) => return s.read(buf),
            Transport::Tls(t) => t,
        };
        loop {
            match t.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext yet: take more records from the socket (the handshake too).
            match t.conn.read_tls(&mut t.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    let processed = t.conn.process_new_packets();
                    // Handshake replies, or the alert that says why it failed.
                    let _ = t.push();
                    processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = match self {
            Transport::Plain(s) => return s.write(buf),
            Transport::Tls(t) => t,
        };
        let n = t.conn.writer().write(buf)?;
        t.push()?;
        if n == 0 && !buf.is_empty() {
            // rustls's buffer is full until the socket takes records.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.push(),
        }
    }
}

/// The certificate pair in force and where it came from.
pub(super) struct Certs {
    cert: PathBuf,
    key: PathBuf,
    stamp: Option<(FileStamp, FileStamp)>,
    pub(super) config: Arc<ServerConfig>,
}

/// Loads a PEM chain and key (PKCS#8, PKCS#1 RSA or SEC1 EC) into a server configuration.
pub(super) fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a pair: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Certs {
    pub(super) fn open(cert: &Path, key: &Path) -> Result<Certs, String> {
        let stamp = FileStamp::of(cert).zip(FileStamp::of(key));
        Ok(Certs {
            config: load(cert, key)?,
            cert: cert.to_owned(),
            key: key.to_owned(),
            stamp,
        })
    }

    /// Re-reads the pair if either file changed: `Ok(true)` when a new pair is in force,
    /// `Err` (the old pair stays) when the new files do not load.
    pub(super) fn refresh(&mut self) -> Result<bool, String> {
        let now = FileStamp::of(&self.cert).zip(FileStamp::of(&self.key));
        if now == self.stamp {
            return Ok(false);
        }
        self.stamp = now;
        self.config = load(&self.cert, &self.key)?;
        Ok(true)
    }
}

impl super::Server {
    /// A renewed certificate pair serves the next connections; one that does not load keeps
    /// the pair in force.
    pub(super) fn tls_refresh(&mut self) {
        let Some(certs) = self.certs.as_mut() else {
            return;
        };
        match certs.refresh() {
            Ok(false) => {}
            Ok(true) => {
                self.counters.tls_reloads += 1;
                info!("TLS: a new certificate pair is in force");
            }
            Err(e) => {
                self.counters.tls_reload_errors += 1;
                error!("TLS: {e}; the certificate in force stays");
            }
        }
    }
}
