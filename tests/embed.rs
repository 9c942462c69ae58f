//! The real multilingual embedding model: clear errors for missing files, and vectors that put a
//! Korean review near its English meaning and far from an unrelated one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use palate::embed::{EmbedConfig, EmbedError, Embedder, FastEmbedder};
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
