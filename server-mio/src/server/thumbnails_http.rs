//! Thumbnails over HTTP (`GET`/`HEAD /thumbnails/<channel>.jpg`) and the link-preview tags of
//! the watch page (Open Graph and Twitter cards), whose image is that thumbnail.

use ftl_proto::ChannelId;

use super::http::{Request, Response};
use super::Server;
use crate::thumbnail::picture;

/// How long a browser or a proxy may reuse a thumbnail without asking: short, the picture is
/// live; revalidation is a cheap `304` thanks to the `ETag`.
const MAX_AGE: &str = "public, max-age=5";

/// Escapes text for an HTML attribute or element.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether an `If-None-Match` header names this entity tag (RFC 9110 §13.1.2, weak compare).
fn matches_etag(header: &str, etag: &str) -> bool {
    header.split(',').map(str::trim).any(|t| {
        t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag.strip_prefix("W/").unwrap_or(etag)
    })
}

/// A `Host` header that can go into a URL as it is (a name or an address and a port).
fn usable_host(host: &str) -> Option<&str> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    ok.then_some(host)
}

impl Server {
    /// `GET`/`HEAD /thumbnails/<channel>.jpg[?fallback=placeholder]`.
    pub(super) fn thumbnail_get(&self, req: &Request, file: &str) -> Response {
        let channel = file
            .strip_suffix(".jpg")
            .filter(|n| !n.is_empty() && n.len() <= 10 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<ChannelId>().ok());
        let Some(channel) = channel else {
            return Response::text(404, "no such thumbnail").cors();
        };
        let head = req.method == "HEAD";
        let thumb = self.thumbnails.get(channel);
        let Some(thumb) = thumb else {
            // A stream live on another node that this one does not carry: its origin has the
            // picture.
            if !self.relay.is_live(channel) {
                if let Some((_, origin, _)) = self.cluster_origin_elsewhere(channel) {
                    let mut to =
                        format!("{}/thumbnails/{channel}.jpg", origin.trim_end_matches('/'));
                    if req.query_param("fallback") == Some("placeholder") {
                        to.push_str("?fallback=placeholder");
                    }
                    return Response::text(307, "at the stream's origin")
                        .header("Location", to)
                        .header("Cache-Control", "no-store")
                        .cors();
                }
            }
            let why = if !self.thumbnails.enabled() {
                "thumbnails are off (--thumbnail-every 0)"
            } else if self.relay.is_live(channel) {
                "no thumbnail yet"
            } else {
                "the channel is not live"
            };
            if req.query_param("fallback") == Some("placeholder") {
                let body = self.thumbnails.placeholder().to_vec();
                let len = body.len() as u64;
                let resp = Response::new(200, "image/jpeg", body)
                    .header("Cache-Control", "no-store")
                    .header("X-ITG-Thumbnail", why)
                    .cors();
                return if head { strip(resp, len) } else { resp };
            }
            let mut resp = Response::text(404, why).cors();
            if self.relay.is_live(channel) && self.thumbnails.enabled() {
                resp = resp.header("Retry-After", "2");
            }
            return resp;
        };
        if req
            .header("If-None-Match")
            .is_some_and(|h| matches_etag(h, &thumb.etag))
        {
            return Response::new(304, "image/jpeg", Vec::new())
                .header("ETag", thumb.etag.clone())
                .header("Cache-Control", MAX_AGE)
                .cors();
        }
        let len = thumb.jpeg.len() as u64;
        let resp = Response::new(200, "image/jpeg", thumb.jpeg.to_vec())
            .header("ETag", thumb.etag.clone())
            .header("Cache-Control", MAX_AGE)
            .header(
                "X-ITG-Thumbnail-Size",
                format!("{}x{}", thumb.width, thumb.height),
            )
            .cors();
        if head {
            strip(resp, len)
        } else {
            resp
        }
    }

    /// The base of absolute URLs for link previews: `--public-url`, else the scheme this
    /// server speaks and the request's `Host`.
    fn public_base(&self, req: &Request) -> Option<String> {
        if let Some(u) = &self.args.public_url {
            return Some(u.trim_end_matches('/').to_owned());
        }
        let host = usable_host(req.header("Host")?)?;
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        Some(format!("{scheme}://{host}"))
    }

    /// The link-preview tags for `/watch/<channel>`: title, live or offline, the thumbnail as
    /// image with its size, the embeddable player.
    pub(super) fn watch_meta(&self, req: &Request, channel: ChannelId) -> String {
        let name = self
            .keys
            .get(channel)
            .map(|k| k.name.clone())
            .unwrap_or_else(|| format!("Channel {channel}"));
        let live = self.relay.is_live(channel);
        let now = std::time::Instant::now();
        let stats = self.relay.stream_stats(channel, now);
        let size = stats.as_ref().and_then(|s| Some((s.width?, s.height?)));
        let description = if live {
            let viewers = self.relay.channel_viewers(channel);
            match size {
                Some((w, h)) => format!("Live now · {w}x{h} · {viewers} watching"),
                None => format!("Live now · {viewers} watching"),
            }
        } else {
            "Offline".to_owned()
        };
        let title = format!("{name}{}", if live { " (live)" } else { "" });
        let base = self.public_base(req);
        let abs = |path: &str| match &base {
            Some(b) => format!("{b}{path}"),
            None => path.to_owned(),
        };
        let mut tags = vec![
            ("property", "og:type", "video.other".to_owned()),
            ("property", "og:site_name", "ITG".to_owned()),
            ("property", "og:title", title.clone()),
            ("property", "og:description", description.clone()),
            ("property", "og:url", abs(&format!("/watch/{channel}"))),
            ("name", "description", description.clone()),
            ("name", "twitter:title", title),
            ("name", "twitter:description", description),
        ];
        if live && self.thumbnails.enabled() {
            // The picture as it is when the link is fetched; the size is the thumbnail's, or
            // what it will be from the stream's size.
            let dims = self
                .thumbnails
                .get(channel)
                .map(|t| (t.width, t.height))
                .or_else(|| {
                    size.map(|(w, h)| picture::scaled_size(w, h, self.args.thumbnail_width))
                });
            let image = abs(&format!("/thumbnails/{channel}.jpg?fallback=placeholder"));
            tags.push(("property", "og:image", image.clone()));
            tags.push(("property", "og:image:type", "image/jpeg".to_owned()));
            if let Some((w, h)) = dims {
                tags.push(("property", "og:image:width", w.to_string()));
                tags.push(("property", "og:image:height", h.to_string()));
            }
            tags.push(("property", "og:image:alt", format!("{name}, live")));
            tags.push(("name", "twitter:card", "summary_large_image".to_owned()));
            tags.push(("name", "twitter:image", image));
            let player = abs(&format!("/watch/{channel}"));
            tags.push(("property", "og:video", player.clone()));
            if player.starts_with("https://") {
                tags.push(("property", "og:video:secure_url", player));
            }
            tags.push(("property", "og:video:type", "text/html".to_owned()));
            if let Some((w, h)) = size {
                tags.push(("property", "og:video:width", w.to_string()));
                tags.push(("property", "og:video:height", h.to_string()));
            }
        } else {
            tags.push(("name", "twitter:card", "summary".to_owned()));
        }
        let mut out = String::new();
        for (attr, key, value) in tags {
            out.push_str(&format!(
                "<meta {attr}=\"{key}\" content=\"{}\">\n",
                html_escape(&value)
            ));
        }
        out
    }
}

/// A `HEAD` answer: the same head, no body.
fn strip(mut resp: Response, len: u64) -> Response {
    resp.body.clear();
    resp.with_length(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_reads() {
        assert_eq!(
            html_escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn etags_compare_weakly() {
        assert!(matches_etag("\"ab\"", "\"ab\""));
        assert!(matches_etag("W/\"ab\", \"cd\"", "\"ab\""));
        assert!(matches_etag("*", "\"ab\""));
        assert!(!matches_etag("\"abc\"", "\"ab\""));
    }

    #[test]
    fn hosts_with_odd_bytes_are_not_used() {
        assert_eq!(
            usable_host("live.example.com:8080"),
            Some("live.example.com:8080")
        );
        assert_eq!(usable_host("[::1]:80"), Some("[::1]:80"));
        assert_eq!(usable_host("evil\"><script>"), None);
        assert_eq!(usable_host("a/b"), None);
        assert_eq!(usable_host(""), None);
    }
}
