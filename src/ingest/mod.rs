//! ingest: reads CSV or JSONL review files row by row (constant memory), validates each row,
//! stores the good ones and writes every bad one to `<rejects_dir>/<file>.rejects.jsonl` with its
//! line number and reason. A row is never dropped silently; re-ingesting a file changes nothing.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

mod formats;

use crate::domain::{sha256_hex, Review};
use crate::store::{Db, IngestWriter, StoreError, Upsert};

/// Longest id accepted.
const MAX_ID_CHARS: usize = 200;

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub max_review_bytes: usize,
    pub rejects_dir: PathBuf,
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
}

/// One line of a rejects file.
#[derive(Debug, Serialize)]
struct Reject<'a> {
    file: &'a str,
    line: u64,
    reason: &'a str,
    /// The start of the raw row (at most 300 characters, invalid UTF-8 replaced).
    raw: &'a str,
}

/// The fields of a row before validation; everything optional so each problem gets its reason.
#[derive(Debug, Default)]
pub struct RawRow {
    pub restaurant_id: Option<String>,
    pub review_id: Option<String>,
    pub text: Option<String>,
    pub rating: Option<String>,
    pub created_at: Option<String>,
    pub lang: Option<String>,
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
        Format::Csv => formats::read_csv(BufReader::new(file), path, &mut sink),
    };
    // Rows read before an error are valid and stay stored, with their restaurants refreshed.
    let report = sink.finish()?;
    read.map(|()| report)
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
}

impl<'db> Sink<'db> {
    fn new(writer: IngestWriter<'db>, path: &Path, opts: &IngestOptions) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            writer,
            source: path.to_string_lossy().into_owned(),
            max_review_bytes: opts.max_review_bytes,
            rejects_path: opts.rejects_dir.join(format!("{name}.rejects.jsonl")),
            rejects: None,
            report: IngestReport {
                file: path.into(),
                ..Default::default()
            },
        }
    }

    /// A row whose fields could be read; `raw` is kept for the rejects file.
    pub fn row(&mut self, line: u64, row: RawRow, raw: &str) -> Result<(), IngestError> {
        let review = match validate(row, self.max_review_bytes) {
            Ok(r) => r,
            Err(reason) => return self.reject(line, &reason, raw),
        };
        if let Some(first) = self.writer.first_seen(&review.review_id, line)? {
            let reason = format!(
                "duplicate review_id {:?} (first on line {first})",
                review.review_id
            );
            return self.reject(line, &reason, raw);
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
                return self.reject(line, &reason, raw);
            }
        }
        Ok(())
    }

    /// A row that could not even be read (invalid UTF-8, bad JSON, wrong field count).
    pub fn reject(&mut self, line: u64, reason: &str, raw: &str) -> Result<(), IngestError> {
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

/// Checks one row and builds the review, or says why not.
pub fn validate(row: RawRow, max_review_bytes: usize) -> Result<Review, String> {
    let restaurant_id = id(row.restaurant_id, "restaurant_id")?;
    let review_id = id(row.review_id, "review_id")?;
    let text = row.text.ok_or("missing text")?.trim().to_string();
    if text.is_empty() {
        return Err("empty text".into());
    }
    if text.len() > max_review_bytes {
        return Err(format!(
            "text is {} bytes, over the limit of {max_review_bytes}",
            text.len()
        ));
    }
    Ok(Review {
        restaurant_id,
        review_id,
        content_hash: sha256_hex(text.as_bytes()),
        text,
        rating: rating(row.rating.as_deref())?,
        created_at: created_at(row.created_at.as_deref())?,
        lang: lang(row.lang.as_deref())?,
    })
}

/// An optional field's value, trimmed; blank counts as absent.
fn present(v: Option<&str>) -> Option<&str> {
    v.map(str::trim).filter(|s| !s.is_empty())
}

fn id(v: Option<String>, name: &str) -> Result<String, String> {
    let v = v.map(|s| s.trim().to_string()).unwrap_or_default();
    if v.is_empty() {
        return Err(format!("missing {name}"));
    }
    if v.chars().count() > MAX_ID_CHARS {
        return Err(format!("{name} is longer than {MAX_ID_CHARS} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(format!("{name} contains control characters"));
    }
    Ok(v)
}

fn rating(v: Option<&str>) -> Result<Option<f64>, String> {
    let Some(s) = present(v) else {
        return Ok(None);
    };
    match s.parse::<f64>() {
        Ok(r) if (0.0..=5.0).contains(&r) => Ok(Some(r)),
        Ok(r) => Err(format!("rating {r} is outside 0 to 5")),
        Err(_) => Err(format!("rating {s:?} is not a number")),
    }
}

fn created_at(v: Option<&str>) -> Result<Option<String>, String> {
    match present(v) {
        None => Ok(None),
        Some(s) if is_date(s) => Ok(Some(s.to_string())),
        Some(s) => Err(format!(
            "created_at {s:?} is not an RFC 3339 timestamp or YYYY-MM-DD date"
        )),
    }
}

fn lang(v: Option<&str>) -> Result<Option<String>, String> {
    match present(v) {
        None => Ok(None),
        Some(s)
            if s.len() <= 16
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            Ok(Some(s.to_ascii_lowercase()))
        }
        Some(s) => Err(format!("lang {s:?} is not a language code")),
    }
}

fn is_date(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
        || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok()
}

/// Reads the next line into `buf` (without the newline), at most `max` bytes; the rest of a
/// longer line is skipped. Returns `None` at end of file, else whether the line was cut.
pub fn read_bounded_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let mut cut = false;
    let mut read_any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(read_any.then_some(cut));
        }
        read_any = true;
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if take > room {
            cut = true;
        }
        buf.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(if done { take + 1 } else { take });
        if done {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(cut));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(rid: &str, id: &str, text: &str) -> RawRow {
        RawRow {
            restaurant_id: Some(rid.into()),
            review_id: Some(id.into()),
            text: Some(text.into()),
            ..Default::default()
        }
    }

    #[test]
    fn validation_names_each_problem() {
        assert_eq!(
            validate(raw("", "a", "t"), 100).unwrap_err(),
            "missing restaurant_id"
        );
        assert_eq!(
            validate(raw("r", " ", "t"), 100).unwrap_err(),
            "missing review_id"
        );
        assert_eq!(
            validate(raw("r", "a", "  \n"), 100).unwrap_err(),
            "empty text"
        );
        assert!(validate(raw("r", "a", &"x".repeat(101)), 100)
            .unwrap_err()
            .contains("over the limit of 100"));
        let mut r = raw("r", "a", "맛있어요");
        r.rating = Some("9".into());
        assert!(validate(r, 100).unwrap_err().contains("outside 0 to 5"));
        let mut r = raw("r", "a", "ok");
        r.created_at = Some("yesterday".into());
        assert!(validate(r, 100).unwrap_err().contains("created_at"));
    }

    #[test]
    fn valid_row_is_trimmed_and_hashed() {
        let mut r = raw(" r1 ", "a", "  좋아요 good  ");
        r.rating = Some("4.5".into());
        r.lang = Some("KO".into());
        r.created_at = Some("2026-01-02T03:04:05Z".into());
        let v = validate(r, 100).unwrap();
        assert_eq!(v.restaurant_id, "r1");
        assert_eq!(v.text, "좋아요 good");
        assert_eq!(v.rating, Some(4.5));
        assert_eq!(v.lang.as_deref(), Some("ko"));
        assert_eq!(v.content_hash.len(), 64);
    }

    #[test]
    fn bounded_lines_cut_long_lines_and_keep_going() {
        let mut r = std::io::Cursor::new(b"short\r\nthis line is long\nlast".to_vec());
        let mut buf = Vec::new();
        assert_eq!(read_bounded_line(&mut r, &mut buf, 8).unwrap(), Some(false));
        assert_eq!(buf, b"short");
        assert_eq!(read_bounded_line(&mut r, &mut buf, 8).unwrap(), Some(true));
        assert_eq!(buf, b"this lin");
        assert_eq!(read_bounded_line(&mut r, &mut buf, 8).unwrap(), Some(false));
        assert_eq!(buf, b"last");
        assert_eq!(read_bounded_line(&mut r, &mut buf, 8).unwrap(), None);
    }
}
