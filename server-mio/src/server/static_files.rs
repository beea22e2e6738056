//! The viewer site: embedded at build time, or read from `--static-dir` for development.

use std::path::{Component, Path};

use super::http::{Request, Response};
use super::Server;

include!(concat!(env!("OUT_DIR"), "/static_files.rs"));

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Maps a URL path to a file name under the site root: `/` is `index.html`, `/watch/<n>` is
/// `watch.html` (the page reads the channel from its URL). `None` for anything that tries to
/// leave the root.
pub(super) fn site_path(url_path: &str) -> Option<String> {
    let p = url_path.trim_start_matches('/');
    if p.is_empty() {
        return Some("index.html".into());
    }
    for (prefix, page) in [("watch/", "watch.html"), ("publish/", "publish.html")] {
        if let Some(rest) = p.strip_prefix(prefix) {
            if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                return Some(page.into());
            }
        }
    }
    let ok = Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        && !p.contains('\\')
        && !p.contains('\0');
    ok.then(|| p.to_owned())
}

impl Server {
    pub(super) fn static_file(&self, req: &Request) -> Response {
        let url_path = req.path.as_str();
        let Some(name) = site_path(url_path) else {
            return Response::text(404, "not found");
        };
        let body = match &self.args.static_dir {
            Some(dir) => std::fs::read(dir.join(&name)).ok(),
            None => FILES
                .iter()
                .find(|(p, _)| *p == name)
                .map(|(_, b)| b.to_vec()),
        };
        // The watch page carries its channel's link-preview tags (a link pasted into a chat
        // shows the live picture): the one page that is not the same for every request.
        let body = match (body, watch_channel(url_path)) {
            (Some(b), Some(channel)) if name == "watch.html" => {
                Some(with_head_tags(b, &self.watch_meta(req, channel)))
            }
            (b, _) => b,
        };
        match body {
            Some(b) => {
                Response::new(200, content_type(&name), b).header("Cache-Control", "no-cache")
            }
            None => Response::text(404, "not found"),
        }
    }
}

/// The channel of a `/watch/<channel>` path.
fn watch_channel(url_path: &str) -> Option<ftl_proto::ChannelId> {
    let n = url_path.trim_start_matches('/').strip_prefix("watch/")?;
    if n.is_empty() || n.len() > 10 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Puts `tags` into the page's head, after its charset (which must come first).
fn with_head_tags(page: Vec<u8>, tags: &str) -> Vec<u8> {
    let marker = b"<meta charset=\"utf-8\">\n";
    let at = page
        .windows(marker.len())
        .position(|w| w == marker)
        .map(|p| p + marker.len());
    match at {
        Some(at) => {
            let mut out = Vec::with_capacity(page.len() + tags.len());
            out.extend_from_slice(page.get(..at).unwrap_or_default());
            out.extend_from_slice(tags.as_bytes());
            out.extend_from_slice(page.get(at..).unwrap_or_default());
            out
        }
        None => page,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_tags_go_after_the_charset() {
        let page = b"<html><head>\n<meta charset=\"utf-8\">\n<title>x</title>".to_vec();
        let out = with_head_tags(page, "<meta property=\"og:title\" content=\"a\">\n");
        assert_eq!(
            String::from_utf8_lossy(&out),
            "<html><head>\n<meta charset=\"utf-8\">\n<meta property=\"og:title\" content=\"a\">\n<title>x</title>"
        );
        assert_eq!(watch_channel("/watch/42"), Some(ftl_proto::ChannelId(42)));
        assert_eq!(watch_channel("/watch/4x"), None);
        assert_eq!(watch_channel("/watch/99999999999"), None);
    }

    #[test]
    fn paths_stay_inside_the_site() {
        assert_eq!(site_path("/").as_deref(), Some("index.html"));
        assert_eq!(site_path("/watch/77").as_deref(), Some("watch.html"));
        assert_eq!(site_path("/publish/77").as_deref(), Some("publish.html"));
        assert_eq!(site_path("/player.js").as_deref(), Some("player.js"));
        assert_eq!(site_path("/../etc/passwd"), None);
        assert_eq!(site_path("/a/../../b"), None);
        assert_eq!(site_path("/./x"), None);
        assert_eq!(site_path("/a\\..\\b"), None);
        assert!(FILES.iter().any(|(p, _)| *p == "index.html"));
    }
}
