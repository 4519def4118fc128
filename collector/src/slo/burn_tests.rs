//! Burn-rate alerts on synthetic error streams, against hand-computed expectations: one
//! stream per window pair of the SRE workbook, plus tier dedup, the minimum-events guard,
//! a healthy service and one without data. Windows are scaled by 0.01 (5m → 3s, 3d →
//! 43m12s) so a stream is 2,700 one-second samples.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::generate::{Options, prometheus_rules};
use super::spec;
use super::state;
use crate::rules::{AlertState, GroupRunner, LabelSet, RuleFile};
use crate::store::Store;

const END: i64 = 10_000_000; // ms
const SPAN_S: i64 = 2_700;

/// Error fraction and requests per second of a case, by age in seconds before END.
struct Case {
    service: &'static str,
    rps: f64,
    errors: fn(i64) -> f64,
}

const CASES: [Case; 7] = [
    // 0.1 for 40 s: the 5m (3 s) and 1h (36 s) windows are over 14.4 × 0.005 = 0.072.
    Case { service: "page-fast", rps: 10.0, errors: |age| if age < 40 { 0.1 } else { 0.0 } },
    // 0.04 for 250 s: 30m (18 s) and 6h (216 s) over 6 × 0.005 = 0.03; 5m under 0.072.
    Case { service: "page-slow", rps: 10.0, errors: |age| if age < 250 { 0.04 } else { 0.0 } },
    // 0.02 for 900 s: 2h (72 s) and 1d (864 s) over 3 × 0.005; 30m under 0.03.
    Case { service: "ticket-fast", rps: 10.0, errors: |age| if age < 900 { 0.02 } else { 0.0 } },
    // 0.008 throughout: 6h and 3d over 1 × 0.005; 2h under 0.015.
    Case { service: "ticket-slow", rps: 10.0, errors: |_| 0.008 },
    // 0.1 throughout: every pair holds; the ticket stays quiet while the page fires.
    Case { service: "dedup", rps: 10.0, errors: |_| 0.1 },
    // 0.2 requests/s, all failing for 10 s: the page windows hold 0.6 and 7.2 events.
    Case { service: "quiet", rps: 0.2, errors: |age| if age < 10 { 1.0 } else { 0.0 } },
    Case { service: "healthy", rps: 10.0, errors: |_| 0.0 },
];

fn spec_text(service: &str) -> String {
    format!(
        r#"version: "prometheus/v1"
service: "{service}"
slos:
  - name: "availability"
    objective: 99.5
    sli:
      events:
        error_query: sum(rate(requests_total{{service="{service}",code="500"}}[{{{{.window}}}}])) or on() vector(0)
        total_query: sum(rate(requests_total{{service="{service}"}}[{{{{.window}}}}]))
    alerting:
      name: Availability
"#
    )
}

async fn store_with_streams() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path()).expect("store");
    for case in &CASES {
        let (mut ok, mut bad) = (0.0, 0.0);
        let (mut ok_points, mut bad_points) = (Vec::new(), Vec::new());
        for s in 0..=SPAN_S {
            let age = SPAN_S - s;
            let f = (case.errors)(age);
            bad += case.rps * f;
            ok += case.rps * (1.0 - f);
            let t = END - age * 1000;
            ok_points.push((t, ok));
            bad_points.push((t, bad));
        }
        let labels = |code: &str| {
            vec![
                ("__name__".to_string(), "requests_total".to_string()),
                ("code".into(), code.into()),
                ("service".into(), case.service.into()),
            ]
        };
        store.ingest(vec![(labels("200"), ok_points), (labels("500"), bad_points)], None).await.expect("ingest");
    }
    (dir, store)
}

/// Evaluates every SLO rule once at END; returns the firing (service, tier) pairs and
/// the specs.
async fn evaluate(store: &Store, min_events: u64, services: &[&str]) -> (BTreeSet<(String, String)>, Vec<spec::Spec>) {
    let text: Vec<String> = services.iter().map(|s| spec_text(s)).collect();
    let specs = spec::parse(&text.join("---\n")).expect("specs");
    let rules = prometheus_rules(&specs, Options { time_scale: 0.01, min_events });
    let file = RuleFile::parse(&rules).expect("rules");
    let mut firing = BTreeSet::new();
    for group in &file.groups {
        let mut runner = GroupRunner::new(group, "slo", Duration::from_secs(1), Arc::new(LabelSet::new()));
        runner.eval_at(store, END, None).await;
        for rule in &runner.rules {
            assert!(rule.status.last_error.is_none(), "{}: {:?}", rule.name, rule.status.last_error);
            for a in rule.alerts().into_iter().filter(|a| a.state == AlertState::Firing) {
                firing.insert((a.labels["sloth_service"].clone(), a.labels["sloth_severity"].clone()));
            }
        }
    }
    (firing, specs)
}

fn pairs(list: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[tokio::test]
async fn every_window_pair_fires_its_tier_and_only_it() {
    let (_dir, store) = store_with_streams().await;
    let services: Vec<&str> = CASES.iter().map(|c| c.service).chain(["silent"]).collect();
    let (firing, specs) = evaluate(&store, 5, &services).await;
    assert_eq!(
        firing,
        pairs(&[
            ("page-fast", "page"),
            ("page-slow", "page"),
            ("ticket-fast", "ticket"),
            ("ticket-slow", "ticket"),
            ("dedup", "page"),
        ])
    );
    let states = state::compute(&store, &state::defs(&specs), 5, END);
    let status = |s: &str| states.iter().find(|x| x.service == s).map_or("?", |x| x.status.as_str());
    assert_eq!(status("page-fast"), "page");
    assert_eq!(status("ticket-slow"), "ticket");
    assert_eq!(status("quiet"), "insufficient_data", "too few events to page on");
    assert_eq!(status("healthy"), "ok");
    assert_eq!(status("silent"), "no_data", "no data is not 100 % good");
    let healthy = states.iter().find(|x| x.service == "healthy").expect("healthy");
    assert_eq!(healthy.error_budget_remaining, Some(1.0));
    assert_eq!(healthy.windows[0].error_ratio, Some(0.0));
    let silent = states.iter().find(|x| x.service == "silent").expect("silent");
    assert_eq!(silent.error_budget_remaining, None);
    assert!(silent.windows.iter().all(|w| w.error_ratio.is_none() && w.events.is_none()));
    // The dedup stream burns 0.1 / 0.005 = 20× everywhere.
    let dedup = states.iter().find(|x| x.service == "dedup").expect("dedup");
    for w in &dedup.windows {
        let burn = w.burn_rate.expect("burn");
        assert!((burn - 20.0).abs() < 0.5, "{}: {burn}", w.window);
    }
    assert_eq!(dedup.firing, ["page"]);
    let ticket = states.iter().find(|x| x.service == "ticket-slow").expect("ticket-slow");
    let three_days = ticket.windows.iter().find(|w| w.window == "3d").expect("3d");
    assert!((three_days.error_ratio.expect("ratio") - 0.008).abs() < 1e-3);
}

#[tokio::test]
async fn without_the_guard_the_quiet_service_pages() {
    let (_dir, store) = store_with_streams().await;
    let (firing, _) = evaluate(&store, 0, &["quiet"]).await;
    assert_eq!(firing, pairs(&[("quiet", "page")]), "so the guard is what kept it quiet");
}

/// Issue #12, finding 18: a service whose traffic pauses (0 requests in a short window:
/// 0/0) still has a period SLI. Before, one NaN window made the period's average NaN for
/// the whole period, and the dashboard showed the SLI as `—` while errors were injected.
#[tokio::test]
async fn a_pause_in_traffic_does_not_blank_the_period_sli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = Store::open(dir.path()).expect("store");
    // 10 requests/s with 5 % errors, except 20 s with no traffic at all in the middle.
    let (mut ok, mut bad) = (0.0, 0.0);
    let (mut ok_points, mut bad_points) = (Vec::new(), Vec::new());
    for s in 0..=200i64 {
        let age = 200 - s;
        if !(60..80).contains(&age) {
            ok += 9.5;
            bad += 0.5;
        }
        ok_points.push((END - age * 1000, ok));
        bad_points.push((END - age * 1000, bad));
    }
    let labels = |code: &str| {
        vec![
            ("__name__".to_string(), "requests_total".to_string()),
            ("code".into(), code.into()),
            ("service".into(), "paused".into()),
        ]
    };
    store.ingest(vec![(labels("200"), ok_points), (labels("500"), bad_points)], None).await.expect("ingest");
    let specs = spec::parse(&spec_text("paused")).expect("spec");
    let rules = prometheus_rules(&specs, Options { time_scale: 0.01, min_events: 0 });
    let file = RuleFile::parse(&rules).expect("rules");
    let mut runners: Vec<GroupRunner> = file
        .groups
        .iter()
        .map(|g| GroupRunner::new(g, "slo", Duration::from_secs(1), Arc::new(LabelSet::new())))
        .collect();
    for t in (END - 150_000..=END).step_by(1000) {
        for runner in &mut runners {
            runner.eval_at(&store, t, None).await;
        }
    }
    let states = state::compute(&store, &state::defs(&specs), 0, END);
    let period = states[0].period_error_ratio.expect("a period SLI despite the pause");
    assert!((period - 0.05).abs() < 1e-9, "{period}");
    assert!(states[0].error_budget_remaining.is_some());
}
