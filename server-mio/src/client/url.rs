//! WHIP and WHEP endpoints as URLs: where to connect and what path to ask for.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

/// A URL that is not a plain `http://host[:port]/path`, or a host that does not resolve.
#[derive(Debug)]
pub enum UrlError {
    /// Not `http://host[:port]/path`.
    Bad(String),
    /// The host did not resolve.
    Resolve(io::Error),
}

impl std::fmt::Display for UrlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlError::Bad(u) => write!(f, "not an http:// URL: {u}"),
            UrlError::Resolve(e) => write!(f, "cannot resolve the host: {e}"),
        }
    }
}

impl std::error::Error for UrlError {}

/// Where a URL points: the address to connect to, the host name (TLS checks the
/// certificate against it), the path with its query, and whether it is `https`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    pub tls: bool,
}

/// Parses an `http://` or `https://` URL and resolves its host.
pub fn endpoint(url: &str) -> Result<Endpoint, UrlError> {
    let u = url::Url::parse(url).map_err(|_| UrlError::Bad(url.into()))?;
    let tls = match u.scheme() {
        "http" => false,
        "https" => true,
        _ => return Err(UrlError::Bad(url.into())),
    };
    let host = u.host_str().ok_or_else(|| UrlError::Bad(url.into()))?;
    let port = u
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let addr = (host.trim_matches(['[', ']']), port)
        .to_socket_addrs()
        .map_err(UrlError::Resolve)?
        .next()
        .ok_or_else(|| UrlError::Bad(url.into()))?;
    let mut path = u.path().to_owned();
    if let Some(q) = u.query() {
        path = format!("{path}?{q}");
    }
    Ok(Endpoint {
        addr,
        host: host.to_owned(),
        path,
        tls,
    })
}

/// Splits a plain `http://host:port/path` into a socket address and the path.
pub fn split_url(url: &str) -> Result<(SocketAddr, String), UrlError> {
    let e = endpoint(url)?;
    if e.tls {
        return Err(UrlError::Bad(url.into()));
    }
    Ok((e.addr, e.path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_split_into_address_and_path() {
        let (a, p) = split_url("http://127.0.0.1:8080/whip/77?x=1").unwrap();
        assert_eq!(a, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(p, "/whip/77?x=1");
        let (a, _) = split_url("http://[::1]/whep/1").unwrap();
        assert_eq!(a, "[::1]:80".parse().unwrap());
        assert!(matches!(split_url("ftp://x/y"), Err(UrlError::Bad(_))));
        assert!(matches!(
            split_url("https://127.0.0.1/y"),
            Err(UrlError::Bad(_))
        ));
        let e = endpoint("https://127.0.0.1/whep/1").unwrap();
        assert_eq!(
            (e.addr.port(), e.tls, e.host.as_str()),
            (443, true, "127.0.0.1")
        );
        assert_eq!(endpoint("http://[::1]:9/x").unwrap().host, "[::1]");
        assert!(matches!(split_url("not a url"), Err(UrlError::Bad(_))));
    }
}
