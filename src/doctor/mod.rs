//! doctor: `palate doctor --job JOB` checks everything a run depends on before the run finds out:
//! each LLM endpoint and the server features palate relies on ([`endpoint`]), the embedding
//! model and ONNX Runtime, the vector index, the app database, the work database, disk space
//! and the GPU ([`local`]). Each check says what it found, how long it took, and for anything
//! wrong the fix (the flag to add, the command to run). Exit 0 when nothing failed, 1 otherwise;
//! a warning (a feature that makes the metrics poorer, not the results) does not fail.

pub mod endpoint;
pub mod local;

use std::time::Instant;

use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    /// Not applicable to this job (no app database, no GPU).
    Skip,
}

/// One check's finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked, with its subject: `endpoint http://…/v1: models`.
    pub name: String,
    pub status: Status,
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
    pub ms: f64,
}

impl Check {
    pub fn new(name: impl Into<String>, status: Status, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: None,
            ms: 0.0,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Stamps the time since `t0`.
    pub fn took(mut self, t0: Instant) -> Self {
        self.ms = t0.elapsed().as_secs_f64() * 1000.0;
        self
    }
}

/// Every check of the job, in the order a run meets them.
pub async fn run(cfg: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    for ep in &cfg.llm.endpoints {
        checks.extend(endpoint::check(&cfg.llm, ep).await);
    }
    checks.push(local::embedding(&cfg.embed).await);
    checks.extend(local::database(&cfg.job.database));
    checks.push(local::index(&cfg.index).await);
    checks.push(local::sink(&cfg.sink).await);
    checks.extend(local::disk(cfg));
    checks.extend(local::gpu());
    checks
}

/// 0 when no check failed, 1 otherwise.
pub fn exit_code(checks: &[Check]) -> u8 {
    if checks.iter().any(|c| c.status == Status::Fail) {
        crate::domain::exit::ERROR
    } else {
        crate::domain::exit::OK
    }
}

/// The terminal text: one line per check, its fix under it, and a last line counting them.
pub fn text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
            Status::Skip => "skip",
        };
        out.push_str(&format!(
            "{mark} {:<44} {} ({:.0} ms)\n",
            c.name, c.detail, c.ms
        ));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("     fix: {fix}\n"));
        }
    }
    let n = |s: Status| checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{} ok, {} warnings, {} failed, {} skipped\n",
        n(Status::Ok),
        n(Status::Warn),
        n(Status::Fail),
        n(Status::Skip)
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_warning_does_not_fail_but_a_failure_does() {
        let ok = Check::new("a", Status::Ok, "fine");
        let warn = Check::new("b", Status::Warn, "poorer metrics").fix("add --flag");
        assert_eq!(exit_code(&[ok.clone(), warn.clone()]), 0);
        let fail = Check::new("c", Status::Fail, "down");
        assert_eq!(exit_code(&[ok, warn, fail]), 1);
    }

    #[test]
    fn the_text_shows_each_fix_under_its_check() {
        let t = text(&[
            Check::new("endpoint x: priority", Status::Fail, "refused")
                .fix("--scheduling-policy priority"),
            Check::new("gpu", Status::Skip, "no NVML"),
        ]);
        assert!(t.contains("FAIL endpoint x: priority"));
        assert!(t.contains("     fix: --scheduling-policy priority\n"));
        assert!(t.ends_with("0 ok, 0 warnings, 1 failed, 1 skipped\n"));
    }
}
