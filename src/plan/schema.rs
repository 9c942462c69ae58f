//! The JSON schemas sent with each request, specialised to the restaurant's reviews.

use serde_json::{json, Value};

use super::{Kind, ReviewRef};

/// Specialises a schema to this request's reviews, so constrained decoding cannot cite a review
/// that is not in the prompt: sentiment gets exactly one label per reference; strengths evidence becomes
/// one alternative per review whose `quote` must be one of that review's own sentences (verbatim
/// by construction; validate still checks it).
pub fn restrict_refs(schema: &Value, kind: Kind, refs: &[ReviewRef]) -> Value {
    let names: Vec<&str> = refs.iter().map(|r| r.reference.as_str()).collect();
    let mut s = schema.clone();
    match kind {
        Kind::Sentiment => {
            // One required property per reference, in order: constrained decoding then writes
            // each review's label exactly once, in order (vLLM's and llama.cpp's grammars both
            // emit required properties in the order listed).
            let label = s["$defs"]["label"].take();
            let props: serde_json::Map<String, Value> = names
                .iter()
                .map(|n| (n.to_string(), label.clone()))
                .collect();
            if let Some(o) = s.as_object_mut() {
                o.remove("$defs");
            }
            s["properties"] = Value::Object(props);
            s["required"] = json!(names);
            s["additionalProperties"] = json!(false);
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

/// The strengths schema without the evidence alternatives of `refs` (the reviews the sentiment
/// step labelled negative), so constrained decoding cannot quote a complaint as a strength. With
/// no review left to cite, the only answer is an empty list.
pub fn without_evidence_from(schema: &Value, refs: &[&str]) -> Value {
    let mut s = schema.clone();
    let evidence = &mut s["properties"]["strengths"]["items"]["properties"]["evidence"]["items"];
    if let Some(alts) = evidence["anyOf"].as_array_mut() {
        alts.retain(|a| {
            let r = a["properties"]["ref"]["const"].as_str().unwrap_or_default();
            !refs.contains(&r)
        });
        if alts.is_empty() {
            s["properties"]["strengths"]["maxItems"] = json!(0);
        }
    }
    s
}

/// Longest quote offered as evidence, in characters.
pub(crate) const MAX_QUOTE_CHARS: usize = 120;

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
