//! The faults the simulated server injects, and the plan saying which requests get them.

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::time::Duration;

/// A fault the server can inject into a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 500.
    Http500,
    /// HTTP 503.
    Http503,
    /// HTTP 429 with a `Retry-After` header.
    RateLimited,
    /// The connection is reset as soon as it is accepted (what a client sees of a server that is
    /// down or restarting). Drawn per connection; the server then closes every connection after
    /// its response, so each request opens a new one.
    Refused,
    /// The request is read and the connection closed without an answer.
    Disconnect,
    /// The stream stops half-way for longer than any sane read timeout, then carries on.
    Stall,
    /// The stream ends half-way, without a finish reason.
    CutStream,
    /// A chunk half-way is not valid JSON.
    MalformedChunk,
    /// The answer is cut JSON with `finish_reason = stop`.
    TruncatedJson,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::Http500,
        Fault::Http503,
        Fault::RateLimited,
        Fault::Refused,
        Fault::Disconnect,
        Fault::Stall,
        Fault::CutStream,
        Fault::MalformedChunk,
        Fault::TruncatedJson,
    ];
}

/// Which requests get which fault: a fixed schedule by request number (from 0) first, then
/// independent draws at each fault's rate from a seeded generator.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub rates: Vec<(Fault, f64)>,
    pub schedule: BTreeMap<u64, Fault>,
    pub seed: u64,
    pub retry_after: Duration,
    pub stall_for: Duration,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            rates: Vec::new(),
            schedule: BTreeMap::new(),
            seed: 1,
            retry_after: Duration::from_secs(2),
            stall_for: Duration::from_secs(600),
        }
    }
}
