//! `palate bench calibrate --endpoint URL`: sweeps a real OpenAI-compatible server and fits the
//! simulator to it. Decode: 1…N parallel sequences with a fixed output length (`ignore_eos`), at
//! a short and a long context, the time per output token. Prefill: one prompt at a time over prompt lengths, the time to first
//! token. Grammar: the same short request with and without a JSON schema. Tokens: how the
//! server counts palate's own prompts, by character class. The fit ([`super::fit`]) and its error per
//! point are reported, and the profile is written for `palate bench serve --profile`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Value};

use super::fit::{self, Fit, Point};
use super::probe::Server;
use super::sweep::{decode_points, mixed_points, prefill_points};
use crate::metrics::percentile;
use crate::sim::{content, EngineConfig, PrefixCacheKind, Profile, TokenRates};

#[derive(Debug, Clone, Serialize)]
pub struct CalibrateSpec {
    pub endpoint: String,
    pub model: String,
    pub parallel: Vec<usize>,
    /// Prompt lengths (words) of the decode sweep: decode slows as context grows.
    pub decode_contexts: Vec<usize>,
    pub prompt_tokens: Vec<usize>,
    /// Prompt lengths (words) sent while other sequences decode (the mixed points).
    pub mixed_prompts: Vec<usize>,
    /// How many sequences decode beside each of those prompts (at most `max_num_seqs` − 1).
    pub mixed_decoding: Vec<usize>,
    /// The prompt lengths (words) of those decoding sequences: the context they attend to.
    pub mixed_contexts: Vec<usize>,
    pub output_tokens: usize,
    pub rounds: usize,
    /// The server's limits, written into the profile: sequences (llama.cpp `--parallel`),
    /// tokens per step (`n_batch`), KV tokens (`--ctx`).
    pub max_num_seqs: usize,
    pub max_num_batched_tokens: usize,
    pub kv_tokens: usize,
    /// Review texts for the token rates.
    pub reviews_file: PathBuf,
    /// A work database whose last run's `vllm_metrics` give the answers' lengths and refusals.
    pub outputs_from: Option<PathBuf>,
    pub reviews_per_sentiment: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub spec: CalibrateSpec,
    pub points: Vec<(Point, f64)>,
    pub fit: Fit,
    pub grammar_ms: f64,
    pub mask_ms: f64,
    /// By kind: medians without and with the schema.
    pub grammar: BTreeMap<String, GrammarCost>,
    pub tokens: TokenRates,
    pub profile: Profile,
}

/// One kind's request alone, without and with its schema: medians of the time to first token
/// and of the time per output token.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GrammarCost {
    pub ttft_ms: [f64; 2],
    pub tpot_ms: [f64; 2],
}

impl GrammarCost {
    pub fn compile_ms(&self) -> f64 {
        (self.ttft_ms[1] - self.ttft_ms[0]).max(0.0)
    }
    pub fn mask_ms(&self) -> f64 {
        (self.tpot_ms[1] - self.tpot_ms[0]).max(0.0)
    }
}

pub async fn calibrate(spec: CalibrateSpec) -> anyhow::Result<Calibration> {
    let server = Server {
        // A new connection per request: llama.cpp's server closes kept-alive ones.
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?,
        url: spec.endpoint.trim_end_matches('/').to_string(),
        model: spec.model.clone(),
    };
    // Seeded from the clock: a server that keeps prompts across requests (llama.cpp's prompt
    // cache) must not find an earlier calibration's.
    let mut rng = fastrand::Rng::new();
    server
        .chat("Say hi.", 4, false, None)
        .await
        .context("the server does not answer")?;
    let mut points = decode_points(&server, &spec, &mut rng).await?;
    points.extend(prefill_points(&server, &spec, &mut rng).await?);
    points.extend(mixed_points(&server, &spec, &mut rng).await?);
    let costs = grammar(&server, &spec, &mut rng).await?;
    let n = costs.len().max(1) as f64;
    let grammar_ms = costs.values().map(GrammarCost::compile_ms).sum::<f64>() / n;
    let mask_ms = costs.values().map(GrammarCost::mask_ms).sum::<f64>() / n;
    // llama.cpp keeps a prompt per slot, and with a KV cache per slot it runs a step as
    // micro-batches of as many tokens from each sequence.
    let llama_cpp = llama_cpp(&server).await;
    let tokens = token_rates(&server, &spec, llama_cpp).await?;
    let fit = fit::fit(&points, llama_cpp);
    let mut latency = fit.model;
    latency.grammar_ms = grammar_ms;
    latency.mask_ms = mask_ms;
    let mut outputs = match &spec.outputs_from {
        Some(db) => crate::sim::profile::outputs_from_run(db, None, spec.reviews_per_sentiment)?,
        None => Profile::builtin().outputs,
    };
    for (kind, o) in &mut outputs {
        o.mask_ms = costs.get(kind).map(GrammarCost::mask_ms);
    }
    let mut profile = fitted_profile(&spec, &fit, latency, points.len(), tokens, outputs);
    profile.engine.prefix_cache = if llama_cpp {
        PrefixCacheKind::Slots
    } else {
        PrefixCacheKind::Shared
    };
    let points = points.iter().map(|p| (*p, p.predicted(&latency))).collect();
    Ok(Calibration {
        spec,
        points,
        fit,
        grammar_ms,
        mask_ms,
        grammar: costs,
        tokens,
        profile,
    })
}

/// The simulator profile a calibration writes: the fitted costs and the server's limits.
fn fitted_profile(
    spec: &CalibrateSpec,
    fit: &Fit,
    latency: crate::sim::LatencyModel,
    points: usize,
    tokens: TokenRates,
    outputs: BTreeMap<String, crate::sim::OutputModel>,
) -> Profile {
    let blocks = spec.kv_tokens.div_ceil(16);
    Profile {
        name: format!(
            "{} at {}, fitted by palate bench calibrate",
            spec.model, spec.endpoint
        ),
        sources: vec![format!(
            "palate bench calibrate: {points} points, mean |error| {:.1} %, max {:.1} %",
            100.0 * fit.mean_abs_error,
            100.0 * fit.max_abs_error
        )],
        engine: EngineConfig {
            latency,
            max_num_seqs: spec.max_num_seqs,
            max_num_batched_tokens: spec.max_num_batched_tokens,
            block_size: 16,
            kv_blocks: blocks,
            cache_blocks: blocks,
            prefix_cache: PrefixCacheKind::Shared,
            priority_scheduling: false,
            time_scale: 1.0,
        },
        tokens,
        outputs,
    }
}

/// Whether the server is llama.cpp's (its `/v1/models` says `owned_by: llamacpp`) rather than
/// vLLM.
async fn llama_cpp(s: &Server) -> bool {
    let models = async {
        let r = s.http.get(format!("{}/models", s.url)).send().await.ok()?;
        r.json::<Value>().await.ok()
    };
    (models.await).is_some_and(|m| crate::infer::served_by_llama_cpp(&m))
}

/// The grammar's cost, per kind, without and with its JSON schema, `rounds` times: the medians'
/// difference in time per output token on palate's own request (its mask: a strict schema
/// costs more than free text), and in time to the first token of a two-line request (compiling
/// the grammar: on a request's own prompt, seconds of prefill would drown it).
async fn grammar(
    s: &Server,
    spec: &CalibrateSpec,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<BTreeMap<String, GrammarCost>> {
    let plans = super::workload::plans(&super::WorkloadSpec {
        restaurants: 1,
        reviews_per_restaurant: 16,
        sentiment_batch: spec.reviews_per_sentiment.max(1) as usize,
        max_tokens: 512,
        reviews_file: spec.reviews_file.clone(),
        ..Default::default()
    })?;
    let mut out = BTreeMap::new();
    for r in plans.iter().flat_map(|p| &p.requests) {
        let kind = r.kind.as_str().to_string();
        if out.contains_key(&kind) {
            continue;
        }
        let (mut ttft, mut tpot) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
        for _ in 0..spec.rounds {
            for (i, schema) in [None, Some(&r.schema)].into_iter().enumerate() {
                // A prompt of its own each time, so no prompt cache serves the second.
                let mut messages = serde_json::to_value(&r.messages)?;
                let nonce = format!("Request {}.\n", rng.u32(..));
                if let Some(first) = messages.get_mut(0).and_then(|m| m.get_mut("content")) {
                    *first = json!(format!("{nonce}{}", first.as_str().unwrap_or("")));
                }
                let o = s
                    .messages(messages, r.max_tokens as usize, false, schema)
                    .await?;
                tpot[i].extend(o.tpot_ms());
                for _ in 0..3 {
                    let short = json!([{"role": "user",
                        "content": format!("Request {}.\nAnswer in JSON.", rng.u32(..))}]);
                    let o = s.messages(short, 2, false, schema).await?;
                    if o.ttft_ms > 0.0 {
                        ttft[i].push(o.ttft_ms);
                    }
                }
            }
        }
        let med = |v: &[f64]| percentile(v, 50.0).unwrap_or(0.0);
        let g = GrammarCost {
            ttft_ms: [med(&ttft[0]), med(&ttft[1])],
            tpot_ms: [med(&tpot[0]), med(&tpot[1])],
        };
        tracing::info!(kind, ?g, "grammar");
        out.insert(kind, g);
    }
    Ok(out)
}

/// How the server counts the text palate sends: palate's own requests over the review file
/// (each sentiment request alone, then a summary and a strengths request), each sent for one
/// token, one after another. The simulator counts each request's text
/// ([`content::prompt_text`]) by character class ([`content::char_classes`]), and the rates are
/// the least-squares fit of those counts to the server's, each row by its relative error: every
/// request's whole prompt, and the part of it the server computed after the longest prefix it
/// shares with an earlier request (a sentiment request's review, below instructions that stay
/// cached). The second kind of row keeps the fit from trading the instructions' tokens against
/// the reviews': the time to first token follows the tokens computed. It needs a server that
/// reuses prompts to the token (`token_exact`: llama.cpp); vLLM's cache counts whole blocks.
async fn token_rates(
    s: &Server,
    spec: &CalibrateSpec,
    token_exact: bool,
) -> anyhow::Result<TokenRates> {
    let plans = super::workload::plans(&super::WorkloadSpec {
        restaurants: 2,
        reviews_per_restaurant: 12,
        sentiment_batch: 1,
        reviews_file: spec.reviews_file.clone(),
        ..Default::default()
    })?;
    let mut rows = Vec::new();
    let mut earlier: Vec<String> = Vec::new();
    for r in plans.iter().flat_map(|p| &p.requests) {
        let messages = serde_json::to_value(&r.messages)?;
        let text = content::prompt_text(&messages);
        let o = s.messages(messages, 1, false, None).await?;
        let row = |t: &str, tokens: usize| {
            let w = 1.0 / tokens.max(1) as f64;
            (
                content::char_classes(t).map(|c| c as f64 * w),
                tokens as f64 * w,
            )
        };
        rows.push(row(&text, o.prompt_tokens));
        if token_exact && o.cached_tokens > 0 && o.cached_tokens < o.prompt_tokens {
            let kept = (earlier.iter()).map(|e| common_prefix(e, &text)).max();
            if let Some(kept) = kept.filter(|&k| k > 0) {
                rows.push(row(&text[kept..], o.prompt_tokens - o.cached_tokens));
            }
        }
        earlier.push(text);
    }
    let [ascii, symbol, other] = least_squares(&rows).with_context(|| {
        format!(
            "{} needs reviews in English and in Korean to fit the token rates",
            spec.reviews_file.display()
        )
    })?;
    Ok(TokenRates {
        ascii_chars_per_token: 1.0 / ascii.max(0.01),
        tokens_per_other_char: other.max(0.01),
        tokens_per_symbol: Some(symbol.max(0.01)),
    })
}

/// Bytes `a` and `b` share at the start, ending on a character boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    (a.char_indices().zip(b.chars()))
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

/// The `x` that best fits `a · x = b` over `rows` of `(a, b)` (the normal equations, solved by
/// elimination); `None` where a column never varies apart from the others.
fn least_squares(rows: &[([f64; 3], f64)]) -> Option<[f64; 3]> {
    let mut m = [[0.0; 4]; 3];
    for (a, b) in rows {
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] += a[i] * a[j];
            }
            m[i][3] += a[i] * b;
        }
    }
    let scale = (0..3).map(|i| m[i][i]).fold(0.0, f64::max);
    for c in 0..3 {
        let p = (c..3).max_by(|&x, &y| m[x][c].abs().total_cmp(&m[y][c].abs()))?;
        m.swap(c, p);
        if m[c][c].abs() <= 1e-9 * scale {
            return None;
        }
        let pivot = m[c];
        for (r, row) in m.iter_mut().enumerate() {
            if r != c {
                let f = row[c] / pivot[c];
                for (x, p) in row.iter_mut().zip(pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    Some([0, 1, 2].map(|i| m[i][3] / m[i][i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_the_rates_and_refuses_a_column_that_never_varies() {
        let rates = [0.2, 1.1, 0.9];
        let rows: Vec<([f64; 3], f64)> =
            [[300.0, 40.0, 0.0], [250.0, 60.0, 80.0], [90.0, 5.0, 200.0]]
                .iter()
                .chain(&[[500.0, 10.0, 30.0]])
                .map(|a| (*a, a.iter().zip(rates).map(|(x, r)| x * r).sum()))
                .collect();
        let x = least_squares(&rows).unwrap();
        for (got, want) in x.iter().zip(rates) {
            assert!((got - want).abs() < 1e-9, "{x:?}");
        }
        // No Korean in any request: the Hangul rate cannot be told.
        let english: Vec<([f64; 3], f64)> =
            rows.iter().map(|(a, b)| ([a[0], a[1], 0.0], *b)).collect();
        assert_eq!(least_squares(&english), None);
    }

    #[test]
    fn the_common_prefix_ends_on_a_character_boundary() {
        assert_eq!(common_prefix("맛있어요", "맛없어요"), "맛".len());
        assert_eq!(common_prefix("abc", "abcd"), 3);
        assert_eq!(common_prefix("abcd", "abc"), 3);
        assert_eq!(common_prefix("", "abc"), 0);
    }
}
