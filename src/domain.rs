//! domain: the types every stage shares: analysis kinds, statuses, error classes and failures,
//! reviews, the key results are versioned by, hashing, timestamps and secrets. It imports no
//! stage; every stage imports it.

use std::fmt;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Implements `as_str`, `Display`, `ToSql` and `FromSql` for a fieldless enum from one table of
/// variant ↔ text, so the database and the code can never spell a value differently.
macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($s => Some(Self::$v),)+ _ => None }
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $t {
            fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = v.as_str()?;
                Self::parse(s).ok_or_else(|| FromSqlError::Other(
                    format!("unknown {} {s:?}", stringify!($t)).into()))
            }
        }
    };
}

/// The three analyses of a restaurant.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    Sentiment,
    Summary,
    Strengths,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Sentiment, Kind::Summary, Kind::Strengths];
}

text_enum!(Kind { Sentiment => "sentiment", Summary => "summary", Strengths => "strengths" });

/// Error classes: only `Transient` is retried at the HTTP level; `InvalidOutput` gets the one
/// repair retry; `InvalidOutput` and `ContextLength` are final for a result key (the same input
/// would fail the same way), the others are retried by the next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    Transient,
    Permanent,
    ContextLength,
    InvalidOutput,
}

text_enum!(ErrorClass {
    Transient => "transient",
    Permanent => "permanent",
    ContextLength => "context_length",
    InvalidOutput => "invalid_output",
});

impl ErrorClass {
    /// A failure of this class is settled for its result key: re-running would repeat it.
    pub fn is_final(self) -> bool {
        matches!(self, Self::InvalidOutput | Self::ContextLength)
    }
}

/// Why an analysis failed: its class, the group the run summary counts it under, and the full
/// message stored with the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub class: ErrorClass,
    /// What kind of failure this is, without the values that differ per item
    /// (e.g. `invalid output: quote not in the cited review`).
    pub group: String,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A stored result's status (`results.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Ok,
    Failed,
}

text_enum!(ResultStatus { Ok => "ok", Failed => "failed" });

/// One HTTP attempt's status (`vllm_metrics.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Ok,
    Error,
}

text_enum!(RequestStatus { Ok => "ok", Error => "error" });

/// How a run ended (`runs.status`), and the exit code that tells cron.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Completed,
    CompletedWithFailures,
    Failed,
    Interrupted,
    /// Stopped at the job's deadline (`job.deadline_min`).
    Deadline,
}

text_enum!(RunStatus {
    Running => "running",
    Completed => "completed",
    CompletedWithFailures => "completed_with_failures",
    Failed => "failed",
    Interrupted => "interrupted",
    Deadline => "deadline",
});

/// Documented exit codes (also in `palate run --help` and the README).
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const PARTIAL: u8 = 3;
    pub const LOCKED: u8 = 4;
    pub const DEADLINE: u8 = 5;
    /// The run finished (with or without failed restaurants) but crossed an `[alerts]` threshold.
    pub const ALERT: u8 = 6;
    pub const INTERRUPTED: u8 = 130;
}

impl RunStatus {
    /// The status of a run from what happened in it.
    pub fn of(interrupted: bool, failures: bool) -> Self {
        match (interrupted, failures) {
            (true, _) => Self::Interrupted,
            (false, true) => Self::CompletedWithFailures,
            (false, false) => Self::Completed,
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Self::Completed => exit::OK,
            Self::CompletedWithFailures => exit::PARTIAL,
            Self::Interrupted => exit::INTERRUPTED,
            Self::Deadline => exit::DEADLINE,
            Self::Running | Self::Failed => exit::ERROR,
        }
    }
}

/// A validated review row, as ingest stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub restaurant_id: String,
    pub review_id: String,
    /// Trimmed review text.
    pub text: String,
    pub rating: Option<f64>,
    pub created_at: Option<String>,
    pub lang: Option<String>,
    /// sha256 of `text`: the embedding cache key and part of the restaurant's reviews hash.
    pub content_hash: String,
}

/// A stored review with what selection and prompts need.
#[derive(Debug, Clone)]
pub struct StoredReview {
    pub review_id: String,
    pub text: String,
    pub content_hash: String,
    pub lang: Option<String>,
    pub rating: Option<f64>,
}

/// The key results are versioned by: a result is current only if all of these match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultKey {
    pub restaurant_id: String,
    /// Hash of everything the analysis read: the restaurant's reviews hash, the selection and
    /// batching settings and the embedding model (`results.input_hash`).
    pub input_hash: String,
    /// Hash of the prompt and schema files.
    pub prompt_version: String,
    pub model: String,
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of `bytes` as 64 hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `url` with any credentials in it (`http://user:pass@host/…`) replaced by `***`: what is
/// stored or logged of an endpoint.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Longest error text stored or logged: a server's error body or a model's reply quoted in an
/// error can be megabytes.
pub const MAX_ERROR_CHARS: usize = 2000;

/// An error and its causes, `: `-joined, each cause once: one whose text the message already
/// holds (an error that prints its source, as `cannot read {path}: {source}` does) is not
/// repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    s
}

/// `text` cut to [`MAX_ERROR_CHARS`] characters, saying how much was cut, with credentials in
/// any URL in it redacted (an HTTP client's error names the URL it failed on).
pub fn cap_text(text: &str) -> String {
    let redacted;
    let text = if text.contains("://") && text.contains('@') {
        redacted = text
            .split_inclusive(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\''))
            .map(|w| {
                let url = w.trim_end_matches(|c: char| {
                    c.is_whitespace() || matches!(c, '(' | ')' | '"' | '\'')
                });
                format!("{}{}", redact_url(url), &w[url.len()..])
            })
            .collect::<String>();
        &redacted
    } else {
        text
    };
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        None => text.to_string(),
        Some((at, _)) => format!("{}… ({} more bytes cut)", &text[..at], text.len() - at),
    }
}

/// The first 16 hex digits of a sha256: the short version hashes results are keyed by.
pub fn short_hash(h: Sha256) -> String {
    let mut s = hex(&h.finalize());
    s.truncate(16);
    s
}

/// Current time as RFC 3339 UTC with milliseconds, the format of every timestamp column.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Milliseconds of a duration, as the metrics tables hold them.
pub fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Locks a mutex whose data stays valid even if a holder panicked (counters and queues that
/// are updated in one step), so one panicking task cannot wedge the others.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One of `count` workers splitting a catalogue (`--shard index/count`): it takes the
/// restaurants whose id hashes to `index`, so n workers with the same n take each restaurant
/// exactly once, with no coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub fn contains(&self, restaurant_id: &str) -> bool {
        let d = Sha256::digest(restaurant_id.as_bytes());
        let mut h = [0u8; 8];
        h.copy_from_slice(&d[..8]);
        u64::from_be_bytes(h) % u64::from(self.count) == u64::from(self.index)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("shard {s:?}: expected i/n with 0 <= i < n, e.g. 0/3");
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Serialize for Shard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A credential (API key, database password): `Debug`, `Display` and `Serialize` print `***`,
/// so it never reaches a log line, a stored configuration or an error message.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot read {path}: {source}")]
        struct Read {
            path: &'static str,
            source: std::io::Error,
        }
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "not found");
        let e = anyhow::Error::new(Read {
            path: "p.md",
            source: io(),
        });
        assert_eq!(error_chain(e.as_ref()), "cannot read p.md: not found");
        let e = anyhow::Error::new(io()).context("loading prompts");
        assert_eq!(error_chain(e.as_ref()), "loading prompts: not found");
    }

    #[test]
    fn shards_split_restaurants_exactly_once_and_parse_strictly() {
        let shards: Vec<Shard> = (0..3).map(|i| format!("{i}/3").parse().unwrap()).collect();
        let mut sizes = [0; 3];
        for r in 0..3000 {
            let id = format!("restaurant-{r}");
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].contains(&id)).collect();
            assert_eq!(owners.len(), 1, "{id}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (900..1100).contains(&n)), "{sizes:?}");
        for bad in ["3/3", "1", "a/3", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        assert_eq!(" 2 / 5 ".parse::<Shard>().unwrap().to_string(), "2/5");
    }

    #[test]
    fn enums_round_trip_through_their_text() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(
            ErrorClass::parse("context_length"),
            Some(ErrorClass::ContextLength)
        );
        assert_eq!(
            RunStatus::CompletedWithFailures.to_string(),
            "completed_with_failures"
        );
        assert_eq!(RunStatus::parse("nope"), None);
    }

    #[test]
    fn run_status_maps_to_exit_codes() {
        assert_eq!(RunStatus::of(false, false).exit_code(), exit::OK);
        assert_eq!(RunStatus::of(false, true).exit_code(), exit::PARTIAL);
        assert_eq!(RunStatus::of(true, true).exit_code(), exit::INTERRUPTED);
    }

    #[test]
    fn secrets_never_print() {
        let s: Secret = serde_json::from_str("\"sk-123\"").unwrap();
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "sk-123");
    }

    #[test]
    fn credentials_in_an_endpoint_url_are_redacted() {
        assert_eq!(
            redact_url("https://bob:s3cret@llm.example:8000/v1"),
            "https://***@llm.example:8000/v1"
        );
        assert_eq!(redact_url("http://tok@h/v1?x=a@b"), "http://***@h/v1?x=a@b");
        assert_eq!(redact_url("http://h:8000/v1"), "http://h:8000/v1");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(
            cap_text("error sending request for url (http://u:p@h:1/v1/models): refused"),
            "error sending request for url (http://***@h:1/v1/models): refused"
        );
    }

    #[test]
    fn long_error_texts_are_cut_on_a_character_boundary() {
        assert_eq!(cap_text("short"), "short");
        let long = "가".repeat(MAX_ERROR_CHARS + 10);
        let cut = cap_text(&long);
        assert!(cut.starts_with(&"가".repeat(MAX_ERROR_CHARS)));
        assert!(
            cut.ends_with("… (30 more bytes cut)"),
            "{}",
            &cut[cut.len() - 40..]
        );
    }

    #[test]
    fn hashes_are_hex() {
        assert_eq!(sha256_hex(b"").len(), 64);
        let mut h = Sha256::new();
        h.update(b"x");
        assert_eq!(short_hash(h), sha256_hex(b"x")[..16]);
    }
}
