//! Driving and measuring the benchmark: the target it talks to, the closed loop of clients
//! placing orders and timing each one, progress, and the figures of the run. It must never
//! judge the outcomes (that is `check`) nor assert a timing: it measures.

use super::*;

pub(super) struct Report {
    pub(super) json: serde_json::Value,
    pub(super) violations: usize,
}

/// One order's measured life.
pub(super) struct Sample {
    pub(super) start_us: u64,
    pub(super) e2e_us: u64,
    pub(super) status: String,
}

#[derive(Deserialize)]
pub(super) struct OrderStatus {
    pub(super) status: String,
}

#[derive(Deserialize, Default)]
pub(super) struct EngineStats {
    pub(super) commits: u64,
    pub(super) commands: u64,
    pub(super) events: u64,
}

/// What the measurement talks to: the engine (every node of a cluster), and the admin API of
/// each domain's worker.
pub(super) struct Target {
    pub(super) engine: Client,
    /// Node 1 first. Benchmark client `i` talks to node `i % nodes`: the requests are spread
    /// over the nodes, and each order is placed and waited for on one node, which drew its id
    /// among its own shards, so the order needs no forwarding.
    pub(super) engine_urls: Vec<String>,
    /// Every node's, node 1 first.
    pub(super) engine_pids: Vec<u32>,
    pub(super) worker_pids: Vec<u32>,
    pub(super) inventory: Client,
    pub(super) payments: Client,
    pub(super) notifications: Client,
}

impl Target {
    pub(super) fn of(stack: &Stack) -> Result<Target> {
        let admin = |domain: &str| -> Result<Client> {
            let url = stack.admin_url(domain).ok_or_else(|| anyhow!("no worker serves {domain}"))?;
            stack.client().with_worker(url)
        };
        Ok(Target {
            engine: stack.client().clone(),
            engine_pids: stack.engine_pids(),
            worker_pids: stack.worker_pids(),
            inventory: admin("inventory")?,
            payments: admin("payment")?,
            notifications: admin("notification")?,
            engine_urls: stack.engine_urls().to_vec(),
        })
    }
}

/// How the engine started: with how many stored runs, and what that cost.
pub(super) struct StartUp {
    pub(super) preloaded: u64,
    pub(super) preload_took: Option<Duration>,
    pub(super) ready_after: Duration,
    pub(super) rss_at_start_kib: Option<u64>,
}

pub(super) async fn measure(
    target: &Target,
    args: &BenchArgs,
    concurrency: usize,
    count: usize,
    data_dir: &Path,
    start_up: &StartUp,
) -> Result<Report> {
    let Target { engine, engine_urls, engine_pids, worker_pids, inventory, payments, notifications } = target;
    stock_catalog(inventory).await?;

    let planned = Arc::new(plan_orders(count, args.mix, args.seed)?);
    // Its own pool, one idle connection per benchmark client, and no retry: the clients
    // back off from an overloaded engine themselves and time it.
    let options = shop_client::Options {
        request_timeout: ORDER_REQUEST_TIMEOUT,
        pool_max_idle_per_host: Some(concurrency),
        ..shop_client::Options::default()
    };
    let https = engine_urls
        .iter()
        .map(|url| shop_client::Client::new(shop_client::Service::Engine, url, options.clone()))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot create the HTTP client")?;
    let subscribers = match args.subscribers {
        0 => None,
        n => Some(Subscribers::start(engine.engine(), usize::from(n)).await?),
    };
    let scraper = args.scrape_metrics.map(|interval| scrape::Scraper::start(scrape_targets(target), interval));
    let before = cluster_stats(&https).await?;
    output::note(&format!(
        "bench: {count} orders, {concurrency} in flight, {} durability, workers {:?}",
        args.durability.as_str(),
        args.workers
    ));

    let engine_cpu_before: Option<u64> = engine_pids.iter().map(|&pid| cpu_ms(pid)).sum();
    let workers_cpu_before: Option<u64> = worker_pids.iter().map(|&pid| cpu_ms(pid)).sum();
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    // In the open loop, order i starts at `started + i / rate`, late only if every client
    // is busy.
    let interval = args.rate.map(|rate| Duration::from_secs_f64(1.0 / f64::from(rate.max(1))));
    let start_wait = args.start_wait;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..concurrency {
        let http = https[client % https.len()].clone();
        let (planned, next, done) = (planned.clone(), next.clone(), done.clone());
        clients.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(order) = planned.get(index) else { break };
                if let Some(interval) = interval {
                    let due = started + interval.mul_f64(index as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                samples.push(drive_one(&http, order, start_wait).await?);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(samples)
        });
    }
    let progress = tokio::spawn(show_progress(done.clone(), count, started));
    let mut samples = Vec::with_capacity(count);
    while let Some(joined) = clients.join_next().await {
        samples.extend(joined.context("a benchmark client panicked")??);
    }
    let elapsed = started.elapsed();
    progress.abort();
    eprintln!();
    let scraped = match scraper {
        Some(scraper) => Some(scraper.finish().await?),
        None => None,
    };
    let after = cluster_stats(&https).await?;
    let subscribed = match subscribers {
        Some(subscribers) => {
            Some(subscribers.finish(engine.engine(), after.events.saturating_sub(before.events), elapsed).await?)
        }
        None => None,
    };
    let engine_cpu_after: Option<u64> = engine_pids.iter().map(|&pid| cpu_ms(pid)).sum();
    let engine_cpu = engine_cpu_after.zip(engine_cpu_before).map(|(after, before)| after - before);
    let workers_cpu_after: Option<u64> = worker_pids.iter().map(|&pid| cpu_ms(pid)).sum();
    let workers_cpu = workers_cpu_after.zip(workers_cpu_before).map(|(after, before)| after - before);
    let per_saga = |cpu_ms: Option<u64>| cpu_ms.map(|ms| round(ms as f64 / count as f64, 3));

    let mut start_us = Histogram::<u64>::new(3).context("cannot create a histogram")?;
    let mut e2e_us = Histogram::<u64>::new(3).context("cannot create a histogram")?;
    for sample in &samples {
        start_us.record(sample.start_us.max(1)).context("latency out of range")?;
        e2e_us.record(sample.e2e_us.max(1)).context("latency out of range")?;
    }
    let domains =
        Domains { inventory: inventory.clone(), payment: payments.clone(), notification: notifications.clone() };
    let violations = verify(&planned, &samples, engine, &domains).await?;
    // Node 1's: every node holds about the same share.
    let engine_peak_rss_mb =
        engine_pids.first().and_then(|&pid| proc_status_kib(pid, "VmHWM:")).map(|kib| kib as f64 / 1024.0);
    let disk_bytes = disk_usage(&data_dir.join("engine"));
    let seconds = elapsed.as_secs_f64();
    let commits = after.commits.saturating_sub(before.commits).max(1);
    let ms = |h: &Histogram<u64>, q: f64| round(h.value_at_quantile(q) as f64 / 1000.0, 3);
    let confirmed = samples.iter().filter(|s| s.status == "CONFIRMED").count();
    let mut json = serde_json::json!({
        "orders": count,
        "concurrency": concurrency,
        "rate_per_sec": args.rate,
        "durability": args.durability.as_str(),
        "workers": format!("{:?}", args.workers),
        "worker_protocol": args.worker_protocol.as_str(),
        "engine_nodes": engine_urls.len(),
        // With it, the start's latency is that of the start-and-wait (until final or its wait's end).
        "start_wait": args.start_wait,
        "elapsed_s": round(seconds, 3),
        "sagas_per_sec": round(count as f64 / seconds, 1),
        "start_p50_ms": ms(&start_us, 0.50),
        "start_p99_ms": ms(&start_us, 0.99),
        "e2e_p50_ms": ms(&e2e_us, 0.50),
        "e2e_p99_ms": ms(&e2e_us, 0.99),
        "engine_peak_rss_mb": engine_peak_rss_mb.map(|mb| round(mb, 1)),
        // Every run in the store, preloaded ones included.
        "disk_bytes_per_saga": disk_bytes.map(|bytes| bytes / (count as u64 + start_up.preloaded)),
        "events_per_sec": round(after.events.saturating_sub(before.events) as f64 / seconds, 0),
        "mean_commit_batch": round(after.commands.saturating_sub(before.commands) as f64 / commits as f64, 2),
        "engine_cpu_ms_per_saga": per_saga(engine_cpu),
        "workers_cpu_ms_per_saga": per_saga(workers_cpu),
        "mean_events_per_commit": round(after.events.saturating_sub(before.events) as f64 / commits as f64, 2),
        "confirmed": confirmed,
        "cancelled": samples.len() - confirmed,
        "violations": violations,
        "preloaded_runs": start_up.preloaded,
        "preload_s": start_up.preload_took.map(|took| round(took.as_secs_f64(), 1)),
        "engine_start_to_serving_s": round(start_up.ready_after.as_secs_f64(), 3),
        "engine_rss_at_start_mb": start_up.rss_at_start_kib.map(|kib| round(kib as f64 / 1024.0, 1)),
    });
    for extra in [subscribed, scraped] {
        if let (Some(serde_json::Value::Object(extra)), Some(report)) = (extra, json.as_object_mut()) {
            report.extend(extra);
        }
    }
    Ok(Report { json, violations })
}

/// The engine's counters summed over its nodes (each counts what it committed itself).
async fn cluster_stats(nodes: &[shop_client::Client]) -> Result<EngineStats> {
    let mut sum = EngineStats::default();
    for node in nodes {
        let stats: EngineStats = node.stats().await?.body;
        sum.commits += stats.commits;
        sum.commands += stats.commands;
        sum.events += stats.events;
    }
    Ok(sum)
}

/// The engine and each worker process once (a worker serving several domains is one target),
/// each named for the report.
fn scrape_targets(target: &Target) -> Vec<scrape::ScrapeTarget> {
    let mut targets = vec![scrape::ScrapeTarget { name: "engine".to_owned(), client: target.engine.engine().clone() }];
    let workers =
        [("inventory", &target.inventory), ("payment", &target.payments), ("notification", &target.notifications)];
    for (domain, client) in workers {
        let client = client.worker();
        match targets.iter_mut().find(|t| t.client.base_str() == client.base_str()) {
            Some(same) => same.name.push_str(&format!("+{domain}")),
            None => targets.push(scrape::ScrapeTarget { name: format!("worker:{domain}"), client: client.clone() }),
        }
    }
    targets
}

pub(super) fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

pub(super) async fn stock_catalog(inventory: &Client) -> Result<()> {
    for product_id in 1..=EMPTY_PRODUCT {
        let units = if product_id == EMPTY_PRODUCT { 0 } else { CATALOG_UNITS };
        let request = SetStockRequest { units, name: None, price_cents: None };
        inventory
            .worker()
            .set_stock(product_id, &request)
            .await
            .with_context(|| format!("cannot stock product {product_id}"))?;
    }
    Ok(())
}

/// Places one order and waits for its final state, timing both. With `start_wait` the start
/// itself waits (`POST /api/orders?wait=`), and a 200 is the final order.
pub(super) async fn drive_one(http: &shop_client::Client, order: &PlannedOrder, start_wait: bool) -> Result<Sample> {
    let deadline = Instant::now() + ORDER_DEADLINE;
    let begun = Instant::now();
    let place_path = if start_wait { format!("/api/orders?wait={ORDER_WAIT}") } else { "/api/orders".to_owned() };
    // Raw calls: the body is encoded once, before timing, and the answer is only read as
    // far as its status.
    loop {
        let response = http
            .send(Method::POST, &place_path, Some("application/json"), order.body.clone(), &[])
            .await
            .with_context(|| format!("cannot place order {}", order.id))?;
        let status = response.status;
        if status == StatusCode::OK && start_wait {
            let view: OrderStatus =
                serde_json::from_slice(&response.body).context("an order in an unexpected shape")?;
            if view.status != "PENDING" {
                let e2e_us = micros(begun.elapsed());
                return Ok(Sample { start_us: e2e_us, e2e_us, status: view.status });
            }
        }
        if status.is_success() {
            break;
        }
        let text = String::from_utf8_lossy(&response.body);
        if status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            bail!("placing order {} failed: {status} {text}", order.id);
        }
        tokio::time::sleep(OVERLOAD_BACKOFF).await;
    }
    let start_us = micros(begun.elapsed());
    let wait_path = format!("/api/orders/{}?wait={ORDER_WAIT}", order.id);
    loop {
        let response = http
            .send(Method::GET, &wait_path, None, Vec::new(), &[])
            .await
            .with_context(|| format!("cannot read order {}", order.id))?;
        let (status, bytes) = (response.status, response.body);
        if !status.is_success() {
            bail!("reading order {} failed: {status} {}", order.id, String::from_utf8_lossy(&bytes));
        }
        let view: OrderStatus = serde_json::from_slice(&bytes).context("an order in an unexpected shape")?;
        if view.status != "PENDING" {
            return Ok(Sample { start_us, e2e_us: micros(begun.elapsed()), status: view.status });
        }
        if Instant::now() > deadline {
            bail!("order {} is still PENDING after {}", order.id, output::duration(ORDER_DEADLINE));
        }
    }
}

pub(super) fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

pub(super) async fn show_progress(done: Arc<AtomicUsize>, total: usize, started: Instant) {
    const WIDTH: usize = 30;
    loop {
        tokio::time::sleep(PROGRESS_INTERVAL).await;
        let finished = done.load(Ordering::Relaxed);
        let filled = finished * WIDTH / total.max(1);
        let rate = finished as f64 / started.elapsed().as_secs_f64().max(1e-9);
        eprint!("\r[{}{}] {finished}/{total} orders, {rate:.0}/s", "#".repeat(filled), ".".repeat(WIDTH - filled));
    }
}
