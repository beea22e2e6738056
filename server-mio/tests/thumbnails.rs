//! Live thumbnails through the real server: an FTL stream and a WHIP stream each get a picture
//! that is their own keyframe (decoded back and compared with the fixture's keyframes decoded
//! here), at the stream's aspect ratio, that changes as the picture does; a stream of corrupt
//! H.264 gives none and disturbs nothing; the HTTP answers (304, HEAD, 404, placeholder); the
//! watch page's link-preview tags.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use ftl_proto::media::packetize::split_annexb;
use relay_core::VideoCodec;
use server_mio::thumbnail::picture;

/// The JPEGs this build makes of each keyframe of a fixture (what the server must serve).
fn fixture_thumbnails(video: &[u8]) -> Vec<Vec<u8>> {
    let nals = split_annexb(video);
    let mut out = Vec::new();
    let mut i = 0;
    while i < nals.len() {
        if nals[i].first().map(|b| b & 0x1f) == Some(7) {
            let unit: Vec<Vec<u8>> = nals[i..]
                .iter()
                .take_while(|n| n.first().map(|b| b & 0x1f) != Some(1))
                .map(|n| n.to_vec())
                .collect();
            i += unit.len();
            out.push(picture::make(VideoCodec::H264, &unit, 640).unwrap().jpeg);
        } else {
            i += 1;
        }
    }
    out
}

fn get_thumb(server: &TestServer, channel: u32, headers: &[(&str, &str)]) -> HttpResponse {
    http(
        server.addrs.http,
        "GET",
        &format!("/thumbnails/{channel}.jpg"),
        headers,
        b"",
    )
}

fn header<'a>(r: &'a HttpResponse, name: &str) -> Option<&'a str> {
    r.header(name)
}

/// A GET with a `Host` of our choosing; the whole answer as text.
fn get_with_host(server: &TestServer, path: &str, host: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(server.addrs.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits for a thumbnail of `channel` other than those in `seen`; returns it.
fn next_thumb(server: &TestServer, channel: u32, seen: &HashSet<Vec<u8>>) -> Vec<u8> {
    let mut got = None;
    server.wait_for(Duration::from_secs(15), |s| {
        let r = get_thumb(s, channel, &[]);
        if r.status == 200 && !seen.contains(&r.body) {
            got = Some(r.body);
            return true;
        }
        false
    });
    got.unwrap_or_else(|| panic!("no new thumbnail of channel {channel}"))
}

#[test]
fn ftl_and_whip_streams_get_their_own_keyframes_as_thumbnails() {
    let server = TestServer::start_with(|a| a.thumbnail_every = 1);
    let ftl = server.stream(77, VIDEO_640, Some(Duration::from_secs(30)));
    let whip = server.publish(88, VIDEO_A, Some(Duration::from_secs(30)));
    let expected_77 = fixture_thumbnails(VIDEO_640);
    let expected_88 = fixture_thumbnails(VIDEO_A);
    assert!(expected_77.len() >= 2 && expected_88.len() >= 2);
    for (channel, expected, size) in [
        (77, &expected_77, (640, 360)),
        (88, &expected_88, (320, 180)),
    ] {
        let mut seen = HashSet::new();
        for round in 0..2 {
            let jpeg = next_thumb(&server, channel, &seen);
            let img = image::load_from_memory(&jpeg).unwrap().to_rgb8();
            assert_eq!(
                img.dimensions(),
                size,
                "channel {channel}: the stream's size"
            );
            assert!(
                expected.contains(&jpeg),
                "channel {channel}: round {round}: the thumbnail is not one of the stream's keyframes"
            );
            seen.insert(jpeg);
        }
        // Two different pictures: the thumbnail follows the stream.
        assert_eq!(seen.len(), 2);
        let info = stream_info(&server, channel).unwrap();
        let url = info["thumbnail"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("/thumbnails/{channel}.jpg?v=")),
            "{url}"
        );
        assert_eq!(info["thumbnail_width"], size.0);
        assert_eq!(info["thumbnail_height"], size.1);
    }
    assert!(server.metric("itg_thumbnails_total") >= 4.0);
    assert_eq!(server.metric("itg_thumbnail_failures_total"), 0.0);

    // Revalidation, HEAD, and the end of the stream.
    let r = get_thumb(&server, 77, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "Content-Type"), Some("image/jpeg"));
    assert_eq!(header(&r, "Cache-Control"), Some("public, max-age=5"));
    let etag = header(&r, "ETag").unwrap().to_owned();
    let again = get_thumb(&server, 77, &[("If-None-Match", &etag)]);
    // The picture may have moved on in between: then it is a new one, with a new tag.
    match again.status {
        304 => assert!(again.body.is_empty()),
        200 => assert_ne!(header(&again, "ETag"), Some(etag.as_str())),
        s => panic!("revalidation answered {s}"),
    }
    let head = http(server.addrs.http, "HEAD", "/thumbnails/77.jpg", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert!(
        header(&head, "Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap()
            > 1000
    );

    ftl.stop().unwrap();
    whip.stop().unwrap();
    assert!(server.wait_for(Duration::from_secs(10), |s| {
        get_thumb(s, 77, &[]).status == 404 && get_thumb(s, 88, &[]).status == 404
    }));
    let r = get_thumb(&server, 77, &[]);
    assert!(String::from_utf8_lossy(&r.body).contains("not live"));
}

/// The fixture with every slice's bytes scrambled after its NAL header: parameter sets intact,
/// so the relay sees keyframes and caches them, but nothing decodes.
fn corrupt(video: &[u8]) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_u32;
    let mut out = Vec::new();
    for nal in split_annexb(video) {
        let mut nal = nal.to_vec();
        if matches!(nal.first().map(|b| b & 0x1f), Some(1 | 5)) {
            for b in nal.iter_mut().skip(1) {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed as u8;
            }
        }
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(&nal);
    }
    out
}

#[test]
fn corrupt_h264_gives_no_thumbnail_and_disturbs_nothing() {
    let server = TestServer::start_with(|a| a.thumbnail_every = 1);
    let bad: &'static [u8] = Box::leak(corrupt(VIDEO_A).into_boxed_slice());
    let broken = server.stream(77, bad, Some(Duration::from_secs(30)));
    let good = server.stream(88, VIDEO_A, Some(Duration::from_secs(30)));
    assert!(
        server.wait_for(Duration::from_secs(15), |s| s
            .metric("itg_thumbnail_failures_total")
            >= 2.0),
        "the corrupt stream's keyframes were tried"
    );
    let r = get_thumb(&server, 77, &[]);
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("no thumbnail yet"));
    assert_eq!(header(&r, "Retry-After"), Some("2"));
    // The placeholder stands in when asked for.
    let p = http(
        server.addrs.http,
        "GET",
        "/thumbnails/77.jpg?fallback=placeholder",
        &[],
        b"",
    );
    assert_eq!(p.status, 200);
    let img = image::load_from_memory(&p.body).unwrap();
    assert_eq!((img.width(), img.height()), (640, 360));
    // The other stream's thumbnail is its own picture; both streams stay live.
    let good_thumb = next_thumb(&server, 88, &HashSet::new());
    assert!(fixture_thumbnails(VIDEO_A).contains(&good_thumb));
    assert!(stream_info(&server, 77).is_some());
    let stats = good.stop().unwrap();
    assert!(stats.video_packets > 0);
    broken.stop().unwrap();
}

#[test]
fn bad_thumbnail_requests_get_clear_answers() {
    let server = TestServer::start_with(|a| a.thumbnail_every = 1);
    for path in [
        "/thumbnails/77.png",
        "/thumbnails/x.jpg",
        "/thumbnails/.jpg",
        "/thumbnails/99999999999999.jpg",
        "/thumbnails/77.jpg.jpg",
    ] {
        let r = http(server.addrs.http, "GET", path, &[], b"");
        assert_eq!(r.status, 404, "{path}");
    }
    let r = get_thumb(&server, 77, &[]);
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("not live"));
    let off = TestServer::start_with(|a| a.thumbnail_every = 0);
    let s = off.stream(77, VIDEO_A, Some(Duration::from_secs(10)));
    assert!(off.wait_for(Duration::from_secs(5), |s| stream_info(s, 77).is_some()));
    let r = get_thumb(&off, 77, &[]);
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("thumbnails are off"));
    s.stop().unwrap();
}

#[test]
fn the_watch_page_carries_link_preview_tags() {
    let server = TestServer::start_with(|a| {
        a.thumbnail_every = 1;
        a.public_url = Some("https://live.example.test/".into());
    });
    let s = server.stream(77, VIDEO_640, Some(Duration::from_secs(20)));
    assert!(
        server.wait_for(Duration::from_secs(15), |s| get_thumb(s, 77, &[]).status
            == 200)
    );
    let (status, page) = server.get("/watch/77");
    assert_eq!(status, 200);
    for tag in [
        r#"<meta property="og:image" content="https://live.example.test/thumbnails/77.jpg?fallback=placeholder">"#,
        r#"<meta property="og:image:width" content="640">"#,
        r#"<meta property="og:image:height" content="360">"#,
        r#"<meta property="og:url" content="https://live.example.test/watch/77">"#,
        r#"<meta property="og:video" content="https://live.example.test/watch/77">"#,
        r#"<meta property="og:video:secure_url" content="https://live.example.test/watch/77">"#,
        r#"<meta name="twitter:card" content="summary_large_image">"#,
        r#"<meta property="og:title" content="Channel 77 (live)">"#,
    ] {
        assert!(page.contains(tag), "missing {tag} in\n{page}");
    }
    assert!(page.contains("Live now · 640x360"));
    // The charset stays first in the head.
    let head = page.split("<head>").nth(1).unwrap();
    assert!(head.trim_start().starts_with(r#"<meta charset="utf-8">"#));
    // An offline channel: a summary card, no picture.
    let (_, offline) = server.get("/watch/88");
    assert!(offline.contains(r#"<meta property="og:description" content="Offline">"#));
    assert!(!offline.contains("og:image"));
    s.stop().unwrap();

    // Without --public-url the URLs are built from Host; a Host with odd bytes is not used.
    let plain = TestServer::start_with(|a| a.thumbnail_every = 1);
    let page = get_with_host(&plain, "/watch/88", "watch.example.test:8080");
    assert!(page.contains(r#"content="http://watch.example.test:8080/watch/88""#));
    let page = get_with_host(&plain, "/watch/88", "x\"><script>alert(1)</script>");
    assert!(page.contains("200 OK"));
    assert!(!page.contains("<script>alert"));
    assert!(page.contains(r#"<meta property="og:url" content="/watch/88">"#));
}
