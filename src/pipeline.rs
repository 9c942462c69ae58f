//! pipeline: runs the stages in order for every restaurant that needs it:
//! select → plan → infer → validate → store. Restaurants are pulled page by page from the store
//! and analysed `restaurant_concurrency` at once; their requests share the client's queue and
//! in-flight limits. A failed analysis is stored as failed with its reason and never aborts the
//! run; results are written per restaurant, so a killed run resumes where it stopped.

use std::sync::Arc;
use tokio::time::Instant;

use futures::{Stream, StreamExt};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, FollowUps};
use crate::index::VectorIndex;
use crate::infer::{ChatRequest, LlmClient};
use crate::metrics::{AnalysisMetrics, ErrorClass, RequestMetrics, RunSummary, RunTally};
use crate::plan::{Kind, Message, PlannedRequest, Planner, RestaurantPlan};
use crate::select::select;
use crate::store::results::{self, ResultKey, ResultRow};
use crate::store::reviews::{self, hex, RestaurantRow};
use crate::store::{Store, StoreError};
use crate::validate::{merge_sentiment, validate};

/// Restaurants read from the store per page.
const PAGE: usize = 500;

/// The parts a run works with.
pub struct Pipeline {
    pub cfg: Config,
    pub store: Store,
    pub index: Arc<dyn VectorIndex>,
    pub llm: Arc<dyn LlmClient>,
    pub planner: Planner,
    pub embed_model_id: String,
}

/// What became of one restaurant.
#[derive(Debug)]
pub enum RestaurantOutcome {
    Skipped,
    Done { failed_analyses: usize },
    Error(String),
}

/// One analysis kind of a restaurant, after its requests (several for batched sentiment).
#[derive(Debug)]
pub struct KindOutcome {
    pub kind: Kind,
    /// The validated result, or the failure's class and reason.
    pub outcome: Result<Value, (ErrorClass, String)>,
    pub attempts: u32,
    pub answered_by: Option<String>,
    pub processing_ms: f64,
    pub requests: Vec<RequestMetrics>,
}

/// One planned request after its repair retry, if any.
struct Unit {
    kind: Kind,
    outcome: Result<Value, (ErrorClass, String)>,
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
    let mut by_kind: std::collections::BTreeMap<Kind, Vec<Unit>> = Default::default();
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
        (Some(s), Some(f)) => f.duration_since(s).as_secs_f64() * 1000.0,
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
        None if kind == Kind::Sentiment => Ok(merge_sentiment(parts)),
        None => parts
            .into_iter()
            .next()
            .ok_or((ErrorClass::Permanent, "no result".to_string())),
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
            Err(e) => {
                break Err((
                    e.class,
                    format!("request failed ({}): {}", e.class.as_str(), e.message),
                ))
            }
        };
        answered_by = Some(reply.model.clone());
        let reason = match validate(req.kind, &reply, &req.refs) {
            Ok(v) => break Ok(v),
            Err(reason) => reason,
        };
        if let Some(last) = requests.last_mut() {
            last.error_class = Some(ErrorClass::InvalidOutput);
            last.error = Some(reason.clone());
        }
        if chat.attempt >= 2 {
            break Err((
                ErrorClass::InvalidOutput,
                format!("{reason} (after one repair retry)"),
            ));
        }
        tracing::debug!(kind = req.kind.as_str(), %reason, "invalid answer, one repair retry");
        // Repair: keep the whole conversation (and so the cached prefix) and say what was wrong.
        chat.messages.push(Message {
            role: "assistant",
            content: reply.content,
        });
        chat.messages.push(Message {
            role: "user",
            content: format!(
                "That answer is invalid: {reason}. Reply again with the corrected JSON object only."
            ),
        });
        chat.attempt += 1;
        chat.prefill_tokens = prefill_tokens / 4 + chat.max_tokens as u64;
    };
    if let Err((_, reason)) = &outcome {
        tracing::warn!(kind = req.kind.as_str(), %reason, "analysis failed");
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

/// Analysis results of one restaurant, with every metrics row it produced.
struct Analysed {
    rows: Vec<ResultRow>,
    analyses: Vec<AnalysisMetrics>,
    requests: Vec<RequestMetrics>,
}

impl Pipeline {
    /// The key results are stored under: restaurant input, selection and batching settings,
    /// embedding model, prompt version and model. Any change makes the restaurant due again.
    pub fn result_key(&self, r: &RestaurantRow) -> ResultKey {
        let s = self.cfg.select;
        let b = self.planner.limits;
        let mut h = Sha256::new();
        h.update(format!(
            "{}|k={}|m={}|l={}|b={}/{}|{}",
            r.input_hash, s.k, s.diverse, s.lambda, b.reviews, b.tokens, self.embed_model_id
        ));
        ResultKey {
            restaurant_id: r.restaurant_id.clone(),
            input_hash: hex(&h.finalize())[..16].to_string(),
            prompt_version: self.planner.prompts.version.clone(),
            model: self.cfg.llm.model.clone(),
        }
    }

    /// Analyses `restaurants` (unless current and not `force`), calling `on_done` after each.
    pub async fn analyse_all(
        self: &Arc<Self>,
        run_id: i64,
        restaurants: impl Stream<Item = Result<RestaurantRow, StoreError>>,
        force: bool,
        cancel: CancellationToken,
        mut on_done: impl FnMut(&str, &RestaurantOutcome),
    ) -> RunSummary {
        let started = Instant::now();
        let mut tally = RunTally::default();
        let sla = self.cfg.sla;
        let work = restaurants
            .take_until(cancel.cancelled_owned())
            .map(|r| {
                let p = Arc::clone(self);
                async move {
                    match r {
                        Ok(r) => {
                            let id = r.restaurant_id.clone();
                            (id, p.restaurant(run_id, r, force).await)
                        }
                        Err(e) => ("(restaurant list)".to_string(), Err(e.into())),
                    }
                }
            })
            .buffer_unordered(self.cfg.restaurant_concurrency);
        let mut work = std::pin::pin!(work);
        while let Some((id, result)) = work.next().await {
            let outcome = match result {
                Ok(None) => RestaurantOutcome::Skipped,
                Ok(Some(a)) => {
                    a.requests.iter().for_each(|m| tally.add_request(m, &sla));
                    a.analyses.iter().for_each(|m| tally.add_analysis(m));
                    RestaurantOutcome::Done {
                        failed_analyses: a.analyses.iter().filter(|m| !m.ok).count(),
                    }
                }
                Err(e) => RestaurantOutcome::Error(format!("{e:#}")),
            };
            match &outcome {
                RestaurantOutcome::Skipped => tally.summary.restaurants_skipped += 1,
                RestaurantOutcome::Done { failed_analyses: 0 } => {
                    tally.summary.restaurants_done += 1
                }
                RestaurantOutcome::Done { .. } | RestaurantOutcome::Error(_) => {
                    tally.summary.restaurants_failed += 1
                }
            }
            on_done(&id, &outcome);
        }
        tally.finish(started.elapsed().as_secs_f64() * 1000.0, self.cfg.cost)
    }

    /// One restaurant: `None` if skipped because its results are current.
    #[tracing::instrument(skip_all, fields(restaurant_id = %r.restaurant_id))]
    async fn restaurant(
        &self,
        run_id: i64,
        r: RestaurantRow,
        force: bool,
    ) -> anyhow::Result<Option<Analysed>> {
        let key = self.result_key(&r);
        let kinds = Kind::NAMES;
        if !force {
            let k = key.clone();
            if self
                .store
                .call(move |c| results::has_current_results(c, &k, &kinds))
                .await?
            {
                return Ok(None);
            }
        }
        let id = r.restaurant_id.clone();
        let all = self
            .store
            .call(move |c| reviews::restaurant_reviews(c, &id))
            .await?;
        let selection = select(self.index.as_ref(), &r.restaurant_id, self.cfg.select).await?;
        let selected: Vec<_> = selection
            .review_ids()
            .iter()
            .filter_map(|id| all.iter().find(|rv| &rv.review_id == id).cloned())
            .collect();
        if selected.is_empty() {
            anyhow::bail!("no embedded reviews to select from");
        }
        let plan = self.planner.plan(&r.restaurant_id, &selected);
        let sla = self.cfg.sla;
        let count = |rv: &reviews::StoredReview| self.planner.counter.count(&rv.text);
        let est_all: u64 = all.iter().map(count).sum();
        let est_sel: u64 = selected.iter().map(count).sum();
        let mut out = Analysed {
            rows: Vec::new(),
            analyses: Vec::new(),
            requests: Vec::new(),
        };
        for k in analyse_plan(self.llm.as_ref(), &plan, self.cfg.llm.follow_ups).await {
            out.analyses.push(AnalysisMetrics {
                restaurant_id: r.restaurant_id.clone(),
                kind: k.kind.as_str().to_string(),
                ok: k.outcome.is_ok(),
                failure_reason: k.outcome.as_ref().err().map(|(_, r)| r.clone()),
                attempts: k.attempts,
                processing_ms: k.processing_ms,
                prompt_tokens: k.requests.iter().filter_map(|m| m.prompt_tokens).sum(),
                completion_tokens: k.requests.iter().filter_map(|m| m.completion_tokens).sum(),
                reviews_total: all.len(),
                reviews_selected: selected.len(),
                est_tokens_all_reviews: est_all,
                est_tokens_selected: est_sel,
            });
            out.rows.push(ResultRow {
                kind: k.kind.as_str(),
                error_class: k.outcome.as_ref().err().map(|(c, _)| *c),
                outcome: k.outcome.map(|v| v.to_string()).map_err(|(_, r)| r),
                attempts: k.attempts,
                answered_by: k.answered_by,
            });
            out.requests.extend(k.requests);
        }
        let out = self
            .store
            .call(move |c| {
                let (rows, analyses, requests) = (&out.rows, &out.analyses, &out.requests);
                results::put_analysis(c, run_id, &key, rows, analyses, requests, &sla)?;
                Ok(out)
            })
            .await?;
        Ok(Some(out))
    }
}

/// Every restaurant in the store, pulled a page at a time as the run consumes them.
pub fn restaurants(store: Store) -> impl Stream<Item = Result<RestaurantRow, StoreError>> {
    futures::stream::unfold(Some(String::new()), move |after| {
        let store = store.clone();
        async move {
            let after = after?;
            let a = after.clone();
            match store
                .call(move |c| reviews::restaurants_after(c, &a, PAGE))
                .await
            {
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = page.last().map(|r| r.restaurant_id.clone());
                    let items: Vec<Result<RestaurantRow, StoreError>> =
                        page.into_iter().map(Ok).collect();
                    Some((futures::stream::iter(items), next))
                }
                Err(e) => Some((futures::stream::iter(vec![Err(e)]), None)),
            }
        }
    })
    .flatten()
}
