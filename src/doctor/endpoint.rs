//! One LLM endpoint, as a run will use it: `/v1/models` lists the model; a one-token streamed
//! completion constrained by a JSON schema works; its usage carries the prompt-token details
//! (cached tokens) and per-request server timings; `priority` is accepted when the job sends it;
//! `/metrics` answers.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{Check, Status};
use crate::domain::redact_url;
use crate::infer::LlmConfig;

struct Client<'a> {
    http: reqwest::Client,
    cfg: &'a LlmConfig,
    base: String,
}

impl Client<'_> {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.cfg.api_key {
            Some(k) => r.bearer_auth(k.expose()),
            None => r,
        }
    }

    /// A streamed one-token chat completion with `extra` fields; the chunks' JSON.
    async fn complete(&self, extra: Value) -> Result<Vec<Value>, String> {
        let mut body = json!({
            "model": self.cfg.model, "stream": true, "stream_options": {"include_usage": true},
            "max_tokens": 1, "temperature": 0.0,
            "messages": [{"role": "user", "content": "Answer with JSON: is this ok?"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "doctor",
                "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}},
                           "required": ["ok"]}}}
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let resp = (self.request(reqwest::Method::POST, "/chat/completions"))
            .json(&body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.without_url().to_string())?;
        if !status.is_success() {
            let msg: String = text.chars().take(300).collect();
            return Err(format!("HTTP {status}: {msg}"));
        }
        Ok(crate::infer::sse::events(text.as_bytes())
            .iter()
            .filter_map(|d| serde_json::from_str(d).ok())
            .collect())
    }
}

/// Every check of `endpoint`; after a failed `/v1/models` the others are skipped.
pub async fn check(cfg: &LlmConfig, endpoint: &str) -> Vec<Check> {
    let shown = redact_url(endpoint);
    let name = |what: &str| format!("endpoint {shown}: {what}");
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs_f64(cfg.connect_timeout_s))
        .timeout(Duration::from_secs_f64(cfg.request_timeout_s.min(60.0)))
        .pool_max_idle_per_host(0)
        .build();
    let http = match http {
        Ok(h) => h,
        Err(e) => return vec![Check::new(name("client"), Status::Fail, e.to_string())],
    };
    let c = Client {
        http,
        cfg,
        base: endpoint.trim_end_matches('/').to_string(),
    };
    let models = models(&c).await;
    let models_failed = models.status == Status::Fail;
    let mut out = vec![models.renamed(name("models"))];
    if models_failed {
        return out;
    }
    let t0 = Instant::now();
    match c.complete(json!({})).await {
        Ok(chunks) => {
            out.push(
                Check::new(name("completion"), Status::Ok, completion_detail(&chunks)).took(t0),
            );
            out.extend(features(&chunks).into_iter().map(|c| {
                let n = name(&c.name);
                c.renamed(n)
            }));
        }
        Err(e) => out.push(
            Check::new(name("completion"), Status::Fail, e)
                .fix("the server must accept response_format json_schema (vLLM ≥ 0.12, llama.cpp server)")
                .took(t0),
        ),
    }
    if cfg.send_priority {
        out.push(priority(&c).await.renamed(name("priority")));
    }
    out.push(metrics(&c).await.renamed(name("/metrics")));
    out
}

impl Check {
    fn renamed(mut self, name: String) -> Self {
        self.name = name;
        self
    }
}

async fn models(c: &Client<'_>) -> Check {
    let t0 = Instant::now();
    let resp = c.request(reqwest::Method::GET, "/models").send().await;
    let body = match resp {
        Ok(r) if r.status().is_success() => r.json::<Value>().await.map_err(|e| e.to_string()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(format!("unreachable: {}", e.without_url())),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return Check::new("", Status::Fail, e)
                .fix("start the server, or correct llm.endpoints (the base URL ends in /v1)")
                .took(t0)
        }
    };
    let ids: Vec<&str> = (body["data"].as_array().into_iter().flatten())
        .filter_map(|m| m["id"].as_str())
        .collect();
    let wanted: Vec<&str> = std::iter::once(c.cfg.model.as_str())
        .chain(c.cfg.fallback_models.iter().map(String::as_str))
        .collect();
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|m| !ids.contains(m))
        .collect();
    // llama.cpp's server answers every model name with the one model it loaded.
    if !missing.is_empty() && crate::infer::served_by_llama_cpp(&body) {
        Check::new(
            "",
            Status::Ok,
            format!("llama.cpp answers any model name with {}", ids.join(", ")),
        )
        .took(t0)
    } else if missing.is_empty() {
        Check::new("", Status::Ok, format!("serves {}", wanted.join(", "))).took(t0)
    } else {
        Check::new(
            "",
            Status::Fail,
            format!(
                "does not serve {} (it serves: {})",
                missing.join(", "),
                ids.join(", ")
            ),
        )
        .fix("set llm.model to a served name, or start vLLM with --served-model-name")
        .took(t0)
    }
}

/// The stream's usage object (its last chunk with one).
fn usage(chunks: &[Value]) -> Option<&Value> {
    (chunks.iter().rev()).find_map(|c| c.get("usage").filter(|u| u.is_object()))
}

/// What the one-token completion produced.
fn completion_detail(chunks: &[Value]) -> String {
    let usage = usage(chunks);
    match usage {
        Some(u) => format!(
            "one token with a JSON schema: {} prompt, {} completion tokens",
            u["prompt_tokens"], u["completion_tokens"]
        ),
        None => "one token with a JSON schema (no usage in the stream)".into(),
    }
}

/// The features of the answer the metrics rely on: usage with prompt-token details (cached
/// tokens), and per-request server timings (vLLM's `metrics`, llama.cpp's `timings`).
fn features(chunks: &[Value]) -> Vec<Check> {
    let usage = usage(chunks);
    let details =
        usage.is_some_and(|u| u.get("prompt_tokens_details").is_some_and(Value::is_object));
    let timings = chunks.iter().any(|c| {
        c.get("metrics").is_some_and(Value::is_object)
            || c.get("timings").is_some_and(Value::is_object)
    });
    let usage_check = match usage {
        Some(_) => Check::new(
            "usage",
            Status::Ok,
            "streamed usage (stream_options.include_usage)",
        ),
        None => Check::new(
            "usage",
            Status::Fail,
            "no usage in the stream: no token counts",
        )
        .fix("a server that honours stream_options.include_usage (vLLM, llama.cpp)"),
    };
    let details_check = if details {
        Check::new(
            "prompt-token details",
            Status::Ok,
            "usage.prompt_tokens_details present (cached tokens)",
        )
    } else {
        Check::new(
            "prompt-token details",
            Status::Warn,
            "no usage.prompt_tokens_details: cached tokens not reported",
        )
        .fix("start vLLM with --enable-prompt-tokens-details")
    };
    let timings_check = if timings {
        Check::new(
            "per-request metrics",
            Status::Ok,
            "server timings in the answer (prefill/decode split)",
        )
    } else {
        Check::new(
            "per-request metrics",
            Status::Warn,
            "no server timings: prefill/decode split estimated from the client",
        )
        .fix("start vLLM with --enable-per-request-metrics")
    };
    vec![usage_check, details_check, timings_check]
}

/// A request with `priority` set, as palate sends it with `llm.send_priority`.
async fn priority(c: &Client<'_>) -> Check {
    let t0 = Instant::now();
    match c.complete(json!({"priority": 1})).await {
        Ok(_) => Check::new("", Status::Ok, "a request with priority 1 was accepted").took(t0),
        Err(e) => Check::new(
            "",
            Status::Fail,
            format!("a request with priority 1 was refused: {e}"),
        )
        .fix("start vLLM with --scheduling-policy priority, or set llm.send_priority = false")
        .took(t0),
    }
}

async fn metrics(c: &Client<'_>) -> Check {
    let t0 = Instant::now();
    let url = crate::metrics::scrape::metrics_url(&c.base);
    let text = match c.http.get(&url).send().await {
        Ok(r) if r.status().is_success() => r.text().await.ok(),
        _ => None,
    };
    let Some(text) = text else {
        return Check::new(
            "",
            Status::Warn,
            "no /metrics: no server-side samples in reports",
        )
        .fix("vLLM serves /metrics by default; start llama.cpp's server with --metrics")
        .took(t0);
    };
    let series = crate::metrics::scrape::parse(&text);
    let ours = series
        .iter()
        .filter(|(n, _, _)| n.starts_with("vllm:") || n.starts_with("llamacpp:"))
        .count();
    if ours == 0 {
        Check::new(
            "",
            Status::Warn,
            format!("{} series, none of vLLM's or llama.cpp's", series.len()),
        )
        .fix("palate reads vllm:* and llamacpp:* series")
        .took(t0)
    } else {
        Check::new("", Status::Ok, format!("{ours} server series")).took(t0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_are_read_from_the_streamed_chunks() {
        let vllm = [
            json!({"choices": [{"delta": {"content": "{"}}]}),
            json!({"usage": {"prompt_tokens": 9, "completion_tokens": 1,
                   "prompt_tokens_details": {"cached_tokens": 0}},
                   "metrics": {"time_to_first_token_ms": 3.0}}),
        ];
        let f = features(&vllm);
        assert!(f.iter().all(|c| c.status == Status::Ok), "{f:?}");
        let bare = [json!({"usage": {"prompt_tokens": 9, "completion_tokens": 1}})];
        let f = features(&bare);
        assert_eq!(
            f.iter().map(|c| c.status).collect::<Vec<_>>(),
            [Status::Ok, Status::Warn, Status::Warn]
        );
        assert_eq!(
            f[1].fix.as_deref(),
            Some("start vLLM with --enable-prompt-tokens-details")
        );
        assert_eq!(
            f[2].fix.as_deref(),
            Some("start vLLM with --enable-per-request-metrics")
        );
        assert_eq!(features(&[])[0].status, Status::Fail);
    }
}
