//! What the simulated model answers: an instance of the request's JSON schema (as constrained
//! decoding would produce), so palate's validation passes unless a fault corrupts it. Array item i
//! takes the i-th `enum` value or `anyOf` alternative, which makes "one entry per reference"
//! schemas come out complete.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::profile::TokenRates;

const WORDS: [&str; 12] = [
    "fresh", "broth", "kind", "staff", "fair", "prices", "quick", "service", "warm", "room",
    "generous", "portions",
];

pub fn instance(schema: &Value, seed: u64) -> Value {
    let mut g = Gen {
        root: schema,
        rng: fastrand::Rng::with_seed(seed),
    };
    g.value(schema, 0, 0)
}

struct Gen<'a> {
    root: &'a Value,
    rng: fastrand::Rng,
}

fn num(s: &Value, key: &str) -> Option<f64> {
    s.get(key).and_then(Value::as_f64)
}

fn count(s: &Value, key: &str) -> Option<usize> {
    s.get(key).and_then(Value::as_u64).map(|n| n as usize)
}

impl Gen<'_> {
    fn value(&mut self, s: &Value, index: usize, depth: usize) -> Value {
        if depth > 16 {
            return Value::Null;
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let name = r.trim_start_matches("#/$defs/");
            let def = self.root["$defs"][name].clone();
            return self.value(&def, index, depth + 1);
        }
        if let Some(c) = s.get("const") {
            return c.clone();
        }
        if let Some(e) = s
            .get("enum")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        {
            return e[index % e.len()].clone();
        }
        if let Some(alts) = s
            .get("anyOf")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            let alt = alts[index % alts.len()].clone();
            return self.value(&alt, index, depth + 1);
        }
        match s.get("type").and_then(Value::as_str) {
            Some("object") => self.object(s, index, depth),
            Some("array") => {
                let min = count(s, "minItems").unwrap_or(0);
                let max = count(s, "maxItems").unwrap_or(min + 2);
                let n = (min + 1).min(max).max(min);
                let items = s.get("items").cloned().unwrap_or(Value::Null);
                Value::Array((0..n).map(|i| self.value(&items, i, depth + 1)).collect())
            }
            Some("string") => {
                let min = count(s, "minLength").unwrap_or(1);
                let max = count(s, "maxLength").unwrap_or(64);
                Value::String(self.words(min, max))
            }
            Some("number") | Some("integer") => {
                let lo = num(s, "minimum").unwrap_or(0.0);
                let hi = num(s, "maximum").unwrap_or(lo + 10.0);
                let v = lo + (hi - lo) * self.rng.f64();
                if s["type"] == "integer" {
                    Value::from(v.round() as i64)
                } else {
                    Value::from((v * 100.0).round() / 100.0)
                }
            }
            Some("boolean") => Value::Bool(self.rng.bool()),
            _ => Value::Null,
        }
    }

    fn object(&mut self, s: &Value, index: usize, depth: usize) -> Value {
        let Some(props) = s.get("properties").and_then(Value::as_object) else {
            return Value::Object(Map::new());
        };
        let keys: Vec<&String> = match s.get("required").and_then(Value::as_array) {
            Some(req) => props
                .keys()
                .filter(|k| req.iter().any(|r| r == *k))
                .collect(),
            None => {
                let min = count(s, "minProperties").unwrap_or(1);
                let max = count(s, "maxProperties").unwrap_or(props.len());
                props.keys().take(2.clamp(min, max.max(min))).collect()
            }
        };
        let mut out = Map::new();
        for k in keys {
            let v = self.value(&props[k], index, depth + 1);
            out.insert(k.clone(), v);
        }
        Value::Object(out)
    }

    /// Words up to about two thirds of `max` characters, and at most a short phrase (about
    /// nine words from twelve: longer would repeat itself, which validation refuses), at least
    /// `min`.
    fn words(&mut self, min: usize, max: usize) -> String {
        let target = (max * 2 / 3).min(60).max(min).min(max);
        let mut s = String::new();
        loop {
            let w = WORDS[self.rng.usize(..WORDS.len())];
            if !s.is_empty() && s.len() + 1 + w.len() > target {
                break;
            }
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(w);
            if s.len() >= target {
                break;
            }
        }
        s.truncate(max);
        s
    }
}

/// Splits text into pieces of at most 4 bytes on character boundaries: the simulated tokens of
/// an answer with no length model.
pub fn pieces(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if !cur.is_empty() && cur.len() + c.len_utf8() > 4 {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `text` as exactly `n` tokens (at least 1): its characters spread evenly over them, and
/// spaces after the text where it has fewer characters than `n`.
pub fn pieces_of_length(text: &str, n: usize) -> Vec<String> {
    let n = n.max(1);
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= n {
        let mut out: Vec<String> = chars.iter().map(char::to_string).collect();
        out.resize(n, " ".to_string());
        return out;
    }
    (0..n)
        .map(|i| {
            chars[i * chars.len() / n..(i + 1) * chars.len() / n]
                .iter()
                .collect()
        })
        .collect()
}

/// The chat messages as one prompt, each under its role's tag, then the tag the answer starts
/// under (a chat template's generation prompt): the text the simulator counts tokens of, and
/// the calibration fits the token rates to the server's counts of.
pub fn prompt_text(messages: &Value) -> String {
    let mut prompt = String::new();
    for m in messages.as_array().into_iter().flatten() {
        let _ = write!(
            prompt,
            "<|{}|>\n{}\n",
            m["role"].as_str().unwrap_or(""),
            m["content"].as_str().unwrap_or("")
        );
    }
    prompt.push_str("<|assistant|>\n");
    prompt
}

/// The characters of `text` by how a tokenizer spends tokens on them: ASCII letters and
/// whitespace (words, several characters to a token), other ASCII (digits and punctuation,
/// about one token each: Qwen2.5 splits numbers into digits), and the rest (Hangul).
pub fn char_classes(text: &str) -> [usize; 3] {
    let mut n = [0; 3];
    for c in text.chars() {
        n[class(c)] += 1;
    }
    n
}

fn class(c: char) -> usize {
    match c {
        c if c.is_ascii_alphabetic() || c.is_ascii_whitespace() => 0,
        c if c.is_ascii() => 1,
        _ => 2,
    }
}

/// Prompt token ids at the served model's average rates: a token ends once its characters add
/// up to one token. An id hashes the token's characters, so equal text gives equal tokens.
pub fn prompt_tokens(text: &str, rates: &TokenRates) -> Vec<u32> {
    const SEED: u32 = 0x811c_9dc5;
    let per = rates.per_class();
    let mut out = Vec::with_capacity(text.len() / 3);
    let (mut acc, mut id) = (0.0f64, SEED);
    for c in text.chars() {
        id = (id ^ c as u32).wrapping_mul(0x0100_0193);
        acc += per[class(c)];
        while acc >= 1.0 {
            out.push(id);
            id = id.wrapping_mul(0x0100_0193) ^ SEED;
            acc -= 1.0;
        }
    }
    if acc > 0.0 {
        out.push(id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn array_items_take_successive_enum_values() {
        let s = json!({"type": "object", "required": ["reviews"], "properties": {"reviews": {
            "type": "array", "minItems": 3, "maxItems": 3,
            "items": {"type": "object", "required": ["ref", "score"], "properties": {
                "ref": {"enum": ["R1", "R2", "R3"]},
                "score": {"type": "number", "minimum": -1, "maximum": 1}}}}}});
        let v = instance(&s, 7);
        let refs: Vec<&str> = v["reviews"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ref"].as_str().unwrap())
            .collect();
        assert_eq!(refs, ["R1", "R2", "R3"]);
        assert!(v["reviews"][0]["score"].as_f64().unwrap().abs() <= 1.0);
    }

    #[test]
    fn pieces_keep_characters_whole() {
        assert_eq!(pieces("abcdefg"), ["abcd", "efg"]);
        assert_eq!(pieces("맛있어"), ["맛", "있", "어"]);
        assert_eq!(pieces("맛있어").concat(), "맛있어");
    }

    #[test]
    fn an_answer_takes_exactly_the_drawn_number_of_tokens() {
        let a = pieces_of_length("{\"a\":1}", 3);
        assert_eq!(a.len(), 3);
        assert_eq!(a.concat(), "{\"a\":1}");
        let b = pieces_of_length("{}", 5);
        assert_eq!(b.len(), 5);
        assert_eq!(b.concat().trim_end(), "{}");
    }

    #[test]
    fn prompt_tokens_follow_the_rates() {
        let palate = TokenRates::default();
        assert_eq!(prompt_tokens("abcdefgh", &palate).len(), 2);
        assert_eq!(prompt_tokens("맛있어요", &palate).len(), 6);
        assert_eq!(
            prompt_tokens("맛있어요", &palate),
            prompt_tokens("맛있어요", &palate)
        );
        let qwen = TokenRates {
            ascii_chars_per_token: 4.0,
            tokens_per_other_char: 0.8,
            tokens_per_symbol: None,
        };
        assert_eq!(prompt_tokens("맛있어요 맛있어요", &qwen).len(), 7);
        // Without a rate of their own, digits and punctuation count as letters do; with one,
        // each of "17,000" costs a token.
        assert_eq!(prompt_tokens("17,000", &qwen).len(), 2);
        let digits = TokenRates {
            tokens_per_symbol: Some(1.0),
            ..qwen
        };
        assert_eq!(prompt_tokens("17,000", &digits).len(), 6);
        assert_eq!(prompt_tokens("good 17,000", &digits).len(), 8);
        assert_eq!(char_classes("good 17,000 맛"), [6, 6, 1]);
    }
}
