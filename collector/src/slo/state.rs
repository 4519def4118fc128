//! Where each SLO stands, read from the series its rules record: error ratio, events and
//! burn rate per window, what is left of the budget, which alerts fire. A window without
//! data is reported as missing, never as 100 % good, and a budget is only reported when the
//! period has data.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use super::generate::{self, PERIOD, WINDOWS};
use super::spec::Spec;
use crate::query::{self, Value};
use crate::store::Store;

/// What the collector knows of one SLO from its spec.
#[derive(Debug, Clone)]
pub struct SloDef {
    pub id: String,
    pub service: String,
    pub slo: String,
    pub objective: f64,
    pub budget: f64,
    pub events: bool,
}

pub fn defs(specs: &[Spec]) -> Vec<SloDef> {
    specs
        .iter()
        .flat_map(|spec| {
            spec.slos.iter().map(move |slo| SloDef {
                id: generate::sloth_id(spec, slo),
                service: spec.service.clone(),
                slo: slo.name.clone(),
                objective: slo.objective / 100.0,
                budget: generate::budget(slo),
                events: slo.sli.events.is_some(),
            })
        })
        .collect()
}

/// `/api/v1/slos`'s shapes are wire types: core defines them.
pub use hale_core::api::{SloState, SloStatus, SloWindow as WindowState};

fn value(store: &Store, expr: &str, now: i64) -> Option<f64> {
    match query::instant_query(store, expr, now) {
        Ok(Value::Vector(v)) => v.first().map(|s| s.value).filter(|v| v.is_finite()),
        _ => None,
    }
}

/// The state of every SLO at `now`.
pub fn compute(store: &Store, defs: &[SloDef], min_events: u64, now: i64) -> Vec<SloState> {
    defs.iter()
        .map(|d| {
            let sel = format!("sloth_id={}", serde_json::to_string(&d.id).unwrap_or_default());
            let windows: Vec<WindowState> = WINDOWS
                .iter()
                .map(|(w, _)| {
                    let error_ratio = value(store, &format!("slo:sli_error:ratio_rate{w}{{{sel}}}"), now);
                    let events =
                        if d.events { value(store, &format!("slo:sli_events:count{w}{{{sel}}}"), now) } else { None };
                    WindowState {
                        window: w.to_string(),
                        error_ratio,
                        burn_rate: error_ratio.map(|r| r / d.budget),
                        events,
                    }
                })
                .collect();
            let period = value(store, &format!("slo:sli_error:ratio_rate{}{{{sel}}}", PERIOD.0), now);
            let firing: Vec<String> =
                match query::instant_query(store, &format!("ALERTS{{{sel}, alertstate=\"firing\"}}"), now) {
                    Ok(Value::Vector(v)) => {
                        let mut tiers: Vec<String> = v
                            .iter()
                            .filter_map(|s| {
                                s.labels.iter().find(|(n, _)| n == "sloth_severity").map(|(_, t)| t.to_string())
                            })
                            .collect();
                        tiers.sort();
                        tiers.dedup();
                        tiers
                    }
                    _ => Vec::new(),
                };
            // The page windows must have data to call the SLO good: older data alone is not
            // "ok" now.
            let page_windows_blind =
                windows.iter().filter(|w| w.window == "5m" || w.window == "1h").any(|w| w.error_ratio.is_none());
            let short_of_events = page_windows_blind
                || d.events
                    && min_events > 0
                    && windows
                        .iter()
                        .filter(|w| w.window == "5m" || w.window == "1h")
                        .any(|w| w.events.is_none_or(|e| e < min_events as f64));
            let status = if firing.iter().any(|t| t == "page") {
                SloStatus::Page
            } else if firing.iter().any(|t| t == "ticket") {
                SloStatus::Ticket
            } else if windows.iter().all(|w| w.error_ratio.is_none()) && period.is_none() {
                SloStatus::NoData
            } else if short_of_events {
                SloStatus::InsufficientData
            } else {
                SloStatus::Ok
            };
            SloState {
                id: d.id.clone(),
                service: d.service.clone(),
                slo: d.slo.clone(),
                objective: d.objective,
                windows,
                period_error_ratio: period,
                error_budget_remaining: period.map(|p| 1.0 - p / d.budget),
                status,
                firing,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SloLabels {
    slo: String,
    service: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabels {
    slo: String,
    service: String,
    window: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    slo: String,
    service: String,
    status: &'static str,
}

type Gauges<L> = Family<L, Gauge<f64, AtomicU64>>;

/// The `hale_slo_*` series of DESIGN.md, plus events per window and a status state set,
/// into `registry` (prefixed `hale_slo`).
pub fn register_metrics(states: &[SloState], registry: &mut Registry) {
    let (objective, remaining, status) = (Gauges::<SloLabels>::default(), Gauges::default(), Gauges::default());
    let (ratio, burn, events) = (Gauges::<WindowLabels>::default(), Gauges::default(), Gauges::default());
    for s in states {
        let base = SloLabels { slo: s.slo.clone(), service: s.service.clone() };
        let window =
            |window: &str| WindowLabels { slo: s.slo.clone(), service: s.service.clone(), window: window.into() };
        objective.get_or_create(&base).set(s.objective);
        for w in &s.windows {
            let labels = window(&w.window);
            for (family, value) in [(&ratio, w.error_ratio), (&burn, w.burn_rate), (&events, w.events)] {
                if let Some(v) = value {
                    family.get_or_create(&labels).set(v);
                }
            }
        }
        if let Some(r) = s.period_error_ratio {
            ratio.get_or_create(&window(PERIOD.0)).set(r);
        }
        if let Some(r) = s.error_budget_remaining {
            remaining.get_or_create(&base).set(r);
        }
        for st in SloStatus::ALL {
            let labels = StatusLabels { slo: s.slo.clone(), service: s.service.clone(), status: st.as_str() };
            status.get_or_create(&labels).set(if s.status == st { 1.0 } else { 0.0 });
        }
    }
    let ratio_unit = || Unit::Other("ratio".into());
    registry.register_with_unit("objective", "The SLO's objective, as a ratio", ratio_unit(), objective);
    registry.register_with_unit(
        "sli_error",
        "Share of bad events over each window (absent when the window has no data)",
        ratio_unit(),
        ratio,
    );
    registry.register("burn_rate", "Error ratio over the error budget, per window", burn);
    registry.register_with_unit(
        "error_budget_remaining",
        "Share of the 30-day error budget left (absent without data for the period)",
        ratio_unit(),
        remaining,
    );
    registry.register("events", "Events counted in each window (event SLIs)", events);
    registry.register(
        "status",
        "1 for the SLO's current status: page, ticket, ok, insufficient_data or no_data",
        status,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `hale_slo_*` names, labels and units of DESIGN.md; a window without data is
    /// absent, never 0.
    #[test]
    fn slo_metrics_keep_their_names_and_labels() {
        let window = |window: &str, error_ratio: Option<f64>| WindowState {
            window: window.into(),
            error_ratio,
            burn_rate: error_ratio.map(|r| r / 0.005),
            events: error_ratio.map(|_| 120.0),
        };
        let state = SloState {
            id: "orders-availability".into(),
            service: "orders".into(),
            slo: "availability".into(),
            objective: 0.995,
            windows: vec![window("5m", Some(0.01)), window("1h", None)],
            period_error_ratio: Some(0.001),
            error_budget_remaining: Some(0.8),
            status: SloStatus::Page,
            firing: vec!["page".into()],
        };
        let mut registry = Registry::with_prefix("hale");
        register_metrics(&[state], registry.sub_registry_with_prefix("slo"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let base = r#"slo="availability",service="orders""#;
        for line in [
            format!("hale_slo_objective_ratio{{{base}}} 0.995"),
            format!("hale_slo_sli_error_ratio{{{base},window=\"5m\"}} 0.01"),
            format!("hale_slo_sli_error_ratio{{{base},window=\"30d\"}} 0.001"),
            format!("hale_slo_burn_rate{{{base},window=\"5m\"}} 2.0"),
            format!("hale_slo_events{{{base},window=\"5m\"}} 120.0"),
            format!("hale_slo_error_budget_remaining_ratio{{{base}}} 0.8"),
            format!("hale_slo_status{{{base},status=\"page\"}} 1.0"),
            format!("hale_slo_status{{{base},status=\"ok\"}} 0.0"),
            "# TYPE hale_slo_burn_rate gauge".into(),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(!text.contains("window=\"1h\""), "no data, no sample:\n{text}");
    }
}
