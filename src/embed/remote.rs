//! The remote embedder: an OpenAI-compatible `POST /v1/embeddings` (vLLM, text-embeddings-
//! inference, llama.cpp's server). Texts are packed into requests by estimated tokens, sent one
//! request at a time (the server batches; palate embeds before it analyses), retried on
//! transient errors with the chat client's backoff and the server's `Retry-After`, and every
//! vector is checked and L2-normalised.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{normalise, EmbedConfig, EmbedError, Embedder};
use crate::domain::{cap_text, redact_url, Secret};
use crate::infer::retry::{retry_after, RetryPolicy};
use crate::plan::estimate_tokens;

const RETRY: RetryPolicy = RetryPolicy {
    attempts: 5,
    base: Duration::from_millis(500),
    max: Duration::from_secs(20),
};

/// Largest response body read (a batch of vectors as JSON numbers).
const MAX_RESPONSE_BYTES: usize = 256 << 20;

pub struct OpenAiEmbedder {
    http: reqwest::Client,
    /// `<base>/embeddings`.
    endpoint: String,
    shown: String,
    model: String,
    model_id: String,
    api_key: Option<Secret>,
    prefix: String,
    max_texts: usize,
    max_tokens: u64,
    max_input_tokens: u64,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    pub fn new(cfg: &EmbedConfig) -> Result<Self, EmbedError> {
        let base = cfg.url.clone().unwrap_or_default();
        let shown = redact_url(&base);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_s))
            .connect_timeout(Duration::from_secs(cfg.timeout_s.min(10)))
            .build()
            .map_err(|e| EmbedError::Remote {
                url: shown.clone(),
                message: e.to_string(),
            })?;
        Ok(Self {
            http,
            endpoint: format!("{}/embeddings", base.trim_end_matches('/')),
            shown,
            model: cfg.model.clone().unwrap_or_default(),
            model_id: cfg.cache_id(),
            api_key: cfg.api_key.clone(),
            prefix: cfg.prefix.clone(),
            max_texts: cfg.batch_size,
            max_tokens: cfg.max_batch_tokens as u64,
            max_input_tokens: cfg.max_input_tokens as u64,
        })
    }

    fn error(&self, message: impl Into<String>) -> EmbedError {
        EmbedError::Remote {
            url: self.shown.clone(),
            message: cap_text(&message.into()),
        }
    }

    /// One request, retried while the failure is transient.
    async fn request(&self, inputs: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (message, transient, wait) = match self.once(inputs).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err((status, after, body))) => (
                    format!("HTTP {status}: {body}"),
                    status == 429 || status >= 500,
                    after,
                ),
                Err(e) => (
                    e.to_string(),
                    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
                    None,
                ),
            };
            if !transient || attempt >= RETRY.attempts {
                return Err(self.error(format!("{message} (attempt {attempt})")));
            }
            let delay = RETRY.delay(attempt, wait);
            tracing::warn!(url = %self.shown, attempt, error = %cap_text(&message), ?delay, "embeddings request failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// The vectors, or the refusal's status, `Retry-After` and body.
    #[allow(clippy::type_complexity)]
    async fn once(
        &self,
        inputs: &[String],
    ) -> Result<Result<Vec<Vec<f32>>, (u16, Option<Duration>, String)>, reqwest::Error> {
        let body =
            serde_json::json!({ "model": self.model, "input": inputs, "encoding_format": "float" });
        let mut req = self.http.post(&self.endpoint).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k.expose());
        }
        let resp = req.send().await?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let bytes = read_capped(resp).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            return Ok(Err((status.as_u16(), after, text)));
        }
        Ok(self
            .vectors(&bytes, inputs.len())
            .map_err(|m| (status.as_u16(), None, m)))
    }

    /// The response's vectors in input order, each finite, of one dimension, normalised.
    fn vectors(&self, bytes: &[u8], n: usize) -> Result<Vec<Vec<f32>>, String> {
        let r: Response =
            serde_json::from_slice(bytes).map_err(|e| format!("malformed response: {e}"))?;
        if r.data.len() != n {
            return Err(format!("{} vectors for {n} inputs", r.data.len()));
        }
        let mut out: Vec<Option<Vec<f32>>> = vec![None; n];
        for item in r.data {
            let slot = out.get_mut(item.index).ok_or("vector index out of range")?;
            if item.embedding.is_empty() || !item.embedding.iter().all(|x| x.is_finite()) {
                return Err(format!("vector {} is empty or not finite", item.index));
            }
            *slot = Some(normalise(item.embedding));
        }
        let out: Vec<Vec<f32>> = out.into_iter().flatten().collect();
        if out.len() != n || out.iter().any(|v| v.len() != out[0].len()) {
            return Err("vectors missing or of different dimensions".into());
        }
        Ok(out)
    }
}

async fn read_capped(resp: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    use futures::StreamExt;
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            break; // parsed as malformed below rather than held in memory
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Consecutive ranges of `texts` with at most `max_texts` texts and, beyond the first text of a
/// range, at most `max_tokens` estimated tokens.
fn batches(texts: &[String], max_texts: usize, max_tokens: u64) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, t) in texts.iter().enumerate() {
        let n = estimate_tokens(t);
        if i > start && (i - start >= max_texts || tokens + n > max_tokens) {
            out.push(start..i);
            (start, tokens) = (i, 0);
        }
        tokens += n;
    }
    if start < texts.len() {
        out.push(start..texts.len());
    }
    out
}

/// The longest prefix of `text` (on a character boundary) estimated at `max` tokens or fewer.
fn cut(text: &str, max: u64) -> &str {
    if estimate_tokens(text) <= max {
        return text;
    }
    let (mut lo, mut hi) = (0, text.chars().count());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let end = text.char_indices().nth(mid).map_or(text.len(), |(i, _)| i);
        if estimate_tokens(&text[..end]) <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let end = text.char_indices().nth(lo).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model_id(&self) -> &str {
        &self.model_id
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let inputs: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{}", self.prefix, cut(t, self.max_input_tokens)))
            .collect();
        let mut out = Vec::with_capacity(texts.len());
        for r in batches(&inputs, self.max_texts, self.max_tokens) {
            out.extend(self.request(&inputs[r]).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_close_on_tokens_or_count_and_cover_every_text_once() {
        let texts: Vec<String> = [
            "a".repeat(40),
            "b".repeat(40),
            "c".repeat(400),
            "d".into(),
            "e".into(),
        ]
        .into_iter()
        .collect();
        let b = batches(&texts, 2, 30);
        let flat: Vec<usize> = b.iter().flat_map(|r| r.clone()).collect();
        assert_eq!(flat, (0..5).collect::<Vec<_>>());
        assert!(b.iter().all(|r| r.len() <= 2));
        // A text over the budget still goes, alone.
        assert!(b.iter().any(|r| r.clone().eq(2..3)));
        assert!(batches(&[], 2, 30).is_empty());
    }

    #[test]
    fn long_texts_are_cut_on_a_character_boundary_to_the_token_budget() {
        assert_eq!(cut("short", 512), "short");
        let korean = "맛있어요".repeat(200);
        let c = cut(&korean, 512);
        assert!(
            estimate_tokens(c) <= 512 && estimate_tokens(c) > 500,
            "{}",
            estimate_tokens(c)
        );
        assert!(korean.starts_with(c));
        assert_eq!(cut("abc", 0), "");
    }
}
