//! Scrapes and probes of the services on this node.
//!
//! A scrape fetches `/metrics` (text 0.0.4 or OpenMetrics, by `Content-Type`), labels every
//! series with `service`, `instance` and `node`, and adds Prometheus's synthetic `up`,
//! `scrape_duration_seconds` and `scrape_samples_scraped`. A probe calls `/healthz` and
//! `/readyz` and reports blackbox_exporter's `probe_success`, `probe_duration_seconds` and
//! `probe_http_status_code` (0 without an answer), each with a `probe` label of `healthz`
//! or `readyz`.

use std::time::{Duration, Instant};

use hale_core::exposition::{self, Format};
use hale_core::metrics::{Family, MetricKind};

use crate::relabel::LabelSet;
use crate::targets::{Job, ScrapeTarget};

/// The most a scrape body may be; a larger one fails the scrape.
const MAX_BODY_BYTES: usize = 16 << 20;

/// One local service replica to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub instance: String,
    pub node: String,
    /// `http://addr`
    pub base_url: String,
    pub metrics_path: String,
    pub health_path: String,
    pub ready_path: String,
}

impl Target {
    fn labels(&self) -> [(&str, &str); 3] {
        [("service", &self.service), ("instance", &self.instance), ("node", &self.node)]
    }
}

/// Sets `labels` on every sample, replacing any the service set itself, and drops labels
/// starting with `__` (reserved; a receiver refuses a whole batch over one of them).
pub fn relabel(families: &mut [Family], labels: &[(&str, &str)]) {
    for family in families {
        for sample in &mut family.samples {
            sample.labels.retain(|(name, _)| !name.starts_with("__") && !labels.iter().any(|(n, _)| n == name));
            sample.labels.extend(labels.iter().map(|(n, v)| (n.to_string(), v.to_string())));
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<(String, String), String> {
    fetch_within(client, url, timeout, MAX_BODY_BYTES).await
}

async fn fetch_within(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<(String, String), String> {
    let response = client
        .get(url)
        .timeout(timeout)
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("text/plain").to_string();
    let mut response = response;
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if bytes.len() + chunk.len() > max_body {
            return Err(format!("body larger than {max_body} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((content_type, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Scrapes one target. Never fails: a failed scrape is `up 0`.
pub async fn scrape(client: &reqwest::Client, target: &Target, timeout: Duration) -> Vec<Family> {
    let started = Instant::now();
    let url = format!("{}{}", target.base_url, target.metrics_path);
    let result = fetch(client, &url, timeout).await.and_then(|(content_type, body)| {
        exposition::parse(&body, Format::from_content_type(&content_type)).map_err(|e| e.to_string())
    });
    let labels = target.labels();
    let (mut families, up) = match result {
        Ok(families) => (families, 1.0),
        Err(e) => {
            tracing::debug!(instance = %target.instance, error = %e, "scrape failed");
            (Vec::new(), 0.0)
        }
    };
    let samples: usize = families.iter().map(|f| f.samples.len()).sum();
    relabel(&mut families, &labels);
    let mut up_family = Family::new("up", "1 if the last scrape of the target succeeded.", MetricKind::Gauge);
    up_family.push(&labels, up);
    let mut duration = Family::new("scrape_duration_seconds", "Duration of the scrape.", MetricKind::Gauge);
    duration.push(&labels, started.elapsed().as_secs_f64());
    let mut scraped = Family::new("scrape_samples_scraped", "Samples the target exposed.", MetricKind::Gauge);
    scraped.push(&labels, samples as f64);
    families.extend([up_family, duration, scraped]);
    families
}

/// Merges a target's labels into a scraped sample's: with `honor_labels` the sample's own
/// win; otherwise the target's do, and a clashing sample label is kept as
/// `exported_<name>` (as Prometheus does).
fn merge_target_labels(sample: &mut LabelSet, target: &LabelSet, honor_labels: bool) {
    for (name, value) in target {
        if honor_labels {
            sample.entry(name.clone()).or_insert_with(|| value.clone());
            continue;
        }
        if let Some(theirs) = sample.remove(name) {
            let mut exported = format!("exported_{name}");
            while sample.contains_key(&exported) {
                exported = format!("exported_{exported}");
            }
            sample.insert(exported, theirs);
        }
        sample.insert(name.clone(), value.clone());
    }
}

/// Scrapes a `[[scrape_configs]]` target: its body within the job's limit, its samples
/// stamped with the scrape's start (unless they carry their own time) and labelled with
/// the target's labels, `metric_relabel_configs` applied; more samples than
/// `sample_limit` fail the scrape, as a failed fetch does (`up` 0, nothing else). With
/// Prometheus's `up`, `scrape_duration_seconds`, `scrape_samples_scraped` and
/// `scrape_samples_post_metric_relabeling`.
pub async fn scrape_job_target(client: &reqwest::Client, job: &Job, target: &ScrapeTarget) -> Vec<Family> {
    let started = Instant::now();
    let start_ms = hale_core::time::now_ms();
    let max_body = if job.config.body_size_limit == 0 { MAX_BODY_BYTES } else { job.config.body_size_limit };
    let parsed = fetch_within(client, &target.url, target.timeout, max_body).await.and_then(|(content_type, body)| {
        exposition::parse(&body, Format::from_content_type(&content_type)).map_err(|e| e.to_string())
    });
    let (mut families, scraped, mut failure) = match parsed {
        Ok(families) => {
            let n = families.iter().map(|f| f.samples.len()).sum();
            (families, n, None)
        }
        Err(e) => (Vec::new(), 0, Some(e)),
    };
    for family in &mut families {
        family.samples.retain_mut(|sample| {
            let mut labels: LabelSet = std::mem::take(&mut sample.labels).into_iter().collect();
            labels.retain(|name, _| !name.starts_with("__"));
            merge_target_labels(&mut labels, &target.labels, job.config.honor_labels);
            labels.insert("__name__".into(), std::mem::take(&mut sample.name));
            let Some(mut labels) = crate::relabel::apply(&job.metric_relabel, labels) else { return false };
            let Some(name) = labels.remove("__name__") else { return false };
            sample.name = name;
            sample.labels = labels.into_iter().filter(|(n, _)| !n.starts_with("__")).collect();
            sample.timestamp_ms.get_or_insert(start_ms);
            true
        });
    }
    families.retain(|f| !f.samples.is_empty());
    let kept: usize = families.iter().map(|f| f.samples.len()).sum();
    if job.config.sample_limit > 0 && kept > job.config.sample_limit {
        failure = Some(format!("{kept} samples, over the sample_limit of {}", job.config.sample_limit));
        families.clear();
    }
    if let Some(e) = &failure {
        tracing::debug!(url = %target.url, error = %e, "scrape failed");
    }
    let labels: Vec<(&str, &str)> = target.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let synthetic = [
        ("up", "1 if the last scrape of the target succeeded.", if failure.is_none() { 1.0 } else { 0.0 }),
        ("scrape_duration_seconds", "Duration of the scrape.", started.elapsed().as_secs_f64()),
        ("scrape_samples_scraped", "Samples the target exposed.", scraped as f64),
        (
            "scrape_samples_post_metric_relabeling",
            "Samples left after metric relabelling.",
            if failure.is_none() { kept as f64 } else { 0.0 },
        ),
    ];
    for (name, help, value) in synthetic {
        let mut family = Family::new(name, help, MetricKind::Gauge);
        family.push(&labels, value);
        for sample in &mut family.samples {
            sample.timestamp_ms = Some(start_ms);
        }
        families.push(family);
    }
    families
}

/// Probes `/healthz` and `/readyz` of one target.
pub async fn probe(client: &reqwest::Client, target: &Target, timeout: Duration) -> Vec<Family> {
    let mut success = Family::new("probe_success", "Whether the probe succeeded.", MetricKind::Gauge);
    let mut duration = Family::new("probe_duration_seconds", "How long the probe took.", MetricKind::Gauge);
    let mut status =
        Family::new("probe_http_status_code", "HTTP status of the probe's answer (0 without one).", MetricKind::Gauge);
    for (probe, path) in [("healthz", &target.health_path), ("readyz", &target.ready_path)] {
        let started = Instant::now();
        let url = format!("{}{path}", target.base_url);
        let code = match client.get(&url).timeout(timeout).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        let labels = [
            ("service", target.service.as_str()),
            ("instance", &target.instance),
            ("node", &target.node),
            ("probe", probe),
        ];
        success.push(&labels, if (200..300).contains(&code) { 1.0 } else { 0.0 });
        duration.push(&labels, started.elapsed().as_secs_f64());
        status.push(&labels, f64::from(code));
    }
    vec![success, duration, status]
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;

    async fn serve(router: Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        url
    }

    fn target(base_url: String) -> Target {
        Target {
            service: "search".into(),
            instance: "search-1".into(),
            node: "node-1".into(),
            base_url,
            metrics_path: "/metrics".into(),
            health_path: "/healthz".into(),
            ready_path: "/readyz".into(),
        }
    }

    #[tokio::test]
    async fn scrape_labels_series_and_adds_up() {
        let body = "# TYPE requests counter\nrequests_total{instance=\"spoofed\",code=\"200\"} 5\n# EOF\n";
        let url = serve(Router::new().route(
            "/metrics",
            get(move || async move { ([("content-type", "application/openmetrics-text; version=1.0.0")], body) }),
        ))
        .await;
        let client = reqwest::Client::new();
        let families = scrape(&client, &target(url), Duration::from_secs(2)).await;
        let requests = families.iter().find(|f| f.name == "requests").expect("requests");
        let labels = &requests.samples[0].labels;
        assert!(labels.contains(&("instance".into(), "search-1".into())), "{labels:?}");
        assert!(labels.contains(&("code".into(), "200".into())));
        assert_eq!(families.iter().find(|f| f.name == "up").expect("up").samples[0].value, 1.0);
        assert_eq!(families.iter().find(|f| f.name == "scrape_samples_scraped").expect("n").samples[0].value, 1.0);
    }

    #[tokio::test]
    async fn failed_scrape_is_up_zero_and_probes_report_each_endpoint() {
        let url = serve(
            Router::new()
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no") })),
        )
        .await;
        let client = reqwest::Client::new();
        let families = scrape(&client, &target(url.clone()), Duration::from_secs(2)).await;
        assert_eq!(families.iter().find(|f| f.name == "up").expect("up").samples[0].value, 0.0);
        let probes = probe(&client, &target(url), Duration::from_secs(2)).await;
        let success = &probes[0];
        assert_eq!(success.samples.iter().map(|s| s.value).collect::<Vec<_>>(), [1.0, 0.0]);
        assert_eq!(probes[2].samples[1].value, 503.0);
        let unreachable = probe(&client, &target("http://127.0.0.1:9".into()), Duration::from_millis(500)).await;
        assert_eq!(unreachable[0].samples[0].value, 0.0);
        assert_eq!(unreachable[2].samples[0].value, 0.0);
    }
}
