//! `shopctl definition list|register`: the workflow definitions the engine knows.
//!
//! Registering sends the TOML text as is; the engine validates it and pins new runs to the
//! new version. This module never parses or checks a definition itself, so the engine's
//! error (file, line, reason) is the one the user sees.

use super::Context;
use crate::output::{self, Table};
use anyhow::{anyhow, Context as _, Result};
use clap::Subcommand;
use shop_types::limits::MAX_BODY_BYTES;
use std::path::PathBuf;

#[derive(Debug, Subcommand)]
pub enum DefinitionCommand {
    /// List registered definitions and their versions.
    List,
    /// Register a new definition (or a new version of one) from a TOML file.
    Register { file: PathBuf },
}

pub async fn run(command: DefinitionCommand, ctx: &Context) -> Result<()> {
    match command {
        DefinitionCommand::List => {
            let reply = ctx.client.engine().definitions().await?;
            ctx.show(&reply, |list| {
                let mut table = Table::with_header(&["NAME", "VERSION", "STEPS"]);
                for definition in &list.definitions {
                    table.row(vec![
                        definition.name.clone(),
                        definition.version.to_string(),
                        definition.steps.join(" -> "),
                    ]);
                }
                table.print()
            })
        }
        DefinitionCommand::Register { file } => {
            let text = read_bounded(&file)?;
            let reply = ctx
                .client
                .engine()
                .register_definition(&text)
                .await
                .with_context(|| format!("cannot register {}", file.display()))?;
            ctx.show(&reply, |summary| {
                output::line(&format!(
                    "registered {} v{}: {}",
                    summary.name,
                    summary.version,
                    summary.steps.join(" -> ")
                ))
            })
        }
    }
}

/// Reads the file, refusing one larger than the engine accepts before reading it whole.
fn read_bounded(file: &PathBuf) -> Result<String> {
    let size = std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?.len();
    if size > MAX_BODY_BYTES as u64 {
        return Err(anyhow!("{} is {size} bytes; the engine accepts at most {MAX_BODY_BYTES}", file.display()));
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}
