//! Every step a real llama.cpp server ran, priced by the simulator's step cost: the check of
//! [`LatencyModel`] on a job's own steps rather than on the calibration's sweep.
//!
//! llama-server with debug logging (`scripts/serve_llm.py --debug-log`) logs, with a
//! microsecond timestamp, each slot's new prompt and how much of it was cached, each decode
//! token a slot adds to the next batch (with its context), each slot's release, and the start
//! of each model run (`decode: n_batch (effective) = 2048`). A step lasts from one model run's
//! start to the next (its sampling and the next batch's launch included, as a simulated step's
//! host time is). Its prompt tokens are the slots' uncomputed prompts, taken in slot order up to
//! the batch's size less its decode tokens, as the server fills a batch. A step after the server
//! went idle has no end time and is left out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::sim::{LatencyModel, Work};

/// One model run of the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Seconds since the server started.
    pub at_s: f64,
    /// Until the next step started; `None` when the server went idle first.
    pub ms: Option<f64>,
    pub work: Vec<Work>,
    /// Slots holding a request.
    pub running: usize,
}

/// Steps of one kind: how many, and their observed and predicted time.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Group {
    pub steps: usize,
    pub observed_s: f64,
    pub predicted_s: f64,
    pub median_observed_ms: f64,
    pub median_predicted_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct StepReport {
    pub logs: Vec<String>,
    /// By kind of step: "decode ×N" or "prompt beside N decoding".
    pub groups: BTreeMap<String, Group>,
    pub all: Group,
}

impl std::fmt::Display for StepReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<28} {:>6} {:>12} {:>13} {:>11} {:>12}",
            "step", "steps", "observed, s", "predicted, s", "median obs", "median pred"
        )?;
        for (k, g) in self.groups.iter().chain([(&"all".to_string(), &self.all)]) {
            writeln!(
                f,
                "{k:<28} {:>6} {:>12.1} {:>13.1} {:>8.1} ms {:>9.1} ms",
                g.steps, g.observed_s, g.predicted_s, g.median_observed_ms, g.median_predicted_ms
            )?;
        }
        write!(
            f,
            "predicted against observed: {:+.1} % over {} log(s)",
            100.0 * (self.all.predicted_s / self.all.observed_s.max(1e-9) - 1.0),
            self.logs.len()
        )
    }
}

/// `M.SS.mmm.uuu` (minutes, seconds, ms, µs since the server started) as seconds.
fn stamp(s: &str) -> Option<f64> {
    let p: Vec<f64> = s
        .split('.')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    (p.len() == 4).then(|| p[0] * 60.0 + p[1] + p[2] / 1e3 + p[3] / 1e6)
}

/// The number after `key` in `line`.
fn after(line: &str, key: &str) -> Option<usize> {
    let rest = &line[line.find(key)? + key.len()..];
    let digits: String = (rest.trim_start().chars())
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The steps in a llama-server debug log.
pub fn parse(log: &str) -> Vec<Step> {
    // Per slot: tokens still to compute and the context they start from.
    let mut pending: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    let mut total: BTreeMap<usize, usize> = BTreeMap::new();
    let (mut decodes, mut running) = (Vec::new(), std::collections::BTreeSet::new());
    let (mut steps, mut idle) = (Vec::<Step>::new(), false);
    for line in log.lines() {
        let Some(t) = line.split(' ').next().and_then(stamp) else {
            continue;
        };
        let slot = after(line, " id ");
        if line.contains("| new prompt,") {
            let (Some(s), Some(n)) = (slot, after(line, "task.n_tokens =")) else {
                continue;
            };
            total.insert(s, n);
            running.insert(s);
        } else if line.contains("| cached n_tokens =") {
            let (Some(s), Some(c)) = (slot, after(line, "cached n_tokens =")) else {
                continue;
            };
            let n = total.get(&s).copied().unwrap_or(c + 1);
            pending.insert(s, (n.saturating_sub(c).max(1), c.min(n.saturating_sub(1))));
        } else if line.contains("| slot decode token,") {
            decodes.extend(after(line, " n_tokens ="));
        } else if line.contains("| stop processing:") {
            slot.map(|s| running.remove(&s));
        } else if line.contains("all slots are idle") {
            idle = true;
        } else if line.contains("decode: n_batch (effective) =") {
            let n_batch = after(line, "(effective) =").unwrap_or(2048);
            if let Some(last) = steps.last_mut().filter(|_| !idle) {
                last.ms = Some((t - last.at_s) * 1000.0);
            }
            let work = batch(std::mem::take(&mut decodes), &mut pending, n_batch);
            steps.push(Step {
                at_s: t,
                ms: None,
                work,
                running: running.len(),
            });
            idle = false;
        }
    }
    steps
}

/// A batch as the server fills it: a token for each decoding sequence (at its `context`), then
/// the slots' uncomputed prompts (tokens left, context) in slot order up to `n_batch` tokens.
fn batch(
    decodes: Vec<usize>,
    pending: &mut BTreeMap<usize, (usize, usize)>,
    n_batch: usize,
) -> Vec<Work> {
    let mut work: Vec<Work> = (decodes.into_iter())
        .map(|context| Work {
            context,
            tokens: 1,
            decoding: true,
        })
        .collect();
    let mut budget = n_batch.saturating_sub(work.len());
    for (left, context) in pending.values_mut() {
        let k = (*left).min(budget);
        if k > 0 {
            work.push(Work {
                context: *context,
                tokens: k,
                decoding: false,
            });
        }
        (*left, *context, budget) = (*left - k, *context + k, budget - k);
    }
    pending.retain(|_, (left, _)| *left > 0);
    work
}

/// What kind of step it is.
fn kind(s: &Step) -> String {
    let decoding = s.work.iter().filter(|w| w.decoding).count();
    if s.work.iter().all(|w| w.decoding) {
        format!("decode ×{decoding}")
    } else {
        format!("prompt beside {decoding} decoding")
    }
}

/// Each timed step's observed time against `model`'s (`mask_ms` per decoding sequence).
pub fn price(logs: &[(String, Vec<Step>)], model: &LatencyModel) -> StepReport {
    let mut by: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in logs.iter().flat_map(|(_, steps)| steps) {
        let Some(ms) = s.ms else { continue };
        let masks = model.mask_ms * s.work.iter().filter(|w| w.decoding).count() as f64;
        let predicted = model.step_of(&s.work, s.running, masks);
        by.entry(kind(s)).or_default().push((ms, predicted));
    }
    let group = |v: &[(f64, f64)]| {
        let median = |f: fn(&(f64, f64)) -> f64| {
            crate::metrics::percentile(&v.iter().map(f).collect::<Vec<_>>(), 50.0).unwrap_or(0.0)
        };
        Group {
            steps: v.len(),
            observed_s: v.iter().map(|p| p.0).sum::<f64>() / 1000.0,
            predicted_s: v.iter().map(|p| p.1).sum::<f64>() / 1000.0,
            median_observed_ms: median(|p| p.0),
            median_predicted_ms: median(|p| p.1),
        }
    };
    let all: Vec<(f64, f64)> = by.values().flatten().copied().collect();
    StepReport {
        logs: logs.iter().map(|(name, _)| name.clone()).collect(),
        groups: by.iter().map(|(k, v)| (k.clone(), group(v))).collect(),
        all: group(&all),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(context: usize, tokens: usize, decoding: bool) -> Work {
        Work {
            context,
            tokens,
            decoding,
        }
    }

    const LOG: &str = "\
0.02.023.382 I slot   operator(): id  3 | task 1 | new prompt, n_ctx_slot = 8192, n_keep = 0, task.n_tokens = 958
0.02.023.387 I slot   operator(): id  3 | task 1 | cached n_tokens = 0, memory_seq_rm [0, end)
0.02.023.547 D srv        decode: n_batch (effective) = 2048, off = 0
0.10.092.889 I slot   operator(): id  1 | task 4 | new prompt, n_ctx_slot = 8192, n_keep = 0, task.n_tokens = 1203
0.10.092.893 I slot   operator(): id  1 | task 4 | cached n_tokens = 274, memory_seq_rm [274, end)
0.10.099.053 D slot handle_last_: id  3 | task 1 | slot decode token, id=515, n_ctx = 8192, n_tokens = 958, truncated = 0
0.10.099.695 D srv        decode: n_batch (effective) = 2048, off = 0
0.10.500.000 D slot handle_last_: id  3 | task 1 | slot decode token, id=11, n_ctx = 8192, n_tokens = 959, truncated = 0
0.10.500.100 D srv        decode: n_batch (effective) = 2048, off = 0
0.10.530.000 I slot      release: id  3 | task 1 | stop processing: n_tokens = 960, truncated = 0
0.10.530.050 I slot      release: id  1 | task 4 | stop processing: n_tokens = 1204, truncated = 0
0.10.530.100 I srv  update_slots: all slots are idle
0.12.000.000 D srv        decode: n_batch (effective) = 2048, off = 0
";

    #[test]
    fn a_debug_log_gives_each_step_its_prompts_decodes_and_time() {
        let steps = parse(LOG);
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].work, [w(0, 958, false)]);
        assert!((steps[0].ms.unwrap() - 8076.148).abs() < 1e-6);
        assert_eq!(steps[1].work, [w(958, 1, true), w(274, 929, false)]);
        assert_eq!(steps[1].running, 2);
        assert_eq!(steps[2].work, [w(959, 1, true)]);
        assert_eq!(
            steps[2].ms, None,
            "the server went idle before the next step"
        );
        assert_eq!(steps[3].running, 0);
    }

    #[test]
    fn a_batch_takes_prompt_tokens_up_to_its_size_and_the_rest_next_step() {
        let log = LOG.replace("(effective) = 2048", "(effective) = 600");
        let steps = parse(&log);
        assert_eq!(steps[0].work, [w(0, 600, false)]);
        // Slot 1's prompt comes first (slot order), then slot 3's rest.
        assert_eq!(steps[1].work, [w(958, 1, true), w(274, 599, false)]);
        assert_eq!(
            steps[2].work,
            [w(959, 1, true), w(873, 330, false), w(600, 269, false)]
        );
    }

    #[test]
    fn steps_are_priced_by_kind_against_the_model() {
        let steps = parse(LOG);
        let r = price(&[("log".into(), steps)], &LatencyModel::constant(10.0));
        assert_eq!(r.all.steps, 2);
        assert_eq!(r.groups["prompt beside 0 decoding"].steps, 1);
        assert!((r.groups["prompt beside 1 decoding"].predicted_s - 0.010).abs() < 1e-9);
        assert!((r.all.observed_s - (8.076148 + 0.400405)).abs() < 1e-6);
    }
}
