//! The two input formats. Each reader turns its rows into [`RawRow`]s for the [`Sink`], or
//! rejects rows it cannot read (bad UTF-8, bad JSON, wrong field count) with their line number.

use std::io::BufRead;
use std::path::Path;

use super::{read_bounded_line, IngestError, RawRow, Sink};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// JSON Lines: one object per line; blank lines are skipped.
pub fn read_jsonl<R: BufRead>(
    mut r: R,
    path: &Path,
    sink: &mut Sink<'_>,
) -> Result<(), IngestError> {
    let max_line = (sink.max_review_bytes * 4 + 4096).max(1 << 20);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        line += 1;
        let cut = match read_bounded_line(&mut r, &mut buf, max_line) {
            Ok(Some(cut)) => cut,
            Ok(None) => return Ok(()),
            Err(source) => {
                return Err(IngestError::Read {
                    path: path.into(),
                    line,
                    source,
                })
            }
        };
        let bytes = if line == 1 {
            buf.strip_prefix(BOM).unwrap_or(&buf)
        } else {
            &buf[..]
        };
        let lossy = String::from_utf8_lossy(bytes);
        if cut {
            sink.reject(
                line,
                &format!("line is longer than {max_line} bytes"),
                &lossy,
            )?;
            continue;
        }
        let text = match std::str::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                sink.reject(
                    line,
                    &format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                    &lossy,
                )?;
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match parse_json_row(text) {
            Ok(row) => sink.row(line, row, text)?,
            Err(reason) => sink.reject(line, &reason, text)?,
        }
    }
}

fn parse_json_row(text: &str) -> Result<RawRow, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let obj = v.as_object().ok_or("not a JSON object")?;
    let field = |name: &str| -> Result<Option<String>, String> {
        match obj.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!("{name} must be a string, found {}", kind(other))),
        }
    };
    Ok(RawRow {
        restaurant_id: field("restaurant_id")?,
        review_id: field("review_id")?,
        text: field("text")?,
        rating: field("rating")?,
        created_at: field("created_at")?,
        lang: field("lang")?,
    })
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
        _ => "another type",
    }
}

/// CSV with a header row naming the columns (any order; unknown columns are ignored).
pub fn read_csv<R: BufRead>(mut r: R, path: &Path, sink: &mut Sink<'_>) -> Result<(), IngestError> {
    skip_bom(&mut r, path)?;
    let mut rdr = csv::ReaderBuilder::new().flexible(true).from_reader(r);
    let cols = Columns::read(&mut rdr, path)?;
    let mut rec = csv::ByteRecord::new();
    loop {
        let line = rdr.position().line();
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(line, |p| p.line());
                if let csv::ErrorKind::Io(source) = e.into_kind() {
                    return Err(IngestError::Read {
                        path: path.into(),
                        line,
                        source,
                    });
                }
                sink.reject(line, "unreadable CSV record", "")?;
                continue;
            }
        }
        let line = rec.position().map_or(line, |p| p.line());
        csv_record(&cols, &rec, line, sink)?;
    }
}

/// Skips a UTF-8 byte-order mark so the first column name is read correctly.
fn skip_bom<R: BufRead>(r: &mut R, path: &Path) -> Result<(), IngestError> {
    let head = r.fill_buf().map_err(|source| IngestError::Read {
        path: path.into(),
        line: 1,
        source,
    })?;
    if head.starts_with(BOM) {
        r.consume(BOM.len());
    }
    Ok(())
}

/// Hands one CSV record to the sink as a row, or rejects it.
fn csv_record(
    cols: &Columns,
    rec: &csv::ByteRecord,
    line: u64,
    sink: &mut Sink<'_>,
) -> Result<(), IngestError> {
    let raw = rec
        .iter()
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(",");
    if rec.len() != cols.names.len() {
        let reason = format!("expected {} fields, found {}", cols.names.len(), rec.len());
        return sink.reject(line, &reason, &raw);
    }
    match cols.row(rec) {
        Ok(row) => sink.row(line, row, &raw),
        Err(reason) => sink.reject(line, &reason, &raw),
    }
}

/// The CSV header: every column's name, and where the known ones are.
struct Columns {
    /// Trimmed, lowercased.
    names: Vec<String>,
    restaurant_id: usize,
    review_id: usize,
    text: usize,
    rating: Option<usize>,
    created_at: Option<usize>,
    lang: Option<usize>,
}

impl Columns {
    /// Reads the header row, which must name restaurant_id, review_id and text.
    fn read<R: std::io::Read>(rdr: &mut csv::Reader<R>, path: &Path) -> Result<Self, IngestError> {
        let headers = rdr
            .byte_headers()
            .map_err(|e| unusable(path, format!("cannot read the header row: {e}")))?;
        let names: Vec<String> = headers
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_ascii_lowercase())
            .collect();
        let col = |n: &str| names.iter().position(|h| h == n);
        let (Some(restaurant_id), Some(review_id), Some(text)) =
            (col("restaurant_id"), col("review_id"), col("text"))
        else {
            return Err(unusable(
                path,
                format!(
                    "the header row must name restaurant_id, review_id and text; found {names:?}"
                ),
            ));
        };
        let (rating, created_at, lang) = (col("rating"), col("created_at"), col("lang"));
        Ok(Self {
            names,
            restaurant_id,
            review_id,
            text,
            rating,
            created_at,
            lang,
        })
    }

    /// The record's fields by column; an error names a field that is not UTF-8.
    fn row(&self, rec: &csv::ByteRecord) -> Result<RawRow, String> {
        Ok(RawRow {
            restaurant_id: self.get(rec, Some(self.restaurant_id))?,
            review_id: self.get(rec, Some(self.review_id))?,
            text: self.get(rec, Some(self.text))?,
            rating: self.get(rec, self.rating)?,
            created_at: self.get(rec, self.created_at)?,
            lang: self.get(rec, self.lang)?,
        })
    }

    /// Column `i` of the record, if the header has it.
    fn get(&self, rec: &csv::ByteRecord, i: Option<usize>) -> Result<Option<String>, String> {
        let Some(i) = i else { return Ok(None) };
        let bytes = rec.get(i).unwrap_or_default();
        std::str::from_utf8(bytes)
            .map(|s| Some(s.to_string()))
            .map_err(|e| {
                format!(
                    "invalid UTF-8 in column {} at byte {}",
                    self.names[i],
                    e.valid_up_to()
                )
            })
    }
}

fn unusable(path: &Path, reason: String) -> IngestError {
    IngestError::Unusable {
        path: path.into(),
        reason,
    }
}
