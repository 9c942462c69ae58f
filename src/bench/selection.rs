//! `palate bench selection`: TOP-K nearest the centroid + MMR for one restaurant of many
//! reviews, timed through each backend: the exact algorithm on vectors in memory, the embedded
//! index (its SQLite read included), and a Qdrant server when one is given (its points already
//! written: the first search of a restaurant also uploads them, timed apart). Every figure is
//! the mean of `per_round` selections, repeated over `rounds` rounds with the rounds' spread.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::index::{self, select_exact, IndexConfig, VectorIndex};
use crate::ingest::{ingest_file, IngestOptions};
use crate::store::Store;

/// What the selection benchmark runs on.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionWorkload {
    pub reviews: usize,
    pub dim: usize,
    pub k: usize,
    pub diverse: usize,
    pub lambda: f32,
    pub rounds: usize,
    pub per_round: usize,
    /// A Qdrant server's gRPC URL; none: the Qdrant rows are left out.
    pub qdrant_url: Option<String>,
}

/// One backend's figures, in milliseconds per selection.
#[derive(Debug, Clone, Serialize)]
pub struct SelectionTiming {
    pub backend: String,
    /// Each round's mean.
    pub rounds_ms: Vec<f64>,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

const MODEL: &str = "bench-random";
const RESTAURANT: &str = "bench";

/// Runs the benchmark in a temporary work database.
pub async fn selection(w: &SelectionWorkload) -> anyhow::Result<Vec<SelectionTiming>> {
    let dir = tempfile_dir()?;
    let store = Store::open(&dir.join("bench.db"))?;
    let vectors = load(&store, &dir, w).await?;
    let mut out = Vec::new();
    out.push(
        time("exact, in memory", w, || async {
            select_exact(&vectors, w.k, w.diverse, w.lambda);
            Ok(())
        })
        .await?,
    );
    out.push(
        time("SQLite read of the vectors only", w, || async {
            store
                .restaurant_vectors(RESTAURANT.into(), MODEL.into())
                .await?;
            Ok(())
        })
        .await?,
    );
    let embedded = index::open(&IndexConfig::default(), store.clone(), MODEL).await?;
    out.push(time_index("embedded (SQLite read + exact)", w, &embedded).await?);
    if let Some(url) = &w.qdrant_url {
        for mmr in [index::MmrBy::Palate, index::MmrBy::Server] {
            let cfg = IndexConfig {
                backend: index::Backend::Qdrant,
                url: url.clone(),
                collection: Some(format!("palate_bench_{}", std::process::id())),
                mmr,
                ..IndexConfig::default()
            };
            let q = index::open(&cfg, store.clone(), MODEL).await?;
            let t = Instant::now();
            q.select(RESTAURANT, w.k, w.diverse, w.lambda).await?; // uploads the points
            let first = t.elapsed().as_secs_f64() * 1000.0;
            if mmr == index::MmrBy::Palate {
                out.push(SelectionTiming {
                    backend: "qdrant, first search (upserts every point)".into(),
                    rounds_ms: vec![first],
                    mean_ms: first,
                    min_ms: first,
                    max_ms: first,
                });
            }
            let name = match mmr {
                index::MmrBy::Palate => "qdrant (server search, palate's MMR)",
                index::MmrBy::Server => "qdrant (server search, Qdrant's MMR)",
            };
            out.push(time_index(name, w, &q).await?);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(out)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("palate-bench-selection-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// One restaurant of `w.reviews` reviews with random vectors around 8 topics (a review is its
/// topic's direction plus noise, normalised), stored as a run would store them.
async fn load(
    store: &Store,
    dir: &Path,
    w: &SelectionWorkload,
) -> anyhow::Result<Vec<(String, Vec<f32>)>> {
    let path = dir.join("reviews.jsonl");
    let lines: Vec<String> = (0..w.reviews)
        .map(|i| {
            serde_json::json!({"restaurant_id": RESTAURANT, "review_id": format!("r{i:05}"),
                               "text": format!("review number {i}")})
            .to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n")?;
    let opts = IngestOptions {
        max_review_bytes: 4000,
        rejects_dir: dir.join("rejects"),
        stop: None,
        shard: None,
    };
    store
        .with_db(move |db| ingest_file(db, &path, &opts))
        .await??;
    let mut rng = fastrand::Rng::with_seed(7);
    let topics: Vec<Vec<f32>> = (0..8)
        .map(|_| (0..w.dim).map(|_| rng.f32() - 0.5).collect())
        .collect();
    let todo = store
        .missing_embeddings(MODEL.into(), None, w.reviews)
        .await?;
    let vecs: Vec<(String, Vec<f32>)> = todo
        .into_iter()
        .map(|(hash, _)| {
            let t = &topics[rng.usize(..topics.len())];
            let v = t.iter().map(|x| x + 0.6 * (rng.f32() - 0.5)).collect();
            (hash, crate::embed::normalise(v))
        })
        .collect();
    store.put_embeddings(MODEL.into(), vecs).await?;
    Ok(store
        .restaurant_vectors(RESTAURANT.into(), MODEL.into())
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}

async fn time_index(
    name: &str,
    w: &SelectionWorkload,
    index: &Arc<dyn VectorIndex>,
) -> anyhow::Result<SelectionTiming> {
    time(name, w, || async {
        index.select(RESTAURANT, w.k, w.diverse, w.lambda).await?;
        Ok(())
    })
    .await
}

async fn time<F, Fut>(name: &str, w: &SelectionWorkload, f: F) -> anyhow::Result<SelectionTiming>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    f().await?; // warm-up
    let mut rounds_ms = Vec::with_capacity(w.rounds);
    for _ in 0..w.rounds {
        let t = Instant::now();
        for _ in 0..w.per_round {
            f().await?;
        }
        rounds_ms.push(t.elapsed().as_secs_f64() * 1000.0 / w.per_round as f64);
    }
    let mean_ms = rounds_ms.iter().sum::<f64>() / rounds_ms.len().max(1) as f64;
    let min_ms = rounds_ms.iter().copied().fold(f64::INFINITY, f64::min);
    let max_ms = rounds_ms.iter().copied().fold(0.0, f64::max);
    Ok(SelectionTiming {
        backend: name.to_string(),
        rounds_ms,
        mean_ms,
        min_ms,
        max_ms,
    })
}
