//! bench: benchmarks whose output states the figures.
//!
//! - `palate bench scheduling` ([`scheduling`]): the seed system's experiment against the
//!   simulated vLLM server.
//! - `palate bench selection` ([`selection`]): TOP-K + MMR for one large restaurant, through
//!   each vector index backend.

mod scheduling;
pub mod selection;

pub use scheduling::*;
