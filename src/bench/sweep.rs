//! The calibration's sweep of a real server: decode at 1…N parallel sequences, prefill over
//! prompt lengths, and prefill beside decoding sequences, each point the median of `rounds`.

use anyhow::Context;
use serde_json::json;

use super::calibrate::CalibrateSpec;
use super::fit::Point;
use super::probe::Server;
use crate::metrics::percentile;

/// Words for prompts of a given length; a random order each time so that no prompt shares a
/// prefix with another (a prefix cache would hide the prefill).
const WORDS: [&str; 24] = [
    "kitchen", "broth", "table", "waiter", "noodle", "garden", "window", "market", "river",
    "morning", "evening", "pepper", "ginger", "season", "street", "corner", "friend", "family",
    "summer", "winter", "bright", "quiet", "simple", "golden",
];

fn words(n: usize, rng: &mut fastrand::Rng) -> String {
    let mut s = format!("Note {}:", rng.u32(..));
    for _ in 0..n {
        s.push(' ');
        s.push_str(WORDS[rng.usize(..WORDS.len())]);
    }
    s
}

/// The prompt tokens a request computed (at least 1: a wholly cached prompt recomputes its last)
/// and those it found cached. Every chat prompt starts with the template's system turn, which a
/// slot keeps from the request before: counting those tokens as computed made short prompts
/// look cheap per token (74 tokens in 359 ms, where 48 were computed).
fn computed(o: &super::probe::Sample) -> (usize, usize) {
    let cached = o.cached_tokens.min(o.prompt_tokens.saturating_sub(1));
    (o.prompt_tokens.saturating_sub(cached).max(1), cached)
}

/// For each parallelism, `rounds` times: that many requests at once, each `output_tokens` long.
pub(super) async fn decode_points(
    s: &Server,
    spec: &CalibrateSpec,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    for (&n, &prompt) in
        (spec.parallel.iter()).flat_map(|n| spec.decode_contexts.iter().map(move |c| (n, c)))
    {
        let mut tpots = Vec::new();
        let mut context = 0;
        for _ in 0..spec.rounds {
            let prompts: Vec<String> = (0..n)
                .map(|_| format!("{} Continue this list of words.", words(prompt, rng)))
                .collect();
            let out = futures::future::try_join_all(
                prompts
                    .iter()
                    .map(|p| s.chat(p, spec.output_tokens, true, None)),
            )
            .await?;
            for o in &out {
                tpots.extend(o.tpot_ms());
                context = o.prompt_tokens + o.completion_tokens / 2;
            }
        }
        let tpot_ms = percentile(&tpots, 50.0).context("no decode timing came back")?;
        tracing::info!(parallel = n, tpot_ms, "decode");
        points.push(Point::Decode {
            parallel: n,
            context,
            tpot_ms,
        });
    }
    Ok(points)
}

/// For each prompt length, `rounds` times: one prompt alone, one output token.
pub(super) async fn prefill_points(
    s: &Server,
    spec: &CalibrateSpec,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    for &n in &spec.prompt_tokens {
        let (mut ttfts, mut tokens, mut cached) = (Vec::new(), 0, 0);
        for _ in 0..spec.rounds {
            let o = s.chat(&words(n, rng), 1, false, None).await?;
            ttfts.push(o.ttft_ms);
            (tokens, cached) = computed(&o);
        }
        let ttft_ms = percentile(&ttfts, 50.0).context("no prefill timing came back")?;
        tracing::info!(tokens, ttft_ms, "prefill");
        points.push(Point::Prefill {
            tokens,
            cached,
            chunk: spec.max_num_batched_tokens,
            ttft_ms,
        });
    }
    Ok(points)
}

/// For each number of decoding requests (up to `max_num_seqs − 1`), each of their prompt
/// lengths and each prompt length, `rounds` times: the prompt sent once every decoding request
/// has its first token, so that its prefill shares a step with their decode; the prompt's time
/// to first token. The decoding requests repeat their prompts from round to round: a server
/// that keeps prompts computes them once, and what they cost beside the prompt is the context
/// they attend to, not their own prefill.
pub(super) async fn mixed_points(
    s: &Server,
    spec: &CalibrateSpec,
    rng: &mut fastrand::Rng,
) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    let most = spec.max_num_seqs.saturating_sub(1);
    for (&decoding, &words_each) in (spec.mixed_decoding.iter())
        .filter(|&&d| d >= 1 && d <= most)
        .flat_map(|d| spec.mixed_contexts.iter().map(move |c| (d, c)))
    {
        let decoders: Vec<String> = (0..decoding)
            .map(|_| format!("{} Continue this list of words.", words(words_each, rng)))
            .collect();
        for &n in &spec.mixed_prompts {
            let (mut ttfts, mut tokens, mut cached, mut context) = (Vec::new(), 0, 0, 0);
            for _ in 0..spec.rounds {
                let (txs, rxs): (Vec<_>, Vec<_>) = (0..decoding)
                    .map(|_| tokio::sync::oneshot::channel())
                    .unzip();
                let running =
                    futures::future::try_join_all(decoders.iter().zip(txs).map(|(p, tx)| {
                        let prompt = json!([{"role": "user", "content": p}]);
                        s.streamed(prompt, 24, true, None, Some(tx))
                    }));
                let prompt = words(n, rng);
                let probe = async {
                    for rx in rxs {
                        let _ = rx.await;
                    }
                    s.chat(&prompt, 1, false, None).await
                };
                let (decoded, o) = futures::future::try_join(running, probe).await?;
                ttfts.push(o.ttft_ms);
                (tokens, cached) = computed(&o);
                context = decoded.iter().map(|d| d.prompt_tokens).max().unwrap_or(0) + 4;
            }
            let ttft_ms = percentile(&ttfts, 50.0).context("no mixed timing came back")?;
            tracing::info!(tokens, decoding, context, ttft_ms, "mixed");
            points.push(Point::Mixed {
                tokens,
                cached,
                decoding,
                context,
                ttft_ms,
            });
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::probe::Sample;

    #[test]
    fn a_prompt_counts_only_the_tokens_the_server_computed() {
        let o = |prompt_tokens, cached_tokens| Sample {
            prompt_tokens,
            cached_tokens,
            ..Default::default()
        };
        // The chat template's first 27 tokens were still in the slot.
        assert_eq!(computed(&o(77, 27)), (50, 27));
        assert_eq!(computed(&o(77, 0)), (77, 0));
        // A prompt wholly in the cache recomputes its last token.
        assert_eq!(computed(&o(40, 40)), (1, 39));
    }
}
