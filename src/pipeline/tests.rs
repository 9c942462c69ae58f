//! The pipeline's analysis of one restaurant with a scripted [`LlmClient`]: no SQLite, no HTTP.

use std::path::Path;
use std::sync::Mutex;

use async_trait::async_trait;
use serde_json::json;

use super::*;
use crate::domain::{lock, ErrorClass, Kind};
use crate::infer::{ChatOutcome, ChatRequest, FollowUps, InferError, Reply};
use crate::metrics::{RequestMetrics, Sla};
use crate::plan::{BatchLimits, MaxTokens, Prompts, RestaurantPlan, TokenCounter};
use crate::store::RestaurantResults;

/// Answers each request with what `script` says for its kind and attempt (1, or 2 for the
/// repair retry), and keeps every request it saw.
struct Scripted {
    script: fn(Kind, u32, &ChatRequest) -> Result<String, InferError>,
    seen: Mutex<Vec<(Kind, u32)>>,
}

#[async_trait]
impl LlmClient for Scripted {
    async fn chat(&self, req: &ChatRequest) -> ChatOutcome {
        lock(&self.seen).push((req.kind, req.attempt));
        let result = (self.script)(req.kind, req.attempt, req).map(|content| Reply {
            content,
            finish_reason: Some("stop".into()),
            model: "scripted".into(),
        });
        let metrics = vec![RequestMetrics {
            restaurant_id: req.restaurant_id.clone(),
            kind: req.kind,
            attempt: req.attempt,
            ok: result.is_ok(),
            error_class: result.as_ref().err().map(InferError::class),
            prompt_tokens: Some(100),
            completion_tokens: Some(20),
            ..Default::default()
        }];
        ChatOutcome { result, metrics }
    }
}

fn plan() -> RestaurantPlan {
    let planner = Planner {
        prompts: Prompts::load(Path::new("prompts")).unwrap(),
        counter: TokenCounter::Estimate,
        // Two reviews per sentiment batch: three reviews make two batches to merge.
        limits: BatchLimits {
            reviews: 2,
            tokens: 2048,
        },
        max: MaxTokens {
            sentiment: 300,
            summary: 300,
            strengths: 300,
        },
        language: Default::default(),
    };
    let reviews: Vec<StoredReview> = ["Great broth. Will return.", "Rude staff.", "가성비 좋아요"]
        .iter()
        .enumerate()
        .map(|(i, t)| StoredReview {
            review_id: format!("rv{i}"),
            text: t.to_string(),
            content_hash: String::new(),
            lang: None,
            rating: None,
        })
        .collect();
    planner.plan("r1", &reviews, &reviews)
}

/// A valid sentiment answer for exactly the references the request's schema asks for: every
/// review positive, except "Rude staff." and, if `broth` says so, "Great broth…" negative.
fn labels_for(req: &ChatRequest, broth: &str) -> String {
    let mut labels = serde_json::Map::new();
    for r in req.schema["required"].as_array().unwrap() {
        let r = r.as_str().unwrap();
        let line = req.messages[1]
            .content
            .lines()
            .find(|l| l.starts_with(&format!("[{r}]")))
            .unwrap();
        let label = if line.contains("Rude") {
            "negative"
        } else if line.contains("broth") {
            broth
        } else {
            "positive"
        };
        labels.insert(r.to_string(), json!(label));
    }
    serde_json::Value::Object(labels).to_string()
}

fn sentiment_for(req: &ChatRequest) -> String {
    labels_for(req, "positive")
}

const SUMMARY: &str = r#"{"summary":"Rich broth, rude staff.","aspects":{"food":{"sentiment":"positive","summary":"Rich broth"}}}"#;
const STRENGTHS: &str = r#"{"strengths":[{"title":"Broth","detail":"Guests praise the broth","evidence":[{"ref":"R1","quote":"Great broth."}]}]}"#;
const INVENTED: &str = r#"{"strengths":[{"title":"Broth","detail":"Guests praise the broth","evidence":[{"ref":"R1","quote":"best broth in town"}]}]}"#;

fn key() -> ResultKey {
    ResultKey {
        restaurant_id: "r1".into(),
        input_hash: "h".into(),
        prompt_version: "p".into(),
        model: "m".into(),
    }
}

fn coverage() -> Coverage {
    Coverage {
        reviews_total: 10,
        reviews_selected: 3,
        est_tokens_all_reviews: 500,
        est_tokens_selected: 150,
    }
}

fn conduct(follow_ups: FollowUps) -> Conduct {
    Conduct {
        follow_ups,
        repairs: 1,
    }
}

/// Sentiment valid, the summary repaired on its second try, strengths invalid twice.
async fn repaired_and_failed() -> (RestaurantResults, Vec<(Kind, u32)>) {
    let llm = Scripted {
        script: |kind, attempt, req| match (kind, attempt) {
            (Kind::Sentiment, _) => Ok(sentiment_for(req)),
            (Kind::Summary, 1) => Ok(r#"{"summary":"...","aspects":{}}"#.into()),
            (Kind::Summary, _) => Ok(SUMMARY.into()),
            (Kind::Strengths, _) => Ok(INVENTED.into()),
        },
        seen: Mutex::default(),
    };
    let outcomes = analyse_plan(&llm, &plan(), conduct(FollowUps::Sequential), 3).await;
    let seen = lock(&llm.seen).clone();
    (
        restaurant_results(key(), outcomes, coverage(), Sla::default()),
        seen,
    )
}

#[tokio::test]
async fn sentiment_batches_merge_into_one_aggregate_and_the_summary_goes_first() {
    let (r, seen) = repaired_and_failed().await;
    let kinds: Vec<Kind> = r.rows.iter().map(|row| row.kind).collect();
    assert_eq!(kinds, Kind::ALL);
    let sentiment = r.rows[0].outcome.as_ref().unwrap();
    assert_eq!(sentiment["aggregate"]["sample_size"], 3);
    assert_eq!(sentiment["aggregate"]["negative"], 0.333);
    let mut labelled: Vec<&str> = (sentiment["reviews"].as_array().unwrap().iter())
        .map(|r| r["review_id"].as_str().unwrap())
        .collect();
    labelled.sort_unstable();
    assert_eq!(labelled, ["rv0", "rv1", "rv2"], "two batches merged");
    assert_eq!(r.analyses[0].prompt_tokens, 200, "both batches counted");
    assert_eq!(r.analyses[0].est_tokens_all_reviews, 500);
    assert_eq!(seen[0], (Kind::Summary, 1), "the summary goes first");
    assert_eq!(
        seen.last(),
        Some(&(Kind::Strengths, 2)),
        "strengths after the labels"
    );
}

#[tokio::test]
async fn a_repaired_answer_counts_and_a_twice_invalid_one_fails_with_its_group() {
    let (r, _) = repaired_and_failed().await;
    let summary = &r.rows[1];
    assert!(summary.outcome.is_ok(), "repaired: {:?}", summary.outcome);
    assert_eq!(summary.attempts, 2);
    assert_eq!(summary.answered_by.as_deref(), Some("scripted"));
    let failure = r.rows[2].outcome.as_ref().unwrap_err();
    assert_eq!(failure.class, ErrorClass::InvalidOutput);
    assert_eq!(
        failure.group,
        "invalid output: quote not in the cited review"
    );
    assert!(failure.message.ends_with("(after 1 repair)"), "{failure}");
    // 2 sentiment batches + summary twice + strengths twice; each invalid answer marked so.
    assert_eq!(r.requests.len(), 6);
    let invalid = (r.requests.iter()).filter(|m| m.error_class == Some(ErrorClass::InvalidOutput));
    assert_eq!(invalid.count(), 3);
    assert_eq!(r.analyses[2].failure.as_ref(), Some(failure));
}

#[tokio::test]
async fn a_repair_asks_the_prompt_again_with_the_reason_and_without_the_invalid_answer() {
    let llm = Scripted {
        script: |kind, attempt, req| {
            let asked = &req.messages.last().unwrap().content;
            match (kind, attempt) {
                (Kind::Sentiment, _) => Ok(sentiment_for(req)),
                (Kind::Strengths, _) => Ok(STRENGTHS.into()),
                (Kind::Summary, 1) => Ok(r#"{"summary":"...","aspects":{}}"#.into()),
                (Kind::Summary, 2) => {
                    assert_eq!(req.messages.len(), 2, "no invalid answer in the repair");
                    let reason =
                        r#"An earlier answer was refused: content: summary "..." has no words."#;
                    assert!(asked.ends_with(reason), "{asked}");
                    Ok(r#"{"summary":"summary","aspects":{}}"#.into())
                }
                (Kind::Summary, _) => {
                    assert!(
                        !asked.contains("no words"),
                        "only the latest reason: {asked}"
                    );
                    Ok(SUMMARY.into())
                }
            }
        },
        seen: Mutex::default(),
    };
    let two = Conduct {
        follow_ups: FollowUps::Sequential,
        repairs: 2,
    };
    let outcomes = analyse_plan(&llm, &plan(), two, 3).await;
    let r = restaurant_results(key(), outcomes, coverage(), Sla::default());
    assert!(r.rows[1].outcome.is_ok(), "{:?}", r.rows[1].outcome);
    assert_eq!(r.rows[1].attempts, 3);
    let summaries = (r.requests.iter()).filter(|m| m.kind == Kind::Summary);
    let attempts: Vec<u32> = summaries.map(|m| m.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[tokio::test]
async fn a_request_error_fails_its_kind_with_the_class_and_leaves_the_others() {
    let llm = Scripted {
        script: |kind, _, req| match kind {
            Kind::Sentiment if req.messages[1].content.contains("Rude") => {
                Err(InferError::Transient("HTTP 503: busy".into()))
            }
            Kind::Sentiment => Ok(sentiment_for(req)),
            Kind::Summary => Ok(SUMMARY.into()),
            Kind::Strengths => Ok(STRENGTHS.into()),
        },
        seen: Mutex::default(),
    };
    let outcomes = analyse_plan(&llm, &plan(), conduct(FollowUps::Concurrent), 3).await;
    let r = restaurant_results(key(), outcomes, coverage(), Sla::default());
    let failure = r.rows[0].outcome.as_ref().unwrap_err();
    assert_eq!(failure.class, ErrorClass::Transient);
    assert_eq!(failure.group, "request failed (transient)");
    assert!(failure.message.contains("503"), "{failure}");
    assert!(r.rows[1].outcome.is_ok() && r.rows[2].outcome.is_ok());
    let strengths = r.rows[2].outcome.as_ref().unwrap();
    assert_eq!(strengths["strengths"][0]["evidence"][0]["review_id"], "rv0");
}

#[tokio::test]
async fn a_strength_quoted_from_a_review_labelled_negative_is_refused() {
    let llm = Scripted {
        script: |kind, _, req| match kind {
            Kind::Sentiment => Ok(labels_for(req, "negative")),
            Kind::Summary => Ok(SUMMARY.into()),
            Kind::Strengths => Ok(STRENGTHS.into()),
        },
        seen: Mutex::default(),
    };
    let outcomes = analyse_plan(&llm, &plan(), conduct(FollowUps::Concurrent), 3).await;
    let r = restaurant_results(key(), outcomes, coverage(), Sla::default());
    let failure = r.rows[2].outcome.as_ref().unwrap_err();
    assert_eq!(
        failure.group,
        "invalid output: strength cites a negative review"
    );
    let retry = &r.requests.last().unwrap();
    assert_eq!(
        (retry.kind, retry.attempt),
        (Kind::Strengths, 2),
        "the repair was asked for"
    );
}

#[test]
fn the_breaker_trips_after_restaurants_failing_only_for_request_errors_in_a_row() {
    let failed = |class| {
        let analyses = (0..3)
            .map(|_| crate::metrics::AnalysisMetrics {
                failure: Some(crate::domain::Failure {
                    class,
                    group: "g".into(),
                    message: "HTTP 503: down".into(),
                }),
                ..Default::default()
            })
            .collect();
        RestaurantResults {
            key: key(),
            rows: Vec::new(),
            analyses,
            requests: Vec::new(),
            sla: Sla::default(),
        }
    };
    let mut b = Breaker::new(3);
    b.restaurant(&failed(ErrorClass::Transient));
    b.restaurant(&failed(ErrorClass::InvalidOutput)); // the model answered: the fleet is up
    b.restaurant(&failed(ErrorClass::Transient));
    b.error("sqlite: disk I/O error");
    assert!(b.tripped.is_none());
    b.restaurant(&failed(ErrorClass::Permanent));
    let why = b.tripped.unwrap();
    assert!(
        why.starts_with("3 restaurants in a row") && why.contains("503"),
        "{why}"
    );
    let mut b = Breaker::new(8);
    b.error("the LLM server is not answering: no LLM endpoint answered GET /models");
    assert!(b.tripped.is_some(), "no server at all: at once");
}
