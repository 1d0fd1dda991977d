//! The console's static files (its one script and its style sheet), built into the binary
//! with `include_str!`, so `cargo build` alone makes a whole console: no npm, no CDN.
//!
//! It must never serve a file it was not built with (no file-system path ever reaches it).

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The files, by name: (name, content type, content).
const FILES: &[(&str, &str, &str)] = &[
    ("console.js", "text/javascript; charset=utf-8", include_str!("static/console.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("static/console.css")),
];

/// `GET /console/static/{file}`: public (the login page needs its style), cacheable for a
/// short while (a new engine build may change them).
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(name, _, _)| *name == file) else {
        return (StatusCode::NOT_FOUND, "no such console file").into_response();
    };
    let mut response = (*body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}
