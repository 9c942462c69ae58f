//! `<database>.lock`, which keeps a run or analyze from overlapping another process, and the
//! clean-up of runs a killed process left behind.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::config::Config;
use crate::domain::exit;
use crate::output;
use crate::store::Store;

/// How a command holds `<database>.lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// `run` and `analyze`: one at a time, and no ingest beside them.
    Exclusive,
    /// `ingest`: several at once (SQLite makes their writes take turns), but not during a run.
    Shared,
}

/// Takes `<database>.lock` for the life of the returned file, or `None` if another process
/// holds it in a conflicting way.
pub fn db_lock(db: &Path, mode: Lock) -> anyhow::Result<Option<File>> {
    let path = PathBuf::from(format!("{}.lock", db.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f =
        File::create(&path).with_context(|| format!("creating lock file {}", path.display()))?;
    let taken = match mode {
        Lock::Exclusive => f.try_lock(),
        Lock::Shared => f.try_lock_shared(),
    };
    match taken {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

pub fn locked_out(cfg: &Config) -> u8 {
    output::line(&format!(
        "another palate process holds {}.lock (a run or analyze, or an ingest while this is a run); not starting (exit {})",
        cfg.job.database.display(),
        exit::LOCKED
    ));
    exit::LOCKED
}

/// Opens the store of a command holding the lock exclusively: runs still marked `running`
/// belong to a process that is gone, and are marked failed.
pub async fn open_exclusive(cfg: &Config) -> anyhow::Result<Store> {
    let store = Store::open(&cfg.job.database)?;
    let abandoned = store.fail_abandoned_runs().await?;
    if !abandoned.is_empty() {
        tracing::warn!(runs = ?abandoned, "runs left `running` by a killed or crashed process are marked failed");
    }
    Ok(store)
}
