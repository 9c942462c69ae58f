//! palate's JSON schemas under the grammar engines that enforce them during decoding: llguidance
//! (one of vLLM's two structured-output engines, through `scripts/check_grammar.py`) and
//! llama.cpp's own JSON-schema grammar (through its real server). Each review must be labelled
//! exactly once and in order, each aspect at most once, and each quote must be one of the cited
//! review's own sentences.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Command;

use palate::domain::Kind;
use palate::plan::RestaurantPlan;
use serde_json::{json, Value};

fn plan() -> RestaurantPlan {
    common::plan_of(&[
        "Great broth. Will come back.",
        "Rude staff, cold mandu.",
        "국물이 진하고 맛있어요. 또 올게요!",
    ])
}

fn schema(kind: Kind) -> Value {
    let p = plan();
    p.requests
        .iter()
        .find(|r| r.kind == kind)
        .unwrap()
        .schema
        .clone()
}

/// `scripts/check_grammar.py`'s verdict on each answer; `None` (with a printed reason) where
/// llguidance is not installed (`scripts/setup.sh llm` installs it).
fn llguidance(schema: &Value, answers: &[&str]) -> Option<Vec<bool>> {
    let python = common::cache().join("llm/venv/bin/python");
    let has = Command::new(&python)
        .args(["-c", "import llguidance"])
        .output();
    if !has.is_ok_and(|o| o.status.success()) {
        println!(
            "skipped: llguidance is not installed in {} (run scripts/setup.sh llm)",
            python.display()
        );
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("schema.json");
    std::fs::write(&path, schema.to_string()).unwrap();
    let out = Command::new(&python)
        .arg(common::root().join("scripts/check_grammar.py"))
        .arg(&path)
        .args(answers)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verdicts: Vec<bool> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l == "accept")
        .collect();
    assert_eq!(verdicts.len(), answers.len());
    Some(verdicts)
}

#[test]
fn llguidance_holds_sentiment_to_one_label_per_review_in_order() {
    let s = schema(Kind::Sentiment);
    let answers = [
        r#"{"R1":"positive","R2":"negative","R3":"positive"}"#,
        r#"{"R1": "mixed", "R2": "neutral", "R3": "negative"}"#,
        r#"{"R2":"negative","R1":"positive","R3":"positive"}"#,
        r#"{"R1":"positive","R3":"positive"}"#,
        r#"{"R1":"positive","R1":"mixed","R2":"negative","R3":"positive"}"#,
        r#"{"R1":"positive","R2":"negative","R3":"positive","R4":"mixed"}"#,
        r#"{"R1":"great","R2":"negative","R3":"positive"}"#,
    ];
    let Some(v) = llguidance(&s, &answers) else {
        return;
    };
    assert_eq!(v, [true, true, false, false, false, false, false], "{s}");
}

#[test]
fn llguidance_holds_aspects_once_and_quotes_to_the_cited_reviews_sentences() {
    let summary = schema(Kind::Summary);
    let answers = [
        r#"{"summary":"Rich broth, rude staff.","aspects":{"food":{"sentiment":"positive","summary":"Rich broth"},"service":{"sentiment":"negative","summary":"Rude staff"}}}"#,
        r#"{"summary":"Rich broth.","aspects":{"food":{"sentiment":"positive","summary":"Rich"},"food":{"sentiment":"mixed","summary":"Cold"}}}"#,
        r#"{"summary":"Rich broth.","aspects":{"parking":{"sentiment":"positive","summary":"Easy"}}}"#,
    ];
    let Some(v) = llguidance(&summary, &answers) else {
        return;
    };
    assert_eq!(v, [true, false, false], "{summary}");

    let strengths = schema(Kind::Strengths);
    let answers = [
        r#"{"strengths":[{"title":"Broth","detail":"Guests praise the broth.","evidence":[{"ref":"R1","quote":"Great broth."}]}]}"#,
        r#"{"strengths":[]}"#,
        r#"{"strengths":[{"title":"Broth","detail":"Guests praise the broth.","evidence":[{"ref":"R2","quote":"Great broth."}]}]}"#,
        r#"{"strengths":[{"title":"Broth","detail":"Guests praise the broth.","evidence":[{"ref":"R1","quote":"Best broth in town"}]}]}"#,
    ];
    let Some(v) = llguidance(&strengths, &answers) else {
        return;
    };
    assert_eq!(v, [true, true, false, false], "{}", json!(strengths));
}

/// The positions of `"R1"`, `"R2"`, … in a raw answer (a parsed map would lose their order).
fn key_positions(raw: &str, n: usize) -> Vec<Option<usize>> {
    (1..=n).map(|i| raw.find(&format!("\"R{i}\""))).collect()
}

#[test]
fn llama_cpp_decodes_sentiment_with_every_reference_once_in_order() {
    let server = common::LlamaServer::start();
    let p = plan();
    let req = p
        .requests
        .iter()
        .find(|r| r.kind == Kind::Sentiment)
        .unwrap();
    let body = json!({
        "model": "smollm2",
        "messages": req.messages,
        "max_tokens": 200,
        "temperature": 0.0,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "sentiment", "schema": req.schema, "strict": true}}
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply: Value = rt.block_on(async {
        let url = format!("{}/chat/completions", server.base_url);
        let r = reqwest::Client::new()
            .post(url)
            .json(&body)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    });
    let raw = reply["choices"][0]["message"]["content"].as_str().unwrap();
    let at = key_positions(raw, 3);
    assert!(
        at.iter().all(Option::is_some),
        "every reference labelled: {raw}"
    );
    assert!(at.windows(2).all(|w| w[0] < w[1]), "in order: {raw}");
    for i in 1..=3 {
        assert_eq!(raw.matches(&format!("\"R{i}\"")).count(), 1, "once: {raw}");
    }
    let v: Value = serde_json::from_str(raw).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 3, "nothing else: {raw}");
}
