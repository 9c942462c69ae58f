//! A named simulator profile: the engine (limits and step cost), how the served model counts
//! tokens, and what its answers look like (lengths and the share palate refuses), drawn from a
//! real run's `vllm_metrics`. `data/profiles/qwen2.5-7b-h100.toml` is built in and is the
//! default; `palate bench calibrate` writes one fitted to a real server.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::cost::LatencyModel;

const BUILTIN: &str = include_str!("../../data/profiles/qwen2.5-7b-h100.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    /// Where its figures come from.
    #[serde(default)]
    pub sources: Vec<String>,
    pub engine: EngineConfig,
    #[serde(default)]
    pub tokens: TokenRates,
    /// Answer lengths and refusals by request kind (the JSON schema's name).
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputModel>,
}

/// How the served model's tokenizer counts text, on average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRates {
    /// ASCII characters per token: letters and whitespace, and the rest of ASCII too where
    /// `tokens_per_symbol` is not given.
    pub ascii_chars_per_token: f64,
    /// Tokens per other character (Hangul).
    pub tokens_per_other_char: f64,
    /// Tokens per ASCII digit or punctuation mark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_symbol: Option<f64>,
}

impl TokenRates {
    /// Tokens per character of each of [`crate::sim::content::char_classes`]' classes.
    pub fn per_class(&self) -> [f64; 3] {
        let ascii = 1.0 / self.ascii_chars_per_token;
        [
            ascii,
            self.tokens_per_symbol.unwrap_or(ascii),
            self.tokens_per_other_char,
        ]
    }
}

impl Default for TokenRates {
    /// palate's own estimate ([`crate::plan::estimate_tokens`]).
    fn default() -> Self {
        Self {
            ascii_chars_per_token: 4.0,
            tokens_per_other_char: 1.5,
            tokens_per_symbol: None,
        }
    }
}

/// One kind of answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputModel {
    /// Observed completion lengths, drawn from uniformly.
    pub tokens: Vec<u32>,
    /// `tokens` are per item (per required property of the schema, as a sentiment request's
    /// one label per review) rather than per answer.
    #[serde(default)]
    pub per_item: bool,
    /// Share of answers palate refused as invalid (each costs a repair request).
    #[serde(default)]
    pub invalid_rate: f64,
    /// The grammar's mask per decode step for this kind's schema, ms (else the engine's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_ms: Option<f64>,
    /// The restaurant each of `tokens` answered for, when read from a run: a replay gives each
    /// restaurant its own answers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restaurants: Vec<String>,
}

impl Profile {
    /// The built-in profile (its parse is checked by a unit test).
    #[allow(clippy::expect_used, reason = "a file compiled in, parsed by a test")]
    pub fn builtin() -> Self {
        toml::from_str(BUILTIN).expect("the built-in profile parses")
    }

    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read profile {}", path.display()))?;
        let p: Self = toml::from_str(&text)
            .with_context(|| format!("profile {} is not valid", path.display()))?;
        p.check()
            .with_context(|| format!("profile {}", path.display()))?;
        Ok(p)
    }

    pub fn check(&self) -> anyhow::Result<()> {
        self.engine.latency.check()?;
        let e = &self.engine;
        anyhow::ensure!(
            e.max_num_seqs > 0 && e.max_num_batched_tokens > 0 && e.block_size > 0,
            "max_num_seqs, max_num_batched_tokens and block_size must be at least 1"
        );
        anyhow::ensure!(
            self.tokens
                .per_class()
                .iter()
                .all(|r| r.is_finite() && *r > 0.0),
            "token rates must be above 0"
        );
        for (kind, o) in &self.outputs {
            anyhow::ensure!(
                !o.tokens.is_empty() && (0.0..=1.0).contains(&o.invalid_rate),
                "outputs.{kind}: tokens must not be empty and invalid_rate must be in 0..=1"
            );
            anyhow::ensure!(
                o.restaurants.is_empty() || o.restaurants.len() == o.tokens.len(),
                "outputs.{kind}: restaurants must name one restaurant for each of tokens"
            );
        }
        Ok(())
    }

    /// The profile as TOML.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(self)?)
    }
}

/// The completion lengths and refusals of a run's `vllm_metrics` (its successful requests), by
/// kind; sentiment lengths per labelled review, `reviews_per_sentiment` being the job's batch.
pub fn outputs_from_run(
    db: &Path,
    run: Option<i64>,
    reviews_per_sentiment: u32,
) -> anyhow::Result<BTreeMap<String, OutputModel>> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("cannot open {}", db.display()))?;
    let run = match run {
        Some(r) => r,
        None => latest_run(&conn, db)?,
    };
    let mut stmt = conn.prepare(
        "SELECT kind, completion_tokens, error_class = 'invalid_output', restaurant_id FROM vllm_metrics
         WHERE run_id = ?1 AND status = 'ok' AND completion_tokens IS NOT NULL ORDER BY id",
    )?;
    let mut out: BTreeMap<String, (OutputModel, u32)> = BTreeMap::new();
    let rows = stmt.query_map([run], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, u32>(1)?,
            r.get::<_, Option<bool>>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for row in rows {
        let (kind, tokens, invalid, restaurant) = row?;
        let per_item = kind == "sentiment";
        let e = out.entry(kind).or_insert_with(|| {
            let o = OutputModel {
                per_item,
                ..OutputModel::default()
            };
            (o, 0)
        });
        let n = if per_item {
            tokens.div_ceil(reviews_per_sentiment.max(1))
        } else {
            tokens
        };
        e.0.tokens.push(n);
        e.0.restaurants.push(restaurant);
        e.1 += u32::from(invalid.unwrap_or(false));
    }
    anyhow::ensure!(
        !out.is_empty(),
        "run {run} of {} has no successful request",
        db.display()
    );
    Ok(out
        .into_iter()
        .map(|(k, (mut o, invalid))| {
            o.invalid_rate = f64::from(invalid) / o.tokens.len() as f64;
            (k, o)
        })
        .collect())
}

/// The last run that has per-request metrics.
fn latest_run(conn: &rusqlite::Connection, db: &Path) -> anyhow::Result<i64> {
    conn.query_row("SELECT max(run_id) FROM vllm_metrics", [], |r| r.get(0))
        .with_context(|| format!("{} has no vllm_metrics", db.display()))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    pub latency: LatencyModel,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most tokens (prefill + one per decoding sequence) computed in one step.
    pub max_num_batched_tokens: usize,
    /// Tokens per KV block; the prefix cache and the pool work in whole blocks.
    pub block_size: usize,
    /// KV blocks in the pool; 0 means no limit (no preemption).
    #[serde(default)]
    pub kv_blocks: usize,
    /// Blocks the prefix cache keeps (least recently used go first); 0 turns caching off.
    pub cache_blocks: usize,
    /// How prompts are reused: vLLM's shared prefix cache, or llama.cpp's slots.
    #[serde(default)]
    pub prefix_cache: PrefixCacheKind,
    /// Waiting queue ordered by the request's `priority` (lower first), else first come first served.
    #[serde(default)]
    pub priority_scheduling: bool,
    /// Real seconds per simulated second: 0.1 runs the model ten times faster than real time.
    /// Every timing the server reports is in simulated time.
    #[serde(default = "one")]
    pub time_scale: f64,
}

/// Where the engine finds a prompt's prefix already computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixCacheKind {
    /// vLLM: one cache of `cache_blocks` blocks that every request shares.
    #[default]
    Shared,
    /// llama.cpp's server: each of `max_num_seqs` slots keeps its last prompt, and the prompts
    /// slots gave up wait in a host-memory cache of `cache_blocks` blocks' worth of tokens
    /// (`src/sim/slots.rs`).
    Slots,
}

fn one() -> f64 {
    1.0
}

impl Default for EngineConfig {
    /// The named profile `data/profiles/qwen2.5-7b-h100.toml`'s engine.
    fn default() -> Self {
        Profile::builtin().engine
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_profile_is_valid_and_round_trips() {
        let p = Profile::builtin();
        p.check().unwrap();
        assert!(p.engine.kv_blocks > 0 && p.engine.max_num_seqs >= 256);
        let again: Profile = toml::from_str(&p.to_toml().unwrap()).unwrap();
        assert_eq!(again.engine.latency, p.engine.latency);
        assert_eq!(again.outputs, p.outputs);
    }
}
