//! The console's page frame (head, navigation, who is signed in, logout) and the pieces
//! every page shares: HTML answers, the error page, times and status badges.
//!
//! It must never render a value unescaped (maud escapes every `(expr)`; `PreEscaped` is
//! used for our own constant text only) and never show a session id or a credential.

use super::session::{Session, CSRF_FIELD};
use super::NAV;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use shop_types::api::WorkflowStatus;

/// An HTML answer with `status`.
pub(crate) fn html_response(status: StatusCode, markup: Markup) -> Response {
    let mut response = (status, markup.into_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}

/// A whole page: the frame around `body`, with the navigation (`current` marked) when
/// someone is signed in.
pub(crate) fn layout(title: &str, session: Option<&Session>, current: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · shop-engine" }
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/console/runs" { "shop-engine" }
                    @if let Some(session) = session {
                        nav {
                            @for (path, label) in NAV {
                                a href=(path) class=[(*path == current).then_some("current")] { (label) }
                            }
                        }
                        span.who data-testid="who" {
                            (session.principal.subject.to_string()) " · " (session.principal.role.to_string())
                        }
                        form.logout method="post" action="/console/logout" {
                            (csrf_field(session))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// The hidden field that carries the session's CSRF token in a form.
pub(crate) fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(session.csrf); }
}

/// An error as a page: what went wrong, in one sentence, with the status.
pub(crate) fn error_page(session: Option<&Session>, status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    let body = html! {
        section.error data-testid="error" {
            h1 { (status.as_u16()) " " (title) }
            p.message { (message) }
            p { a href="/console/runs" { "Back to the runs" } }
        }
    };
    html_response(status, layout(title, session, "", body))
}

/// Whether the signed-in user may act on runs (cancel, terminate, resume): the API's rule.
pub(crate) fn may_act(session: &Session) -> bool {
    crate::api::auth::Access::Admin.allows(session.principal.role)
}

/// A run's status as a badge (its CSS class is the status).
pub(crate) fn status_badge(status: WorkflowStatus, parked: bool) -> Markup {
    let label = if parked { "FAILED (parked)" } else { status.as_str() };
    html! { span class={"status status-" (status.as_str().to_ascii_lowercase())} data-status=(status.as_str()) { (label) } }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS.mmm` UTC.
pub(crate) fn timestamp(ms: u64) -> String {
    let secs = ms / 1_000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        ms % 1_000
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14 22:13:20.123");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
