#!/usr/bin/env bash
# shop-engine against its peers on one machine, with the peers' own closed-loop driver and
# workload (../shared/peers): ours first, then Restate (and DBOS with PEERS="restate dbos-sqlite"),
# one after the other, then a table of the figures and the ratios to ours.
#
#   bash scripts/peer-bench.sh                     # N=20000 CONCURRENCY=64 MAX_SECONDS=20
#   PEERS="" bash scripts/peer-bench.sh            # ours only
#   DURABILITY=process-crash bash scripts/peer-bench.sh
#   STORE=postgres PEERS=dbos-pg bash scripts/peer-bench.sh   # ours on PostgreSQL (a fresh database
#                                                             # on PG_URL, default 127.0.0.1:5432) vs DBOS
#   OURS_BIN=/tmp/old-build bash scripts/peer-bench.sh         # another build's shop-engine and shop-worker
#
# The peers' folder is read-only shared material: it is copied to a scratch folder first, and
# the peers' scripts install what they need in that copy (npm, cargo, pip), as their README says.
# Every server binds 127.0.0.1 only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS_SRC="${PEERS_SRC:-$ROOT/../shared/peers}"
# Outside this workspace (cargo would take the peers' Rust project for one of its members),
# and kept between runs so their installs are reused.
WORK="${PEERS_WORK:-${TMPDIR:-/tmp}/shop-engine-peers}"
export N="${N:-20000}" CONCURRENCY="${CONCURRENCY:-64}" WARMUP="${WARMUP:-100}" MAX_SECONDS="${MAX_SECONDS:-20}"
PEERS="${PEERS-restate}"
DURABILITY="${DURABILITY:-power-safe}"
ENGINE_PORT="${ENGINE_PORT:-18480}"

mkdir -p "$WORK" "$ROOT/target/peer-results"
cp -r --no-preserve=mode "$PEERS_SRC"/. "$WORK"/
chmod +x "$WORK"/*.sh
# OURS_BIN: a folder of prebuilt shop-engine and shop-worker binaries to measure instead of
# this checkout's (an A/B of two builds on the same machine); this checkout is built otherwise.
if [[ -z "${OURS_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release --workspace -q)
fi
(cd "$WORK/rust" && cargo build --release -q --bin saga_driver)

OURS="${OURS_BIN:-$ROOT/target/release}"
RUN="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT

wait_for() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

ENGINE="http://127.0.0.1:$ENGINE_PORT"
STORE_ARGS=()
if [[ "${STORE:-sled}" == postgres ]]; then
  # A database of its own for this run, on the machine's PostgreSQL (trust auth).
  PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
  DB="shop_peer_$(date +%s)"
  psql "$PG_URL/postgres" -qc "CREATE DATABASE $DB" >&2
  STORE_ARGS=(--store "$PG_URL/$DB")
fi
"$OURS/shop-engine" --data-dir "$RUN/engine" --listen "127.0.0.1:$ENGINE_PORT" --workflows "$ROOT/workflows" \
  --open --rate-limit off --durability "$DURABILITY" "${STORE_ARGS[@]}" 2> "$RUN/engine.log" &
ENGINE_PID=$!; PIDS+=("$ENGINE_PID")
wait_for "$ENGINE/healthz"
# The default deployment (what the README and `shopctl dev` run): one worker process serving
# every domain, its admin API on the next port.
WORKER_ADMIN="http://127.0.0.1:$((ENGINE_PORT + 1))"
"$OURS/shop-worker" --engine "$ENGINE" --data-dir "$RUN/worker" --listen "127.0.0.1:$((ENGINE_PORT + 1))" \
  --activities "${WORKER_ACTIVITIES:-inventory,payment,notification,risk}" --open 2> "$RUN/worker.log" &
WORKER_PID=$!; PIDS+=("$WORKER_PID")
wait_for "$WORKER_ADMIN/healthz"
# The peers' catalog: products 1..50 with 1,000,000 units; product 51 with none.
for p in $(seq 1 50); do
  curl -sf -X PUT "$WORKER_ADMIN/stock/$p" -H 'content-type: application/json' -d '{"units":1000000}' >/dev/null
done
curl -sf -X PUT "$WORKER_ADMIN/stock/51" -H 'content-type: application/json' -d '{"units":0}' >/dev/null

# The workload pays by "VISA" (or "DECLINED"); the shop's API takes the seed's payment methods,
# and a card is CREDIT_CARD there (an unknown method is refused with 422).
python3 "$WORK/common/gen_orders.py" $((N + WARMUP)) --prefix "ours$(date +%s)" | sed 's/"VISA"/"CREDIT_CARD"/g' > "$RUN/orders.json"
python3 "$WORK/common/wait_quiet.py" "${QUIET_MAX_WAIT:-300}" 15 || echo "[peer-bench] machine not quiet; measuring anyway" >&2
ORDERS="$RUN/orders.json" BODY=seed STATUS_POINTER=/status \
  START_URL="$ENGINE/api/orders" WAIT_URL="$ENGINE/api/orders/{id}?wait=60s" \
  STATS_CMD="python3 $ROOT/scripts/peer_stats.py $ENGINE $WORKER_ADMIN $WORKER_ADMIN" \
  "$WORK/rust/target/release/saga_driver" > "$RUN/driver.json" &
DRIVER_PID=$!
python3 "$WORK/common/rss_sampler.py" "$RUN/rss.json" "shop-engine=$ENGINE_PID" "shop-worker=$WORKER_PID" "~driver=$DRIVER_PID" &
SAMPLER_PID=$!
wait "$DRIVER_PID"
kill -TERM "$SAMPLER_PID"; wait "$SAMPLER_PID" || true
python3 - "$RUN/driver.json" "$RUN/rss.json" "$DURABILITY" "${STORE:-sled}" > "$ROOT/target/peer-results/shop-engine.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); rss = json.load(open(sys.argv[2]))
d.update({"peer": "shop-engine", "durability": sys.argv[3], "store": sys.argv[4],
          "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in rss.items()},
          # CPU seconds each process tree used while the driver ran, and the whole machine's
          # busy share: with them a figure says where the two cores went.
          "cpu_s": {k: v.get("cpu_s") for k, v in rss.items() if k != "_total"},
          "machine_cpu_busy_pct": rss.get("_total", {}).get("machine_cpu_busy_pct"),
          "foreign_cpu_s": rss.get("_total", {}).get("foreign_cpu_s")})
print(json.dumps(d))
PY
cleanup; PIDS=(); RUN="$(mktemp -d)"

for peer in $PEERS; do
  case "$peer" in
    restate) (cd "$WORK" && bash run_restate.sh | tail -1) > "$ROOT/target/peer-results/restate.json" ;;
    dbos-sqlite) (cd "$WORK" && bash run_dbos.sh sqlite | tail -1) > "$ROOT/target/peer-results/dbos-sqlite.json" ;;
    dbos-pg) (cd "$WORK" && bash run_dbos.sh postgres | tail -1) > "$ROOT/target/peer-results/dbos-pg.json" ;;
    *) echo "unknown peer $peer" >&2 ;;
  esac
done

python3 - "$ROOT"/target/peer-results/*.json <<'PY'
import json, sys
runs = [json.load(open(p)) for p in sys.argv[1:]]
ours = next(r for r in runs if r["peer"] == "shop-engine")
print(f"{'engine':<14}{'sagas/s':>9}{'x ours':>8}{'e2e p50':>9}{'e2e p99':>9}{'start p50':>10}{'start p99':>10}{'server RSS MB':>14}  verify")
for r in sorted(runs, key=lambda r: -r["sagas_per_s"]):
    rss = r.get("peak_rss_mb", {})
    server = rss.get("shop-engine") or rss.get("restate-server") or rss.get("_total")
    print(f"{r['peer']:<14}{r['sagas_per_s']:>9.1f}{r['sagas_per_s'] / ours['sagas_per_s']:>8.2f}"
          f"{r['e2e_p50_ms']:>9.1f}{r['e2e_p99_ms']:>9.1f}{r['start_p50_ms']:>10.2f}{r['start_p99_ms']:>10.2f}"
          f"{server if server is not None else float('nan'):>14.1f}  {r.get('verify_ok')}")
cpu = ours.get("cpu_s") or {}
if cpu:
    sagas = ours["sagas_per_s"] * ours["wall_s"]
    per_saga = ", ".join(f"{k} {1000 * v / sagas:.3f}" for k, v in cpu.items() if v is not None)
    print(f"shop-engine CPU ms per saga: {per_saga}; machine busy {ours.get('machine_cpu_busy_pct')}%, "
          f"CPU of other processes {ours.get('foreign_cpu_s')} s")
PY
