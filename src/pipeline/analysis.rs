//! One restaurant's plan through the LLM: every planned request, its repairs (fresh sampled
//! requests) when the answer is invalid, sentiment batches merged, and the rows a [`ResultSink`] stores. Needs only
//! an [`LlmClient`], so it is tested with a scripted one.
//!
//! [`ResultSink`]: crate::store::ResultSink

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use tokio::time::Instant;

use crate::domain::{millis, ErrorClass, Failure, Kind, ResultKey};
use crate::infer::{ChatRequest, FollowUps, LlmClient, LlmConfig};
use crate::metrics::{AnalysisMetrics, RequestMetrics, Sla};
use crate::plan::{schema, Message, PlannedRequest, RestaurantPlan};
use crate::store::{RestaurantResults, ResultRow};
use crate::validate::{
    merge_sentiment, sentiment_labels, validate, Expect, Label, ValidationError,
};

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

/// One planned request after its repairs, if any.
struct Unit {
    kind: Kind,
    outcome: Result<Value, Failure>,
    attempts: u32,
    answered_by: Option<String>,
    started: Instant,
    finished: Instant,
    requests: Vec<RequestMetrics>,
}

/// Analyses one restaurant's plan. The summary and the sentiment batches go first; the
/// strengths follow, checked against the sentiment labels (no strength may be cited from a
/// review labelled negative) and finding the summary's prompt (system text + selected reviews)
/// in the server's prefix cache, so each is scheduled by its task's prefill only. Requests of a
/// phase run at once or one after another (`follow_ups`). `reviews_total` is what the sample
/// was drawn from, for the aggregate.
pub async fn analyse_plan(
    llm: &dyn LlmClient,
    plan: &RestaurantPlan,
    conduct: Conduct,
    reviews_total: usize,
) -> Vec<KindOutcome> {
    let of = |k: Kind| plan.requests.iter().filter(move |r| r.kind == k);
    let system_cached = |r: &PlannedRequest| r.prompt_tokens.saturating_sub(r.prefix_tokens);
    let unit = |r, prefill, labels| unit(llm, plan, r, prefill, labels, conduct.repairs);
    let first = of(Kind::Summary)
        .map(|r| unit(r, r.prompt_tokens, None))
        .chain(of(Kind::Sentiment).map(|r| unit(r, system_cached(r), None)));
    let mut units = run(first.collect(), conduct.follow_ups).await;
    let sentiment = combine(
        Kind::Sentiment,
        units
            .extract_if(.., |u| u.kind == Kind::Sentiment)
            .collect(),
        reviews_total,
    );
    let labels = sentiment.outcome.as_ref().ok().map(sentiment_labels);
    let narrowed: Vec<PlannedRequest> = of(Kind::Strengths)
        .map(|r| without_negative_evidence(r, labels.as_ref()))
        .collect();
    let strengths = narrowed
        .iter()
        .map(|r| unit(r, system_cached(r), labels.as_ref()))
        .collect();
    units.extend(run(strengths, conduct.follow_ups).await);
    let mut by_kind: BTreeMap<Kind, Vec<Unit>> = BTreeMap::new();
    for u in units {
        by_kind.entry(u.kind).or_default().push(u);
    }
    let mut out = vec![sentiment];
    out.extend(
        by_kind
            .into_iter()
            .map(|(kind, units)| combine(kind, units, reviews_total)),
    );
    out
}

/// How a restaurant's requests go: one after another or at once, and how many fresh requests
/// an invalid answer gets.
#[derive(Debug, Clone, Copy)]
pub struct Conduct {
    pub follow_ups: FollowUps,
    pub repairs: u32,
}

impl From<&LlmConfig> for Conduct {
    fn from(c: &LlmConfig) -> Self {
        Self {
            follow_ups: c.follow_ups,
            repairs: c.repairs,
        }
    }
}

/// A strengths request whose schema cannot cite a review the sentiment step labelled negative.
fn without_negative_evidence(
    r: &PlannedRequest,
    labels: Option<&HashMap<String, Label>>,
) -> PlannedRequest {
    let Some(labels) = labels else {
        return r.clone();
    };
    let negative: Vec<&str> = (r.refs.iter())
        .filter(|x| labels.get(&x.review_id) == Some(&Label::Negative))
        .map(|x| x.reference.as_str())
        .collect();
    PlannedRequest {
        schema: schema::without_evidence_from(&r.schema, &negative),
        ..r.clone()
    }
}

/// Runs the futures of one phase at once or one after another.
async fn run<F: std::future::Future<Output = Unit>>(units: Vec<F>, f: FollowUps) -> Vec<Unit> {
    match f {
        FollowUps::Concurrent => futures::future::join_all(units).await,
        FollowUps::Sequential => {
            let mut out = Vec::new();
            for u in units {
                out.push(u.await);
            }
            out
        }
    }
}

/// One kind from its units: valid only if every unit is (a sentiment batch missing would leave
/// reviews unlabelled); batches' results merged.
fn combine(kind: Kind, units: Vec<Unit>, reviews_total: usize) -> KindOutcome {
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
        None if parts.is_empty() => Err(Failure {
            class: ErrorClass::Permanent,
            group: "no request planned".into(),
            message: format!("no {kind} request was planned"),
        }),
        None if kind == Kind::Sentiment => Ok(merge_sentiment(parts, reviews_total)),
        // Summary and strengths are one request each.
        None => Ok(parts.swap_remove(0)),
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

/// One planned request, then up to `repairs` fresh ones while the answer is invalid.
async fn unit(
    llm: &dyn LlmClient,
    plan: &RestaurantPlan,
    req: &PlannedRequest,
    prefill_tokens: u64,
    labels: Option<&HashMap<String, Label>>,
    repairs: u32,
) -> Unit {
    let expect = Expect {
        language: req.language,
        labels,
        instructions: req.messages.first().map_or("", |m| m.content.as_str()),
    };
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
        let invalid = match validate(req.kind, &reply, &req.refs, expect) {
            Ok(v) => break Ok(v),
            Err(e) => e,
        };
        if let Some(last) = requests.last_mut() {
            last.error_class = Some(ErrorClass::InvalidOutput);
            last.error = Some(invalid.to_string());
        }
        if chat.attempt > repairs {
            break Err(invalid.failure(repairs));
        }
        tracing::debug!(kind = req.kind.as_str(), reason = %invalid, attempt = chat.attempt, "invalid answer, asking again");
        repair(&mut chat, &req.messages, &invalid, prefill_tokens);
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

/// A repair: the original conversation again (its prefix is cached) with the refusal's reason
/// appended to the last message, but not the invalid answer, which a small model copies. The
/// client samples it (`repair_temperature`, seeded by the attempt).
fn repair(chat: &mut ChatRequest, original: &[Message], invalid: &ValidationError, prefill: u64) {
    chat.messages = original.to_vec();
    if let Some(last) = chat.messages.last_mut() {
        last.content = format!(
            "{}\n\nAn earlier answer was refused: {invalid}.",
            last.content
        );
    }
    chat.attempt += 1;
    chat.prefill_tokens = prefill;
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
            output_chars: k
                .outcome
                .as_ref()
                .map_or(0, |v| v.to_string().chars().count()),
            empty: k.kind == Kind::Strengths
                && k.outcome
                    .as_ref()
                    .is_ok_and(|v| v["strengths"].as_array().is_some_and(Vec::is_empty)),
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
