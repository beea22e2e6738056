//! TLS for the client side (rustls): the edge's pull of an origin over `https://`, the key
//! service and event sink, the tools. One way to build the client configuration: the bundled
//! Mozilla roots, plus the PEM certificates of a private CA when one is given
//! (`--cluster-ca`, `--auth-ca`), so a private cluster's own CA is trusted and nothing else
//! is weakened.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// A client configuration: whom it trusts.
#[derive(Clone, Debug)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
}

impl TlsClient {
    /// Trusts the bundled Mozilla roots, plus the PEM certificates in `ca_file` if given.
    pub fn new(ca_file: Option<&Path>) -> Result<TlsClient, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
            let mut n = 0;
            for c in CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))? {
                roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
                n += 1;
            }
            if n == 0 {
                return Err(bad(&"no certificate in it"));
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsClient {
            config: Arc::new(config),
        })
    }

    /// The name a server's certificate must carry (a DNS name or an IP address).
    pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(host.to_owned()).map_err(|e| format!("TLS name {host:?}: {e}"))
    }
}
