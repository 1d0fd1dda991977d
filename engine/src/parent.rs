//! `--exit-with-parent` for the `shop-engine` binary (a module of the binary, not of the
//! library): the shutdown future also completes when stdin reaches EOF, i.e. when the
//! supervisor that spawned the engine with a piped stdin has gone away, however it ended.
//!
//! It only adds a reason to shut down; the shutdown itself is the same graceful one as on
//! SIGTERM, so nothing here may stop the process or touch the store.

use std::future::Future;

/// Completes when `signal` does or, when `enabled`, when stdin ends, whichever is first.
pub async fn or_parent_gone(enabled: bool, signal: impl Future<Output = ()>) {
    if !enabled {
        return signal.await;
    }
    let (gone, parent_gone) = tokio::sync::oneshot::channel::<()>();
    if let Err(err) = shop_types::parent::on_eof(std::io::stdin(), move || {
        // The receiver is gone only when the engine is already shutting down.
        let _ = gone.send(());
    }) {
        tracing::error!(error = %err, "cannot watch stdin for --exit-with-parent; only signals stop the engine");
        return signal.await;
    }
    tokio::select! {
        () = signal => {}
        _ = parent_gone => tracing::info!("stdin closed: the parent process is gone; shutting down (--exit-with-parent)"),
    }
}
