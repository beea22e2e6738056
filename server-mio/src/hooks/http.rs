//! One HTTP/1.1 exchange on a non-blocking socket: connect, send, read the whole response
//! (`Connection: close`), bounded in size and time. Driven by the server's poll loop.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use super::conn::{Conn, Tls};

/// Most bytes of a service's response.
pub const MAX_RESPONSE: usize = 64 * 1024;

/// A response from the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

/// An exchange in progress.
pub struct Exchange {
    pub stream: Conn,
    request: Vec<u8>,
    sent: usize,
    response: Vec<u8>,
    pub deadline: Instant,
}

/// How an exchange ended, when it did.
#[derive(Debug)]
pub enum Progress {
    Pending,
    Done(Reply),
    Failed(String),
}

impl Exchange {
    /// Starts connecting to `addr` to send `method path` with an optional JSON body.
    pub fn start(
        addr: SocketAddr,
        tls: Option<&Tls>,
        host: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        deadline: Instant,
    ) -> io::Result<Exchange> {
        let stream = Conn::connect(addr, tls)?;
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: itg\r\nAccept: application/json, text/plain\r\nConnection: close\r\n"
        )
        .into_bytes();
        match body {
            Some(b) => {
                request.extend_from_slice(
                    format!(
                        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    )
                    .as_bytes(),
                );
                request.extend_from_slice(b);
            }
            None => request.extend_from_slice(b"Content-Length: 0\r\n\r\n"),
        }
        Ok(Exchange {
            stream,
            request,
            sent: 0,
            response: Vec::new(),
            deadline,
        })
    }

    /// Makes what progress the socket allows.
    pub fn progress(&mut self) -> Progress {
        match self.stream.connected() {
            Ok(true) => {}
            Ok(false) => return Progress::Pending,
            Err(e) => return Progress::Failed(e.to_string()),
        }
        while self.sent < self.request.len() {
            match self
                .stream
                .write(self.request.get(self.sent..).unwrap_or_default())
            {
                Ok(0) => return Progress::Failed("connection closed while sending".into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                // Not connected yet: writable readiness will come.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Progress::Failed(e.to_string()),
            }
        }
        let mut buf = [0u8; 8192];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return parse(&self.response),
                Ok(n) => {
                    self.response
                        .extend_from_slice(buf.get(..n).unwrap_or_default());
                    if self.response.len() > MAX_RESPONSE {
                        return Progress::Failed("response too large".into());
                    }
                    // A complete response with Content-Length needs no EOF.
                    if let Progress::Done(r) = parse(&self.response) {
                        return Progress::Done(r);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Progress::Pending,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Progress::Failed(e.to_string()),
            }
        }
    }
}

/// A complete response, or `Failed` for one that cannot become complete.
pub(crate) fn parse(raw: &[u8]) -> Progress {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Progress::Failed("incomplete response".into()),
        Err(e) => return Progress::Failed(format!("malformed response: {e}")),
    };
    let status = resp.code.unwrap_or(0);
    let length = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("Content-Length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body = raw.get(head..).unwrap_or_default();
    match length {
        Some(n) if body.len() >= n => Progress::Done(Reply {
            status,
            body: body.get(..n).unwrap_or_default().to_vec(),
        }),
        Some(_) => Progress::Failed("incomplete response".into()),
        None => Progress::Done(Reply {
            status,
            body: body.to_vec(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"),
            Progress::Done(Reply { status: 200, .. })
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"),
            Progress::Failed(_)
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 404 Not Found\r\n\r\nno"),
            Progress::Done(Reply { status: 404, .. })
        ));
        assert!(matches!(parse(b"garbage"), Progress::Failed(_)));
        assert!(matches!(parse(b"HTTP/1.1 200"), Progress::Failed(_)));
    }
}
