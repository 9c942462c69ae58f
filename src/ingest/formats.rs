//! JSON Lines: one object per line. Each line becomes a [`RawRow`] for the [`Sink`], or is
//! rejected with its line number (too long, bad UTF-8, bad JSON, a field of the wrong type).

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

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

/// The fields palate reads; other fields are ignored, and a field given twice is an error.
#[derive(Deserialize)]
struct JsonRow {
    restaurant_id: Option<Value>,
    review_id: Option<Value>,
    text: Option<Value>,
    rating: Option<Value>,
    created_at: Option<Value>,
    lang: Option<Value>,
}

fn parse_json_row(text: &str) -> Result<RawRow, String> {
    // Checked first: serde would also read a struct from an array, by position.
    if !text.trim_start().starts_with('{') {
        return match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => Err("not a JSON object".into()),
            Err(e) => Err(format!("invalid JSON: {e}")),
        };
    }
    let row: JsonRow = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let field = |v: Option<Value>, name: &str| field(v, name, text);
    let id = |v: Option<Value>, name: &str| -> Result<Option<String>, String> {
        let is_number = matches!(v, Some(Value::Number(_)));
        match field(v, name)? {
            Some(n) if is_number && !is_integer(&n) => Err(format!(
                "{name} must be a string or an integer, found the number {n}"
            )),
            other => Ok(other),
        }
    };
    Ok(RawRow {
        restaurant_id: id(row.restaurant_id, "restaurant_id")?,
        review_id: id(row.review_id, "review_id")?,
        text: field(row.text, "text")?,
        rating: field(row.rating, "rating")?,
        created_at: field(row.created_at, "created_at")?,
        lang: field(row.lang, "lang")?,
    })
}

/// A string, or a number as written in the line; null is absent; anything else is an error.
/// serde_json (without `arbitrary_precision`, which would change every `Number` of the crate)
/// reads an integer beyond 64 bits as a float, so such a number's digits are taken from the line:
/// two distinct long ids never become one.
fn field(v: Option<Value>, name: &str, line: &str) -> Result<Option<String>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(Value::Number(n)) => Ok(Some(
            raw_number(line, name).map_or_else(|| n.to_string(), str::to_string),
        )),
        Some(Value::Bool(_)) => Err(format!("{name} must be a string, found a boolean")),
        Some(Value::Array(_)) => Err(format!("{name} must be a string, found an array")),
        Some(Value::Object(_)) => Err(format!("{name} must be a string, found an object")),
    }
}

/// Digits only, after an optional minus: an integer of any length.
fn is_integer(n: &str) -> bool {
    let digits = n.strip_prefix('-').unwrap_or(n);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The number literal that is the value of the top-level field `name` in `json`, a JSON object
/// already parsed once (so it is valid, and has no duplicate fields).
fn raw_number<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let b = json.as_bytes();
    let (mut depth, mut i, mut key) = (0usize, 0usize, None::<String>);
    while i < b.len() {
        match b[i] {
            b'"' => {
                let end = string_end(b, i)?;
                let after = b[end..].iter().find(|c| !c.is_ascii_whitespace());
                if depth == 1 && after == Some(&b':') {
                    key = serde_json::from_str(&json[i..end]).ok();
                }
                i = end;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' if depth == 1 && key.as_deref() == Some(name) => {
                let rest = json[i + 1..].trim_start();
                let len = rest
                    .bytes()
                    .take_while(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                    .count();
                return Some(&rest[..len]);
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index just past the string that starts at `b[start]` (a quote).
fn string_end(b: &[u8], start: usize) -> Option<usize> {
    let mut j = start + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_ids_keep_every_digit() {
        let row = parse_json_row(
            r#"{"restaurant_id": 123456789012345678901234567890, "review_id": 18446744073709551617, "text": "t"}"#,
        )
        .unwrap();
        assert_eq!(
            row.restaurant_id.as_deref(),
            Some("123456789012345678901234567890")
        );
        assert_eq!(row.review_id.as_deref(), Some("18446744073709551617"));
    }

    #[test]
    fn ids_that_are_not_integers_are_refused() {
        for id in ["1.5", "1e3", "-2.0E+2"] {
            let e = parse_json_row(&format!(
                r#"{{"restaurant_id":"r","review_id":{id},"text":"t"}}"#
            ))
            .unwrap_err();
            assert!(e.contains("must be a string or an integer"), "{id}: {e}");
        }
    }

    #[test]
    fn arrays_duplicate_fields_and_wrong_types_are_refused() {
        assert_eq!(
            parse_json_row(r#"["r","a","t"]"#).unwrap_err(),
            "not a JSON object"
        );
        let e = parse_json_row(r#"{"text":"a","text":"b"}"#).unwrap_err();
        assert!(e.contains("duplicate field"), "{e}");
        let e = parse_json_row(r#"{"text":{"a":1}}"#).unwrap_err();
        assert_eq!(e, "text must be a string, found an object");
        let row = parse_json_row(r#"{"text":"a\u00e9","rating":4.5,"lang":null}"#).unwrap();
        assert_eq!(
            (row.text.as_deref(), row.rating.as_deref(), row.lang),
            (Some("aé"), Some("4.5"), None)
        );
    }
}
