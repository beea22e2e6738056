//! The cluster directory with a real `redis-server` on loopback: nodes register, see each
//! other and each other's streams, leave at once when stopped and by TTL when killed; Redis
//! going away mid-stream disturbs nothing local, and the node registers again when it is back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A `redis-server` of the test's own, on a free loopback port; stopped when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is needed");
        let r = Redis { child, port };
        let up = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            r.connection().is_some()
        });
        assert!(up, "redis-server did not start");
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn connection(&self) -> Option<redis::Connection> {
        let c = redis::Client::open(self.url()).ok()?;
        let mut con = c.get_connection_with_timeout(Duration::from_secs(1)).ok()?;
        redis::cmd("PING").query::<String>(&mut con).ok()?;
        Some(con)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server binary as a node of its own process (to be killed), on loopback.
fn spawn_node(data_dir: &std::path::Path, http_port: u16, extra: &[&str]) -> Child {
    server_command(data_dir, http_port)
        .args(extra)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn node(redis: &Redis) -> TestServer {
    let url = redis.url();
    TestServer::start_with(move |a| a.cluster = Some(url))
}

fn streams(server: &TestServer) -> Value {
    serde_json::from_str(&server.get("/api/streams").1).unwrap()
}

fn entry(v: &Value, channel: u64) -> Value {
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["channel"].as_u64() == Some(channel))
        .cloned()
        .unwrap_or(Value::Null)
}

fn url_of(server: &TestServer) -> String {
    format!("http://{}", server.addrs.http)
}

#[test]
fn nodes_see_each_other_and_each_others_streams_and_leave_when_stopped() {
    let redis = Redis::start();
    let mut events = redis.connection().unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut pubsub = events.as_pubsub();
    pubsub.subscribe("itg:events").unwrap();
    let a = node(&redis);
    let b = node(&redis);
    assert!(b.wait_for(Duration::from_secs(5), |b| {
        streams(b)["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    }));
    let view = streams(&b);
    assert_eq!(view["cluster"]["redis_up"], true);
    let urls: Vec<&str> = view["cluster"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["url"].as_str().unwrap())
        .collect();
    assert!(urls.contains(&url_of(&a).as_str()) && urls.contains(&url_of(&b).as_str()));
    assert_eq!(b.metric("itg_cluster_nodes"), 2.0);
    assert_eq!(b.metric("itg_cluster_redis_up"), 1.0);
    // A stream on A is live in B's view, with A as its origin.
    let _streamer = a.stream(77, VIDEO_A, Some(Duration::from_secs(30)));
    let t0 = Instant::now();
    assert!(b.wait_for(Duration::from_secs(5), |b| {
        entry(&streams(b), 77)["origin"]["url"] == url_of(&a).as_str()
    }));
    let seen_after = t0.elapsed();
    let e = entry(&streams(&b), 77);
    assert_eq!(e["live"], true);
    assert_eq!(e["live_here"], false);
    assert_eq!(e["origin"]["protocol"], "ftl");
    // Announced on pub/sub.
    let msg: String = pubsub.get_message().unwrap().get_payload().unwrap();
    let ev: Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(
        (ev["event"].as_str(), ev["channel"].as_u64()),
        (Some("start"), Some(77))
    );
    assert_eq!(ev["url"], url_of(&a).as_str());
    // A stops cleanly: it leaves the directory at once, not at the TTL.
    let t1 = Instant::now();
    drop(a);
    assert!(b.wait_for(Duration::from_secs(3), |b| {
        let v = streams(b);
        v["cluster"]["nodes"].as_array().map(Vec::len) == Some(1)
            && entry(&v, 77)["live"] == false
            && entry(&v, 77)["origin"].is_null()
    }));
    let msg: String = pubsub.get_message().unwrap().get_payload().unwrap();
    let ev: Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(
        (ev["event"].as_str(), ev["channel"].as_u64()),
        (Some("stop"), Some(77))
    );
    eprintln!(
        "stream seen by the other node after {} ms; a stopped node gone after {} ms",
        seen_after.as_millis(),
        t1.elapsed().as_millis()
    );
}

#[test]
fn a_killed_node_leaves_the_directory_by_its_ttl() {
    let redis = Redis::start();
    let data_dir = scratch_path("itg-cluster-kill");
    let mut child = spawn_node(
        &data_dir,
        0,
        &[
            "--cluster",
            &redis.url(),
            "--node-url",
            "http://killed.example:8080",
        ],
    );
    let b = node(&redis);
    let count = |b: &TestServer| {
        streams(b)["cluster"]["nodes"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(b.wait_for(Duration::from_secs(10), |b| count(b) == 2));
    child.kill().unwrap(); // SIGKILL: no goodbye
    child.wait().unwrap();
    let t = Instant::now();
    assert!(b.wait_for(Duration::from_secs(10), |b| count(b) == 1));
    let gone = t.elapsed();
    eprintln!(
        "a killed node left the directory after {} ms",
        gone.as_millis()
    );
    assert!(gone >= Duration::from_secs(2), "gone too soon: not by TTL?");
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn redis_going_away_disturbs_nothing_local_and_the_node_registers_again() {
    let redis = Redis::start();
    let port = redis.port;
    let a = node(&redis);
    let _streamer = a.stream(77, VIDEO_A, Some(Duration::from_secs(40)));
    assert!(a.wait_for(Duration::from_secs(10), |s| stream_info(s, 77).is_some()));
    let mut viewer = TestViewer::whep(&a, 77).unwrap();
    assert!(viewer.drive(Duration::from_secs(5), |v| v.video_count > 30));
    // Redis goes away mid-stream.
    drop(redis);
    assert!(a.wait_for(Duration::from_secs(5), |a| {
        a.metric("itg_cluster_redis_up") == 0.0
    }));
    let before = viewer.video_count;
    viewer.drive(Duration::from_secs(3), |_| false);
    assert!(viewer.video_count > before + 60, "the viewer stalled");
    // New local viewers still get in.
    let mut late = TestViewer::whep(&a, 77).unwrap();
    assert!(late.drive(Duration::from_secs(5), |v| v.first_keyframe.is_some()));
    // Redis comes back on the same port: the node and its stream are registered again.
    let redis = Redis::start_on(port);
    let t = Instant::now();
    let mut con = redis.connection().unwrap();
    let back = (0..300).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        redis::cmd("GET")
            .arg("itg:stream:77")
            .query::<Option<String>>(&mut con)
            .ok()
            .flatten()
            .is_some()
    });
    assert!(back, "the node did not register again");
    eprintln!(
        "registered again {} ms after Redis came back",
        t.elapsed().as_millis()
    );
    assert!(a.wait_for(Duration::from_secs(3), |a| {
        a.metric("itg_cluster_redis_up") == 1.0
    }));
    viewer.drive(Duration::from_millis(500), |_| false);
    assert_eq!(viewer.video_lost(), 0);
    let f = fixture_nals(VIDEO_A);
    assert_run_from_keyframe(
        &viewer.nal_units(),
        &[f.clone(), f.clone(), f.clone(), f].concat(),
    );
}

fn cluster_node(redis: &Redis, role: server_mio::cluster::Role) -> TestServer {
    let url = redis.url();
    TestServer::start_with(move |a| {
        a.cluster = Some(url);
        a.cluster_token = Some("node-secret".into());
        a.role = role;
    })
}

#[test]
fn edges_pull_once_per_channel_and_their_viewers_get_the_fixture_bit_exact() {
    use server_mio::cluster::Role;
    let redis = Redis::start();
    let origin = cluster_node(&redis, Role::Origin);
    let edges = [
        cluster_node(&redis, Role::Edge),
        cluster_node(&redis, Role::Edge),
    ];
    let streamer = origin.stream(77, VIDEO_A, Some(Duration::from_secs(40)));
    for e in &edges {
        assert!(e.wait_for(Duration::from_secs(5), |e| {
            entry(&streams(e), 77)["origin"]["url"] == url_of(&origin).as_str()
        }));
    }
    // Before an edge carries the stream, its thumbnail is the origin's.
    let at_edge = http(edges[0].addrs.http, "GET", "/thumbnails/77.jpg", &[], b"");
    assert_eq!(at_edge.status, 307);
    assert_eq!(
        at_edge.header("Location"),
        Some(format!("{}/thumbnails/77.jpg", url_of(&origin)).as_str())
    );
    assert!(entry(&streams(&edges[0]), 77)["thumbnail"]
        .as_str()
        .is_some_and(|u| u.starts_with("/thumbnails/77.jpg?v=r")));
    // Three viewers on each edge, straight to the edge (placement comes on top of this).
    let t0 = Instant::now();
    let mut viewers: Vec<Viewer> = Vec::new();
    for e in &edges {
        for _ in 0..3 {
            viewers.push(TestViewer::whep(e, 77).unwrap());
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && viewers.iter().any(|v| v.video_count < 200) {
        for v in &mut viewers {
            let _ = v.step();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let first: Vec<u128> = viewers
        .iter()
        .map(|v| {
            v.first_keyframe
                .map_or(u128::MAX, |t| t.duration_since(v.created).as_millis())
        })
        .collect();
    eprintln!(
        "edge viewers: first keyframe after {first:?} ms (pulls started {} ms ago)",
        t0.elapsed().as_millis()
    );
    let f = fixture_nals(VIDEO_A);
    let looped: Vec<Vec<u8>> = [f.clone(), f.clone(), f.clone(), f.clone(), f].concat();
    for v in &viewers {
        assert!(
            v.video_count >= 200,
            "an edge viewer got {} packets",
            v.video_count
        );
        assert_eq!(v.video_lost(), 0);
        assert_run_from_keyframe(&v.nal_units(), &looped);
    }
    // An edge that carries the stream makes its own thumbnail from its own cache.
    for e in &edges {
        assert!(e.wait_for(Duration::from_secs(15), |e| {
            http(e.addrs.http, "GET", "/thumbnails/77.jpg", &[], b"").status == 200
        }));
        let t = http(e.addrs.http, "GET", "/thumbnails/77.jpg", &[], b"");
        let img = image::load_from_memory(&t.body).unwrap();
        assert_eq!((img.width(), img.height()), (320, 180));
        assert_eq!(t.header("X-ITG-Thumbnail-Size"), Some("320x180"));
    }
    // One pull per edge at the origin, however many viewers; none counted as its viewers.
    assert_eq!(origin.metric("itg_pulls_served"), 2.0);
    assert_eq!(origin.metric("itg_viewers_connected"), 0.0);
    for e in &edges {
        assert_eq!(e.metric("itg_pulls"), 1.0);
        assert_eq!(e.metric("itg_viewers_connected"), 3.0);
        // The edge does not announce the pulled stream as its own.
        assert_eq!(
            entry(&streams(e), 77)["origin"]["url"],
            url_of(&origin).as_str()
        );
    }
    // The origin's stream stops: the edges' viewers see it end; it starts again: they resume
    // without a new offer.
    let _ = streamer.stop();
    for e in &edges {
        assert!(e.wait_for(Duration::from_secs(8), |e| {
            entry(&streams(e), 77)["live"] == false && e.metric("itg_pulls") == 0.0
        }));
    }
    let counts: Vec<u64> = viewers.iter().map(|v| v.video_count).collect();
    let _again = origin.stream(77, VIDEO_A, Some(Duration::from_secs(20)));
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline
        && viewers
            .iter()
            .zip(&counts)
            .any(|(v, c)| v.video_count < c + 100)
    {
        for v in &mut viewers {
            let _ = v.step();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    for (v, c) in viewers.iter().zip(&counts) {
        assert!(
            v.video_count >= c + 100,
            "a viewer did not resume: {} then {}",
            c,
            v.video_count
        );
    }
    assert_eq!(origin.metric("itg_pulls_served"), 2.0);
}

/// Every viewer gets at least `more` video packets more within 8 s, and loses none. On
/// failure, `edge` says what the serving node saw (its stream entry: skips, late packets).
fn assert_all_go_on(viewers: &mut [Viewer], more: u64, after: &str, edge: &TestServer) {
    let before: Vec<u64> = viewers.iter().map(|v| v.video_count).collect();
    let target = before.iter().max().copied().unwrap_or(0) + more + 50;
    drive_all(viewers, target, Duration::from_secs(8));
    for (v, b) in viewers.iter().zip(&before) {
        assert!(
            v.video_count >= b + more,
            "a viewer stalled after {after}: {b} then {}; the edge's stream: {}",
            v.video_count,
            entry(&streams(edge), 77)
        );
        assert_eq!(v.video_lost(), 0);
    }
}

/// Steps every viewer until each has `n` video packets (or `limit` passes).
fn drive_all(viewers: &mut [Viewer], n: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && viewers.iter().any(|v| v.video_count < n) {
        for v in viewers.iter_mut() {
            let _ = v.step();
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn an_origin_places_viewers_on_its_edges_and_a_killed_edge_s_viewers_move_to_the_other() {
    use server_mio::cluster::Role;
    let redis = Redis::start();
    let origin = cluster_node(&redis, Role::Origin);
    let edge = cluster_node(&redis, Role::Edge);
    // A second edge in its own process, to be killed.
    let data_dir = scratch_path("itg-edge-kill");
    let mut killed = spawn_node(
        &data_dir,
        18680,
        &[
            "--role",
            "edge",
            "--cluster",
            &redis.url(),
            "--cluster-token",
            "node-secret",
        ],
    );
    let killed_addr: std::net::SocketAddr = "127.0.0.1:18680".parse().unwrap();
    let _streamer = origin.stream(77, VIDEO_A, Some(Duration::from_secs(60)));
    let nodes = |s: &TestServer| {
        streams(s)["cluster"]["nodes"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(origin.wait_for(Duration::from_secs(10), |o| {
        nodes(o) == 3 && entry(&streams(o), 77)["live"] == true
    }));
    assert!(edge.wait_for(Duration::from_secs(5), |e| {
        entry(&streams(e), 77)["origin"]["url"] == url_of(&origin).as_str()
    }));
    // Twenty viewers ask the origin: each is sent to an edge, spread over both.
    let mut viewers: Vec<Viewer> = (0..20)
        .map(|_| TestViewer::whep(&origin, 77).unwrap())
        .collect();
    let on_edge = viewers
        .iter()
        .filter(|v| v.served_by == Some(edge.addrs.http))
        .count();
    let on_killed = viewers
        .iter()
        .filter(|v| v.served_by == Some(killed_addr))
        .count();
    eprintln!("placed: {on_edge} on one edge, {on_killed} on the other");
    assert_eq!(on_edge + on_killed, 20);
    assert!(on_edge >= 6 && on_killed >= 6, "{on_edge} / {on_killed}");
    assert_eq!(origin.metric("itg_viewers_redirected_total"), 20.0);
    drive_all(&mut viewers, 150, Duration::from_secs(15));
    let f = fixture_nals(VIDEO_A);
    let looped: Vec<Vec<u8>> = std::iter::repeat_n(f, 8).flatten().collect();
    for v in &viewers {
        assert!(v.video_count >= 150, "{}", v.video_count);
        assert_eq!(v.video_lost(), 0);
        assert_run_from_keyframe(&v.nal_units(), &looped);
    }
    assert_eq!(origin.metric("itg_pulls_served"), 2.0);
    assert_eq!(origin.metric("itg_viewers_connected"), 0.0);
    // One edge dies: it leaves the directory by TTL; its viewers start again from the node
    // they were first given (the origin) and are placed on the surviving edge.
    killed.kill().unwrap();
    killed.wait().unwrap();
    let t = Instant::now();
    assert!(origin.wait_for(Duration::from_secs(10), |o| nodes(o) == 2));
    eprintln!(
        "the killed edge left the directory after {} ms",
        t.elapsed().as_millis()
    );
    let mut moved: Vec<Viewer> = (0..on_killed)
        .map(|_| TestViewer::whep(&origin, 77).unwrap())
        .collect();
    assert!(moved.iter().all(|v| v.served_by == Some(edge.addrs.http)));
    drive_all(&mut moved, 60, Duration::from_secs(10));
    for v in &moved {
        assert!(v.video_count >= 60);
        assert_run_from_keyframe(&v.nal_units(), &looped);
    }
    // The dead edge's pull at the origin goes as soon as the origin sees the edge gone.
    let t = Instant::now();
    assert!(origin.wait_for(Duration::from_secs(3), |o| {
        o.metric("itg_pulls_served") == 1.0
    }));
    eprintln!(
        "the dead edge's pull dropped {} ms after it left the directory",
        t.elapsed().as_millis()
    );
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn an_edge_takes_no_ingest_and_whip_ingest_on_one_node_plays_on_another() {
    use server_mio::cluster::Role;
    let redis = Redis::start();
    let any = cluster_node(&redis, Role::Any);
    let edge = cluster_node(&redis, Role::Edge);
    assert!(edge.wait_for(Duration::from_secs(5), |e| {
        streams(e)["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    }));
    // WHIP to the edge: 403 naming where to stream.
    let auth = format!("Bearer {}", edge.key(77));
    let r = http(
        edge.addrs.http,
        "POST",
        "/whip/77",
        &[
            ("Content-Type", "application/sdp"),
            ("Authorization", &auth),
        ],
        b"v=0\r\n",
    );
    assert_eq!(r.status, 403);
    let why = String::from_utf8_lossy(&r.body);
    assert!(why.contains("edge") && why.contains(&url_of(&any)), "{why}");
    // FTL to the edge: refused.
    let refused = edge
        .stream(77, VIDEO_A, Some(Duration::from_secs(3)))
        .join();
    assert!(refused.is_err(), "an edge took an FTL stream");
    assert!(stream_info(&edge, 77).is_none());
    // WHIP to the other node, a viewer on the edge.
    let publisher = any.publish(77, VIDEO_A, Some(Duration::from_secs(12)));
    assert!(edge.wait_for(Duration::from_secs(10), |e| {
        entry(&streams(e), 77)["origin"]["protocol"] == "whip"
    }));
    let mut v = TestViewer::whep(&edge, 77).unwrap();
    assert_eq!(v.served_by, Some(edge.addrs.http));
    assert!(v.drive(Duration::from_secs(10), |v| v.video_count > 150));
    let f = fixture_nals(VIDEO_A);
    assert_run_from_keyframe(
        &v.nal_units(),
        &[f.clone(), f.clone(), f.clone(), f].concat(),
    );
    assert_eq!(v.video_lost(), 0);
    let _ = publisher.stop();
}

#[test]
fn redis_going_away_mid_stream_loses_edge_viewers_nothing_and_placement_resumes() {
    use server_mio::cluster::Role;
    let redis = Redis::start();
    let port = redis.port;
    let origin = cluster_node(&redis, Role::Origin);
    let edge = cluster_node(&redis, Role::Edge);
    let _streamer = origin.stream(77, VIDEO_A, Some(Duration::from_secs(60)));
    assert!(edge.wait_for(Duration::from_secs(10), |e| {
        entry(&streams(e), 77)["origin"]["url"] == url_of(&origin).as_str()
    }));
    assert!(origin.wait_for(Duration::from_secs(5), |o| {
        streams(o)["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    }));
    let mut viewers: Vec<Viewer> = (0..3)
        .map(|_| TestViewer::whep(&origin, 77).unwrap())
        .collect();
    assert!(viewers.iter().all(|v| v.served_by == Some(edge.addrs.http)));
    drive_all(&mut viewers, 60, Duration::from_secs(10));
    // Redis goes away: the edge's pull and its viewers go on.
    drop(redis);
    assert!(origin.wait_for(Duration::from_secs(5), |o| {
        o.metric("itg_cluster_redis_up") == 0.0
    }));
    assert_all_go_on(&mut viewers, 100, "Redis went away", &edge);
    // Meanwhile a new viewer is served where it asked, rather than sent by a stale directory.
    let local = TestViewer::whep(&origin, 77).unwrap();
    assert_eq!(local.served_by, Some(origin.addrs.http));
    // Redis is back: placement resumes.
    let _redis = Redis::start_on(port);
    let t = Instant::now();
    assert!(origin.wait_for(Duration::from_secs(25), |o| {
        o.metric("itg_cluster_redis_up") == 1.0
            && streams(o)["cluster"]["nodes"].as_array().map(Vec::len) == Some(2)
    }));
    eprintln!(
        "placement possible again {} ms after Redis came back",
        t.elapsed().as_millis()
    );
    let placed = TestViewer::whep(&origin, 77).unwrap();
    assert_eq!(placed.served_by, Some(edge.addrs.http));
    // The edge's pull outlived the outage and the nodes registering again.
    assert_all_go_on(&mut viewers, 200, "Redis came back", &edge);
    assert_eq!(origin.metric("itg_pulls_served"), 1.0);
    let f = fixture_nals(VIDEO_A);
    let looped: Vec<Vec<u8>> = std::iter::repeat_n(f, 8).flatten().collect();
    for v in &viewers {
        assert_run_from_keyframe(&v.nal_units(), &looped);
    }
}

/// One edge pulls two channels from one origin at once: the origin serves both pulls from its
/// one WebRTC port, so the edge gives each pull a socket of its own (two sessions on one
/// 5-tuple could not be told apart). Both channels' viewers on the edge get every packet.
#[test]
fn an_edge_pulls_two_channels_from_one_origin_at_once() {
    use server_mio::cluster::Role;
    let redis = Redis::start();
    let origin = cluster_node(&redis, Role::Origin);
    let edge = cluster_node(&redis, Role::Edge);
    let a = origin.stream(77, VIDEO_A, Some(Duration::from_secs(30)));
    let b = origin.publish(88, VIDEO_A, Some(Duration::from_secs(30)));
    for c in [77, 88] {
        assert!(edge.wait_for(Duration::from_secs(5), |e| {
            entry(&streams(e), c)["origin"]["url"] == url_of(&origin).as_str()
        }));
    }
    let mut viewers = vec![
        TestViewer::whep(&edge, 77).unwrap(),
        TestViewer::whep(&edge, 88).unwrap(),
    ];
    drive_all(&mut viewers, 200, Duration::from_secs(10));
    eprintln!(
        "two pulls: {} and {} video packets, {} and {} lost",
        viewers[0].video_count,
        viewers[1].video_count,
        viewers[0].video_lost(),
        viewers[1].video_lost()
    );
    for v in &viewers {
        assert!(v.video_count >= 200, "{}", v.video_count);
        assert_eq!(v.video_lost(), 0);
    }
    assert_eq!(edge.metric("itg_pulls"), 2.0);
    let _ = a.stop();
    let _ = b.stop();
}

/// A private CA and a certificate it signed for 127.0.0.1 (and its key), as PEM files in
/// `dir`: the CA's, the leaf's and the key's paths.
fn private_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "itg test cluster CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("node.pem"),
        dir.join("node.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, leaf_key.serialize_pem()).unwrap();
    paths
}

/// An origin that serves only https, with a certificate from the cluster's private CA: an edge
/// told to trust that CA (`--cluster-ca`) pulls from it and its viewer plays; an edge that
/// trusts only the public roots refuses the origin's certificate and pulls nothing.
#[test]
fn an_edge_pulls_over_https_from_an_origin_its_private_ca_certified() {
    use server_mio::cluster::Role;
    let redis = Redis::start();
    let (ca, cert, key) = private_ca(&scratch_path("itg-cluster-ca"));
    let url = redis.url();
    let origin = TestServer::start_with(|a| {
        a.cluster = Some(url.clone());
        a.cluster_token = Some("node-secret".into());
        a.role = Role::Origin;
        a.tls_cert = Some(cert.clone());
        a.tls_key = Some(key.clone());
    });
    let trusting = TestServer::start_with(|a| {
        a.cluster = Some(url.clone());
        a.cluster_token = Some("node-secret".into());
        a.role = Role::Edge;
        a.cluster_ca = Some(ca.clone());
    });
    let doubting = cluster_node(&redis, Role::Edge);
    let streamer = origin.stream(77, VIDEO_A, Some(Duration::from_secs(30)));
    let https_origin = format!("https://{}", origin.addrs.http);
    for e in [&trusting, &doubting] {
        assert!(e.wait_for(Duration::from_secs(5), |e| {
            entry(&streams(e), 77)["origin"]["url"] == https_origin.as_str()
        }));
    }
    let mut good = TestViewer::whep(&trusting, 77).unwrap();
    let mut bad = TestViewer::whep(&doubting, 77).unwrap();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline && good.video_count < 100 {
        let _ = good.step();
        let _ = bad.step();
        std::thread::sleep(Duration::from_millis(1));
    }
    eprintln!(
        "over https: the edge trusting the CA got {} video packets, the other {}",
        good.video_count, bad.video_count
    );
    assert!(good.video_count >= 100, "no video through the https pull");
    assert_eq!(good.video_lost(), 0);
    assert_eq!(bad.video_count, 0, "an unchecked certificate was taken");
    assert_eq!(trusting.metric("itg_pulls"), 1.0);
    assert_eq!(doubting.metric("itg_pulls"), 0.0);
    // The origin, asked over https as the trusting edge asks it.
    let tls = server_mio::client::tls::TlsClient::new(Some(&ca)).unwrap();
    let to = server_mio::client::url::endpoint(&https_origin).unwrap();
    let metrics =
        server_mio::client::http::request_to(&to, Some(&tls), "GET", "/metrics", &[], b"").unwrap();
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(text.lines().any(|l| l == "itg_pulls_served 1"), "{text}");
    let _ = streamer.stop();
}

/// An edge carries every layer of a simulcast: a publisher sends three RIDs to the origin;
/// the edge pulls the top layer with the audio and one pull more per other layer, each pinned
/// to its layer there; its viewers see three layers and, through the WHEP layer extension at
/// the edge, get the smallest and then the largest file bit-exact from a keyframe, numbering
/// on.
#[test]
fn an_edge_carries_every_simulcast_layer_and_its_viewers_switch_among_them() {
    use server_mio::cluster::Role;
    let redis = Redis::start();
    let origin = cluster_node(&redis, Role::Origin);
    let edge = cluster_node(&redis, Role::Edge);
    let publisher = publish_with(simulcast_options(&origin, 77, 40));
    assert!(origin.wait_for(Duration::from_secs(8), |s| {
        stream_info(s, 77).is_some_and(|i| i["layers"].as_array().is_some_and(|l| l.len() == 3))
    }));
    assert!(edge.wait_for(Duration::from_secs(5), |e| {
        entry(&streams(e), 77)["origin"]["url"] == url_of(&origin).as_str()
    }));
    let mut viewer = TestViewer::whep(&edge, 77).unwrap();
    let sizes = |s: &TestServer| -> Vec<(u64, u64)> {
        entry(&streams(s), 77)["layers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|l| Some((l["width"].as_u64()?, l["height"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && sizes(&edge).len() < 3 {
        let _ = viewer.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        sizes(&edge),
        [(160, 90), (320, 180), (640, 360)],
        "at the edge"
    );
    // One pull per layer at the origin, none counted as viewers there.
    assert_eq!(origin.metric("itg_pulls_served"), 3.0);
    assert_eq!(origin.metric("itg_viewers_connected"), 0.0);
    let location = viewer.whep_location.clone().unwrap();
    let layer_ids: Vec<u64> = entry(&streams(&edge), 77)["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    let looped = |f: &[u8]| {
        let n = fixture_nals(f);
        [n.clone(), n.clone(), n.clone(), n.clone(), n.clone(), n].concat()
    };
    for (id, file, name) in [
        (layer_ids[0], VIDEO_B, "smallest"),
        (layer_ids[2], VIDEO_640, "largest"),
    ] {
        let r = post_layer(
            edge.addrs.http,
            &location,
            &format!(r#"{{"encodingId":"{id}"}}"#),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let from = viewer.video.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && viewer.video.len() < from + 250 {
            let _ = viewer.step();
            std::thread::sleep(Duration::from_millis(2));
        }
        let after = nals_after(&viewer, from);
        let fixture = looped(file);
        let start = after
            .iter()
            .position(|n| n.first().map(|b| b & 0x1f) == Some(7) && fixture.contains(n))
            .unwrap_or_else(|| panic!("no keyframe of the {name} layer"));
        assert_run_from_keyframe(&after[start..], &fixture);
    }
    assert_eq!(
        viewer.video_lost(),
        0,
        "numbering continuous across the switches"
    );
    assert!(
        !viewer.audio.is_empty(),
        "the audio comes with the main pull"
    );
    let st = publisher.stop().unwrap();
    assert!(st.video_packets > 1000);
    // The stream ends: every pull of the edge ends with it.
    assert!(edge.wait_for(Duration::from_secs(10), |e| e.metric("itg_pulls") == 0.0));
    assert!(
        origin.wait_for(Duration::from_secs(10), |o| o.metric("itg_pulls_served")
            == 0.0)
    );
}
