//! The bad-input corpus: every file of `tests/data/bad/`, and files made at run time (lines over
//! the cap, deep nesting, UTF-16, binary). Each bad row is rejected with its line and reason,
//! each good row is stored, nothing crashes, and a wholly unusable file is an error naming it
//! while the other files are still ingested.

use std::path::{Path, PathBuf};

use palate::ingest::ingest_file;

use super::{common, count, rejects, setup};

enum Want {
    /// Rows accepted (new, updated or unchanged), and each reject's line and part of its reason,
    /// in file order.
    Rows(u64, &'static [(u64, &'static str)]),
    /// Random bytes: no row accepted, every non-blank line rejected.
    Garbage,
    /// The whole file is refused with this in the error.
    Unusable(&'static str),
}

use Want::{Garbage, Rows, Unusable};

const BAD_UTF8: &str = "invalid UTF-8 at byte";
const IN_TEXT: &str = "invalid UTF-8 in column text";
const NOT_A_DATE: &str = "is not an RFC 3339 timestamp";
const ONE_FIELD: &str = "expected 3 fields, found 1";
const OVER_CAP: &str = "line is longer than 1048576 bytes";

/// Expectations for the committed corpus, in the order it is ingested (by name).
const COMMITTED: &[(&str, Want)] = &[
    ("blank_lines.jsonl", Rows(0, &[])),
    ("bom_crlf.csv", Rows(3, &[(3, "missing review_id"), (6, "rating \"five\" is not a number")])),
    ("controls.csv", Rows(2, &[
        (3, "review_id contains the control character U+0000"),
        (4, "review_id contains the control character U+0085"),
        (5, "text contains a NUL character"),
        (6, "restaurant_id contains the invisible character U+200D"),
    ])),
    ("controls.jsonl", Rows(2, &[
        (2, "restaurant_id contains the control character U+0000"),
        (3, "invalid JSON: control character"),
        (4, "review_id contains the control character U+0085"),
        (5, "restaurant_id contains the invisible character U+200B"),
        (6, "review_id contains the invisible character U+202E"),
        (7, "review_id contains the invisible character U+FEFF"),
        (8, "text contains a NUL character"),
        (9, "review_id contains the control character U+0009"),
        (10, "text has no visible characters"),
    ])),
    ("cr_only.csv", Rows(2, &[(3, "empty text")])),
    ("cr_only.jsonl", Rows(2, &[(2, "invalid JSON")])),
    ("dates.csv", Rows(2, &[(2, NOT_A_DATE), (4, NOT_A_DATE), (5, NOT_A_DATE), (6, NOT_A_DATE)])),
    ("dups_a.jsonl", Rows(2, &[(3, "duplicate review_id \"d-1\" (first on line 1)")])),
    ("dups_b.jsonl", Rows(2, &[
        (2, "review_id \"d-2\" already belongs to restaurant \"d\", not \"e\""),
        (4, "duplicate review_id \"d-3\" (first on line 3)"),
    ])),
    ("empty.csv", Rows(0, &[])),
    ("empty.jsonl", Rows(0, &[])),
    ("header_only.csv", Rows(0, &[])),
    ("header_wrong.csv", Unusable("must name restaurant_id, review_id and text")),
    ("hostile_ids.jsonl", Rows(5, &[])),
    ("nested.jsonl", Rows(1, &[
        (2, "text must be a string, found an object"),
        (3, "duplicate field `text`"),
        (4, "not a JSON object"),
        (5, "not a JSON object"),
    ])),
    ("numbers.jsonl", Rows(5, &[
        (4, "review_id must be a string or an integer, found the number 1.5"),
        (5, "review_id must be a string or an integer, found the number 1e3"),
        (6, "invalid JSON"),
        (7, "invalid JSON"),
        (8, "invalid JSON: number out of range"),
        (9, "rating -1 is outside 0 to 5"),
        (10, "rating \"NaN\" is not a finite number"),
        (11, "is outside 0 to 5"),
        (13, "review_id is longer than 200 characters"),
    ])),
    ("quoting.csv", Rows(6, &[
        (6, "the record starting on line 6: a quoted field is not closed before line 7"),
        (8, "empty text"),
        (10, "expected 4 fields, found 5"),
        (11, "expected 4 fields, found 5"),
        (13, "the record starting on line 13: a quoted field is not closed before the end of the file"),
        (14, "expected 4 fields, found 1"),
    ])),
    ("utf8.csv", Rows(2, &[(3, IN_TEXT), (4, IN_TEXT), (5, IN_TEXT), (6, IN_TEXT),
        (7, "invalid UTF-8 in column review_id at byte 2")])),
    ("utf8.jsonl", Rows(2, &[(2, BAD_UTF8), (3, BAD_UTF8), (4, BAD_UTF8), (5, BAD_UTF8), (7, BAD_UTF8)])),
    ("whitespace.csv", Rows(1, &[
        (2, "empty text"),
        (3, "empty text"),
        (4, "empty text"),
        (5, "text has no visible characters"),
    ])),
];

/// Expectations for the files [`generated`] makes, in the same order.
const GENERATED: &[(&str, Want)] = &[
    (
        "long.jsonl",
        Rows(
            2,
            &[
                (2, OVER_CAP),
                (3, "over the limit of 4000"),
                (4, "review_id is longer than 200 characters"),
            ],
        ),
    ),
    (
        "long.csv",
        Rows(
            2,
            &[
                (3, OVER_CAP),
                (4, "by line 15 it is longer than 1048576 bytes"),
                (5, ONE_FIELD),
                (6, ONE_FIELD),
                (7, ONE_FIELD),
                (8, ONE_FIELD),
                (9, ONE_FIELD),
                (10, ONE_FIELD),
                (11, ONE_FIELD),
                (12, ONE_FIELD),
                (13, ONE_FIELD),
                (14, ONE_FIELD),
                (15, ONE_FIELD),
                (17, "over the limit of 4000"),
            ],
        ),
    ),
    (
        "deep.jsonl",
        Rows(
            2,
            &[(2, "recursion limit exceeded"), (3, "not a JSON object")],
        ),
    ),
    ("utf16le.csv", Unusable("UTF-16")),
    ("utf16be.jsonl", Unusable("UTF-16")),
    ("binary.jsonl", Garbage),
    ("binary.csv", Unusable("header row")),
];

fn row(id: &str, text: &str) -> String {
    format!(r#"{{"restaurant_id":"g","review_id":"{id}","text":"{text}"}}"#)
}

/// Files too big or too binary to commit: lines over the cap, fields over their limits, and
/// JSON nested 100,000 deep.
fn long_files() -> Vec<(&'static str, Vec<u8>)> {
    let (huge, over) = ("x".repeat(1_100_000), "y".repeat(4001));
    let jsonl = [
        row("g-1", "ok"),
        row("g-2", &huge),
        row("g-3", &over),
        row(&"9".repeat(201), "ok"),
        row("g-5", "ok"),
    ];
    // A quoted field left open over 11 lines of 100,000 bytes: over the cap by line 15.
    let mut csv =
        format!("restaurant_id,review_id,text\ng,gc-1,ok\ng,gc-2,{huge}\ng,gc-3,\"open\n");
    csv += &format!("{}\n", "z".repeat(100_000)).repeat(11);
    csv += &format!("g,gc-4,ok\ng,gc-5,{over}\n");
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let nested = [
        format!(r#"{{"restaurant_id":"g","review_id":"gd-1","text":"ok","meta":{deep}}}"#),
        format!(r#"{{"restaurant_id":"g","review_id":"gd-2","text":{deep}}}"#),
        deep,
        row("gd-4", "ok"),
    ];
    vec![
        ("long.jsonl", jsonl.join("\n").into_bytes()),
        ("long.csv", csv.into_bytes()),
        ("deep.jsonl", nested.join("\n").into_bytes()),
    ]
}

/// UTF-16 text with its byte-order mark, and 64 KiB of random bytes.
fn odd_files() -> Vec<(&'static str, Vec<u8>)> {
    let utf16 = |text: &str, be: bool| -> Vec<u8> {
        let bom = if be { [0xFE, 0xFF] } else { [0xFF, 0xFE] };
        let units =
            text.encode_utf16()
                .flat_map(|u| if be { u.to_be_bytes() } else { u.to_le_bytes() });
        bom.into_iter().chain(units).collect()
    };
    let mut rng = fastrand::Rng::with_seed(10);
    let mut noise = || -> Vec<u8> {
        [0u8]
            .into_iter()
            .chain((0..65_536).map(|_| rng.u8(..)))
            .collect()
    };
    vec![
        (
            "utf16le.csv",
            utf16("restaurant_id,review_id,text\nr,a,b\n", false),
        ),
        ("utf16be.jsonl", utf16(&row("u16", "ok"), true)),
        ("binary.jsonl", noise()),
        ("binary.csv", noise()),
    ]
}

/// Writes the generated files into `dir`, each with what is wanted of it.
fn generated(dir: &Path) -> Vec<(PathBuf, &'static Want)> {
    let files = [long_files(), odd_files()].concat();
    let names: Vec<&str> = files.iter().map(|(n, _)| *n).collect();
    let wanted: Vec<&str> = GENERATED.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, wanted, "every generated file has its expectations");
    files
        .into_iter()
        .zip(GENERATED)
        .map(|((name, bytes), (_, want))| {
            let p = dir.join(name);
            std::fs::write(&p, bytes).unwrap();
            (p, want)
        })
        .collect()
}

/// Ingests one file and holds it to what is wanted of it; returns the rows it accepted.
fn check(
    db: &mut palate::store::Db,
    opts: &palate::ingest::IngestOptions,
    path: &Path,
    want: &Want,
) -> u64 {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let result = ingest_file(db, path, opts);
    if let Unusable(why) = want {
        let e = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains(&name) && e.contains(why),
            "{name}: {e:?} should name the file and say {why:?}"
        );
        return 0;
    }
    let r = result.unwrap_or_else(|e| panic!("{name}: {e}"));
    let got = r.rejects_file.as_deref().map(rejects).unwrap_or_default();
    let accepted = r.inserted + r.updated + r.unchanged;
    match want {
        Rows(n, expect) => {
            assert_eq!(accepted, *n, "{name}: {r:?}\n{got:#?}");
            let lines: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
            let want_lines: Vec<u64> = expect.iter().map(|(l, _)| *l).collect();
            assert_eq!(lines, want_lines, "{name}: {got:#?}");
            for ((line, reason), (_, part)) in got.iter().zip(expect.iter()) {
                assert!(
                    reason.contains(part),
                    "{name} line {line}: {reason:?} should say {part:?}"
                );
            }
        }
        _ => assert!(
            accepted == 0 && r.rejected > 0 && r.rows == r.rejected,
            "{name}: {r:?}"
        ),
    }
    accepted
}

#[test]
fn every_corpus_file_is_ingested_or_refused_with_each_bad_row_named() {
    let corpus = common::root().join("tests/data/bad");
    let mut on_disk: Vec<String> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    on_disk.sort();
    let listed: Vec<String> = COMMITTED.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "every corpus file has its expectations here, in name order"
    );
    let (dir, mut conn, opts) = setup();
    let mut files: Vec<(PathBuf, &Want)> =
        COMMITTED.iter().map(|(n, w)| (corpus.join(n), w)).collect();
    files.extend(generated(dir.path()));
    for (path, want) in &files {
        check(&mut conn.db, &opts, path, want);
    }
    stored_as_written(&conn);
    // The same files through `palate ingest` at once: the unusable ones are errors naming them,
    // and every other file's rows are stored all the same.
    let db = dir.path().join("cli.db");
    let mut args = vec![
        "ingest".to_string(),
        "--database".into(),
        db.display().to_string(),
    ];
    args.extend([
        "--rejects-dir".into(),
        dir.path().join("cli-rejects").display().to_string(),
    ]);
    args.extend(files.iter().map(|(p, _)| p.display().to_string()));
    let (code, out, err) = common::palate(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 1, "{out}{err}");
    for (path, want) in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let said = if matches!(want, Unusable(_)) {
            &err
        } else {
            &out
        };
        assert!(said.contains(&name), "{name} is not reported:\n{out}{err}");
    }
    let cli = rusqlite::Connection::open(&db).unwrap();
    assert_eq!(count(&cli, "reviews"), count(&conn, "reviews"));
    assert_eq!(count(&cli, "restaurants"), count(&conn, "restaurants"));
}

/// Values that must come through byte for byte: hostile-looking ids, exact long numbers, quoting.
fn stored_as_written(c: &rusqlite::Connection) {
    let text_of = |id: &str| -> String {
        c.query_row("SELECT text FROM reviews WHERE review_id = ?1", [id], |r| {
            r.get(0)
        })
        .unwrap_or_else(|e| panic!("review {id:?}: {e}"))
    };
    for id in [
        "'; DROP TABLE reviews; --",
        "<script>alert(1)</script>",
        "%s%n%x",
    ] {
        text_of(id);
    }
    for rid in [
        "../../etc/passwd",
        "Robert'); DROP TABLE restaurants;--",
        "-7",
    ] {
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM restaurants WHERE restaurant_id = ?1",
                [rid],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "restaurant {rid:?}");
    }
    assert_eq!(text_of("123456789012345678901234567890"), "a");
    assert_eq!(text_of("123456789012345678901234567891"), "b");
    assert_eq!(text_of("18446744073709551616"), "u64 max + 1");
    assert_eq!(text_of("q-1"), "He said \"great\" food");
    assert_eq!(text_of("q-2"), "multi\nline, with comma");
    assert_eq!(text_of("q-3"), "plain \"quote\" inside");
    assert_eq!(text_of("q-7"), "closedtrailing");
    assert_eq!(text_of("b-2"), "two lines\r\nin one field");
    assert_eq!(text_of("kc-6"), "control \u{1b}[31m in text is kept");
    assert_eq!(text_of("d-2"), "two");
}
