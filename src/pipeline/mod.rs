//! pipeline: runs the stages in order for every restaurant that needs it:
//! select → plan → infer → validate → store. Restaurants are pulled page by page from the store
//! and analysed `restaurant_concurrency` at once, each in its own task ([`fanout`]); their
//! requests share the client's queue and in-flight limits. A failed analysis is stored as failed
//! with its reason, and a restaurant that errors or panics is recorded as failed: neither aborts
//! the run. Results are written per restaurant, so a killed run resumes where it stopped.

mod analysis;
pub mod fanout;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use anyhow::Context;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use analysis::{analyse_plan, restaurant_results, Conduct, Coverage, KindOutcome};

use crate::config::Config;
use crate::domain::{cap_text, millis, short_hash, ErrorClass, ResultKey, StoredReview};
use crate::index::VectorIndex;
use crate::infer::LlmClient;
use crate::metrics::{RunSummary, RunTally};
use crate::plan::Planner;
use crate::select::{select, sentiment_sample};
use crate::store::{RestaurantResults, RestaurantRow, ResultSink, Store, StoreError};

/// What a restaurant fails with when no endpoint answered the warm-up: the run gives up at
/// once, as it cannot analyse anything.
const NOT_ANSWERING: &str = "the LLM server is not answering";

/// Restaurants read from the store per page.
const PAGE: usize = 500;

/// The parts a run works with.
pub struct Pipeline {
    pub cfg: Config,
    /// The work database: reviews, and whether a restaurant's results are current.
    pub store: Store,
    /// Where results go.
    pub sink: Arc<dyn ResultSink>,
    pub index: Arc<dyn VectorIndex>,
    pub llm: Arc<dyn LlmClient>,
    pub planner: Planner,
    pub embed_model_id: String,
    /// Set once the LLM server answered, before the first restaurant that needs it.
    pub ready: tokio::sync::OnceCell<()>,
}

/// What became of one restaurant.
#[derive(Debug)]
pub enum RestaurantOutcome {
    Skipped,
    Done { failed_analyses: usize },
    Error(String),
}

impl Pipeline {
    /// The key results are stored under: the restaurant's reviews, selection and batching
    /// settings, embedding model, prompt version and model. Any change makes it due again.
    pub fn result_key(&self, r: &RestaurantRow) -> ResultKey {
        let s = self.cfg.select;
        let b = self.planner.limits;
        let mut h = Sha256::new();
        h.update(format!(
            "{}|k={}|m={}|l={}|s={}|b={}/{}|{}",
            r.reviews_hash,
            s.k,
            s.diverse,
            s.lambda,
            s.sentiment_sample,
            b.reviews,
            b.tokens,
            self.embed_model_id
        ));
        ResultKey {
            restaurant_id: r.restaurant_id.clone(),
            input_hash: short_hash(h),
            prompt_version: self.planner.prompts.version.clone(),
            model: self.cfg.llm.model.clone(),
        }
    }

    /// Analyses `restaurants` (unless current and not `force`), calling `on_done` after each.
    /// Stops starting restaurants when `cancel` is cancelled, or when `job.max_failed_in_a_row`
    /// restaurants in a row failed only for request errors (the summary's `gave_up` says so).
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
        let items = restaurants.map(|r| match r {
            Ok(r) => (r.restaurant_id.clone(), Ok(r)),
            Err(e) => ("(restaurant list)".to_string(), Err(e)),
        });
        let work = |r: Result<RestaurantRow, StoreError>| {
            let p = Arc::clone(self);
            async move { p.restaurant(run_id, r?, force).await }
        };
        let stop = cancel.child_token();
        let mut breaker = Breaker::new(self.cfg.job.max_failed_in_a_row);
        let limit = self.cfg.job.restaurant_concurrency;
        fanout::fan_out(items, limit, &stop, work, |id, result| {
            let outcome = match result {
                Ok(None) => RestaurantOutcome::Skipped,
                Ok(Some(a)) => {
                    a.requests.iter().for_each(|m| tally.add_request(m, &sla));
                    a.analyses.iter().for_each(|m| tally.add_analysis(m));
                    breaker.restaurant(&a);
                    let failed_analyses = a.analyses.iter().filter(|m| m.failure.is_some()).count();
                    RestaurantOutcome::Done { failed_analyses }
                }
                Err(e) => {
                    breaker.error(&e);
                    RestaurantOutcome::Error(e)
                }
            };
            let s = &mut tally.summary;
            match &outcome {
                RestaurantOutcome::Skipped => s.restaurants_skipped += 1,
                RestaurantOutcome::Done { failed_analyses: 0 } => s.restaurants_done += 1,
                _ => s.restaurants_failed += 1,
            }
            on_done(&id, &outcome);
            if breaker.tripped.is_some() && !stop.is_cancelled() {
                tracing::error!(reason = breaker.tripped.as_deref(), "giving up the run");
                stop.cancel();
            }
        })
        .await;
        let mut summary = tally.finish(millis(started.elapsed()), self.cfg.cost);
        summary.gave_up = breaker.tripped;
        summary
    }

    /// One restaurant: `None` if skipped because its results are current.
    #[tracing::instrument(skip_all, fields(restaurant_id = %r.restaurant_id))]
    async fn restaurant(
        self: &Arc<Self>,
        run_id: i64,
        r: RestaurantRow,
        force: bool,
    ) -> anyhow::Result<Option<Arc<RestaurantResults>>> {
        let key = self.result_key(&r);
        if !force && self.store.has_current_results(key.clone()).await? {
            return Ok(None);
        }
        self.ready
            .get_or_try_init(|| self.llm.ready())
            .await
            .context(NOT_ANSWERING)?;
        let id = &r.restaurant_id;
        // Every review's id, but only the texts the prompts show: memory and tokenising follow
        // the selection and the sample, not the restaurant's size.
        let (ids, chars_all) = self.store.restaurant_review_ids(id.clone()).await?;
        let selected = select(self.index.as_ref(), id, self.cfg.select, &ids).await?;
        if selected.is_empty() {
            anyhow::bail!("no embedded reviews to select from");
        }
        let sampled = sentiment_sample(id, &ids, self.cfg.select.sentiment_sample);
        let mut wanted: Vec<String> = selected.iter().chain(&sampled).cloned().collect();
        wanted.sort_unstable();
        wanted.dedup();
        let fetched = self.store.reviews_by_ids(id.clone(), wanted).await?;
        let of = |ids: &[String]| -> Vec<StoredReview> {
            let by_id = |i: &String| fetched.iter().find(|rv| &rv.review_id == i).cloned();
            ids.iter().filter_map(by_id).collect()
        };
        let (selected, sample) = (of(&selected), of(&sampled));
        // Tokenising and rendering the prompts is CPU work: off the async runtime, so the
        // streams of other restaurants' requests are not held up by it.
        let me = Arc::clone(self);
        let id = id.clone();
        let (plan, coverage) = tokio::task::spawn_blocking(move || {
            let plan = me.planner.plan(&id, &selected, &sample);
            let coverage = me.coverage(&fetched, &selected, ids.len(), chars_all);
            (plan, coverage)
        })
        .await?;
        let conduct = Conduct::from(&self.cfg.llm);
        let outcomes =
            analyse_plan(self.llm.as_ref(), &plan, conduct, coverage.reviews_total).await;
        let results = Arc::new(restaurant_results(key, outcomes, coverage, self.cfg.sla));
        self.sink
            .put_restaurant(run_id, Arc::clone(&results))
            .await?;
        Ok(Some(results))
    }
}

impl Pipeline {
    /// What the prompts cover of the restaurant's reviews; all reviews' tokens are estimated
    /// from their characters at the rate of the reviews fetched for the prompts, so only those
    /// are tokenised.
    fn coverage(
        &self,
        fetched: &[StoredReview],
        selected: &[StoredReview],
        reviews_total: usize,
        chars_all: u64,
    ) -> Coverage {
        let tokens = |rs: &[StoredReview]| -> u64 {
            rs.iter()
                .map(|rv| self.planner.counter.count(&rv.text))
                .sum()
        };
        let chars_fetched: usize = fetched.iter().map(|rv| rv.text.chars().count()).sum();
        let per_char = tokens(fetched) as f64 / chars_fetched.max(1) as f64;
        Coverage {
            reviews_total,
            reviews_selected: selected.len(),
            est_tokens_all_reviews: (chars_all as f64 * per_char).round() as u64,
            est_tokens_selected: tokens(selected),
        }
    }
}

/// Counts restaurants in a row that failed only for request errors.
struct Breaker {
    limit: usize,
    in_a_row: usize,
    last: String,
    tripped: Option<String>,
}

impl Breaker {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            in_a_row: 0,
            last: String::new(),
            tripped: None,
        }
    }

    /// An analysed restaurant: it counts when every analysis failed for a request error.
    fn restaurant(&mut self, a: &RestaurantResults) {
        let request_error = |m: &crate::metrics::AnalysisMetrics| {
            m.failure
                .as_ref()
                .is_some_and(|f| matches!(f.class, ErrorClass::Transient | ErrorClass::Permanent))
        };
        if !a.analyses.is_empty() && a.analyses.iter().all(request_error) {
            let why = a.analyses.iter().find_map(|m| m.failure.as_ref());
            self.failed(&why.map(|f| f.message.clone()).unwrap_or_default());
        } else {
            self.in_a_row = 0;
        }
    }

    /// A restaurant that could not be analysed at all (no server, database error).
    fn error(&mut self, e: &str) {
        if e.starts_with(NOT_ANSWERING) && self.tripped.is_none() {
            self.tripped = Some(cap_text(e));
        }
        self.failed(e);
    }

    fn failed(&mut self, why: &str) {
        self.in_a_row += 1;
        self.last = why.to_string();
        if self.in_a_row >= self.limit && self.tripped.is_none() {
            self.tripped = Some(format!(
                "{} restaurants in a row failed for request or database errors; the last: {}",
                self.in_a_row,
                cap_text(&self.last)
            ));
        }
    }
}

/// Every restaurant in the store, pulled a page at a time as the run consumes them.
pub fn restaurants(store: Store) -> impl Stream<Item = Result<RestaurantRow, StoreError>> {
    futures::stream::unfold(Some(String::new()), move |after| {
        let store = store.clone();
        async move {
            let after = after?;
            match store.restaurants_after(after, PAGE).await {
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
