//! The auditor console: one static page (HTML, CSS and vanilla JavaScript embedded in the
//! binary, no build step, nothing fetched from elsewhere) at `GET /console`, over the same
//! mTLS as the API and for the `auditor` role only.
//!
//! The page holds no data of its own: it calls the audit API (`/v1/audit/records`,
//! `/v1/audit/records/{id}`, `/v1/audit/stats`, `/v1/audit/public-key`) with the browser's
//! client certificate, so every search and every record opened is audited by those endpoints,
//! and the role check there is the one that protects records. The check here keeps the page
//! itself (which reveals which filters exist, nothing more) to auditors. Inclusion proofs are
//! verified in the browser (RFC 6962 hashing with WebCrypto) so an auditor does not have to
//! trust the server's word that a record is in a signed checkpoint.
//!
//! Every response under `/console` — the 403 too — carries strict security headers: a CSP that
//! allows scripts, styles, images and fetches from this origin only and no inline script, no
//! framing, no sniffing, no caching (records are sensitive, and a shared machine's cache must
//! not keep them).

use axum::{
    Extension, Router,
    extract::Path,
    http::{HeaderName, HeaderValue, header},
    middleware,
    response::{IntoResponse, Response},
    routing::get,
};
use std::sync::Arc;

use crate::{
    app::{AppState, Caller},
    http::ApiError,
};

/// Who may load the console: the auditors, whom the audit API it calls serves.
const CONSOLE_ROLES: &[&str] = crate::http::audit::AUDITOR_ROLES;

/// One embedded file of the page.
struct Asset {
    /// The file name under `/console/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("index.html"),
};

/// What `/console/{name}` serves; the page references exactly these (a unit test checks).
const ASSETS: &[Asset] = &[
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("console.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("favicon.svg"),
    },
];

/// Scripts, styles, images and `fetch` from this origin only; no inline script or style
/// attribute, no plugins, no `<base>`, no form posting anywhere (the search form is handled
/// by the script), and no framing (clickjacking).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    // For browsers that predate `frame-ancestors`.
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    ),
];

/// The console's routes, merged into the application router (inside its layers: identity
/// headers are stripped and latency is recorded as for every route).
pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(index))
        .route("/console/{name}", get(asset))
        // Outermost on these routes, so the role refusal and the 404 carry the headers too.
        .layer(middleware::map_response(with_security_headers))
}

async fn index(Extension(caller): Extension<Caller>) -> Result<Response, ApiError> {
    require_auditor(&caller)?;
    Ok(serve(&INDEX))
}

async fn asset(
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    // The role first: a caller without it learns nothing, not even which files exist.
    require_auditor(&caller)?;
    let asset = ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .ok_or_else(|| ApiError::NotFound {
            code: "console.not_found",
            message: "no such console file".into(),
        })?;
    Ok(serve(asset))
}

fn require_auditor(caller: &Caller) -> Result<(), ApiError> {
    if caller.identity.has_any_role(CONSOLE_ROLES) {
        Ok(())
    } else {
        Err(ApiError::RoleRequired {
            roles: CONSOLE_ROLES,
        })
    }
}

fn serve(asset: &Asset) -> Response {
    ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
}

async fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `src`/`href` under /console/ in the page names an embedded asset, and every asset
    /// but the page itself is referenced.
    #[test]
    fn the_page_references_exactly_the_embedded_assets() {
        let referenced: Vec<&str> = INDEX
            .body
            .split("\"/console/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect();
        let mut embedded: Vec<&str> = ASSETS.iter().map(|asset| asset.name).collect();
        let mut sorted = referenced.clone();
        sorted.sort_unstable();
        embedded.sort_unstable();
        assert_eq!(sorted, embedded, "referenced: {referenced:?}");
    }

    /// The CSP forbids inline script and style attributes: the page must not rely on them,
    /// and the script must not build HTML from strings (record fields are data).
    #[test]
    fn nothing_inline_that_the_policy_would_block() {
        let html = INDEX.body.to_ascii_lowercase();
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap();
            assert!(
                tag.contains("src=\"/console/"),
                "inline script: <script{tag}>"
            );
        }
        assert!(!html.contains("<style"), "inline <style>");
        assert!(!html.contains(" style="), "style attribute");
        // No inline event handler attribute (` onclick=`, ` onload=`, ...).
        for (at, _) in html.match_indices(" on") {
            let name: String = html[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            assert!(
                !html[at + 1 + name.len()..].starts_with('='),
                "inline event handler {name}="
            );
        }
        for (name, source) in [("console.js", ASSETS[0].body)] {
            for forbidden in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "eval(",
                "document.write",
            ] {
                assert!(!source.contains(forbidden), "{name} uses {forbidden}");
            }
        }
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
    }
}
