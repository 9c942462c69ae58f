//! The prompt files in `prompts/`: a system text, and per kind a task and a JSON schema. Results
//! are versioned by a hash over all of them.

use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::{short_hash, Kind};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read prompt file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("prompt schema {path} is not valid JSON: {source}")]
    Schema {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot load tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
}

/// The prompt files, loaded once per run.
#[derive(Debug, Clone)]
pub struct Prompts {
    pub(super) system: String,
    pub(super) tasks: [String; 3],
    pub(super) schemas: [Value; 3],
    /// First 16 hex digits of the sha256 over every prompt and schema file: results are
    /// versioned by it, so editing a prompt makes every restaurant current-less again.
    pub version: String,
}

impl Prompts {
    pub fn load(dir: &Path) -> Result<Self, PlanError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| PlanError::Read { path, source })
        };
        let mut h = Sha256::new();
        let system = read("system.md")?;
        h.update(system.as_bytes());
        let mut tasks: [String; 3] = Default::default();
        let mut schemas: [Value; 3] = Default::default();
        for k in Kind::ALL {
            let task = read(&format!("{}.md", k.as_str()))?;
            let schema_name = format!("{}.schema.json", k.as_str());
            let schema_text = read(&schema_name)?;
            h.update([0]);
            h.update(task.as_bytes());
            h.update([0]);
            h.update(schema_text.as_bytes());
            schemas[k as usize] =
                serde_json::from_str(&schema_text).map_err(|source| PlanError::Schema {
                    path: dir.join(&schema_name),
                    source,
                })?;
            tasks[k as usize] = task;
        }
        Ok(Self {
            system: system.trim().to_string(),
            tasks,
            schemas,
            version: short_hash(h),
        })
    }
}
