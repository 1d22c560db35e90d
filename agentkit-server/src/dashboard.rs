//! The web dashboard: a static shell of hand-written HTML, CSS and JavaScript (ES modules, no
//! build step) built into the binary with `include_str!`, served at `/` and `/ui/<file>`.
//!
//! The shell itself is public and holds no data: the page asks for an API key (kept in the
//! tab's `sessionStorage`) and reads everything through the authenticated JSON API with
//! `Authorization: Bearer <key>`. Every answer carries a strict Content-Security-Policy (scripts,
//! styles and connections from this origin only, no inline scripts or styles, no frames), an
//! `ETag` (revalidated with `If-None-Match`) and `Cache-Control: no-cache`, so a new binary's
//! assets are picked up at once while unchanged ones cost a 304.
//!
//! Behind the `dashboard` feature (on by default).

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::api::Problem;

/// The Content-Security-Policy of every dashboard answer: nothing from other origins, no
/// inline script or style, no plugins, no frames, no form posts.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'none'; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    /// Its name under `/ui/`.
    name: &'static str,
    /// Its bytes.
    body: &'static str,
}

impl Asset {
    /// Its `Content-Type`, from its extension.
    fn content_type(&self) -> &'static str {
        match self.name.rsplit('.').next() {
            Some("html") => "text/html; charset=utf-8",
            Some("css") => "text/css; charset=utf-8",
            Some("js") => "text/javascript; charset=utf-8",
            Some("svg") => "image/svg+xml",
            _ => "application/octet-stream",
        }
    }
}

/// An asset of `assets/dashboard/`, embedded.
macro_rules! asset {
    ($name:literal) => {
        Asset {
            name: $name,
            body: include_str!(concat!("../assets/dashboard/", $name)),
        }
    };
}

/// Every file of the dashboard (`index.html` first).
const ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("app.css"),
    asset!("app.js"),
    asset!("api.js"),
    asset!("dom.js"),
    asset!("charts.js"),
    asset!("pages.js"),
    asset!("run.js"),
    asset!("favicon.svg"),
];

/// The strong `ETag` of each asset (a hash of its bytes), computed once.
fn etags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body.as_bytes());
                format!("\"{}\"", hex::encode(&digest[..12]))
            })
            .collect()
    })
}

/// The dashboard's routes (no key needed: they serve the static shell only).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/ui", get(index))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// The asset `name`, or 304 when the client holds the same version, or a 404 problem detail.
fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        let names: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        return Problem::not_found(format!(
            "the dashboard has no file `{}`; it serves {}",
            name.escape_debug(),
            names.join(", ")
        ))
        .into_response();
    };
    let asset = &ASSETS[i];
    let etag = &etags()[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type())], asset.body).into_response()
    };
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_name_and_a_content_type() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty(), "{} is empty", a.name);
            assert!(ASSETS[..i].iter().all(|b| b.name != a.name), "{}", a.name);
            assert_ne!(
                a.content_type(),
                "application/octet-stream",
                "no content type known for {}",
                a.name
            );
        }
    }

    #[test]
    fn the_shell_has_no_inline_script_or_style_and_loads_nothing_from_elsewhere() {
        for a in ASSETS {
            // The SVG namespace is a name, not something loaded.
            let body = a.body.replace("http://www.w3.org/2000/svg", "");
            assert!(!body.contains("http://"), "{} names an http URL", a.name);
            assert!(!body.contains("https://"), "{} names an https URL", a.name);
            assert!(!body.contains(".innerHTML"), "{} uses innerHTML", a.name);
            assert!(!body.contains("eval("), "{} uses eval", a.name);
        }
        let html = ASSETS[0].body;
        for part in html.split("<script").skip(1) {
            let tag = part.split('>').next().unwrap_or_default();
            assert!(tag.contains("src="), "inline <script> in index.html: {tag}");
        }
        assert!(!html.contains("<style"), "inline <style> in index.html");
        assert!(
            !html.contains("style="),
            "inline style attribute in index.html"
        );
        for word in html.split_whitespace() {
            assert!(
                !(word.starts_with("on") && word.contains('=')),
                "inline event handler in index.html: {word}"
            );
        }
    }

    #[test]
    fn an_unchanged_asset_answers_304_and_an_unknown_one_404() {
        let res = serve("app.js", &HeaderMap::new());
        assert_eq!(res.status(), StatusCode::OK);
        let etag = res.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        assert_eq!(serve("app.js", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
