//! ingest: reads CSV or JSONL review files row by row (constant memory), validates each row,
//! stores the good ones and writes every bad one to `<rejects_dir>/<file>.<hash>.rejects.jsonl`
//! with its line number and reason. A row is never dropped silently; re-ingesting a file changes
//! nothing.
//!
//! - `lines`: physical lines with a cap on their length, and the encoding check.
//! - `formats`: JSON Lines.
//! - `records`, `csv_input`: CSV records framed from lines (quoted fields may span lines), then
//!   parsed.
//! - `validate`: the checks on one row's fields.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

mod csv_input;
mod formats;
mod lines;
mod records;
mod validate;

pub use lines::{read_bounded_line, LineEnd, LineRead};
pub use validate::{validate, RawRow};

use crate::domain::sha256_hex;
use crate::store::{Db, IngestWriter, StoreError, Upsert};

/// The most bytes one JSON line or CSV record may have: room for a review at the limit written
/// with every character escaped, and never less than 1 MiB. Longer ones are rejected, and only
/// this much of them is ever held in memory.
pub fn max_record_bytes(max_review_bytes: usize) -> usize {
    (max_review_bytes.saturating_mul(4).saturating_add(4096)).max(1 << 20)
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unusable file: {reason}")]
    Unusable { path: PathBuf, reason: String },
    #[error("{path}: read error near line {line}: {source}")]
    Read {
        path: PathBuf,
        line: u64,
        source: std::io::Error,
    },
    #[error("{path}: cannot write rejects file: {source}")]
    Rejects {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: stopped by a signal at line {line}; the rows before it are stored")]
    Stopped { path: PathBuf, line: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub max_review_bytes: usize,
    pub rejects_dir: PathBuf,
    /// Stops the file at the next row (SIGTERM): the rows read so far stay stored, and the
    /// file's next ingest carries on (the stored rows are unchanged).
    pub stop: Option<tokio_util::sync::CancellationToken>,
    /// Only the restaurants of this shard are stored (`--shard i/n`); other rows are counted.
    pub shard: Option<crate::domain::Shard>,
}

/// What one file's ingest did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub file: PathBuf,
    pub rows: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    pub rejects_file: Option<PathBuf>,
    /// Valid rows of restaurants in other shards, left to their workers.
    pub other_shards: u64,
}

/// The physical lines a row spans: one, or more for a CSV record with a quoted field over
/// several lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lines {
    pub first: u64,
    pub last: u64,
}

impl From<u64> for Lines {
    fn from(line: u64) -> Self {
        Self {
            first: line,
            last: line,
        }
    }
}

impl From<(u64, u64)> for Lines {
    fn from((first, last): (u64, u64)) -> Self {
        Self { first, last }
    }
}

/// One line of a rejects file.
#[derive(Debug, Serialize)]
struct Reject<'a> {
    file: &'a str,
    /// The row's first line.
    line: u64,
    /// Its last line, when it spans more than one.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_line: Option<u64>,
    reason: &'a str,
    /// The start of the raw row (at most 300 characters, invalid UTF-8 replaced).
    raw: &'a str,
}

pub fn ingest_file(
    db: &mut Db,
    path: &Path,
    opts: &IngestOptions,
) -> Result<IngestReport, IngestError> {
    let format = Format::of(path)?;
    let file = File::open(path).map_err(|source| IngestError::Open {
        path: path.into(),
        source,
    })?;
    let mut sink = Sink::new(db.ingest_writer()?, path, opts);
    let read = match format {
        Format::Jsonl => formats::read_jsonl(BufReader::new(file), path, &mut sink),
        Format::Csv => csv_input::read_csv(BufReader::new(file), path, &mut sink),
    };
    // Rows read before an error are valid and stay stored, with their restaurants refreshed;
    // the read error, the first thing that went wrong, is the one reported.
    let finished = sink.finish();
    read?;
    finished
}

#[derive(Debug, Clone, Copy)]
enum Format {
    Csv,
    Jsonl,
}

impl Format {
    fn of(path: &Path) -> Result<Self, IngestError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Ok(Self::Csv),
            Some("jsonl" | "ndjson") => Ok(Self::Jsonl),
            _ => Err(IngestError::Unusable {
                path: path.into(),
                reason: "unknown format: the name must end in .csv, .jsonl or .ndjson".into(),
            }),
        }
    }
}

/// Receives rows from a format reader: validates, stores, rejects.
pub struct Sink<'db> {
    writer: IngestWriter<'db>,
    source: String,
    pub max_review_bytes: usize,
    rejects_path: PathBuf,
    rejects: Option<BufWriter<File>>,
    report: IngestReport,
    stop: Option<tokio_util::sync::CancellationToken>,
    shard: Option<crate::domain::Shard>,
}

impl<'db> Sink<'db> {
    fn new(writer: IngestWriter<'db>, path: &Path, opts: &IngestOptions) -> Self {
        Self {
            writer,
            source: path.to_string_lossy().into_owned(),
            max_review_bytes: opts.max_review_bytes,
            rejects_path: rejects_path(&opts.rejects_dir, path),
            rejects: None,
            report: IngestReport {
                file: path.into(),
                ..Default::default()
            },
            stop: opts.stop.clone(),
            shard: opts.shard,
        }
    }

    /// A row whose fields could be read; `raw` is kept for the rejects file.
    pub fn row(
        &mut self,
        lines: impl Into<Lines>,
        row: RawRow,
        raw: &str,
    ) -> Result<(), IngestError> {
        let lines = lines.into();
        let line = lines.first;
        if self.stop.as_ref().is_some_and(|s| s.is_cancelled()) {
            return Err(IngestError::Stopped {
                path: self.report.file.clone(),
                line,
            });
        }
        let review = match validate(row, self.max_review_bytes) {
            Ok(r) => r,
            Err(reason) => return self.reject(lines, &reason, raw),
        };
        if self
            .shard
            .is_some_and(|s| !s.contains(&review.restaurant_id))
        {
            self.report.other_shards += 1;
            return Ok(());
        }
        if let Some(first) = self.writer.first_seen(&review.review_id, line)? {
            let reason = format!(
                "duplicate review_id {:?} (first on line {first})",
                review.review_id
            );
            return self.reject(lines, &reason, raw);
        }
        match self.writer.upsert(&review, &self.source, line)? {
            Upsert::Inserted => self.report.inserted += 1,
            Upsert::Updated => self.report.updated += 1,
            Upsert::Unchanged => self.report.unchanged += 1,
            Upsert::OtherRestaurant(other) => {
                let reason = format!(
                    "review_id {:?} already belongs to restaurant {other:?}, not {:?}",
                    review.review_id, review.restaurant_id
                );
                return self.reject(lines, &reason, raw);
            }
        }
        Ok(())
    }

    /// A row that could not even be read (invalid UTF-8, bad JSON, wrong field count).
    pub fn reject(
        &mut self,
        lines: impl Into<Lines>,
        reason: &str,
        raw: &str,
    ) -> Result<(), IngestError> {
        let Lines { first: line, last } = lines.into();
        if self.rejects.is_none() {
            let err = |source| IngestError::Rejects {
                path: self.rejects_path.clone(),
                source,
            };
            if let Some(dir) = self.rejects_path.parent() {
                std::fs::create_dir_all(dir).map_err(err)?;
            }
            let f = File::create(&self.rejects_path).map_err(err)?;
            self.rejects = Some(BufWriter::new(f));
        }
        let excerpt: String = raw.chars().take(300).collect();
        let rec = Reject {
            file: &self.source,
            line,
            last_line: (last > line).then_some(last),
            reason,
            raw: &excerpt,
        };
        let mut json = serde_json::to_string(&rec).unwrap_or_default();
        json.push('\n');
        if let Some(w) = self.rejects.as_mut() {
            w.write_all(json.as_bytes())
                .map_err(|source| IngestError::Rejects {
                    path: self.rejects_path.clone(),
                    source,
                })?;
        }
        self.report.rejected += 1;
        tracing::debug!(file = %self.source, line, reason, "rejected row");
        Ok(())
    }

    fn finish(mut self) -> Result<IngestReport, IngestError> {
        let r = &mut self.report;
        r.rows = r.inserted + r.updated + r.unchanged + r.rejected;
        self.writer.finish()?;
        match self.rejects.take() {
            Some(mut w) => {
                w.flush().map_err(|source| IngestError::Rejects {
                    path: self.rejects_path.clone(),
                    source,
                })?;
                self.report.rejects_file = Some(self.rejects_path.clone());
            }
            // A clean file leaves no stale rejects from an earlier ingest of the same name.
            None => {
                let _ = std::fs::remove_file(&self.rejects_path);
            }
        }
        Ok(self.report)
    }
}

/// `<rejects_dir>/<file name>.<hash>.rejects.jsonl`, the hash being 8 hex digits of the input's
/// canonical path: two inputs with the same name in different folders keep their own rejects
/// file, and the name still says which input it is about.
fn rejects_path(dir: &Path, input: &Path) -> PathBuf {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let full = std::fs::canonicalize(input)
        .or_else(|_| std::path::absolute(input))
        .unwrap_or_else(|_| input.to_path_buf());
    let hash = sha256_hex(full.as_os_str().as_encoded_bytes());
    dir.join(format!("{name}.{}.rejects.jsonl", &hash[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_of_the_same_name_get_their_own_rejects_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("reviews.csv"), "x").unwrap();
        }
        let ra = rejects_path(Path::new("rej"), &a.join("reviews.csv"));
        let rb = rejects_path(Path::new("rej"), &b.join("reviews.csv"));
        assert_ne!(ra, rb);
        let name = ra.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("reviews.csv.") && name.ends_with(".rejects.jsonl"),
            "{name}"
        );
        // The same file named another way gets the same rejects file.
        let other = a.join("../a/reviews.csv");
        assert_eq!(rejects_path(Path::new("rej"), &other), ra);
    }
}
