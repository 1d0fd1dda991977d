//! Serving every engine node. Each node of a cluster hands out only the tasks of the shards it
//! owns, so a worker given one engine URL asks it for the live nodes (`GET /v1/tasks/nodes`)
//! and serves each node: with one task stream (`stream`, the default protocol) or one set
//! of poll loops (`poller`, `--protocol poll`), each reporting to the node that handed its
//! tasks out (which forwards a report whose shard moved since). The list is refreshed every
//! [`NODE_REFRESH`]: a node that joins is served, one that leaves (or is no longer live) has
//! its stream or loops stopped, which finish and report what they hold, as at shutdown.
//!
//! One engine on sled lists itself: one stream (or set of loops), as before. An engine that
//! cannot be asked (down at start, or one without the route) is served at the URL given until
//! a node answers. This module only starts and stops streams and loops; it never runs a task.

use crate::engine_client::EngineClient;
use crate::poller::Poller;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::stream::{self, StreamOptions, TaskStream};
use crate::ErrorChain;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How often the live nodes are asked for again: a node that took over a dead one's shards
/// is already polled (it was live before); this only bounds how soon a new node is polled
/// and a gone one is let go.
pub const NODE_REFRESH: Duration = Duration::from_secs(3);
/// Most engine nodes one worker polls at once; a longer list is cut (and logged), so a bad
/// answer cannot make a worker open thousands of poll loops.
pub const MAX_NODES: usize = 32;

/// What serves each node.
#[derive(Debug, Clone)]
pub struct Loops {
    pub activities: Arc<crate::activities::Activities>,
    pub queues: Vec<shop_types::QueueName>,
    /// Poll loops per queue and node; a stream holds as many tasks per queue as they would.
    pub concurrency: usize,
    pub worker_id: shop_types::WorkerId,
    pub tracer: shop_telemetry::Tracer,
    pub protocol: crate::Protocol,
    /// The stream's credential (the poll loops' is in their `EngineClient`).
    pub token: Option<shop_types::auth::BearerToken>,
}

/// One node's poll loops and the trigger that stops them.
struct NodeLoops {
    trigger: Trigger,
    loops: JoinSet<()>,
}

/// Polls every live engine node until `shutdown`, then stops every loop and waits for them
/// (each finishes and reports what it holds, within the poller's grace period).
pub async fn run(engine: EngineClient, loops: Loops, mut shutdown: Shutdown) {
    let mut polled: BTreeMap<String, NodeLoops> = BTreeMap::new();
    // Loops told to stop, reaped as they end.
    let mut stopping: Vec<JoinSet<()>> = Vec::new();
    // At once, on the URL given: a worker polls before the first listing arrives.
    start(&mut polled, &engine, &loops);
    loop {
        if let Some(nodes) = list(&engine, &polled).await {
            let wanted: Vec<String> = nodes.into_iter().map(|url| url.trim_end_matches('/').to_owned()).collect();
            for url in &wanted {
                if !polled.contains_key(url) {
                    match engine.at(url) {
                        Ok(client) => start(&mut polled, &client, &loops),
                        Err(err) => tracing::warn!(%url, error = %ErrorChain(&err), "cannot poll an engine node"),
                    }
                }
            }
            let gone: Vec<String> = polled.keys().filter(|url| !wanted.contains(url)).cloned().collect();
            for url in gone {
                if let Some(node) = polled.remove(&url) {
                    tracing::info!(%url, "no longer polling an engine node that is not live");
                    node.trigger.fire();
                    stopping.push(node.loops);
                }
            }
        }
        for set in &mut stopping {
            while set.try_join_next().is_some() {}
        }
        stopping.retain(|set| !set.is_empty());
        if !shutdown.sleep(NODE_REFRESH).await {
            break;
        }
    }
    for node in polled.values() {
        node.trigger.fire();
    }
    for mut set in polled.into_values().map(|node| node.loops).chain(stopping) {
        while let Some(joined) = set.join_next().await {
            if let Err(err) = joined {
                tracing::error!(error = %err, "a poll loop panicked");
            }
        }
    }
}

/// Starts a stream, or `loops`, against the node `client` talks to.
fn start(polled: &mut BTreeMap<String, NodeLoops>, client: &EngineClient, loops: &Loops) {
    let (trigger, node_shutdown) = shutdown::channel();
    let mut set = JoinSet::new();
    if loops.protocol == crate::Protocol::Stream {
        let options = StreamOptions {
            activities: Arc::clone(&loops.activities),
            queues: loops.queues.clone(),
            slots: stream::slots(loops.concurrency),
            worker_id: loops.worker_id.clone(),
            tracer: loops.tracer.clone(),
            token: loops.token.clone(),
        };
        set.spawn(TaskStream::new(client.clone(), options, node_shutdown).run());
        tracing::info!(url = client.url(), "streaming tasks from an engine node");
        polled.insert(client.url().to_owned(), NodeLoops { trigger, loops: set });
        return;
    }
    for queue in &loops.queues {
        for _ in 0..loops.concurrency {
            set.spawn(
                Poller {
                    client: client.clone(),
                    activities: Arc::clone(&loops.activities),
                    queue: queue.clone(),
                    worker_id: loops.worker_id.clone(),
                    shutdown: node_shutdown.clone(),
                    tracer: loops.tracer.clone(),
                }
                .run(),
            );
        }
    }
    tracing::info!(url = client.url(), "polling an engine node");
    polled.insert(client.url().to_owned(), NodeLoops { trigger, loops: set });
}

/// The live nodes' URLs, asked of the URL given first and then of each node polled (the one
/// given may be the one that died); `None` when no node answers or the answer is empty
/// (then the nodes polled stay as they are).
async fn list(engine: &EngineClient, polled: &BTreeMap<String, NodeLoops>) -> Option<Vec<String>> {
    let mut last_error = None;
    let others = polled.keys().filter(|url| url.as_str() != engine.url());
    for client in std::iter::once(Ok(engine.clone())).chain(others.map(|url| engine.at(url))) {
        let Ok(client) = client else { continue };
        match client.nodes().await {
            Ok(nodes) if nodes.is_empty() => return None,
            Ok(mut nodes) => {
                if nodes.len() > MAX_NODES {
                    tracing::warn!(
                        listed = nodes.len(),
                        polled = MAX_NODES,
                        "the engine lists more nodes than a worker polls"
                    );
                    nodes.truncate(MAX_NODES);
                }
                return Some(nodes.into_iter().map(|node| node.url).collect());
            }
            Err(err) => last_error = Some(err),
        }
    }
    if let Some(err) = last_error {
        tracing::debug!(error = %ErrorChain(&err), "no engine node listed the nodes; polling the ones known");
    }
    None
}
