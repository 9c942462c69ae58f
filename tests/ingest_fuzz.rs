//! Property tests (bounded fuzzing) of the JSONL and CSV readers through the public API: a
//! generated or mutated file is ingested into a temporary database. Whatever the bytes, ingest
//! never panics, and the counts add up: every non-blank line is a stored row, a rejected row, or
//! part of a multi-line CSV record that is one of those; every line that is on its own a valid row
//! is stored as itself, never swallowed by a quote left open above it.
//!
//! `PROPTEST_CASES` sets the cases per property (default [`DEFAULT_CASES`]); each property prints
//! how many ran and how long they took (`cargo test --release --test ingest_fuzz -- --nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use palate::ingest::{ingest_file, IngestError, IngestOptions, IngestReport};
use palate::store::Db;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per property: the four properties take 9 s on 2 cores (release build; 17 s under load).
const DEFAULT_CASES: u32 = 800;

/// A database, its folder, and a second connection to look at what ingest stored.
struct Bench {
    dir: tempfile::TempDir,
    db: RefCell<Db>,
    sql: rusqlite::Connection,
    opts: IngestOptions,
}

impl Bench {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.db");
        let db = RefCell::new(Db::open(&path).unwrap());
        let sql = rusqlite::Connection::open(&path).unwrap();
        let opts = IngestOptions {
            max_review_bytes: 200,
            rejects_dir: dir.path().join("rejects"),
            stop: None,
            shard: None,
        };
        Self { dir, db, sql, opts }
    }

    /// Ingests `bytes` as a file `name` into the emptied database; returns the result, the
    /// (review_id, source_line) of every stored review, and the (line, last line, reason) of
    /// every reject.
    fn ingest(
        &self,
        name: &str,
        bytes: &[u8],
    ) -> (Result<IngestReport, IngestError>, Stored, Rejected) {
        self.sql
            .execute_batch("DELETE FROM reviews; DELETE FROM restaurants;")
            .unwrap();
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let result = ingest_file(&mut self.db.borrow_mut(), &path, &self.opts);
        let mut q = self
            .sql
            .prepare("SELECT review_id, source_line FROM reviews")
            .unwrap();
        let stored = q
            .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let rejected = match &result {
            Ok(IngestReport {
                rejects_file: Some(p),
                ..
            }) => read_rejects(p),
            _ => Vec::new(),
        };
        (result, stored, rejected)
    }
}

type Stored = Vec<(String, u64)>;
type Rejected = Vec<(u64, u64, String)>;

fn read_rejects(p: &PathBuf) -> Rejected {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let line = v["line"].as_u64().unwrap();
            let last = v["last_line"].as_u64().unwrap_or(line);
            (line, last, v["reason"].as_str().unwrap().to_string())
        })
        .collect()
}

/// The physical lines as palate numbers them: each ended by `\n`, `\r\n` or a lone `\r`.
fn physical_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' | b'\r' => {
                out.push(&bytes[start..i]);
                i += if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

/// One generated row: restaurant, text, rating (6 is out of range, so some rows are rejected).
type Row = (u8, &'static str, Option<u8>);

const TEXTS: &[&str] = &[
    "good food",
    "맛있어요 정말",
    "say \"hi\"",
    "a, b, c",
    "two\nlines",
    "tab\there",
    " padded ",
    "emoji 😀",
];

fn rows() -> impl Strategy<Value = Vec<Row>> {
    let row = (
        0u8..4,
        prop::sample::select(TEXTS),
        prop::option::of(0u8..=6),
    );
    prop::collection::vec(row, 0..10)
}

/// Ids that are never a substring of one another, so a search in the file finds only its own.
fn id(i: usize) -> String {
    format!("id{i:03}x")
}

/// A mutation of a file's bytes, at a position taken modulo its length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let special = prop::sample::select(vec![
        b'"', b'\n', b'\r', 0, b',', b'{', b'}', b'\\', 0xFF, 0xC3, 0x85, b' ',
    ]);
    let m = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), special).prop_map(|(p, b)| Mutation::Insert(p, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
    ];
    prop::collection::vec(m, 1..4)
}

fn mutate(mut bytes: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        let n = bytes.len();
        match *m {
            Mutation::Flip(p, b) if n > 0 => bytes[p % n] ^= b | 1,
            Mutation::Insert(p, b) => bytes.insert(p % (n + 1), b),
            Mutation::Delete(p) if n > 0 => {
                bytes.remove(p % n);
            }
            Mutation::Truncate(p) => bytes.truncate(p % (n + 1)),
            _ => {}
        }
    }
    bytes
}

/// Runs one property for the configured number of cases and prints how many ran and how long.
fn run<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let (t, ran) = (Instant::now(), Cell::new(0u32));
    let result = TestRunner::new(config).run(&strategy, |v| {
        ran.set(ran.get() + 1);
        test(v)
    });
    eprintln!(
        "{name}: {} cases in {:.1} s",
        ran.get(),
        t.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

/// Bytes biased towards what the readers react to: quotes, commas, line ends, braces, NUL.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let special = prop::sample::select(b"\"\",,\n\r{}[]:\\ a1\0".to_vec());
    prop::collection::vec(prop_oneof![any::<u8>(), special], 0..600)
}

fn jsonl_file(rows: &[Row], crlf: bool) -> (Vec<u8>, Vec<(String, String)>) {
    let mut lines = Vec::new();
    let mut good = Vec::new();
    for (i, (rest, text, rating)) in rows.iter().enumerate() {
        let row = serde_json::json!({"restaurant_id": format!("r{rest}"), "review_id": id(i), "text": text, "rating": rating});
        if rating.is_none_or(|r| r <= 5) {
            good.push((row.to_string(), id(i)));
        }
        lines.push(row.to_string());
    }
    let end = if crlf { "\r\n" } else { "\n" };
    (
        lines
            .iter()
            .map(|l| format!("{l}{end}"))
            .collect::<String>()
            .into_bytes(),
        good,
    )
}

const HEADER: &str = "restaurant_id,review_id,text,rating";

fn csv_file(rows: &[Row], crlf: bool) -> (Vec<u8>, Vec<(String, String)>) {
    let end = if crlf { "\r\n" } else { "\n" };
    let mut out = format!("{HEADER}{end}");
    let mut good = Vec::new();
    for (i, (rest, text, rating)) in rows.iter().enumerate() {
        let text = if text.contains([',', '"', '\n']) || text.trim() != *text {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_string()
        };
        let rating = rating.map(|r| r.to_string()).unwrap_or_default();
        let line = format!("r{rest},{},{text},{rating}", id(i));
        if !line.contains('\n') && !rating.starts_with('6') {
            good.push((line.clone(), id(i)));
        }
        out += &format!("{line}{end}");
    }
    (out.into_bytes(), good)
}

fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

fn utf16_bom(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF")
}

/// Report, database and rejects file agree: every row counted is stored or rejected, once.
fn counts_agree(
    r: &IngestReport,
    stored: &Stored,
    rejected: &Rejected,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        r.updated + r.unchanged,
        0,
        "a fresh database has nothing to update"
    );
    prop_assert_eq!(r.inserted as usize, stored.len());
    prop_assert_eq!(r.rejected as usize, rejected.len());
    prop_assert_eq!(r.rows, r.inserted + r.rejected);
    Ok(())
}

/// Each line that is an untouched good row of the original, with an id found nowhere else in
/// the file, is stored as itself, from that line.
fn good_lines_stored(
    bytes: &[u8],
    good: &[(String, String)],
    stored: &Stored,
) -> Result<(), TestCaseError> {
    let occurrences = |id: &str| {
        bytes
            .windows(id.len())
            .filter(|w| *w == id.as_bytes())
            .count()
    };
    for (no, line) in physical_lines(strip_bom(bytes)).iter().enumerate() {
        let Some((_, id)) = good.iter().find(|(l, _)| l.as_bytes() == *line) else {
            continue;
        };
        if occurrences(id) == 1 {
            let at = (id.clone(), no as u64 + 1);
            prop_assert!(
                stored.contains(&at),
                "line {} ({id}) is a good row: {stored:?}",
                at.1
            );
        }
    }
    Ok(())
}

/// JSONL: every non-blank line is exactly one stored row or one reject.
fn jsonl_accounts(
    bytes: &[u8],
    result: Result<IngestReport, IngestError>,
    stored: &Stored,
    rejected: &Rejected,
) -> Result<(), TestCaseError> {
    let r = match result {
        Err(IngestError::Unusable { .. }) if utf16_bom(bytes) => return Ok(()),
        other => other.map_err(|e| TestCaseError::fail(e.to_string()))?,
    };
    counts_agree(&r, stored, rejected)?;
    let non_blank: BTreeSet<u64> = physical_lines(strip_bom(bytes))
        .iter()
        .enumerate()
        .filter(|(_, l)| std::str::from_utf8(l).map_or(true, |s| !s.trim().is_empty()))
        .map(|(i, _)| i as u64 + 1)
        .collect();
    let mut seen = BTreeSet::new();
    for line in stored
        .iter()
        .map(|s| s.1)
        .chain(rejected.iter().map(|r| r.0))
    {
        prop_assert!(seen.insert(line), "line {line} counted twice");
    }
    prop_assert_eq!(seen, non_blank);
    Ok(())
}

#[test]
fn jsonl_random_bytes_never_panic_and_every_line_is_counted() {
    let bench = Bench::new();
    run("jsonl random bytes", noise(), |bytes| {
        let (result, stored, rejected) = bench.ingest("f.jsonl", &bytes);
        jsonl_accounts(&bytes, result, &stored, &rejected)
    });
}

#[test]
fn jsonl_mutated_files_never_panic_and_keep_their_good_lines() {
    let bench = Bench::new();
    run(
        "jsonl mutated",
        (rows(), any::<bool>(), mutations()),
        |(rows, crlf, ms)| {
            let (file, good) = jsonl_file(&rows, crlf);
            let bytes = mutate(file, &ms);
            let (result, stored, rejected) = bench.ingest("f.jsonl", &bytes);
            jsonl_accounts(&bytes, result, &stored, &rejected)?;
            good_lines_stored(&bytes, &good, &stored)
        },
    );
}

#[path = "ingest_fuzz/csv.rs"]
mod csv;
