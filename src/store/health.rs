//! The work database as `palate doctor` sees it, opened read-only so that checking changes
//! nothing: its schema version against this palate's, SQLite's quick integrity check, the runs
//! still marked `running`, and which process holds `<database>.lock`.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use super::{StoreError, MIGRATIONS};

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Migrations applied (`PRAGMA user_version`).
    pub schema_version: usize,
    /// Migrations this palate knows.
    pub expected_version: usize,
    /// `ok`, or the first problems `PRAGMA quick_check` found.
    pub integrity: String,
    /// (run id, started at) of runs marked `running`.
    pub running: Vec<(i64, String)>,
}

pub fn health(path: &Path) -> Result<Health, StoreError> {
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|source| {
            StoreError::Open {
                path: path.into(),
                source,
            }
        })?;
    let schema_version =
        conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    let mut q = conn.prepare("PRAGMA quick_check(5)")?;
    let problems: Vec<String> = q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let running = if schema_version > 0 {
        let mut q = conn.prepare(
            "SELECT run_id, started_at FROM runs WHERE status = 'running' ORDER BY run_id",
        )?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    Ok(Health {
        schema_version,
        expected_version: MIGRATIONS.len(),
        integrity: problems.join("; "),
        running,
    })
}

/// The process holding `<database>.lock`, from the kernel's lock table (reading it takes no
/// lock, so the doctor never keeps a run from starting).
pub fn lock_holder(db: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let lock = PathBuf::from(format!("{}.lock", db.display()));
    let inode = std::fs::metadata(&lock).ok()?.ino();
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&table, inode)
}

/// `/proc/locks` lines: `1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF`.
fn holder_in(table: &str, inode: u64) -> Option<u32> {
    table.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let i = f.iter().position(|x| x.matches(':').count() == 2)?;
        let ino: u64 = f[i].rsplit(':').next()?.parse().ok()?;
        (ino == inode).then(|| f.get(i - 1)?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_database_is_current_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        drop(super::super::Db::open(&path).unwrap());
        let h = health(&path).unwrap();
        assert_eq!(h.schema_version, MIGRATIONS.len());
        assert_eq!(h.integrity, "ok");
        assert!(h.running.is_empty());
        std::fs::write(
            dir.path().join("junk.db"),
            b"not a database at all, not even close",
        )
        .unwrap();
        assert!(health(&dir.path().join("junk.db")).is_err());
    }

    #[test]
    fn the_lock_holder_is_found_by_inode() {
        let table = "1: FLOCK  ADVISORY  WRITE 4242 00:2a:918 0 EOF\n\
                     2: POSIX  ADVISORY  READ 77 fd:01:1234 0 EOF\n";
        assert_eq!(holder_in(table, 918), Some(4242));
        assert_eq!(holder_in(table, 1234), Some(77));
        assert_eq!(holder_in(table, 5), None);
    }
}
