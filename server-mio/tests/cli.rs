//! The command-line contract scripts rely on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_server-mio"))
}

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "itg-cli-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

#[test]
fn keys_add_list_rotate_remove() {
    let dir = temp_dir();
    let out = bin()
        .args(["keys", "add", "--data-dir"])
        .arg(&dir)
        .args(["--channel", "42", "--name", "main"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap();
    assert!(key.starts_with("42-") && key.len() == 3 + 32, "{key}");
    let list = bin()
        .args(["keys", "list", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8(list.stdout).unwrap().contains(key));
    let rotated = bin()
        .args(["keys", "rotate", "--channel", "42", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let new_key = String::from_utf8(rotated.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned();
    assert_ne!(new_key, key);
    assert!(new_key.starts_with("42-"));
    // Adding the same channel again is a clear error.
    let again = bin()
        .args(["keys", "add", "--channel", "42", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8(again.stderr).unwrap().contains("exists"));
    // Recording per channel: on at add, then off, then back to the server's flag; a bad
    // value is refused by name.
    let rec = |args: &[&str]| {
        bin()
            .args(["keys"])
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap()
    };
    assert!(rec(&["add", "--channel", "43", "--record", "on"])
        .status
        .success());
    let setting = |id: u32| {
        server_mio::keys::KeyStore::open(&dir)
            .unwrap()
            .channels()
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .record
    };
    assert_eq!(setting(43), Some(true));
    let off = rec(&["set", "--channel", "43", "--record", "off"]);
    assert!(String::from_utf8(off.stdout)
        .unwrap()
        .contains("recording off"));
    assert_eq!(setting(43), Some(false));
    assert!(rec(&["set", "--channel", "43", "--record", "default"])
        .status
        .success());
    assert_eq!(setting(43), None);
    let bad = rec(&["set", "--channel", "43", "--record", "maybe"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8(bad.stderr)
        .unwrap()
        .contains("possible values: on, off, default"));
    assert!(!rec(&["set", "--channel", "9", "--record", "on"])
        .status
        .success());
    assert!(rec(&["remove", "--channel", "43"]).status.success());
    let removed = bin()
        .args(["keys", "remove", "--channel", "42", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(removed.status.success());
    let list = bin()
        .args(["keys", "list", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(String::from_utf8(list.stdout).unwrap().trim().is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn help_explains_every_flag() {
    let out = bin().arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--addr",
        "--ip",
        "--ftl-port",
        "--http-port",
        "--webrtc-port",
        "--media-ports",
        "--ice-servers",
        "--data-dir",
        "--max-viewers",
        "--record",
        "--record-max-gb",
        "--record-max-days",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(
        help.contains("ITG_FTL_PORT"),
        "environment variables are listed"
    );
}

#[test]
fn a_corrupt_key_file_stops_the_server_with_a_clear_error() {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys.json"), b"{oops").unwrap();
    let out = bin()
        .args([
            "--addr",
            "127.0.0.1",
            "--ftl-port",
            "0",
            "--http-port",
            "0",
            "--webrtc-port",
            "0",
            "--data-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("not a valid key file"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn first_start_creates_a_channel_and_prints_its_key() {
    let dir = temp_dir();
    let child = bin()
        .args([
            "--addr",
            "127.0.0.1",
            "--ftl-port",
            "0",
            "--http-port",
            "0",
            "--webrtc-port",
            "0",
            "--data-dir",
        ])
        .arg(&dir)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The key file appears once the channel is created; then stop the server with SIGTERM.
    let file = dir.join("keys.json");
    for _ in 0..200 {
        if file.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "SIGTERM gives a clean exit");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let store = server_mio::keys::KeyStore::open(&dir).unwrap();
    let c = &store.channels()[0];
    assert!(stdout.contains(&c.obs_key()), "{stdout}");
    assert!(stdout.contains(&format!("/watch/{}", c.id)));
    // Bound to loopback only: the self-test warns and names the flag.
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("self-test reachable") && l.contains("--ip")),
        "{stderr}"
    );
    assert!(
        stderr.contains("share: watch: http://127.0.0.1:"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
