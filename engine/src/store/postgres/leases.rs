//! [`PostgresLeases`]: the lease manager's side of PostgreSQL (`crate::cluster::lease::LeaseDb`):
//! the node registry (`shop_nodes`) and the lease rows (`shop_shards`), on a connection of
//! its own, made on the caller's runtime (the API's) and made again after it breaks.
//!
//! Every time is the database's (`now()`), never this machine's: nodes on different machines
//! agree on expiry only by asking one clock. A claim is one conditional `UPDATE`; under READ
//! COMMITTED a second node's `UPDATE` of the same row waits for the first and re-checks the
//! condition on the new row, so two nodes racing for a shard cannot both win.
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
        let shards: Vec<i32> = held.iter().map(|(shard, _)| shard.0 as i32).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, epoch)| epoch.0 as i64).collect();
        let rows = self
            .client()
            .await?
            .query(
                "UPDATE shop_shards s SET expires_at = now() + $4::bigint * interval '1 millisecond'
                 FROM unnest($2::integer[], $3::bigint[]) AS h(shard, epoch)
                 WHERE s.shard = h.shard AND s.epoch = h.epoch AND s.owner = $1
                 RETURNING s.shard",
                &[&node, &shards, &epochs, &millis(lease)],
            )
            .await?;
        Ok(rows.iter().map(|row| ShardId(row.get::<_, i32>(0) as u32)).collect())
    }

    async fn claim(&mut self, node: &str, shards: &[ShardId], lease: Duration) -> Result<Vec<(ShardId, Epoch)>, Error> {
        let shards: Vec<i32> = shards.iter().map(|shard| shard.0 as i32).collect();
        let rows = self
            .client()
            .await?
            .query(
                "UPDATE shop_shards SET owner = $1, epoch = epoch + 1,
                     expires_at = now() + $3::bigint * interval '1 millisecond'
                 WHERE shard = ANY($2) AND (owner = '' OR owner = $1 OR expires_at < now())
                 RETURNING shard, epoch",
                &[&node, &shards, &millis(lease)],
            )
            .await?;
        let mut won: Vec<(ShardId, Epoch)> =
            rows.iter().map(|row| (ShardId(row.get::<_, i32>(0) as u32), Epoch(row.get::<_, i64>(1) as u64))).collect();
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
