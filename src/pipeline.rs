//! pipeline: runs the stages in order for every restaurant that needs it:
//! select → plan → infer → validate → store. Restaurants are pulled one at a time from the list
//! and analysed `restaurant_concurrency` at once; their requests share the client's in-flight
//! limit. A failed analysis is stored as failed with its reason and never aborts the run; results
//! are written per restaurant, so a killed run resumes where it stopped.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::index::VectorIndex;
use crate::infer::{ChatRequest, LlmClient};
use crate::metrics::{AnalysisMetrics, ErrorClass, RequestMetrics, RunSummary, RunTally};
use crate::plan::{
    estimate_tokens, plan_restaurant, Kind, Message, PlannedRequest, Prompts, RestaurantPlan,
};
use crate::select::select;
use crate::store::results::{self, ResultKey, ResultRow};
use crate::store::reviews::{self, hex, RestaurantRow};
use crate::store::{Store, StoreError};
use crate::validate::validate;

/// The parts a run works with.
pub struct Pipeline {
    pub cfg: Config,
    pub store: Store,
    pub index: Arc<dyn VectorIndex>,
    pub llm: Arc<dyn LlmClient>,
    pub prompts: Prompts,
    pub embed_model_id: String,
}

/// What became of one restaurant.
#[derive(Debug)]
pub enum RestaurantOutcome {
    Skipped,
    Done { failed_analyses: usize },
    Error(String),
}

/// Analysis results of one restaurant, with every metrics row it produced.
struct Analysed {
    rows: Vec<ResultRow>,
    analyses: Vec<AnalysisMetrics>,
    requests: Vec<RequestMetrics>,
}

impl Pipeline {
    /// The key results are stored under: restaurant input, selection settings, embedding model,
    /// prompt version and model. Any change makes the restaurant due again.
    pub fn result_key(&self, r: &RestaurantRow) -> ResultKey {
        let s = self.cfg.select;
        let mut h = Sha256::new();
        h.update(format!(
            "{}|k={}|m={}|l={}|{}",
            r.input_hash, s.k, s.diverse, s.lambda, self.embed_model_id
        ));
        ResultKey {
            restaurant_id: r.restaurant_id.clone(),
            input_hash: hex(&h.finalize())[..16].to_string(),
            prompt_version: self.prompts.version.clone(),
            model: self.cfg.llm.model.clone(),
        }
    }

    /// Analyses `restaurants` (unless current and not `force`), calling `on_done` after each.
    pub async fn analyse_all(
        self: &Arc<Self>,
        run_id: i64,
        restaurants: Vec<RestaurantRow>,
        force: bool,
        cancel: CancellationToken,
        mut on_done: impl FnMut(&str, &RestaurantOutcome),
    ) -> RunSummary {
        let started = Instant::now();
        let mut tally = RunTally::default();
        let sla = self.cfg.sla;
        let work = futures::stream::iter(restaurants)
            .take_until(cancel.cancelled_owned())
            .map(|r| {
                let p = Arc::clone(self);
                async move {
                    let id = r.restaurant_id.clone();
                    (id, p.restaurant(run_id, r, force).await)
                }
            })
            .buffer_unordered(self.cfg.restaurant_concurrency);
        let mut work = std::pin::pin!(work);
        while let Some((id, result)) = work.next().await {
            let outcome = match result {
                Ok(None) => RestaurantOutcome::Skipped,
                Ok(Some(a)) => {
                    a.requests
                        .iter()
                        .for_each(|m| tally.add_request(m, sla.ttft_ms, sla.tpot_ms));
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
        tally.finish(started.elapsed().as_secs_f64() * 1000.0)
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
        let plan = plan_restaurant(
            &self.prompts,
            &r.restaurant_id,
            &selected,
            self.cfg.llm.max_tokens,
        );
        let est_all: u64 = all.iter().map(|rv| estimate_tokens(&rv.text)).sum();
        let est_sel: u64 = selected.iter().map(|rv| estimate_tokens(&rv.text)).sum();
        let mut out = Analysed {
            rows: Vec::new(),
            analyses: Vec::new(),
            requests: Vec::new(),
        };
        // One after another: the first request leaves the shared prefix (system text + reviews) in
        // the server's prefix cache (vLLM's APC, llama.cpp's slot cache), so the next two only
        // prefill their task. Concurrency comes from running several restaurants at once.
        for req in &plan.requests {
            let (row, mut am, reqs) = self.analysis(&plan, req).await;
            am.reviews_total = all.len();
            am.reviews_selected = selected.len();
            am.est_tokens_all_reviews = est_all;
            am.est_tokens_selected = est_sel;
            out.rows.push(row);
            out.analyses.push(am);
            out.requests.extend(reqs);
        }
        let out = self
            .store
            .call(move |c| {
                results::put_analysis(c, run_id, &key, &out.rows, &out.analyses, &out.requests)?;
                Ok(out)
            })
            .await?;
        Ok(Some(out))
    }

    /// One analysis: the request, then at most one repair retry if the answer is invalid.
    async fn analysis(
        &self,
        plan: &RestaurantPlan,
        req: &PlannedRequest,
    ) -> (ResultRow, AnalysisMetrics, Vec<RequestMetrics>) {
        let started = Instant::now();
        let mut chat = ChatRequest {
            restaurant_id: plan.restaurant_id.clone(),
            kind: req.kind,
            attempt: 1,
            messages: req.messages.clone(),
            schema: req.schema.clone(),
            max_tokens: req.max_tokens,
        };
        let mut requests = Vec::new();
        let outcome = loop {
            let o = self.llm.chat(&chat).await;
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
            let reason = match validate(req.kind, &reply, &plan.refs) {
                Ok(v) => break Ok(v.to_string()),
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
                content: format!("That answer is invalid: {reason}. Reply again with the corrected JSON object only."),
            });
            chat.attempt += 1;
        };
        let am = AnalysisMetrics {
            restaurant_id: plan.restaurant_id.clone(),
            kind: req.kind.as_str().to_string(),
            ok: outcome.is_ok(),
            failure_reason: outcome.as_ref().err().map(|(_, r)| r.clone()),
            attempts: chat.attempt,
            processing_ms: started.elapsed().as_secs_f64() * 1000.0,
            prompt_tokens: requests.iter().filter_map(|m| m.prompt_tokens).sum(),
            completion_tokens: requests.iter().filter_map(|m| m.completion_tokens).sum(),
            ..Default::default()
        };
        if let Err((_, reason)) = &outcome {
            tracing::warn!(kind = req.kind.as_str(), %reason, "analysis failed");
        }
        let error_class = outcome.as_ref().err().map(|(c, _)| *c);
        let row = ResultRow {
            kind: req.kind.as_str(),
            outcome: outcome.map_err(|(_, r)| r),
            error_class,
            attempts: chat.attempt,
        };
        (row, am, requests)
    }
}

/// Restaurants known to the store (ids only, pulled in order).
pub async fn restaurants(store: &Store) -> Result<Vec<RestaurantRow>, StoreError> {
    store.call(|c| reviews::restaurants(c)).await
}
