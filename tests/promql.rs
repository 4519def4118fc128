//! Differential test: the same samples go to a real Prometheus 2.42 (remote-write
//! receiver) and to `hale collector`; a corpus of PromQL expressions is evaluated on both
//! at the same instants and over the same ranges, and the answers must match: same result
//! type, same label sets, values equal to 1e-9 relative.

mod common;

use common::{Proc, free_addr};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use hale_core::remote_write::{self, Label, Sample, TimeSeries, WriteRequest};
use serde_json::Value;

const STEP_MS: i64 = 15_000;
const POINTS: i64 = 121; // 30 minutes
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn series(labels: &[(&str, &str)], points: Vec<(i64, f64)>) -> TimeSeries {
    let mut labels: Vec<Label> =
        labels.iter().map(|(n, v)| Label { name: n.to_string(), value: v.to_string() }).collect();
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    TimeSeries::new(labels, points.into_iter().map(|(t, v)| Sample { value: v, timestamp: t }).collect())
}

/// Counters (one with a reset), gauges, a histogram, a series that stops, and one with a
/// staleness marker.
fn dataset(base: i64) -> WriteRequest {
    let ts = |i: i64| base + i * STEP_MS;
    let mut out = Vec::new();
    for (instance, code, rate) in [("a", "200", 5.0), ("a", "500", 0.5), ("b", "200", 3.0), ("b", "500", 1.0)] {
        let points = (0..POINTS)
            .map(|i| {
                let mut v = rate * i as f64 + (i % 7) as f64;
                if instance == "b" && code == "200" && i >= 60 {
                    v = rate * (i - 60) as f64; // a counter reset
                }
                (ts(i), v)
            })
            .collect();
        out.push(series(
            &[("__name__", "http_requests_total"), ("job", "api"), ("instance", instance), ("code", code)],
            points,
        ));
    }
    for (room, offset) in [("x", 0.0), ("y", 1.5), ("z", -2.25)] {
        let points = (0..POINTS).map(|i| (ts(i), 20.0 + offset + (i as f64 / 10.0).sin() * 3.0)).collect();
        out.push(series(&[("__name__", "temperature"), ("room", room), ("job", "sensors")], points));
    }
    let bounds = ["0.1", "0.5", "1", "+Inf"];
    for (k, le) in bounds.iter().enumerate() {
        let share = [0.5, 0.8, 0.95, 1.0][k];
        let points = (0..POINTS).map(|i| (ts(i), (10.0 * i as f64 * share).floor())).collect();
        out.push(series(&[("__name__", "req_duration_seconds_bucket"), ("job", "api"), ("le", le)], points));
    }
    out.push(series(&[("__name__", "vanishing"), ("job", "api")], (0..60).map(|i| (ts(i), i as f64)).collect()));
    let stale = (0..POINTS)
        .map(|i| (ts(i), if i == 80 { f64::from_bits(STALE_NAN) } else { i as f64 * 2.0 }))
        .filter(|(t, _)| !(*t > ts(80) && *t < ts(100)))
        .collect();
    out.push(series(&[("__name__", "stale_series"), ("job", "api")], stale));
    WriteRequest::of(out)
}

/// A real Prometheus (remote-write receiver) and a collector, both sent `data(base)`,
/// where `base` is a whole minute a little over [`POINTS`] steps ago. The processes stop
/// when the first value is dropped.
async fn prometheus_and_collector(
    dir: &std::path::Path,
    client: &reqwest::Client,
    data: fn(i64) -> WriteRequest,
) -> ([Proc; 2], [SocketAddr; 2], i64) {
    let (prometheus, prom_addr) = common::prometheus_receiver(dir).await;
    let hale_addr = free_addr();
    let collector = Proc(
        Command::new(env!("CARGO_BIN_EXE_hale"))
            .args(["collector", "--insecure-open-ingest", "--listen", &hale_addr.to_string(), "--data-dir"])
            .arg(dir.join("collector"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("collector"),
    );
    common::wait_ready("the collector", hale_addr).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let base = (now - POINTS * STEP_MS - 60_000) / 60_000 * 60_000;
    let body = remote_write::encode(&data(base));
    for addr in [prom_addr, hale_addr] {
        common::send_remote_write(client, addr, body.clone()).await;
    }
    ([prometheus, collector], [prom_addr, hale_addr], base)
}

/// Normalises an API answer: result type, and label set → values (sorted unless the
/// order is the point of the expression).
/// A result type and, per series (labels as text), its (time, value) points.
type Normalised = (String, Vec<(String, Vec<(f64, String)>)>);

fn normalise(body: &Value, keep_order: bool) -> Normalised {
    let data = &body["data"];
    let kind = data["resultType"].as_str().unwrap_or("?").to_string();
    let point = |p: &Value| (p[0].as_f64().unwrap_or(0.0), p[1].as_str().unwrap_or("").to_string());
    let mut items: Vec<(String, Vec<(f64, String)>)> = match kind.as_str() {
        "scalar" | "string" => vec![(String::new(), vec![point(&data["result"])])],
        _ => data["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        let metric: BTreeMap<String, String> =
                            serde_json::from_value(s["metric"].clone()).unwrap_or_default();
                        let key = format!("{metric:?}");
                        let values = match s.get("values") {
                            Some(vs) => vs.as_array().map(|a| a.iter().map(point).collect()).unwrap_or_default(),
                            None => vec![point(&s["value"])],
                        };
                        (key, values)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    };
    if !keep_order {
        items.sort_by(|a, b| a.0.cmp(&b.0));
    }
    (kind, items)
}

fn same_value(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1e-300),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_answers_match_prometheus() {
    let tmp = tempfile::tempdir().expect("tmp");
    let client = reqwest::Client::new();
    let (_running, [prom_addr, hale_addr], base) = prometheus_and_collector(tmp.path(), &client, dataset).await;
    let at = |min: i64| base + min * 60_000;
    let at_secs = |min: i64| at(min) as f64 / 1000.0;
    let corpus: Vec<String> = vec![
        "http_requests_total".into(),
        "http_requests_total{code=\"200\"}".into(),
        "http_requests_total{code!=\"200\"}".into(),
        "http_requests_total{instance=~\"a|b\",code=~\"5..\"}".into(),
        "http_requests_total{instance!~\"a\"}".into(),
        "http_requests_total offset 5m".into(),
        format!("http_requests_total @ {}", at_secs(12)),
        "rate(http_requests_total[5m])".into(),
        "rate(http_requests_total[1m])".into(),
        "irate(http_requests_total[5m])".into(),
        "increase(http_requests_total[10m])".into(),
        "rate(http_requests_total[5m] offset 2m)".into(),
        "delta(temperature[5m])".into(),
        "idelta(temperature[5m])".into(),
        "deriv(temperature[10m])".into(),
        "predict_linear(temperature[10m], 600)".into(),
        "resets(http_requests_total[30m])".into(),
        "changes(temperature[10m])".into(),
        "avg_over_time(temperature[10m])".into(),
        "min_over_time(temperature[10m])".into(),
        "max_over_time(temperature[10m])".into(),
        "sum_over_time(temperature[10m])".into(),
        "count_over_time(temperature[10m])".into(),
        "last_over_time(temperature[10m])".into(),
        "present_over_time(temperature[10m])".into(),
        "stddev_over_time(temperature[10m])".into(),
        "stdvar_over_time(temperature[10m])".into(),
        "quantile_over_time(0.9, temperature[10m])".into(),
        "absent(nonexistent_metric{job=\"x\"})".into(),
        "absent(temperature)".into(),
        "absent_over_time(nonexistent[5m])".into(),
        "histogram_quantile(0.9, rate(req_duration_seconds_bucket[5m]))".into(),
        "histogram_quantile(0.5, sum by (le) (rate(req_duration_seconds_bucket[5m])))".into(),
        "clamp(temperature, 18, 22)".into(),
        "clamp_min(temperature, 20)".into(),
        "clamp_max(temperature, 20)".into(),
        "abs(temperature - 20)".into(),
        "round(temperature)".into(),
        "round(temperature, 0.5)".into(),
        "time()".into(),
        "timestamp(temperature)".into(),
        "vector(1)".into(),
        "scalar(sum(temperature))".into(),
        "label_replace(temperature, \"floor\", \"f-$1\", \"room\", \"(.*)\")".into(),
        "label_join(http_requests_total, \"id\", \"-\", \"instance\", \"code\")".into(),
        "sum(http_requests_total)".into(),
        "sum by (code) (http_requests_total)".into(),
        "sum without (instance) (http_requests_total)".into(),
        "avg(temperature)".into(),
        "min by (job) (http_requests_total)".into(),
        "max(temperature)".into(),
        "count(http_requests_total)".into(),
        "stddev(temperature)".into(),
        "stdvar(temperature)".into(),
        "topk(2, temperature)".into(),
        "bottomk(1, temperature)".into(),
        "quantile(0.5, temperature)".into(),
        "count_values(\"value\", round(temperature))".into(),
        "group by (job) (http_requests_total)".into(),
        "http_requests_total + 1".into(),
        "2 * temperature".into(),
        "temperature > 20".into(),
        "temperature > bool 20".into(),
        "http_requests_total{code=\"200\"} / ignoring(code) http_requests_total{code=\"500\"}".into(),
        "http_requests_total / on(instance) group_left sum by (instance) (http_requests_total)".into(),
        "http_requests_total and http_requests_total{code=\"200\"}".into(),
        "http_requests_total or temperature".into(),
        "http_requests_total unless http_requests_total{instance=\"a\"}".into(),
        "temperature == bool temperature".into(),
        "http_requests_total > on(instance) http_requests_total{code=\"200\"}".into(),
        "clamp_min(temperature - temperature + (0 / 0), 1)".into(),
        "max_over_time(rate(http_requests_total[1m])[10m:1m])".into(),
        "avg_over_time(temperature[10m:30s])".into(),
        "max_over_time(avg_over_time(temperature[2m:30s])[10m:1m])".into(),
        format!("avg_over_time(temperature[5m:1m] @ {})", at_secs(14)),
        "sort(temperature)".into(),
        "sort_desc(temperature)".into(),
        "vanishing".into(),
        "stale_series".into(),
        "rate(stale_series[5m])".into(),
        "1 + 2".into(),
        "-temperature".into(),
        "2 ^ 3 - 1".into(),
        // Dates (UTC) of the evaluation time and of samples' timestamps.
        "hour()".into(),
        "minute(timestamp(temperature))".into(),
        "day_of_week(timestamp(http_requests_total))".into(),
        "day_of_month()".into(),
        "day_of_year(timestamp(temperature))".into(),
        "days_in_month()".into(),
        "month()".into(),
        "year(timestamp(temperature))".into(),
        // Trigonometry.
        "sin(temperature)".into(),
        "cos(temperature) + tan(temperature)".into(),
        "asin(temperature / 100) + acos(temperature / 100)".into(),
        "atan(temperature) * atanh(temperature / 100)".into(),
        "sinh(temperature / 10) - cosh(temperature / 10) + tanh(temperature)".into(),
        "asinh(temperature) + acosh(temperature)".into(),
        "deg(temperature) / rad(temperature)".into(),
        "pi() * 2".into(),
        // Smoothing; the native-histogram functions answer nothing on classic buckets.
        "holt_winters(temperature[10m], 0.3, 0.6)".into(),
        "holt_winters(http_requests_total[5m], 0.5, 0.1)".into(),
        "histogram_count(req_duration_seconds_bucket)".into(),
    ];
    assert!(corpus.len() >= 60);
    // Raw JSON on purpose: this test compares Hale's answers with real Prometheus's as
    // Prometheus writes them (result types, label sets, value strings), so a field Hale's
    // own types would accept but Prometheus's clients would not still shows.
    let both = async |endpoint: &str, params: &[(&str, &str)]| -> [Value; 2] {
        let answer = async |addr: SocketAddr| {
            let url = format!("http://{addr}/api/v1/{endpoint}");
            common::get_json(&client, &url, params).await.expect("a JSON answer")
        };
        [answer(prom_addr).await, answer(hale_addr).await]
    };
    let mut mismatches = Vec::new();
    let mut answered = 0usize;
    let instants = [at(7), at(15) + 7_000, at(21), at(29)];
    for expr in &corpus {
        let keep_order = expr.starts_with("sort");
        for t in instants {
            let time = format!("{}", t as f64 / 1000.0);
            let answers = both("query", &[("query", expr.as_str()), ("time", &time)]).await;
            answered +=
                usize::from(compare(expr, &format!("at {t}"), &answers[0], &answers[1], keep_order, &mut mismatches));
        }
        if !expr.contains('@') && !expr.starts_with("sort") {
            let (start, end) = (format!("{}", at(6) as f64 / 1000.0), format!("{}", at(29) as f64 / 1000.0));
            let range = [("query", expr.as_str()), ("start", &start), ("end", &end), ("step", "60")];
            let answers = both("query_range", &range).await;
            answered += usize::from(compare(expr, "range", &answers[0], &answers[1], false, &mut mismatches));
        }
    }
    // The metadata API Grafana's variables and query builder call: label names, label
    // values and series, narrowed by match[] and start/end, compared as sets.
    let late = format!("{}", at(20) as f64 / 1000.0);
    let (early, end) = (format!("{}", at(2) as f64 / 1000.0), format!("{}", at(29) as f64 / 1000.0));
    let lookups: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("labels".into(), vec![]),
        ("labels".into(), vec![("match[]", "temperature")]),
        ("labels".into(), vec![("match[]", "http_requests_total{code=\"500\"}"), ("match[]", "vanishing")]),
        ("labels".into(), vec![("match[]", "{job=\"api\"}"), ("start", &early), ("end", &end)]),
        ("label/job/values".into(), vec![]),
        ("label/instance/values".into(), vec![("match[]", "http_requests_total")]),
        ("label/__name__/values".into(), vec![("match[]", "{job=~\".+\"}"), ("start", &early), ("end", &end)]),
        ("label/room/values".into(), vec![("match[]", "temperature{room!=\"y\"}")]),
        ("series".into(), vec![("match[]", "{job=\"api\"}"), ("start", &late)]),
        ("series".into(), vec![("match[]", "vanishing"), ("match[]", "temperature{room=\"z\"}")]),
    ];
    let mut non_empty = 0;
    for (endpoint, params) in &lookups {
        let [prom, hale] = both(endpoint, params).await;
        let as_set = |v: &Value| {
            let mut items: Vec<String> =
                v["data"].as_array().map(|a| a.iter().map(Value::to_string).collect()).unwrap_or_default();
            items.sort();
            (v["status"].clone(), items)
        };
        let (p, h) = (as_set(&prom), as_set(&hale));
        non_empty += usize::from(!p.1.is_empty());
        if p != h {
            mismatches.push(format!("{endpoint} {params:?}:\n  prometheus: {p:?}\n  hale:       {h:?}"));
        }
    }
    assert!(non_empty >= lookups.len() - 1, "the lookups answered too little: did the data reach Prometheus?");
    // Within Prometheus's head block every series counts, whatever the range; Hale
    // looks at each series' samples, as its series endpoint (and Prometheus's) does.
    let [_, hale] = both("label/__name__/values", &[("match[]", "{job=\"api\"}"), ("start", &late)]).await;
    let names: Vec<&str> = hale["data"].as_array().expect("data").iter().filter_map(Value::as_str).collect();
    assert_eq!(
        names,
        ["http_requests_total", "req_duration_seconds_bucket", "stale_series"],
        "vanishing ended before start"
    );
    let bad_name = both("label/0bad/values", &[]).await;
    assert_eq!(
        (bad_name[0]["errorType"].as_str(), bad_name[1]["errorType"].as_str()),
        (Some("bad_data"), Some("bad_data"))
    );
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    assert!(answered >= corpus.len() * 4, "only {answered} non-empty answers: did the data reach Prometheus?");
}

/// Counters that reset often (to non-zero values, and twice in a row), gauges with gaps
/// shorter and longer than the lookback, a series that goes stale and comes back, a
/// jittery scrape and a sparse one: the shapes where a range query's windows, taken
/// step by step, are easiest to get wrong.
fn edge_dataset(base: i64) -> WriteRequest {
    let ts = |i: i64| base + i * STEP_MS;
    let every = |f: &dyn Fn(i64) -> Option<(i64, f64)>| (0..POINTS).filter_map(f).collect::<Vec<_>>();
    let stale = f64::from_bits(STALE_NAN);
    let back_to_back = [10.0, 20.0, 5.0, 2.0, 30.0, 40.0, 0.0, 0.0, 1.0];
    WriteRequest::of(vec![
        series(
            &[("__name__", "resets_total"), ("pattern", "often")],
            every(&|i| Some((ts(i), ((i % 17) * 3 + 1) as f64))),
        ),
        series(
            &[("__name__", "resets_total"), ("pattern", "back_to_back")],
            every(&|i| Some((ts(i), back_to_back[(i % 9) as usize] + (i / 9) as f64))),
        ),
        series(
            &[("__name__", "gaps"), ("len", "2m")],
            every(&|i| (!(40..48).contains(&i)).then(|| (ts(i), (i as f64 * 0.7).cos() * 10.0))),
        ),
        series(
            &[("__name__", "gaps"), ("len", "10m")],
            every(&|i| (!(60..100).contains(&i)).then(|| (ts(i), i as f64 / 3.0))),
        ),
        series(
            &[("__name__", "flapping"), ("job", "edge")],
            every(&|i| Some((ts(i), if [30, 31, 70].contains(&i) { stale } else { i as f64 }))),
        ),
        series(
            &[("__name__", "jitter_total"), ("job", "edge")],
            every(&|i| Some((ts(i) + ((i * 7) % 11 - 5) * 1000, (i * i) as f64 / 4.0))),
        ),
        series(&[("__name__", "sparse"), ("job", "edge")], every(&|i| (i % 8 == 0).then(|| (ts(i), (i / 8) as f64)))),
    ])
}

/// Range queries over [`edge_dataset`], compared with Prometheus point by point, on
/// grids aligned with the scrape, off it, finer than it and coarser than the windows.
#[tokio::test]
async fn range_queries_match_prometheus_step_by_step() {
    let tmp = tempfile::tempdir().expect("tmp");
    let client = reqwest::Client::new();
    let (_running, [prom_addr, hale_addr], base) = prometheus_and_collector(tmp.path(), &client, edge_dataset).await;
    let at = |min: i64, ms: i64| format!("{}", (base + min * 60_000 + ms) as f64 / 1000.0);
    let grids = [
        (at(3, 7_000), at(28, 0), "15"),
        (at(10, 0), at(14, 0), "5"),
        (at(0, 0), at(29, 0), "120"),
        (at(5, 1_000), at(25, 1_000), "37"),
    ];
    let corpus = [
        "resets_total",
        "rate(resets_total[1m])",
        "rate(resets_total[5m])",
        "increase(resets_total[2m])",
        "resets(resets_total[5m])",
        "irate(resets_total[1m])",
        "sum by (pattern) (increase(resets_total[5m]))",
        "rate(resets_total[5m] offset 1m)",
        "gaps",
        "rate(gaps[1m])",
        "avg_over_time(gaps[3m])",
        "count_over_time(gaps[1m])",
        "last_over_time(gaps[10m])",
        "predict_linear(gaps[5m], 60)",
        "flapping",
        "rate(flapping[2m])",
        "changes(flapping[5m])",
        "max_over_time(flapping[1m])",
        "timestamp(flapping)",
        "rate(jitter_total[1m])",
        "deriv(jitter_total[2m])",
        "idelta(jitter_total[1m])",
        "delta(jitter_total[90s])",
        "quantile_over_time(0.5, jitter_total[2m])",
        "sparse",
        "rate(sparse[5m])",
        "sum_over_time(sparse[1m])",
        "present_over_time(sparse[1m])",
        "sum(rate(resets_total[2m]))",
        "gaps / on() group_left sum(sparse)",
    ];
    let mut mismatches = Vec::new();
    let mut answered = 0;
    for expr in corpus {
        for (start, end, step) in &grids {
            let params = [("query", expr), ("start", start.as_str()), ("end", end.as_str()), ("step", step)];
            let mut answers = Vec::new();
            for addr in [prom_addr, hale_addr] {
                let url = format!("http://{addr}/api/v1/query_range");
                answers.push(common::get_json(&client, &url, &params).await.expect("a JSON answer"));
            }
            let when = format!("range {start}..{end} step {step}");
            answered += usize::from(compare(expr, &when, &answers[0], &answers[1], false, &mut mismatches));
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
    assert!(
        answered >= corpus.len() * grids.len() - 4,
        "only {answered} non-empty answers: did the data reach Prometheus?"
    );
}

/// Compares one answer pair; returns whether Prometheus gave a non-empty answer (so the
/// test cannot pass on empty results).
fn compare(expr: &str, when: &str, prom: &Value, hale: &Value, keep_order: bool, out: &mut Vec<String>) -> bool {
    if prom["status"] != "success" {
        if hale["status"] == "success" {
            out.push(format!("{expr} {when}: Prometheus failed ({}) but Hale answered", prom["error"]));
        }
        return false;
    }
    if hale["status"] != "success" {
        out.push(format!("{expr} {when}: Hale failed: {}", hale["error"]));
        return false;
    }
    let (pk, pi) = normalise(prom, keep_order);
    let (hk, hi) = normalise(hale, keep_order);
    if pk != hk {
        out.push(format!("{expr} {when}: result type {hk}, Prometheus {pk}"));
        return false;
    }
    if pi.len() != hi.len() || pi.iter().zip(&hi).any(|(a, b)| a.0 != b.0) {
        out.push(format!(
            "{expr} {when}: series differ\n  prometheus: {:?}\n  hale:       {:?}",
            pi.iter().map(|x| &x.0).collect::<Vec<_>>(),
            hi.iter().map(|x| &x.0).collect::<Vec<_>>()
        ));
        return false;
    }
    for ((key, pv), (_, hv)) in pi.iter().zip(&hi) {
        let same =
            pv.len() == hv.len() && pv.iter().zip(hv).all(|(a, b)| (a.0 - b.0).abs() < 1e-6 && same_value(&a.1, &b.1));
        if !same {
            out.push(format!(
                "{expr} {when} {key}:\n  prometheus: {:?}\n  hale:       {:?}",
                &pv[..pv.len().min(6)],
                &hv[..hv.len().min(6)]
            ));
        }
    }
    !pi.is_empty()
}
