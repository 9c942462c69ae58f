//! The `X-Request-Id` palate sends with every HTTP attempt: `{restaurant}/{kind}/{attempt}/{n}`,
//! the restaurant percent-encoded and `n` the client's own random tag and a count of its attempts
//! (so no two requests in flight share an id: two sentiment batches of one restaurant, or two
//! runs on one restaurant). vLLM takes the header as the request's id (`chatcmpl-{id}`), so its
//! log names the restaurant and analysis each request was for; the simulator reads the
//! restaurant to replay a real run's answers per restaurant.

use crate::domain::Kind;

/// The header's name.
pub const HEADER: &str = "x-request-id";

/// The id of attempt `n` (the client's tag and count) for `restaurant`'s `kind` analysis.
pub fn format(restaurant: &str, kind: Kind, attempt: u32, n: &str) -> String {
    let mut id = String::with_capacity(restaurant.len() + 24);
    for b in restaurant.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    id.push_str(&format!("/{kind}/{attempt}/{n}"));
    id
}

/// The restaurant an id of [`format`]'s names; `None` for any other id.
pub fn restaurant(id: &str) -> Option<String> {
    let mut parts = id.rsplitn(4, '/');
    let (_n, _attempt, _kind) = (parts.next()?, parts.next()?, parts.next()?);
    let encoded = parts.next()?.as_bytes();
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%' {
            let hex = std::str::from_utf8(encoded.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(encoded[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_names_its_restaurant_whatever_its_characters() {
        for r in ["mapo-galbi-house", "a/b c", "강남 스시", "100%"] {
            let id = format(r, Kind::Summary, 2, "9f3a-17");
            assert!(id.is_ascii() && !id.contains(' '), "{id}");
            assert!(id.ends_with("/summary/2/9f3a-17"), "{id}");
            assert_eq!(restaurant(&id).as_deref(), Some(r), "{id}");
        }
        assert_eq!(restaurant("chatcmpl-123"), None);
        assert_eq!(restaurant("bad%zz/summary/1/0"), None);
    }
}
