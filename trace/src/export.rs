//! The span exporter: a batch from the SDK's thread becomes one OTLP/HTTP protobuf
//! request, posted by a task on the process's tokio runtime (the batch thread has none)
//! through Hale's TLS client. The batch thread waits for the answer, which the client's
//! timeout bounds.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

/// A request body and where its outcome goes.
type Job = (Vec<u8>, oneshot::Sender<Result<(), String>>);

/// Posts a batch at most this long; the batch thread waits as long.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct OtlpHttp {
    jobs: mpsc::Sender<Job>,
    resource: ResourceAttributesWithSchema,
}

impl OtlpHttp {
    /// Starts the posting task on the current tokio runtime.
    pub fn start(config: &crate::Config) -> OtlpHttp {
        let (jobs, mut rx) = mpsc::channel::<Job>(4);
        let endpoint = config.endpoint.clone();
        let token = config.token.clone();
        let client = hale_client::tls::builder().timeout(TIMEOUT).build().unwrap_or_default();
        tokio::spawn(async move {
            while let Some((body, done)) = rx.recv().await {
                let mut request = client.post(&endpoint).header("content-type", "application/x-protobuf").body(body);
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                let outcome = match request.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{endpoint} answered {}", r.status())),
                    Err(e) => Err(format!("{endpoint}: {e}")),
                };
                let _ = done.send(outcome);
            }
        });
        OtlpHttp { jobs, resource: ResourceAttributesWithSchema::default() }
    }
}

impl SpanExporter for OtlpHttp {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let request =
            ExportTraceServiceRequest { resource_spans: group_spans_by_resource_and_scope(batch, &self.resource) };
        let (done, outcome) = oneshot::channel();
        self.jobs
            .try_send((request.encode_to_vec(), done))
            .map_err(|_| OTelSdkError::InternalFailure("the trace export queue is full or closed".into()))?;
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(OTelSdkError::InternalFailure(e)),
            Err(_) => Err(OTelSdkError::InternalFailure("the trace export task stopped".into())),
        }
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.resource = resource.into();
    }
}
