//! Metric families as Hale passes them around: what an exposition parse yields, what the
//! host collector produces, what remote_write ships.

/// The type a family declares (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
            MetricKind::Summary => "summary",
            MetricKind::Untyped => "untyped",
        }
    }
}

/// Label pairs of a sample, in exposition order, without `__name__`.
pub type Labels = Vec<(String, String)>;

/// One sample: a series name, its labels (without `__name__`), a value, the timestamp
/// the exposition gave, if any, and its exemplar (OpenMetrics), if it has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
    /// Boxed: most samples have none, and a sample stays small.
    pub exemplar: Option<Box<Exemplar>>,
}

/// An OpenMetrics exemplar: one observation behind a sample (a histogram bucket's or a
/// counter's), with labels that name where it came from, usually `trace_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    pub fn new(name: impl Into<String>, labels: &[(&str, &str)], value: f64) -> Self {
        Sample {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            value,
            timestamp_ms: None,
            exemplar: None,
        }
    }
}

/// A metric family: its name as the `# TYPE` line gives it, help, type and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: impl Into<String>, help: impl Into<String>, kind: MetricKind) -> Self {
        Family { name: name.into(), help: help.into(), kind, samples: Vec::new() }
    }

    /// Adds a sample named like the family.
    pub fn push(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.samples.push(Sample::new(self.name.clone(), labels, value));
        self
    }

    /// One sample, no labels.
    pub fn single(name: impl Into<String>, help: impl Into<String>, kind: MetricKind, value: f64) -> Self {
        let mut f = Family::new(name, help, kind);
        f.push(&[], value);
        f
    }
}
