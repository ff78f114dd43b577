//! Parsing a checksum file: GNU coreutils lines (`HASH  NAME`, `HASH *NAME`,
//! and the `\`-escaped form for names with a newline, CR or backslash), BSD
//! tag lines (`SHA256 (NAME) = HASH`), blank lines and `#` comments. The
//! algorithm comes from the tag or the hash length (64 hex digits SHA-256,
//! 128 SHA-512); any other line makes the whole file invalid.
//!
//! A clear-signed file (`-----BEGIN PGP SIGNED MESSAGE-----` on its first
//! line) is parsed from its signed text only: armor headers skipped,
//! dash-escaping undone, trailing whitespace dropped (it is not signed),
//! up to `-----BEGIN PGP SIGNATURE-----`; nothing but blank lines may follow
//! the signature. That text goes to a sink, byte for byte as parsed, so the
//! signature is checked over exactly what was read here.
//!
//! Bounded on hostile input: lines up to [`MAX_LINE`] bytes, at most
//! [`MAX_ENTRIES`] entries, a signature block up to [`MAX_SIGNATURE`] bytes.

use std::io::{BufRead, Read, Write};

/// The longest line accepted, in bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// The most entries one checksum file may list.
pub const MAX_ENTRIES: usize = 10_000_000;
/// The largest signature block of a clear-signed file, in bytes.
pub const MAX_SIGNATURE: usize = 1024 * 1024;

const BEGIN_MESSAGE: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const BEGIN_SIGNATURE: &[u8] = b"-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &[u8] = b"-----END PGP SIGNATURE-----";

/// A hash algorithm a checksum file can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algo {
    Sha256,
    Sha512,
}

impl Algo {
    pub const ALL: [Algo; 2] = [Algo::Sha256, Algo::Sha512];

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Sha256 => "SHA-256",
            Algo::Sha512 => "SHA-512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }

    fn tag(self) -> &'static [u8] {
        match self {
            Algo::Sha256 => b"SHA256",
            Algo::Sha512 => b"SHA512",
        }
    }
}

/// One line of a checksum file: `name` (as listed, relative to the file's
/// directory) should hash to `digest` under `algo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub line: usize,
    pub algo: Algo,
    pub digest: Vec<u8>,
    pub name: Vec<u8>,
}

/// A parsed checksum file.
#[derive(Debug, Default)]
pub struct Sums {
    pub entries: Vec<Entry>,
    /// The armored signature block, when the file is clear-signed.
    pub signature: Option<Vec<u8>>,
}

enum State {
    Start,
    Plain,
    Headers,
    Text { first: bool },
    Signature,
    After,
}

/// Parses a checksum file. When it is clear-signed, its signed text (the
/// lines parsed, joined by `\n`, without a final one) is written to `text`.
/// The error says which line is wrong and why.
pub fn parse(mut r: impl BufRead, mut text: Option<&mut dyn Write>) -> Result<Sums, String> {
    let mut sums = Sums::default();
    let mut sig = Vec::new();
    let mut state = State::Start;
    let mut buf = Vec::new();
    let mut n = 0;
    while read_line(&mut r, &mut buf, n + 1)? {
        n += 1;
        let line = trim_eol(&buf);
        state = match state {
            State::Start if line == BEGIN_MESSAGE => State::Headers,
            State::Start | State::Plain => {
                plain_line(line, n, &mut sums.entries)?;
                State::Plain
            }
            State::Headers if line.is_empty() => State::Text { first: true },
            State::Headers if line.starts_with(b"Hash: ") => State::Headers,
            State::Headers => return Err(format!("line {n} is not an armor header")),
            State::Text { .. } if line == BEGIN_SIGNATURE => {
                sig.extend_from_slice(line);
                sig.push(b'\n');
                State::Signature
            }
            State::Text { first } => {
                let line = signed_line(line, n)?;
                if let Some(t) = text.as_mut() {
                    let sep: &[u8] = if first { b"" } else { b"\n" };
                    t.write_all(sep)
                        .and_then(|()| t.write_all(line))
                        .map_err(|e| format!("cannot keep its signed text: {e}"))?;
                }
                plain_line(line, n, &mut sums.entries)?;
                State::Text { first: false }
            }
            State::Signature => {
                sig.extend_from_slice(line);
                sig.push(b'\n');
                if sig.len() > MAX_SIGNATURE {
                    return Err(format!(
                        "its signature is larger than {MAX_SIGNATURE} bytes"
                    ));
                }
                if line == END_SIGNATURE {
                    State::After
                } else {
                    State::Signature
                }
            }
            State::After if is_blank(line) => State::After,
            State::After => return Err(format!("line {n} follows the signature")),
        };
    }
    match state {
        State::Headers | State::Text { .. } | State::Signature => {
            Err("the clear-signed message ends before its signature does".to_string())
        }
        State::After => {
            sums.signature = Some(sig);
            Ok(sums)
        }
        State::Start | State::Plain => Ok(sums),
    }
}

/// Reads one line (with its `\n`) into `buf`; false at the end.
fn read_line(r: &mut impl BufRead, buf: &mut Vec<u8>, n: usize) -> Result<bool, String> {
    buf.clear();
    let got = r
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| format!("cannot read line {n}: {e}"))?;
    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
        return Err(format!("line {n} is longer than {} KiB", MAX_LINE / 1024));
    }
    Ok(got > 0)
}

/// The line without its `\n` and a `\r` before it.
fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r'))
}

/// A line of a clear-signed message's text as it was signed: dash-escaping
/// undone, trailing whitespace dropped.
fn signed_line(line: &[u8], n: usize) -> Result<&[u8], String> {
    let line = match line.strip_prefix(b"- ") {
        Some(rest) => rest,
        None if line.starts_with(b"-") => {
            return Err(format!("line {n} of the signed text is not dash-escaped"))
        }
        None => line,
    };
    let keep = line
        .iter()
        .rposition(|c| !matches!(c, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    Ok(&line[..keep])
}

/// Adds the entry a line holds, skips a blank line or comment, refuses
/// anything else.
fn plain_line(line: &[u8], n: usize, entries: &mut Vec<Entry>) -> Result<(), String> {
    let start = line
        .iter()
        .position(|c| !matches!(c, b' ' | b'\t'))
        .unwrap_or(line.len());
    let line = &line[start..];
    if line.is_empty() || line[0] == b'#' {
        return Ok(());
    }
    let Some((algo, digest, name)) = entry(line) else {
        return Err(format!(
            "line {n} is not a SHA-256 or SHA-512 checksum line"
        ));
    };
    if entries.len() >= MAX_ENTRIES {
        return Err(format!("it lists more than {MAX_ENTRIES} files"));
    }
    entries.push(Entry {
        line: n,
        algo,
        digest,
        name,
    });
    Ok(())
}

/// The algorithm, digest and name of a checksum line, if it is one.
fn entry(line: &[u8]) -> Option<(Algo, Vec<u8>, Vec<u8>)> {
    let (escaped, line) = match line.strip_prefix(b"\\") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (algo, hex, name) = bsd(line).or_else(|| gnu(line))?;
    let name = if escaped {
        unescape(name)?
    } else {
        name.to_vec()
    };
    if name.is_empty() || name.contains(&0) {
        return None;
    }
    Some((algo, decode_hex(hex)?, name))
}

/// `SHA256 (NAME) = HASH`.
fn bsd(line: &[u8]) -> Option<(Algo, &[u8], &[u8])> {
    for algo in Algo::ALL {
        let Some(rest) = line
            .strip_prefix(algo.tag())
            .and_then(|r| r.strip_prefix(b" ("))
        else {
            continue;
        };
        let cut = rest.len().checked_sub(algo.hex_len())?;
        let (mid, hex) = rest.split_at(cut);
        return Some((algo, hex, mid.strip_suffix(b") = ")?));
    }
    None
}

/// `HASH  NAME` or `HASH *NAME`.
fn gnu(line: &[u8]) -> Option<(Algo, &[u8], &[u8])> {
    let len = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
    let algo = Algo::ALL.into_iter().find(|a| a.hex_len() == len)?;
    let rest = &line[len..];
    let name = rest
        .strip_prefix(b"  ")
        .or_else(|| rest.strip_prefix(b" *"))?;
    Some((algo, &line[..len], name))
}

/// Undoes coreutils' escaping: `\\`, `\n`, `\r`.
fn unescape(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&c) = it.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        out.push(match it.next()? {
            b'\\' => b'\\',
            b'n' => b'\n',
            b'r' => b'\r',
            _ => return None,
        });
    }
    Some(out)
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    fn nibble(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    hex.chunks(2)
        .map(|p| match p {
            [a, b] => Some(nibble(*a)? << 4 | nibble(*b)?),
            _ => None,
        })
        .collect()
}

/// Lowercase hex, for messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
