//! Checks on the text a model writes, beyond its schema: a field must say something specific
//! (not a label word, a field name, a generic title, the prompt's own list, or a loop), and be
//! in the language the prompt asked for.

use super::ValidationError;
use crate::plan::is_hangul;

/// Words that are labels or field names: a field holding only these says nothing.
const PLACEHOLDERS: &[&str] = &[
    "positive",
    "negative",
    "mixed",
    "neutral",
    "summary",
    "aspects",
    "aspect",
    "strength",
    "strengths",
    "title",
    "detail",
    "details",
    "evidence",
    "quote",
    "review",
    "reviews",
    "none",
    "n/a",
    "na",
    "text",
    "string",
    "overall",
    "sentiment",
    "ok",
    "good",
    "bad",
    "긍정",
    "부정",
    "중립",
    "요약",
    "장점",
    "강점",
    "없음",
];

/// The prompt's list of aspect names: a field naming most of them is echoing the prompt.
const ASPECTS: &[&str] = &[
    "food",
    "service",
    "price",
    "ambience",
    "wait",
    "cleanliness",
    "portion",
    "location",
];

/// Lower-case words of `text` (letters and digits; Hangul included), for comparisons.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Text that a reader learns something from: at least two letters, not only label words or
/// field names (optionally numbered: "Strength 1"), no phrase looping, not the aspect list.
pub fn specific(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.chars().filter(|c| c.is_alphabetic()).count() < 2 {
        return Err(ValidationError::NoWords {
            field: field.to_string(),
            text: text.to_string(),
        });
    }
    let w = words(text);
    let placeholder =
        |w: &String| PLACEHOLDERS.contains(&w.as_str()) || w.chars().all(|c| c.is_ascii_digit());
    if w.iter().all(placeholder) {
        return Err(ValidationError::Placeholder {
            field: field.to_string(),
            text: text.to_string(),
        });
    }
    if ASPECTS.iter().filter(|a| w.iter().any(|x| x == *a)).count() >= 5 {
        return Err(ValidationError::PromptEcho {
            field: field.to_string(),
        });
    }
    if loops(&w) {
        return Err(ValidationError::Repetition {
            field: field.to_string(),
        });
    }
    Ok(())
}

/// `text` repeats six words in a row of `source` (the model's instructions, which a small model
/// echoes as its answer).
pub fn copies(text: &str, source: &str) -> bool {
    const RUN: usize = 6;
    let source = words(source);
    if source.len() < RUN {
        return false;
    }
    let runs: std::collections::HashSet<&[String]> = source.windows(RUN).collect();
    words(text).windows(RUN).any(|w| runs.contains(w))
}

/// A phrase of three words said three times, or long text of few distinct words.
fn loops(w: &[String]) -> bool {
    let mut seen = std::collections::HashMap::new();
    for g in w.windows(3) {
        let n = seen.entry(g).or_insert(0);
        *n += 1;
        if *n >= 3 {
            return true;
        }
    }
    let distinct: std::collections::HashSet<&String> = w.iter().collect();
    w.len() >= 12 && distinct.len() * 5 < w.len() * 2
}

/// `text` is in `language` ("Korean" or "English"), judged by the script of its letters:
/// Korean needs at least half Hangul (a Latin brand name may stand in it); English needs at
/// least 80 % Latin letters (a Korean dish name may stand in it; Chinese or Korean prose not).
pub fn in_language(field: &str, text: &str, language: &str) -> Result<(), ValidationError> {
    let letters: Vec<char> = text.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() < 4 {
        return Ok(());
    }
    let share = |f: fn(&char) -> bool| {
        letters.iter().filter(|c| f(c)).count() as f64 / letters.len() as f64
    };
    let ok = match language {
        "Korean" => share(|&c| is_hangul(c)) >= 0.5,
        _ => share(|c| c.is_ascii_alphabetic() || ('\u{C0}'..='\u{24F}').contains(c)) >= 0.8,
    };
    if ok {
        Ok(())
    } else {
        Err(ValidationError::WrongLanguage {
            field: field.to_string(),
            expected: language.to_string(),
        })
    }
}

/// `text` ending on a whole sentence: a text the schema's length limit cut mid-sentence loses
/// the broken tail after its last full stop, or, with no earlier sentence end, ends with "…".
pub fn whole_sentences(text: &str) -> String {
    let t = text.trim();
    let ends = |c: char| matches!(c, '.' | '!' | '?' | '。' | '…' | ')' | '"' | '\'');
    if t.is_empty() || t.chars().last().is_some_and(ends) || t.chars().count() < 40 {
        return t.to_string();
    }
    match t.rfind(['.', '!', '?', '。']) {
        Some(i) if t[..i].chars().count() >= 20 => t[..=i].to_string(),
        _ => format!("{t}…"),
    }
}

/// The same text, ignoring case, spacing and punctuation.
pub fn same(a: &str, b: &str) -> bool {
    words(a) == words(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_words_field_names_and_numbered_titles_are_placeholders() {
        for t in [
            "mixed",
            "Strengths",
            "Strength 1",
            "Summary: positive",
            "긍정",
            "Title",
        ] {
            assert!(
                matches!(specific("f", t), Err(ValidationError::Placeholder { .. })),
                "{t}"
            );
        }
        assert!(specific("f", "Rich pork broth").is_ok());
        assert!(specific("f", "국물이 진하고 맛있다는 평이 많음").is_ok());
    }

    #[test]
    fn the_prompts_aspect_list_and_loops_are_caught() {
        let echo = "The reviews talk about food, service, price, ambience, wait, cleanliness.";
        assert!(matches!(
            specific("summary", echo),
            Err(ValidationError::PromptEcho { .. })
        ));
        let looped = "good food good food good food good food good food";
        assert!(matches!(
            specific("s", looped),
            Err(ValidationError::Repetition { .. })
        ));
        assert!(specific("s", "Good food, friendly staff, but a long wait at lunch.").is_ok());
    }

    #[test]
    fn language_is_judged_by_the_share_of_hangul() {
        assert!(in_language("s", "Great 김치찌개 and kind staff", "English").is_ok());
        assert!(in_language("s", "국물이 진해요", "English").is_err());
        assert!(in_language("s", "The broth is rich", "Korean").is_err());
        assert!(in_language("s", "국물이 진하고 BBQ 맛집", "Korean").is_ok());
        assert!(in_language("s", "a quick snack, 方便又好吃的小吃店", "English").is_err());
        assert!(in_language("s", "Crème brûlée was perfect", "English").is_ok());
        assert!(same("Rich broth.", "rich  BROTH"));
        let cut = "Reviewers love the smoky pork. They also mention staff members, wait times and places they";
        assert_eq!(whole_sentences(cut), "Reviewers love the smoky pork.");
        assert_eq!(whole_sentences("Short and fine"), "Short and fine");
        let one = "Reviewers love the smoky pork and the charcoal grill and the side dishes and";
        assert!(whole_sentences(one).ends_with("and…"));
    }
}
