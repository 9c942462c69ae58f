//! Physical lines of an input file, each read with a cap on its length before it is allocated, and
//! the encoding check at the start of a file.

use std::io::BufRead;
use std::path::Path;

use super::IngestError;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// How a physical line ended. Lines end at `\n`, `\r\n` or a lone `\r` (old Mac files), so a
/// file's line numbers are those an editor shows whatever its line endings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// The last line of a file with no terminator.
    Eof,
    Lf,
    CrLf,
    Cr,
}

impl LineEnd {
    /// The terminator's bytes, to put a line back together with the next.
    pub fn bytes(self) -> &'static [u8] {
        match self {
            Self::Eof => b"",
            Self::Lf => b"\n",
            Self::CrLf => b"\r\n",
            Self::Cr => b"\r",
        }
    }
}

/// What [`read_bounded_line`] read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRead {
    /// The line was longer than the cap: `buf` holds its start, the rest was skipped.
    pub cut: bool,
    pub end: LineEnd,
}

/// Reads the next line into `buf` (without its terminator), at most `max` bytes; the rest of a
/// longer line is skipped without being kept. Returns `None` at end of file.
pub fn read_bounded_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<LineRead>> {
    buf.clear();
    let mut cut = false;
    let mut read_any = false;
    loop {
        let chunk = r.fill_buf()?;
        if chunk.is_empty() {
            return Ok(read_any.then_some(LineRead {
                cut,
                end: LineEnd::Eof,
            }));
        }
        read_any = true;
        let stop = chunk.iter().position(|&b| b == b'\n' || b == b'\r');
        let take = stop.unwrap_or(chunk.len());
        let room = max.saturating_sub(buf.len());
        cut |= take > room;
        buf.extend_from_slice(&chunk[..take.min(room)]);
        let Some(i) = stop else {
            r.consume(take);
            continue;
        };
        let was_cr = chunk[i] == b'\r';
        r.consume(i + 1);
        let end = if !was_cr {
            LineEnd::Lf
        } else if r.fill_buf()?.first() == Some(&b'\n') {
            r.consume(1);
            LineEnd::CrLf
        } else {
            LineEnd::Cr
        };
        return Ok(Some(LineRead { cut, end }));
    }
}

/// Checks how the file is encoded from its first bytes and skips a UTF-8 byte-order mark. UTF-16
/// and UTF-32 (told by their byte-order marks) make the whole file unusable, with a clear reason,
/// instead of one "invalid UTF-8" reject per line.
pub fn skip_bom<R: BufRead>(r: &mut R, path: &Path) -> Result<(), IngestError> {
    let head = r.fill_buf().map_err(|source| IngestError::Read {
        path: path.into(),
        line: 1,
        source,
    })?;
    if head.starts_with(UTF8_BOM) {
        r.consume(UTF8_BOM.len());
        return Ok(());
    }
    let encoding = if head.starts_with(b"\xFF\xFE\x00\x00") || head.starts_with(b"\x00\x00\xFE\xFF")
    {
        "UTF-32"
    } else if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        "UTF-16"
    } else {
        return Ok(());
    };
    Err(IngestError::Unusable {
        path: path.into(),
        reason: format!("the file is {encoding} text (byte-order mark); save it as UTF-8"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(bytes: &[u8], max: usize) -> Vec<(String, LineRead)> {
        let mut r = std::io::Cursor::new(bytes.to_vec());
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(l) = read_bounded_line(&mut r, &mut buf, max).unwrap() {
            out.push((String::from_utf8_lossy(&buf).into_owned(), l));
        }
        out
    }

    #[test]
    fn bounded_lines_cut_long_lines_and_keep_going() {
        let got = lines(b"short\r\nthis line is long\nlast", 8);
        let ends: Vec<_> = got
            .iter()
            .map(|(s, l)| (s.as_str(), l.cut, l.end))
            .collect();
        assert_eq!(
            ends,
            [
                ("short", false, LineEnd::CrLf),
                ("this lin", true, LineEnd::Lf),
                ("last", false, LineEnd::Eof)
            ]
        );
    }

    #[test]
    fn a_lone_cr_ends_a_line_and_crlf_is_one_end() {
        let got = lines(b"a\rb\r\n\rc\n\n", 100);
        let ends: Vec<_> = got.iter().map(|(s, l)| (s.as_str(), l.end)).collect();
        assert_eq!(
            ends,
            [
                ("a", LineEnd::Cr),
                ("b", LineEnd::CrLf),
                ("", LineEnd::Cr),
                ("c", LineEnd::Lf),
                ("", LineEnd::Lf)
            ]
        );
    }

    #[test]
    fn a_crlf_split_across_reads_is_one_line_end() {
        // A buffer of 2 bytes puts the \r and the \n in different fill_buf calls.
        let mut r = std::io::BufReader::with_capacity(2, &b"ab\r\ncd"[..]);
        let mut buf = Vec::new();
        let first = read_bounded_line(&mut r, &mut buf, 100).unwrap().unwrap();
        assert_eq!((buf.as_slice(), first.end), (&b"ab"[..], LineEnd::CrLf));
        read_bounded_line(&mut r, &mut buf, 100).unwrap().unwrap();
        assert_eq!(buf, b"cd");
    }

    #[test]
    fn utf16_is_unusable_and_a_utf8_bom_is_skipped() {
        let p = Path::new("x.csv");
        let e = skip_bom(&mut &b"\xFF\xFEa\x00"[..], p).unwrap_err();
        assert!(e.to_string().contains("UTF-16"), "{e}");
        let mut r = &b"\xEF\xBB\xBFid"[..];
        skip_bom(&mut r, p).unwrap();
        assert_eq!(r, b"id");
    }
}
