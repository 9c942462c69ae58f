//! One behavioural suite for both vector index backends: the embedded exact index and a real
//! Qdrant server. Each case checks a backend's selection against the exact algorithm on the
//! same vectors (`select_exact`), and what a user relies on: small restaurants whole, the TOP-K
//! then diverse reviews, one restaurant never answered with another's reviews, edited and
//! removed reviews followed, re-runs idempotent. Then the sample data with the real embedding
//! model: the two backends must select the same reviews for every restaurant.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::sync::Arc;

use palate::index::{self, select_exact, IndexConfig, VectorIndex};
#[cfg(feature = "qdrant")]
use palate::index::{Backend, IndexError, MmrBy};
use palate::ingest::{ingest_file, IngestOptions};
use palate::store::Store;

#[cfg(feature = "qdrant")]
use common::qdrant::QdrantServer;

const MODEL: &str = "unit-vectors";

/// Reviews whose text names their vector: `v:x,y,z …`.
fn line(restaurant: &str, review: &str, v: [f32; 3], note: &str) -> String {
    serde_json::json!({
        "restaurant_id": restaurant,
        "review_id": review,
        "text": format!("v:{},{},{} {note}", v[0], v[1], v[2]),
    })
    .to_string()
}

fn vector_of(text: &str) -> Vec<f32> {
    let v = text.strip_prefix("v:").unwrap().split(' ').next().unwrap();
    let v: Vec<f32> = v.split(',').map(|x| x.parse().unwrap()).collect();
    palate::embed::normalise(v)
}

struct Data {
    dir: tempfile::TempDir,
    store: Store,
}

impl Data {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("w.db")).unwrap();
        Self { dir, store }
    }

    /// Ingests `lines` as one JSONL file, then stores each new text's vector.
    async fn load(&self, name: &str, lines: &[String]) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let opts = IngestOptions {
            max_review_bytes: 4000,
            rejects_dir: self.dir.path().join("rejects"),
            stop: None,
            shard: None,
        };
        self.store
            .with_db(move |db| ingest_file(db, &path, &opts))
            .await
            .unwrap()
            .unwrap();
        let todo = self
            .store
            .missing_embeddings(MODEL.into(), None, 100_000)
            .await
            .unwrap();
        let vecs = todo.into_iter().map(|(h, t)| (h, vector_of(&t))).collect();
        self.store.put_embeddings(MODEL.into(), vecs).await.unwrap();
    }

    /// What the exact algorithm selects from the restaurant's stored vectors.
    async fn expected(&self, restaurant: &str, k: usize, m: usize) -> Vec<String> {
        let items: Vec<(String, Vec<f32>)> = (self.store)
            .restaurant_vectors(restaurant.into(), MODEL.into())
            .await
            .unwrap()
            .into_iter()
            .map(Into::into)
            .collect();
        ids(&select_exact(&items, k, m, 0.5))
    }
}

fn ids(s: &palate::index::Selection) -> Vec<String> {
    s.review_ids().map(str::to_string).collect()
}

fn big_restaurant() -> Vec<String> {
    let mut l = Vec::new();
    // A cluster near x, and two smaller groups: the diverse picks should reach them.
    for (i, y) in [0.0, 0.05, 0.1, 0.12, 0.15, 0.2].iter().enumerate() {
        l.push(line(
            "big",
            &format!("big-x{i}"),
            [1.0, *y, 0.02 * i as f32],
            "noodles",
        ));
    }
    l.push(line("big", "big-y0", [0.1, 1.0, 0.0], "parking"));
    l.push(line("big", "big-y1", [0.15, 1.0, 0.05], "parking"));
    l.push(line("big", "big-z0", [0.1, 0.0, 1.0], "service"));
    l.push(line("big", "big-z1", [0.1, 0.05, 1.0], "service"));
    // The same text twice: identical vectors, ties broken by review id on both backends.
    l.push(line("big", "big-dup-b", [1.0, 0.07, 0.0], "same"));
    l.push(line("big", "big-dup-a", [1.0, 0.07, 0.0], "same"));
    l
}

fn other_restaurants() -> Vec<String> {
    let mut l = vec![
        line("small", "small-0", [1.0, 0.0, 0.0], "a"),
        line("small", "small-1", [0.0, 1.0, 0.0], "b"),
        line("small", "small-2", [0.0, 0.0, 1.0], "c"),
    ];
    // Right at big's centroid: a search not filtered by restaurant would return these first.
    for i in 0..5 {
        l.push(line("decoy", &format!("decoy-{i}"), [1.0, 0.3, 0.2], "x"));
    }
    l
}

/// The behaviour every backend must have; `open` makes the backend under test over `store`.
async fn contract<F, Fut>(name: &str, open: F)
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = Arc<dyn VectorIndex>>,
{
    let d = Data::new();
    let mut all = big_restaurant();
    all.extend(other_restaurants());
    d.load("a.jsonl", &all).await;
    let index = open(d.store.clone()).await;

    // A restaurant with K reviews or fewer: all of them, nothing diverse.
    let s = index.select("small", 5, 2, 0.5).await.unwrap();
    assert_eq!((s.representative.len(), s.diverse.len()), (3, 0), "{name}");
    assert_eq!(ids(&s), d.expected("small", 5, 2).await, "{name}: small");

    // The decoys searched first, so a backend holding every restaurant's points has theirs.
    let decoy = index.select("decoy", 3, 1, 0.5).await.unwrap();
    assert_eq!(
        ids(&decoy),
        d.expected("decoy", 3, 1).await,
        "{name}: decoy"
    );

    // TOP-K nearest the centroid, then diverse picks from the other groups.
    let s = index.select("big", 3, 2, 0.5).await.unwrap();
    assert_eq!(ids(&s), d.expected("big", 3, 2).await, "{name}: big");
    assert!(
        s.representative
            .iter()
            .all(|h| h.review_id.starts_with("big-x") || h.review_id.starts_with("big-dup")),
        "{name}: {s:?}"
    );
    let diverse: Vec<&str> = s.diverse.iter().map(|h| h.review_id.as_str()).collect();
    assert!(
        diverse.iter().any(|i| i.starts_with("big-y"))
            && diverse.iter().any(|i| i.starts_with("big-z")),
        "{name}: diverse {diverse:?}"
    );
    assert!(
        ids(&s).iter().all(|i| i.starts_with("big-")),
        "{name}: another restaurant's review"
    );

    // The same question again: the same answer.
    assert_eq!(
        ids(&index.select("big", 3, 2, 0.5).await.unwrap()),
        ids(&s),
        "{name}: re-run"
    );
    // Every review when K covers them, in the exact order.
    let everything = index.select("big", 20, 4, 0.5).await.unwrap();
    assert_eq!(
        ids(&everything),
        d.expected("big", 20, 4).await,
        "{name}: all"
    );
    assert_eq!(everything.representative.len(), 12);

    // An edited review moves; a removed one is gone.
    let mut edited = big_restaurant();
    edited[0] = line(
        "big",
        "big-x0",
        [0.0, 0.3, 1.0],
        "edited: now about service",
    );
    d.load("b.jsonl", &edited).await;
    let db = d.dir.path().join("w.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute("DELETE FROM reviews WHERE review_id = 'big-y1'", [])
        .unwrap();
    let s = index.select("big", 3, 2, 0.5).await.unwrap();
    assert_eq!(
        ids(&s),
        d.expected("big", 3, 2).await,
        "{name}: after the edit"
    );
    let all = index.select("big", 20, 4, 0.5).await.unwrap();
    assert!(
        !ids(&all).contains(&"big-y1".to_string()),
        "{name}: removed review returned"
    );
    assert_eq!(all.representative.len(), 11, "{name}");

    // No vectors: an empty selection, not an error.
    assert!(index
        .select("nobody", 3, 2, 0.5)
        .await
        .unwrap()
        .representative
        .is_empty());
}

#[tokio::test]
async fn the_embedded_index_keeps_the_contract() {
    contract("embedded", |store| async move {
        index::open(&IndexConfig::default(), store, MODEL)
            .await
            .unwrap()
    })
    .await;
}

#[cfg(feature = "qdrant")]
fn qdrant_config(url: &str, collection: &str, mmr: MmrBy) -> IndexConfig {
    IndexConfig {
        backend: Backend::Qdrant,
        url: url.to_string(),
        collection: Some(collection.to_string()),
        mmr,
        upsert_batch: 4, // several batches even for these small restaurants
        ..IndexConfig::default()
    }
}

#[cfg(feature = "qdrant")]
async fn point_count(url: &str, collection: &str, restaurant: &str) -> u64 {
    use qdrant_client::qdrant::{Condition, CountPointsBuilder, Filter};
    let c = qdrant_client::Qdrant::from_url(url)
        .skip_compatibility_check()
        .build()
        .unwrap();
    let f = Filter::must([Condition::matches("restaurant_id", restaurant.to_string())]);
    let r = c
        .count(CountPointsBuilder::new(collection).filter(f).exact(true))
        .await
        .unwrap();
    r.result.unwrap().count
}

#[cfg(feature = "qdrant")]
#[tokio::test]
async fn the_qdrant_index_keeps_the_contract() {
    let Some(q) = QdrantServer::start() else {
        return;
    };
    let url = q.url.clone();
    contract("qdrant", |store| {
        let url = url.clone();
        async move {
            let cfg = qdrant_config(&url, "contract", MmrBy::Palate);
            index::open(&cfg, store, MODEL).await.unwrap()
        }
    })
    .await;
    // One point per stored review of each restaurant searched: the edited review's old point
    // and the removed review's point were deleted, and re-runs added none. A restaurant's points
    // are written when it is first searched.
    assert_eq!(point_count(&q.url, "contract", "big").await, 11);
    assert_eq!(point_count(&q.url, "contract", "small").await, 3);
    assert_eq!(point_count(&q.url, "contract", "decoy").await, 5);
}

#[cfg(feature = "qdrant")]
#[tokio::test]
async fn qdrant_refuses_a_collection_of_another_dimension_and_its_own_mmr_stays_in_the_restaurant()
{
    let Some(q) = QdrantServer::start() else {
        return;
    };
    let d = Data::new();
    let mut all = big_restaurant();
    all.extend(other_restaurants());
    d.load("a.jsonl", &all).await;

    // Qdrant's own MMR: K nearest, then its diverse picks, all of the restaurant's.
    let cfg = qdrant_config(&q.url, "server-mmr", MmrBy::Server);
    let index = index::open(&cfg, d.store.clone(), MODEL).await.unwrap();
    let s = index.select("big", 3, 2, 0.5).await.unwrap();
    let exact = d.expected("big", 3, 2).await;
    assert_eq!(
        ids(&s)[..3],
        exact[..3],
        "the TOP-K is the server's exact search"
    );
    assert_eq!(s.diverse.len(), 2);
    let picked = ids(&s);
    assert!(picked.iter().all(|i| i.starts_with("big-")), "{picked:?}");
    assert_eq!(
        picked.len(),
        picked
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    );
    println!("qdrant's MMR picked {picked:?}; palate's exact MMR {exact:?}");

    // A collection made for 3-dimensional vectors, now asked to hold 5-dimensional ones.
    let d5 = Data::new();
    let five = serde_json::json!({"restaurant_id": "r", "review_id": "r-0", "text": "v:1,0,0,0,0"});
    d5.load("five.jsonl", &[five.to_string()]).await;
    let cfg = qdrant_config(&q.url, "server-mmr", MmrBy::Palate);
    let err = match index::open(&cfg, d5.store.clone(), MODEL).await {
        Err(e) => e,
        Ok(_) => panic!("a 3-dimensional collection accepted 5-dimensional vectors"),
    };
    assert!(
        matches!(
            err,
            IndexError::Dimension {
                found: 3,
                expected: 5,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("server-mmr"), "{err}");

    // A server that is not there: a clear error naming it.
    let mut gone = qdrant_config("http://127.0.0.1:9", "x", MmrBy::Palate);
    gone.timeout_s = 2;
    let err = index::open(&gone, d.store.clone(), MODEL)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
}

#[cfg(feature = "qdrant")]
/// The sample data embedded by the real model: both backends select the same reviews.
#[tokio::test]
async fn on_the_sample_data_qdrant_selects_the_same_reviews_as_the_embedded_index() {
    let Some(q) = QdrantServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).unwrap();
    let opts = IngestOptions {
        max_review_bytes: 4000,
        rejects_dir: dir.path().join("rejects"),
        stop: None,
        shard: None,
    };
    for f in ["data/reviews.jsonl", "data/reviews.csv"] {
        let (p, o) = (common::root().join(f), opts.clone());
        store
            .with_db(move |db| ingest_file(db, &p, &o))
            .await
            .unwrap()
            .unwrap();
    }
    let cfg = palate::embed::EmbedConfig {
        model_dir: common::embed_model_dir(),
        ort_dylib: common::ort_dylib(),
        ..Default::default()
    };
    let embedder = palate::embed::load(&cfg).await.unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    palate::embed::embed_missing(&store, embedder.as_ref(), None, 256, &cancel)
        .await
        .unwrap();
    let model = embedder.model_id().to_string();

    let embedded = index::open(&IndexConfig::default(), store.clone(), &model)
        .await
        .unwrap();
    let collection = format!("sample-{}", std::process::id());
    let qcfg = qdrant_config(&q.url, &collection, MmrBy::Palate);
    let qdrant = index::open(&qcfg, store.clone(), &model).await.unwrap();
    let server = index::open(
        &qdrant_config(&q.url, &collection, MmrBy::Server),
        store.clone(),
        &model,
    )
    .await
    .unwrap();

    let mut restaurants = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.restaurants_after(after.clone(), 500).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.restaurant_id.clone();
        restaurants.extend(page.into_iter().map(|r| r.restaurant_id));
    }
    let (k, m) = (8, 4);
    use std::collections::BTreeMap;
    use std::time::Instant;
    let mut by_backend: BTreeMap<&str, (Vec<Vec<String>>, f64)> = BTreeMap::new();
    // Qdrant twice: the first pass upserts every point, the second only searches.
    for (name, ix) in [
        ("embedded", &embedded),
        ("qdrant (first, upserting)", &qdrant),
        ("qdrant", &qdrant),
        ("qdrant mmr=server", &server),
    ] {
        let t = Instant::now();
        let mut picks = Vec::new();
        for r in &restaurants {
            picks.push(ids(&ix.select(r, k, m, 0.5).await.unwrap()));
        }
        by_backend.insert(name, (picks, t.elapsed().as_secs_f64() * 1000.0));
    }
    let (emb, _) = &by_backend["embedded"];
    let (qd, _) = &by_backend["qdrant"];
    let (srv, _) = &by_backend["qdrant mmr=server"];
    let mut overlap = 0;
    for (i, r) in restaurants.iter().enumerate() {
        println!("{r}: embedded {:?}", emb[i]);
        println!("{r}: qdrant   {:?}", qd[i]);
        assert_eq!(
            emb[i], qd[i],
            "{r}: the backends selected different reviews"
        );
        assert_eq!(emb[i], by_backend["qdrant (first, upserting)"].0[i]);
        overlap += srv[i].iter().filter(|id| emb[i].contains(id)).count();
    }
    let total: usize = emb.iter().map(Vec::len).sum();
    for (name, (_, ms)) in &by_backend {
        println!(
            "{name}: {} restaurants selected in {ms:.1} ms ({:.2} ms each)",
            restaurants.len(),
            ms / restaurants.len() as f64
        );
    }
    println!(
        "identical selections: {} of {} restaurants ({total} reviews); qdrant's own MMR shares {overlap} of {total} with palate's",
        restaurants.len(),
        restaurants.len()
    );
    assert!(restaurants.len() >= 30, "{} restaurants", restaurants.len());
}

#[cfg(not(feature = "qdrant"))]
#[test]
fn qdrant_backend_not_built() {
    println!(
        "skipped: the Qdrant tests need --features qdrant (scripts/test.sh builds --features full)"
    );
}
