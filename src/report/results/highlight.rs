//! Finding evidence quotes in review texts and marking them up. A quote is a verbatim substring
//! of its review except that whitespace may differ (a newline in the review, two spaces, a
//! space the model dropped between Korean words), so quotes are matched on their non-whitespace
//! characters and the match is mapped back to the review's own bytes.

use std::ops::Range;

/// Escapes text for HTML element content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The byte range of the first occurrence of `quote` in `text`, ignoring whitespace in both;
/// `None` when it does not occur or is only whitespace.
pub(super) fn find_loose(text: &str, quote: &str) -> Option<Range<usize>> {
    let quote = quote.trim();
    if quote.is_empty() {
        return None;
    }
    if let Some(start) = text.find(quote) {
        return Some(start..start + quote.len());
    }
    let want: Vec<char> = quote.chars().filter(|c| !c.is_whitespace()).collect();
    let chars: Vec<(usize, char)> = text
        .char_indices()
        .filter(|(_, c)| !c.is_whitespace())
        .collect();
    let at = chars
        .windows(want.len())
        .position(|w| w.iter().map(|(_, c)| c).eq(want.iter()))?;
    let (start, _) = *chars.get(at)?;
    let (last, c) = *chars.get(at + want.len() - 1)?;
    Some(start..last + c.len_utf8())
}

/// `text` escaped, each quote found in it wrapped in `<mark>` (overlapping matches merged), and
/// the quotes that were not found.
pub(super) fn highlight<'q>(text: &str, quotes: &[&'q str]) -> (String, Vec<&'q str>) {
    let mut ranges = Vec::new();
    let mut missing = Vec::new();
    for q in quotes {
        match find_loose(text, q) {
            Some(r) => ranges.push(r),
            None => missing.push(*q),
        }
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let mut out = String::with_capacity(text.len() + 16 * merged.len());
    let mut pos = 0;
    for r in merged {
        out.push_str(&esc(text.get(pos..r.start).unwrap_or_default()));
        out.push_str("<mark>");
        out.push_str(&esc(text.get(r.start..r.end).unwrap_or_default()));
        out.push_str("</mark>");
        pos = r.end;
    }
    out.push_str(&esc(text.get(pos..).unwrap_or_default()));
    (out, missing)
}
