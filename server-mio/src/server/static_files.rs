//! The viewer site: embedded at build time, or read from `--static-dir` for development.

use std::path::{Component, Path};

use super::http::Response;
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
    pub(super) fn static_file(&self, url_path: &str) -> Response {
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
        match body {
            Some(b) => {
                Response::new(200, content_type(&name), b).header("Cache-Control", "no-cache")
            }
            None => Response::text(404, "not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
