//! `shopctl`: the command line of shop-engine. It places and inspects orders, inspects and
//! steers workflow runs and definitions, reads the shop workers' data, runs a local stack
//! (`dev`), runs the showcase (`demo`), measures the engine (`bench`) and audits a running
//! system (`verify`).
//!
//! It is a thin client: every fact comes from the engine's HTTP API or a worker's admin API,
//! and it never reads their data directories. Data goes to stdout, everything else to
//! stderr; any error ends the process with exit code 1 and one line `shopctl: <reason>`
//! (`workflow watch` of a run that ends other than COMPLETED, `redrive` of a job that ends
//! stopped or interrupted: exit 3)
//! (clap's usage errors exit with 2).

mod client;
mod commands;
mod output;
mod stack;
mod timeline;

use anyhow::Result;
use clap::{Parser, Subcommand};
use commands::{
    bench::BenchArgs, cluster::ClusterCommand, definition::DefinitionCommand, demo::DemoArgs, dev::DevArgs,
    events::EventsCommand, notifications::NotificationsCommand, order::OrderCommand, payments::PaymentsCommand,
    redrive::RedriveArgs, stock::StockCommand, token::TokenCommand, verify::VerifyArgs, workflow::WorkflowCommand,
    Context,
};
use shop_types::auth::BearerToken;
use std::process::ExitCode;

const DEFAULT_ENGINE: &str = "http://127.0.0.1:8080";
const DEFAULT_WORKER: &str = "http://127.0.0.1:8081";

#[derive(Debug, Parser)]
#[command(name = "shopctl", version, about, propagate_version = true)]
struct Cli {
    /// The engine's base URL.
    #[arg(long, global = true, env = "SHOP_ENGINE", default_value = DEFAULT_ENGINE)]
    engine: String,
    /// The worker admin API's base URL (stock, payments, notifications).
    #[arg(long, global = true, env = "SHOP_WORKER", default_value = DEFAULT_WORKER)]
    worker: String,
    /// The credential (API token or JWT), sent as `Authorization: Bearer` to the engine and
    /// to the worker admin API (which takes the engine's admin credentials). Not needed for
    /// a stack running `--open` (`shopctl dev`).
    #[arg(long, global = true, env = "SHOP_TOKEN", hide_env_values = true)]
    token: Option<BearerToken>,
    /// Print the API's JSON answer, pretty, instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Place, show, list and cancel orders.
    #[command(subcommand)]
    Order(OrderCommand),
    /// List, show, start, cancel and terminate workflow runs; show their history.
    #[command(subcommand)]
    Workflow(WorkflowCommand),
    /// Why a run is where it is: its steps in flight, what it waits for, its timeouts, and
    /// what would move it on (`--json`: the `why` object of `GET /v1/workflows/{id}`).
    Why { id: shop_types::WorkflowId },
    /// Failed and parked runs grouped by error fingerprint: count, first and last seen, a
    /// sample run and its reason.
    Parked,
    /// Resume parked runs in bulk (a group, a type or a list of ids) and follow the job to
    /// its end; `redrive status JOB`, `redrive stop JOB`. Exit 3 when the job ends stopped
    /// or interrupted.
    Redrive(RedriveArgs),
    /// Follow every committed event of the engine (`events tail`).
    #[command(subcommand)]
    Events(EventsCommand),
    /// List and register workflow definitions.
    #[command(subcommand)]
    Definition(DefinitionCommand),
    /// Show and set the inventory's stock.
    #[command(subcommand)]
    Stock(StockCommand),
    /// Show the payment ledger.
    #[command(subcommand)]
    Payments(PaymentsCommand),
    /// Show the notification outbox.
    #[command(subcommand)]
    Notifications(NotificationsCommand),
    /// Create, list and revoke the engine's API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run an engine and a worker for every domain until Ctrl-C.
    Dev(DevArgs),
    /// Run the showcase on a private stack and check every outcome.
    Demo(DemoArgs),
    /// Measure sagas per second and latency on a fresh stack, then verify every order.
    Bench(BenchArgs),
    /// Audit a running system against the invariants: nothing lost, nothing doubled.
    Verify(VerifyArgs),
    /// The engine nodes of a cluster: shards per node, lease ages, epochs (admin).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<commands::NotCompleted>().is_some() => {
            output::note(&format!("shopctl: {err}"));
            ExitCode::from(commands::NOT_COMPLETED_EXIT)
        }
        Err(err) if is_broken_pipe(&err) => {
            // The reader went away (`shopctl ... | head`): not our failure to report.
            ExitCode::SUCCESS
        }
        Err(err) => {
            match client::hint(&err) {
                Some(hint) => output::note(&format!("shopctl: {} ({hint})", one_line(&err))),
                None => output::note(&format!("shopctl: {}", one_line(&err))),
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let ctx = || -> Result<Context> {
        let client = client::Client::new(&cli.engine, &cli.worker)?.with_token(cli.token.as_ref())?;
        Ok(Context { client, json: cli.json })
    };
    match cli.command {
        Command::Order(command) => commands::order::run(command, &ctx()?).await,
        Command::Workflow(command) => commands::workflow::run(command, &ctx()?).await,
        Command::Why { id } => commands::why::run(id, &ctx()?).await,
        Command::Parked => commands::redrive::parked(&ctx()?).await,
        Command::Redrive(args) => commands::redrive::run(args, &ctx()?).await,
        Command::Definition(command) => commands::definition::run(command, &ctx()?).await,
        Command::Events(command) => commands::events::run(command, &ctx()?).await,
        Command::Stock(command) => commands::stock::run(command, &ctx()?).await,
        Command::Payments(command) => commands::payments::run(command, &ctx()?).await,
        Command::Notifications(command) => commands::notifications::run(command, &ctx()?).await,
        Command::Token(command) => commands::token::run(command, &ctx()?).await,
        Command::Dev(args) => commands::dev::run(args).await,
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Bench(args) => commands::bench::run(args).await,
        Command::Verify(args) => commands::verify::run(args, &ctx()?).await,
        Command::Cluster(command) => commands::cluster::run(command, &ctx()?).await,
    }
}

/// The error and its causes on one line, as `context: cause: cause`, with any line breaks
/// inside a message (a server's, an OS's) flattened so scripts can read it with one `read`.
fn one_line(err: &anyhow::Error) -> String {
    format!("{err:#}").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn errors_print_as_one_line() {
        let err = anyhow::anyhow!("engine said:\nno").context("cannot get order x");
        assert_eq!(one_line(&err), "cannot get order x: engine said: no");
    }
}
