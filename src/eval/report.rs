//! `palate eval`'s figures over all restaurants, and their markdown table.

use std::fmt::Write as _;

use serde::Serialize;

use super::measure::{Restaurant, Tally};
use super::EvalOptions;
use crate::pipeline::Pipeline;

/// One sampling cap's figures, averaged over restaurants.
#[derive(Debug, Clone, Serialize)]
pub struct CapRow {
    pub cap: usize,
    /// Mean absolute error of the positive share over random draws, and for the run's draw.
    pub error: f64,
    pub error_run_draw: f64,
    /// Mean estimated tokens of labelling the sample, per restaurant: sent, and computed with
    /// the server's prefix cache (output tokens in both).
    pub tokens: f64,
    pub tokens_computed: f64,
}

/// Everything `palate eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub options: EvalOptions,
    pub default_cap: usize,
    pub restaurants: usize,
    pub valid: usize,
    pub accuracy: Tally,
    pub accuracy_en: Tally,
    pub accuracy_ko: Tally,
    /// Mean |labelled − true| positive share, from every review's label.
    pub aggregate_error: Option<f64>,
    /// The same on English reviews only.
    pub aggregate_error_en: Option<f64>,
    pub caps: Vec<CapRow>,
    /// TOP-K + MMR selection: mean error, review tokens selected and all (summed).
    pub selection_error: Option<f64>,
    pub selection_tokens: (u64, u64),
    /// Mean pairwise cosine distance of the MMR picks, and of random picks as many; the same
    /// for the whole selection.
    pub diversity: Option<(f64, f64)>,
    pub selection_diversity: Option<(f64, f64)>,
    pub consistency: Option<f64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub per_restaurant: Vec<Restaurant>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = v.filter(|x| x.is_finite()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The mean of one optional figure over restaurants.
fn over(rs: &[Restaurant], f: impl Fn(&Restaurant) -> Option<f64>) -> Option<f64> {
    mean(rs.iter().filter_map(f))
}

fn cap_rows(rs: &[Restaurant], opts: &EvalOptions) -> Vec<CapRow> {
    let col = |i: usize, f: fn(&(usize, f64, f64, u64, u64)) -> f64| {
        over(rs, |r| r.caps.get(i).map(f)).unwrap_or(f64::NAN)
    };
    (opts.caps.iter().enumerate())
        .map(|(i, &cap)| CapRow {
            cap,
            error: col(i, |c| c.1),
            error_run_draw: col(i, |c| c.2),
            tokens: col(i, |c| c.3 as f64),
            tokens_computed: col(i, |c| c.4 as f64),
        })
        .collect()
}

impl EvalReport {
    pub fn of(rs: Vec<Restaurant>, opts: &EvalOptions, p: &Pipeline) -> Self {
        let sum = |f: fn(&Restaurant) -> Tally| {
            rs.iter().map(f).fold(Tally::default(), |a, t| Tally {
                correct: a.correct + t.correct,
                judged: a.judged + t.judged,
            })
        };
        let sel = |f: fn(&(f64, u64, u64)) -> u64| {
            rs.iter().filter_map(|r| r.selection.as_ref()).map(f).sum()
        };
        let pair = |f: fn(&Restaurant) -> Option<(f64, f64)>| {
            over(&rs, |r| f(r).map(|d| d.0)).zip(over(&rs, |r| f(r).map(|d| d.1)))
        };
        Self {
            model: p.cfg.llm.model.clone(),
            options: opts.clone(),
            default_cap: p.cfg.select.sentiment_sample,
            restaurants: rs.len(),
            valid: rs.iter().filter(|r| r.failure.is_none()).count(),
            accuracy: sum(|r| r.accuracy),
            accuracy_en: sum(|r| r.accuracy_en),
            accuracy_ko: sum(|r| r.accuracy_ko),
            aggregate_error: over(&rs, |r| {
                Some((r.positive_share? - r.true_positive_share).abs())
            }),
            aggregate_error_en: over(&rs, |r| r.english.map(|(t, s)| (s - t).abs())),
            caps: cap_rows(&rs, opts),
            selection_error: over(&rs, |r| r.selection.map(|s| s.0)),
            selection_tokens: (sel(|s| s.1), sel(|s| s.2)),
            diversity: pair(|r| r.diversity),
            selection_diversity: pair(|r| r.selection_diversity),
            consistency: over(&rs, |r| r.consistency),
            prompt_tokens: rs.iter().map(|r| r.prompt_tokens).sum(),
            completion_tokens: rs.iter().map(|r| r.completion_tokens).sum(),
            per_restaurant: rs,
        }
    }

    /// The figures as markdown: a line of totals, the measures, and the sampling caps.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Model `{}`: {} restaurants, {} with a valid sentiment result; {} prompt and {} output tokens.\n\n| measure | value |\n|---|---|\n",
            self.model, self.restaurants, self.valid, self.prompt_tokens, self.completion_tokens
        );
        for (k, v) in self.measures() {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        s.push_str("\n| sample cap | positive-share error (mean of draws) | error of the run's draw | tokens sent per restaurant | tokens computed (prefix cache) |\n|---|---|---|---|---|\n");
        for c in &self.caps {
            let mark = if c.cap == self.default_cap {
                " (default)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "| {}{mark} | {:.3} | {:.3} | {:.0} | {:.0} |",
                c.cap, c.error, c.error_run_draw, c.tokens, c.tokens_computed
            );
        }
        s
    }

    fn measures(&self) -> Vec<(&'static str, String)> {
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1} %", v * 100.0));
        let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        let vs = |d: Option<(f64, f64)>| d.map_or("-".into(), |(a, b)| format!("{a:.3} vs {b:.3}"));
        let (sel, all) = self.selection_tokens;
        let a = self.accuracy;
        vec![
            (
                "per-review accuracy (ratings 1–2 vs 4–5)",
                format!("{} of {} = {}", a.correct, a.judged, pct(a.rate())),
            ),
            ("  English reviews", pct(self.accuracy_en.rate())),
            ("  Korean reviews", pct(self.accuracy_ko.rate())),
            (
                "aggregate positive-share error, every review labelled (mean abs)",
                num(self.aggregate_error),
            ),
            ("  English reviews only", num(self.aggregate_error_en)),
            (
                "consistency: same label in every repeat",
                pct(self.consistency),
            ),
            (
                "TOP-K + MMR selection's positive-share error",
                num(self.selection_error),
            ),
            (
                "  review tokens selected / all",
                format!(
                    "{sel} / {all} ({} fewer)",
                    pct(Some(1.0 - sel as f64 / all.max(1) as f64))
                ),
            ),
            (
                "MMR picks' diversity vs random picks (mean pairwise cosine distance)",
                vs(self.diversity),
            ),
            (
                "  whole selection (TOP-K + MMR) vs random picks",
                vs(self.selection_diversity),
            ),
        ]
    }
}
