//! plan: renders the three prompts of a restaurant from the files in `prompts/`.
//!
//! Every prompt is laid out so the three analyses share the longest possible prefix: the system
//! text, then the restaurant's selected reviews, then the task. vLLM's automatic prefix cache then
//! computes the shared block once. Each review is shown by a short reference (`[R1]`) that the
//! answers cite; the JSON schema sent with each request restricts `ref` to those references.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::MaxTokens;
use crate::store::reviews::{hex, StoredReview};

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
    /// Estimated prompt tokens (see [`estimate_tokens`]).
    pub est_prompt_tokens: u64,
}

/// The three requests of one restaurant.
#[derive(Debug, Clone)]
pub struct RestaurantPlan {
    pub restaurant_id: String,
    pub refs: Vec<ReviewRef>,
    pub requests: Vec<PlannedRequest>,
}

/// Builds the plan from the selected reviews, in selection order.
pub fn plan_restaurant(
    p: &Prompts,
    restaurant_id: &str,
    selected: &[StoredReview],
    max: MaxTokens,
) -> RestaurantPlan {
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
    let requests = Kind::ALL
        .iter()
        .map(|&kind| {
            let task = p.tasks[kind as usize]
                .replace("{{n}}", &refs.len().to_string())
                .replace("{{language}}", language);
            let user = format!("{shared}\n{}", task.trim());
            let est = estimate_tokens(&p.system) + estimate_tokens(&user);
            PlannedRequest {
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
                schema: restrict_refs(&p.schemas[kind as usize], kind, &refs),
                max_tokens: match kind {
                    Kind::Sentiment => max.sentiment,
                    Kind::Summary => max.summary,
                    Kind::Strengths => max.strengths,
                },
                est_prompt_tokens: est,
            }
        })
        .collect();
    RestaurantPlan {
        restaurant_id: restaurant_id.to_string(),
        refs,
        requests,
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

/// Token estimate used where the model's tokenizer is not at hand: ASCII text at ~4 bytes a token,
/// other characters (Hangul) at ~1.5 tokens each, as small BPE vocabularies split them.
pub fn estimate_tokens(text: &str) -> u64 {
    let (ascii, other) = text.chars().fold((0u64, 0u64), |(a, o), c| {
        if c.is_ascii() {
            (a + 1, o)
        } else {
            (a, o + 1)
        }
    });
    ascii.div_ceil(4) + (other * 3).div_ceil(2)
}

/// Specialises a schema to this restaurant, so constrained decoding cannot cite a review that is
/// not in the prompt: sentiment gets exactly one entry per reference; strengths evidence becomes
/// one alternative per review whose `quote` must be one of that review's own sentences (verbatim
/// by construction; validate still checks it).
fn restrict_refs(schema: &Value, kind: Kind, refs: &[ReviewRef]) -> Value {
    let names: Vec<&str> = refs.iter().map(|r| r.reference.as_str()).collect();
    let mut s = schema.clone();
    match kind {
        Kind::Sentiment => {
            let reviews = &mut s["properties"]["reviews"];
            reviews["items"]["properties"]["ref"]["enum"] = json!(names);
            reviews["minItems"] = json!(refs.len());
            reviews["maxItems"] = json!(refs.len());
        }
        Kind::Strengths => {
            let per_review: Vec<Value> = refs
                .iter()
                .map(|r| {
                    json!({
                        "type": "object",
                        "properties": {"ref": {"const": r.reference}, "quote": {"enum": sentences(&r.text)}},
                        "required": ["ref", "quote"],
                        "additionalProperties": false
                    })
                })
                .collect();
            s["properties"]["strengths"]["items"]["properties"]["evidence"]["items"] =
                json!({"anyOf": per_review});
        }
        Kind::Summary => {}
    }
    s
}

/// Longest quote offered as evidence, in characters.
const MAX_QUOTE_CHARS: usize = 120;

/// A review's sentences (split after . ! ? and line breaks), each cut to [`MAX_QUOTE_CHARS`];
/// every one is a verbatim substring of the review.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut start = 0;
    let mut push = |piece: &str| {
        let p: String = piece.trim().chars().take(MAX_QUOTE_CHARS).collect();
        let p = p.trim().to_string();
        if p.chars().count() >= 2 && !out.contains(&p) {
            out.push(p);
        }
    };
    for (i, c) in text.char_indices() {
        if matches!(c, '.' | '!' | '?' | '\n' | '。') {
            let end = i + c.len_utf8();
            push(&text[start..end]);
            start = end;
        }
    }
    push(&text[start..]);
    if out.is_empty() {
        out.push(text.trim().chars().take(MAX_QUOTE_CHARS).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(id: &str, text: &str, lang: &str) -> StoredReview {
        StoredReview {
            review_id: id.into(),
            text: text.into(),
            content_hash: String::new(),
            lang: Some(lang.into()),
            rating: None,
        }
    }

    fn plan() -> RestaurantPlan {
        let p = Prompts::load(Path::new("prompts")).unwrap();
        let reviews = [
            review("r-001", "국물이 진하고 맛있어요. 또 올게요!", "ko"),
            review("r-002", "Great galbi but the queue was\n40 minutes.", "en"),
            review("r-003", "직원분들이 친절해요", "ko"),
        ];
        plan_restaurant(
            &p,
            "r",
            &reviews,
            MaxTokens {
                sentiment: 100,
                summary: 200,
                strengths: 300,
            },
        )
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
        assert_eq!(sentences(&long)[0].chars().count(), MAX_QUOTE_CHARS);
    }

    #[test]
    fn language_follows_the_majority() {
        let plan = plan();
        assert!(plan.requests[1].messages[1].content.contains("in Korean"));
        assert_eq!(language_of(&[review("a", "good", "en")]), "English");
    }

    #[test]
    fn token_estimate_counts_hangul_heavier() {
        assert_eq!(estimate_tokens("abcdefgh"), 2);
        assert_eq!(estimate_tokens("맛있어요"), 6);
    }
}
