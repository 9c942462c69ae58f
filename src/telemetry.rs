//! telemetry: optional OpenTelemetry export (OTLP over HTTP) of the spans palate already has —
//! `run` (run id, job, model), `restaurant` (its id) and `chat` (each request: kind, model,
//! prompt and completion tokens, TTFT, outcome) — so Jaeger, Tempo or Langfuse can show a run.
//! Off unless the job file's `[telemetry] otlp_endpoint` is set; needs the `otlp` feature
//! (in `full`). Spans leave in batches on a background thread; the guard flushes them at exit.

use serde::{Deserialize, Serialize};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The job file's `[telemetry]` section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces`; unset = off.
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (every collector) or `http/json`.
    pub otlp_protocol: OtlpProtocol,
    /// `service.name` of the spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            otlp_protocol: OtlpProtocol::HttpProtobuf,
            service_name: "palate".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

/// Flushes and stops the exporter when dropped (at the end of `main`).
#[derive(Default)]
pub struct Guard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("palate: OTLP export: spans not all sent at exit: {e}");
            }
        }
    }
}

/// The exporting layer, if `cfg` turns it on; an endpoint the build cannot serve is a warning
/// (tracing must never stop the nightly run).
pub fn layer<S>(cfg: &TelemetryConfig) -> (Option<Box<dyn Layer<S> + Send + Sync>>, Guard)
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    let Some(endpoint) = &cfg.otlp_endpoint else {
        return (None, Guard::default());
    };
    #[cfg(feature = "otlp")]
    match otlp::layer(cfg, endpoint) {
        Ok((layer, provider)) => (
            Some(layer),
            Guard {
                provider: Some(provider),
            },
        ),
        Err(e) => {
            eprintln!("palate: OTLP export to {endpoint} is off: {e}");
            (None, Guard::default())
        }
    }
    #[cfg(not(feature = "otlp"))]
    {
        eprintln!(
            "palate: [telemetry] otlp_endpoint = {endpoint:?} is ignored: this palate was built without the `otlp` feature (cargo build --release --features otlp)"
        );
        (None, Guard::default())
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use opentelemetry_sdk::Resource;
    use tracing_subscriber::registry::LookupSpan;
    use tracing_subscriber::Layer;

    use super::{OtlpProtocol, TelemetryConfig};

    pub fn layer<S>(
        cfg: &TelemetryConfig,
        endpoint: &str,
    ) -> anyhow::Result<(Box<dyn Layer<S> + Send + Sync>, SdkTracerProvider)>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        let protocol = match cfg.otlp_protocol {
            OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
            OtlpProtocol::HttpJson => Protocol::HttpJson,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(endpoint)
            .with_timeout(std::time::Duration::from_secs(10))
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("palate");
        let layer = tracing_opentelemetry::layer().with_tracer(tracer).boxed();
        Ok((layer, provider))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_parses_and_is_off_by_default() {
        let c: TelemetryConfig = toml::from_str(
            "otlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\notlp_protocol = \"http/json\"\n",
        )
        .unwrap();
        assert_eq!(c.otlp_protocol, OtlpProtocol::HttpJson);
        assert_eq!(c.service_name, "palate");
        assert_eq!(TelemetryConfig::default().otlp_endpoint, None);
        let (layer, _guard) = layer::<tracing_subscriber::Registry>(&TelemetryConfig::default());
        assert!(layer.is_none());
    }
}
