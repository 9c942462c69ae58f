#!/usr/bin/env python3
"""Which answers a JSON schema admits under llguidance, one of vLLM's structured-output engines
(`--structured-outputs-config.backend guidance`), the way the server would constrain decoding.

  check_grammar.py SCHEMA.json ANSWER...    prints one line per answer: "accept" or "reject"

Grammars work on tokens; a byte-level tokenizer (one token per byte) makes the check depend on
the grammar alone, not on a model's vocabulary. Whitespace is flexible, as vLLM's default.
"""
import json
import sys

import llguidance


def byte_tokenizer():
    # GPT-2's byte <-> printable-character table, so every byte is one BPE token.
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = keep[:], 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    vocab = {chr(c): b for b, c in zip(keep, chars)}
    vocab["<eos>"] = 256
    return llguidance.LLTokenizer(json.dumps({
        "version": "1.0",
        "model": {"type": "BPE", "vocab": vocab, "merges": []},
        "added_tokens": [{"id": 256, "content": "<eos>", "special": True, "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                          "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "normalizer": None, "post_processor": None,
    }))


def main(schema_path, answers):
    tok = byte_tokenizer()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        open(schema_path, encoding="utf-8").read(), defaults={"whitespace_flexible": True})
    for a in answers:
        m = llguidance.LLMatcher(tok, grammar)
        if m.is_error():
            sys.exit(f"llguidance refused the schema: {m.get_error()}")
        tokens = tok.tokenize_bytes(a.encode("utf-8"))
        ok = m.try_consume_tokens(tokens) == len(tokens) and m.is_accepting()
        print("accept" if ok else "reject")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
