//! HTTP handlers. Wire types live here and are converted to domain types at the edge.

pub mod accounts;
pub mod admin;
pub mod admission;
pub mod approvals;
pub mod audit;
pub mod error;
pub mod export;
pub mod opa;
pub mod ops;
pub mod reveal;
pub mod transfers;

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use serde::de::DeserializeOwned;

pub use error::ApiError;

/// Decodes a JSON body strictly: Content-Type must be JSON, the body within its limit,
/// syntax errors are 400 and type or field errors 422, each naming the field.
pub fn decode_json<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    body_bytes_max: usize,
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit_bytes: body_bytes_max,
            }
        } else {
            ApiError::bad_request("body.unreadable", rejection.body_text())
        }
    })?;
    let mut deserializer = serde_json::Deserializer::from_slice(&body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad_request(
                "body.malformed_json",
                format!("request body is not valid JSON: {inner}"),
            )
        } else if path == "." {
            ApiError::unprocessable("body.invalid", inner.to_string())
        } else {
            ApiError::unprocessable("body.invalid", format!("{path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|error| {
        ApiError::bad_request(
            "body.malformed_json",
            format!("trailing data after the JSON document: {error}"),
        )
    })?;
    Ok(value)
}
