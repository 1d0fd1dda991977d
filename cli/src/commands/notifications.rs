//! `shopctl notifications list`: the notification worker's outbox.
//!
//! Read-only: the outbox is written by the notification activity alone.

use super::Context;
use crate::output::Table;
use anyhow::Result;
use clap::Subcommand;
use shop_types::order::NotificationEntry;

#[derive(Debug, Subcommand)]
pub enum NotificationsCommand {
    /// List every notification sent.
    List,
}

pub async fn run(command: NotificationsCommand, ctx: &Context) -> Result<()> {
    match command {
        NotificationsCommand::List => {
            let reply = list(ctx).await?;
            ctx.show(&reply, |entries| {
                let mut table = Table::with_header(&["ORDER", "KIND", "MESSAGE"]);
                for entry in entries {
                    table.row(vec![entry.order_id.clone(), entry.kind.clone(), entry.message.clone()]);
                }
                table.print()
            })
        }
    }
}

/// `GET /notifications`; shared with the demo.
pub async fn list(ctx: &Context) -> Result<crate::client::Reply<Vec<NotificationEntry>>> {
    Ok(ctx.client.worker().notifications().await?)
}
