#!/usr/bin/env bash
# Config load and reload at scale (BENCHMARKS.md, "Config load and reload at 100,000 checks").
#
#   scripts/bench-config.sh [N] [BIN]
#
# N (default 100000) tcp checks, interval "10s", timeout "500ms", distinct names, spread
# over PORTS (default 100) loopback ports served by a separate Python process that accepts
# and closes. Measures, with the release binary in its own process:
#   1. `lifeline validate --config big.toml` under /usr/bin/time -v (wall, user, sys, RSS);
#   2. the agent on that config: change one check's `interval`, POST /-/reload, and time the
#      request to the "configuration reloaded" log line (JSON logs carry timestamps); then
#      checks that a sample of other checks kept their supervisor (same `attempt` counter
#      series, no restart) and that the changed one was restarted.
# Loopback only. Needs python3, curl; prints the machine load with every figure.
set -euo pipefail
N=${1:-100000}
BIN=${2:-target/release/lifeline}
PORTS=${PORTS:-100}
BASE_PORT=${BASE_PORT:-23000}
HTTP_PORT=${HTTP_PORT:-29477}
# The agent's interval (validate always uses "10s"): on a loaded machine 10,000 probes/s
# can saturate the agent, and then the reload measures the overload, not the reload.
AGENT_INTERVAL=${AGENT_INTERVAL:-10s}
DIR=$(mktemp -d /tmp/lifeline-bench-config.XXXXXX)
trap 'kill $LISTENER ${AGENT:-} 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
[ -x "$BIN" ] || { echo "build first: cargo build --release ($BIN missing)" >&2; exit 2; }

gen() { # $1 = file, $2 = interval of check-00007, $3 = text before the checks, $4 = others' interval
    python3 - "$1" "$N" "$PORTS" "$BASE_PORT" "$2" "$3" "${4:-10s}" <<'PY'
import sys
path, n, ports, base, changed, head, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
with open(path, "w") as f:
    f.write(head.replace("\\n", "\n"))
    for i in range(n):
        iv = changed if i == 7 else every
        f.write(f'[[checks]]\nname = "check-{i:05d}"\nkind = "tcp"\n'
                f'address = "127.0.0.1:{base + i % ports}"\ninterval = "{iv}"\ntimeout = "500ms"\n\n')
PY
}

report() { # $1 = label, $2 = time -v output
    awk -v l="$1" -F': ' '
        /Elapsed \(wall/ {w=$2} /User time/ {u=$2} /System time/ {s=$2} /Maximum resident/ {r=$2}
        END {printf "%s: wall %s, user %ss, sys %ss, max RSS %.1f MiB\n", l, w, u, s, r/1024}' "$2"
    echo "  load: $(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "== $N tcp checks, $(nproc) cores, $(date -u +%FT%TZ); agent interval $AGENT_INTERVAL"
gen "$DIR/big.toml" 10s ""
echo "config: $(du -h "$DIR/big.toml" | cut -f1)"
for i in $(seq "${VALIDATE_RUNS:-3}"); do
    /usr/bin/time -v "$BIN" validate --config "$DIR/big.toml" >"$DIR/validate.out" 2>"$DIR/time.txt" || { cat "$DIR/validate.out" "$DIR/time.txt"; exit 1; }
    report "validate #$i" "$DIR/time.txt"
done

# --- reload ---------------------------------------------------------------------------
python3 - "$BASE_PORT" "$PORTS" 2>"$DIR/listener.log" <<'PY' &
# Accepts and closes at once: plain non-blocking sockets (asyncio streams are too slow
# for 10,000 connections/s and pile up descriptors).
import resource, selectors, socket, sys
base, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
sel = selectors.DefaultSelector()
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", base + i))
    s.listen(4096)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        while True:
            try:
                c, _ = key.fileobj.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            c.close()
PY
LISTENER=$!
HEAD="[agent]\nlisten = \"127.0.0.1:$HTTP_PORT\"\ndata_dir = \"$DIR/data\"\n\n"
gen "$DIR/agent.toml" "$AGENT_INTERVAL" "$HEAD" "$AGENT_INTERVAL"
"$BIN" run --config "$DIR/agent.toml" --log-format json >"$DIR/agent.log" 2>&1 &
AGENT=$!
URL="http://127.0.0.1:$HTTP_PORT"
for _ in $(seq 600); do curl -sf "$URL/-/ready" >/dev/null 2>&1 && break; sleep 0.5; done
curl -sf "$URL/-/ready" >/dev/null || { echo "agent not ready"; tail "$DIR/agent.log"; exit 1; }
echo "agent ready; RSS $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$AGENT/status)"
# Let every check run a few times, so attempt counters are non-zero, and let the history
# store's first prune (30 s after start, 100,000 checks) finish before the reload.
sleep "${SETTLE:-45}"
# A restarted supervisor starts from a fresh state (new `since`); a kept one keeps it.
SAMPLE="0 1 6 7 8 500 9999 25000 50000 75000 99998"
sample() {
    for i in $SAMPLE; do
        [ "$i" -lt "$N" ] || continue
        n=$(printf 'check-%05d' "$i")
        curl -sf --max-time 20 "$URL/health/service/$n" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get("name"), d.get("status"), d.get("since"))' \
            || echo "$n no-answer"
    done
}
sample >"$DIR/before.txt"
t0=$(cut -d' ' -f1 /proc/uptime)
cpu0=$(awk '{print $14+$15}' /proc/$AGENT/stat)
gen "$DIR/agent.toml" 7s "$HEAD" "$AGENT_INTERVAL"
# PERF_OUT=file: record the agent's stacks during the reload (perf record -g).
if [ -n "${PERF_OUT:-}" ]; then
    perf record -F 999 --call-graph "${PERF_CALL_GRAPH:-dwarf}" -p "$AGENT" -o "$PERF_OUT" 2>"$DIR/perf.log" & PERF=$!
    sleep 1
fi
start=$(date +%s.%N)
curl -s --max-time 300 -X POST "$URL/-/reload" >"$DIR/reload.json" || echo "reload request failed" >&2
end=$(date +%s.%N)
cpu1=$(awk '{print $14+$15}' /proc/$AGENT/stat)
[ -z "${PERF:-}" ] || { kill -INT "$PERF"; wait "$PERF" || true; }
python3 - "$DIR/agent.log" "$start" "$end" "$(( cpu1 - cpu0 ))" "$(getconf CLK_TCK)" <<'PY'
import json, sys, datetime
log, start, end, ticks, hz = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
t = {}
for line in open(log):
    try: e = json.loads(line)
    except ValueError: continue
    m = e.get("message") or e.get("fields", {}).get("message")
    if m in ("reloading the configuration", "configuration reloaded"):
        ts = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        t[m] = ts
done = t["configuration reloaded"]
print(f"reload: request → 'configuration reloaded' {1000*(done-start):.0f} ms "
      f"(of which file load+validate to apply ≈ since 'reloading' {1000*(done-t['reloading the configuration']):.0f} ms); "
      f"HTTP round trip {1000*(end-start):.0f} ms; agent CPU during it {1000*ticks/hz:.0f} ms")
PY
echo "  load: $(cut -d' ' -f1-3 /proc/loadavg)"
sample >"$DIR/after.txt"
echo "sampled checks before → after (name since status):"
paste -d'|' "$DIR/before.txt" "$DIR/after.txt" | sed 's/^/  /'
changed=$(printf 'check-%05d' 7)
kept=$(paste -d'|' "$DIR/before.txt" "$DIR/after.txt" | awk -F'|' -v c="$changed" '$1 == $2 {k++} !($1 == $2) && index($1, c" ") != 1 {bad++} END {printf "%d kept, %d other restarted", k, bad}')
echo "others: $kept (the changed $changed is expected to restart)"
