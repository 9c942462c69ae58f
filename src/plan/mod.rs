//! plan: renders the three prompts of a restaurant from the files in `prompts/`.
//!
//! Every prompt is laid out so the three analyses share the longest possible prefix: the system
//! text, then the restaurant's selected reviews, then the task. vLLM's automatic prefix cache then
//! computes the shared block once. Each review is shown by a short reference (`[R1]`) that the
//! answers cite; the JSON schema sent with each request restricts `ref` to those references.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub mod batch;
pub mod schema;
pub mod tokens;

use crate::config::MaxTokens;
use crate::store::reviews::{hex, StoredReview};
pub use schema::sentences;
pub use tokens::{estimate_tokens, TokenCounter};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read prompt file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prompt schema {path} is not valid JSON: {source}")]
    Schema {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
}

/// The three analyses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Sentiment,
    Summary,
    Strengths,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Sentiment, Kind::Summary, Kind::Strengths];
    pub const NAMES: [&'static str; 3] = ["sentiment", "summary", "strengths"];

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// The prompt files, loaded once per run.
#[derive(Debug, Clone)]
pub struct Prompts {
    system: String,
    tasks: [String; 3],
    schemas: [Value; 3],
    /// First 16 hex digits of the sha256 over every prompt and schema file: results are
    /// versioned by it, so editing a prompt makes every restaurant current-less again.
    pub version: String,
}

impl Prompts {
    pub fn load(dir: &Path) -> Result<Self, PlanError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| PlanError::Read { path, source })
        };
        let mut h = Sha256::new();
        let system = read("system.md")?;
        h.update(system.as_bytes());
        let mut tasks: [String; 3] = Default::default();
        let mut schemas: [Value; 3] = Default::default();
        for k in Kind::ALL {
            let task = read(&format!("{}.md", k.as_str()))?;
            let schema_name = format!("{}.schema.json", k.as_str());
            let schema_text = read(&schema_name)?;
            h.update([0]);
            h.update(task.as_bytes());
            h.update([0]);
            h.update(schema_text.as_bytes());
            schemas[k as usize] =
                serde_json::from_str(&schema_text).map_err(|source| PlanError::Schema {
                    path: dir.join(&schema_name),
                    source,
                })?;
            tasks[k as usize] = task;
        }
        Ok(Self {
            system: system.trim().to_string(),
            tasks,
            schemas,
            version: hex(&h.finalize())[..16].to_string(),
        })
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
    pub refs: Vec<ReviewRef>,
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
        let p = &self.prompts;
        let refs: Vec<ReviewRef> = selected
            .iter()
            .enumerate()
            .map(|(i, r)| ReviewRef {
                reference: format!("R{}", i + 1),
                review_id: r.review_id.clone(),
                text: r.text.clone(),
            })
            .collect();
        let language = language_of(selected);
        let mut shared = format!("Reviews ({}):\n", refs.len());
        for r in &refs {
            // One line per review keeps references unambiguous.
            shared.push_str(&format!(
                "[{}] {}\n",
                r.reference,
                r.text.replace(['\n', '\r'], " ")
            ));
        }
        let prefix_tokens = self.counter.count(&p.system) + self.counter.count(&shared);
        let sizes: Vec<u64> = refs.iter().map(|r| self.counter.count(&r.text)).collect();
        let batches = batch::pack(&sizes, self.limits);
        let mut requests = Vec::new();
        for kind in Kind::ALL {
            let groups: Vec<Vec<ReviewRef>> = match kind {
                Kind::Sentiment => batches
                    .iter()
                    .map(|b| b.iter().map(|&i| refs[i].clone()).collect())
                    .collect(),
                _ => vec![refs.clone()],
            };
            for group in groups {
                let names: Vec<&str> = group.iter().map(|r| r.reference.as_str()).collect();
                let task = p.tasks[kind as usize]
                    .replace("{{n}}", &group.len().to_string())
                    .replace("{{refs}}", &names.join(", "))
                    .replace("{{language}}", language);
                let task = format!("\n{}", task.trim());
                let user = format!("{shared}{task}");
                requests.push(PlannedRequest {
                    kind,
                    messages: vec![
                        Message {
                            role: "system",
                            content: p.system.clone(),
                        },
                        Message {
                            role: "user",
                            content: user,
                        },
                    ],
                    schema: schema::restrict_refs(&p.schemas[kind as usize], kind, &group),
                    max_tokens: match kind {
                        Kind::Sentiment => self.max.sentiment,
                        Kind::Summary => self.max.summary,
                        Kind::Strengths => self.max.strengths,
                    },
                    refs: group,
                    prompt_tokens: prefix_tokens + self.counter.count(&task),
                    prefix_tokens,
                });
            }
        }
        RestaurantPlan {
            restaurant_id: restaurant_id.to_string(),
            refs,
            requests,
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
