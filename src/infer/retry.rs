//! The one place that decides what is retried: error classes, jittered exponential backoff, and
//! the server's `Retry-After`.

use tokio::time::Duration;

use super::InferError;
use crate::domain::{cap_text, error_chain, ErrorClass};

/// Longest `Retry-After` honoured; a server asking for more is treated as asking for this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// HTTP attempts per model for transient errors (5xx, 429, connect errors, timeouts, cut or
    /// malformed streams).
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// Wait before attempt `n + 1` after attempt `n` failed: the server's `Retry-After` when it
    /// sent one, else full jitter, uniform in [0, min(max, base·2^(n−1))].
    pub fn delay(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(MAX_RETRY_AFTER);
        }
        let cap = self
            .base
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)))
            .min(self.max);
        cap.mul_f64(fastrand::f64())
    }
}

/// `Retry-After` as seconds, capped at [`MAX_RETRY_AFTER`] before it becomes a `Duration` (which
/// panics beyond `u64` seconds); the HTTP-date form is not used by LLM servers and is ignored.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let s: f64 = v.trim().parse().ok()?;
    (s.is_finite() && s >= 0.0)
        .then(|| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// A connection the peer closed or reset before sending any of the response.
pub fn closed_before_answer(e: &reqwest::Error) -> bool {
    use std::io::ErrorKind::*;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_canceled() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof
            ) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Sorts an HTTP client error (no response, or a body cut or over its cap) into the classes the
/// retry logic acts on.
pub fn classify(e: reqwest::Error) -> InferError {
    let class = match e.status() {
        _ if e.is_builder() => ErrorClass::Permanent,
        Some(s) => status_class(s.as_u16(), ""),
        None => ErrorClass::Transient,
    };
    InferError::new(class, cap_text(&error_chain(&e.without_url())))
}

/// The error an answer with status `status` (not a success) and body `body` stands for. The
/// message is the body's `error.message` (OpenAI, vLLM, llama.cpp) or top-level `message` (older
/// vLLM), else the body itself.
pub fn http_error(status: u16, body: &str) -> InferError {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = json
        .as_ref()
        .and_then(|v| v["error"]["message"].as_str().or(v["message"].as_str()))
        .unwrap_or(body.trim());
    InferError::new(
        status_class(status, message),
        cap_text(&format!("HTTP {status}: {message}")),
    )
}

/// 408, 429 and 5xx are transient; a 4xx about the prompt's length is a context-length error;
/// any other 4xx is permanent.
pub(super) fn status_class(status: u16, message: &str) -> ErrorClass {
    let msg = message.to_ascii_lowercase();
    if status == 429 || status == 408 || status >= 500 {
        ErrorClass::Transient
    } else if msg.contains("context length")
        || msg.contains("maximum context")
        || msg.contains("context size")
        || msg.contains("too long")
        || msg.contains("exceeds")
    {
        ErrorClass::ContextLength
    } else {
        ErrorClass::Permanent
    }
}

/// Sends the request `build` makes; one that fails on a connection the server had already closed
/// (llama.cpp closes kept-alive connections, and the pool may hand one out as it does) before any
/// byte of an answer is sent again at once on a new connection, and is not a server failure. A
/// server that really drops requests fails the resend too, which is then an attempt like any
/// other.
pub async fn send(
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, reqwest::Error> {
    match build().send().await {
        Err(e) if closed_before_answer(&e) => {
            tracing::debug!(error = %e, "connection closed before an answer; resending on a new one");
            build().send().await
        }
        r => r,
    }
    .map(capped)
}

/// Bytes of one response read at most: a server streaming without end, an error body or an
/// event line of megabytes fails the attempt instead of filling memory.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

fn capped(resp: reqwest::Response) -> reqwest::Response {
    let r: hyper::Response<reqwest::Body> = resp.into();
    let (parts, body) = r.into_parts();
    let body = reqwest::Body::wrap(http_body_util::Limited::new(body, MAX_RESPONSE_BYTES));
    reqwest::Response::from(hyper::Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_cap_and_retry_after_wins() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(500),
            max: Duration::from_secs(4),
        };
        for n in 1..8 {
            let cap = (p.base * 2u32.pow(n - 1)).min(p.max);
            assert!(p.delay(n, None) <= cap, "{n}");
        }
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(p.delay(1, Some(Duration::from_secs(9999))), MAX_RETRY_AFTER);
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_1e20_is_capped_not_a_panic() {
        let header = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
            retry_after(&h)
        };
        assert_eq!(header("1e20"), Some(MAX_RETRY_AFTER));
        assert_eq!(header("1.7e308"), Some(MAX_RETRY_AFTER));
        assert_eq!(header("0.25"), Some(Duration::from_millis(250)));
        for bad in ["inf", "NaN", "-1", "", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(header(bad), None, "{bad}");
        }
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// Any header value: a delay within the cap, or none; never a panic.
        #[test]
        fn retry_after_never_panics(v in proptest::prop_oneof![
            "\\PC{0,40}",
            "[0-9eE.+-]{1,30}",
            proptest::num::f64::ANY.prop_map(|f| f.to_string()),
        ]) {
            let mut h = reqwest::header::HeaderMap::new();
            if let Ok(value) = v.parse() {
                h.insert(reqwest::header::RETRY_AFTER, value);
                proptest::prop_assert!(retry_after(&h).is_none_or(|d| d <= MAX_RETRY_AFTER));
            }
        }
    }

    #[test]
    fn error_answers_are_classified_by_status_and_message() {
        let e = http_error(503, r#"{"error": {"message": "busy", "code": 503}}"#);
        assert_eq!(e, InferError::Transient("HTTP 503: busy".into()));
        assert_eq!(http_error(429, "slow down").class(), ErrorClass::Transient);
        // vLLM's older error body: the message at the top level, an integer code.
        let e = http_error(
            400,
            r#"{"object": "error", "message": "This model's maximum context length is 2048", "code": 400}"#,
        );
        assert_eq!(e.class(), ErrorClass::ContextLength);
        let e = http_error(
            404,
            r#"{"error": {"message": "no such model", "code": 404}}"#,
        );
        assert_eq!(e, InferError::Permanent("HTTP 404: no such model".into()));
        assert_eq!(http_error(500, "").to_string(), "HTTP 500: ");
    }
}
