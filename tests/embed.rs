//! The real multilingual embedding model: clear errors for missing files, and vectors that put a
//! Korean review near its English meaning and far from an unrelated one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use palate::embed::{EmbedBackend, EmbedConfig, EmbedError, Embedder, FastEmbedder};
use palate::index::dot;

fn cfg() -> EmbedConfig {
    EmbedConfig {
        model_dir: common::embed_model_dir(),
        model_id: Some("test".into()),
        ort_dylib: common::ort_dylib(),
        batch_size: 4,
        threads: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn korean_and_english_with_the_same_meaning_are_close() {
    let e = FastEmbedder::load(&cfg()).await.unwrap();
    let texts = vec![
        "국물이 진하고 정말 맛있어요".to_string(),
        "The broth is rich and really delicious".to_string(),
        "주차장이 없어서 너무 불편했어요".to_string(),
        "There was no parking, very inconvenient".to_string(),
        "short".to_string(),
    ];
    let v = e.embed(texts).await.unwrap();
    assert_eq!(v.len(), 5);
    assert!(v
        .iter()
        .all(|x| x.len() == 384 && (dot(x, x) - 1.0).abs() < 1e-3));
    // Cross-lingual pairs beat unrelated pairs (order is preserved despite length sorting).
    assert!(
        dot(&v[0], &v[1]) > dot(&v[0], &v[3]),
        "{} vs {}",
        dot(&v[0], &v[1]),
        dot(&v[0], &v[3])
    );
    assert!(dot(&v[2], &v[3]) > dot(&v[2], &v[1]));
}

#[tokio::test]
async fn missing_runtime_or_model_is_a_clear_error_not_a_panic() {
    let mut c = cfg();
    c.ort_dylib = "/nonexistent/libonnxruntime.so".into();
    let e = FastEmbedder::load(&c).await.err().unwrap();
    assert!(matches!(e, EmbedError::NoRuntime(_)), "{e}");
    assert!(e.to_string().contains("scripts/setup.sh"));
    let mut c = cfg();
    c.model_dir = "/nonexistent/me5".into();
    let e = FastEmbedder::load(&c).await.err().unwrap();
    assert!(
        e.to_string().contains("/nonexistent/me5/model.onnx")
            || e.to_string().contains("/nonexistent/me5"),
        "{e}"
    );
}

/// The plan stage's token counter with a real `tokenizer.json` (the embedding model's, the one
/// at hand here; the job names the served LLM's in production).
#[test]
fn a_real_tokenizer_file_counts_tokens() {
    use palate::plan::{estimate_tokens, TokenCounter};
    let t = TokenCounter::load(Some(&common::embed_model_dir().join("tokenizer.json"))).unwrap();
    let text = "국물이 진하고 정말 맛있어요. The broth is rich.";
    let n = t.count(text);
    assert!((8..30).contains(&n), "{n} tokens");
    assert_ne!(
        n,
        estimate_tokens(text),
        "counted by the tokenizer, not estimated"
    );
    assert_eq!(t.count(""), 0);
}

/// What every embedder must do, whatever its model: one normalised vector per text of one
/// dimension, in the order given, the same for the same text however it is batched, and
/// nothing for nothing (within `tol` of cosine 1: llama.cpp's quantised batches differ by up to
/// ~0.012 with their company). Then `embed_missing` embeds each stored text once per model.
async fn embedder_contract(e: &dyn Embedder, tol: f32) {
    let texts: Vec<String> = [
        "국물이 진하고 정말 맛있어요",
        "The broth is rich and really delicious",
        "short",
        "주차장이 없어서 너무 불편했어요. 다음에는 대중교통으로 와야겠어요. 그래도 음식은 훌륭했습니다.",
        "The broth is rich and really delicious",
        "Service was slow on a Friday night but the staff apologised and the dumplings were worth it.",
    ]
    .map(String::from)
    .to_vec();
    let v = e.embed(texts.clone()).await.unwrap();
    assert_eq!(v.len(), texts.len());
    let dim = v[0].len();
    assert!(dim > 0 && v.iter().all(|x| x.len() == dim));
    assert!(
        v.iter().all(|x| (dot(x, x) - 1.0).abs() < 1e-3),
        "not normalised"
    );
    let same = |a: &[f32], b: &[f32]| (dot(a, b) - 1.0).abs() < tol;
    assert!(same(&v[1], &v[4]), "the same text: {}", dot(&v[1], &v[4]));
    // In another order and one text at a time: the same vectors.
    let mut reversed = texts.clone();
    reversed.reverse();
    let r = e.embed(reversed).await.unwrap();
    for (i, x) in r.iter().rev().enumerate() {
        assert!(same(x, &v[i]), "text {i} with its batch: {}", dot(x, &v[i]));
    }
    let one = e.embed(vec![texts[3].clone()]).await.unwrap();
    assert!(same(&one[0], &v[3]), "{}", dot(&one[0], &v[3]));
    assert!(e.embed(Vec::new()).await.unwrap().is_empty());

    // Through the store: every review once, then nothing left to embed.
    let dir = tempfile::tempdir().unwrap();
    let store = palate::store::Store::open(&dir.path().join("e.db")).unwrap();
    let path = common::root().join("data/demo.jsonl");
    let opts = palate::ingest::IngestOptions {
        max_review_bytes: 4000,
        rejects_dir: dir.path().join("rejects"),
        stop: None,
        shard: None,
    };
    store
        .with_db(move |db| palate::ingest::ingest_file(db, &path, &opts))
        .await
        .unwrap()
        .unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let n = palate::embed::embed_missing(&store, e, None, 64, &cancel)
        .await
        .unwrap();
    assert!(n > 100, "{n} embedded");
    assert_eq!(
        palate::embed::embed_missing(&store, e, None, 64, &cancel)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store.embedding_dim(e.model_id().to_string()).await.unwrap(),
        Some(dim)
    );
}

#[tokio::test]
async fn the_local_model_keeps_the_embedder_contract() {
    let e = FastEmbedder::load(&cfg()).await.unwrap();
    embedder_contract(&e, 1e-3).await;
}

/// The OpenAI-compatible backend against llama.cpp's server with embeddings on.
#[tokio::test]
async fn an_openai_compatible_embeddings_server_keeps_the_embedder_contract() {
    let server = common::LlamaServer::start_embeddings();
    let c = EmbedConfig {
        backend: EmbedBackend::Openai,
        url: Some(server.base_url.clone()),
        model: Some("smollm2".into()),
        batch_size: 4,
        max_batch_tokens: 64, // several requests per call
        ..Default::default()
    };
    c.validate().unwrap();
    let e = palate::embed::load(&c).await.unwrap();
    assert_eq!(
        e.model_id(),
        "openai:smollm2",
        "cached under its own model id"
    );
    embedder_contract(e.as_ref(), 0.03).await;

    // A server that is not there: a clear error naming it, after the retries.
    let gone = EmbedConfig {
        url: Some("http://127.0.0.1:9/v1".into()),
        timeout_s: 2,
        ..c
    };
    let err = palate::embed::load(&gone)
        .await
        .unwrap()
        .embed(vec!["x".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, EmbedError::Remote { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1:9"), "{err}");
}
