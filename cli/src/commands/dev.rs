//! `shopctl dev`: runs an engine (or `--nodes N` engine nodes of one cluster on one
//! PostgreSQL database) and one worker serving every domain until Ctrl-C.
//!
//! Owns only the command's arguments and its lifetime: start, report where the stack
//! listens, wait for a signal or a death, stop. Starting and stopping processes is
//! [`crate::stack`]'s job.

use crate::output::{self, Table};
use crate::stack::{interrupted, ChildOutput, Stack, StackOptions, WorkerLayout, MAX_LOCAL_NODES};
use anyhow::{anyhow, Result};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the engine and the worker keep their data (created if missing).
    #[arg(long, default_value = "shop-data")]
    data_dir: PathBuf,
    /// The engine's API address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The worker's admin API address.
    #[arg(long, default_value = "127.0.0.1:8081")]
    worker_listen: SocketAddr,
    /// The workflow definitions directory (default: ./workflows if it exists, else the
    /// built-in order definition).
    #[arg(long)]
    workflows: Option<PathBuf>,
    /// Keep the engine's histories in PostgreSQL (`postgres://user@host:port/db`) instead of
    /// sled under `--data-dir` (passed to `shop-engine --store`).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Export traces of the engine and the worker over OTLP/HTTP to this collector (e.g.
    /// Jaeger or Tempo at `http://127.0.0.1:4318`); passed to both as `--otlp-endpoint`.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Engine nodes to run, on consecutive ports from `--listen`, sharing the shards of one
    /// PostgreSQL database (`--store`, required for more than one). The worker is given the
    /// first node's URL and polls every live node.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_LOCAL_NODES)))]
    nodes: u16,
}

/// `--otlp-endpoint URL` for a child, when tracing is asked for.
pub fn otlp_args(endpoint: Option<&str>) -> Vec<String> {
    endpoint.map(|url| vec!["--otlp-endpoint".to_owned(), url.to_owned()]).unwrap_or_default()
}

pub async fn run(args: DevArgs) -> Result<()> {
    if args.nodes > 1 && args.store.is_none() {
        return Err(anyhow!(
            "--nodes {} needs --store postgres://...: sled is owned by one process, so a cluster shares a database",
            args.nodes
        ));
    }
    let options = StackOptions {
        data_dir: args.data_dir,
        engine_listen: args.listen,
        worker_listen: args.worker_listen,
        workflows: args.workflows,
        output: ChildOutput::Inherit,
        layout: WorkerLayout::Combined,
        engine_args: [super::bench::store_args(&args.store), otlp_args(args.otlp_endpoint.as_deref())].concat(),
        worker_args: otlp_args(args.otlp_endpoint.as_deref()),
        nodes: args.nodes,
    };
    // A signal during start-up drops the half-started stack, which kills its children.
    let mut stack = tokio::select! {
        stack = Stack::start(&options) => stack?,
        signal = interrupted() => {
            signal?;
            return Ok(());
        }
    };
    let engine = stack.client().engine().base_str().to_owned();
    let worker = stack.client().worker().base_str().to_owned();
    let mut table = Table::without_header();
    let several = stack.engine_urls().len() > 1;
    for (index, url) in stack.engine_urls().iter().enumerate() {
        // Any node serves any request (it forwards what another node owns).
        let suffix = if several { format!(" (node {})", index + 1) } else { String::new() };
        table.row(vec![format!("engine{suffix}"), url.clone()]);
        table.row(vec![format!("console{suffix}"), format!("{}/console", url.trim_end_matches('/'))]);
    }
    table.row(vec!["worker admin".into(), worker.clone()]);
    // The browser's stream of a customer's notifications (tickets: POST /api/notifications/tickets).
    let notifications = format!(
        "{}{}?ticket=<ticket>",
        worker.replacen("http", "ws", 1).trim_end_matches('/'),
        shop_types::notify::NOTIFICATION_WS_PATH
    );
    table.row(vec!["notifications".into(), notifications]);
    table.row(vec!["data".into(), options.data_dir.display().to_string()]);
    table.print()?;
    output::note(&format!(
        "ready: try `shopctl order place --item 1:2 --wait 30s` \
         (SHOP_ENGINE={engine} SHOP_WORKER={worker}); Ctrl-C stops both"
    ));
    let outcome = tokio::select! {
        signal = interrupted() => signal.map(|signal| {
            output::note(&format!("{signal}: stopping the worker and the engine"));
        }),
        died = stack.died() => Err(anyhow!("{died}; stopping the others")),
    };
    stack.stop().await;
    outcome
}
