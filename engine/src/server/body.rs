//! Body wrappers of the connection layer: [`TimedBody`] puts a deadline on reading a request
//! body and records whether it was read to its end; [`GuardedBody`] keeps a value alive until
//! a response body has been written.
//!
//! They own no policy beyond that: what to answer after a timeout, and when to say
//! `Connection: close`, is the server's decision (`server::conn`). They must never buffer.

use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// What the server learns about a request body while the service reads it.
#[derive(Debug, Default)]
pub(super) struct BodyState {
    /// The body was read to its end (or there was none), so the connection is in step.
    pub done: AtomicBool,
    /// Reading the body ran past the body timeout.
    pub timed_out: AtomicBool,
}

/// The error a [`TimedBody`] gives when its deadline passes.
#[derive(Debug, thiserror::Error)]
#[error("the request body was not received within {0:?}")]
pub(super) struct BodyTimeout(Duration);

/// A request body that must be read to its end within a deadline that starts when the head
/// was received. The deadline only runs while the body is being polled, so a handler that
/// read its body and then waits (a long poll) is never cut by it.
pub(super) struct TimedBody<B> {
    inner: B,
    limit: Duration,
    deadline: Pin<Box<Sleep>>,
    state: Arc<BodyState>,
}

impl<B: Body + Unpin> TimedBody<B> {
    pub(super) fn new(inner: B, limit: Duration, state: Arc<BodyState>) -> Self {
        TimedBody { inner, limit, deadline: Box::pin(tokio::time::sleep(limit)), state }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.state.done.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(frame))) => {
                if this.inner.is_end_stream() {
                    this.state.done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.state.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(Box::new(BodyTimeout(this.limit)))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds `guard` until hyper has written it and dropped it.
pub(super) struct GuardedBody<B, G> {
    inner: B,
    _guard: G,
}

impl<B, G> GuardedBody<B, G> {
    pub(super) fn new(inner: B, guard: G) -> Self {
        GuardedBody { inner, _guard: guard }
    }
}

impl<B: Body + Unpin, G: Unpin> Body for GuardedBody<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
