//! Ingest on corpora of bad rows: each bad row is rejected with its line and reason, good rows are
//! stored, re-ingesting changes nothing, an unusable file is an error naming it. The regression
//! tests of issue 10's ingest defects, the bad-input corpus (`tests/data/bad/`), and the
//! concurrency and kill tests are in `tests/ingest/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;
#[path = "ingest/corpus.rs"]
mod corpus;
#[path = "ingest/defects.rs"]
mod defects;
#[path = "ingest/writers.rs"]
mod writers;

use palate::ingest::{ingest_file, IngestOptions};
use palate::store::Db;
use serde_json::Value;

/// (line, reason) of each line of a rejects file.
fn rejects(path: &std::path::Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The store ingest writes through, and a plain connection to check what it wrote.
struct Opened {
    db: Db,
    sql: rusqlite::Connection,
}

impl std::ops::Deref for Opened {
    type Target = rusqlite::Connection;
    fn deref(&self) -> &rusqlite::Connection {
        &self.sql
    }
}

fn setup() -> (tempfile::TempDir, Opened, IngestOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let db = Db::open(&path).unwrap();
    let conn = Opened {
        db,
        sql: rusqlite::Connection::open(&path).unwrap(),
    };
    let opts = IngestOptions {
        max_review_bytes: 4000,
        rejects_dir: dir.path().join("rejects"),
        stop: None,
        shard: None,
    };
    (dir, conn, opts)
}

/// Ingests `file` and checks the stored count and each rejects line against `expect`.
fn ingest_and_check(
    file: &str,
    inserted: u64,
    expect: &[(u64, &str)],
) -> (tempfile::TempDir, Opened) {
    let (dir, mut conn, opts) = setup();
    let r = ingest_file(&mut conn.db, &common::root().join(file), &opts).unwrap();
    assert_eq!(
        (r.inserted, r.rejected),
        (inserted, expect.len() as u64),
        "{r:?}"
    );
    let got = rejects(r.rejects_file.as_ref().unwrap());
    assert_eq!(got.len(), expect.len(), "{got:#?}");
    for ((line, reason), (eline, ereason)) in got.iter().zip(expect) {
        assert_eq!(line, eline, "{reason}");
        assert!(
            reason.contains(ereason),
            "line {line}: {reason:?} should mention {ereason:?}"
        );
    }
    (dir, conn)
}

#[test]
fn jsonl_bad_rows_are_each_rejected_with_line_and_reason() {
    let expect = [
        (2, "missing restaurant_id"),
        (3, "empty text"),
        (4, "invalid UTF-8"),
        (5, "duplicate review_id \"r1-001\" (first on line 1)"),
        (6, "over the limit of 4000"),
        (7, "invalid JSON"),
        (8, "not a JSON object"),
        (9, "rating 9 is outside 0 to 5"),
        (10, "created_at"),
        (11, "text must be a string"),
    ];
    let (_dir, conn) = ingest_and_check("tests/data/bad_rows.jsonl", 2, &expect);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM reviews", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn csv_bad_rows_are_each_rejected_with_line_and_reason() {
    let expect = [
        (3, "missing review_id"),
        (4, "expected 6 fields, found 7"),
        (5, "invalid UTF-8 in column text"),
        (6, "empty text"),
        (7, "duplicate review_id \"r2-001\" (first on line 2)"),
        (10, "rating \"five\" is not a number"),
    ];
    let (_dir, conn) = ingest_and_check("tests/data/bad_rows.csv", 2, &expect);
    let text: String = conn
        .query_row(
            "SELECT text FROM reviews WHERE review_id = 'r2-005'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(text, "multi\nline review, fine");
}

#[test]
fn re_ingesting_the_same_file_changes_nothing() {
    let (_dir, mut conn, opts) = setup();
    let data = common::root().join("data/reviews.jsonl");
    let first = ingest_file(&mut conn.db, &data, &opts).unwrap();
    assert!(first.inserted > 800 && first.rejected == 0, "{first:?}");
    let hashes = |c: &rusqlite::Connection| -> Vec<(String, String, String)> {
        let mut q = c
            .prepare("SELECT restaurant_id, input_hash, updated_at FROM restaurants ORDER BY 1")
            .unwrap();
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let before = hashes(&conn);
    let again = ingest_file(&mut conn.db, &data, &opts).unwrap();
    assert_eq!(
        (again.inserted, again.updated, again.unchanged),
        (0, 0, first.inserted)
    );
    assert_eq!(
        hashes(&conn),
        before,
        "restaurant input hashes and timestamps are untouched"
    );
}

#[test]
fn an_edited_review_changes_only_its_restaurants_hash() {
    let (dir, mut conn, opts) = setup();
    let a = dir.path().join("a.jsonl");
    std::fs::write(&a, "{\"restaurant_id\":\"x\",\"review_id\":\"x1\",\"text\":\"good\"}\n{\"restaurant_id\":\"y\",\"review_id\":\"y1\",\"text\":\"bad\"}\n").unwrap();
    ingest_file(&mut conn.db, &a, &opts).unwrap();
    let hash = |c: &rusqlite::Connection, id: &str| -> String {
        c.query_row(
            "SELECT input_hash FROM restaurants WHERE restaurant_id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    let (x0, y0) = (hash(&conn, "x"), hash(&conn, "y"));
    std::fs::write(&a, "{\"restaurant_id\":\"x\",\"review_id\":\"x1\",\"text\":\"great\"}\n{\"restaurant_id\":\"y\",\"review_id\":\"y1\",\"text\":\"bad\"}\n").unwrap();
    let r = ingest_file(&mut conn.db, &a, &opts).unwrap();
    assert_eq!((r.updated, r.unchanged), (1, 1));
    assert_ne!(hash(&conn, "x"), x0);
    assert_eq!(hash(&conn, "y"), y0);
}

#[test]
fn a_review_id_of_another_restaurant_is_rejected() {
    let (dir, mut conn, opts) = setup();
    let a = dir.path().join("a.jsonl");
    std::fs::write(
        &a,
        "{\"restaurant_id\":\"x\",\"review_id\":\"1\",\"text\":\"good\"}\n",
    )
    .unwrap();
    ingest_file(&mut conn.db, &a, &opts).unwrap();
    let b = dir.path().join("b.jsonl");
    std::fs::write(
        &b,
        "{\"restaurant_id\":\"y\",\"review_id\":\"1\",\"text\":\"good\"}\n",
    )
    .unwrap();
    let r = ingest_file(&mut conn.db, &b, &opts).unwrap();
    assert_eq!(r.rejected, 1);
    assert!(rejects(r.rejects_file.as_ref().unwrap())[0]
        .1
        .contains("already belongs to restaurant \"x\""));
}

#[test]
fn unusable_files_are_errors_naming_the_file() {
    let (dir, mut conn, opts) = setup();
    let missing = dir.path().join("nope.jsonl");
    let e = ingest_file(&mut conn.db, &missing, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.jsonl"), "{e}");
    let txt = dir.path().join("reviews.txt");
    std::fs::write(&txt, "hello").unwrap();
    assert!(ingest_file(&mut conn.db, &txt, &opts)
        .unwrap_err()
        .to_string()
        .contains("unknown format"));
    let headerless = dir.path().join("h.csv");
    std::fs::write(&headerless, "a,b,c\n1,2,3\n").unwrap();
    let e = ingest_file(&mut conn.db, &headerless, &opts)
        .unwrap_err()
        .to_string();
    assert!(e.contains("h.csv") && e.contains("restaurant_id"), "{e}");
}

#[test]
fn palate_ingest_prints_counts_and_exits_zero_on_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (code, out, err) = common::palate(&[
        "ingest",
        "tests/data/bad_rows.jsonl",
        "--database",
        db.to_str().unwrap(),
        "--rejects-dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let rejects = rejects_files(dir.path());
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    let name = rejects[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("bad_rows.jsonl.") && name.ends_with(".rejects.jsonl"),
        "{name}"
    );
    assert!(out.contains("12 rows"), "{out}");
    assert!(out.contains("10 rejected"), "{out}");
    let (code, _, err) =
        common::palate(&["ingest", "missing.csv", "--database", db.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("missing.csv"), "{err}");
}

/// The rejects files in `dir`.
fn rejects_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".rejects.jsonl"))
        .collect();
    v.sort();
    v
}

/// The number of rows in `table`.
fn count(c: &rusqlite::Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}
