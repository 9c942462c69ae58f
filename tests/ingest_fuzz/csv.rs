//! The CSV properties. Records may span lines, so the accounting follows each record's span:
//! a stored record runs from its line until its quoted fields close (the quoting of RFC 4180 as
//! the csv crate reads it, modelled here on its own), a rejected one over the lines its reject
//! names. The spans never overlap and cover every non-blank line after the header.

use super::*;

/// Where a CSV reader stands in a record, for the model below.
#[derive(Clone, Copy, PartialEq)]
enum Q {
    Start,
    Plain,
    Quoted,
    /// A quote inside a quoted field: `""` is a quote, anything else ends the field.
    Closing,
}

fn feed(mut q: Q, line: &[u8]) -> Q {
    for &b in line {
        q = match (q, b) {
            (Q::Quoted, b'"') => Q::Closing,
            (Q::Quoted, _) => Q::Quoted,
            (Q::Closing, b'"') | (Q::Start, b'"') => Q::Quoted,
            (_, b',') => Q::Start,
            _ => Q::Plain,
        };
    }
    q
}

/// The index of the last line of the record that starts at `lines[i]`.
fn record_end(lines: &[&[u8]], mut i: usize) -> usize {
    let mut q = feed(Q::Start, lines[i]);
    while q == Q::Quoted && i + 1 < lines.len() {
        i += 1;
        q = feed(q, lines[i]);
    }
    i
}

fn blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t'))
}

/// CSV: stored and rejected records cover every non-blank line after the header, once.
fn csv_accounts(
    bytes: &[u8],
    result: Result<IngestReport, IngestError>,
    stored: &Stored,
    rejected: &Rejected,
) -> Result<(), TestCaseError> {
    let lines = physical_lines(strip_bom(bytes));
    let header_intact = lines.first() == Some(&HEADER.as_bytes());
    let r = match result {
        Err(IngestError::Unusable { .. }) if !header_intact => return Ok(()),
        other => other.map_err(|e| TestCaseError::fail(e.to_string()))?,
    };
    counts_agree(&r, stored, rejected)?;
    let Some(first) = lines.iter().position(|l| !blank(l)) else {
        // A blank file (a night's empty export) is read as nothing.
        prop_assert!(r.rows == 0 && stored.is_empty() && rejected.is_empty());
        return Ok(());
    };
    let body = record_end(&lines, first) + 1;
    let mut spans: Vec<(usize, usize)> = stored
        .iter()
        .map(|(_, s)| (*s as usize, record_end(&lines, *s as usize - 1) + 1))
        .collect();
    for (line, last, reason) in rejected {
        prop_assert!(
            !reason.contains("unreadable"),
            "framing and the csv crate disagree: {reason}"
        );
        spans.push((*line as usize, *last as usize));
    }
    let mut covered = BTreeSet::new();
    for (a, b) in spans {
        prop_assert!(
            body < a && a <= b && b <= lines.len(),
            "span {a}-{b} of {}",
            lines.len()
        );
        for l in a..=b {
            prop_assert!(covered.insert(l), "line {l} is in two records");
        }
    }
    for (i, line) in lines.iter().enumerate().skip(body) {
        prop_assert!(
            blank(line) || covered.contains(&(i + 1)),
            "line {} is lost",
            i + 1
        );
    }
    Ok(())
}

/// Noise after a valid header (or none), so both the rows and the header get shaken.
#[test]
fn csv_random_bytes_never_panic_and_every_line_is_counted() {
    let bench = Bench::new();
    run(
        "csv random bytes",
        (any::<bool>(), noise()),
        |(header, noise)| {
            let bytes = if header {
                [format!("{HEADER}\n").into_bytes(), noise].concat()
            } else {
                noise
            };
            let (result, stored, rejected) = bench.ingest("f.csv", &bytes);
            csv_accounts(&bytes, result, &stored, &rejected)
        },
    );
}

#[test]
fn csv_mutated_files_never_panic_and_a_stray_quote_swallows_no_good_row() {
    let bench = Bench::new();
    run(
        "csv mutated",
        (rows(), any::<bool>(), mutations()),
        |(rows, crlf, ms)| {
            let (file, good) = csv_file(&rows, crlf);
            let bytes = mutate(file, &ms);
            let (result, stored, rejected) = bench.ingest("f.csv", &bytes);
            let header_intact =
                physical_lines(strip_bom(&bytes)).first() == Some(&HEADER.as_bytes());
            csv_accounts(&bytes, result, &stored, &rejected)?;
            if header_intact {
                good_lines_stored(&bytes, &good, &stored)?;
            }
            Ok(())
        },
    );
}
