//! config: reads a job file (`jobs/*.toml`), applies flags and environment variables, and
//! validates the result into one [`Config`]. Each section deserialises straight into the type of
//! the stage that owns it; this module only assembles them. Relative paths in a job file are
//! taken from the directory palate runs in (the repository root in the README's commands).

use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::JobArgs;
use crate::domain::Secret;
use crate::embed::EmbedConfig;
use crate::index::IndexConfig;
use crate::infer::LlmConfig;
use crate::ingest::IngestOptions;
use crate::metrics::alerts::Alerts;
use crate::metrics::{Cost, ScrapeConfig, Sla};
use crate::plan::PlanConfig;
use crate::select::SelectConfig;
use crate::sink::SinkConfig;
use crate::telemetry::TelemetryConfig;
use crate::watchdog::WatchdogConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read job file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Names the line and column but does not quote the line: it may hold a key, and the
    /// error goes to cron mail and logs.
    #[error("job file {path} is invalid at line {line}, column {column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The job file as written. Every section and field has a default except the inputs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobFile {
    pub job: JobSection,
    pub embed: EmbedConfig,
    pub index: IndexConfig,
    pub select: SelectConfig,
    pub llm: LlmConfig,
    pub plan: PlanConfig,
    pub sla: Sla,
    pub cost: Cost,
    pub metrics: ScrapeConfig,
    pub sink: SinkConfig,
    pub alerts: Alerts,
    pub watchdog: WatchdogConfig,
    pub telemetry: TelemetryConfig,
}

/// The `[job]` section: what the run reads and where it writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSection {
    /// Name recorded with each run.
    pub name: String,
    /// SQLite database holding reviews, embeddings, results and metrics.
    pub database: PathBuf,
    /// CSV or JSONL review files ingested at the start of `palate run`.
    pub inputs: Vec<PathBuf>,
    /// Folder for `<input>.<hash of its path>.rejects.jsonl` files.
    pub rejects_dir: PathBuf,
    /// Reviews longer than this (bytes of UTF-8) are rejected at ingest.
    pub max_review_bytes: usize,
    /// Restaurants analysed at the same time (their requests share `llm.max_in_flight`).
    pub restaurant_concurrency: usize,
    /// Minutes a run may take: then it starts no more restaurants, stores those in flight, and
    /// exits 5; the next run resumes. Unset: no limit.
    pub deadline_min: Option<f64>,
    /// Restaurants in a row that fail only for request or database errors (every endpoint
    /// down, a full disk) before the run gives up, marks itself failed and exits 1, releasing the lock for the next run.
    pub max_failed_in_a_row: usize,
    /// This worker's share of the catalogue, `"i/n"` (`--shard`): it ingests and analyses only
    /// the restaurants whose id hashes to shard i, with its own work database.
    pub shard: Option<crate::domain::Shard>,
}

impl Default for JobSection {
    fn default() -> Self {
        Self {
            name: "adhoc".into(),
            database: "out/palate.db".into(),
            inputs: Vec::new(),
            rejects_dir: "out/rejects".into(),
            max_review_bytes: 4000,
            restaurant_concurrency: 4,
            deadline_min: None,
            max_failed_in_a_row: 8,
            shard: None,
        }
    }
}

/// A job file that passed validation: everything a command needs.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Config(JobFile);

impl Deref for Config {
    type Target = JobFile;

    fn deref(&self) -> &JobFile {
        &self.0
    }
}

impl JobFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let before = &text[..at];
            ConfigError::Parse {
                path: path.into(),
                line: before.matches('\n').count() + 1,
                column: before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1,
                message: e.message().trim().to_string(),
            }
        })
    }

    /// Flags and environment variables override the file.
    fn apply(&mut self, a: &JobArgs) {
        let job = &mut self.job;
        set(&mut job.database, a.database.clone());
        set(&mut job.rejects_dir, a.rejects_dir.clone());
        set(&mut job.restaurant_concurrency, a.restaurant_concurrency);
        if a.shard.is_some() {
            job.shard = a.shard;
        }
        if !a.input.is_empty() {
            job.inputs = a.input.clone();
        }
        if !a.endpoint.is_empty() {
            self.llm.endpoints = a.endpoint.clone();
        }
        set(&mut self.llm.model, a.model.clone());
        set(&mut self.llm.max_in_flight, a.max_in_flight);
        set(&mut self.select.k, a.k);
        set(&mut self.select.diverse, a.diverse);
        set(&mut self.embed.model_dir, a.embed_model_dir.clone());
        set(&mut self.embed.ort_dylib, a.ort_dylib.clone());
        if let Some(k) = &a.api_key {
            self.llm.api_key = Some(Secret::new(k.clone()));
        }
        if let Some(k) = &a.embed_api_key {
            self.embed.api_key = Some(Secret::new(k.clone()));
        }
        if let Some(k) = &a.qdrant_api_key {
            self.index.api_key = Some(Secret::new(k.clone()));
        }
        if let Some(u) = &a.sink_url {
            self.sink.url = Some(Secret::new(u.clone()));
        }
    }
}

fn set<T>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}

impl Config {
    /// Job file (if any) overridden by flags and environment variables, then validated.
    pub fn from_args(args: &JobArgs) -> Result<Self, ConfigError> {
        let mut file = match &args.job {
            Some(path) => JobFile::load(path)?,
            None => JobFile::default(),
        };
        file.apply(args);
        Self::validate(file)
    }

    /// Each stage checks its own section.
    pub fn validate(mut f: JobFile) -> Result<Self, ConfigError> {
        if f.job.restaurant_concurrency == 0 || f.job.max_failed_in_a_row == 0 {
            return Err(ConfigError::Invalid(
                "job.restaurant_concurrency and job.max_failed_in_a_row must be at least 1".into(),
            ));
        }
        if f.job
            .deadline_min
            .is_some_and(|m| !(m.is_finite() && m > 0.0))
        {
            return Err(ConfigError::Invalid(
                "job.deadline_min must be a positive number of minutes".into(),
            ));
        }
        f.llm
            .validate()
            .and_then(|()| f.plan.validate())
            .and_then(|()| f.select.validate())
            .and_then(|()| f.embed.validate())
            .and_then(|()| f.index.validate())
            .and_then(|()| f.sink.validate())
            .and_then(|()| f.alerts.validate())
            .and_then(|()| f.watchdog.validate())
            .map_err(ConfigError::Invalid)?;
        Ok(Self(f))
    }

    pub fn ingest_options(&self) -> IngestOptions {
        IngestOptions {
            max_review_bytes: self.job.max_review_bytes,
            rejects_dir: self.job.rejects_dir.clone(),
            stop: None,
            shard: self.job.shard,
        }
    }

    /// The run's deadline, if the job sets one.
    pub fn deadline(&self) -> Option<std::time::Duration> {
        (self.job.deadline_min).map(|m| std::time::Duration::from_secs_f64(m * 60.0))
    }

    /// The configuration as a run records it: JSON, with every secret as `***`.
    pub fn record(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_and_nightly_jobs_parse_and_validate() {
        for job in ["jobs/demo.toml", "jobs/nightly.toml"] {
            let f = JobFile::load(Path::new(job)).unwrap();
            let c = Config::validate(f).unwrap();
            assert!(!c.job.inputs.is_empty(), "{job} has inputs");
        }
    }

    #[test]
    fn a_toml_error_names_its_line_but_never_quotes_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[llm]\nmodel = \"m\"\napi_key = \"sk-live-123\" oops\n").unwrap();
        let e = JobFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("line 3"), "{e}");
        assert!(!e.contains("sk-live-123"), "{e}");
    }

    #[test]
    fn credentials_never_reach_the_recorded_or_printed_configuration() {
        let mut f = JobFile::default();
        f.llm.endpoints = vec!["https://bob:pw-123@llm.example/v1".into()];
        f.llm.api_key = Some(Secret::new("sk-live-123"));
        let c = Config::validate(f).unwrap();
        for shown in [c.record(), format!("{c:?}")] {
            assert!(
                !shown.contains("pw-123") && !shown.contains("sk-live-123"),
                "{shown}"
            );
        }
        assert!(c.record().contains("https://***@llm.example/v1"));
        assert_eq!(
            c.llm.endpoints,
            ["https://bob:pw-123@llm.example/v1"],
            "still sent"
        );
    }

    #[test]
    fn unknown_field_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, "[select]\nkk = 3\n").unwrap();
        let e = JobFile::load(&p).unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("kk"), "{e}");
    }

    #[test]
    fn lambda_out_of_range_is_rejected() {
        let mut f = JobFile::default();
        f.select.lambda = 1.5;
        assert!(Config::validate(f)
            .unwrap_err()
            .to_string()
            .contains("lambda"));
    }

    #[test]
    fn the_recorded_config_is_json_without_the_api_key() {
        let mut f = JobFile::default();
        f.llm.api_key = Some(Secret::new("sk-live-123"));
        f.llm.endpoints = vec!["http://h:8000/v1/".into()];
        let c = Config::validate(f).unwrap();
        assert_eq!(c.llm.endpoints, ["http://h:8000/v1"]);
        let json: serde_json::Value = serde_json::from_str(&c.record()).unwrap();
        assert_eq!(json["llm"]["api_key"], "***");
        assert!(!c.record().contains("sk-live") && !format!("{c:?}").contains("sk-live"));
    }

    #[test]
    fn old_endpoint_benching_names_still_parse() {
        let f: JobFile =
            toml::from_str("[llm]\nbench_after_failures = 7\nbench_s = 9.0\n").unwrap();
        assert_eq!((f.llm.eject_after_failures, f.llm.eject_s), (7, 9.0));
    }
}
