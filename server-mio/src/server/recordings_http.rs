//! Recordings over HTTP: `GET /api/recordings`, `GET`/`HEAD /recordings/<channel>/<file>`
//! (single byte ranges, RFC 9110 section 14) and `DELETE` with the channel's stream key. Every
//! disk access is the reader thread's (`record::reader`): a request is answered when its job
//! comes back, and a download's body is fetched a chunk at a time as the connection drains.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use ftl_proto::{ChannelId, StreamKey};
use mio::Token;
use serde_json::json;

use super::hooks::KeyAnswer;
use super::http::{Reply, Request, Response};
use super::Server;
use crate::record::index;
use crate::record::reader::{Deleted, Done, Job, Opened};

/// A `DELETE` of a recording whose key is being judged.
pub(super) struct PendingDelete {
    path: PathBuf,
    presented: StreamKey,
    from: Option<IpAddr>,
}

fn busy() -> Response {
    Response::text(503, "the recordings disk is busy, retry later")
        .header("Retry-After", "2")
        .cors()
}

impl Server {
    /// Hands `job` to the reader: the answer comes later, or `503` when its queue is full.
    fn recordings_ask(&self, job: Job) -> Reply {
        match self.recorder.reader.as_ref() {
            Some(r) if r.ask(job) => Reply::Later,
            _ => Reply::Now(busy()),
        }
    }

    /// `GET /api/recordings[?channel=N]`.
    pub(super) fn api_recordings(&mut self, token: Token, req: &Request) -> Reply {
        let only: Option<u32> = match req.query_param("channel") {
            Some(c) => match c.parse() {
                Ok(c) => Some(c),
                Err(_) => {
                    return Reply::Now(Response::text(400, "channel must be a number").cors())
                }
            },
            None => None,
        };
        self.recordings_ask(Job::List {
            token: token.0,
            only,
        })
    }

    /// `GET`/`HEAD /recordings/<channel>/<file>`.
    pub(super) fn recording_get(
        &mut self,
        token: Token,
        req: &Request,
        channel: &str,
        name: &str,
    ) -> Reply {
        // A recording's poster image is asked for by the recording's name, `.jpg`.
        let path = match index::recording_of_poster(name) {
            Some(mp4) => {
                index::path_of(&self.recorder.root, channel, &mp4).map(|p| index::poster_of(&p))
            }
            None => index::path_of(&self.recorder.root, channel, name),
        };
        let Some(path) = path else {
            return Reply::Now(Response::text(404, "no such recording"));
        };
        self.recordings_ask(Job::Open {
            token: token.0,
            path,
            range: req.header("Range").map(str::to_owned),
            head: req.method == "HEAD",
        })
    }

    /// `DELETE /recordings/<channel>/<file>` with the channel's stream key as Bearer: judged
    /// by the key file, or by the key service when one decides keys (`--auth-url`; the
    /// answer comes later). Wrong keys count toward the address's failed authentications.
    pub(super) fn recording_delete(
        &mut self,
        token: Token,
        req: &Request,
        channel: &str,
        name: &str,
        now: Instant,
    ) -> Reply {
        let Some(path) = index::path_of(&self.recorder.root, channel, name) else {
            return Reply::Now(Response::text(404, "no such recording").cors());
        };
        let Ok(id) = channel.parse::<u32>() else {
            return Reply::Now(Response::text(404, "no such recording").cors());
        };
        let channel = ChannelId(id);
        let from = self.https.get(&token).map(|c| c.peer.ip());
        if from.is_some_and(|ip| self.auth_blocked(ip, now)) {
            return Reply::Now(
                Response::text(429, "too many failed authentications, retry later")
                    .header("Retry-After", self.args.auth_fail_window.to_string())
                    .cors(),
            );
        }
        let Some(presented) = super::webrtc::whip::presented_key(req, channel) else {
            return Reply::Now(self.recording_delete_refused(from, now));
        };
        let pending = PendingDelete {
            path,
            presented,
            from,
        };
        if self.hooks.is_some() {
            self.recorder.deletes.insert(token, pending);
            self.hook_lookup(channel, token, now);
            return Reply::Later;
        }
        let answer = match self.keys.get(channel) {
            Some(c) => KeyAnswer::Key(c.stream_key()),
            None => KeyAnswer::Unknown,
        };
        self.recording_delete_checked(token, pending, &answer, now)
    }

    /// The key service answered for a `DELETE` waiting on `token`.
    pub(super) fn recording_delete_answer(
        &mut self,
        token: Token,
        answer: &KeyAnswer,
        now: Instant,
    ) {
        let Some(pending) = self.recorder.deletes.remove(&token) else {
            return;
        };
        if let Reply::Now(resp) = self.recording_delete_checked(token, pending, answer, now) {
            self.http_respond(token, resp);
        }
    }

    /// A wrong or missing key: `401`, counted against the address.
    fn recording_delete_refused(&mut self, from: Option<IpAddr>, now: Instant) -> Response {
        self.counters.auth_failures += 1;
        if let Some(ip) = from {
            self.note_auth_failure(ip, now);
        }
        Response::text(401, "deleting a recording needs the channel's stream key")
            .header("WWW-Authenticate", "Bearer")
            .cors()
    }

    fn recording_delete_checked(
        &mut self,
        token: Token,
        pending: PendingDelete,
        answer: &KeyAnswer,
        now: Instant,
    ) -> Reply {
        match answer {
            KeyAnswer::Key(k) if super::webrtc::whip::same_key(k, &pending.presented) => {}
            KeyAnswer::Failed(_) => {
                return Reply::Now(Response::text(500, "key service unavailable").cors())
            }
            _ => return Reply::Now(self.recording_delete_refused(pending.from, now)),
        }
        self.recordings_ask(Job::Delete {
            token: token.0,
            path: pending.path,
        })
    }

    /// The reader's answers (the loop was woken).
    pub(super) fn recordings_ready(&mut self) {
        let Some(r) = self.recorder.reader.as_ref() else {
            return;
        };
        for done in r.answers() {
            match done {
                Done::List { token, items } => {
                    let list: Vec<serde_json::Value> = items
                        .into_iter()
                        .map(|f| {
                            let mut v = json!({
                                "channel": f.channel,
                                "url": format!("/recordings/{}/{}", f.channel, f.name),
                                "file": f.name,
                                "start": f.start,
                                "duration_s": f.duration_s,
                                "size": f.size,
                                "recording": f.recording,
                            });
                            if f.poster {
                                let stem = f.name.trim_end_matches(".mp4");
                                v["poster"] =
                                    json!(format!("/recordings/{}/{stem}.jpg", f.channel));
                            }
                            v
                        })
                        .collect();
                    let body = json!({ "recordings": list }).to_string();
                    self.http_respond(
                        Token(token),
                        Response::new(200, "application/json", body).cors(),
                    );
                }
                Done::Opened { token, opened } => {
                    let resp = opened_response(opened);
                    self.http_respond(Token(token), resp);
                }
                Done::Chunk { token, bytes } => self.http_file_chunk(Token(token), bytes),
                Done::Deleted { token, result } => {
                    let resp = match result {
                        Deleted::Done => Response::text(200, "deleted"),
                        Deleted::NotFound => Response::text(404, "no such recording"),
                        Deleted::StillWriting => {
                            Response::text(409, "this recording is still being written")
                        }
                        Deleted::Failed(_) => Response::text(500, "cannot delete"),
                    };
                    self.http_respond(Token(token), resp.cors());
                }
            }
        }
    }

    /// The next chunk of a download is wanted for `token` (its connection drained the last).
    pub(super) fn recording_chunk_wanted(&self, token: Token) -> bool {
        self.recorder
            .reader
            .as_ref()
            .is_some_and(|r| r.ask(Job::Chunk { token: token.0 }))
    }

    /// A connection with a download went away.
    pub(super) fn recording_download_gone(&self, token: Token) {
        if let Some(r) = self.recorder.reader.as_ref() {
            let _ = r.ask(Job::Close { token: token.0 });
        }
    }
}

/// The response head for a download (its body follows chunk by chunk).
fn opened_response(opened: Opened) -> Response {
    let (size, start, len, partial, head, image) = match opened {
        Opened::NotFound => return Response::text(404, "no such recording"),
        Opened::Unsatisfiable { size } => {
            return Response::text(416, "range not satisfiable")
                .header("Content-Range", format!("bytes */{size}"));
        }
        Opened::Ok {
            size,
            start,
            len,
            partial,
            head,
            image,
        } => (size, start, len, partial, head, image),
    };
    let kind = if image { "image/jpeg" } else { "video/mp4" };
    let mut resp = Response::new(if partial { 206 } else { 200 }, kind, Vec::new())
        .header("Accept-Ranges", "bytes")
        .header("Cache-Control", "no-cache");
    if partial {
        resp = resp.header(
            "Content-Range",
            format!("bytes {start}-{}/{size}", start + len - 1),
        );
    }
    if head {
        resp.with_length(len)
    } else {
        resp.with_file_body(len)
    }
}
