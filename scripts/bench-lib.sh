# Sourced by the bench scripts: the release `hale` ($hale), a scratch folder ($dir) that is
# removed on exit with every process whose pid was added to `pids`, and small probes.
hale=${HALE_BIN:-${CARGO_TARGET_DIR:-target}/release/hale}
[ -x "$hale" ] || { echo "build first: cargo build --release (or set HALE_BIN)" >&2; exit 1; }
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
# A free loopback port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Resident memory of a pid, KiB.
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
# User plus system CPU time of a pid, in clock ticks.
cpu() { awk '{print $14+$15}' "/proc/$1/stat"; }
# Waits up to 10 s for a URL to answer 2xx.
wait_ready() { for _ in $(seq 1 100); do curl -sf "$1" >/dev/null && return 0; sleep 0.1; done; echo "not ready: $1" >&2; exit 1; }
