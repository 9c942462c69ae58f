//! The results page end to end: a database holding results in the shapes palate stores (and the
//! older sentiment shape), `palate report --results` run as a binary, and the page rendered by
//! headless Chromium (Debian's `chromium`, installed by scripts/test.sh), whose screenshot must
//! show the sentiment bar's colours and the highlighted quotes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use palate::report::results::{MARK_COLOR, NO_STRENGTHS, SENTIMENT_COLORS};
use palate::store::Db;
use rusqlite::{params, Connection};
use serde_json::json;

/// (restaurant, review id, text).
const REVIEWS: &[(&str, &str, &str)] = &[
    (
        "r-001",
        "k1",
        "국물이 진하고\n깊어서  정말 맛있어요. 면도 쫄깃해요!",
    ),
    (
        "r-001",
        "k2",
        "사장님이 친절하시고 가게가 깨끗해요. 다만 웨이팅이 길어요 <30분>.",
    ),
    (
        "r-001",
        "k3",
        "Great broth & friendly staff — \"best ramen\" in town, isn't it? <3",
    ),
    (
        "r-002",
        "e1",
        "Tom & Jerry's <best> burger... the fries were cold though.",
    ),
    (
        "r-002",
        "e2",
        "Slow service, rude \"waiter\"; prices > quality.",
    ),
    ("r-003", "f1", "Fine."),
    ("r-004", "g1", "Okay."),
];

fn result(
    c: &Connection,
    restaurant: &str,
    kind: &str,
    at: &str,
    outcome: Result<serde_json::Value, &str>,
) {
    let (status, json, error) = match outcome {
        Ok(v) => ("ok", Some(v.to_string()), None),
        Err(e) => ("failed", None, Some(e)),
    };
    c.execute(
        "INSERT INTO results (restaurant_id, kind, input_hash, prompt_version, model, status,
             result_json, error, error_class, attempts, run_id, created_at)
         VALUES (?1, ?2, ?3, 'p1', 'm', ?4, ?5, ?6, ?7, 1, 1, ?8)",
        params![
            restaurant,
            kind,
            format!("h-{at}"),
            status,
            json,
            error,
            error.map(|_| "invalid_output"),
            at
        ],
    )
    .unwrap();
}

/// Restaurants, reviews, a run, and results: r-001 (Korean, new shapes, a quote whose
/// whitespace differs, a quote that is not in its review), r-002 (the old sentiment shape, no
/// strengths), r-003 (a failed summary, strengths empty with a note), r-004 (only failures, and a
/// valid summary that a later failure does not hide).
fn database(path: &Path) {
    drop(Db::open(path).unwrap());
    let c = Connection::open(path).unwrap();
    c.execute(
        "INSERT INTO runs (job_name, command, model, started_at, status, config_json)
         VALUES ('test', 'run', 'm', '2026-03-01T00:00:00Z', 'completed', '{}')",
        [],
    )
    .unwrap();
    for (i, (restaurant, id, text)) in REVIEWS.iter().enumerate() {
        c.execute(
            "INSERT INTO reviews (review_id, restaurant_id, text, content_hash, source_file,
                 source_line, ingested_at) VALUES (?1, ?2, ?3, ?1, 'f.jsonl', ?4, 'x')",
            params![id, restaurant, text, i as i64 + 1],
        )
        .unwrap();
    }
    for (restaurant, n) in [("r-001", 120), ("r-002", 2), ("r-003", 1), ("r-004", 1)] {
        c.execute(
            "INSERT INTO restaurants VALUES (?1, 'h', ?2, 'x')",
            params![restaurant, n],
        )
        .unwrap();
    }
    korean(&c);
    let old_sentiment = json!({"reviews": [
        {"review_id": "e1", "label": "mixed", "score": 0.1},
        {"review_id": "e2", "label": "negative", "score": -0.7}],
        "overall": {"label": "negative", "score": -0.3}});
    result(
        &c,
        "r-002",
        "sentiment",
        "2026-03-01T01:00:00Z",
        Ok(old_sentiment),
    );
    let summary = json!({"summary": "Burgers are liked; service & prices are not.", "aspects": {
        "service": {"sentiment": "negative", "summary": "Slow, rude \"waiter\"."}}});
    result(&c, "r-002", "summary", "2026-03-01T01:00:00Z", Ok(summary));
    result(
        &c,
        "r-002",
        "strengths",
        "2026-03-01T01:00:00Z",
        Ok(json!({"strengths": []})),
    );
    let none = json!({"strengths": [], "note": "Only one short review: nothing stands out."});
    result(&c, "r-003", "strengths", "2026-03-01T01:00:00Z", Ok(none));
    result(
        &c,
        "r-003",
        "summary",
        "2026-03-01T01:00:00Z",
        Err("invalid output: schema: no aspects <R1>"),
    );
    result(
        &c,
        "r-004",
        "summary",
        "2026-03-01T01:00:00Z",
        Ok(json!({"summary": "Valid & older."})),
    );
    result(
        &c,
        "r-004",
        "summary",
        "2026-03-02T01:00:00Z",
        Err("newer failure, hidden"),
    );
    result(
        &c,
        "r-004",
        "strengths",
        "2026-03-01T01:00:00Z",
        Err("older failure, replaced"),
    );
    result(
        &c,
        "r-004",
        "strengths",
        "2026-03-02T01:00:00Z",
        Err("context length: 9000 > 8192"),
    );
}

/// r-001: the new sentiment shape, Korean summary and strengths.
fn korean(c: &Connection) {
    let sentiment = json!({"reviews": [{"review_id": "k1", "label": "positive", "in_sample": true}],
        "aggregate": {"sample_size": 40, "reviews_total": 120, "positive": 0.55, "negative": 0.25,
            "mixed": 0.15, "neutral": 0.05, "positive_ci95": [0.40, 0.69], "mean_score": 0.30,
            "mean_score_ci95": [0.12, 0.48]}});
    result(
        c,
        "r-001",
        "sentiment",
        "2026-03-01T01:00:00Z",
        Ok(sentiment),
    );
    let summary = json!({"summary": "국물이 진하고 친절하다는 평이 많아요. Long waits.", "aspects": {
        "food": {"sentiment": "positive", "summary": "진한 국물, 쫄깃한 면"},
        "wait": {"sentiment": "negative", "summary": "웨이팅이 길어요"},
        "price": {"sentiment": "neutral", "summary": "보통"},
        "service": {"sentiment": "mixed", "summary": "친절하지만 바빠요"}}});
    result(c, "r-001", "summary", "2026-03-01T01:00:00Z", Ok(summary));
    let strengths = json!({"strengths": [
        {"title": "진한 국물", "detail": "Rich broth, praised in Korean and English.", "evidence": [
            {"review_id": "k1", "quote": "국물이 진하고 깊어서 정말 맛있어요."},
            {"review_id": "k3", "quote": "Great broth & friendly staff"}]},
        {"title": "친절한 서비스", "detail": "Kind owner, clean place.", "evidence": [
            {"review_id": "k2", "quote": "사장님이 친절하시고 가게가 깨끗해요."},
            {"review_id": "k2", "quote": "this quote is not in the review"}]}]});
    result(
        c,
        "r-001",
        "strengths",
        "2026-03-01T01:00:00Z",
        Ok(strengths),
    );
}

#[test]
fn the_results_page_shows_each_restaurant_and_chromium_draws_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    database(&db);
    let html_path = dir.path().join("results.html");
    let (db_s, out_s) = (db.to_str().unwrap(), html_path.to_str().unwrap());
    let (code, out, err) = common::palate(&["report", "--database", db_s, "--results", out_s]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("wrote {out_s}")), "{out}");
    let html = std::fs::read_to_string(&html_path).unwrap();
    for want in [
        "4 of 4 restaurants with results shown",
        "120 reviews",
        // Escaped review text, and quotes marked across a whitespace difference.
        "<mark>국물이 진하고\n깊어서  정말 맛있어요.</mark> 면도 쫄깃해요!",
        "<mark>Great broth &amp; friendly staff</mark> — &quot;best ramen&quot; in town, isn&#39;t it? &lt;3",
        "<mark>사장님이 친절하시고 가게가 깨끗해요.</mark> 다만 웨이팅이 길어요 &lt;30분&gt;.",
        "<q>this quote is not in the review</q>",
        "<span class=\"tag negative\">negative</span><span>Slow, rude &quot;waiter&quot;.</span>",
        "Sample of 40 of 120 reviews",
        "Sample of 2 reviews · overall negative",
        NO_STRENGTHS,
        "Only one short review: nothing stands out.",
        "<b>summary</b>: invalid output: schema: no aspects &lt;R1&gt;",
        "<b>strengths</b>: context length: 9000 &gt; 8192",
        "Valid &amp; older.",
    ] {
        assert!(html.contains(want), "page shows {want:?}");
    }
    for absent in [
        "newer failure, hidden",
        "older failure, replaced",
        "<30분>",
        "<3",
    ] {
        assert!(!html.contains(absent), "page leaves out {absent:?}");
    }
    let (code, out, err) = common::palate(&[
        "report",
        "--database",
        db_s,
        "--results",
        out_s,
        "--limit",
        "2",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let limited = std::fs::read_to_string(&html_path).unwrap();
    assert!(limited.contains("2 of 4 restaurants with results shown"));
    assert_eq!(limited.matches("<article").count(), 2);

    // A database with no run and no result yet still gets a page, and no error.
    let empty = dir.path().join("empty.db");
    drop(Db::open(&empty).unwrap());
    let (code, out, err) = common::palate(&[
        "report",
        "--database",
        empty.to_str().unwrap(),
        "--results",
        out_s,
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let none = std::fs::read_to_string(&html_path).unwrap();
    assert!(none.contains("No restaurant has results yet"));

    std::fs::write(&html_path, &html).unwrap();
    screenshot_shows_the_bar_and_the_highlights(dir.path(), &html_path);
}

fn chromium_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("chromium").is_file()))
}

fn screenshot_shows_the_bar_and_the_highlights(dir: &Path, html: &Path) {
    if !chromium_installed() {
        eprintln!("SKIPPED: rendering the results page: `chromium` is not installed (scripts/test.sh installs it)");
        return;
    }
    let png = dir.join("results.png");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1200,3000",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join("chromium-profile").display()
        ))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(keep) = std::env::var_os("PALATE_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let colours = SENTIMENT_COLORS.iter().chain([&("highlight", MARK_COLOR)]);
    for (what, hex) in colours {
        let want: Vec<u8> = (0..3)
            .map(|i| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap())
            .collect();
        let n = pixels
            .chunks_exact(bytes)
            .filter(|p| p[..3] == want[..])
            .count();
        assert!(n >= 600, "{what} ({hex}) has {n} pixels: not drawn");
    }
}
