//! CSV with a header row naming the columns (any order; unknown columns are ignored). Records are
//! framed by [`Records`] (a cap on their bytes, resynchronisation after a broken one); each
//! framed record is then parsed by the csv crate.

use std::io::BufRead;
use std::path::Path;

use super::lines::skip_bom;
use super::records::{fields_if_closed, Expect, Framed, Records};
use super::{max_record_bytes, validate, IngestError, RawRow, Sink};

pub fn read_csv<R: BufRead>(mut r: R, path: &Path, sink: &mut Sink<'_>) -> Result<(), IngestError> {
    skip_bom(&mut r, path)?;
    let max_review_bytes = sink.max_review_bytes;
    let mut records = Records::new(r, path, max_record_bytes(max_review_bytes));
    let Some(cols) = Columns::read(&mut records, path)? else {
        // A 0-byte export (a night without reviews) has nothing to ingest, which is no error.
        tracing::warn!(file = %path.display(), "empty CSV file: nothing to ingest");
        return Ok(());
    };
    let plausible = |line: &[u8]| cols.plausible(line, max_review_bytes);
    let expect = Expect {
        fields: cols.names.len(),
        plausible: &plausible,
    };
    while let Some(framed) = records.next(Some(&expect))? {
        match framed {
            Framed::Record {
                first,
                last,
                bytes,
                fields,
            } => csv_record(&cols, &bytes, fields, (first, last), sink)?,
            Framed::Broken { line, raw, reason } => {
                sink.reject(line, &reason, &String::from_utf8_lossy(&raw))?
            }
        }
    }
    Ok(())
}

/// Parses one framed record; `None` if the csv crate does not read it as exactly one record.
fn parse(bytes: &[u8]) -> Option<csv::ByteRecord> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(bytes.len().clamp(64, 8192))
        .from_reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let mut extra = csv::ByteRecord::new();
    match (
        rdr.read_byte_record(&mut rec),
        rdr.read_byte_record(&mut extra),
    ) {
        (Ok(true), Ok(false)) => Some(rec),
        _ => None,
    }
}

/// Hands one framed record to the sink as a row, or rejects it.
fn csv_record(
    cols: &Columns,
    bytes: &[u8],
    framed_fields: usize,
    lines: (u64, u64),
    sink: &mut Sink<'_>,
) -> Result<(), IngestError> {
    let raw = String::from_utf8_lossy(bytes);
    let rec = match parse(bytes) {
        // Framing and the csv crate agree on every record; a disagreement is a reject, not a guess.
        Some(rec) if rec.len() == framed_fields => rec,
        _ => return sink.reject(lines, "unreadable CSV record", &raw),
    };
    if rec.len() != cols.names.len() {
        let reason = format!("expected {} fields, found {}", cols.names.len(), rec.len());
        return sink.reject(lines, &reason, &raw);
    }
    match cols.row(&rec) {
        Ok(row) => sink.row(lines, row, &raw),
        Err(reason) => sink.reject(lines, &reason, &raw),
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
    /// `None` for a file without a single line.
    fn read<R: BufRead>(
        records: &mut Records<'_, R>,
        path: &Path,
    ) -> Result<Option<Self>, IngestError> {
        let header = match records.next(None)? {
            None => return Ok(None),
            Some(Framed::Broken { reason, .. }) => {
                return Err(unusable(
                    path,
                    format!("cannot read the header row: {reason}"),
                ))
            }
            Some(Framed::Record { bytes, .. }) => {
                parse(&bytes).ok_or_else(|| unusable(path, "cannot read the header row".into()))?
            }
        };
        let names: Vec<String> = header
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
        Ok(Some(Self {
            names,
            restaurant_id,
            review_id,
            text,
            rating,
            created_at,
            lang,
        }))
    }

    /// Whether `line` is on its own a complete record with every field valid: such a line
    /// starts a record, it is not text inside a quoted field left open above it.
    fn plausible(&self, line: &[u8], max_review_bytes: usize) -> bool {
        if fields_if_closed(line) != Some(self.names.len()) {
            return false;
        }
        parse(line)
            .and_then(|rec| self.row(&rec).ok())
            .is_some_and(|row| validate(row, max_review_bytes).is_ok())
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
