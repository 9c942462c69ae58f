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
    if text.contains('\0') {
        return Err("text contains a NUL character".into());
    }
    if text.chars().all(|c| c.is_control() || invisible(c)) {
        return Err("text has no visible characters".into());
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

/// Characters that show nothing but make two ids differ: zero-width characters, joiners, the
/// byte-order mark, soft hyphen and the bidirectional controls (which can also reorder how an id
/// prints). Two restaurants "r1" and "r1\u{200B}" would look like one.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// An id: controls (C0, DEL, C1) and invisible characters are refused anywhere in it, before
/// trimming, so that neither can hide at its ends (U+0085 is also whitespace to `trim`).
fn id(v: Option<String>, name: &str) -> Result<String, String> {
    let v = v.unwrap_or_default();
    if let Some(c) = v.chars().find(|&c| c.is_control()) {
        return Err(format!(
            "{name} contains the control character U+{:04X}",
            c as u32
        ));
    }
    if let Some(c) = v.chars().find(|&c| invisible(c)) {
        return Err(format!(
            "{name} contains the invisible character U+{:04X}",
            c as u32
        ));
    }
    let v = v.trim();
    if v.is_empty() {
        return Err(format!("missing {name}"));
    }
    if v.chars().count() > MAX_ID_CHARS {
        return Err(format!("{name} is longer than {MAX_ID_CHARS} characters"));
    }
    Ok(v.to_string())
}

fn rating(v: Option<&str>) -> Result<Option<f64>, String> {
    let Some(s) = present(v) else {
        return Ok(None);
    };
    match s.parse::<f64>() {
        Ok(r) if !r.is_finite() => Err(format!("rating {s:?} is not a finite number")),
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

    #[test]
    fn c1_controls_in_ids_are_rejected_even_at_the_ends() {
        for v in [
            "r\u{85}1", "r1\u{85}", "\u{9B}r1", "r\u{0}1", "r1\t", "r\u{7F}",
        ] {
            let e = validate(raw(v, "a", "ok"), 100).unwrap_err();
            assert!(
                e.contains("restaurant_id contains the control character"),
                "{v:?}: {e}"
            );
        }
    }

    #[test]
    fn invisible_characters_in_ids_are_rejected() {
        for v in [
            "r\u{200B}1",
            "\u{FEFF}r1",
            "r1\u{202E}",
            "r\u{2066}1",
            "r\u{200F}",
        ] {
            let e = validate(raw("r", v, "ok"), 100).unwrap_err();
            assert!(
                e.contains("review_id contains the invisible character U+"),
                "{v:?}: {e}"
            );
        }
    }

    #[test]
    fn ratings_that_are_not_finite_numbers_are_rejected() {
        for (s, why) in [
            ("NaN", "not a finite number"),
            ("inf", "not a finite number"),
            ("-infinity", "not a finite number"),
            ("1e400", "not a finite number"),
            ("-0.5", "outside 0 to 5"),
        ] {
            let mut r = raw("r", "a", "ok");
            r.rating = Some(s.into());
            let e = validate(r, 100).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn text_with_nothing_visible_or_a_nul_is_rejected() {
        let e = validate(raw("r", "a", "\u{200B}\u{FEFF}"), 100).unwrap_err();
        assert_eq!(e, "text has no visible characters");
        let e = validate(raw("r", "a", "good\0food"), 100).unwrap_err();
        assert_eq!(e, "text contains a NUL character");
    }
}
