//! Hale's Grafana dashboards (`dashboards/grafana/*.json`), linted and run. No Grafana
//! server is installable here, so the tests do what Grafana would with them: every
//! convention a provisioned dashboard relies on is checked on the JSON, and every panel's
//! query is run, its variables resolved as Grafana resolves them (query variables from
//! `label_values`, "All" as the variable's all-value or the alternation of every value),
//! against a real Prometheus scraping `hale up` and against the collector used as a
//! Prometheus datasource, after a fault has given the alert and healer panels something
//! to show. Trace panels (a Tempo datasource) run their TraceQL against the collector's
//! Tempo API, the only one of the two that has traces.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use common::up::{Cluster, chaos};

use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};

const DASHBOARDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/dashboards/grafana");

fn dashboards() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(DASHBOARDS)
        .expect("dashboards/grafana")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p: PathBuf| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("read");
            (name.clone(), serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: not JSON: {e}")))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every panel, those inside rows too.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A panel of traces (a Tempo datasource, TraceQL targets).
fn is_traces(panel: &Value) -> bool {
    panel["datasource"]["type"] == "tempo"
}

/// The variables of a dashboard, in order (later ones may use earlier ones).
fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"].as_array().map(|l| l.iter().collect()).unwrap_or_default()
}

/// A query variable's query text (`label_values(...)`).
fn variable_query(v: &Value) -> String {
    v["query"]["query"]
        .as_str()
        .or_else(|| v["query"].as_str())
        .or_else(|| v["definition"].as_str())
        .unwrap_or("")
        .to_string()
}

/// `text` with Grafana's built-in interval variables and `values` substituted (`$name`,
/// `${name}`, `[[name]]`), longest names first so `$service` does not eat `$services`.
fn substitute(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut all: Vec<(String, String)> = vec![
        ("__rate_interval".into(), "1m".into()),
        ("__interval".into(), "15s".into()),
        ("__range".into(), "10m".into()),
        ("__range_s".into(), "600".into()),
    ];
    all.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
    all.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    let mut out = text.to_string();
    for (name, value) in &all {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("[[{name}]]"), value)
            .replace(&format!("${name}"), value);
    }
    out
}

/// The metric names an expression selects.
fn metric_names(expr: &Expr) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
            let vs = match e {
                Expr::VectorSelector(vs) => Some(vs),
                Expr::MatrixSelector(ms) => Some(&ms.vs),
                _ => None,
            };
            if let Some(vs) = vs {
                let by_matcher = vs
                    .matchers
                    .matchers
                    .iter()
                    .find(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                    .map(|m| m.value.clone());
                self.0.extend(vs.name.clone().or(by_matcher));
            }
            Ok(true)
        }
    }
    let mut names = Names(BTreeSet::new());
    let _ = walk_expr(&mut names, expr);
    names.0
}

const DATASOURCE: &str = r#"{"type":"prometheus","uid":"${datasource}"}"#;

#[test]
fn dashboards_follow_grafanas_conventions_and_their_queries_parse() {
    let all = dashboards();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for wanted in [
        "hale-overview.json",
        "hale-slos.json",
        "hale-healer.json",
        "hale-nodes.json",
        "hale-pipeline.json",
        "hale-traces.json",
    ] {
        assert!(names.contains(&wanted), "{wanted} missing: {names:?}");
    }
    let ds: Value = serde_json::from_str(DATASOURCE).expect("json");
    let tempo = json!({"type": "tempo", "uid": "${traces}"});
    let mut uids = BTreeSet::new();
    for (name, d) in &all {
        let schema = d["schemaVersion"].as_u64().unwrap_or(0);
        assert!((39..=41).contains(&schema), "{name}: schemaVersion {schema}");
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty() && uids.insert(uid.to_string()), "{name}: uid {uid:?} missing or used twice");
        let vars = variables(d);
        assert!(
            vars.iter().any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
            "{name}: no `datasource` variable of Prometheus datasources"
        );
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"], ds, "{name}: variable {} must use ${{datasource}}", v["name"]);
        }
        let text = serde_json::to_string(d).expect("json");
        assert!(
            !text.contains("\"uid\":\"hale-collector\"") && !text.contains("\"uid\":\"prometheus\""),
            "{name}: a hard-coded datasource"
        );
        let mut ids = BTreeSet::new();
        for p in panels(d) {
            let title = p["title"].as_str().unwrap_or("?");
            assert!(ids.insert(p["id"].as_u64()), "{name}: panel id of {title:?} used twice");
            if p["type"] == "row" {
                continue;
            }
            assert!(p["description"].as_str().is_some_and(|s| !s.is_empty()), "{name}: {title:?} has no description");
            if is_traces(p) {
                assert_eq!(p["datasource"], tempo, "{name}: {title:?} must use ${{traces}}");
                assert!(
                    vars.iter().any(|v| v["name"] == "traces" && v["type"] == "datasource" && v["query"] == "tempo"),
                    "{name}: no `traces` variable of Tempo datasources"
                );
                for t in p["targets"].as_array().expect("targets") {
                    assert_eq!(t["datasource"], tempo, "{name}: {title:?}");
                    assert_eq!(t["queryType"], "traceql", "{name}: {title:?}");
                    assert!(t["query"].as_str().is_some_and(|q| q.starts_with('{')), "{name}: {title:?}");
                }
                continue;
            }
            assert_eq!(p["datasource"], ds, "{name}: {title:?} must use ${{datasource}}");
            if ["timeseries", "stat", "gauge", "bargauge"].contains(&p["type"].as_str().unwrap_or("")) {
                let defaults = &p["fieldConfig"]["defaults"];
                assert!(defaults["unit"].as_str().is_some_and(|u| !u.is_empty()), "{name}: {title:?} has no unit");
                assert!(
                    defaults["thresholds"]["steps"].as_array().is_some_and(|s| !s.is_empty()),
                    "{name}: {title:?} has no thresholds"
                );
            }
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {title:?} has no query");
            for t in targets {
                assert_eq!(t["datasource"], ds, "{name}: {title:?} target {} must use ${{datasource}}", t["refId"]);
                let expr = t["expr"].as_str().expect("expr");
                // Rates over Grafana's rate interval, which is never shorter than four scrapes.
                for (i, _) in expr.match_indices("rate(") {
                    let rest = &expr[i..];
                    let window = rest.find('[').map(|s| &rest[s + 1..s + 1 + rest[s + 1..].find(']').unwrap_or(0)]);
                    assert_eq!(window, Some("$__rate_interval"), "{name}: {title:?}: {expr}");
                }
                let values: BTreeMap<String, String> =
                    vars.iter().filter_map(|v| Some((v["name"].as_str()?.to_string(), "x".to_string()))).collect();
                let resolved = substitute(expr, &values);
                hale_collector::query::parse(&resolved)
                    .unwrap_or_else(|e| panic!("{name}: {title:?}: {resolved}: {e}"));
            }
        }
    }
}

/// The provisioning files name both datasources and the dashboards' folder.
#[test]
fn provisioning_points_grafana_at_hale() {
    let datasources =
        std::fs::read_to_string(format!("{DASHBOARDS}/provisioning/datasources/hale.yaml")).expect("datasources");
    let dashboards =
        std::fs::read_to_string(format!("{DASHBOARDS}/provisioning/dashboards/hale.yaml")).expect("dashboards");
    for (text, what) in [(&datasources, "datasources"), (&dashboards, "dashboards")] {
        assert!(text.contains("apiVersion: 1"), "{what}: {text}");
    }
    assert!(datasources.contains("type: prometheus") && datasources.contains("9464"), "{datasources}");
    for wanted in ["type: tempo", "uid: hale-traces", "type: loki", "uid: hale-logs", "exemplarTraceIdDestinations"] {
        assert!(datasources.contains(wanted), "{wanted}: {datasources}");
    }
    assert!(dashboards.contains("type: file") && dashboards.contains("path:"), "{dashboards}");
}

/// Grafana's resolution of a dashboard's variables on one datasource: each query
/// variable's `label_values(...)` asked of the series API, "All" as its all-value (or
/// the alternation of every value).
async fn resolve(client: &reqwest::Client, base: &str, d: &Value, start: &str, end: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for v in variables(d).into_iter().filter(|v| v["type"] == "query") {
        let name = v["name"].as_str().expect("name").to_string();
        let query = substitute(&variable_query(v), &values);
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect("label_values(...)");
        let (selector, label) = match inner.rsplit_once(',') {
            Some((s, l)) => (Some(s.trim().to_string()), l.trim().to_string()),
            None => (None, inner.trim().to_string()),
        };
        let mut params = vec![("start", start.to_string()), ("end", end.to_string())];
        params.extend(selector.map(|s| ("match[]", s)));
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let found: Vec<String> =
            common::get_data(client, &format!("{base}/api/v1/label/{label}/values"), &params).await.unwrap_or_default();
        let all = match v["allValue"].as_str() {
            Some(all) if !all.is_empty() => all.to_string(),
            _ => format!("({})", found.join("|")),
        };
        values.insert(name, all);
    }
    values
}

/// Each target of `d` with no data on `base` over the last ten minutes: (panel, expr).
/// Trace panels are asked of `traces` (the collector's Tempo API), when given.
async fn empty_panels(client: &reqwest::Client, base: &str, traces: Option<&str>, d: &Value) -> Vec<(String, String)> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let (start, end) = ((now - 600).to_string(), now.to_string());
    let values = resolve(client, base, d, &start, &end).await;
    let mut empty = Vec::new();
    for p in panels(d).into_iter().filter(|p| p["type"] != "row" && is_traces(p)) {
        let Some(tempo) = traces else { continue };
        for t in p["targets"].as_array().into_iter().flatten() {
            let q = t["query"].as_str().expect("query");
            let params = [("q", q), ("start", &start), ("end", &end), ("limit", "20")];
            let found: Option<hale_core::api::TraceSearch> =
                async { client.get(format!("{tempo}/api/search")).query(&params).send().await.ok()?.json().await.ok() }
                    .await;
            if found.is_none_or(|f| f.traces.is_empty()) {
                empty.push((p["title"].as_str().unwrap_or("?").to_string(), q.to_string()));
            }
        }
    }
    for p in panels(d).into_iter().filter(|p| p["type"] != "row" && !is_traces(p)) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = substitute(t["expr"].as_str().expect("expr"), &values);
            let params = [("query", expr.as_str()), ("start", &start), ("end", &end), ("step", "15")];
            let answer: Option<Value> = common::get_data(client, &format!("{base}/api/v1/query_range"), &params).await;
            let has_data = answer.is_some_and(|a| a["result"].as_array().is_some_and(|r| !r.is_empty()));
            if !has_data {
                empty.push((p["title"].as_str().unwrap_or("?").to_string(), expr));
            }
        }
    }
    empty
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_shows_data_from_prometheus_and_from_the_collector() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cluster = Cluster::start(tmp.path(), 20, &[]).await;
    let config = cluster.data_dir.join("prometheus/prometheus.yml");
    let (_prometheus, prom) = common::prometheus_with(&config, &tmp.path().join("tsdb")).await;
    // A replica hangs: the healer restarts it and proves the repair.
    chaos(&cluster.data_dir, &["hang", "search-1", "--duration", "60s"]);
    let client = reqwest::Client::new();
    let bases = [format!("http://{prom}"), cluster.collector()];
    let healer =
        hale_client::Healer::new(&format!("http://{}", cluster.config().healer.listen), None).expect("healer client");
    common::eventually("the healer repaired search-1", Duration::from_secs(90), async || {
        let list = healer.actions().await.ok()?;
        list.actions.iter().any(|a| a.status == hale_core::api::ActionStatus::Succeeded).then_some(())
    })
    .await;
    // Then a node goes down and stays down: NodeDown fires in both and keeps firing (once
    // both have heard from it: a node never seen is not "down").
    for base in &bases {
        common::eventually("node-3 seen", Duration::from_secs(30), async || {
            let seen = common::query(&client, base, "node_load1{node=\"node-3\"}").await?;
            (!seen.is_empty()).then_some(())
        })
        .await;
    }
    chaos(&cluster.data_dir, &["node-down", "node-3"]);

    let all = dashboards();
    // Every metric a dashboard names exists in a running cluster, and every panel shows
    // data on both datasources. The SLO windows, rates and the healer's counters need a
    // few scrapes and evaluations first, so this is asked until it holds (or the last
    // answer is shown).
    let mut last = Vec::new();
    for _ in 0..40 {
        last.clear();
        let mut known = BTreeSet::from(["ALERTS".to_string()]);
        for base in &bases {
            let names: Vec<String> = common::get_data(&client, &format!("{base}/api/v1/label/__name__/values"), &[])
                .await
                .unwrap_or_default();
            known.extend(names);
        }
        for (name, d) in &all {
            let values: BTreeMap<String, String> =
                variables(d).iter().filter_map(|v| Some((v["name"].as_str()?.to_string(), ".*".to_string()))).collect();
            for p in panels(d).into_iter().filter(|p| !is_traces(p)) {
                for t in p["targets"].as_array().into_iter().flatten() {
                    let text = substitute(t["expr"].as_str().expect("expr"), &values);
                    let expr = hale_collector::query::parse(&text).expect("parses");
                    for metric in metric_names(&expr).difference(&known) {
                        last.push(json!({"dashboard": name, "panel": p["title"], "unknown metric": metric}));
                    }
                }
            }
        }
        for base in &bases {
            for (name, d) in &all {
                let traces = (*base == cluster.collector()).then_some(base.as_str());
                for (title, expr) in empty_panels(&client, base, traces, d).await {
                    last.push(json!({"datasource": base, "dashboard": name, "panel": title, "expr": expr}));
                }
            }
        }
        if last.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    panic!(
        "{} panel queries name an unknown metric or show no data:\n{}",
        last.len(),
        serde_json::to_string_pretty(&last).expect("json")
    );
}
