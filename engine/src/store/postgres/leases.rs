//! [`PostgresLeases`]: the lease manager's side of PostgreSQL (`crate::cluster::lease::LeaseDb`):
//! the node registry (`shop_nodes`) and the lease rows (`shop_shards`), on a connection of
//! its own, made on the caller's runtime (the API's) and made again after it breaks.
//!
//! Every time is the database's (`now()`), never this machine's: nodes on different machines
//! agree on expiry only by asking one clock. A claim is one conditional `UPDATE`; under READ
//! COMMITTED a second node's `UPDATE` of the same row waits for the first and re-checks the
//! condition on the new row, so two nodes racing for a shard cannot both win.
//!
//! One row at a time: a renewal or a claim updates each lease row in a statement (and so an
//! implicit transaction) of its own, sent together on the connection. A write transaction
//! of the writer locks the lease rows of its shards (`shop_fence`, `FOR SHARE`, in shard
//! order) until it commits; an `UPDATE` of several lease rows could hold one of them while
//! waiting for another, and the two would deadlock (PostgreSQL then aborts one: we saw it
//! abort the writer's). Holding at most one lease row's lock, the lease manager never waits
//! while holding one, so no cycle can form.
//!
//! This module must never write a run's records.

use super::super::{Epoch, Error, ShardId};
use super::bridge::connect;
use super::PostgresStore;
use crate::cluster::lease::{LeaseDb, LeaseRow, NodeRow};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::Client;

/// The lease manager's connection to the database, and the store it tells what it holds.
pub struct PostgresLeases {
    store: Arc<PostgresStore>,
    config: tokio_postgres::Config,
    client: Option<Client>,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl PostgresLeases {
    pub(super) fn new(store: Arc<PostgresStore>, config: tokio_postgres::Config) -> PostgresLeases {
        PostgresLeases { store, config, client: None }
    }

    /// The connection, made (again) if there is none or it broke.
    async fn client(&mut self) -> Result<&Client, Error> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = Some(connect(&self.config).await?);
        }
        self.client.as_ref().ok_or_else(|| Error::Postgres("no lease connection".into()))
    }
}

impl LeaseDb for PostgresLeases {
    async fn heartbeat(&mut self, node: &str, url: &str) -> Result<(), Error> {
        self.client()
            .await?
            .execute(
                "INSERT INTO shop_nodes (node, url, heartbeat_at) VALUES ($1, $2, now())
                 ON CONFLICT (node) DO UPDATE SET url = excluded.url, heartbeat_at = now()",
                &[&node, &url],
            )
            .await?;
        Ok(())
    }

    async fn nodes(&mut self) -> Result<Vec<NodeRow>, Error> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT node, url, (extract(epoch FROM now() - heartbeat_at) * 1000)::bigint
                 FROM shop_nodes ORDER BY node",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|row| NodeRow { node: row.get(0), url: row.get(1), heartbeat_age_ms: row.get(2) }).collect())
    }

    async fn leases(&mut self) -> Result<Vec<LeaseRow>, Error> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT shard, owner, epoch, (extract(epoch FROM expires_at - now()) * 1000)::bigint
                 FROM shop_shards ORDER BY shard",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| LeaseRow {
                shard: ShardId(row.get::<_, i32>(0) as u32),
                owner: row.get(1),
                epoch: Epoch(row.get::<_, i64>(2) as u64),
                expires_in_ms: row.get(3),
            })
            .collect())
    }

    async fn renew(&mut self, node: &str, held: &[(ShardId, Epoch)], lease: Duration) -> Result<Vec<ShardId>, Error> {
        let client = self.client().await?;
        let statement = client
            .prepare(
                "UPDATE shop_shards SET expires_at = now() + $4::bigint * interval '1 millisecond'
                 WHERE shard = $2 AND epoch = $3 AND owner = $1 RETURNING shard",
            )
            .await?;
        let lease_ms = millis(lease);
        // One row per statement (see `one_row_at_a_time`), sent together.
        let updates = held.iter().map(|(shard, epoch)| {
            let (shard, epoch) = (shard.0 as i32, epoch.0 as i64);
            let statement = &statement;
            async move { client.query_opt(statement, &[&node, &shard, &epoch, &lease_ms]).await }
        });
        let mut renewed = Vec::new();
        for row in futures_util::future::join_all(updates).await {
            if let Some(row) = row? {
                renewed.push(ShardId(row.get::<_, i32>(0) as u32));
            }
        }
        Ok(renewed)
    }

    async fn claim(&mut self, node: &str, shards: &[ShardId], lease: Duration) -> Result<Vec<(ShardId, Epoch)>, Error> {
        let client = self.client().await?;
        let statement = client
            .prepare(
                "UPDATE shop_shards SET owner = $1, epoch = epoch + 1,
                     expires_at = now() + $3::bigint * interval '1 millisecond'
                 WHERE shard = $2 AND (owner = '' OR owner = $1 OR expires_at < now())
                 RETURNING shard, epoch",
            )
            .await?;
        let lease_ms = millis(lease);
        let claims = shards.iter().map(|shard| {
            let shard = shard.0 as i32;
            let statement = &statement;
            async move { client.query_opt(statement, &[&node, &shard, &lease_ms]).await }
        });
        let mut won = Vec::new();
        for row in futures_util::future::join_all(claims).await {
            if let Some(row) = row? {
                won.push((ShardId(row.get::<_, i32>(0) as u32), Epoch(row.get::<_, i64>(1) as u64)));
            }
        }
        won.sort_unstable();
        Ok(won)
    }

    async fn release(&mut self, node: &str, shard: ShardId, epoch: Epoch) -> Result<(), Error> {
        self.client()
            .await?
            .execute(
                "UPDATE shop_shards SET owner = '', expires_at = now()
                 WHERE shard = $1 AND owner = $2 AND epoch = $3",
                &[&(shard.0 as i32), &node, &(epoch.0 as i64)],
            )
            .await?;
        Ok(())
    }

    async fn leave(&mut self, node: &str) -> Result<(), Error> {
        self.client().await?.execute("DELETE FROM shop_nodes WHERE node = $1", &[&node]).await?;
        Ok(())
    }

    fn set_held(&self, held: &BTreeMap<ShardId, Epoch>) {
        self.store.set_held(held.clone());
    }
}
