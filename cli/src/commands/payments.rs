//! `shopctl payments list`: the payment worker's ledger of charges and refunds.
//!
//! Read-only: the ledger is written by the payment activity alone.

use super::Context;
use crate::output::{self, Table};
use anyhow::Result;
use clap::Subcommand;
use shop_types::order::PaymentEntry;

#[derive(Debug, Subcommand)]
pub enum PaymentsCommand {
    /// List every charge and refund.
    List,
}

pub async fn run(command: PaymentsCommand, ctx: &Context) -> Result<()> {
    match command {
        PaymentsCommand::List => {
            let reply = list(ctx).await?;
            ctx.show(&reply, |entries| {
                let mut table = Table::with_header(&["ORDER", "KIND", "AMOUNT", "IDEMPOTENCY KEY"]);
                for entry in entries {
                    table.row(vec![
                        entry.order_id.clone(),
                        entry.kind.clone(),
                        output::money(entry.amount_cents),
                        entry.idempotency_key.clone(),
                    ]);
                }
                table.print()
            })
        }
    }
}

/// `GET /payments`; shared with the demo.
pub async fn list(ctx: &Context) -> Result<crate::client::Reply<Vec<PaymentEntry>>> {
    Ok(ctx.client.worker().payments().await?)
}
