//! plan: renders the three prompts of a restaurant from the files in `prompts/`.
//!
//! Every prompt is laid out so the three analyses share the longest possible prefix: the system
//! text, then the restaurant's selected reviews, then the task. vLLM's automatic prefix cache then
//! computes the shared block once. Each review is shown by a short reference (`[R1]`) that the
//! answers cite; the JSON schema sent with each request restricts `ref` to those references.

use std::path::PathBuf;

use serde::Serialize;
use serde_json::Value;

pub mod batch;
mod prompts;
pub mod schema;
pub mod tokens;

use crate::domain::{Kind, StoredReview};
pub use prompts::{PlanError, Prompts};
pub use schema::sentences;
pub use tokens::{estimate_tokens, TokenCounter};

/// The job file's `[plan]` section.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlanConfig {
    /// The served model's `tokenizer.json` (Hugging Face format): exact token counts for batching
    /// and scheduling. Unset: the documented estimate of [`estimate_tokens`].
    pub tokenizer: Option<PathBuf>,
    /// Most reviews one sentiment request labels.
    pub sentiment_batch_reviews: usize,
    /// Most review tokens one sentiment request labels.
    pub sentiment_batch_tokens: u64,
}

impl Default for PlanConfig {
    fn default() -> Self {
        Self {
            tokenizer: None,
            sentiment_batch_reviews: 16,
            sentiment_batch_tokens: 2048,
        }
    }
}

impl PlanConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.sentiment_batch_reviews == 0 || self.sentiment_batch_tokens == 0 {
            return Err(
                "plan.sentiment_batch_reviews and plan.sentiment_batch_tokens must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn limits(&self) -> BatchLimits {
        BatchLimits {
            reviews: self.sentiment_batch_reviews,
            tokens: self.sentiment_batch_tokens,
        }
    }
}

/// Output budget per analysis kind; a reply cut at this budget is a failure, never a result.
#[derive(Debug, Clone, Copy)]
pub struct MaxTokens {
    pub sentiment: u32,
    pub summary: u32,
    pub strengths: u32,
}

impl MaxTokens {
    pub fn of(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Sentiment => self.sentiment,
            Kind::Summary => self.summary,
            Kind::Strengths => self.strengths,
        }
    }
}

/// A selected review as the prompt shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReviewRef {
    /// `R1`, `R2`, … in prompt order.
    pub reference: String,
    pub review_id: String,
    pub text: String,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct PlannedRequest {
    pub kind: Kind,
    pub messages: Vec<Message>,
    /// JSON schema for `response_format`, with `ref` restricted to this restaurant's references.
    pub schema: Value,
    pub max_tokens: u32,
    /// The references this request answers for: a sentiment batch's own, else all of them.
    pub refs: Vec<ReviewRef>,
    /// Prompt tokens in all, and in the part every request of the restaurant shares.
    pub prompt_tokens: u64,
    pub prefix_tokens: u64,
}

/// The requests of one restaurant: its sentiment batches, then summary and strengths.
#[derive(Debug, Clone)]
pub struct RestaurantPlan {
    pub restaurant_id: String,
    pub requests: Vec<PlannedRequest>,
}

/// Sentiment batch limits (TEI-style: a count limit and a token limit, both kept).
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub reviews: usize,
    pub tokens: u64,
}

/// Renders plans: prompts, token counter, batch limits and output budgets together.
pub struct Planner {
    pub prompts: Prompts,
    pub counter: TokenCounter,
    pub limits: BatchLimits,
    pub max: MaxTokens,
}

impl Planner {
    /// Builds the plan from the selected reviews, in selection order.
    pub fn plan(&self, restaurant_id: &str, selected: &[StoredReview]) -> RestaurantPlan {
        let refs: Vec<ReviewRef> = selected
            .iter()
            .enumerate()
            .map(|(i, r)| ReviewRef {
                reference: format!("R{}", i + 1),
                review_id: r.review_id.clone(),
                text: r.text.clone(),
            })
            .collect();
        let shared = Shared::new(self, &refs, language_of(selected));
        let sizes: Vec<u64> = refs.iter().map(|r| self.counter.count(&r.text)).collect();
        let sentiment_groups = batch::pack(&sizes, self.limits)
            .iter()
            .map(|b| b.iter().map(|&i| refs[i].clone()).collect())
            .collect::<Vec<Vec<ReviewRef>>>();
        let mut requests: Vec<PlannedRequest> = sentiment_groups
            .into_iter()
            .map(|g| self.request(Kind::Sentiment, g, &shared))
            .collect();
        for kind in [Kind::Summary, Kind::Strengths] {
            requests.push(self.request(kind, refs.clone(), &shared));
        }
        RestaurantPlan {
            restaurant_id: restaurant_id.to_string(),
            requests,
        }
    }

    /// One request: the shared prefix, then this kind's task over `group`.
    fn request(&self, kind: Kind, group: Vec<ReviewRef>, shared: &Shared<'_>) -> PlannedRequest {
        let p = &self.prompts;
        let names: Vec<&str> = group.iter().map(|r| r.reference.as_str()).collect();
        let task = p.tasks[kind as usize]
            .replace("{{n}}", &group.len().to_string())
            .replace("{{refs}}", &names.join(", "))
            .replace("{{language}}", shared.language);
        let task = format!("\n{}", task.trim());
        PlannedRequest {
            kind,
            messages: vec![
                Message {
                    role: "system",
                    content: p.system.clone(),
                },
                Message {
                    role: "user",
                    content: format!("{}{task}", shared.reviews),
                },
            ],
            schema: schema::restrict_refs(&p.schemas[kind as usize], kind, &group),
            max_tokens: self.max.of(kind),
            refs: group,
            prompt_tokens: shared.tokens + self.counter.count(&task),
            prefix_tokens: shared.tokens,
        }
    }
}

/// What every request of a restaurant starts with.
struct Shared<'a> {
    /// The reviews block of the user message, one line per review.
    reviews: String,
    /// Tokens of the system text and the reviews block.
    tokens: u64,
    language: &'a str,
}

impl<'a> Shared<'a> {
    fn new(planner: &Planner, refs: &[ReviewRef], language: &'a str) -> Self {
        let mut reviews = format!("Reviews ({}):\n", refs.len());
        for r in refs {
            // One line per review keeps references unambiguous.
            reviews.push_str(&format!(
                "[{}] {}\n",
                r.reference,
                r.text.replace(['\n', '\r'], " ")
            ));
        }
        let tokens =
            planner.counter.count(&planner.prompts.system) + planner.counter.count(&reviews);
        Self {
            reviews,
            tokens,
            language,
        }
    }
}

/// "Korean" when most selected reviews are Korean (by their `lang`, else by Hangul in the text).
pub fn language_of(reviews: &[StoredReview]) -> &'static str {
    let korean = reviews
        .iter()
        .filter(|r| match r.lang.as_deref() {
            Some(l) => l.starts_with("ko"),
            None => r.text.chars().any(is_hangul),
        })
        .count();
    if korean * 2 > reviews.len() {
        "Korean"
    } else {
        "English"
    }
}

pub fn is_hangul(c: char) -> bool {
    matches!(c, '\u{AC00}'..='\u{D7A3}' | '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn review(id: &str, text: &str, lang: &str) -> StoredReview {
        StoredReview {
            review_id: id.into(),
            text: text.into(),
            content_hash: String::new(),
            lang: Some(lang.into()),
            rating: None,
        }
    }

    fn planner(prompts: Prompts, batch_reviews: usize) -> Planner {
        Planner {
            prompts,
            counter: TokenCounter::Estimate,
            limits: BatchLimits {
                reviews: batch_reviews,
                tokens: 2048,
            },
            max: MaxTokens {
                sentiment: 100,
                summary: 200,
                strengths: 300,
            },
        }
    }

    fn plan() -> RestaurantPlan {
        let p = Prompts::load(Path::new("prompts")).unwrap();
        let reviews = [
            review("r-001", "국물이 진하고 맛있어요. 또 올게요!", "ko"),
            review("r-002", "Great galbi but the queue was\n40 minutes.", "en"),
            review("r-003", "직원분들이 친절해요", "ko"),
        ];
        planner(p, 16).plan("r", &reviews)
    }

    #[test]
    fn three_prompts_share_everything_but_the_task() {
        let plan = plan();
        let users: Vec<&str> = plan
            .requests
            .iter()
            .map(|r| r.messages[1].content.as_str())
            .collect();
        let common = users[0]
            .char_indices()
            .zip(users[1].chars())
            .take_while(|((_, a), b)| a == b)
            .count();
        let prefix: String = users[0].chars().take(common).collect();
        assert!(
            prefix.contains("[R3] 직원분들이 친절해요"),
            "the reviews are in the shared prefix"
        );
        assert!(users.iter().all(|u| u.starts_with(&prefix)));
        assert!(plan
            .requests
            .iter()
            .all(|r| r.messages[0] == plan.requests[0].messages[0]));
    }

    #[test]
    fn rendered_prompts_match_snapshot() {
        let plan = plan();
        for r in &plan.requests {
            insta::assert_snapshot!(format!("prompt_{}", r.kind.as_str()), r.messages[1].content);
        }
    }

    #[test]
    fn schema_restricts_refs_and_sentiment_count() {
        let plan = plan();
        let s = &plan.requests[0].schema;
        assert_eq!(
            s["properties"]["reviews"]["items"]["properties"]["ref"]["enum"],
            json!(["R1", "R2", "R3"])
        );
        assert_eq!(s["properties"]["reviews"]["minItems"], json!(3));
        let st = &plan.requests[2].schema;
        let alts =
            &st["properties"]["strengths"]["items"]["properties"]["evidence"]["items"]["anyOf"];
        assert_eq!(alts[1]["properties"]["ref"]["const"], json!("R2"));
        assert_eq!(
            alts[1]["properties"]["quote"]["enum"],
            json!(["Great galbi but the queue was", "40 minutes."])
        );
    }

    #[test]
    fn sentences_are_verbatim_pieces() {
        let t = "국물이 진해요! 또 올게요. Staff were kind?  ok";
        let s = sentences(t);
        assert_eq!(
            s,
            ["국물이 진해요!", "또 올게요.", "Staff were kind?", "ok"]
        );
        assert!(s.iter().all(|p| t.contains(p.as_str())));
        let long = "가".repeat(400);
        assert_eq!(sentences(&long)[0].chars().count(), schema::MAX_QUOTE_CHARS);
    }

    #[test]
    fn language_follows_the_majority() {
        let plan = plan();
        assert!(plan.requests[1].messages[1].content.contains("in Korean"));
        assert_eq!(language_of(&[review("a", "good", "en")]), "English");
    }

    #[test]
    fn sentiment_is_batched_and_every_request_shares_the_prefix() {
        let p = Prompts::load(Path::new("prompts")).unwrap();
        let reviews: Vec<StoredReview> = (0..5)
            .map(|i| review(&format!("r-{i}"), &"good soup ".repeat(i + 1), "en"))
            .collect();
        let plan = planner(p, 2).plan("r", &reviews);
        let kinds: Vec<&str> = plan.requests.iter().map(|r| r.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "sentiment",
                "sentiment",
                "sentiment",
                "summary",
                "strengths"
            ]
        );
        let labelled: Vec<&str> = plan.requests[..3]
            .iter()
            .flat_map(|r| r.refs.iter().map(|x| x.reference.as_str()))
            .collect();
        assert_eq!(labelled.len(), 5);
        for r in &plan.requests[..3] {
            let names: Vec<&str> = r.refs.iter().map(|x| x.reference.as_str()).collect();
            assert!(r.messages[1].content.contains(&names.join(", ")));
            assert_eq!(
                r.schema["properties"]["reviews"]["minItems"],
                json!(r.refs.len())
            );
        }
        let prefix = plan.requests[0].messages[1]
            .content
            .split("\nTask")
            .next()
            .unwrap();
        assert!(plan
            .requests
            .iter()
            .all(|r| r.messages[1].content.starts_with(prefix)));
        assert!(plan
            .requests
            .iter()
            .all(|r| r.prefix_tokens < r.prompt_tokens));
    }
}
