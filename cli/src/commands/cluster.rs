//! `shopctl cluster status`: the engine nodes of a cluster, the shards each owns, their lease
//! ages and epochs, as the engine asked sees them (`GET /v1/cluster`).
//!
//! Owns how the cluster is shown; the engine owns placement and leases.

use super::Context;
use crate::output::{self, Table};
use anyhow::Result;
use clap::Subcommand;
use shop_types::cluster::ClusterStatus;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes (live or not, heartbeat age, shards owned), then every shard's owner, epoch and
    /// lease expiry; and the writes the answering node had refused as fenced.
    Status,
}

pub async fn run(command: ClusterCommand, ctx: &Context) -> Result<()> {
    match command {
        ClusterCommand::Status => {
            let reply = ctx.client.engine().cluster().await?;
            ctx.show(&reply, render)
        }
    }
}

fn render(status: &ClusterStatus) -> Result<()> {
    output::line(&format!(
        "{} store, {} shards, answered by {}; fence rejections there: {}",
        status.store, status.shard_count, status.node, status.fence_rejections
    ))?;
    let mut nodes = Table::with_header(&["NODE", "URL", "LIVE", "HEARTBEAT AGE", "SHARDS"]);
    for node in &status.nodes {
        nodes.row(vec![
            node.id.clone(),
            node.url.clone(),
            if node.live { "yes" } else { "no" }.to_owned(),
            format!("{} ms", node.heartbeat_age_ms),
            node.shards_owned.to_string(),
        ]);
    }
    nodes.print()?;
    output::line("")?;
    let mut shards = Table::with_header(&["SHARD", "OWNER", "EPOCH", "LEASE EXPIRES IN"]);
    for shard in &status.shards {
        let expiry = if shard.lease_expires_in_ms >= 0 {
            format!("{} ms", shard.lease_expires_in_ms)
        } else {
            format!("expired {} ms ago", -shard.lease_expires_in_ms)
        };
        shards.row(vec![
            shard.shard.to_string(),
            output::or_dash(shard.owner.as_deref()),
            shard.epoch.to_string(),
            expiry,
        ]);
    }
    shards.print()
}
