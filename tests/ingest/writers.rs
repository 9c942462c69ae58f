//! Ingest against other writers and against kill -9 (issue 10, defects 3 and 4), through the
//! built binary: two `palate ingest` at once both finish; a `palate ingest` killed at random
//! moments leaves a database where every stored review's restaurant has a current row, so the next
//! `palate run` analyses it.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use palate::store::Db;
use sha2::{Digest, Sha256};

/// review_id → (restaurant_id, text) of a generated file.
type Rows = BTreeMap<String, (String, String)>;

/// Writes `n` JSONL rows over `restaurants` restaurants, in random order (so every batch touches
/// many restaurants), ids prefixed with `tag`.
fn generate(path: &Path, tag: &str, n: usize, restaurants: usize, rng: &mut fastrand::Rng) -> Rows {
    let mut rows = Rows::new();
    let mut out = String::new();
    for i in 0..n {
        let rid = format!("{tag}r{}", rng.usize(..restaurants));
        let id = format!("{tag}-{i}");
        let text = format!(
            "review {i} of {rid}: {} stars, words {}",
            rng.u8(1..=5),
            rng.u64(..)
        );
        let row = serde_json::json!({"restaurant_id": rid, "review_id": id, "text": text});
        out.push_str(&row.to_string());
        out.push('\n');
        rows.insert(id, (rid, text));
    }
    std::fs::write(path, out).unwrap();
    rows
}

/// Runs `palate ingest` to its end; whether it succeeded.
fn run_quietly(file: &Path, db: &Path) -> bool {
    let status = ingest(file, db).stdout(Stdio::null()).status();
    status.unwrap().success()
}

fn ingest(file: &Path, db: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_palate"));
    c.args(["ingest", file.to_str().unwrap(), "--database"])
        .arg(db)
        .arg("--rejects-dir")
        .arg(db.with_extension("rejects"))
        .env("RUST_LOG", "palate=warn");
    c
}

/// restaurant → review_id → content hash of the stored reviews, each checked to be one of
/// `rows` and stored once; `None` when the database has no schema yet.
type ByRestaurant = BTreeMap<String, BTreeMap<String, String>>;

fn stored_reviews(c: &rusqlite::Connection, rows: &Rows) -> Option<ByRestaurant> {
    let sql = "SELECT review_id, restaurant_id, text, content_hash FROM reviews";
    let mut q = c.prepare(sql).ok()?;
    let mut by_restaurant = ByRestaurant::new();
    let mut it = q.query([]).unwrap();
    while let Some(r) = it.next().unwrap() {
        let (id, rid, text, hash): (String, String, String, String) = (
            r.get(0).unwrap(),
            r.get(1).unwrap(),
            r.get(2).unwrap(),
            r.get(3).unwrap(),
        );
        assert_eq!(rows.get(&id), Some(&(rid.clone(), text)), "review {id}");
        let twice = by_restaurant
            .entry(rid)
            .or_default()
            .insert(id.clone(), hash);
        assert!(twice.is_none(), "review {id} stored twice");
    }
    Some(by_restaurant)
}

/// The reviews hash of a restaurant, computed here from its stored reviews as the store
/// documents it: sha256 over (review_id, content_hash) pairs in review_id order.
fn reviews_hash(reviews: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (id, hash) in reviews {
        h.update(id.as_bytes());
        h.update([0]);
        h.update(hash.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks what a run would see: the file is intact, no review is stored twice, each stored
/// review is one of `rows`, and every restaurant with stored reviews has a restaurant row whose
/// reviews hash and count (what `palate run` decides on) are those of its stored reviews.
/// Returns the number of stored reviews.
fn check_consistent(db: &Path, rows: &Rows) -> usize {
    if !db.exists() {
        return 0;
    }
    let c = rusqlite::Connection::open(db).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let Some(by_restaurant) = stored_reviews(&c, rows) else {
        return 0; // killed before the schema was created
    };
    let seen = Db::open(db)
        .unwrap()
        .restaurants_after("", 1 << 30)
        .unwrap();
    let seen: BTreeMap<_, _> = seen
        .into_iter()
        .map(|r| (r.restaurant_id.clone(), r))
        .collect();
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        by_restaurant.keys().collect::<Vec<_>>(),
        "restaurant rows are those of the stored reviews"
    );
    for (rid, reviews) in &by_restaurant {
        let row = &seen[rid];
        assert_eq!(
            (&row.reviews_hash, row.review_count),
            (&reviews_hash(reviews), reviews.len()),
            "restaurant {rid}: its hash must be that of its stored reviews"
        );
    }
    by_restaurant.values().map(BTreeMap::len).sum()
}

#[test]
fn two_concurrent_ingests_into_one_database_both_store_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    drop(Db::open(&db).unwrap());
    let mut rng = fastrand::Rng::with_seed(3);
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let mut rows = generate(&a, "a", 20_000, 100, &mut rng);
    rows.extend(generate(&b, "b", 20_000, 100, &mut rng));
    let out = |f: &Path| {
        ingest(f, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    };
    let (pa, pb) = (out(&a).unwrap(), out(&b).unwrap());
    for p in [pa, pb] {
        let o = p.wait_with_output().unwrap();
        let text =
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{text}");
        assert!(text.contains("20000 rows, 20000 new"), "{text}");
    }
    assert_eq!(check_consistent(&db, &rows), 40_000);
}

#[test]
fn kill_9_during_ingest_leaves_every_stored_review_with_a_current_restaurant() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let file = dir.path().join("big.jsonl");
    let rows = generate(&file, "k", 20_000, 200, &mut rng);
    // One whole ingest, to know how long one takes.
    let t = Instant::now();
    let whole = dir.path().join("whole.db");
    assert!(run_quietly(&file, &whole));
    let full = t.elapsed();
    assert_eq!(check_consistent(&whole, &rows), rows.len());
    let (trials, mut partial) = (24, 0);
    for trial in 0..trials {
        let db = dir.path().join(format!("trial{trial}.db"));
        let mut child = ingest(&file, &db)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(rng.f64()));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let stored = check_consistent(&db, &rows);
        partial += usize::from(stored > 0 && stored < rows.len());
        // The restart: ingesting the file again stores every row exactly once.
        assert!(run_quietly(&file, &db));
        assert_eq!(check_consistent(&db, &rows), rows.len(), "trial {trial}");
    }
    eprintln!(
        "kill -9 (seed {seed}): {trials} trials, {partial} left a partly ingested file, whole ingest {:.2} s, test {:.1} s",
        full.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        partial >= 5,
        "too few kills landed mid-ingest ({partial} of {trials}): seed {seed}"
    );
}
