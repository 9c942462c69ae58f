//! Token counts: the served model's own tokenizer (`tokenizer.json`) where the job names it, else
//! an estimate. They decide sentiment batches and the order requests are sent in.

use std::path::{Path, PathBuf};

use super::PlanError;

/// Counts prompt tokens.
pub enum TokenCounter {
    /// The model's tokenizer, loaded with the `tokenizers` crate.
    Tokenizer(Box<tokenizers::Tokenizer>),
    /// [`estimate_tokens`].
    Estimate,
}

impl TokenCounter {
    pub fn load(path: Option<&Path>) -> Result<Self, PlanError> {
        match path {
            None => Ok(Self::Estimate),
            Some(p) => tokenizers::Tokenizer::from_file(p)
                .map(|t| Self::Tokenizer(Box::new(t)))
                .map_err(|e| PlanError::Tokenizer {
                    path: PathBuf::from(p),
                    message: e.to_string(),
                }),
        }
    }

    pub fn count(&self, text: &str) -> u64 {
        match self {
            Self::Tokenizer(t) => match t.encode(text, false) {
                Ok(enc) => enc.len() as u64,
                Err(_) => estimate_tokens(text),
            },
            Self::Estimate => estimate_tokens(text),
        }
    }
}

/// Token estimate used where the model's tokenizer is not at hand: ASCII text at ~4 bytes a token,
/// other characters (Hangul) at ~1.5 tokens each, as small BPE vocabularies split them.
pub fn estimate_tokens(text: &str) -> u64 {
    let (ascii, other) = text.chars().fold((0u64, 0u64), |(a, o), c| {
        if c.is_ascii() {
            (a + 1, o)
        } else {
            (a, o + 1)
        }
    });
    ascii.div_ceil(4) + (other * 3).div_ceil(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_estimate_counts_hangul_heavier() {
        assert_eq!(estimate_tokens("abcdefgh"), 2);
        assert_eq!(estimate_tokens("맛있어요"), 6);
    }

    #[test]
    fn a_missing_tokenizer_file_is_an_error_naming_it() {
        let e = TokenCounter::load(Some(Path::new("no/such/tokenizer.json")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no/such/tokenizer.json"), "{e}");
    }
}
