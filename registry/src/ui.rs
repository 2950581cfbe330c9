//! The web UI at `/ui/`: one page and its scripts, compiled into the binary (nothing to
//! install, works offline). The page is a client of the public `/api/v1` with the user's token
//! as a bearer header (kept in the tab's `sessionStorage`): no cookies, so no CSRF, and no
//! side door. The files live in `registry/ui/`; the chart library (uPlot, MIT) is vendored in
//! `registry/ui/vendor/` by `scripts/update-ui-vendor.sh`.
//!
//! Every `/ui/…` path that is not an asset answers the page, which routes on the path itself,
//! so each view has a stable URL (`/ui/models/fraud`, `/ui/endpoints/fraud`). `/` sends
//! browsers (an `Accept` with `text/html`) to `/ui/`.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page's policy: only this origin's scripts, styles and API; never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
    etag: String,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    let asset = |name, content_type, bytes: &'static [u8]| Asset {
        name,
        content_type,
        bytes,
        etag: format!("\"{:016x}\"", fnv1a(bytes)),
    };
    vec![
        asset(
            "index.html",
            "text/html; charset=utf-8",
            include_bytes!("../ui/index.html"),
        ),
        asset(
            "app.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../ui/app.js"),
        ),
        asset(
            "app.css",
            "text/css; charset=utf-8",
            include_bytes!("../ui/app.css"),
        ),
        asset(
            "uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
            include_bytes!("../ui/vendor/uPlot.iife.min.js"),
        ),
        asset(
            "uPlot.min.css",
            "text/css; charset=utf-8",
            include_bytes!("../ui/vendor/uPlot.min.css"),
        ),
        asset(
            "uPlot.LICENSE",
            "text/plain; charset=utf-8",
            include_bytes!("../ui/vendor/uPlot.LICENSE"),
        ),
    ]
});

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The page for a server with tokens (`open` false) or without: its `ferry-auth` meta tells the
/// script whether to ask for a token before its first call (so that a fresh tab does not start
/// with a refused request).
static PAGES: LazyLock<[Asset; 2]> = LazyLock::new(|| {
    let index = ASSETS
        .iter()
        .find(|a| a.name == "index.html")
        .map_or(&[][..], |a| a.bytes);
    let text = String::from_utf8_lossy(index);
    [false, true].map(|open| {
        let auth = if open { "open" } else { "tokens" };
        let bytes: &'static [u8] = Box::leak(
            text.replace(
                r#"<meta name="ferry-auth" content="open">"#,
                &format!(r#"<meta name="ferry-auth" content="{auth}">"#),
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        Asset {
            name: "index.html",
            content_type: "text/html; charset=utf-8",
            bytes,
            etag: format!("\"{:016x}\"", fnv1a(bytes)),
        }
    })
});

/// The UI's routes (no token needed: the files hold no data; every call they make does).
/// `open`: the server runs without tokens.
pub fn routes(open: bool) -> Router {
    let page =
        move |headers: HeaderMap| async move { respond(&PAGES[usize::from(open)], &headers) };
    Router::new()
        .route("/", get(root))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(page))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/{*path}", get(page))
}

async fn root(headers: HeaderMap) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        Redirect::to("/ui/").into_response()
    } else {
        crate::api::not_found(axum::http::Uri::from_static("/"))
            .await
            .into_response()
    }
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == "index.html" {
        return StatusCode::NOT_FOUND.into_response();
    }
    serve(&file, &headers)
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => respond(asset, headers),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

fn respond(asset: &Asset, headers: &HeaderMap) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.bytes).into_response()
    };
    let h = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&asset.etag) {
        h.insert(header::ETAG, etag);
    }
    // Revalidated on every load (an ETag hit is a 304): a new binary's UI shows at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored uPlot release (`scripts/update-ui-vendor.sh` rewrites this line).
    const UPLOT_VERSION: &str = "1.6.32";

    #[test]
    fn every_asset_is_compiled_in_with_its_type() {
        for name in [
            "index.html",
            "app.js",
            "app.css",
            "uPlot.iife.min.js",
            "uPlot.min.css",
            "uPlot.LICENSE",
        ] {
            let asset = ASSETS.iter().find(|a| a.name == name).unwrap();
            assert!(!asset.bytes.is_empty(), "{name}");
        }
        let uplot = ASSETS
            .iter()
            .find(|a| a.name == "uPlot.iife.min.js")
            .unwrap();
        let head = String::from_utf8_lossy(&uplot.bytes[..80]);
        assert!(head.contains(&format!("(v{UPLOT_VERSION})")), "{head}");
    }

    #[test]
    fn the_page_says_whether_the_server_has_tokens() {
        let text =
            |open: bool| String::from_utf8_lossy(PAGES[usize::from(open)].bytes).into_owned();
        assert!(text(false).contains(r#"<meta name="ferry-auth" content="tokens">"#));
        assert!(text(true).contains(r#"<meta name="ferry-auth" content="open">"#));
        assert_ne!(PAGES[0].etag, PAGES[1].etag);
    }
}
