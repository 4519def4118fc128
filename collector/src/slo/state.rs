//! Where each SLO stands, read from the series its rules record: error ratio, events and
//! burn rate per window, what is left of the budget, which alerts fire. A window without
//! data is reported as missing, never as 100 % good, and a budget is only reported when the
//! period has data.

use hale_core::metrics::{Family, MetricKind};

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
                                s.labels.iter().find(|(n, _)| n == "sloth_severity").map(|(_, t)| t.clone())
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

/// The `hale_slo_*` series of DESIGN.md, plus events per window and a status state set.
pub fn families(states: &[SloState]) -> Vec<Family> {
    let mut objective = Family::new("hale_slo_objective_ratio", "The SLO's objective, as a ratio.", MetricKind::Gauge);
    let mut ratio = Family::new(
        "hale_slo_sli_error_ratio",
        "Share of bad events over each window (absent when the window has no data).",
        MetricKind::Gauge,
    );
    let mut burn =
        Family::new("hale_slo_burn_rate", "Error ratio over the error budget, per window.", MetricKind::Gauge);
    let mut remaining = Family::new(
        "hale_slo_error_budget_remaining_ratio",
        "Share of the 30-day error budget left (absent without data for the period).",
        MetricKind::Gauge,
    );
    let mut events = Family::new("hale_slo_events", "Events counted in each window (event SLIs).", MetricKind::Gauge);
    let mut status = Family::new(
        "hale_slo_status",
        "1 for the SLO's current status: page, ticket, ok, insufficient_data or no_data.",
        MetricKind::Gauge,
    );
    for s in states {
        let base = [("slo", s.slo.as_str()), ("service", s.service.as_str())];
        objective.push(&base, s.objective);
        for w in &s.windows {
            let labels = [base[0], base[1], ("window", w.window.as_str())];
            if let Some(r) = w.error_ratio {
                ratio.push(&labels, r);
            }
            if let Some(b) = w.burn_rate {
                burn.push(&labels, b);
            }
            if let Some(e) = w.events {
                events.push(&labels, e);
            }
        }
        if let Some(r) = s.period_error_ratio {
            ratio.push(&[base[0], base[1], ("window", PERIOD.0)], r);
        }
        if let Some(r) = s.error_budget_remaining {
            remaining.push(&base, r);
        }
        for st in SloStatus::ALL {
            status.push(&[base[0], base[1], ("status", st.as_str())], if s.status == st { 1.0 } else { 0.0 });
        }
    }
    vec![objective, ratio, burn, remaining, events, status]
}
