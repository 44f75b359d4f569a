//! Forwarding an allowed request: one pooled hyper client per route, headers rewritten the
//! way a reverse proxy must (RFC 9110 §7.6.1 hop-by-hop removal, forwarding headers and the
//! client identity set by us only), and bodies streamed both ways frame by frame under a
//! byte bound — never buffered, so a body can be far larger than the process's memory.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    BoxError,
    body::Body,
    http::{
        HeaderMap, HeaderName, HeaderValue, Request, Response, Uri, Version, header,
        request::Parts, uri::Authority,
    },
};
use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use crate::{
    app::{Caller, IDENTITY_HEADERS},
    config::RouteConfig,
    http::ApiError,
};

/// The header through which the upstream learns who the verified caller is. Set only by us;
/// a client-sent one is removed first.
pub const CLIENT_HEADER: &str = "x-countersign-client";
/// The decision that let the request through, for the upstream's logs and the caller's.
pub const DECISION_ID_HEADER: &str = "x-countersign-decision-id";

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1, plus the
/// non-standard `Proxy-Connection`); headers named in `Connection` are removed too, and any
/// other `Proxy-*`.
const HOP_BY_HOP_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Forwarding headers a client could use to lie about its origin; we set our own.
const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
    CLIENT_HEADER,
    DECISION_ID_HEADER,
];

/// A route's upstream: where to send, and the client that keeps the connection pool.
pub struct Upstream {
    route_name: String,
    authority: Authority,
    base_path: String,
    client: Client<HttpConnector, Body>,
    in_flight: Arc<Semaphore>,
    requests_in_flight_max: usize,
    response_headers_timeout: Duration,
    request_body_bytes_max: u64,
    response_body_bytes_max: u64,
}

impl Upstream {
    pub fn new(config: &RouteConfig) -> Upstream {
        let uri: Uri = config
            .upstream
            .parse()
            .expect("config validation: upstream is an http:// URL");
        let authority = uri
            .authority()
            .expect("config validation: upstream has a host")
            .clone();
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(config.connect_timeout_ms)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Upstream {
            route_name: config.name.clone(),
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            client,
            in_flight: Arc::new(Semaphore::new(config.requests_in_flight_max)),
            requests_in_flight_max: config.requests_in_flight_max,
            response_headers_timeout: Duration::from_millis(config.response_headers_timeout_ms),
            request_body_bytes_max: config.request_body_bytes_max,
            response_body_bytes_max: config.response_body_bytes_max,
        }
    }

    /// Takes one of the route's in-flight slots, before anything is decided: a request that
    /// cannot be forwarded now is neither decided nor audited.
    pub fn reserve(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Unavailable {
                code: "upstream.busy",
                message: format!(
                    "route {} has {} requests in flight; retry shortly",
                    self.route_name, self.requests_in_flight_max
                ),
            })
    }

    /// Sends the request upstream and relays the answer. The response body streams after
    /// this returns; the in-flight slot travels with it.
    pub async fn forward(
        &self,
        permit: OwnedSemaphorePermit,
        caller: &Caller,
        decision_id: Uuid,
        parts: Parts,
        body: Body,
    ) -> Result<Response<Body>, ApiError> {
        let target = match parts.uri.query() {
            Some(query) => format!("{}{}?{query}", self.base_path, parts.uri.path()),
            None => format!("{}{}", self.base_path, parts.uri.path()),
        };
        let uri = Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(target)
            .build()
            .map_err(|error| ApiError::bad_request("path.invalid", error.to_string()))?;
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
        });
        let mut headers = parts.headers;
        remove_hop_by_hop(&mut headers);
        for name in IDENTITY_HEADERS.iter().chain(FORWARDING_HEADERS) {
            headers.remove(*name);
        }
        // hyper sets Host from the URI: the upstream is addressed as itself; the name the
        // caller used travels in X-Forwarded-Host / Forwarded.
        headers.remove(header::HOST);
        set_forwarding_headers(&mut headers, caller, original_host.as_ref());
        headers.insert(CLIENT_HEADER, client_header(caller));
        headers.insert(DECISION_ID_HEADER, decision_header(decision_id));

        let mut request = Request::new(Body::new(LimitedBody::new(
            body,
            self.request_body_bytes_max,
            None,
        )));
        *request.method_mut() = parts.method;
        *request.uri_mut() = uri;
        // Upstreams are spoken to in HTTP/1.1 whatever the caller used.
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;

        let response = match tokio::time::timeout(
            self.response_headers_timeout,
            self.client.request(request),
        )
        .await
        {
            Ok(Ok(response)) => response,
            Ok(Err(error)) => return Err(self.failed(&error)),
            Err(_) => {
                tracing::warn!(route = %self.route_name, timeout_ms = self.response_headers_timeout.as_millis() as u64, "upstream did not answer in time");
                return Err(ApiError::GatewayTimeout {
                    code: "upstream.timeout",
                    message: format!(
                        "the upstream of route {} did not answer within {} ms",
                        self.route_name,
                        self.response_headers_timeout.as_millis()
                    ),
                });
            }
        };
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(DECISION_ID_HEADER, decision_header(decision_id));
        let body = Body::new(LimitedBody::new(
            body,
            self.response_body_bytes_max,
            Some(permit),
        ));
        Ok(Response::from_parts(parts, body))
    }

    fn failed(&self, error: &hyper_util::client::legacy::Error) -> ApiError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(cause) = source {
            if let Some(too_large) = cause.downcast_ref::<BodyTooLarge>() {
                return ApiError::PayloadTooLarge {
                    limit_bytes: usize::try_from(too_large.limit_bytes).unwrap_or(usize::MAX),
                };
            }
            source = cause.source();
        }
        let detail =
            std::iter::successors(Some(error as &(dyn std::error::Error + 'static)), |error| {
                error.source()
            })
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        tracing::warn!(route = %self.route_name, connect = error.is_connect(), error = %detail, "upstream request failed");
        ApiError::BadGateway {
            code: "upstream.unavailable",
            message: format!(
                "the upstream of route {} could not be reached or broke off the exchange",
                self.route_name
            ),
        }
    }
}

/// A path the upstream could read differently from us (dot segments, encoded separators,
/// empty segments) is refused: the policy decided on our reading.
pub fn check_path(path: &str) -> Result<(), ApiError> {
    let lowered = path.to_ascii_lowercase();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let ambiguous = path.contains('\\')
        || ["%2e", "%2f", "%5c", "%00"]
            .iter()
            .any(|encoded| lowered.contains(encoded))
        || segments.iter().enumerate().any(|(index, segment)| {
            // A trailing `/` gives one empty last segment, which is fine.
            let last = index + 1 == segments.len();
            *segment == "." || *segment == ".." || (segment.is_empty() && !last)
        });
    if ambiguous {
        return Err(ApiError::bad_request(
            "path.not_normalized",
            "the path must not contain dot segments, empty segments, backslashes or encoded separators",
        ));
    }
    Ok(())
}

/// The Content-Length the caller declared, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok())
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP_HEADERS {
        headers.remove(*name);
    }
    let proxy_headers: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_headers {
        headers.remove(name);
    }
}

fn set_forwarding_headers(headers: &mut HeaderMap, caller: &Caller, host: Option<&HeaderValue>) {
    let address = caller.remote_address;
    let ip = HeaderValue::from_str(&address.ip().to_string()).expect("an IP address is ASCII");
    headers.insert("x-forwarded-for", ip);
    headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    // RFC 7239: a node with a port (and any IPv6 address) is a quoted string.
    let mut forwarded = format!("for=\"{address}\";proto=https");
    if let Some(host) = host.and_then(|host| host.to_str().ok())
        && host
            .bytes()
            .all(|byte| byte.is_ascii_graphic() && byte != b'"' && byte != b'\\')
    {
        forwarded.push_str(&format!(";host=\"{host}\""));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_str(host).expect("checked: visible ASCII"),
        );
    }
    headers.insert(
        "forwarded",
        HeaderValue::from_str(&forwarded).expect("built from visible ASCII"),
    );
}

/// `fingerprint=<hex>;serial=<hex>;cn=<pct>;roles=<pct>,<pct>` — every value from the
/// verified certificate, percent-encoded so no certificate field can inject a separator.
fn client_header(caller: &Caller) -> HeaderValue {
    let identity = &caller.identity;
    let mut value = format!(
        "fingerprint={};serial={}",
        percent_encode(&identity.fingerprint_sha256),
        percent_encode(&identity.serial)
    );
    if let Some(common_name) = &identity.common_name {
        value.push_str(";cn=");
        value.push_str(&percent_encode(common_name));
    }
    value.push_str(";roles=");
    value.push_str(
        &identity
            .roles
            .iter()
            .map(|role| percent_encode(role))
            .collect::<Vec<_>>()
            .join(","),
    );
    HeaderValue::from_str(&value).expect("percent-encoded text is visible ASCII")
}

fn decision_header(decision_id: Uuid) -> HeaderValue {
    HeaderValue::from_str(&decision_id.to_string()).expect("a UUID is ASCII")
}

fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A body passed on frame by frame that fails once more than `limit_bytes` went through.
/// It holds no more than the frame in hand, whatever the body's length.
struct LimitedBody<B> {
    inner: B,
    remaining_bytes: u64,
    limit_bytes: u64,
    /// The route's in-flight slot, released when the response body is done or dropped.
    _permit: Option<OwnedSemaphorePermit>,
}

impl<B> LimitedBody<B> {
    fn new(inner: B, limit_bytes: u64, permit: Option<OwnedSemaphorePermit>) -> Self {
        LimitedBody {
            inner,
            remaining_bytes: limit_bytes,
            limit_bytes,
            _permit: permit,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("body exceeds the route's limit of {limit_bytes} bytes")]
struct BodyTooLarge {
    limit_bytes: u64,
}

impl<B> hyper::body::Body for LimitedBody<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match ready!(Pin::new(&mut this.inner).poll_frame(context)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Poll::Ready(Some(Err(error.into()))),
            None => return Poll::Ready(None),
        };
        if let Some(data) = frame.data_ref() {
            let length = data.len() as u64;
            if length > this.remaining_bytes {
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                    limit_bytes: this.limit_bytes,
                }))));
            }
            this.remaining_bytes -= length;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Custom-Hop"),
            ("keep-alive", "timeout=5"),
            ("x-custom-hop", "1"),
            ("proxy-authorization", "Basic x"),
            ("proxy-anything", "1"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "websocket"),
            ("accept", "application/json"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for path in ["/s", "/s/", "/s/a/b", "/s/a.b/c", "/s/..a"] {
            assert!(check_path(path).is_ok(), "{path}");
        }
        for path in [
            "/s/../v1/transfers",
            "/s/./a",
            "/s//a",
            "/s/%2e%2e/x",
            "/s/a%2Fb",
            "/s\\a",
            "/s/..",
        ] {
            assert!(check_path(path).is_err(), "{path}");
        }
    }

    #[test]
    fn certificate_fields_cannot_inject_separators() {
        assert_eq!(
            percent_encode("mobile;roles=admin"),
            "mobile%3Broles%3Dadmin"
        );
        assert_eq!(percent_encode("a b,é"), "a%20b%2C%C3%A9");
    }
}
