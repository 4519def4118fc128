#!/usr/bin/env bash
# The agent vs node_exporter, side by side on this host: every one collects each second
# (the agents ship by remote_write to a local Prometheus, which scrapes node_exporter
# every second). Prints each one's resident memory and CPU time over the measured window:
# `hale-agent` (the agent's own binary, what a host runs), `hale agent` (the same agent
# inside the all-in-one `hale`, as `hale up` runs it) and node_exporter.
# Usage: scripts/bench-agent.sh [seconds]   (needs `cargo build --release -p hale` and
# `cargo build --profile agent -p hale-agent --features cli`, and Debian's prometheus and
# prometheus-node-exporter)
set -euo pipefail
secs=${1:-60}
. "$(dirname "$0")/bench-lib.sh"
slim=${HALE_AGENT_BIN:-$(dirname "$(dirname "$hale")")/agent/hale-agent}
[ -x "$slim" ] || { echo "build first: cargo build --profile agent -p hale-agent --features cli (or set HALE_AGENT_BIN)" >&2; exit 1; }
ne_port=$(port); prom_port=$(port)

cat > "$dir/prometheus.yml" <<YML
global: { scrape_interval: 1s }
scrape_configs:
  - job_name: node
    static_configs: [{ targets: ["127.0.0.1:$ne_port"] }]
YML
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --web.enable-remote-write-receiver >"$dir/prom.log" 2>&1 &
pids+=($!)
prometheus-node-exporter --web.listen-address="127.0.0.1:$ne_port" >"$dir/ne.log" 2>&1 &
ne_pid=$!; pids+=($ne_pid)
agent_config() { # node name → agent.toml path
  cat > "$dir/$1.toml" <<TOML
node = "$1"
listen = "127.0.0.1:$(port)"
data_dir = "$dir/$1"
remote_write = ["http://127.0.0.1:$prom_port/api/v1/write"]
scrape_interval_ms = 1000
TOML
  echo "$dir/$1.toml"
}
"$slim" --config "$(agent_config bench)" >"$dir/slim.log" 2>&1 &
slim_pid=$!; pids+=($slim_pid)
"$hale" agent --config "$(agent_config bench-hale)" >"$dir/agent.log" 2>&1 &
agent_pid=$!; pids+=($agent_pid)

sleep 10 # warm up: first scrapes, first remote writes
tick=$(getconf CLK_TCK)
s0=$(cpu $slim_pid); a0=$(cpu $agent_pid); n0=$(cpu $ne_pid)
echo "measuring for ${secs}s..." >&2
sleep "$secs"
s1=$(cpu $slim_pid); a1=$(cpu $agent_pid); n1=$(cpu $ne_pid)
series=$(curl -s "http://127.0.0.1:$prom_port/api/v1/query?query=count(%7Bnode%3D%22bench%22%7D)" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
percent() { echo "($2-$1)*100/$tick/$secs" | bc -l; }
printf "%-14s %10s %14s\n" process "RSS KiB" "CPU % of core"
printf "%-14s %10s %14.2f\n" hale-agent "$(rss $slim_pid)" "$(percent "$s0" "$s1")"
printf "%-14s %10s %14.2f\n" "hale agent" "$(rss $agent_pid)" "$(percent "$a0" "$a1")"
printf "%-14s %10s %14.2f\n" node_exporter "$(rss $ne_pid)" "$(percent "$n0" "$n1")"
echo "series from hale-agent in Prometheus: $series"
