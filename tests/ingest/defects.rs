//! One regression test per ingest defect of issue 10, named after it.

use palate::ingest::ingest_file;

use super::{count, rejects, setup};

/// Writes `name` in the test's folder and ingests it; returns the report and its rejects.
fn ingest_text(
    name: &str,
    bytes: &[u8],
) -> (
    tempfile::TempDir,
    super::Opened,
    palate::ingest::IngestReport,
    Vec<(u64, String)>,
) {
    let (dir, mut conn, opts) = setup();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let r = ingest_file(&mut conn.db, &path, &opts).unwrap();
    let rej = r.rejects_file.as_deref().map(rejects).unwrap_or_default();
    (dir, conn, r, rej)
}

fn text_of(c: &rusqlite::Connection, id: &str) -> String {
    c.query_row("SELECT text FROM reviews WHERE review_id = ?1", [id], |r| {
        r.get(0)
    })
    .unwrap()
}

#[test]
fn csv_stray_quote_does_not_swallow_later_rows() {
    let csv = "restaurant_id,review_id,text,rating\n\
               r,s-1,\"a stray quote,4\n\
               r,s-2,second,5\n\
               r,s-3,third,3\n\
               r,s-4,\"fourth, quoted\",2\n";
    let (_dir, conn, r, rej) = ingest_text("stray.csv", csv.as_bytes());
    assert_eq!((r.inserted, r.rejected), (3, 1), "{r:?} {rej:?}");
    assert_eq!(rej[0].0, 2);
    assert!(
        rej[0]
            .1
            .contains("the record starting on line 2: a quoted field is not closed before line 3"),
        "{}",
        rej[0].1
    );
    assert_eq!(text_of(&conn, "s-2"), "second");
    assert_eq!(text_of(&conn, "s-4"), "fourth, quoted");
}

#[test]
fn csv_stray_quote_in_a_large_file_is_capped_and_the_rows_after_it_are_read() {
    // The lines after the stray quote are not valid rows (rating "bad"), so nothing stops the
    // open field but the cap on a record's bytes (1 MiB here); each is then read on its own.
    let mut csv = String::from("restaurant_id,review_id,text,rating\nr,x,\"open,1\n");
    let n = 30_000;
    for i in 0..n {
        csv.push_str(&format!("r,y{i},some review text that goes on,bad\n"));
    }
    csv.push_str("r,z,the last row,4\n");
    let (_dir, conn, r, rej) = ingest_text("big.csv", csv.as_bytes());
    assert_eq!((r.inserted, r.rejected), (1, 1 + n), "{r:?}");
    assert_eq!(rej[0].0, 2);
    assert!(
        rej[0].1.contains("longer than 1048576 bytes"),
        "{}",
        rej[0].1
    );
    assert!(rej[1..]
        .iter()
        .all(|(_, why)| why.contains("rating \"bad\"")));
    assert_eq!(rej.last().unwrap().0, 2 + n);
    assert_eq!(text_of(&conn, "z"), "the last row");
}

#[test]
fn csv_unterminated_quote_at_the_end_is_rejected_with_its_line() {
    let csv = "restaurant_id,review_id,text\nr,a,fine\nr,b,\"never closed\nmore\n";
    let (_dir, _conn, r, rej) = ingest_text("open.csv", csv.as_bytes());
    assert_eq!(r.inserted, 1);
    assert_eq!(rej.len(), 2, "{rej:?}");
    assert_eq!(rej[0].0, 3);
    assert!(
        rej[0].1.contains("not closed before the end of the file"),
        "{rej:?}"
    );
    assert_eq!(rej[1], (4, "expected 3 fields, found 1".to_string()));
}

#[test]
fn csv_with_bom_and_crlf_rejects_name_the_files_lines() {
    let csv = "\u{FEFF}restaurant_id,review_id,text\r\nr,a,fine\r\nr,,no id\r\nr,c,\"two\r\nlines\"\r\nr,d,\r\n";
    let (_dir, conn, r, rej) = ingest_text("bom.csv", csv.as_bytes());
    assert_eq!(r.inserted, 2);
    let lines: Vec<u64> = rej.iter().map(|(l, _)| *l).collect();
    assert_eq!(lines, [3, 6], "{rej:?}");
    assert_eq!(text_of(&conn, "c"), "two\r\nlines");
}

#[test]
fn csv_c1_control_in_an_id_is_rejected() {
    let csv =
        "restaurant_id,review_id,text\nr\u{85},a,next line at the end\nr,b\u{9B},csi\nr,c,fine\n";
    let (_dir, conn, r, rej) = ingest_text("c1.csv", csv.as_bytes());
    assert_eq!((r.inserted, r.rejected), (1, 2), "{rej:?}");
    assert!(
        rej[0]
            .1
            .contains("restaurant_id contains the control character U+0085"),
        "{rej:?}"
    );
    assert!(
        rej[1]
            .1
            .contains("review_id contains the control character U+009B"),
        "{rej:?}"
    );
    assert_eq!(count(&conn, "restaurants"), 1);
}

#[test]
fn jsonl_integer_ids_beyond_u64_stay_distinct() {
    let jsonl = "{\"restaurant_id\": 98765432109876543210, \"review_id\": 123456789012345678901234567890, \"text\": \"a\"}\n\
                 {\"restaurant_id\": 98765432109876543210, \"review_id\": 123456789012345678901234567891, \"text\": \"b\"}\n\
                 {\"restaurant_id\": \"r\", \"review_id\": 2.5, \"text\": \"c\"}\n";
    let (_dir, conn, r, rej) = ingest_text("big_ids.jsonl", jsonl.as_bytes());
    assert_eq!((r.inserted, r.rejected), (2, 1), "{rej:?}");
    assert_eq!(text_of(&conn, "123456789012345678901234567891"), "b");
    let rid: String = conn
        .query_row("SELECT restaurant_id FROM restaurants", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rid, "98765432109876543210");
    assert!(rej[0]
        .1
        .contains("review_id must be a string or an integer, found the number 2.5"));
}

#[test]
fn jsonl_invisible_characters_in_ids_are_rejected() {
    let jsonl = "{\"restaurant_id\": \"r1\", \"review_id\": \"a\", \"text\": \"a\"}\n\
                 {\"restaurant_id\": \"r1\\u200b\", \"review_id\": \"b\", \"text\": \"b\"}\n\
                 {\"restaurant_id\": \"r1\", \"review_id\": \"\\u2066c\\u2069\", \"text\": \"c\"}\n";
    let (_dir, conn, r, rej) = ingest_text("invisible.jsonl", jsonl.as_bytes());
    assert_eq!((r.inserted, r.rejected), (1, 2), "{rej:?}");
    assert!(rej[0]
        .1
        .contains("restaurant_id contains the invisible character U+200B"));
    assert!(rej[1]
        .1
        .contains("review_id contains the invisible character U+2066"));
    assert_eq!(count(&conn, "restaurants"), 1);
}

#[test]
fn rejects_files_of_inputs_with_the_same_name_do_not_overwrite_each_other() {
    let (dir, mut conn, opts) = setup();
    let mut files = Vec::new();
    for (sub, bad_line) in [("a", 2), ("b", 3)] {
        let folder = dir.path().join(sub);
        std::fs::create_dir_all(&folder).unwrap();
        let mut csv = String::from("restaurant_id,review_id,text\n");
        for line in 2..=3 {
            let id = format!("{sub}{line}");
            let text = if line == bad_line { "" } else { "fine" };
            csv.push_str(&format!("r,{id},{text}\n"));
        }
        let path = folder.join("reviews.csv");
        std::fs::write(&path, csv).unwrap();
        files.push((path, bad_line));
    }
    let mut seen = Vec::new();
    for (path, _) in &files {
        let r = ingest_file(&mut conn.db, path, &opts).unwrap();
        seen.push(r.rejects_file.clone().unwrap());
    }
    assert_ne!(seen[0], seen[1]);
    for ((_, bad_line), rejects_file) in files.iter().zip(&seen) {
        assert_eq!(
            rejects(rejects_file),
            [(*bad_line, "empty text".to_string())]
        );
    }
}
