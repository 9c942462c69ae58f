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
    Rows(u64, Vec<(u64, &'static str)>),
    /// Random bytes: no row accepted, every non-blank line rejected.
    Garbage,
    /// The whole file is refused with this in the error.
    Unusable(&'static str),
}

use Want::{Garbage, Rows, Unusable};

/// Expectations for the committed corpus, in the order it is ingested (by name).
fn committed() -> Vec<(&'static str, Want)> {
    let utf8 = |lines: &[u64], what: &'static str| lines.iter().map(|&l| (l, what)).collect();
    vec![
        ("blank_lines.jsonl", Rows(0, vec![])),
        ("bom_crlf.csv", Rows(3, vec![(3, "missing review_id"), (6, "rating \"five\" is not a number")])),
        ("controls.csv", Rows(2, vec![
            (3, "review_id contains the control character U+0000"),
            (4, "review_id contains the control character U+0085"),
            (5, "text contains a NUL character"),
            (6, "restaurant_id contains the invisible character U+200D"),
        ])),
        ("controls.jsonl", Rows(2, vec![
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
        ("cr_only.csv", Rows(2, vec![(3, "empty text")])),
        ("cr_only.jsonl", Rows(2, vec![(2, "invalid JSON")])),
        ("dates.csv", Rows(2, [2, 4, 5, 6].map(|l| (l, "is not an RFC 3339 timestamp")).to_vec())),
        ("dups_a.jsonl", Rows(2, vec![(3, "duplicate review_id \"d-1\" (first on line 1)")])),
        ("dups_b.jsonl", Rows(2, vec![
            (2, "review_id \"d-2\" already belongs to restaurant \"d\", not \"e\""),
            (4, "duplicate review_id \"d-3\" (first on line 3)"),
        ])),
        ("empty.csv", Unusable("the file is empty")),
        ("empty.jsonl", Rows(0, vec![])),
        ("header_only.csv", Rows(0, vec![])),
        ("header_wrong.csv", Unusable("must name restaurant_id, review_id and text")),
        ("hostile_ids.jsonl", Rows(5, vec![])),
        ("nested.jsonl", Rows(1, vec![
            (2, "text must be a string, found an object"),
            (3, "duplicate field `text`"),
            (4, "not a JSON object"),
            (5, "not a JSON object"),
        ])),
        ("numbers.jsonl", Rows(5, vec![
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
        ("quoting.csv", Rows(6, vec![
            (6, "the record starting on line 6: a quoted field is not closed before line 7"),
            (8, "empty text"),
            (10, "expected 4 fields, found 5"),
            (11, "expected 4 fields, found 5"),
            (13, "the record starting on line 13: a quoted field is not closed before the end of the file"),
            (14, "expected 4 fields, found 1"),
        ])),
        ("utf8.csv", Rows(2, [(3, "in column text"), (4, "in column text"), (5, "in column text"),
            (6, "in column text"), (7, "invalid UTF-8 in column review_id at byte 2")].to_vec())),
        ("utf8.jsonl", Rows(2, utf8(&[2, 3, 4, 5, 7], "invalid UTF-8 at byte"))),
        ("whitespace.csv", Rows(1, vec![
            (2, "empty text"),
            (3, "empty text"),
            (4, "empty text"),
            (5, "text has no visible characters"),
        ])),
    ]
}

/// Files too big or too binary to commit, written into `dir`, with their expectations.
fn generated(dir: &Path) -> Vec<(PathBuf, Want)> {
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let row = |id: &str, text: &str| {
        format!(r#"{{"restaurant_id":"g","review_id":"{id}","text":"{text}"}}"#)
    };
    let (huge, over) = ("x".repeat(1_100_000), "y".repeat(4001));
    let jsonl = [
        row("g-1", "ok"),
        row("g-2", &huge),
        row("g-3", &over),
        row(&"9".repeat(201), "ok"),
        row("g-5", "ok"),
    ];
    let z = "z".repeat(100_000);
    let mut csv =
        format!("restaurant_id,review_id,text\ng,gc-1,ok\ng,gc-2,{huge}\ng,gc-3,\"open\n");
    csv += &format!("{z}\n").repeat(11);
    csv += &format!("g,gc-4,ok\ng,gc-5,{over}\n");
    let mut long_csv = vec![
        (3, "line is longer than 1048576 bytes"),
        (4, "by line 15 it is longer than 1048576 bytes"),
    ];
    long_csv.extend((5..=15).map(|l| (l, "expected 3 fields, found 1")));
    long_csv.push((17, "over the limit of 4000"));
    let deep = |n: usize| "[".repeat(n) + &"]".repeat(n);
    let nested = [
        format!(
            r#"{{"restaurant_id":"g","review_id":"gd-1","text":"ok","meta":{}}}"#,
            deep(100_000)
        ),
        format!(
            r#"{{"restaurant_id":"g","review_id":"gd-2","text":{}}}"#,
            deep(100_000)
        ),
        deep(100_000),
        row("gd-4", "ok"),
    ];
    let utf16 = |bom: [u8; 2], text: &str, be: bool| -> Vec<u8> {
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
            write("long.jsonl", jsonl.join("\n").into_bytes()),
            Rows(
                2,
                vec![
                    (2, "line is longer than 1048576 bytes"),
                    (3, "over the limit of 4000"),
                    (4, "review_id is longer than 200 characters"),
                ],
            ),
        ),
        (write("long.csv", csv.into_bytes()), Rows(2, long_csv)),
        (
            write("deep.jsonl", nested.join("\n").into_bytes()),
            Rows(
                2,
                vec![(2, "recursion limit exceeded"), (3, "not a JSON object")],
            ),
        ),
        (
            write(
                "utf16le.csv",
                utf16([0xFF, 0xFE], "restaurant_id,review_id,text\nr,a,b\n", false),
            ),
            Unusable("UTF-16"),
        ),
        (
            write(
                "utf16be.jsonl",
                utf16([0xFE, 0xFF], &row("u16", "ok"), true),
            ),
            Unusable("UTF-16"),
        ),
        (write("binary.jsonl", noise()), Garbage),
        (write("binary.csv", noise()), Unusable("header row")),
    ]
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
            for ((line, reason), (_, part)) in got.iter().zip(expect) {
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
    let committed = committed();
    let listed: Vec<String> = committed.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "every corpus file has its expectations here, in name order"
    );
    let (dir, mut conn, opts) = setup();
    let mut files: Vec<(PathBuf, Want)> = committed
        .into_iter()
        .map(|(n, w)| (corpus.join(n), w))
        .collect();
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
