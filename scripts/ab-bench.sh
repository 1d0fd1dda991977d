#!/usr/bin/env bash
# Two builds of shop-engine measured against each other on one machine, in alternating pairs:
# this machine kind's speed drifts by up to 20% within an hour, so a "before" run an hour
# before the "after" run says little, and a pair run back to back says more.
#
#   bash scripts/ab-bench.sh /tmp/bin-before /tmp/bin-after            # 3 pairs
#   PAIRS=5 ORDERS=20000 bash scripts/ab-bench.sh A_DIR B_DIR -- --rate 1000 --concurrency 256
#
# Each folder holds a build's shopctl, shop-engine and shop-worker (copy them out of
# target/release before rebuilding). Every run is `shopctl bench --workers combined` with
# the given orders and concurrency (or the arguments after `--`), audited as usual; a run
# with violations fails the script. Prints one line per run and the means per build.
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,12p' "$0" >&2; exit 2; }
A="$1" B="$2"
shift 2
[[ "${1:-}" == "--" ]] && shift
EXTRA=("$@")
[[ ${#EXTRA[@]} -gt 0 ]] || EXTRA=(--concurrency "${CONCURRENCY:-64}")
for dir in "$A" "$B"; do
  for bin in shopctl shop-engine shop-worker; do
    [[ -x "$dir/$bin" ]] || { echo "ab-bench: $dir/$bin is missing" >&2; exit 2; }
  done
done
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
for pair in $(seq 1 "${PAIRS:-3}"); do
  for side in A B; do
    dir="$A"; [[ "$side" == B ]] && dir="$B"
    "$dir/shopctl" bench --orders "${ORDERS:-15000}" --workers combined "${EXTRA[@]}" > "$OUT/$side-$pair.json"
    python3 - "$side" "$pair" "$OUT/$side-$pair.json" <<'PY'
import json, sys
side, pair, path = sys.argv[1:4]
r = json.load(open(path))
print(f"pair {pair} {side}: {r['sagas_per_sec']:>8.1f} sagas/s  engine {r['engine_cpu_ms_per_saga']:.3f}"
      f"  worker {r['workers_cpu_ms_per_saga']:.3f} ms CPU/saga  start p50/p99 {r['start_p50_ms']:.2f}/"
      f"{r['start_p99_ms']:.2f} ms  violations {r['violations']}")
sys.exit(1 if r["violations"] else 0)
PY
  done
done
python3 - "$OUT" "$A" "$B" <<'PY'
import glob, json, os, sys
out, a, b = sys.argv[1:4]
for side, name in (("A", a), ("B", b)):
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{side}-*.json")))]
    mean = lambda key: sum(r[key] for r in runs) / len(runs)
    print(f"{side} {name}: mean {mean('sagas_per_sec'):.1f} sagas/s, engine {mean('engine_cpu_ms_per_saga'):.3f}"
          f" / worker {mean('workers_cpu_ms_per_saga'):.3f} ms CPU/saga over {len(runs)} runs")
PY
