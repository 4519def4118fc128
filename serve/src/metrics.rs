//! Every Hale server's own metrics: registered through `prometheus-client`, answered on
//! `/metrics` in the OpenMetrics text format.

use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use prometheus_client::registry::{Metric, Registry};

/// The content type of every Hale `/metrics` answer.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A fresh metric, registered under `name` with `help`; the returned handle updates what
/// `registry` exposes (metrics share their state between clones).
pub fn registered<M: Metric + Clone + Default>(registry: &mut Registry, name: &str, help: &str) -> M {
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// `registry` in the OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String fails only if a metric's own encoder does, which the
    // built-in metric types never do: log it rather than fail the scrape.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    out
}

/// `registry` as a `/metrics` answer.
pub fn exposition(registry: &Registry) -> Response {
    ([(CONTENT_TYPE, OPENMETRICS)], encode(registry)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn a_registered_handle_moves_what_is_exposed() {
        let mut registry = Registry::with_prefix("hale");
        let requests: Counter = registered(&mut registry, "requests", "Requests served");
        requests.inc_by(3);
        let text = encode(&registry);
        assert!(text.contains("# HELP hale_requests Requests served."), "{text}");
        assert!(text.lines().any(|l| l == "hale_requests_total 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_answer_says_openmetrics() {
        let response = exposition(&Registry::default());
        assert_eq!(response.headers()[CONTENT_TYPE], OPENMETRICS);
    }
}
