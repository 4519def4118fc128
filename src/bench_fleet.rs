//! The fleet workload of `hale bench ingest --workload fleet` and `hale bench query`: the
//! series Hale's own Grafana dashboards read, shaped as a real fleet writes them. Services
//! export `http_server_request_duration_seconds` histograms (twelve buckets, `_sum`,
//! `_count`) per instance, route and status code; nodes export node_exporter's CPU, load,
//! memory, filesystem, disk and network families. Counters only grow, buckets are
//! cumulative, so `rate`, `histogram_quantile` and the ratios answer as they would in
//! production. The same `n` always gives the same series.

use hale_core::remote_write::Label;

use crate::bench::Shape;

const SERVICES: [&str; 8] = ["gateway", "auth", "catalog", "search", "orders", "payments", "users", "cart"];
const ROUTES: [&str; 5] = ["/", "/api/items", "/api/items/{id}", "/api/search", "/api/orders"];
const CODES: [&str; 4] = ["200", "201", "404", "500"];
const BOUNDS: [&str; 12] = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
/// Share of requests at or under each bound: a latency curve with a long tail.
const SHARES: [f64; 12] = [0.05, 0.15, 0.4, 0.62, 0.8, 0.91, 0.96, 0.985, 0.995, 0.998, 0.999, 1.0];
const MODES: [&str; 8] = ["idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice"];
/// Services' instances run on this many nodes.
const NODES_PER_SERVICE_INSTANCE: usize = 40;

fn labeled(pairs: &[(&str, &str)]) -> Vec<Label> {
    let mut labels: Vec<Label> =
        pairs.iter().map(|(n, v)| Label { name: (*n).to_string(), value: (*v).to_string() }).collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

/// One service endpoint's histogram: 12 buckets, `_sum` and `_count` (14 series).
fn endpoint(h: usize, out: &mut Vec<(Vec<Label>, Shape)>) {
    let service = SERVICES[h % SERVICES.len()];
    let route = ROUTES[(h / SERVICES.len()) % ROUTES.len()];
    let code = CODES[(h / (SERVICES.len() * ROUTES.len())) % CODES.len()];
    let replica = h / (SERVICES.len() * ROUTES.len() * CODES.len());
    let instance = format!("{service}-{replica}");
    let node = format!("node-{}", replica % NODES_PER_SERVICE_INSTANCE);
    // Requests per second: mostly 2xx, some 404s, a trickle of 500s.
    let rate = match code {
        "200" => 20.0,
        "201" => 4.0,
        "404" => 1.0,
        _ => 0.2,
    } * (1.0 + (h % 7) as f64 / 7.0);
    let common = [
        ("service", service),
        ("instance", instance.as_str()),
        ("node", node.as_str()),
        ("http_route", route),
        ("http_request_method", "GET"),
        ("http_response_status_code", code),
    ];
    for (le, share) in BOUNDS.iter().zip(SHARES) {
        let mut pairs = common.to_vec();
        pairs.extend([("__name__", "http_server_request_duration_seconds_bucket"), ("le", le)]);
        out.push((labeled(&pairs), Shape::Bucket { rate, share }));
    }
    for (name, shape) in [
        ("http_server_request_duration_seconds_count", Shape::Counter(rate)),
        ("http_server_request_duration_seconds_sum", Shape::Counter(rate * 0.087)),
    ] {
        let mut pairs = common.to_vec();
        pairs.push(("__name__", name));
        out.push((labeled(&pairs), shape));
    }
}

/// One node's node_exporter families (49 series).
fn node(m: usize, out: &mut Vec<(Vec<Label>, Shape)>) {
    let node = format!("node-{m}");
    let node = node.as_str();
    for cpu in ["0", "1", "2", "3"] {
        for (k, mode) in MODES.iter().enumerate() {
            let busy = if *mode == "idle" { 0.7 } else { 0.3 / (k as f64 + 1.0) };
            out.push((
                labeled(&[("__name__", "node_cpu_seconds_total"), ("node", node), ("cpu", cpu), ("mode", mode)]),
                Shape::Counter(busy),
            ));
        }
    }
    for (name, base, swing) in [
        ("node_load1", 1.5, 2.0),
        ("node_load5", 1.5, 1.0),
        ("node_load15", 1.5, 0.5),
        ("node_memory_MemTotal_bytes", 16e9, 0.0),
        ("node_memory_MemAvailable_bytes", 9e9, 2e9),
        ("node_memory_SwapTotal_bytes", 2e9, 0.0),
        ("node_memory_SwapFree_bytes", 1.8e9, 1e8),
    ] {
        out.push((labeled(&[("__name__", name), ("node", node)]), Shape::Gauge { base, swing, seed: m }));
    }
    for (mountpoint, device) in [("/", "/dev/sda1"), ("/data", "/dev/sdb1")] {
        let fs = [("node", node), ("mountpoint", mountpoint), ("device", device), ("fstype", "ext4")];
        for (name, base, swing) in
            [("node_filesystem_size_bytes", 5e11, 0.0), ("node_filesystem_avail_bytes", 2e11, 1e10)]
        {
            let mut pairs = fs.to_vec();
            pairs.push(("__name__", name));
            out.push((labeled(&pairs), Shape::Gauge { base, swing, seed: m }));
        }
    }
    for (name, device, rate) in [
        ("node_disk_read_bytes_total", "sda", 2e6),
        ("node_disk_written_bytes_total", "sda", 5e6),
        ("node_network_receive_bytes_total", "eth0", 1e7),
        ("node_network_transmit_bytes_total", "eth0", 8e6),
        ("node_network_receive_errs_total", "eth0", 0.01),
        ("node_network_transmit_errs_total", "eth0", 0.01),
    ] {
        out.push((labeled(&[("__name__", name), ("node", node), ("device", device)]), Shape::Counter(rate)));
    }
}

/// About `n` fleet series (whole histograms and nodes, so a little over): three
/// endpoints' histograms for every node.
pub fn series(n: usize) -> Vec<(Vec<Label>, Shape)> {
    let mut out = Vec::with_capacity(n + 64);
    let mut unit = 0;
    while out.len() < n {
        if unit % 4 == 3 {
            node(unit / 4, &mut out);
        } else {
            endpoint(unit - unit / 4, &mut out);
        }
        unit += 1;
    }
    out
}

/// The dashboards' queries over the fleet, their variables resolved as Grafana does for
/// "All" (`$service`, `$node` → `.*`) and a 15 s scrape (`$__rate_interval` → `1m`). A test
/// holds each to a panel of `dashboards/grafana/`.
pub const DASHBOARD_QUERIES: [&str; 10] = [
    "sum by (service) (rate(http_server_request_duration_seconds_count{service=~\".*\"}[1m]))",
    "(sum by (service) (rate(http_server_request_duration_seconds_count{service=~\".*\",http_response_status_code=~\"5..\"}[1m])) or sum by (service) (rate(http_server_request_duration_seconds_count{service=~\".*\"}[1m])) * 0) / sum by (service) (rate(http_server_request_duration_seconds_count{service=~\".*\"}[1m]))",
    "histogram_quantile(0.99, sum by (service, le) (rate(http_server_request_duration_seconds_bucket{service=~\".*\"}[1m])))",
    "histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{service=~\".*\"}[1m])))",
    "sum by (le) (increase(http_server_request_duration_seconds_bucket{service=~\".*\"}[1m]))",
    "1 - avg by (node) (rate(node_cpu_seconds_total{node=~\".*\",mode=\"idle\"}[1m]))",
    "sum by (node, mode) (rate(node_cpu_seconds_total{node=~\".*\",mode!=\"idle\"}[1m])) / on (node) group_left count by (node) (node_cpu_seconds_total{node=~\".*\",mode=\"idle\"})",
    "1 - node_filesystem_avail_bytes{node=~\".*\",fstype!~\"tmpfs|ramfs|overlay|squashfs\"} / node_filesystem_size_bytes{node=~\".*\",fstype!~\"tmpfs|ramfs|overlay|squashfs\"}",
    "time() - max by (node) (timestamp(node_load1{node=~\".*\"}))",
    "sum by (node, device) (rate(node_network_receive_bytes_total{node=~\".*\"}[1m]))",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every panel query of the shipped dashboards, variables resolved as above.
    fn dashboard_exprs() -> Vec<String> {
        let files = [
            include_str!("../dashboards/grafana/hale-overview.json"),
            include_str!("../dashboards/grafana/hale-nodes.json"),
        ];
        let mut out = Vec::new();
        for text in files {
            let json: serde_json::Value = serde_json::from_str(text).expect("dashboard JSON");
            for panel in json["panels"].as_array().into_iter().flatten() {
                for target in panel["targets"].as_array().into_iter().flatten() {
                    if let Some(expr) = target["expr"].as_str() {
                        out.push(
                            expr.replace("$__rate_interval", "1m").replace("$service", ".*").replace("$node", ".*"),
                        );
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_bench_asks_what_the_dashboards_ask() {
        let exprs = dashboard_exprs();
        for q in DASHBOARD_QUERIES {
            assert!(exprs.iter().any(|e| e == q), "{q} is no longer a dashboard query");
        }
    }

    #[test]
    fn the_fleet_is_whole_histograms_and_nodes_with_unique_series() {
        let fleet = series(10_000);
        assert!(fleet.len() >= 10_000 && fleet.len() < 10_064, "{}", fleet.len());
        let unique: std::collections::HashSet<Vec<(String, String)>> =
            fleet.iter().map(|(l, _)| l.iter().map(|l| (l.name.clone(), l.value.clone())).collect()).collect();
        assert_eq!(unique.len(), fleet.len(), "every series is distinct");
        let infs = fleet.iter().filter(|(l, _)| l.iter().any(|l| l.name == "le" && l.value == "+Inf")).count();
        let counts = fleet.iter().filter(|(l, _)| l.iter().any(|l| l.value.ends_with("_seconds_count"))).count();
        assert_eq!(infs, counts, "each histogram has its +Inf bucket");
        // Buckets are cumulative at every sample.
        let (rate, k) = (3.0, 100);
        let values: Vec<f64> = SHARES.iter().map(|&share| Shape::Bucket { rate, share }.at(k)).collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
    }
}
