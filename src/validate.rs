//! validate: every answer is parsed against its schema (typed, unknown fields refused), checked
//! against its evidence (cited references must be among the selected reviews; quotes must occur
//! verbatim in the review they cite) and a reply cut at `max_tokens` is a failure, never a result.
//! The stored result names reviews by their real `review_id`, not the prompt's `R1` references.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{ErrorClass, Failure, Kind};
use crate::infer::Reply;
use crate::plan::ReviewRef;

/// Why an answer is not a result. The variant is the failure's group in the run summary; the
/// message names the item, and is what the repair retry tells the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("output cut at max_tokens (finish_reason=length)")]
    Cut,
    #[error("schema: {0}")]
    Schema(String),
    #[error("schema: score {0} is outside -1 to 1")]
    ScoreRange(f64),
    #[error("schema: no aspects")]
    NoAspects,
    #[error("schema: no strengths")]
    NoStrengths,
    #[error("evidence: cites {0:?}, which is not one of the selected reviews")]
    UnknownRef(String),
    #[error("evidence: {0} is labelled twice")]
    LabelledTwice(String),
    #[error("evidence: no label for {0}")]
    Unlabelled(String),
    #[error("evidence: strength {0:?} cites no review")]
    NoEvidence(String),
    #[error("evidence: quote {quote:?} does not occur in {reference} ({review_id})")]
    QuoteNotFound {
        quote: String,
        reference: String,
        review_id: String,
    },
    #[error("content: {field} {text:?} has no words")]
    NoWords { field: String, text: String },
}

impl ValidationError {
    /// The run summary's name for this kind of failure.
    pub fn group(&self) -> &'static str {
        match self {
            Self::Cut => "invalid output: cut at max_tokens",
            Self::Schema(_) => "invalid output: schema",
            Self::ScoreRange(_) => "invalid output: score outside -1 to 1",
            Self::NoAspects => "invalid output: no aspects",
            Self::NoStrengths => "invalid output: no strengths",
            Self::UnknownRef(_) => "invalid output: cites a review not selected",
            Self::LabelledTwice(_) => "invalid output: review labelled twice",
            Self::Unlabelled(_) => "invalid output: review left unlabelled",
            Self::NoEvidence(_) => "invalid output: strength without evidence",
            Self::QuoteNotFound { .. } => "invalid output: quote not in the cited review",
            Self::NoWords { .. } => "invalid output: text without words",
        }
    }

    /// The analysis failure, after the repair retry was also invalid.
    pub fn failure(&self) -> Failure {
        Failure {
            class: ErrorClass::InvalidOutput,
            group: self.group().to_string(),
            message: format!("{self} (after one repair retry)"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Positive,
    Negative,
    Mixed,
    Neutral,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SentimentOut {
    reviews: Vec<ReviewSentimentOut>,
    overall: Overall,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewSentimentOut {
    #[serde(rename = "ref")]
    reference: String,
    label: Label,
    score: f64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Overall {
    pub label: Label,
    pub score: f64,
}

/// Aspects are an object keyed by aspect name, so no aspect can appear twice.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryOut {
    pub summary: String,
    pub aspects: std::collections::BTreeMap<AspectName, Aspect>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Aspect {
    pub sentiment: Label,
    pub summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AspectName {
    Food,
    Service,
    Price,
    Ambience,
    Wait,
    Cleanliness,
    Portion,
    Location,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StrengthsOut {
    strengths: Vec<StrengthOut>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StrengthOut {
    title: String,
    detail: String,
    evidence: Vec<EvidenceOut>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EvidenceOut {
    #[serde(rename = "ref")]
    reference: String,
    quote: String,
}

/// Checks a reply and returns the result to store (as JSON), or the reason it is invalid.
pub fn validate(kind: Kind, reply: &Reply, refs: &[ReviewRef]) -> Result<Value, ValidationError> {
    if reply.finish_reason.as_deref() == Some("length") {
        return Err(ValidationError::Cut);
    }
    let text = reply.content.trim();
    let out = match kind {
        Kind::Sentiment => sentiment(parse(text)?, refs)?,
        Kind::Summary => summary(parse(text)?)?,
        Kind::Strengths => strengths(parse(text)?, refs)?,
    };
    Ok(out)
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, ValidationError> {
    serde_json::from_str(text).map_err(|e| ValidationError::Schema(e.to_string()))
}

fn review_id<'a>(refs: &'a [ReviewRef], reference: &str) -> Result<&'a ReviewRef, ValidationError> {
    refs.iter()
        .find(|r| r.reference == reference)
        .ok_or_else(|| ValidationError::UnknownRef(reference.to_string()))
}

fn score(s: f64) -> Result<f64, ValidationError> {
    if (-1.0..=1.0).contains(&s) {
        Ok(s)
    } else {
        Err(ValidationError::ScoreRange(s))
    }
}

fn sentiment(o: SentimentOut, refs: &[ReviewRef]) -> Result<Value, ValidationError> {
    let mut seen = HashSet::new();
    let mut reviews = Vec::new();
    for r in &o.reviews {
        let rr = review_id(refs, &r.reference)?;
        if !seen.insert(r.reference.as_str()) {
            return Err(ValidationError::LabelledTwice(r.reference.clone()));
        }
        reviews.push(serde_json::json!({"review_id": rr.review_id, "label": r.label, "score": score(r.score)?}));
    }
    if let Some(missing) = refs.iter().find(|r| !seen.contains(r.reference.as_str())) {
        return Err(ValidationError::Unlabelled(missing.reference.clone()));
    }
    score(o.overall.score)?;
    Ok(serde_json::json!({"reviews": reviews, "overall": o.overall}))
}

/// Joins validated sentiment results of a restaurant's batches into one: every review's label in
/// batch order, and an overall score that is the mean of the batches' (each saw every review),
/// with the label most batches gave (ties: the earliest batch's).
pub fn merge_sentiment(parts: Vec<Value>) -> Value {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    let mut reviews = Vec::new();
    let mut scores = Vec::new();
    let mut labels: Vec<Value> = Vec::new();
    for mut p in parts {
        if let Value::Array(r) = p["reviews"].take() {
            reviews.extend(r);
        }
        scores.extend(p["overall"]["score"].as_f64());
        labels.push(p["overall"]["label"].take());
    }
    let label = labels
        .iter()
        .max_by_key(|l| {
            let n = labels.iter().filter(|x| x == l).count();
            let first = labels.iter().position(|x| x == *l).unwrap_or(0);
            (n, std::cmp::Reverse(first))
        })
        .cloned()
        .unwrap_or_default();
    let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
    serde_json::json!({"reviews": reviews, "overall": {"label": label, "score": (mean * 1000.0).round() / 1000.0}})
}

/// Text must say something: not empty, not a placeholder such as "..." copied from a format hint.
fn words(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.chars().filter(|c| c.is_alphabetic()).count() < 2 {
        return Err(ValidationError::NoWords {
            field: field.to_string(),
            text: text.to_string(),
        });
    }
    Ok(())
}

fn summary(o: SummaryOut) -> Result<Value, ValidationError> {
    words("summary", &o.summary)?;
    if o.aspects.is_empty() {
        return Err(ValidationError::NoAspects);
    }
    for (name, a) in &o.aspects {
        words(&format!("aspect {name:?} summary"), &a.summary)?;
    }
    Ok(serde_json::json!(o))
}

fn strengths(o: StrengthsOut, refs: &[ReviewRef]) -> Result<Value, ValidationError> {
    if o.strengths.is_empty() {
        return Err(ValidationError::NoStrengths);
    }
    let mut out = Vec::new();
    for s in &o.strengths {
        words("strength title", &s.title)?;
        words("strength detail", &s.detail)?;
        if s.evidence.is_empty() {
            return Err(ValidationError::NoEvidence(s.title.clone()));
        }
        let mut evidence = Vec::new();
        for e in &s.evidence {
            let r = review_id(refs, &e.reference)?;
            let quote = e.quote.trim();
            if quote.chars().count() < 2 || !contains_verbatim(&r.text, quote) {
                return Err(ValidationError::QuoteNotFound {
                    quote: quote.to_string(),
                    reference: e.reference.clone(),
                    review_id: r.review_id.clone(),
                });
            }
            evidence.push(serde_json::json!({"review_id": r.review_id, "quote": quote}));
        }
        out.push(serde_json::json!({"title": s.title.trim(), "detail": s.detail.trim(), "evidence": evidence}));
    }
    Ok(serde_json::json!({"strengths": out}))
}

/// Verbatim containment; runs of whitespace count as one space (the prompt shows each review on
/// one line, so a quote spanning a line break is still the reviewer's words).
pub fn contains_verbatim(text: &str, quote: &str) -> bool {
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    squash(text).contains(&squash(quote))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs() -> Vec<ReviewRef> {
        vec![
            ReviewRef {
                reference: "R1".into(),
                review_id: "a-001".into(),
                text: "국물이 진하고 맛있어요.\n또 올게요".into(),
            },
            ReviewRef {
                reference: "R2".into(),
                review_id: "a-002".into(),
                text: "Rude staff, long wait.".into(),
            },
        ]
    }

    fn reply(s: &str) -> Reply {
        Reply {
            content: s.into(),
            finish_reason: Some("stop".into()),
            model: String::new(),
        }
    }

    #[test]
    fn valid_sentiment_maps_refs_to_review_ids() {
        let v = validate(
            Kind::Sentiment,
            &reply(r#"{"reviews":[{"ref":"R1","label":"positive","score":0.9},{"ref":"R2","label":"negative","score":-0.7}],"overall":{"label":"mixed","score":0.1}}"#),
            &refs(),
        )
        .unwrap();
        assert_eq!(v["reviews"][1]["review_id"], "a-002");
    }

    #[test]
    fn sentiment_must_cover_every_review_once() {
        let one = r#"{"reviews":[{"ref":"R1","label":"positive","score":0.9}],"overall":{"label":"mixed","score":0.1}}"#;
        assert_eq!(
            validate(Kind::Sentiment, &reply(one), &refs()).unwrap_err(),
            ValidationError::Unlabelled("R2".into())
        );
        let unknown = r#"{"reviews":[{"ref":"R9","label":"positive","score":0.9}],"overall":{"label":"mixed","score":0.1}}"#;
        assert!(validate(Kind::Sentiment, &reply(unknown), &refs())
            .unwrap_err()
            .to_string()
            .contains("R9"));
    }

    #[test]
    fn sentiment_batches_merge_into_one_result() {
        let a = serde_json::json!({"reviews": [{"review_id": "a", "label": "positive", "score": 0.8}],
                                   "overall": {"label": "positive", "score": 0.6}});
        let b = serde_json::json!({"reviews": [{"review_id": "b", "label": "negative", "score": -0.5}],
                                   "overall": {"label": "mixed", "score": 0.2}});
        let c = serde_json::json!({"reviews": [], "overall": {"label": "mixed", "score": 0.1}});
        let m = merge_sentiment(vec![a.clone(), b, c]);
        assert_eq!(m["reviews"].as_array().unwrap().len(), 2);
        assert_eq!(m["reviews"][1]["review_id"], "b");
        assert_eq!(m["overall"]["label"], "mixed");
        assert_eq!(m["overall"]["score"], 0.3);
        assert_eq!(merge_sentiment(vec![a.clone()]), a);
    }

    #[test]
    fn cut_output_is_a_failure_even_if_it_parses() {
        let r = Reply {
            content:
                r#"{"summary":"ok","aspects":{"food":{"sentiment":"positive","summary":"good"}}}"#
                    .into(),
            finish_reason: Some("length".into()),
            model: String::new(),
        };
        assert_eq!(
            validate(Kind::Summary, &r, &refs()).unwrap_err(),
            ValidationError::Cut
        );
    }

    #[test]
    fn unknown_fields_and_bad_enums_fail_the_schema() {
        let extra = r#"{"summary":"ok","aspects":{"food":{"sentiment":"positive","summary":"good"}},"x":1}"#;
        assert!(validate(Kind::Summary, &reply(extra), &refs())
            .unwrap_err()
            .to_string()
            .starts_with("schema:"));
        let bad =
            r#"{"summary":"ok","aspects":{"parking":{"sentiment":"positive","summary":"good"}}}"#;
        assert!(validate(Kind::Summary, &reply(bad), &refs())
            .unwrap_err()
            .to_string()
            .starts_with("schema:"));
        assert!(validate(Kind::Summary, &reply("not json"), &refs())
            .unwrap_err()
            .to_string()
            .starts_with("schema:"));
    }

    #[test]
    fn placeholder_text_is_not_a_result() {
        let dots =
            r#"{"summary":"...","aspects":{"food":{"sentiment":"positive","summary":"..."}}}"#;
        let e = validate(Kind::Summary, &reply(dots), &refs()).unwrap_err();
        assert!(e.to_string().contains("has no words"));
        assert_eq!(e.group(), "invalid output: text without words");
        let ok = r#"{"summary":"국물이 좋아요","aspects":{"food":{"sentiment":"positive","summary":"진한 국물"}}}"#;
        assert!(validate(Kind::Summary, &reply(ok), &refs()).is_ok());
    }

    #[test]
    fn quotes_must_be_verbatim_in_the_cited_review() {
        let ok = r#"{"strengths":[{"title":"국물","detail":"진한 국물","evidence":[{"ref":"R1","quote":"국물이 진하고 맛있어요. 또 올게요"}]}]}"#;
        let v = validate(Kind::Strengths, &reply(ok), &refs()).unwrap();
        assert_eq!(v["strengths"][0]["evidence"][0]["review_id"], "a-001");
        let wrong_review = r#"{"strengths":[{"title":"국물","detail":"진한 국물","evidence":[{"ref":"R2","quote":"국물이 진하고"}]}]}"#;
        assert!(validate(Kind::Strengths, &reply(wrong_review), &refs())
            .unwrap_err()
            .to_string()
            .contains("does not occur in R2"));
        let invented = r#"{"strengths":[{"title":"soup","detail":"great soup","evidence":[{"ref":"R1","quote":"best soup in Seoul"}]}]}"#;
        assert!(validate(Kind::Strengths, &reply(invented), &refs()).is_err());
    }
}
