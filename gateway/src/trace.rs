//! Traces: each scoring request is a server span, a child of the client's W3C trace context
//! (`traceparent`, `tracestate`) when it sends a valid one, a new trace otherwise; the
//! container gets a `traceparent` that names moat's span, so its own spans hang below it.
//! Spans are sampled by `sample_ratio` (a sampled or unsampled parent decides for its child),
//! batched off the request path on a thread of the SDK's, and exported as OTLP/HTTP protobuf
//! to `<otlp_endpoint>/v1/traces` by a hyper client running on the daemon's runtime.
//!
//! Without an `otlp_endpoint` none of this exists: no span, no header work per request.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

use crate::fields::Fields;

/// How long spans wait in the batch before they are sent.
const BATCH_DELAY: Duration = Duration::from_secs(1);
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `tracing` section of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans go (`<otlp_endpoint>/v1/traces`); none: no tracing.
    pub otlp_endpoint: Option<String>,
    pub service_name: String,
    /// The share of new traces that are sampled, 0.0 to 1.0.
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig { otlp_endpoint: None, service_name: "moat".into(), sample_ratio: 1.0 }
    }
}

/// The tracer and its export pipeline.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing").finish_non_exhaustive()
    }
}

impl Tracing {
    /// Starts the export pipeline when the config names an endpoint; its HTTP calls run on
    /// `runtime`.
    pub fn start(config: &TracingConfig, runtime: tokio::runtime::Handle) -> Result<Option<Tracing>, String> {
        let Some(endpoint) = config.otlp_endpoint.as_deref() else { return Ok(None) };
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let client = OnRuntime {
            runtime,
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(EXPORT_TIMEOUT, None),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .map_err(|e| format!("tracing.otlp_endpoint: {e}"))?;
        let batch = BatchConfigBuilder::default().with_scheduled_delay(BATCH_DELAY).build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let ratio = Sampler::TraceIdRatioBased(config.sample_ratio);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(ratio)))
            .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
            .build();
        let tracer = provider.tracer("moat");
        Ok(Some(Tracing { provider, tracer, propagator: TraceContextPropagator::new() }))
    }

    /// The server span of a request with these headers.
    pub fn begin(&self, fields: &(impl Fields + Sync)) -> Trace {
        let parent = self.propagator.extract(&FieldExtractor(fields));
        let span = self
            .tracer
            .span_builder("score")
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        let cx = parent.with_span(span);
        let trace_id = cx.span().span_context().trace_id().to_string();
        Trace { cx, trace_id, propagator: self.propagator.clone() }
    }

    /// Sends what is still batched, waiting at most `timeout`. Blocks: call it off the
    /// runtime's threads.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
    }
}

/// The client's fields as the propagator reads them: by name, in any case.
struct FieldExtractor<'a, F>(&'a F);

impl<F: Fields + Sync> Extractor for FieldExtractor<'_, F> {
    fn get(&self, key: &str) -> Option<&str> {
        let (_, value) = self.0.each().find(|(name, _)| name.eq_ignore_ascii_case(key.as_bytes()))?;
        std::str::from_utf8(value).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.each().filter_map(|(name, _)| std::str::from_utf8(name).ok()).collect()
    }
}

/// One request's span.
pub struct Trace {
    cx: Context,
    trace_id: String,
    propagator: TraceContextPropagator,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace").field("trace_id", &self.trace_id).finish()
    }
}

/// What the span records when it ends.
pub struct Outcome<'a> {
    pub endpoint: Option<&'a str>,
    pub deployment: Option<&'a str>,
    pub instance: Option<&'a str>,
    pub status: u16,
    pub error: Option<&'a str>,
}

impl Trace {
    /// The trace's id as 32 hex digits, for the access line.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// Puts `traceparent` (and `tracestate`) naming this span into the container's request,
    /// replacing the client's.
    pub fn inject(&self, headers: &mut HeaderMap) {
        headers.remove("traceparent");
        headers.remove("tracestate");
        self.propagator.inject_context(&self.cx, &mut HeaderInjector(headers));
    }

    pub fn end(&self, outcome: Outcome<'_>) {
        let span = self.cx.span();
        if !span.is_recording() {
            return;
        }
        let mut attributes = vec![KeyValue::new("status", i64::from(outcome.status))];
        for (key, value) in [
            ("endpoint", outcome.endpoint),
            ("deployment", outcome.deployment),
            ("instance", outcome.instance),
        ] {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value.to_string()));
            }
        }
        if let Some(error) = outcome.error {
            attributes.push(KeyValue::new("error", error.to_string()));
        }
        span.set_attributes(attributes);
        if outcome.status >= 500 || outcome.error.is_some() {
            span.set_status(opentelemetry::trace::Status::error(outcome.error.unwrap_or("").to_string()));
        }
        span.end();
    }
}

/// The SDK's batch thread has no runtime of its own; hyper needs tokio's, so each export is
/// handed to the daemon's runtime and awaited from the batch thread.
#[derive(Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: opentelemetry_http::hyper::HyperClient,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime.spawn(async move { client.send_bytes(request).await }).await?
    }
}
