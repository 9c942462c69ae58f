//! validate: every answer is parsed against its schema (typed, unknown fields refused), checked
//! against its evidence (cited references must be among the prompt's reviews; quotes must occur
//! verbatim in the review they cite) and against its meaning (text that says something specific,
//! in the requested language; no strength cited from a review labelled negative). A reply cut at
//! `max_tokens` is a failure, never a result. The stored result names reviews by their real
//! `review_id`, not the prompt's `R1` references.

mod sentiment;
mod text;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use sentiment::{merge_sentiment, sentiment_labels, Aggregate, Label};

use crate::domain::{ErrorClass, Failure, Kind};
use crate::infer::Reply;
use crate::plan::ReviewRef;
use text::{in_language, same, specific, whole_sentences};

/// Why an answer is not a result. The variant is the failure's group in the run summary; the
/// message names the item, and is what the repair retry tells the model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("output cut at max_tokens (finish_reason=length)")]
    Cut,
    #[error("schema: {0}")]
    Schema(String),
    #[error("schema: no aspects")]
    NoAspects,
    #[error("evidence: cites {0:?}, which is not one of the reviews shown")]
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
    #[error("evidence: strength {title:?} cites {reference}, a review labelled negative: cite praise only")]
    NegativeEvidence { title: String, reference: String },
    #[error("content: {field} {text:?} has no words")]
    NoWords { field: String, text: String },
    #[error("content: {field} {text:?} is only a label or a field name: say something specific")]
    Placeholder { field: String, text: String },
    #[error("content: {field} lists the aspect names instead of saying what the reviews say")]
    PromptEcho { field: String },
    #[error("content: {field} repeats itself")]
    Repetition { field: String },
    #[error("content: strength {0:?} has a detail that only repeats its title")]
    DetailRepeatsTitle(String),
    #[error("content: aspects {0} and {1} have the same summary")]
    SameAspectSummaries(String, String),
    #[error("language: {field} is not in {expected}")]
    WrongLanguage { field: String, expected: String },
}

impl ValidationError {
    /// The run summary's name for this kind of failure.
    pub fn group(&self) -> &'static str {
        match self {
            Self::Cut => "invalid output: cut at max_tokens",
            Self::Schema(_) => "invalid output: schema",
            Self::NoAspects => "invalid output: no aspects",
            Self::UnknownRef(_) => "invalid output: cites a review not shown",
            Self::LabelledTwice(_) => "invalid output: review labelled twice",
            Self::Unlabelled(_) => "invalid output: review left unlabelled",
            Self::NoEvidence(_) => "invalid output: strength without evidence",
            Self::QuoteNotFound { .. } => "invalid output: quote not in the cited review",
            Self::NegativeEvidence { .. } => "invalid output: strength cites a negative review",
            Self::NoWords { .. } => "invalid output: text without words",
            Self::Placeholder { .. } => "invalid output: degenerate: label or field name",
            Self::PromptEcho { .. } => "invalid output: degenerate: echoes the prompt",
            Self::Repetition { .. } => "invalid output: degenerate: repetition",
            Self::DetailRepeatsTitle(_) => "invalid output: degenerate: detail repeats title",
            Self::SameAspectSummaries(..) => "invalid output: degenerate: identical aspects",
            Self::WrongLanguage { .. } => "invalid output: wrong language",
        }
    }

    /// The analysis failure, after its `repairs` were also invalid.
    pub fn failure(&self, repairs: u32) -> Failure {
        let message = match repairs {
            0 => self.to_string(),
            1 => format!("{self} (after 1 repair)"),
            n => format!("{self} (after {n} repairs)"),
        };
        Failure {
            class: ErrorClass::InvalidOutput,
            group: self.group().to_string(),
            message,
        }
    }
}

/// What an answer is checked against besides its own references.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    /// The language the prompt asked the text to be in ("Korean" or "English").
    pub language: &'a str,
    /// The sentiment step's label of each review, by review id, when it has one.
    pub labels: Option<&'a HashMap<String, Label>>,
    /// The instructions the model was given (the system text): an answer copying them says
    /// nothing about the restaurant.
    pub instructions: &'a str,
}

/// Aspects are an object keyed by aspect name, so no aspect can appear twice.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SummaryOut {
    pub summary: String,
    pub aspects: BTreeMap<AspectName, Aspect>,
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

/// What an empty strengths list says, stored with it.
pub const NO_STRENGTHS: &str = "No strength is praised by the reviewers.";

/// Checks a reply and returns the result to store (as JSON), or the reason it is invalid.
pub fn validate(
    kind: Kind,
    reply: &Reply,
    refs: &[ReviewRef],
    expect: Expect<'_>,
) -> Result<Value, ValidationError> {
    if reply.finish_reason.as_deref() == Some("length") {
        return Err(ValidationError::Cut);
    }
    let text = reply.content.trim();
    match kind {
        Kind::Sentiment => sentiment::sentiment(text, refs),
        Kind::Summary => summary(parse(text)?, expect),
        Kind::Strengths => strengths(parse(text)?, refs, expect),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, ValidationError> {
    serde_json::from_str(text).map_err(|e| ValidationError::Schema(e.to_string()))
}

fn review_ref<'a>(
    refs: &'a [ReviewRef],
    reference: &str,
) -> Result<&'a ReviewRef, ValidationError> {
    refs.iter()
        .find(|r| r.reference == reference)
        .ok_or_else(|| ValidationError::UnknownRef(reference.to_string()))
}

/// Says something specific, in the requested language.
fn prose(field: &str, text: &str, expect: Expect<'_>) -> Result<(), ValidationError> {
    specific(field, text)?;
    if text::copies(text, expect.instructions) {
        return Err(ValidationError::PromptEcho {
            field: field.to_string(),
        });
    }
    in_language(field, text, expect.language)
}

fn summary(mut o: SummaryOut, expect: Expect<'_>) -> Result<Value, ValidationError> {
    o.summary = whole_sentences(&o.summary);
    for a in o.aspects.values_mut() {
        a.summary = whole_sentences(&a.summary);
    }
    prose("summary", &o.summary, expect)?;
    if o.aspects.is_empty() {
        return Err(ValidationError::NoAspects);
    }
    let mut seen: Vec<(AspectName, &str)> = Vec::new();
    for (name, a) in &o.aspects {
        let field = format!("aspect {name:?} summary");
        prose(&field, &a.summary, expect)?;
        if let Some((other, _)) = seen.iter().find(|(_, s)| same(s, &a.summary)) {
            let n = |a: &AspectName| format!("{a:?}").to_lowercase();
            return Err(ValidationError::SameAspectSummaries(n(other), n(name)));
        }
        seen.push((*name, &a.summary));
    }
    Ok(json!(o))
}

fn strengths(
    o: StrengthsOut,
    refs: &[ReviewRef],
    expect: Expect<'_>,
) -> Result<Value, ValidationError> {
    if o.strengths.is_empty() {
        return Ok(json!({"strengths": [], "note": NO_STRENGTHS}));
    }
    let mut out = Vec::new();
    let mut quoted: Vec<(&str, &str)> = Vec::new();
    let mut dropped = Vec::new();
    for s in &o.strengths {
        let detail = whole_sentences(&s.detail);
        prose("strength title", &s.title, expect)?;
        prose("strength detail", &detail, expect)?;
        if same(&s.title, &detail) {
            return Err(ValidationError::DetailRepeatsTitle(s.title.clone()));
        }
        if s.evidence.is_empty() {
            return Err(ValidationError::NoEvidence(s.title.clone()));
        }
        let evidence = s
            .evidence
            .iter()
            .map(|e| evidence(s, e, refs, expect))
            .collect::<Result<Vec<_>, _>>()?;
        // A strength whose every quote an earlier one already cites has no evidence of its own:
        // it is left out (and counted), the earlier one kept.
        let reused = (s.evidence.iter()).all(|e| quoted.iter().any(|(_, q)| same(q, &e.quote)));
        if reused {
            dropped.push(s.title.trim().to_string());
            continue;
        }
        quoted.extend(
            s.evidence
                .iter()
                .map(|e| (s.title.as_str(), e.quote.as_str())),
        );
        out.push(json!({"title": s.title.trim(), "detail": detail, "evidence": evidence}));
    }
    if !dropped.is_empty() {
        return Ok(json!({ "strengths": out, "dropped_without_own_evidence": dropped }));
    }
    Ok(json!({ "strengths": out }))
}

/// One quote: verbatim in the review it cites, which the sentiment step did not label negative.
fn evidence(
    s: &StrengthOut,
    e: &EvidenceOut,
    refs: &[ReviewRef],
    expect: Expect<'_>,
) -> Result<Value, ValidationError> {
    let r = review_ref(refs, &e.reference)?;
    let quote = e.quote.trim();
    if quote.chars().count() < 2 || !contains_verbatim(&r.text, quote) {
        return Err(ValidationError::QuoteNotFound {
            quote: quote.to_string(),
            reference: e.reference.clone(),
            review_id: r.review_id.clone(),
        });
    }
    if expect.labels.and_then(|l| l.get(&r.review_id)) == Some(&Label::Negative) {
        return Err(ValidationError::NegativeEvidence {
            title: s.title.clone(),
            reference: e.reference.clone(),
        });
    }
    Ok(json!({"review_id": r.review_id, "quote": quote}))
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
                in_sample: true,
            },
            ReviewRef {
                reference: "R2".into(),
                review_id: "a-002".into(),
                text: "Rude staff, long wait.".into(),
                in_sample: false,
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

    fn ko() -> Expect<'static> {
        Expect {
            language: "Korean",
            labels: None,
            instructions: "You analyse customer reviews of one restaurant for a restaurant app.",
        }
    }

    #[test]
    fn an_answer_that_echoes_the_instructions_is_refused() {
        let echo = r#"{"summary":"You analyse customer reviews of one restaurant for a restaurant app.","aspects":{}}"#;
        let e = validate(
            Kind::Summary,
            &reply(echo),
            &refs(),
            Expect {
                language: "English",
                ..ko()
            },
        );
        assert_eq!(
            e.unwrap_err().group(),
            "invalid output: degenerate: echoes the prompt"
        );
        let own = r#"{"summary":"Reviewers praise the broth and find the restaurant app menu clear.","aspects":{"food":{"sentiment":"positive","summary":"The broth is praised."}}}"#;
        let ok = validate(
            Kind::Summary,
            &reply(own),
            &refs(),
            Expect {
                language: "English",
                ..ko()
            },
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    fn check(kind: Kind, s: &str) -> Result<Value, ValidationError> {
        validate(kind, &reply(s), &refs(), ko())
    }

    #[test]
    fn valid_sentiment_maps_refs_to_review_ids() {
        let v = check(Kind::Sentiment, r#"{"R1":"positive","R2":"negative"}"#).unwrap();
        assert_eq!(v["reviews"][1]["review_id"], "a-002");
        assert_eq!(v["reviews"][1]["in_sample"], false);
    }

    #[test]
    fn sentiment_must_cover_every_review_once() {
        assert_eq!(
            check(Kind::Sentiment, r#"{"R1":"positive"}"#).unwrap_err(),
            ValidationError::Unlabelled("R2".into())
        );
        assert_eq!(
            check(
                Kind::Sentiment,
                r#"{"R1":"positive","R1":"mixed","R2":"mixed"}"#
            )
            .unwrap_err(),
            ValidationError::LabelledTwice("R1".into())
        );
        let unknown = check(Kind::Sentiment, r#"{"R9":"positive"}"#).unwrap_err();
        assert!(unknown.to_string().contains("R9"));
        let bad_label = check(Kind::Sentiment, r#"{"R1":"great","R2":"mixed"}"#).unwrap_err();
        assert_eq!(bad_label.group(), "invalid output: schema");
    }

    #[test]
    fn cut_output_is_a_failure_even_if_it_parses() {
        let r = Reply {
            content: r#"{"summary":"국물이 좋아요","aspects":{"food":{"sentiment":"positive","summary":"진한 국물"}}}"#.into(),
            finish_reason: Some("length".into()),
            model: String::new(),
        };
        assert_eq!(
            validate(Kind::Summary, &r, &refs(), ko()).unwrap_err(),
            ValidationError::Cut
        );
    }

    #[test]
    fn unknown_fields_and_bad_enums_fail_the_schema() {
        let extra = r#"{"summary":"국물이 좋아요","aspects":{"food":{"sentiment":"positive","summary":"진한 국물"}},"x":1}"#;
        let bad = r#"{"summary":"국물이 좋아요","aspects":{"parking":{"sentiment":"positive","summary":"좋아요"}}}"#;
        for s in [extra, bad, "not json"] {
            assert!(
                check(Kind::Summary, s)
                    .unwrap_err()
                    .to_string()
                    .starts_with("schema:"),
                "{s}"
            );
        }
    }

    #[test]
    fn degenerate_summaries_are_not_results() {
        let cases = [
            (
                r#"{"summary":"...","aspects":{"food":{"sentiment":"positive","summary":"..."}}}"#,
                "invalid output: text without words",
            ),
            (
                r#"{"summary":"mixed","aspects":{"food":{"sentiment":"mixed","summary":"mixed"}}}"#,
                "invalid output: degenerate: label or field name",
            ),
            (
                r#"{"summary":"국물이 진하고 맛있어요","aspects":{"food":{"sentiment":"positive","summary":"맛있어요"},"service":{"sentiment":"positive","summary":"맛있어요"}}}"#,
                "invalid output: degenerate: identical aspects",
            ),
            (
                r#"{"summary":"The broth is rich","aspects":{"food":{"sentiment":"positive","summary":"진한 국물"}}}"#,
                "invalid output: wrong language",
            ),
        ];
        for (s, group) in cases {
            assert_eq!(check(Kind::Summary, s).unwrap_err().group(), group, "{s}");
        }
        let ok = r#"{"summary":"국물이 좋아요","aspects":{"food":{"sentiment":"positive","summary":"진한 국물"}}}"#;
        assert!(check(Kind::Summary, ok).is_ok());
    }

    #[test]
    fn quotes_must_be_verbatim_in_the_cited_review() {
        let ok = r#"{"strengths":[{"title":"국물","detail":"진한 국물이 좋다는 평","evidence":[{"ref":"R1","quote":"국물이 진하고 맛있어요. 또 올게요"}]}]}"#;
        let v = check(Kind::Strengths, ok).unwrap();
        assert_eq!(v["strengths"][0]["evidence"][0]["review_id"], "a-001");
        let wrong_review = r#"{"strengths":[{"title":"국물","detail":"진한 국물이 좋다는 평","evidence":[{"ref":"R2","quote":"국물이 진하고"}]}]}"#;
        assert!(check(Kind::Strengths, wrong_review)
            .unwrap_err()
            .to_string()
            .contains("does not occur in R2"));
        let invented = r#"{"strengths":[{"title":"국물","detail":"진한 국물이 좋다는 평","evidence":[{"ref":"R1","quote":"서울 최고의 국물"}]}]}"#;
        assert!(check(Kind::Strengths, invented).is_err());
    }

    #[test]
    fn no_strength_is_an_honest_answer_and_generic_or_negative_ones_are_not() {
        let none = check(Kind::Strengths, r#"{"strengths":[]}"#).unwrap();
        assert_eq!(none["note"], NO_STRENGTHS);
        let generic = r#"{"strengths":[{"title":"Strength 1","detail":"Strengths","evidence":[{"ref":"R1","quote":"또 올게요"}]}]}"#;
        assert_eq!(
            check(Kind::Strengths, generic).unwrap_err().group(),
            "invalid output: degenerate: label or field name"
        );
        let echo = r#"{"strengths":[{"title":"국물 맛","detail":"국물 맛","evidence":[{"ref":"R1","quote":"또 올게요"}]}]}"#;
        assert_eq!(
            check(Kind::Strengths, echo).unwrap_err().group(),
            "invalid output: degenerate: detail repeats title"
        );
        let reused = r#"{"strengths":[{"title":"국물","detail":"진한 국물이 좋다는 평","evidence":[{"ref":"R1","quote":"또 올게요"}]},{"title":"재방문","detail":"다시 오고 싶다는 손님","evidence":[{"ref":"R1","quote":"또 올게요"}]}]}"#;
        let kept = check(Kind::Strengths, reused).unwrap();
        assert_eq!(
            kept["strengths"].as_array().unwrap().len(),
            1,
            "the second has no evidence of its own"
        );
        assert_eq!(kept["dropped_without_own_evidence"][0], "재방문");
        let labels = HashMap::from([("a-001".to_string(), Label::Negative)]);
        let praise = r#"{"strengths":[{"title":"국물","detail":"진한 국물이 좋다는 평","evidence":[{"ref":"R1","quote":"또 올게요"}]}]}"#;
        let e = validate(
            Kind::Strengths,
            &reply(praise),
            &refs(),
            Expect {
                labels: Some(&labels),
                ..ko()
            },
        );
        assert_eq!(
            e.unwrap_err().group(),
            "invalid output: strength cites a negative review"
        );
    }
}
