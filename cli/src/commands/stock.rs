//! `shopctl stock list|set`: the inventory worker's products, through its admin API.
//!
//! Owns how products are shown; the worker owns the numbers (it creates a product on its
//! first `set`, and refuses negative stock).

use super::Context;
use crate::output::{self, Table};
use anyhow::Result;
use clap::Subcommand;
use shop_types::order::{Product, SetStockRequest};

#[derive(Debug, Subcommand)]
pub enum StockCommand {
    /// List products with their stock and the units held by unfinished orders.
    List,
    /// Set a product's available units (creates the product if it is new).
    Set {
        product_id: i64,
        units: i64,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        price_cents: Option<i64>,
    },
}

pub async fn run(command: StockCommand, ctx: &Context) -> Result<()> {
    match command {
        StockCommand::List => {
            let reply = list(ctx).await?;
            ctx.show(&reply, |products| table(products).print())
        }
        StockCommand::Set { product_id, units, name, price_cents } => {
            let request = SetStockRequest { units, name, price_cents };
            let reply = ctx.client.worker().set_stock(product_id, &request).await?;
            ctx.show(&reply, |product| table(std::slice::from_ref(product)).print())
        }
    }
}

/// `GET /stock`; shared with the demo.
pub async fn list(ctx: &Context) -> Result<crate::client::Reply<Vec<Product>>> {
    Ok(ctx.client.worker().stock().await?)
}

fn table(products: &[Product]) -> Table {
    let mut table = Table::with_header(&["PRODUCT", "NAME", "PRICE", "STOCK", "RESERVED"]);
    for product in products {
        table.row(vec![
            product.product_id.to_string(),
            product.name.clone(),
            output::money(product.price_cents),
            product.stock.to_string(),
            product.reserved.to_string(),
        ]);
    }
    table
}
