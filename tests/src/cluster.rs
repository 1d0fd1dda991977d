//! Several engine nodes on one PostgreSQL database, and the shop's three domains in three
//! worker processes (one per domain, each given one node's URL and polling every live node),
//! for `tests/tests/cluster.rs` and `cluster_torture.rs`.
//!
//! What is the harness's own: waiting until the cluster has formed (every node sees every
//! other live and every shard has a live owner), and the client's side of a cluster: a
//! request refused for now (503, or a node that is down) is sent again, to the next node,
//! until a deadline; it never sleeps to let something happen.

use crate::client::{Admin, Api, PENDING};
use crate::invariants::Admins;
use crate::process::{Engine, EngineOptions, Worker, WorkerOptions};
use serde_json::Value;
use shop_types::cluster::ClusterStatus;
use shop_types::order::OrderView;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a cluster may take to form (nodes register, shards are spread and claimed).
pub const FORM_DEADLINE: Duration = Duration::from_secs(60);
/// How long a request may be refused for now (a takeover under way) before the test fails.
pub const ACK_DEADLINE: Duration = Duration::from_secs(120);
/// How long an order may take to be final, across kills and takeovers.
pub const FINAL_DEADLINE: Duration = Duration::from_secs(180);
/// The pause before a refused request is sent again (to the next node).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Engine nodes and per-domain workers in one temporary directory.
pub struct Cluster {
    pub nodes: Vec<Engine>,
    /// The nodes' APIs, cheap to clone into tasks that place and wait while the test kills.
    pub clients: Clients,
    /// inventory, payment, notification (with risk), in that order.
    pub workers: Vec<Worker>,
    pub admins: Admins,
    /// Declared last so it is removed only after every process has been killed.
    dir: TempDir,
}

impl Cluster {
    /// `nodes` engines on `store` (each with `engine_args` too), then the three domain
    /// workers, worker `i` given node `i % nodes`'s URL (`worker_args` for each).
    pub async fn start(store: &str, nodes: usize, engine_args: &[&str], worker_args: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("create the cluster's temporary dir");
        let mut engines = Vec::with_capacity(nodes);
        for index in 0..nodes {
            let node_dir = dir.path().join(format!("node-{}", index + 1));
            std::fs::create_dir_all(&node_dir).expect("create a node's dir");
            let mut args = vec!["--store".to_owned(), store.to_owned()];
            args.extend(engine_args.iter().map(|a| (*a).to_owned()));
            engines.push(Engine::start(&node_dir, EngineOptions { args, ..EngineOptions::default() }).await);
        }
        let apis: Vec<Api> = engines.iter().map(|engine| Api::new(&engine.url())).collect();
        let cluster_dir = dir.path().to_owned();
        let mut workers = Vec::new();
        for (index, activities) in ["inventory", "payment", "notification,risk"].into_iter().enumerate() {
            let options = WorkerOptions {
                activities: activities.to_owned(),
                args: worker_args.iter().map(|a| (*a).to_owned()).collect(),
                ..WorkerOptions::default()
            };
            let name = format!("worker-{}", activities.split(',').next().unwrap_or(activities));
            workers.push(Worker::start(&cluster_dir, &name, &engines[index % nodes].url(), options).await);
        }
        let admin = |index: usize| Admin::new(&workers[index].url());
        let admins = Admins { inventory: admin(0), payment: admin(1), notification: admin(2) };
        let cluster = Cluster { nodes: engines, clients: Clients { apis }, workers, admins, dir };
        cluster.clients.wait_formed(nodes).await;
        cluster
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// The API of every node, in node order.
#[derive(Clone)]
pub struct Clients {
    pub apis: Vec<Api>,
}

impl Clients {
    /// `GET /v1/cluster` of node `index`, if it answers.
    pub async fn status(&self, index: usize) -> Option<ClusterStatus> {
        let reply = self.apis[index].get("/v1/cluster").await.ok()?;
        (reply.status == 200).then(|| reply.parse())
    }

    /// Waits until every node answering sees `live` live nodes and every shard owned by one.
    pub async fn wait_formed(&self, live: usize) {
        self.wait_formed_on(&(0..self.apis.len()).collect::<Vec<_>>(), live).await;
    }

    /// [`Cluster::wait_formed`], asking only the nodes `asked`.
    pub async fn wait_formed_on(&self, asked: &[usize], live: usize) {
        let deadline = Instant::now() + FORM_DEADLINE;
        loop {
            let mut formed = true;
            for &index in asked {
                let status = self.status(index).await;
                formed &= status.is_some_and(|status| {
                    status.nodes.iter().filter(|node| node.live).count() == live
                        && status.shards.iter().all(|shard| shard.owner.is_some() && shard.lease_expires_in_ms > 0)
                });
            }
            if formed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not form with {live} live nodes within {FORM_DEADLINE:?}"
            );
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Places an order through node `first` (then the next node, and so on, while refused for
    /// now) until it is acknowledged (200 or 202); returns the node that acknowledged it.
    pub async fn place_acknowledged(&self, first: usize, body: &Value) -> usize {
        let deadline = Instant::now() + ACK_DEADLINE;
        let mut node = first;
        loop {
            let index = node % self.apis.len();
            match self.apis[index].place_order(body).await {
                Ok(reply) if reply.status == 200 || reply.status == 202 => return index,
                Ok(reply) if reply.status >= 500 => {}
                Ok(reply) => panic!("POST /api/orders through node {}: {} {}", index + 1, reply.status, reply.text),
                Err(_) => {}
            }
            assert!(Instant::now() < deadline, "order {body} was not acknowledged within {ACK_DEADLINE:?}");
            node += 1;
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The order once final, waited for through node `first` (then the next, while refused).
    pub async fn wait_order(&self, first: usize, id: &str) -> OrderView {
        let deadline = Instant::now() + FINAL_DEADLINE;
        let mut node = first;
        loop {
            let index = node % self.apis.len();
            match self.apis[index].get(&format!("/api/orders/{id}?wait=20s")).await {
                Ok(reply) if reply.status == 200 => {
                    let order: OrderView = reply.parse();
                    if order.status != PENDING {
                        return order;
                    }
                }
                Ok(reply) if reply.status >= 500 => node += 1,
                Ok(reply) => panic!("GET /api/orders/{id} through node {}: {} {}", index + 1, reply.status, reply.text),
                Err(_) => node += 1,
            }
            assert!(Instant::now() < deadline, "order {id} was not final within {FINAL_DEADLINE:?}");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// An API of a node that answers now (for reads after a chaos run).
    pub async fn any_api(&self) -> Api {
        for api in &self.apis {
            if api.get("/healthz").await.is_ok_and(|reply| reply.status == 200) {
                return api.clone();
            }
        }
        panic!("no engine node answers /healthz");
    }
}
