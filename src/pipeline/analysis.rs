//! One restaurant's plan through the LLM: every planned request, its one repair retry when the
//! answer is invalid, sentiment batches merged, and the rows a [`ResultSink`] stores. Needs only
//! an [`LlmClient`], so it is tested with a scripted one.
//!
//! [`ResultSink`]: crate::store::ResultSink

use std::collections::BTreeMap;

use serde_json::Value;
use tokio::time::Instant;

use crate::domain::{millis, ErrorClass, Failure, Kind, ResultKey};
use crate::infer::{ChatRequest, FollowUps, LlmClient, Reply};
use crate::metrics::{AnalysisMetrics, RequestMetrics, Sla};
use crate::plan::{Message, PlannedRequest, RestaurantPlan};
use crate::store::{RestaurantResults, ResultRow};
use crate::validate::{merge_sentiment, validate, ValidationError};

/// One analysis kind of a restaurant, after its requests (several for batched sentiment).
#[derive(Debug)]
pub struct KindOutcome {
    pub kind: Kind,
    /// The validated result, or why there is none.
    pub outcome: Result<Value, Failure>,
    pub attempts: u32,
    pub answered_by: Option<String>,
    pub processing_ms: f64,
    pub requests: Vec<RequestMetrics>,
}

/// One planned request after its repair retry, if any.
struct Unit {
    kind: Kind,
    outcome: Result<Value, Failure>,
    attempts: u32,
    answered_by: Option<String>,
    started: Instant,
    finished: Instant,
    requests: Vec<RequestMetrics>,
}

/// Analyses one restaurant's plan. The first request runs alone and leaves the shared prefix
/// (system text + reviews) in the server's prefix cache; the others then each compute only their
/// task, are scheduled by that smaller prefill, and run at once or one after another
/// (`follow_ups`).
pub async fn analyse_plan(
    llm: &dyn LlmClient,
    plan: &RestaurantPlan,
    follow_ups: FollowUps,
) -> Vec<KindOutcome> {
    let Some((first, rest)) = plan.requests.split_first() else {
        return Vec::new();
    };
    let mut units = vec![unit(llm, plan, first, first.prompt_tokens).await];
    let cached = rest.iter().map(|r| {
        unit(
            llm,
            plan,
            r,
            r.prompt_tokens.saturating_sub(r.prefix_tokens),
        )
    });
    match follow_ups {
        FollowUps::Concurrent => units.extend(futures::future::join_all(cached).await),
        FollowUps::Sequential => {
            for u in cached {
                units.push(u.await);
            }
        }
    }
    let mut by_kind: BTreeMap<Kind, Vec<Unit>> = BTreeMap::new();
    for u in units {
        by_kind.entry(u.kind).or_default().push(u);
    }
    by_kind
        .into_iter()
        .map(|(kind, units)| combine(kind, units))
        .collect()
}

/// One kind from its units: valid only if every unit is (a sentiment batch missing would leave
/// reviews unlabelled); batches' results merged.
fn combine(kind: Kind, units: Vec<Unit>) -> KindOutcome {
    let started = units.iter().map(|u| u.started).min();
    let finished = units.iter().map(|u| u.finished).max();
    let processing_ms = match (started, finished) {
        (Some(s), Some(f)) => millis(f.duration_since(s)),
        _ => 0.0,
    };
    let attempts = units.iter().map(|u| u.attempts).max().unwrap_or(0);
    let answered_by = units.iter().find_map(|u| u.answered_by.clone());
    let mut requests = Vec::new();
    let mut parts = Vec::new();
    let mut failure = None;
    for u in units {
        requests.extend(u.requests);
        match u.outcome {
            Ok(v) => parts.push(v),
            Err(e) => {
                failure.get_or_insert(e);
            }
        }
    }
    let outcome = match failure {
        Some(e) => Err(e),
        // Summary and strengths have one unit, which the merge returns as it is.
        None => Ok(merge_sentiment(parts)),
    };
    KindOutcome {
        kind,
        outcome,
        attempts,
        answered_by,
        processing_ms,
        requests,
    }
}

/// One planned request, then at most one repair retry if the answer is invalid.
async fn unit(
    llm: &dyn LlmClient,
    plan: &RestaurantPlan,
    req: &PlannedRequest,
    prefill_tokens: u64,
) -> Unit {
    let started = Instant::now();
    let mut chat = ChatRequest {
        restaurant_id: plan.restaurant_id.clone(),
        kind: req.kind,
        attempt: 1,
        messages: req.messages.clone(),
        schema: req.schema.clone(),
        max_tokens: req.max_tokens,
        prefill_tokens,
    };
    let mut requests = Vec::new();
    let mut answered_by = None;
    let outcome = loop {
        let o = llm.chat(&chat).await;
        requests.extend(o.metrics);
        let reply = match o.result {
            Ok(reply) => reply,
            Err(e) => break Err(e.failure()),
        };
        answered_by = Some(reply.model.clone());
        let invalid = match validate(req.kind, &reply, &req.refs) {
            Ok(v) => break Ok(v),
            Err(e) => e,
        };
        if let Some(last) = requests.last_mut() {
            last.error_class = Some(ErrorClass::InvalidOutput);
            last.error = Some(invalid.to_string());
        }
        if chat.attempt >= 2 {
            break Err(invalid.failure());
        }
        tracing::debug!(kind = req.kind.as_str(), reason = %invalid, "invalid answer, one repair retry");
        repair(&mut chat, reply, &invalid, prefill_tokens);
    };
    if let Err(f) = &outcome {
        tracing::warn!(kind = req.kind.as_str(), reason = %f, "analysis failed");
    }
    Unit {
        kind: req.kind,
        outcome,
        attempts: chat.attempt,
        answered_by,
        started,
        finished: Instant::now(),
        requests,
    }
}

/// The repair retry: the whole conversation (and so the cached prefix), the invalid answer, and
/// what was wrong with it.
fn repair(chat: &mut ChatRequest, reply: Reply, invalid: &ValidationError, prefill_tokens: u64) {
    chat.messages.push(Message {
        role: "assistant",
        content: reply.content,
    });
    chat.messages.push(Message {
        role: "user",
        content: format!(
            "That answer is invalid: {invalid}. Reply again with the corrected JSON object only."
        ),
    });
    chat.attempt += 1;
    chat.prefill_tokens = prefill_tokens / 4 + chat.max_tokens as u64;
}

/// How much of a restaurant the analysis read, for its metrics rows.
#[derive(Debug, Clone, Copy)]
pub struct Coverage {
    pub reviews_total: usize,
    pub reviews_selected: usize,
    /// Estimated prompt tokens of all the restaurant's reviews vs the selected ones.
    pub est_tokens_all_reviews: u64,
    pub est_tokens_selected: u64,
}

/// What a restaurant's analysis stores: a result row and an analysis metrics row per kind, and
/// every request's metrics.
pub fn restaurant_results(
    key: ResultKey,
    outcomes: Vec<KindOutcome>,
    coverage: Coverage,
    sla: Sla,
) -> RestaurantResults {
    let mut out = RestaurantResults {
        rows: Vec::new(),
        analyses: Vec::new(),
        requests: Vec::new(),
        sla,
        key,
    };
    for k in outcomes {
        out.analyses.push(AnalysisMetrics {
            restaurant_id: out.key.restaurant_id.clone(),
            kind: k.kind,
            failure: k.outcome.as_ref().err().cloned(),
            attempts: k.attempts,
            processing_ms: k.processing_ms,
            prompt_tokens: k.requests.iter().filter_map(|m| m.prompt_tokens).sum(),
            completion_tokens: k.requests.iter().filter_map(|m| m.completion_tokens).sum(),
            reviews_total: coverage.reviews_total,
            reviews_selected: coverage.reviews_selected,
            est_tokens_all_reviews: coverage.est_tokens_all_reviews,
            est_tokens_selected: coverage.est_tokens_selected,
        });
        out.rows.push(ResultRow {
            kind: k.kind,
            outcome: k.outcome,
            attempts: k.attempts,
            answered_by: k.answered_by,
        });
        out.requests.extend(k.requests);
    }
    out
}
