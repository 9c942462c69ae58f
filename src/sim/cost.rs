//! What one engine step costs. A step runs the model once over every token scheduled in it (the
//! prefill chunks and one token per decoding sequence), so it is bound by whichever is slower:
//! the arithmetic (`token_ms` per token) or the memory traffic (the weights read once, plus every
//! decoding sequence's KV cache read, which grows with its context). The host adds a fixed part
//! per step (scheduling, sampling, launching) and a part per running sequence, and a constrained
//! sequence adds its grammar's token mask:
//!
//! `step = step_ms + seq_ms·running + Σ masks + mix_us/1000·tokens·(sequences − 1)
//!         + max(token_ms·tokens + attention_us/1000·pairs, weights_ms + kv_token_us/1000·Σ context)`
//!
//! `mix_us` is what a step of several sequences costs beyond its tokens (0 for vLLM on a GPU).
//!
//! Two shapes of llama.cpp's CPU backend, which the calibration fits for it (a step of vLLM's
//! has neither):
//! - `tile`: its matrix kernels take a step's tokens 4 at a time and the rest one by one, each
//!   reading the weights again, so `row_ms` more per token outside a whole tile: 3 decoding
//!   sequences cost more than 4.
//! - `split_equal`: with a KV cache per slot, a step runs as micro-batches that take as many
//!   tokens from each sequence. A prompt beside 3 decoding sequences is a step of 4 tokens, then
//!   one of the rest of the prompt: in the demo job against llama-server such steps took 652 ms
//!   (median), where one step of all of it was predicted at 443 ([`LatencyModel::step_of`]).
//!
//! The arithmetic grows with context too: `attention_us` per (token, earlier token) pair the step
//! attends over, which matters on a CPU server and for long prompts.
//!
//! A structured-output request also waits `grammar_ms` for its grammar before it can be scheduled.
//! `palate bench calibrate` fits these figures to a real server; `data/profiles/` holds the named
//! profiles.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyModel {
    /// Host time per step, ms.
    pub step_ms: f64,
    /// Host time per running sequence per step (sampling, detokenising), ms.
    #[serde(default)]
    pub seq_ms: f64,
    /// Compute per token in the step, prefill or decode, ms.
    #[serde(default)]
    pub token_ms: f64,
    /// Attention arithmetic per (token, earlier token) pair, µs.
    #[serde(default)]
    pub attention_us: f64,
    /// Reading the weights once, ms.
    #[serde(default)]
    pub weights_ms: f64,
    /// Reading one token of context from the KV cache, µs.
    #[serde(default)]
    pub kv_token_us: f64,
    /// Compiling a request's grammar before it is scheduled, ms.
    #[serde(default)]
    pub grammar_ms: f64,
    /// The grammar's token mask per constrained sequence per step, ms (a profile's output model
    /// may set its own per kind: a strict schema costs more than free text).
    #[serde(default)]
    pub mask_ms: f64,
    /// Per token in a step, per sequence in it beyond the first, µs.
    #[serde(default)]
    pub mix_us: f64,
    /// Tokens a matrix kernel computes together (0 or 1: any number). llama.cpp's CPU kernels
    /// take 4 columns at a time and the rest one by one, re-reading the weights for each: 3
    /// decoding sequences cost more than 4 (78 against 68 ms, Qwen2.5-0.5B on 2 cores).
    #[serde(default)]
    pub tile: u32,
    /// What each token outside a whole tile costs more, ms.
    #[serde(default)]
    pub row_ms: f64,
    /// The step runs as micro-batches that take the same number of tokens from each sequence
    /// (llama.cpp with a KV cache per slot): a prompt beside decoding sequences costs one step
    /// of a token from each, then one of the rest of the prompt.
    #[serde(default)]
    pub split_equal: bool,
}

/// One sequence's part of a step: `tokens` computed after the `context` it already holds (a
/// decoding sequence computes 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Work {
    pub context: usize,
    pub tokens: usize,
    pub decoding: bool,
}

/// What a step computes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepLoad {
    /// Prompt tokens computed (prefill chunks).
    pub prefill: usize,
    /// Sequences decoding one token.
    pub decoding: usize,
    /// Sequences in the running set.
    pub running: usize,
    /// Sequences with tokens in the step (decoding, or a prefill chunk).
    pub sequences: usize,
    /// The token masks of the decoding sequences under a grammar, ms in all.
    pub mask_ms: f64,
    /// Tokens of context the decoding sequences read.
    pub context: usize,
    /// (token, earlier token) pairs attended over: a decoding sequence's context, and for a
    /// prefill chunk of t tokens after c, t·c + t·(t+1)/2.
    pub pairs: usize,
}

/// The attention pairs of computing `t` tokens after `c` already computed.
pub fn pairs(c: usize, t: usize) -> usize {
    t * c + t * (t + 1) / 2
}

impl StepLoad {
    /// The load of each sequence's `work` (a decoding sequence reads its context), with
    /// `running` sequences held and `mask_ms` of grammar masks.
    pub fn of(work: &[Work], running: usize, mask_ms: f64) -> Self {
        let mut l = StepLoad {
            running,
            sequences: work.len(),
            mask_ms,
            ..Default::default()
        };
        for w in work {
            if w.decoding {
                l.decoding += 1;
                l.context += w.context;
                l.pairs += w.context;
            } else {
                l.prefill += w.tokens;
                l.pairs += pairs(w.context, w.tokens);
            }
        }
        l
    }
}

impl LatencyModel {
    /// Every step takes `step_ms`, whatever it holds (the fault tests' server).
    pub fn constant(step_ms: f64) -> Self {
        Self {
            step_ms,
            seq_ms: 0.0,
            token_ms: 0.0,
            attention_us: 0.0,
            weights_ms: 0.0,
            kv_token_us: 0.0,
            grammar_ms: 0.0,
            mask_ms: 0.0,
            mix_us: 0.0,
            tile: 0,
            row_ms: 0.0,
            split_equal: false,
        }
    }

    /// The step's time, ms.
    pub fn step(&self, l: &StepLoad) -> f64 {
        let untiled = match self.tile {
            0 | 1 => 0,
            t => (l.prefill + l.decoding) % t as usize,
        };
        let compute = self.token_ms * (l.prefill + l.decoding) as f64
            + self.row_ms * untiled as f64
            + self.attention_us / 1000.0 * l.pairs as f64;
        let memory = self.weights_ms + self.kv_token_us / 1000.0 * l.context as f64;
        let tokens = (l.prefill + l.decoding) as f64;
        let mix = self.mix_us / 1000.0 * tokens * l.sequences.saturating_sub(1) as f64;
        self.step_ms + self.seq_ms * l.running as f64 + l.mask_ms + mix + compute.max(memory)
    }

    /// The time of a step of each sequence's `work` with `running` sequences held and
    /// `mask_ms` of grammar masks: one model run over all of it, or under `split_equal` one per
    /// micro-batch (the host's part per sequence and the masks are paid once).
    pub fn step_of(&self, work: &[Work], running: usize, mask_ms: f64) -> f64 {
        if !self.split_equal || work.len() < 2 {
            return self.step(&StepLoad::of(work, running, mask_ms));
        }
        let mut done = vec![0; work.len()];
        let mut ms = self.seq_ms * running as f64 + mask_ms;
        loop {
            let live: Vec<usize> = (0..work.len())
                .filter(|&i| done[i] < work[i].tokens)
                .collect();
            let Some(m) = live.iter().map(|&i| work[i].tokens - done[i]).min() else {
                return ms;
            };
            let micro: Vec<Work> = (live.iter())
                .map(|&i| Work {
                    context: work[i].context + done[i],
                    tokens: m,
                    ..work[i]
                })
                .collect();
            live.iter().for_each(|&i| done[i] += m);
            ms += self.step(&StepLoad::of(&micro, 0, 0.0));
        }
    }

    /// Every figure finite and at least 0.
    pub fn check(&self) -> anyhow::Result<()> {
        let all = [
            ("step_ms", self.step_ms),
            ("seq_ms", self.seq_ms),
            ("token_ms", self.token_ms),
            ("attention_us", self.attention_us),
            ("weights_ms", self.weights_ms),
            ("kv_token_us", self.kv_token_us),
            ("grammar_ms", self.grammar_ms),
            ("mask_ms", self.mask_ms),
            ("mix_us", self.mix_us),
            ("row_ms", self.row_ms),
        ];
        for (name, v) in all {
            anyhow::ensure!(
                v.is_finite() && v >= 0.0,
                "latency figure {name} = {v} must be a number at least 0"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> LatencyModel {
        LatencyModel {
            step_ms: 1.0,
            seq_ms: 0.01,
            token_ms: 0.04,
            attention_us: 0.0,
            weights_ms: 6.0,
            kv_token_us: 0.02,
            grammar_ms: 0.0,
            mask_ms: 0.05,
            mix_us: 0.0,
            ..LatencyModel::constant(0.0)
        }
    }

    #[test]
    fn small_decode_steps_are_memory_bound_and_grow_with_context() {
        let m = model();
        let short = m.step(&StepLoad {
            decoding: 8,
            running: 8,
            context: 8 * 500,
            ..Default::default()
        });
        let long = m.step(&StepLoad {
            decoding: 8,
            running: 8,
            context: 8 * 4000,
            ..Default::default()
        });
        // 1 + 0.08 + max(0.32, 6 + 0.08) and 1 + 0.08 + max(0.32, 6 + 0.64)
        assert!((short - 7.16).abs() < 1e-9, "{short}");
        assert!((long - 7.72).abs() < 1e-9, "{long}");
    }

    #[test]
    fn a_large_prefill_is_compute_bound_not_the_sum_of_its_parts() {
        let m = model();
        let t = m.step(&StepLoad {
            prefill: 4000,
            decoding: 10,
            running: 11,
            mask_ms: 10.0 * 0.05,
            context: 10 * 300,
            pairs: 0,
            sequences: 11,
        });
        // 1 + 0.11 + 0.5 + max(0.04·4010, 6 + 0.06)
        assert!((t - (1.61 + 160.4)).abs() < 1e-9, "{t}");
    }

    #[test]
    fn attention_makes_a_long_prefill_cost_more_per_token() {
        let m = LatencyModel {
            token_ms: 1.0,
            attention_us: 1.0,
            ..LatencyModel::constant(0.0)
        };
        let short = m.step(&StepLoad {
            prefill: 100,
            pairs: pairs(0, 100),
            ..Default::default()
        });
        let long = m.step(&StepLoad {
            prefill: 100,
            pairs: pairs(2000, 100),
            ..Default::default()
        });
        assert!((short - (100.0 + 5.05)).abs() < 1e-9, "{short}");
        assert!((long - (100.0 + 205.05)).abs() < 1e-9, "{long}");
    }

    #[test]
    fn negative_figures_are_refused() {
        let mut m = model();
        m.kv_token_us = -1.0;
        assert!(m.check().unwrap_err().to_string().contains("kv_token_us"));
    }

    #[test]
    fn a_step_of_several_sequences_costs_more_per_token_with_mix() {
        let m = LatencyModel {
            token_ms: 1.0,
            mix_us: 500.0,
            ..LatencyModel::constant(0.0)
        };
        let alone = StepLoad {
            prefill: 100,
            running: 1,
            sequences: 1,
            ..Default::default()
        };
        let mixed = StepLoad {
            decoding: 3,
            running: 4,
            sequences: 4,
            ..alone
        };
        assert_eq!(m.step(&alone), 100.0);
        // 103 tokens, and 0.5 ms for each of them for each of the 3 other sequences.
        assert!((m.step(&mixed) - (103.0 + 0.5 * 103.0 * 3.0)).abs() < 1e-9);
    }

    #[test]
    fn tokens_outside_a_whole_tile_cost_more() {
        let m = LatencyModel {
            token_ms: 1.0,
            tile: 4,
            row_ms: 5.0,
            ..LatencyModel::constant(0.0)
        };
        let decode = |n| {
            m.step(&StepLoad {
                decoding: n,
                running: n,
                sequences: n,
                ..Default::default()
            })
        };
        assert_eq!(
            [decode(1), decode(3), decode(4), decode(5)],
            [6.0, 18.0, 4.0, 10.0]
        );
    }

    #[test]
    fn split_equal_runs_a_prompt_beside_decoding_sequences_as_two_micro_batches() {
        let m = LatencyModel {
            step_ms: 2.0,
            seq_ms: 1.0,
            token_ms: 1.0,
            split_equal: true,
            ..LatencyModel::constant(0.0)
        };
        let work = [
            Work {
                context: 50,
                tokens: 1,
                decoding: true,
            },
            Work {
                context: 50,
                tokens: 1,
                decoding: true,
            },
            Work {
                context: 0,
                tokens: 100,
                decoding: false,
            },
        ];
        assert_eq!(
            StepLoad::of(&work, 3, 0.5),
            StepLoad {
                prefill: 100,
                decoding: 2,
                running: 3,
                sequences: 3,
                mask_ms: 0.5,
                context: 100,
                pairs: 100 + pairs(0, 100),
            }
        );
        // Host 3·1 + 0.5 once; a micro-batch of 3 tokens (2 + 3), then one of 99 (2 + 99).
        assert_eq!(m.step_of(&work, 3, 0.5), 3.5 + 5.0 + 101.0);
        let unsplit = LatencyModel {
            split_equal: false,
            ..m
        };
        assert_eq!(unsplit.step_of(&work, 3, 0.5), 2.0 + 3.0 + 0.5 + 102.0);
    }
}
