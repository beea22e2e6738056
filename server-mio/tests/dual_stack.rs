//! Both address families at once: the default bind (`::`) serves IPv4 and IPv6 clients on the
//! same ports, WHEP answers carry candidates of both, and per-address rules count an IPv6
//! host by its /64. Each test runs in a fresh network namespace of its own (loopback only).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use server_mio::tools::client::stream;

fn on(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

#[test]
fn an_ipv4_and_an_ipv6_viewer_watch_one_stream_over_the_default_bind() {
    if !in_private_netns("an_ipv4_and_an_ipv6_viewer_watch_one_stream_over_the_default_bind") {
        return;
    }
    let server = TestServer::start_with(|a| a.addr = "::".parse().unwrap());
    let (ftl, http) = (server.addrs.ftl.port(), server.addrs.http.port());
    // The publisher over IPv6, the viewers over one family each.
    let opts = ftl_options(
        on("::1", ftl),
        &server.key(77),
        VIDEO_A,
        Some(Duration::from_secs(8)),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let publisher = std::thread::spawn(move || stream(&opts, &s));
    assert!(server.wait_for(Duration::from_secs(5), |s| stream_info(s, 77).is_some()));
    let mut v4 = Viewer::whep(on("127.0.0.1", http), 77).unwrap();
    let mut v6 = Viewer::whep(on("::1", http), 77).unwrap();
    let answer = v4.remote_sdp.clone().unwrap();
    let candidates: Vec<&str> = answer
        .lines()
        .filter(|l| l.starts_with("a=candidate"))
        .collect();
    eprintln!("the answer's candidates: {candidates:#?}");
    assert!(
        candidates.iter().any(|c| c.contains(" 127.0.0.1 ")),
        "no IPv4 candidate"
    );
    assert!(
        candidates.iter().any(|c| c.contains(" ::1 ")),
        "no IPv6 candidate"
    );
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < end && (v4.video_count < 60 || v6.video_count < 60) {
        let _ = v4.step();
        let _ = v6.step();
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = publisher.join();
    eprintln!(
        "IPv4 viewer: {} video, {} lost; IPv6 viewer: {} video, {} lost",
        v4.video_count,
        v4.video_lost(),
        v6.video_count,
        v6.video_lost()
    );
    assert!(v4.video_count >= 60 && v6.video_count >= 60);
    assert_eq!(v4.video_lost() + v6.video_lost(), 0);
    // The FTL port takes IPv4 too, and tells the peer's address in IPv4 form.
    let mut s = TcpStream::connect(on("127.0.0.1", ftl)).unwrap();
    s.write_all(b"HMAC\r\n\r\n").unwrap();
    let mut b = [0u8; 64];
    assert!(s.read(&mut b).unwrap() > 0);
}

/// A WHEP `POST` from `from` to `to`; returns the status line.
fn whep_post(from: &str, to: SocketAddr, offer: &str) -> String {
    let local: SocketAddr = format!("[{from}]:0").parse().unwrap();
    let sock = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
    sock.bind(&local.into()).unwrap();
    sock.connect(&to.into()).unwrap();
    let mut s: TcpStream = sock.into();
    let req = format!(
        "POST /whep/77 HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{offer}",
        offer.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn two_ipv6_addresses_in_one_64_share_a_cap() {
    if !in_private_netns("two_ipv6_addresses_in_one_64_share_a_cap") {
        return;
    }
    for a in ["fd00:77::1/64", "fd00:77::2/64", "fd00:78::1/64"] {
        let ok = std::process::Command::new("ip")
            .args(["-6", "addr", "add", a, "dev", "lo", "nodad"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip addr add {a}");
    }
    let server = TestServer::start_with(|a| {
        a.addr = "::".parse().unwrap();
        a.max_pending_per_address = 2;
        a.offer_rate = 0.0;
    });
    let http = on("::1", server.addrs.http.port());
    let offer = {
        let mut rtc = str0m::Rtc::builder()
            .set_rtp_mode(true)
            .build(std::time::Instant::now());
        let mut api = rtc.sdp_api();
        api.add_media(
            str0m::media::MediaKind::Video,
            str0m::media::Direction::RecvOnly,
            None,
            None,
            None,
        );
        let (o, _) = api.apply().unwrap();
        o.to_sdp_string()
    };
    // Two offers from one address of fd00:77::/64, then one from another address of it.
    assert!(whep_post("fd00:77::1", http, &offer).contains(" 201 "));
    assert!(whep_post("fd00:77::1", http, &offer).contains(" 201 "));
    let third = whep_post("fd00:77::2", http, &offer);
    assert!(third.contains(" 429 "), "{third}");
    // Another /64 is not affected.
    assert!(whep_post("fd00:78::1", http, &offer).contains(" 201 "));
    assert_eq!(server.metric("itg_offers_pending_capped_total"), 1.0);
}
