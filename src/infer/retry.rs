//! The one place that decides what is retried: error classes, jittered exponential backoff, and
//! the server's `Retry-After`.

use async_openai::error::OpenAIError;
use async_openai::middleware::HttpRequestFactory;
use tokio::time::Duration;

use super::InferError;
use crate::domain::{cap_text, ErrorClass};

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

/// Sorts an async-openai error into the classes the retry logic acts on.
pub fn classify(e: OpenAIError) -> InferError {
    let (class, message) = match &e {
        OpenAIError::ApiError(r) => {
            let s = r.status_code.as_u16();
            (
                status_class(s, &r.api_error.message),
                format!("HTTP {s}: {}", r.api_error.message),
            )
        }
        OpenAIError::Reqwest(r) if r.is_builder() => (ErrorClass::Permanent, e.to_string()),
        OpenAIError::Reqwest(r) => match r.status().map(|s| s.as_u16()) {
            Some(s) => (status_class(s, ""), e.to_string()),
            None => (ErrorClass::Transient, e.to_string()),
        },
        OpenAIError::StreamError(_) | OpenAIError::JSONDeserialize(..) => {
            (ErrorClass::Transient, e.to_string())
        }
        _ => (ErrorClass::Permanent, e.to_string()),
    };
    InferError::new(class, cap_text(&message))
}

/// Classifies an attempt whose HTTP status is known. vLLM's error bodies carry an integer
/// `code`, which async-openai fails to parse, so an error status otherwise looks like a
/// transient parse error: the status decides instead, with the body's message.
pub fn with_status(e: InferError, status: u16) -> InferError {
    if status < 400 {
        return e;
    }
    let message = e.to_string();
    let class = status_class(status, &message);
    if message.starts_with("HTTP ") {
        InferError::new(class, message)
    } else {
        InferError::new(class, format!("HTTP {status}: {message}"))
    }
}

/// 408, 429 and 5xx are transient; a 4xx about the prompt's length is a context-length error;
/// any other 4xx is permanent.
fn status_class(status: u16, message: &str) -> ErrorClass {
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

/// Sends a request; one that fails on a connection the server had already closed (llama.cpp
/// closes kept-alive connections, and the pool may hand one out as it does) before any byte of
/// an answer is sent again at once on a new connection, and is not a server failure. A server
/// that really drops requests fails the resend too, which is then an attempt like any other.
pub async fn send(
    http: &reqwest::Client,
    f: &HttpRequestFactory,
) -> Result<reqwest::Response, OpenAIError> {
    match http.execute(f.build().await?).await {
        Err(e) if closed_before_answer(&e) => {
            tracing::debug!(error = %e, "connection closed before an answer; resending on a new one");
            http.execute(f.build().await?).await
        }
        r => r,
    }
    .map(capped)
    .map_err(OpenAIError::Reqwest)
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
    fn api_errors_are_classified() {
        let api = |status: u16, msg: &str| {
            OpenAIError::ApiError(async_openai::error::ApiErrorResponse {
                status_code: reqwest::StatusCode::from_u16(status).unwrap(),
                api_error: async_openai::error::ApiError {
                    message: msg.into(),
                    r#type: None,
                    param: None,
                    code: None,
                    misalignment: None,
                },
            })
        };
        assert_eq!(classify(api(503, "busy")).class(), ErrorClass::Transient);
        assert_eq!(
            classify(api(429, "slow down")).class(),
            ErrorClass::Transient
        );
        assert_eq!(
            classify(api(400, "This model's maximum context length is 2048")).class(),
            ErrorClass::ContextLength
        );
        assert_eq!(
            classify(api(404, "no such model")).class(),
            ErrorClass::Permanent
        );
        let unparsed =
            InferError::Transient("failed to deserialize api response: {\"code\": 404}".into());
        let e = with_status(unparsed.clone(), 404);
        assert_eq!(e.class(), ErrorClass::Permanent);
        assert!(e.to_string().starts_with("HTTP 404"));
        assert_eq!(with_status(unparsed, 503).class(), ErrorClass::Transient);
    }
}
