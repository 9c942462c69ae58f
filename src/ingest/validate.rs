//! Checks one row's fields and builds the review, or says why not.

use crate::domain::{sha256_hex, Review};

/// Longest id accepted.
const MAX_ID_CHARS: usize = 200;

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
}
