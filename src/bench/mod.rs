//! bench: benchmarks whose output states the figures.
//!
//! - `palate bench scheduling` ([`scheduling`]): one scheduling mode of palate's client against
//!   a server in another process, on palate's own requests ([`workload`]), with the server's
//!   running sequences sampled from its `/metrics` ([`probe`]).
//! - `palate bench calibrate` ([`calibrate`]): sweeps a real server ([`sweep`]) and fits the
//!   simulator's cost model to it ([`fit`]).
//! - `palate bench steps` ([`steps`]): every step of a real llama.cpp server's debug log,
//!   priced by a fitted profile.
//! - `palate bench selection` ([`selection`]): TOP-K + MMR for one large restaurant, through
//!   each vector index backend.

pub mod calibrate;
pub mod fit;
pub mod probe;
pub mod scheduling;
pub mod selection;
pub mod steps;
mod sweep;
pub mod workload;

pub use scheduling::{Mode, ModeReport, ModeSpec};
pub use workload::WorkloadSpec;
