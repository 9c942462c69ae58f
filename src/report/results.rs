//! The results page (`palate report --results FILE`): one self-contained HTML page (inline CSS, no
//! script, nothing fetched) with a card per restaurant that has results, in id order: its review
//! count; the sentiment mix as a stacked bar ([`mix`]); the summary and its aspects; the
//! strengths, each evidence quote marked inside the full text of the review it cites
//! ([`highlight`]); and the analyses that failed, with their reasons. Each card shows the newest
//! valid result of each kind, else that kind's latest failure.
//!
//! Results are read as they are stored, tolerantly: a missing or mistyped field leaves its part
//! out, and never stops the page.

mod highlight;
mod mix;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;

use serde_json::Value;

use crate::domain::{Kind, ResultStatus};
use crate::store::{CardResult, CardRow, Db, StoreError};
use highlight::{esc, highlight};
use mix::{bar, Mix};

/// The bar's colour per sentiment label, in stacking order; the rendering test looks for each.
pub const SENTIMENT_COLORS: [(&str, &str); 4] = [
    ("positive", "#2e7d32"),
    ("mixed", "#f2a900"),
    ("neutral", "#78909c"),
    ("negative", "#c62828"),
];

/// The background of a marked evidence quote.
pub const MARK_COLOR: &str = "#ffe45c";

/// Restaurants read from the store per query.
const PAGE: usize = 50;

/// The sentence shown for an empty strengths list that has no `note`.
pub const NO_STRENGTHS: &str = "No strength is praised by the reviewers.";

#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the results page: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes the page for the first `limit` restaurants with results, card by card (memory stays
/// that of one page of [`PAGE`] restaurants); returns (shown, restaurants with results).
pub fn write_page(db: &Db, limit: usize, out: &mut impl Write) -> Result<(u64, u64), PageError> {
    let total = db.card_count()?;
    let shown = total.min(limit as u64);
    out.write_all(head(shown, total, db.restaurant_count()?).as_bytes())?;
    let mut after: Option<String> = None;
    let mut left = limit;
    while left > 0 {
        let want = left.min(PAGE);
        let rows = db.cards_after(after.as_deref(), want)?;
        for row in &rows {
            let texts = db.review_texts(&row.restaurant_id, &cited(row))?;
            out.write_all(card(row, &texts).as_bytes())?;
        }
        left -= rows.len();
        match rows.last() {
            Some(last) if rows.len() == want => after = Some(last.restaurant_id.clone()),
            _ => break,
        }
    }
    out.write_all(b"</main></body></html>\n")?;
    Ok((shown, total))
}

/// The ids of the reviews a card's strengths cite.
fn cited(row: &CardRow) -> Vec<&str> {
    let strengths = row
        .results
        .iter()
        .find(|r| r.kind == Kind::Strengths)
        .and_then(|r| r.result.as_ref())
        .and_then(|v| v.get("strengths"))
        .and_then(Value::as_array);
    strengths
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("evidence").and_then(Value::as_array))
        .flatten()
        .filter_map(|e| e.get("review_id").and_then(Value::as_str))
        .collect()
}

/// What a valid result whose stored JSON does not parse is read as.
static NULL: Value = Value::Null;

/// One restaurant's card; `texts` are the cited reviews' texts by id.
pub fn card(row: &CardRow, texts: &HashMap<String, String>) -> String {
    let count = row.review_count.map_or("review count unknown".into(), |n| {
        format!("{n} review{}", if n == 1 { "" } else { "s" })
    });
    let mut html = format!(
        "<article class=\"card\">\n<header><h2>{}</h2><span class=\"count\">{count}</span></header>\n",
        esc(&row.restaurant_id)
    );
    let valid = |kind: Kind| {
        row.results
            .iter()
            .find(|r| r.kind == kind && r.status == ResultStatus::Ok)
            .map(|r| r.result.as_ref().unwrap_or(&NULL))
    };
    if let Some(v) = valid(Kind::Sentiment) {
        html.push_str(&sentiment_section(v));
    }
    if let Some(v) = valid(Kind::Summary) {
        html.push_str(&summary_section(v));
    }
    if let Some(v) = valid(Kind::Strengths) {
        html.push_str(&strengths_section(v, texts));
    }
    html.push_str(&failures(&row.results));
    html.push_str("</article>\n");
    html
}

fn sentiment_section(v: &Value) -> String {
    let body = match Mix::of(v) {
        Some(m) => bar(&m),
        None => "<p class=\"muted\">This sentiment result has no labels.</p>\n".into(),
    };
    format!("<section><h3>Sentiment mix</h3>\n{body}</section>\n")
}

/// A sentiment label as a coloured tag.
fn tag(label: &str) -> String {
    let class = match label {
        "positive" | "mixed" | "neutral" | "negative" => label,
        _ => "other",
    };
    format!("<span class=\"tag {class}\">{}</span>", esc(label))
}

/// The summary and its aspects: an object keyed by aspect name, or a list of objects with an
/// `aspect` (or `name`) field.
fn summary_section(v: &Value) -> String {
    let mut html = String::from("<section><h3>Summary</h3>\n");
    if let Some(s) = v.get("summary").and_then(Value::as_str) {
        let _ = writeln!(html, "<p>{}</p>", esc(s));
    }
    let aspects: Vec<(&str, &Value)> = match v.get("aspects") {
        Some(Value::Object(m)) => m.iter().map(|(k, a)| (k.as_str(), a)).collect(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|a| {
                let name = a.get("aspect").or_else(|| a.get("name"));
                (name.and_then(Value::as_str).unwrap_or("aspect"), a)
            })
            .collect(),
        _ => Vec::new(),
    };
    if !aspects.is_empty() {
        html.push_str("<ul class=\"aspects\">\n");
        for (name, a) in aspects {
            let field = |k: &str| a.get(k).and_then(Value::as_str);
            let _ = writeln!(
                html,
                "<li><span class=\"aspect\">{}</span>{}<span>{}</span></li>",
                esc(name),
                field("sentiment").map(tag).unwrap_or_default(),
                esc(field("summary").unwrap_or_default())
            );
        }
        html.push_str("</ul>\n");
    }
    html.push_str("</section>\n");
    html
}

/// The strengths, each with its evidence; an empty list says that no strength is praised.
fn strengths_section(v: &Value, texts: &HashMap<String, String>) -> String {
    let mut html = String::from("<section><h3>Strengths</h3>\n");
    let list = v.get("strengths").and_then(Value::as_array);
    match list.filter(|l| !l.is_empty()) {
        None => {
            let note = v.get("note").and_then(Value::as_str);
            let note = note.map(str::trim).filter(|n| !n.is_empty());
            let _ = writeln!(
                html,
                "<p class=\"none\">{}</p>",
                esc(note.unwrap_or(NO_STRENGTHS))
            );
        }
        Some(list) => {
            html.push_str("<ol class=\"strengths\">\n");
            for s in list {
                html.push_str(&strength(s, texts));
            }
            html.push_str("</ol>\n");
        }
    }
    html.push_str("</section>\n");
    html
}

/// One strength: title, detail, and its evidence grouped by review, so a review cited twice is
/// shown once with both quotes marked.
fn strength(s: &Value, texts: &HashMap<String, String>) -> String {
    let field = |k: &str| s.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut html = format!(
        "<li><h4>{}</h4>\n<p>{}</p>\n",
        esc(field("title")),
        esc(field("detail"))
    );
    let mut by_review: Vec<(&str, Vec<&str>)> = Vec::new();
    let evidence = s.get("evidence").and_then(Value::as_array);
    for e in evidence.into_iter().flatten() {
        let Some(quote) = e.get("quote").and_then(Value::as_str) else {
            continue;
        };
        let id = e.get("review_id").and_then(Value::as_str).unwrap_or("");
        match by_review.iter_mut().find(|(r, _)| *r == id) {
            Some((_, quotes)) => quotes.push(quote),
            None => by_review.push((id, vec![quote])),
        }
    }
    for (id, quotes) in by_review {
        html.push_str(&evidence_block(id, &quotes, texts.get(id)));
    }
    html.push_str("</li>\n");
    html
}

/// A cited review in full with its quotes marked; a quote that cannot be found in it (or whose
/// review is gone) is shown on its own.
fn evidence_block(review_id: &str, quotes: &[&str], text: Option<&String>) -> String {
    let (marked, missing) = match text {
        Some(t) => highlight(t, quotes),
        None => (String::new(), quotes.to_vec()),
    };
    let mut html = String::new();
    if text.is_some() {
        let _ = writeln!(
            html,
            "<blockquote class=\"review\"><span class=\"rid\">review {}</span>{marked}</blockquote>",
            esc(review_id)
        );
    }
    for q in missing {
        let why = if text.is_some() {
            "not found in review"
        } else {
            "review not in the database:"
        };
        let _ = writeln!(
            html,
            "<p class=\"loose\"><q>{}</q> <span class=\"muted\">({why} {})</span></p>",
            esc(q.trim()),
            esc(review_id)
        );
    }
    html
}

/// The kinds that failed, with their reasons, and those with no result yet.
fn failures(results: &[CardResult]) -> String {
    let failed: Vec<&CardResult> = results
        .iter()
        .filter(|r| r.status == ResultStatus::Failed)
        .collect();
    let mut html = String::new();
    if !failed.is_empty() {
        html.push_str("<section class=\"failures\"><h3>Failed analyses</h3>\n<ul>\n");
        for f in failed {
            let class = f.error_class.map_or(String::new(), |c| format!("{c}, "));
            let _ = writeln!(
                html,
                "<li><b>{}</b>: {} <span class=\"muted\">({class}{})</span></li>",
                f.kind,
                esc(f.error.as_deref().unwrap_or("no reason stored")),
                esc(&f.created_at)
            );
        }
        html.push_str("</ul></section>\n");
    }
    let absent: Vec<&str> = Kind::ALL
        .iter()
        .filter(|k| !results.iter().any(|r| r.kind == **k))
        .map(|k| k.as_str())
        .collect();
    if !absent.is_empty() {
        let _ = writeln!(
            html,
            "<p class=\"muted\">Not analysed yet: {}.</p>",
            absent.join(", ")
        );
    }
    html
}

/// The page up to the first card: style, title, and how many restaurants are shown.
fn head(shown: u64, total: u64, catalogue: u64) -> String {
    let count = if total == 0 {
        "No restaurant has results yet: run palate first.".to_string()
    } else {
        format!(
            "{shown} of {total} restaurants with results shown, in id order (--limit sets how many); \
             {catalogue} restaurants in the catalogue."
        )
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>palate results</title>
<style>{CSS}</style></head><body><main>
<h1>Restaurant results</h1>
<p class="muted">{}</p>
"#,
        esc(&count)
    )
}

const CSS: &str = r#"
body { margin: 0; background: #f3f4f6; color: #1f2328;
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "Noto Sans KR", "Noto Sans CJK KR",
    "Apple SD Gothic Neo", "Malgun Gothic", "NanumGothic", sans-serif; }
main { max-width: 920px; margin: 0 auto; padding: 24px 16px 48px; }
h1 { margin: 0 0 4px; font-size: 26px; }
.card { background: #fff; border: 1px solid #d8dce1; border-radius: 10px; padding: 18px 22px;
  margin: 20px 0; box-shadow: 0 1px 2px rgba(0,0,0,.05); }
.card header { display: flex; align-items: baseline; gap: 12px; border-bottom: 1px solid #eceef1;
  padding-bottom: 8px; }
.card h2 { margin: 0; font-size: 20px; word-break: break-all; }
.count { color: #57606a; }
h3 { font-size: 13px; text-transform: uppercase; letter-spacing: .06em; color: #57606a;
  margin: 16px 0 6px; }
h4 { margin: 0 0 2px; font-size: 15px; }
.muted { color: #6e7781; font-size: 13px; }
.bar { display: flex; height: 28px; border-radius: 6px; overflow: hidden; background: #eceef1; }
.seg { display: flex; align-items: center; justify-content: center; color: #fff;
  font-size: 12px; font-weight: 600; white-space: nowrap; overflow: hidden; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin: 6px 0 0; font-size: 13px; }
.key i { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 5px;
  vertical-align: -1px; }
.aspects { list-style: none; padding: 0; margin: 8px 0 0; }
.aspects li { display: grid; grid-template-columns: 110px 84px 1fr; gap: 8px; padding: 4px 0;
  border-top: 1px solid #f0f1f3; align-items: baseline; }
.aspect { font-weight: 600; text-transform: capitalize; }
.tag { justify-self: start; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.tag.positive { background: #dcefdc; color: #1b5e20; }
.tag.mixed { background: #fdf0c8; color: #6d4c00; }
.tag.neutral { background: #e6ebee; color: #37474f; }
.tag.negative { background: #fadcdc; color: #8e1b1b; }
.tag.other { background: #eeeeee; color: #444; }
.strengths { padding-left: 20px; margin: 6px 0 0; }
.strengths > li { margin: 0 0 14px; }
.strengths p { margin: 0 0 6px; }
.review { margin: 6px 0; padding: 8px 12px; background: #f8f9fa; border-left: 3px solid #c9ced4;
  white-space: pre-wrap; overflow-wrap: anywhere; }
.rid { display: block; font-size: 12px; color: #6e7781; white-space: normal; }
mark { background: #ffe45c; color: inherit; padding: 0 1px; border-radius: 2px; }
.loose { margin: 6px 0; }
.none { font-style: italic; color: #57606a; }
.failures { border: 1px solid #f1b8b8; background: #fff5f5; border-radius: 6px; padding: 2px 12px;
  margin-top: 14px; }
.failures h3 { color: #a01f1f; }
.failures ul { margin: 0 0 8px; padding-left: 18px; }
"#;

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::highlight::find_loose;
    use super::*;
    use crate::domain::ErrorClass;

    fn ok(kind: Kind, v: Value) -> CardResult {
        CardResult {
            kind,
            status: ResultStatus::Ok,
            result: Some(v),
            error: None,
            error_class: None,
            created_at: "2026-01-02T00:00:00Z".into(),
        }
    }

    fn row(results: Vec<CardResult>) -> CardRow {
        CardRow {
            restaurant_id: "r-1".into(),
            review_count: Some(12),
            results,
        }
    }

    fn texts(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_text_is_escaped() {
        let mut r = row(vec![ok(
            Kind::Summary,
            json!({"summary": "<script>alert('x')</script> & \"more\"",
                   "aspects": {"food<": {"sentiment": "<b>", "summary": "a > b"}}}),
        )]);
        r.restaurant_id = "<img src=x>".into();
        let html = card(&r, &HashMap::new());
        assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("<b>"));
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;more&quot;")
        );
        assert!(html.contains("food&lt;") && html.contains("a &gt; b"));
        assert!(html.contains("<span class=\"tag other\">&lt;b&gt;</span>"));
    }

    #[test]
    fn quotes_are_found_whatever_their_whitespace() {
        let text = "국물이 진하고\n  맛있어요. Great   <soup> & bread";
        let r = find_loose(text, "진하고 맛있어요").unwrap();
        assert_eq!(&text[r], "진하고\n  맛있어요");
        let r = find_loose(text, " Great <soup>\t").unwrap();
        assert_eq!(&text[r], "Great   <soup>");
        let r = find_loose(text, "국물이진하고").unwrap();
        assert_eq!(&text[r], "국물이 진하고", "a space the model dropped");
        assert_eq!(find_loose(text, "   "), None);
        let (html, missing) = highlight(text, &["진하고 맛있어요", "Great <soup> &", "bread"]);
        assert!(missing.is_empty());
        assert_eq!(
            html,
            "국물이 <mark>진하고\n  맛있어요</mark>. <mark>Great   &lt;soup&gt; &amp;</mark> <mark>bread</mark>"
        );
        let (html, _) = highlight("abcdef", &["abcd", "cdef"]);
        assert_eq!(html, "<mark>abcdef</mark>", "overlapping quotes merge");
    }

    #[test]
    fn a_quote_not_found_or_a_missing_review_is_shown_on_its_own() {
        let v = json!({"strengths": [{"title": "Soup", "detail": "Rich broth", "evidence": [
            {"review_id": "a", "quote": "rich <broth>"},
            {"review_id": "a", "quote": "never said this"},
            {"review_id": "gone", "quote": "lost review"},
            {"quote": "no id"}, {"review_id": "a"}
        ]}]});
        let t = texts(&[("a", "A rich  <broth>, truly.")]);
        let html = card(&row(vec![ok(Kind::Strengths, v)]), &t);
        assert!(html.contains("A <mark>rich  &lt;broth&gt;</mark>, truly."));
        assert!(
            html.contains("<q>never said this</q> <span class=\"muted\">(not found in review a)")
        );
        assert!(html.contains(
            "<q>lost review</q> <span class=\"muted\">(review not in the database: gone)"
        ));
        assert!(html.contains("<q>no id</q>"));
        assert_eq!(
            html.matches("<blockquote").count(),
            1,
            "review a shown once"
        );
    }

    #[test]
    fn empty_strengths_say_none_is_praised_or_give_the_note() {
        let html = card(
            &row(vec![ok(Kind::Strengths, json!({"strengths": []}))]),
            &HashMap::new(),
        );
        assert!(html.contains(NO_STRENGTHS));
        let v = json!({"strengths": [], "note": "Reviewers <only> complain about the wait."});
        let html = card(&row(vec![ok(Kind::Strengths, v)]), &HashMap::new());
        assert!(html.contains("Reviewers &lt;only&gt; complain about the wait."));
        assert!(!html.contains(NO_STRENGTHS));
    }

    #[test]
    fn the_sentiment_mix_comes_from_the_aggregate() {
        let v = json!({"reviews": [], "aggregate": {"sample_size": 40, "reviews_total": 120,
            "positive": 0.55, "negative": 0.25, "mixed": 0.15, "neutral": 0.05,
            "positive_ci95": [0.40, 0.69], "mean_score": 0.30, "mean_score_ci95": [0.12, 0.48]}});
        let html = card(&row(vec![ok(Kind::Sentiment, v)]), &HashMap::new());
        for (label, color) in SENTIMENT_COLORS {
            assert!(
                html.contains(&format!("background:{color}\" title=\"{label}")),
                "{label}"
            );
        }
        assert!(
            html.contains("width:55.00%") && html.contains(">55%<") && html.contains("neutral 5%")
        );
        assert!(html.contains("Sample of 40 of 120 reviews"));
        assert!(html.contains("positive 55% (95% CI 40%–69%)"));
        assert!(html.contains("mean score +0.30 (95% CI +0.12 to +0.48)"));
    }

    #[test]
    fn the_old_sentiment_shape_is_counted_from_its_labels() {
        let v = json!({"reviews": [
            {"review_id": "a", "label": "positive", "score": 0.9},
            {"review_id": "b", "label": "positive", "score": 0.8},
            {"review_id": "c", "label": "negative", "score": -0.5},
            {"review_id": "d", "label": "mixed", "score": 0.1},
            {"review_id": "e", "label": "what"}
        ], "overall": {"label": "positive", "score": 0.4}});
        let m = Mix::of(&v).unwrap();
        assert_eq!(m.shares, [0.5, 0.25, 0.0, 0.25]);
        assert_eq!(m.sample_size, Some(4));
        let html = bar(&m);
        assert!(html.contains("positive 50%") && html.contains("neutral 0%"));
        assert!(html.contains("Sample of 4 reviews · overall positive"));
        assert_eq!(html.matches("class=\"seg\"").count(), 3, "no empty segment");
        assert!(Mix::of(&json!({"reviews": []})).is_none());
    }

    #[test]
    fn korean_and_english_pass_through_and_odd_shapes_never_panic() {
        let summary = json!({"summary": "국물이 진하고 맛있다는 평이 많아요. Great broth.",
            "aspects": [{"aspect": "맛", "sentiment": "positive", "summary": "진한 국물"}]});
        let html = card(&row(vec![ok(Kind::Summary, summary)]), &HashMap::new());
        assert!(html.contains("국물이 진하고 맛있다는 평이 많아요. Great broth."));
        assert!(html.contains("<span class=\"aspect\">맛</span><span class=\"tag positive\">positive</span><span>진한 국물</span>"));
        let odd = vec![
            ok(Kind::Sentiment, json!({"aggregate": "x", "reviews": 3})),
            ok(Kind::Summary, json!({"summary": 5, "aspects": {"food": 1}})),
            ok(
                Kind::Strengths,
                json!({"strengths": [1, {"evidence": "x"}]}),
            ),
        ];
        let html = card(&row(odd), &HashMap::new());
        assert!(html.contains("This sentiment result has no labels."));
        let mut unreadable = ok(Kind::Summary, Value::Null);
        unreadable.result = None;
        card(&row(vec![unreadable]), &HashMap::new());
    }

    #[test]
    fn failures_show_their_reason_and_absent_kinds_are_named() {
        let failed = CardResult {
            kind: Kind::Summary,
            status: ResultStatus::Failed,
            result: None,
            error: Some("invalid output: quote \"x\" not in <R1>".into()),
            error_class: Some(ErrorClass::InvalidOutput),
            created_at: "2026-01-03T00:00:00Z".into(),
        };
        let html = card(&row(vec![failed]), &HashMap::new());
        assert!(
            html.contains("<b>summary</b>: invalid output: quote &quot;x&quot; not in &lt;R1&gt;")
        );
        assert!(html.contains("(invalid_output, 2026-01-03T00:00:00Z)"));
        assert!(html.contains("Not analysed yet: sentiment, strengths."));
    }

    #[test]
    fn the_page_is_self_contained_and_says_how_many_are_shown() {
        assert!(CSS.contains(&format!("mark {{ background: {MARK_COLOR};")));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let db = Db::open(&path).unwrap();
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "INSERT INTO runs (job_name, command, model, started_at, status, config_json)
             VALUES ('t', 'run', 'm', 'x', 'completed', '{}');",
        )
        .unwrap();
        for i in 0..120 {
            c.execute(
                "INSERT INTO results (restaurant_id, kind, input_hash, prompt_version, model, status,
                     result_json, attempts, run_id, created_at)
                 VALUES (?1, 'summary', 'h', 'p', 'm', 'ok', '{\"summary\": \"fine\"}', 1, 1, 'x')",
                [format!("r{i:03}")],
            )
            .unwrap();
        }
        for (limit, shown) in [(60, 60), (200, 120), (50, 50), (0, 0)] {
            let mut out = Vec::new();
            assert_eq!(write_page(&db, limit, &mut out).unwrap(), (shown, 120));
            let html = String::from_utf8(out).unwrap();
            assert_eq!(
                html.matches("<article").count() as u64,
                shown,
                "limit {limit}"
            );
            assert!(html.contains(&format!("{shown} of 120 restaurants with results shown")));
            for fetch in ["src=", "href=", "<script", "@import", "url("] {
                assert!(!html.contains(fetch), "nothing fetched: {fetch}");
            }
        }
    }
}
