//! The network self-test: what viewers will be told, checked at start and on `GET
//! /api/selftest`, with plain words for what is wrong. A viewer that cannot connect is the most
//! common complaint of a WebRTC server; most of those are an address no viewer can reach.

use std::net::IpAddr;

use log::{info, warn};
use serde_json::{json, Value};

use super::Server;

/// One check: its name, whether it passed, and what it found or what to do.
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Whether an address is one only the local network (or the machine) reaches.
fn local_only(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()
                // 100.64.0.0/10, carrier-grade NAT
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link local
        }
    }
}

/// Whether an `--ice-servers` entry reads as a STUN or TURN URL (RFC 7064, RFC 7065).
fn ice_server_ok(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once(':') else {
        return false;
    };
    if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
        return false;
    }
    let host_port = rest.split('?').next().unwrap_or_default();
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (host_port, None),
    };
    !host.is_empty()
        && !host.contains(['/', ' ', '@'])
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

impl Server {
    fn selftest_checks(&self) -> (Vec<Check>, Vec<String>) {
        let candidates = &self.viewers.candidates;
        let mut checks = vec![Check {
            name: "candidates",
            ok: !candidates.is_empty(),
            detail: if candidates.is_empty() {
                "no address to advertise to viewers: bind --addr to an interface address or set --ip"
                    .into()
            } else {
                format!(
                    "viewers are told to send WebRTC to {}",
                    candidates
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        }];
        let public = !self.args.ip.is_empty() || candidates.iter().any(|c| !local_only(c.ip()));
        checks.push(Check {
            name: "reachable",
            ok: public,
            detail: if public {
                "an advertised address is public (or --ip is set)".into()
            } else {
                format!(
                    "every advertised address is private or loopback: viewers outside this \
                     network cannot connect. Behind NAT, add --ip <public address> (and forward \
                     UDP {} and the HTTP port); on a LAN only, this is fine",
                    self.addrs.webrtc.port()
                )
            },
        });
        checks.push(Check {
            name: "webrtc_udp",
            ok: true,
            detail: format!("WebRTC UDP bound on {}", self.addrs.webrtc),
        });
        checks.push(Check {
            name: "webrtc_tcp",
            ok: self.addrs.webrtc_tcp.is_some(),
            detail: match self.addrs.webrtc_tcp {
                Some(a) => {
                    format!("ICE over TCP bound on {a}, for viewers whose networks block UDP")
                }
                None => {
                    "ICE over TCP is off (--webrtc-tcp-port 0): viewers without UDP cannot connect"
                        .into()
                }
            },
        });
        let bad: Vec<&String> = self
            .args
            .ice_servers
            .iter()
            .filter(|s| !ice_server_ok(s))
            .collect();
        checks.push(Check {
            name: "ice_servers",
            ok: bad.is_empty(),
            detail: if bad.is_empty() {
                format!(
                    "{} ICE server(s) given to players",
                    self.args.ice_servers.len()
                )
            } else {
                format!(
                    "not a stun:/turn: URL: {}",
                    bad.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
        });
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        let mut hosts: Vec<IpAddr> = self.args.ip.clone();
        for c in candidates {
            if !hosts.contains(&c.ip()) {
                hosts.push(c.ip());
            }
        }
        let http = self.addrs.http.port();
        let urls = hosts
            .iter()
            .flat_map(|ip| {
                let host = match ip {
                    IpAddr::V6(_) => format!("[{ip}]"),
                    IpAddr::V4(_) => ip.to_string(),
                };
                [
                    format!("watch: {scheme}://{host}:{http}/"),
                    format!("OBS (FTL): ftl://{host}:{}", self.addrs.ftl.port()),
                    format!("OBS 30+ (WHIP): {scheme}://{host}:{http}/whip/CHANNEL"),
                ]
            })
            .collect();
        (checks, urls)
    }

    /// Logs the self-test at start: what passed at info, what did not as a warning.
    pub(super) fn selftest_log(&self) {
        let (checks, urls) = self.selftest_checks();
        for c in &checks {
            if c.ok {
                info!("self-test {}: {}", c.name, c.detail);
            } else {
                warn!("self-test {}: {}", c.name, c.detail);
            }
        }
        for u in urls {
            info!("share: {u}");
        }
    }

    /// `GET /api/selftest`.
    pub(super) fn selftest_json(&self) -> Value {
        let (checks, urls) = self.selftest_checks();
        json!({
            "ok": checks.iter().all(|c| c.ok),
            "checks": checks
                .iter()
                .map(|c| json!({ "name": c.name, "ok": c.ok, "detail": c.detail }))
                .collect::<Vec<_>>(),
            "urls": urls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_ice_server_urls() {
        for (ip, local) in [
            ("127.0.0.1", true),
            ("10.1.2.3", true),
            ("192.168.1.10", true),
            ("100.64.0.1", true),
            ("8.8.8.8", false),
            ("::1", true),
            ("fd00::1", true),
            ("2001:db8::1", false),
        ] {
            assert_eq!(local_only(ip.parse().unwrap()), local, "{ip}");
        }
        for (url, ok) in [
            ("stun:stun.example.org:3478", true),
            ("stun:stun.example.org", true),
            ("turn:turn.example.org:3478?transport=tcp", true),
            ("turns:[2001:db8::1]:5349", true),
            ("stun:", false),
            ("http://example.org", false),
            ("stun:host:99999", false),
            ("stun:host:0", false),
            ("example.org:3478", false),
        ] {
            assert_eq!(ice_server_ok(url), ok, "{url}");
        }
    }
}
