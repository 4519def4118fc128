#!/usr/bin/env bash
# Collector vs Prometheus 2.42, fed the same synthetic remote_write payload in the same run
# (`hale bench ingest`): ingest rate, resident memory per series, and encoded bytes per
# sample. Usage: scripts/bench-collector.sh [series] [samples]   (needs a release build)
set -euo pipefail
series=${1:-20000}
samples=${2:-241}
. "$(dirname "$0")/bench-lib.sh"
prom_port=$(port); hale_port=$(port)

echo "global: { scrape_interval: 1h }" > "$dir/prometheus.yml"
prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --web.enable-remote-write-receiver >"$dir/prom.log" 2>&1 &
prom=$!; pids+=($prom)
"$hale" collector --insecure-open-ingest --listen "127.0.0.1:$hale_port" --data-dir "$dir/collector" >"$dir/hale.log" 2>&1 &
col=$!; pids+=($col)
wait_ready "http://127.0.0.1:$prom_port/-/ready"
wait_ready "http://127.0.0.1:$hale_port/-/ready"
sleep 2
p0=$(rss $prom); h0=$(rss $col)

echo "== Prometheus 2.42" >&2
"$hale" bench ingest --url "http://127.0.0.1:$prom_port/api/v1/write" --series "$series" --samples "$samples"
echo "== hale collector" >&2
"$hale" bench ingest --url "http://127.0.0.1:$hale_port/api/v1/write" --series "$series" --samples "$samples"
sleep 3
p1=$(rss $prom); h1=$(rss $col)

# Encoded bytes per sample. Prometheus's: the same workload (2,000 series of it) written
# as a TSDB block by promtool, chunk files only (2.42 encodes chunks the same way in the
# head and in blocks). The collector's: its chunk bytes after the run above.
"$hale" bench ingest --url unused --series 2000 --samples "$samples" --openmetrics "$dir/data.om" >/dev/null
promtool tsdb create-blocks-from openmetrics "$dir/data.om" "$dir/blocks" >/dev/null
prom_chunk_bytes=$(du -sbc "$dir"/blocks/*/chunks | tail -1 | cut -f1)
prom_bps=$(echo "$prom_chunk_bytes/(2000*$samples)" | bc -l)
hale_chunk_bytes=$(curl -s "http://127.0.0.1:$hale_port/metrics" | awk '/^hale_collector_chunk_bytes / {print $2}')
hale_bps=$(echo "$hale_chunk_bytes/($series*$samples)" | bc -l)

printf "\n%-18s %14s %16s %18s\n" receiver "RSS growth KiB" "bytes/series" "bytes/sample"
printf "%-18s %14s %16.0f %18.3f\n" "Prometheus 2.42" "$((p1 - p0))" "$(echo "($p1-$p0)*1024/$series" | bc -l)" "$prom_bps"
printf "%-18s %14s %16.0f %18.3f\n" "hale collector" "$((h1 - h0))" "$(echo "($h1-$h0)*1024/$series" | bc -l)" "$hale_bps"
