//! Server-sent events as OpenAI-compatible servers stream completions: the `data` of each event,
//! decoded incrementally from a response body's chunks (WHATWG `text/event-stream`, reduced to
//! what a completion stream uses: `data` lines, comments and other fields ignored).
//!
//! One decoder serves the client, `palate doctor` and the calibration probe. It copies each byte
//! once into its buffer and hands out each event's data as a borrowed slice: a completion streams
//! one event per token, so per-event allocations and a task hop per event (as async-openai's
//! stream does) were most of palate's own CPU per request.

/// Decodes events from bytes pushed as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Bytes received and not yet decoded (from `start` on).
    buf: Vec<u8>,
    start: usize,
    /// The data of the event being read; its lines joined by `\n`.
    data: Vec<u8>,
    has_data: bool,
    /// `data` was handed out by the last [`Decoder::next_event`]: clear it before going on.
    handed_out: bool,
}

impl Decoder {
    /// Appends bytes as they arrived.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Ends the stream: a last event not followed by a blank line is dispatched too.
    pub fn finish(&mut self) {
        self.push(b"\n\n");
    }

    /// The data of the next complete event, or `None` until more bytes arrive. An event without
    /// `data` lines is skipped.
    pub fn next_event(&mut self) -> Option<&[u8]> {
        if std::mem::take(&mut self.handed_out) {
            self.data.clear();
            self.has_data = false;
        }
        while let Some(len) = self.buf[self.start..].iter().position(|&b| b == b'\n') {
            let line_start = self.start;
            self.start += len + 1;
            let mut line = &self.buf[line_start..line_start + len];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if line.is_empty() {
                if self.has_data {
                    self.handed_out = true;
                    return Some(&self.data);
                }
                continue;
            }
            let Some(value) = line.strip_prefix(b"data") else {
                continue; // a comment (`:`), another field, or a malformed line
            };
            let value = match value {
                [] => value,
                [b':', b' ', v @ ..] | [b':', v @ ..] => v,
                _ => continue, // a field whose name only starts with "data"
            };
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        None
    }
}

/// Every event's data in a whole body, as text (invalid UTF-8 replaced).
pub fn events(body: &[u8]) -> Vec<String> {
    let mut d = Decoder::default();
    d.push(body);
    d.finish();
    let mut out = Vec::new();
    while let Some(e) = d.next_event() {
        out.push(String::from_utf8_lossy(e).into_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_decode_the_same() {
        let body = b": keep-alive\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata:{\"b\":\n\
data: 2}\nid: 7\n\ndata\n\ndatum: no\n\ndata: [DONE]\n\n";
        let want = vec!["{\"a\":1}", "{\"b\":\n2}", "", "[DONE]"];
        assert_eq!(events(body), want);
        for cut in 0..body.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for part in [&body[..cut], &body[cut..]] {
                d.push(part);
                while let Some(e) = d.next_event() {
                    got.push(String::from_utf8_lossy(e).into_owned());
                }
            }
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_kept_at_the_end() {
        assert_eq!(events(b"data: 1\n\ndata: 2"), vec!["1", "2"]);
        assert_eq!(events(b""), Vec::<String>::new());
    }

    #[test]
    fn decoded_bytes_are_released() {
        let mut d = Decoder::default();
        for _ in 0..1000 {
            d.push(b"data: {\"x\": 1}\n\n");
            assert!(d.next_event().is_some());
        }
        d.push(b"data: part");
        assert_eq!(d.next_event(), None);
        let held = d.buf.len() - d.start + d.data.len();
        assert!(held < 64, "{held}");
    }
}
