//! Fitting the simulator's step cost ([`LatencyModel`]) to a server's measured decode and prefill
//! times: least squares on the relative error, by Nelder–Mead in log space (every figure stays
//! positive), restarted from its own best point.

use serde::Serialize;

use crate::sim::{pairs, LatencyModel, StepLoad, Work};

/// One measurement the fit explains.
#[derive(Debug, Clone, Copy, Serialize)]
pub enum Point {
    /// `parallel` sequences decoding with `context` tokens each: the time per output token.
    Decode {
        parallel: usize,
        context: usize,
        tpot_ms: f64,
    },
    /// One prompt prefilled alone, `tokens` computed (in chunks of `chunk`) after `cached`
    /// tokens its slot already held (the chat template's shared start): the time to first token.
    Prefill {
        tokens: usize,
        cached: usize,
        chunk: usize,
        ttft_ms: f64,
    },
    /// One prompt of `tokens` (at most a chunk) computed after `cached`, sent while `decoding`
    /// sequences decode with `context` tokens each: its time to first token, one step of all of
    /// them after waiting out, on average, half a decode step.
    Mixed {
        tokens: usize,
        cached: usize,
        decoding: usize,
        context: usize,
        ttft_ms: f64,
    },
}

impl Point {
    pub fn observed(&self) -> f64 {
        match *self {
            Point::Decode { tpot_ms, .. } => tpot_ms,
            Point::Prefill { ttft_ms, .. } | Point::Mixed { ttft_ms, .. } => ttft_ms,
        }
    }

    /// What `m` predicts for it.
    pub fn predicted(&self, m: &LatencyModel) -> f64 {
        match *self {
            Point::Decode {
                parallel, context, ..
            } => decode_step(m, parallel, context),
            Point::Prefill {
                tokens,
                cached,
                chunk,
                ..
            } => {
                let chunk = chunk.max(1);
                (0..tokens.div_ceil(chunk))
                    .map(|i| {
                        let t = (tokens - i * chunk).min(chunk);
                        m.step(&StepLoad {
                            prefill: t,
                            running: 1,
                            sequences: 1,
                            pairs: pairs(cached + i * chunk, t),
                            ..Default::default()
                        })
                    })
                    .sum()
            }
            Point::Mixed {
                tokens,
                cached,
                decoding,
                context,
                ..
            } => {
                let mut work = vec![
                    Work {
                        context,
                        tokens: 1,
                        decoding: true,
                    };
                    decoding
                ];
                work.push(Work {
                    context: cached,
                    tokens,
                    decoding: false,
                });
                decode_step(m, decoding, context) / 2.0 + m.step_of(&work, decoding + 1, 0.0)
            }
        }
    }
}

/// One step of `parallel` sequences decoding with `context` tokens each.
fn decode_step(m: &LatencyModel, parallel: usize, context: usize) -> f64 {
    m.step(&StepLoad {
        decoding: parallel,
        running: parallel,
        sequences: parallel,
        context: parallel * context,
        pairs: parallel * context,
        ..Default::default()
    })
}

/// What the search varies: the square roots of step_ms, seq_ms, token_ms, weights_ms,
/// kv_token_us and attention_us, then of mix_us and row_ms where the fit uses them (each figure
/// stays at least 0, and can reach 0). The rest comes from `base`.
#[derive(Clone, Copy)]
struct Shape {
    base: LatencyModel,
    mix: bool,
    row: bool,
}

impl Shape {
    fn dims(&self) -> usize {
        6 + self.mix as usize + self.row as usize
    }

    fn model(&self, x: &[f64]) -> LatencyModel {
        let mut extra = x[6..].iter().map(|v| v * v);
        LatencyModel {
            step_ms: x[0] * x[0],
            seq_ms: x[1] * x[1],
            token_ms: x[2] * x[2],
            weights_ms: x[3] * x[3],
            kv_token_us: x[4] * x[4],
            attention_us: x[5] * x[5],
            mix_us: if self.mix {
                extra.next().unwrap_or(0.0)
            } else {
                0.0
            },
            row_ms: if self.row {
                extra.next().unwrap_or(0.0)
            } else {
                0.0
            },
            ..self.base
        }
    }
}

/// Mean squared relative error of `m` over `points`.
fn loss(m: &LatencyModel, points: &[Point]) -> f64 {
    let n = points.len().max(1) as f64;
    (points.iter())
        .map(|p| ((p.predicted(m) - p.observed()) / p.observed().max(1e-9)).powi(2))
        .sum::<f64>()
        / n
}

/// The fitted model, and the mean and largest relative error over the points.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub model: LatencyModel,
    pub mean_abs_error: f64,
    pub max_abs_error: f64,
}

/// The tiles the fit tries (see [`LatencyModel::tile`]; 0: none); it keeps the one that
/// explains the points best.
const TILES: [u32; 4] = [0, 2, 4, 8];

/// Fits the model to `points`, for a server that splits steps into equal micro-batches or not.
pub fn fit(points: &[Point], split_equal: bool) -> Fit {
    let decode1 = (points.iter())
        .filter_map(|p| match p {
            Point::Decode { tpot_ms, .. } => Some(*tpot_ms),
            _ => None,
        })
        .fold(f64::INFINITY, f64::min);
    let decode1 = if decode1.is_finite() { decode1 } else { 10.0 };
    // Starts in the right decades: a fifth of a decode step on the host, the rest the weights,
    // or the KV cache (max() leaves a local minimum on each side).
    let starts = [(0.8, 0.01), (0.1, 10.0)].map(|(weights, kv)| {
        [
            decode1 * 0.2,
            decode1 * 0.01,
            decode1 * 0.01,
            decode1 * weights,
            kv,
            0.01,
            0.01,
            decode1 * 0.1,
        ]
        .map(f64::sqrt)
    });
    // mix_us only where mixed points can tell it apart.
    let mix = (points.iter()).any(|p| matches!(p, Point::Mixed { .. }));
    let shapes = TILES.map(|tile| Shape {
        base: LatencyModel {
            tile,
            split_equal,
            ..LatencyModel::constant(0.0)
        },
        mix,
        row: tile > 1,
    });
    let (m, _) = (shapes.iter())
        .flat_map(|shape| starts.iter().map(move |start| (shape, start)))
        .map(|(shape, start)| {
            let f = |x: &[f64]| loss(&shape.model(x), points);
            let mut best = pick(start, shape);
            for _ in 0..6 {
                best = nelder_mead(&f, &best, 3000);
            }
            let m = shape.model(&best);
            (m, loss(&m, points))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((LatencyModel::constant(0.0), f64::INFINITY));
    let errs: Vec<f64> = (points.iter())
        .map(|p| ((p.predicted(&m) - p.observed()) / p.observed().max(1e-9)).abs())
        .collect();
    Fit {
        model: m,
        mean_abs_error: errs.iter().sum::<f64>() / errs.len().max(1) as f64,
        max_abs_error: errs.iter().cloned().fold(0.0, f64::max),
    }
}

/// The start's coordinates that `shape` searches.
fn pick(start: &[f64; 8], shape: &Shape) -> Vec<f64> {
    let mut x = start[..6].to_vec();
    if shape.mix {
        x.push(start[6]);
    }
    if shape.row {
        x.push(start[7]);
    }
    debug_assert_eq!(x.len(), shape.dims());
    x
}

/// Nelder–Mead minimisation of `f` from `x0`, with an initial simplex of half of each
/// coordinate (or 0.1 where it is near 0) along each axis.
fn nelder_mead(f: &dyn Fn(&[f64]) -> f64, x0: &[f64], iterations: usize) -> Vec<f64> {
    let n = x0.len();
    let mut simplex: Vec<(Vec<f64>, f64)> = (0..=n)
        .map(|i| {
            let mut x = x0.to_vec();
            if i > 0 {
                x[i - 1] += (0.5 * x[i - 1].abs()).max(0.1);
            }
            let v = f(&x);
            (x, v)
        })
        .collect();
    let point = |c: &[f64], d: &[f64], t: f64| -> Vec<f64> {
        c.iter().zip(d).map(|(a, b)| a + t * (b - a)).collect()
    };
    for _ in 0..iterations {
        simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
        let centroid: Vec<f64> = (0..n)
            .map(|j| simplex[..n].iter().map(|(x, _)| x[j]).sum::<f64>() / n as f64)
            .collect();
        let worst = simplex[n].clone();
        let r = point(&centroid, &worst.0, -1.0);
        let fr = f(&r);
        if fr < simplex[0].1 {
            let e = point(&centroid, &worst.0, -2.0);
            let fe = f(&e);
            simplex[n] = if fe < fr { (e, fe) } else { (r, fr) };
        } else if fr < simplex[n - 1].1 {
            simplex[n] = (r, fr);
        } else {
            let c = point(&centroid, &worst.0, 0.5);
            let fc = f(&c);
            if fc < worst.1 {
                simplex[n] = (c, fc);
            } else {
                let best = simplex[0].0.clone();
                for s in simplex.iter_mut().skip(1) {
                    s.0 = point(&best, &s.0, 0.5);
                    s.1 = f(&s.0);
                }
            }
        }
    }
    simplex.sort_by(|a, b| a.1.total_cmp(&b.1));
    simplex.swap_remove(0).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(parallel: usize, context: usize) -> Point {
        Point::Decode {
            parallel,
            context,
            tpot_ms: 0.0,
        }
    }

    fn prefill(tokens: usize) -> Point {
        Point::Prefill {
            tokens,
            cached: 0,
            chunk: 2048,
            ttft_ms: 0.0,
        }
    }

    /// `p` as a server whose steps cost what `truth` says would measure it.
    fn measured(truth: &LatencyModel, mut p: Point) -> Point {
        let v = p.predicted(truth);
        match &mut p {
            Point::Decode { tpot_ms, .. } => *tpot_ms = v,
            Point::Prefill { ttft_ms, .. } | Point::Mixed { ttft_ms, .. } => *ttft_ms = v,
        }
        p
    }

    #[test]
    fn the_fit_recovers_a_known_model_from_its_own_points() {
        let truth = LatencyModel {
            step_ms: 2.0,
            seq_ms: 0.5,
            token_ms: 1.2,
            weights_ms: 20.0,
            kv_token_us: 3.0,
            attention_us: 0.5,
            ..LatencyModel::constant(0.0)
        };
        let points: Vec<Point> = ([1, 2, 4, 8, 16, 32].map(|n| decode(n, 200)).into_iter())
            .chain([32, 128, 512, 1024, 3000].map(prefill))
            .map(|p| measured(&truth, p))
            .collect();
        let f = fit(&points, false);
        assert!(f.max_abs_error < 0.02, "{f:?}");
        assert!((f.model.token_ms - 1.2).abs() < 0.05, "{f:?}");
    }

    #[test]
    fn mixed_points_recover_what_a_step_of_several_sequences_costs() {
        let truth = LatencyModel {
            step_ms: 8.0,
            seq_ms: 12.0,
            token_ms: 5.0,
            kv_token_us: 12.0,
            attention_us: 2.0,
            mix_us: 500.0,
            ..LatencyModel::constant(0.0)
        };
        let mixed = |tokens| Point::Mixed {
            tokens,
            cached: 0,
            decoding: 3,
            context: 150,
            ttft_ms: 0.0,
        };
        let points: Vec<Point> = [(1, 100), (2, 100), (4, 100), (1, 1100), (4, 1100)]
            .map(|(n, c)| decode(n, c))
            .into_iter()
            .chain([74, 172, 572, 1107].map(prefill))
            .chain([146, 438].map(mixed))
            .map(|p| measured(&truth, p))
            .collect();
        let f = fit(&points, false);
        // The host and weight figures trade off against each other; mix_us is pinned down.
        assert!(f.mean_abs_error < 0.02 && f.max_abs_error < 0.05, "{f:?}");
        assert!((f.model.mix_us - 500.0).abs() < 50.0, "{f:?}");
    }

    #[test]
    fn the_fit_finds_the_tile_that_makes_three_sequences_cost_more_than_four() {
        let truth = LatencyModel {
            step_ms: 5.0,
            seq_ms: 10.0,
            token_ms: 5.0,
            kv_token_us: 10.0,
            tile: 4,
            row_ms: 9.0,
            split_equal: true,
            ..LatencyModel::constant(0.0)
        };
        let points: Vec<Point> = (1..=4)
            .flat_map(|n| [decode(n, 100), decode(n, 1100)])
            .chain([76, 180, 572, 1118].map(prefill))
            .map(|p| measured(&truth, p))
            .collect();
        let f = fit(&points, true);
        assert_eq!(f.model.tile, 4, "{f:?}");
        assert!(f.model.split_equal);
        assert!(f.max_abs_error < 0.03, "{f:?}");
        assert!((f.model.row_ms - 9.0).abs() < 1.0, "{f:?}");
    }

    #[test]
    fn a_prefill_longer_than_a_chunk_takes_several_steps() {
        let m = LatencyModel {
            token_ms: 1.0,
            ..LatencyModel::constant(1.0)
        };
        let p = Point::Prefill {
            tokens: 5000,
            cached: 0,
            chunk: 2048,
            ttft_ms: 0.0,
        };
        assert_eq!(p.predicted(&m), 3.0 + 5000.0);
    }
}
