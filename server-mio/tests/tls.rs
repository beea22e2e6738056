//! TLS on the HTTP port: pages, the API, WHEP and the WebSocket over one certificate made in
//! the test; a renewed certificate serves the next connection, a bad pair keeps the old one;
//! garbage and stalled handshakes are closed; the redirect port sends plain http to https.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::{CertificateDer, ServerName};

/// A self-signed certificate for 127.0.0.1 written as PEM files; returns (cert, key, DER).
fn make_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key, ck.cert.der().to_vec())
}

/// Accepts any server certificate and records it (the tests compare which one is served).
#[derive(Debug)]
struct Recorder(
    Arc<std::sync::Mutex<Vec<u8>>>,
    Arc<rustls::crypto::CryptoProvider>,
);

impl rustls::client::danger::ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = end_entity.to_vec();
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.1.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.1.signature_verification_algorithms.supported_schemes()
    }
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection to `addr`; returns it and the certificate the server presented.
fn connect(addr: SocketAddr) -> (Tls, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Recorder(seen.clone(), provider)))
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("127.0.0.1").unwrap().to_owned(),
    )
    .unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let cert = seen.lock().unwrap().clone();
    (tls, cert)
}

/// One request over TLS: status line, head and body as text.
fn https(addr: SocketAddr, request: &str) -> String {
    let (mut tls, _) = connect(addr);
    tls.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn tls_server(dir: &Path) -> (TestServer, PathBuf, PathBuf, Vec<u8>) {
    let (cert, key, der) = make_cert(dir, "a");
    let (c, k) = (cert.clone(), key.clone());
    let server = TestServer::start_with(move |a| {
        a.tls_cert = Some(c);
        a.tls_key = Some(k);
        a.http_redirect_port = Some(0);
    });
    (server, cert, key, der)
}

const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=recvonly\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\na=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";

#[test]
fn pages_api_whep_and_websocket_over_tls() {
    let dir = scratch_path("itg-tls");
    let (server, _, _, der) = tls_server(&dir);
    let addr = server.addrs.http;
    let (_, cert) = connect(addr);
    assert_eq!(cert, der, "not the configured certificate");

    let page = https(addr, "GET /watch/77 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("<video"),
        "{page}"
    );
    let api = https(addr, "GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        api.starts_with("HTTP/1.1 200") && api.contains("\"streams\""),
        "{api}"
    );
    let metrics = https(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(metrics.contains("itg_http_requests_total"), "{metrics}");
    let whep = https(
        addr,
        &format!(
            "POST /whep/77 HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        ),
    );
    assert!(
        whep.starts_with("HTTP/1.1 201") && whep.contains("a=ice-lite"),
        "{whep}"
    );

    // wss: the upgrade, then the server's first message.
    let (mut tls, _) = connect(addr);
    tls.write_all(
        b"GET /websocket?channel=77 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut ws =
        tungstenite::WebSocket::from_raw_socket(tls, tungstenite::protocol::Role::Client, None);
    let first = ws.read().unwrap();
    assert!(first.to_text().unwrap().contains("\"stream\""), "{first:?}");
    let offer = ws.read().unwrap();
    assert!(offer.to_text().unwrap().contains("\"offer\""), "{offer:?}");

    // The redirect port sends plain http to https, path and query kept.
    let r = try_http(
        server.addrs.redirect.unwrap(),
        "GET",
        "/watch/77?x=1",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("Location"),
        Some(format!("https://{}:{}/watch/77?x=1", addr.ip(), addr.port()).as_str())
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_renewed_certificate_serves_the_next_connection_and_a_bad_pair_keeps_the_old() {
    let dir = scratch_path("itg-tls-renew");
    let (server, cert, key, first) = tls_server(&dir);
    let addr = server.addrs.http;
    // Renewal: both files replaced (as certbot's deploy does).
    let (new_cert, new_key, second) = make_cert(&dir, "b");
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    let t = Instant::now();
    while connect(addr).1 != second {
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "the renewed certificate is not served"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_ne!(first, second);
    // A bad pair: a new certificate with the old key.
    let (third_cert, _, third) = make_cert(&dir, "c");
    std::fs::copy(&third_cert, &cert).unwrap();
    assert!(server.wait_for(Duration::from_secs(3), |s| s
        .metric_tls("itg_tls_reload_errors_total")
        >= 1.0));
    assert_eq!(connect(addr).1, second, "a bad pair replaced the good one");
    assert_ne!(connect(addr).1, third);
    // Garbage in the key file is no better.
    std::fs::write(&key, b"-----BEGIN PRIVATE KEY-----\nnot base64\n").unwrap();
    assert!(server.wait_for(Duration::from_secs(3), |s| s
        .metric_tls("itg_tls_reload_errors_total")
        >= 2.0));
    assert_eq!(connect(addr).1, second);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_rsa_key_from_openssl_works() {
    let dir = scratch_path("itg-tls-rsa");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("rsa.crt"), dir.join("rsa.key"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed for this test");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let (c, k) = (cert.clone(), key.clone());
    let server = TestServer::start_with(move |a| {
        a.tls_cert = Some(c);
        a.tls_key = Some(k);
    });
    let api = https(
        server.addrs.http,
        "GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(api.starts_with("HTTP/1.1 200"), "{api}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn garbage_and_stalled_handshakes_are_closed_and_disturb_nothing() {
    let dir = scratch_path("itg-tls-bad");
    let (server, _, _, _) = tls_server(&dir);
    let addr = server.addrs.http;
    let streamer = server.stream(77, VIDEO_A, Some(Duration::from_secs(20)));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info_tls(s).is_some()));
    // Plain http to the TLS port: closed.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "plain http was served"
    );
    // Random bytes: closed.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7])
        .unwrap();
    let mut rest = Vec::new();
    let _ = junk.read_to_end(&mut rest);
    // A handshake that stalls (half a ClientHello) is cut at the request deadline.
    let t = Instant::now();
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(14),
        "{took:?}"
    );
    // The stream and the TLS port are fine.
    assert!(stream_info_tls(&server).is_some());
    // The `keys` command sees the live channel of a TLS server too (no network involved).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_server-mio"))
        .args(["keys", "list", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.lines()
            .any(|l| l.starts_with("77\t") && l.ends_with("live (ftl)")),
        "{list}"
    );
    assert!(https(addr, "GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200"));
    assert!(server.metric_tls("itg_http_errors_total") >= 2.0);
    streamer.stop().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// Channel 77's `/api/streams` entry, over TLS.
fn stream_info_tls(server: &TestServer) -> Option<serde_json::Value> {
    let r = https(
        server.addrs.http,
        "GET /api/streams HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let body = r.split_once("\r\n\r\n")?.1;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["streams"]
        .as_array()?
        .iter()
        .find(|s| s["channel"] == 77 && s["live"] == true)
        .cloned()
}

trait MetricTls {
    fn metric_tls(&self, name: &str) -> f64;
}

impl MetricTls for TestServer {
    fn metric_tls(&self, name: &str) -> f64 {
        let r = https(self.addrs.http, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        r.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }
}
