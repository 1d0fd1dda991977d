//! `ApiJson`: the one JSON body extractor of the API. It turns every way a body can be wrong
//! into an [`ApiError`] and is stricter than a plain `serde_json` parse:
//!
//! - 415 `UNSUPPORTED_MEDIA_TYPE` without a JSON content type;
//! - 413 `BODY_TOO_LARGE` over [`MAX_BODY_BYTES`];
//! - 400 `MALFORMED_JSON` when it is not one JSON document: bad syntax, anything but white
//!   space after the document, or a lone UTF-16 surrogate escape (`"\ud800"`) anywhere in it
//!   (it names no character, so no payload may carry one into a history or to a worker);
//! - 422 `INVALID_BODY` when it is JSON of the wrong shape: not an object (every request body
//!   of the API is one; serde would otherwise take an array for a struct, field by field),
//!   a missing field, a wrong type, an unknown field, nesting deeper than `MAX_JSON_DEPTH`.
//!   The message names the field by its path (`orderItems[0].priceCents`).
//!
//! It must never hand a handler a value that a stricter reading of the same bytes would
//! refuse.

use super::ApiError;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use shop_types::json::check_text;
use shop_types::limits::MAX_BODY_BYTES;

pub struct ApiJson<T>(pub T);

#[axum::async_trait]
impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !has_json_content_type(request.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "expected a body with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large()
            } else {
                ApiError::bad_request("BAD_BODY", rejection.body_text())
            }
        })?;
        parse(&bytes).map(ApiJson)
    }
}

pub(crate) fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "BODY_TOO_LARGE",
        format!("request body is larger than {MAX_BODY_BYTES} bytes"),
    )
}

/// `application/json`, or any `application/*+json`, with or without parameters.
fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads `bytes` as exactly one JSON object of type `T`, by the rules in the module doc.
pub(crate) fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let malformed = |message: String| ApiError::bad_request("MALFORMED_JSON", message);
    let invalid = |message: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY", message);
    if let Err(problem) = check_text(bytes) {
        return Err(match problem {
            shop_types::json::JsonTextError::LoneSurrogate(_) => malformed(problem.to_string()),
            shop_types::json::JsonTextError::TooDeep => invalid(problem.to_string()),
        });
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|b| *b != b'{') {
        // Well-formed JSON of another kind is a wrong shape; anything else a syntax error.
        return Err(match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => invalid("the body must be a JSON object".into()),
            Err(error) => malformed(error.to_string()),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        let message = if path == "." { inner.to_string() } else { format!("{path}: {inner}") };
        match inner.classify() {
            serde_json::error::Category::Data => invalid(message),
            _ => malformed(message),
        }
    })?;
    deserializer.end().map_err(|error| malformed(format!("data after the JSON document: {error}")))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::order::PlaceOrderRequest;

    fn status_of(body: &str) -> (StatusCode, String) {
        match parse::<PlaceOrderRequest>(body.as_bytes()) {
            Ok(_) => (StatusCode::OK, String::new()),
            Err(error) => (error.status, error.message),
        }
    }

    const ORDER: &str =
        r#"{"orderItems":[{"productId":1,"quantity":1}],"shippingAddress":"1 Main St","paymentMethod":"CREDIT_CARD"}"#;

    #[test]
    fn a_plain_order_parses() {
        assert_eq!(status_of(ORDER).0, StatusCode::OK);
        assert_eq!(status_of(&format!("  {ORDER}\n")).0, StatusCode::OK);
    }

    #[test]
    fn trailing_data_is_malformed() {
        assert_eq!(status_of(&format!("{ORDER}garbage")).0, StatusCode::BAD_REQUEST);
        assert_eq!(status_of(&format!("{ORDER}{ORDER}")).0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_array_in_place_of_the_object_is_a_wrong_shape() {
        let (status, _) = status_of(r#"[null,[[1,1]],"1 Main St","CREDIT_CARD"]"#);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status_of("[1,").0, StatusCode::BAD_REQUEST);
        assert_eq!(status_of("\"text\"").0, StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn unknown_fields_are_refused_by_path() {
        let body = r#"{"orderItems":[{"productId":1,"quantity":1,"priceCents":0}],"shippingAddress":"a","paymentMethod":"CREDIT_CARD"}"#;
        let (status, message) = status_of(body);
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(message.contains("orderItems[0]") && message.contains("priceCents"), "{message}");
    }

    #[test]
    fn lone_surrogates_are_malformed_wherever_they_are() {
        let body = ORDER.replace("1 Main St", "\\ud800");
        assert_eq!(status_of(&body).0, StatusCode::BAD_REQUEST);
        let pair = ORDER.replace("1 Main St", "\\ud83d\\ude00");
        assert_eq!(status_of(&pair).0, StatusCode::OK);
    }

    #[test]
    fn content_types_are_matched_by_essence() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("valid header"));
            has_json_content_type(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/problem+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonx"));
        assert!(!has_json_content_type(&HeaderMap::new()));
    }
}
