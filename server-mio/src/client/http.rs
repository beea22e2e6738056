//! The HTTP/1.1 client of WHIP, WHEP and the API: one request per connection (the server
//! closes after each response), bounded reads, chunked bodies joined.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::tls::TlsClient;
use super::url::Endpoint;

/// A minimal HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The largest response read.
const MAX_RESPONSE: u64 = 4 * 1024 * 1024;

/// One request on a fresh connection (the server closes after each response).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    exchange(&mut s, &addr.to_string(), method, path, headers, body)
}

/// One request to `to` (`http` or `https`; the latter through `tls`, which checks the
/// server's certificate against the URL's host) on a fresh connection.
pub fn request_to(
    to: &Endpoint,
    tls: Option<&TlsClient>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    if !to.tls {
        return request(to.addr, method, path, headers, body);
    }
    let own;
    let tls = match tls {
        Some(t) => t,
        None => {
            own = TlsClient::new(None).map_err(io::Error::other)?;
            &own
        }
    };
    let name = TlsClient::server_name(&to.host).map_err(io::Error::other)?;
    let conn = rustls::ClientConnection::new(tls.config.clone(), name).map_err(io::Error::other)?;
    let tcp = TcpStream::connect_timeout(&to.addr, Duration::from_secs(10))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let host = format!("{}:{}", to.host, to.addr.port());
    exchange(&mut s, &host, method, path, headers, body)
}

fn exchange(
    s: &mut impl ReadWrite,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    // Bounded: a response is an SDP answer or a small JSON document. A TLS peer that closes
    // without close_notify still gave its whole response (Connection: close).
    if let Err(e) = s.take(MAX_RESPONSE).read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(e);
        }
    }
    parse_response(&raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response"))
}

/// A byte stream both ways (plain TCP, or TLS over it).
trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Parses a whole HTTP/1.1 response.
pub fn parse_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(raw.get(..split)?);
    let mut lines = head.lines();
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw.get(split + 4..)?.to_vec();
    let chunked = headers.iter().any(|(k, v): &(String, String)| {
        k.eq_ignore_ascii_case("Transfer-Encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Joins a chunked body (RFC 9112 §7.1).
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(b.get(..eol)?).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = b.get(eol + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}
