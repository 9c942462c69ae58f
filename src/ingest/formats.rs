//! JSON Lines: one object per line. Each line becomes a [`RawRow`] for the [`Sink`], or is
//! rejected with its line number (too long, bad UTF-8, bad JSON, a field of the wrong type).

use std::io::BufRead;
use std::path::Path;

use super::lines::{read_bounded_line, skip_bom};
use super::{max_record_bytes, IngestError, RawRow, Sink};

/// JSON Lines: one object per line; blank lines are skipped.
pub fn read_jsonl<R: BufRead>(
    mut r: R,
    path: &Path,
    sink: &mut Sink<'_>,
) -> Result<(), IngestError> {
    skip_bom(&mut r, path)?;
    let max_line = max_record_bytes(sink.max_review_bytes);
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        line += 1;
        let cut = match read_bounded_line(&mut r, &mut buf, max_line) {
            Ok(Some(l)) => l.cut,
            Ok(None) => return Ok(()),
            Err(source) => {
                return Err(IngestError::Read {
                    path: path.into(),
                    line,
                    source,
                })
            }
        };
        let lossy = String::from_utf8_lossy(&buf);
        if cut {
            let reason = format!("line is longer than {max_line} bytes");
            sink.reject(line, &reason, &lossy)?;
            continue;
        }
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t,
            Err(e) => {
                let reason = format!("invalid UTF-8 at byte {}", e.valid_up_to());
                sink.reject(line, &reason, &lossy)?;
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
