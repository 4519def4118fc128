//! The whole-range evaluator against the instant evaluator run at every step: the same
//! series, the same points, the same values (to 1e-12, since a nested aggregation may
//! add the same numbers in another order), the same errors — over counter resets,
//! staleness markers, gaps, jittered scrapes, and grids that do and do not line up with
//! the samples.

use super::super::{Limits, QueryError, Value, range_query_stepwise, range_query_within};
use crate::store::Store;

const STALE: u64 = super::super::STALE_NAN;
const SCRAPE: i64 = 15_000;
const POINTS: i64 = 241;

type Incoming = (Vec<(String, String)>, Vec<(i64, f64)>);

fn series(labels: &[(&str, &str)], points: Vec<(i64, f64)>) -> Incoming {
    let mut labels: Vec<(String, String)> = labels.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect();
    labels.sort();
    (labels, points)
}

/// Counters with resets, gauges, a histogram, series that stop, restart after a gap or
/// end in staleness markers, and a scrape that jitters.
fn dataset() -> Vec<Incoming> {
    let ts = |i: i64| i * SCRAPE;
    // Counters: instance b's reset at 60, 90 and 180.
    let counter = |instance: &str, rate: f64, i: i64| match instance {
        "b" => rate * (i % 90 - if (60..90).contains(&i) { 60 } else { 0 }).max(0) as f64,
        _ => rate * i as f64 + (i % 7) as f64,
    };
    let mut out: Vec<Incoming> = [("a", "200", 5.0), ("a", "500", 0.5), ("b", "200", 3.0), ("b", "500", 1.0)]
        .into_iter()
        .map(|(instance, code, rate)| {
            let labels = [("__name__", "http_requests_total"), ("job", "api"), ("instance", instance), ("code", code)];
            series(&labels, (0..POINTS).map(|i| (ts(i), counter(instance, rate, i))).collect())
        })
        .collect();
    // Gauges.
    for (room, offset) in [("x", 0.0), ("y", 1.5), ("z", -2.25)] {
        let wave = |i: i64| 20.0 + offset + (i as f64 / 10.0).sin() * 3.0;
        out.push(series(
            &[("__name__", "temperature"), ("room", room), ("job", "sensors")],
            (0..POINTS).map(|i| (ts(i), wave(i))).collect(),
        ));
    }
    for (k, le) in ["0.1", "0.5", "1", "+Inf"].iter().enumerate() {
        let share = [0.5, 0.8, 0.95, 1.0][k];
        for job in ["api", "web"] {
            let points = (0..POINTS).map(|i| (ts(i), (10.0 * i as f64 * share).floor())).collect();
            out.push(series(&[("__name__", "req_duration_seconds_bucket"), ("job", job), ("le", le)], points));
        }
    }
    out.push(series(&[("__name__", "vanishing"), ("job", "api")], (0..60).map(|i| (ts(i), i as f64)).collect()));
    // Stale at 80 and 200; nothing between 81 and 99 (a gap longer than the lookback).
    let stale = (0..POINTS)
        .filter(|i| !(81..100).contains(i))
        .map(|i| (ts(i), if i == 80 || i == 200 { f64::from_bits(STALE) } else { i as f64 * 2.0 }))
        .collect();
    out.push(series(&[("__name__", "stale_series"), ("job", "api")], stale));
    // A scrape that jitters by up to 4 s and misses every 13th sample.
    let jitter =
        (0..POINTS).filter(|i| i % 13 != 5).map(|i| (ts(i) + (i * 7919 % 9 - 4) * 1000, (i * i % 17) as f64)).collect();
    out.push(series(&[("__name__", "jittery"), ("job", "web")], jitter));
    // Same labels but the name: duplicates once a function drops it.
    for name in ["twin_a", "twin_b"] {
        out.push(series(&[("__name__", name), ("job", "web")], (0..POINTS).map(|i| (ts(i), i as f64)).collect()));
    }
    out
}

const EXPRESSIONS: &[&str] = &[
    "http_requests_total",
    "http_requests_total{code!=\"200\"} offset 5m",
    "http_requests_total @ 1800",
    "rate(http_requests_total[5m])",
    "rate(http_requests_total[1m])",
    "irate(http_requests_total[5m])",
    "increase(http_requests_total[10m])",
    "rate(http_requests_total[5m] offset 2m)",
    "rate(http_requests_total[5m] @ 2400)",
    "delta(temperature[5m])",
    "idelta(jittery[2m])",
    "deriv(temperature[10m])",
    "predict_linear(temperature[10m], 600)",
    "predict_linear(temperature[10m], time() / 1000)",
    "resets(http_requests_total[30m])",
    "changes(jittery[10m])",
    "avg_over_time(temperature[10m])",
    "min_over_time(jittery[1m])",
    "max_over_time(stale_series[10m])",
    "sum_over_time(jittery[10m])",
    "count_over_time(stale_series[2m])",
    "last_over_time(stale_series[10m])",
    "present_over_time(vanishing[10m])",
    "stddev_over_time(temperature[10m])",
    "stdvar_over_time(jittery[10m])",
    "quantile_over_time(0.9, temperature[10m])",
    "rate(stale_series[5m])",
    "stale_series",
    "vanishing",
    "jittery",
    "absent(nonexistent{job=\"x\"})",
    "absent_over_time(vanishing[5m])",
    "histogram_quantile(0.9, rate(req_duration_seconds_bucket[5m]))",
    "histogram_quantile(0.5, sum by (le) (rate(req_duration_seconds_bucket[5m])))",
    "clamp(temperature, 18, 22)",
    "clamp(temperature, 22, 18)",
    "clamp_min(temperature, 20)",
    "clamp_max(temperature, 20)",
    "abs(temperature - 20)",
    "sgn(temperature - 20)",
    "round(temperature)",
    "round(temperature, 0.5)",
    "time()",
    "timestamp(jittery)",
    "vector(1)",
    "vector(time())",
    "scalar(sum(temperature))",
    "scalar(temperature)",
    "label_replace(temperature, \"floor\", \"f-$1\", \"room\", \"(.*)\")",
    "sum(http_requests_total)",
    "sum by (code) (rate(http_requests_total[5m]))",
    "sum without (instance) (http_requests_total)",
    "avg(temperature)",
    "min by (job) (http_requests_total)",
    "max(temperature)",
    "count(stale_series)",
    "stddev(temperature)",
    "stdvar(temperature)",
    "group by (job) (http_requests_total)",
    "topk(2, temperature)",
    "bottomk(1, rate(http_requests_total[5m]))",
    "topk by (instance) (1, http_requests_total * 0)",
    "bottomk(scalar(vanishing) / 20, temperature)",
    "topk(2, -jittery or temperature)",
    "quantile(0.5, temperature)",
    "quantile(scalar(vanishing) / 100, temperature)",
    "count_values(\"value\", round(temperature))",
    "sum(sum by (instance) (rate(http_requests_total[5m])))",
    "http_requests_total + 1",
    "2 * temperature",
    "temperature > 20",
    "20 < temperature",
    "temperature > bool 20",
    "http_requests_total{code=\"200\"} / ignoring(code) http_requests_total{code=\"500\"}",
    "http_requests_total / on(instance) group_left sum by (instance) (http_requests_total)",
    "http_requests_total and http_requests_total{code=\"200\"}",
    "http_requests_total or temperature",
    "http_requests_total unless stale_series",
    "stale_series or vanishing or jittery",
    "vanishing and on() stale_series",
    "http_requests_total > on(instance) http_requests_total{code=\"200\"}",
    "http_requests_total == bool on(instance, code) http_requests_total",
    "http_requests_total + on(instance) group_right http_requests_total{code=\"500\"}",
    "rate(http_requests_total[5m]) / ignoring(code) group_left sum without (code) (rate(http_requests_total[5m]))",
    "req_duration_seconds_bucket / on(job) group_left(instance) http_requests_total{code=\"200\",instance=\"a\"}",
    "sum by (job) (rate(http_requests_total{code=\"500\"}[5m])) / sum by (job) (rate(http_requests_total[5m]))",
    "max_over_time(rate(http_requests_total[1m])[10m:1m])",
    "avg_over_time(temperature[10m:30s])",
    "1 + 2",
    "-temperature",
    "-(1 + time())",
    "2 ^ 3 - 1",
    "hour()",
    "minute(timestamp(temperature))",
    "holt_winters(temperature[10m], 0.3, 0.6)",
    "rate({__name__=~\"twin_.*\"}[5m])",
    "sum(rate({__name__=~\"twin_.*\"}[5m]))",
];

/// (start, end, step): aligned with the scrape, off it, finer than it, coarser than the
/// windows, a single step, and reaching past the data.
const GRIDS: &[(i64, i64, i64)] = &[
    (600_000, 3_600_000, 60_000),
    (607_000, 3_000_000, 15_000),
    (1_200_000, 1_500_000, 5_000),
    (0, 3_600_000, 600_000),
    (1_800_000, 1_800_000, 1_000),
    (3_000_000, 4_500_000, 30_000),
];

fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn agree(expr: &str, grid: (i64, i64, i64), whole: Result<Value, QueryError>, steps: Result<Value, QueryError>) {
    let (whole, steps) = match (whole, steps) {
        (Ok(Value::Matrix(w)), Ok(Value::Matrix(s))) => (w, s),
        (Err(w), Err(s)) => {
            assert_eq!(std::mem::discriminant(&w), std::mem::discriminant(&s), "{expr} {grid:?}: {w} vs {s}");
            return;
        }
        (w, s) => panic!("{expr} {grid:?}: whole range {w:?}\nstep by step {s:?}"),
    };
    let labels = |m: &[super::Series]| m.iter().map(|s| s.labels.clone()).collect::<Vec<_>>();
    assert_eq!(labels(&whole), labels(&steps), "{expr} {grid:?}: series");
    for (w, s) in whole.iter().zip(&steps) {
        assert_eq!(w.points.len(), s.points.len(), "{expr} {grid:?} {:?}: points", w.labels);
        for (a, b) in w.points.iter().zip(&s.points) {
            assert!(a.0 == b.0 && same(a.1, b.1), "{expr} {grid:?} {:?}: {a:?} vs {b:?}", w.labels);
        }
    }
}

async fn loaded() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tmp");
    let (store, _) = Store::open(dir.path()).expect("store");
    store.ingest(dataset(), None).await.expect("ingest");
    (dir, store)
}

#[tokio::test]
async fn whole_range_answers_are_the_instant_answers_at_every_step() {
    let (_dir, store) = loaded().await;
    let mut non_empty = 0;
    for expr in EXPRESSIONS {
        for &(start, end, step) in GRIDS {
            let whole = range_query_within(&store, expr, start, end, step, Limits::default());
            non_empty += usize::from(matches!(&whole, Ok(Value::Matrix(m)) if !m.is_empty()));
            agree(expr, (start, end, step), whole, range_query_stepwise(&store, expr, start, end, step));
        }
    }
    assert!(non_empty > EXPRESSIONS.len() * GRIDS.len() * 3 / 4, "only {non_empty} answers had data");
}

/// Found by fuzzing (fuzz/regressions/promql/binary-op-with-an-empty-side): a vector
/// match whose "one" side selects nothing at all read that side's first series, which
/// does not exist, and panicked — the query API's range queries over `a / b` with no `b`.
#[tokio::test]
async fn a_binary_operation_whose_one_side_selects_nothing_is_empty_not_a_panic() {
    let (_dir, store) = loaded().await;
    for expr in [
        "rate(http_requests_total[1m]) / rate(nothing_total[1m])",
        "nothing_total / http_requests_total",
        "sum by (job) (http_requests_total) * on (job) group_left nothing_total",
        "nothing_total * on (job) group_right sum by (job) (http_requests_total)",
    ] {
        for &(start, end, step) in GRIDS {
            let whole = range_query_within(&store, expr, start, end, step, Limits::default());
            assert!(matches!(&whole, Ok(Value::Matrix(m)) if m.is_empty()), "{expr}: {whole:?}");
            agree(expr, (start, end, step), whole, range_query_stepwise(&store, expr, start, end, step));
        }
    }
}

#[tokio::test]
async fn duplicate_label_sets_at_one_step_are_refused_as_prometheus_does() {
    let (_dir, store) = loaded().await;
    let err =
        range_query_within(&store, "rate({__name__=~\"twin_.*\"}[5m])", 600_000, 900_000, 60_000, Limits::default());
    assert!(matches!(err, Err(QueryError::Execution(ref m)) if m.contains("same labelset")), "{err:?}");
}

#[tokio::test]
async fn a_query_over_the_samples_limit_is_refused_with_what_to_change() {
    let (_dir, store) = loaded().await;
    let limits = Limits { deadline: None, max_samples: 500 };
    let err = range_query_within(&store, "sum(rate(http_requests_total[5m]))", 0, 3_600_000, 15_000, limits);
    match err {
        Err(QueryError::Execution(m)) => {
            assert!(m.contains("too many samples") && m.contains("--query-max-samples"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let roomy = Limits { deadline: None, max_samples: 100_000 };
    assert!(range_query_within(&store, "sum(rate(http_requests_total[5m]))", 0, 3_600_000, 15_000, roomy).is_ok());
    let past = Limits { deadline: Some(std::time::Instant::now()), max_samples: usize::MAX };
    assert!(matches!(
        range_query_within(&store, "rate(http_requests_total[5m])", 0, 3_600_000, 15_000, past),
        Err(QueryError::Timeout(_))
    ));
}
