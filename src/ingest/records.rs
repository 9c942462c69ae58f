//! CSV records framed from physical lines, with a cap on a record's bytes and resynchronisation
//! after a broken one.
//!
//! A quoted field may span lines, so a record is one line, or more while a quote is open. The
//! quote state is tracked here, byte for byte as the csv crate reads it, rather than left to the
//! csv crate: one stray `"` would otherwise make the rest of the file one field, growing without
//! bound, stored as one review with no reject. A record whose quote stays open is broken when it
//! reaches the end of the file, grows past the cap, gets more fields than the header, closes with
//! the wrong number of fields, or runs into a line that is a valid record on its own (a line a
//! quoted review text almost never is). Then only its first line is rejected, naming the reason,
//! and the lines after it are read again as records of their own: every line is accounted for and
//! no good row is swallowed. Each line is re-read a bounded number of times (a record that goes
//! on without adding fields only holds lines that are single records on their own).

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;

use super::lines::{read_bounded_line, LineEnd};
use super::IngestError;

/// One physical line of the file.
struct Line {
    no: u64,
    bytes: Vec<u8>,
    end: LineEnd,
    /// Longer than the cap: `bytes` is its start.
    cut: bool,
}

/// What a record is checked against once the header is known.
pub struct Expect<'a> {
    /// The header's number of fields.
    pub fields: usize,
    /// Whether a line is, on its own, a complete and valid record.
    pub plausible: &'a dyn Fn(&[u8]) -> bool,
}

/// The next record, or the first line of one that cannot be completed.
pub enum Framed {
    Record {
        first: u64,
        last: u64,
        /// The record's bytes as in the file, line ends inside quoted fields included.
        bytes: Vec<u8>,
        /// Its number of fields, as framing counted them.
        fields: usize,
    },
    Broken {
        line: u64,
        raw: Vec<u8>,
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: a second one is an escaped quote, anything else ends it.
    QuoteInQuoted,
}

/// A record's quoting and field count as csv-core reads it: a quote opens a field only at its
/// start, a quote inside an unquoted field is a plain character, and text after a closing quote
/// joins the field.
#[derive(Debug, Clone, Copy)]
struct Scan {
    state: State,
    fields: usize,
}

impl Default for Scan {
    fn default() -> Self {
        Self {
            state: State::FieldStart,
            fields: 1,
        }
    }
}

impl Scan {
    fn feed(&mut self, bytes: &[u8]) {
        use State::*;
        for &b in bytes {
            self.state = match (self.state, b) {
                (Quoted, b'"') => QuoteInQuoted,
                (Quoted, _) => Quoted,
                (QuoteInQuoted, b'"') => Quoted,
                (FieldStart, b'"') => Quoted,
                (_, b',') => {
                    self.fields += 1;
                    FieldStart
                }
                _ => Unquoted,
            };
        }
    }

    fn open(&self) -> bool {
        self.state == State::Quoted
    }
}

/// Scans one line on its own: its field count, or `None` if a quote is left open.
pub fn fields_if_closed(line: &[u8]) -> Option<usize> {
    let mut s = Scan::default();
    s.feed(line);
    (!s.open()).then_some(s.fields)
}

/// Records of a CSV file, read line by line.
pub struct Records<'p, R> {
    r: R,
    path: &'p Path,
    /// The most bytes a record (and so a line) may have.
    cap: usize,
    /// Lines read from `r` so far.
    read: u64,
    /// Lines of a broken record, to be read again.
    pending: VecDeque<Line>,
}

impl<'p, R: BufRead> Records<'p, R> {
    pub fn new(r: R, path: &'p Path, cap: usize) -> Self {
        Self {
            r,
            path,
            cap,
            read: 0,
            pending: VecDeque::new(),
        }
    }

    fn pull(&mut self) -> Result<Option<Line>, IngestError> {
        if let Some(l) = self.pending.pop_front() {
            return Ok(Some(l));
        }
        let no = self.read + 1;
        let mut bytes = Vec::new();
        match read_bounded_line(&mut self.r, &mut bytes, self.cap) {
            Ok(None) => Ok(None),
            Ok(Some(l)) => {
                self.read = no;
                Ok(Some(Line {
                    no,
                    bytes,
                    end: l.end,
                    cut: l.cut,
                }))
            }
            Err(source) => Err(IngestError::Read {
                path: self.path.into(),
                line: no,
                source,
            }),
        }
    }

    /// The next record; blank lines between records are skipped. `expect` is `None` for the
    /// header, which is framed with the cap alone.
    pub fn next(&mut self, expect: Option<&Expect<'_>>) -> Result<Option<Framed>, IngestError> {
        let first = loop {
            match self.pull()? {
                None => return Ok(None),
                Some(l) if !l.cut && l.bytes.iter().all(|b| matches!(b, b' ' | b'\t')) => {}
                Some(l) => break l,
            }
        };
        if first.cut {
            return Ok(Some(Framed::Broken {
                line: first.no,
                reason: format!("line is longer than {} bytes", self.cap),
                raw: first.bytes,
            }));
        }
        let mut scan = Scan::default();
        scan.feed(&first.bytes);
        if !scan.open() {
            return Ok(Some(Framed::Record {
                first: first.no,
                last: first.no,
                bytes: first.bytes,
                fields: scan.fields,
            }));
        }
        self.extend(first, scan, expect).map(Some)
    }

    /// Adds lines to a record whose quoted field is open until it closes with the header's
    /// number of fields; else the record is broken off at its first line.
    fn extend(
        &mut self,
        first: Line,
        mut scan: Scan,
        expect: Option<&Expect<'_>>,
    ) -> Result<Framed, IngestError> {
        let start = first.no;
        let mut size = first.bytes.len();
        let mut lines = vec![first];
        let reason = loop {
            let last = lines.last().map_or(start, |l| l.no);
            if let Some(e) = expect.filter(|e| scan.fields > e.fields) {
                break format!(
                    "by line {last} it has more than {} fields: a quoted field is not closed where it should be",
                    e.fields
                );
            }
            if !scan.open() {
                match expect {
                    Some(e) if scan.fields != e.fields => {
                        break format!(
                            "expected {} fields, found {} in lines {start} to {last}",
                            e.fields, scan.fields
                        )
                    }
                    _ => return Ok(join(lines, scan.fields)),
                }
            }
            let Some(next) = self.pull()? else {
                break "a quoted field is not closed before the end of the file".to_string();
            };
            let no = next.no;
            size += next.bytes.len() + 2;
            let stop = if next.cut || size > self.cap {
                Some(format!(
                    "by line {no} it is longer than {} bytes: a quoted field is not closed",
                    self.cap
                ))
            } else if expect.is_some_and(|e| (e.plausible)(&next.bytes)) {
                Some(format!(
                    "a quoted field is not closed before line {no}, which is a record of its own"
                ))
            } else {
                scan.feed(&next.bytes);
                None
            };
            lines.push(next);
            if let Some(stop) = stop {
                break stop;
            }
        };
        Ok(self.break_off(
            lines,
            format!("the record starting on line {start}: {reason}"),
        ))
    }

    /// Rejects the first of `lines` and keeps the others to be read again.
    fn break_off(&mut self, mut lines: Vec<Line>, reason: String) -> Framed {
        let rest = lines.split_off(1);
        for l in rest.into_iter().rev() {
            self.pending.push_front(l);
        }
        let (line, raw) = lines.pop().map(|l| (l.no, l.bytes)).unwrap_or_default();
        Framed::Broken { line, raw, reason }
    }
}

/// One record from its lines, with the line ends between them as they were in the file.
fn join(lines: Vec<Line>, fields: usize) -> Framed {
    let first = lines.first().map_or(0, |l| l.no);
    let last = lines.last().map_or(0, |l| l.no);
    let mut bytes = Vec::with_capacity(lines.iter().map(|l| l.bytes.len() + 2).sum());
    let n = lines.len();
    for (i, l) in lines.into_iter().enumerate() {
        bytes.extend_from_slice(&l.bytes);
        if i + 1 < n {
            bytes.extend_from_slice(l.end.bytes());
        }
    }
    Framed::Record {
        first,
        last,
        bytes,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames `text` as records of 3 fields, where a line starting "ok," is a record of its own.
    fn frame(text: &str, cap: usize) -> Vec<String> {
        let plausible = |l: &[u8]| l.starts_with(b"ok,") && fields_if_closed(l) == Some(3);
        let expect = Expect {
            fields: 3,
            plausible: &plausible,
        };
        let mut r = Records::new(text.as_bytes(), Path::new("t.csv"), cap);
        let mut out = Vec::new();
        while let Some(f) = r.next(Some(&expect)).unwrap() {
            out.push(match f {
                Framed::Record {
                    first,
                    last,
                    bytes,
                    fields,
                } => format!(
                    "{first}-{last} {fields}: {}",
                    String::from_utf8_lossy(&bytes)
                ),
                Framed::Broken { line, reason, .. } => format!("{line} broken: {reason}"),
            });
        }
        out
    }

    #[test]
    fn a_quoted_field_spans_lines_with_its_line_ends_kept() {
        let got = frame("a,\"multi\r\nline, \"\"quoted\"\"\",c\r\n\r\nok,b,c", 1000);
        assert_eq!(
            got,
            [
                "1-2 3: a,\"multi\r\nline, \"\"quoted\"\"\",c",
                "4-4 3: ok,b,c"
            ]
        );
    }

    #[test]
    fn a_stray_quote_stops_at_the_next_record_and_the_rest_is_read_again() {
        let got = frame("a,\"stray,c\nmore text\nok,b,c\nok,\"d\",e\n", 1000);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].starts_with("1 broken: the record starting on line 1: a quoted field is not closed before line 3, which is a record of its own"), "{}", got[0]);
        assert_eq!(
            got[1..],
            ["2-2 1: more text", "3-3 3: ok,b,c", "4-4 3: ok,\"d\",e"]
        );
    }

    #[test]
    fn an_open_quote_at_the_end_of_the_file_breaks_its_first_line_only() {
        let got = frame("a,b,\"open\nx,y,z\n", 1000);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert!(
            got[0].contains("not closed before the end of the file"),
            "{}",
            got[0]
        );
        assert_eq!(got[1], "2-2 3: x,y,z");
    }

    #[test]
    fn a_record_over_the_cap_or_the_field_count_is_broken() {
        let long = format!("a,\"{}\n{}\nx,y,z\n", "p".repeat(30), "q".repeat(30));
        let got = frame(&long, 50);
        assert!(
            got[0].contains("by line 2 it is longer than 50 bytes"),
            "{got:#?}"
        );
        assert_eq!(
            got[1..],
            [format!("2-2 1: {}", "q".repeat(30)), "3-3 3: x,y,z".into()]
        );
        let got = frame("a,\"b\nc\",d,e\nx,y,z\n", 1000);
        assert!(
            got[0].contains("by line 2 it has more than 3 fields"),
            "{got:#?}"
        );
        let got = frame("a,\"b\nc\"\nx,y,z\n", 1000);
        assert!(
            got[0].contains("expected 3 fields, found 2 in lines 1 to 2"),
            "{got:#?}"
        );
        assert_eq!(got[1..], ["2-2 1: c\"", "3-3 3: x,y,z"]);
    }

    #[test]
    fn framing_counts_fields_as_the_csv_crate_reads_them() {
        for rec in [
            "\"ab\"c,d",
            "a\"b,\"c\"",
            "\"\",\"\"\"\"",
            "\"a\"\"b\",\"\"x",
            ",,",
            "\"a,b\" ,c",
            "x,\"y\"\"\"",
        ] {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(rec.as_bytes());
            let mut got = csv::ByteRecord::new();
            assert!(r.read_byte_record(&mut got).unwrap(), "{rec}");
            assert_eq!(fields_if_closed(rec.as_bytes()), Some(got.len()), "{rec}");
        }
        assert_eq!(fields_if_closed(b"a,\"b"), None);
        assert_eq!(fields_if_closed(b"a,\"b\"\""), None);
    }
}
