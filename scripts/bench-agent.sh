#!/usr/bin/env bash
# Agent vs node_exporter, side by side on this host: both collect every second (the agent
# ships by remote_write to a local Prometheus, which scrapes node_exporter every second).
# Prints each one's resident memory and CPU time over the measured window.
# Usage: scripts/bench-agent.sh [seconds]   (needs a release build and Debian's prometheus,
# prometheus-node-exporter)
set -euo pipefail
secs=${1:-60}
. "$(dirname "$0")/bench-lib.sh"
ne_port=$(port); prom_port=$(port); agent_port=$(port)

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
cat > "$dir/agent.toml" <<TOML
node = "bench"
listen = "127.0.0.1:$agent_port"
data_dir = "$dir/agent"
remote_write = ["http://127.0.0.1:$prom_port/api/v1/write"]
scrape_interval_ms = 1000
TOML
"$hale" agent --config "$dir/agent.toml" >"$dir/agent.log" 2>&1 &
agent_pid=$!; pids+=($agent_pid)

sleep 10 # warm up: first scrapes, first remote writes
tick=$(getconf CLK_TCK)
a0=$(cpu $agent_pid); n0=$(cpu $ne_pid)
echo "measuring for ${secs}s..." >&2
sleep "$secs"
a1=$(cpu $agent_pid); n1=$(cpu $ne_pid)
series=$(curl -s "http://127.0.0.1:$prom_port/api/v1/query?query=count(%7Bnode%3D%22bench%22%7D)" | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
printf "%-14s %10s %14s\n" process "RSS KiB" "CPU % of core"
printf "%-14s %10s %14.2f\n" hale-agent "$(rss $agent_pid)" "$(echo "($a1-$a0)*100/$tick/$secs" | bc -l)"
printf "%-14s %10s %14.2f\n" node_exporter "$(rss $ne_pid)" "$(echo "($n1-$n0)*100/$tick/$secs" | bc -l)"
echo "series from the agent in Prometheus: $series"
