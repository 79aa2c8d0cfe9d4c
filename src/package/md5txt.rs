//! Quectel's `md5.txt` package manifest (PROTOCOLS.md §7.4), parsed without I/O.
//!
//! ```text
//! VERSION:1.0
//! FILE:START
//! FILE:\contents.xml:5B15ED398BC0F9612B6BFB1FC8B844C8
//! FILE:\update\firehose\patch_p2K_b128K.xml:76AB07AD900114A765BC0C14F17F915A
//! FILE:\upgrade\targetfiles.zip:222EAA53A6C111E7F2E248587D6EA079
//! FILE:END
//! ```
//!
//! Paths are relative to the folder holding `md5.txt`, written with backslashes. A UTF-8 BOM,
//! CRLF or LF line ends and upper- or lower-case hex are accepted. Unlike QFirehose, which
//! compares only the first 16 hex digits, every entry must carry all 32. Lines naming
//! `targetfiles.zip` are skipped as QFirehose does, and reported as skipped. A malformed line is
//! an error that names the line.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::package::rawprogram::PackagePath;

/// One `FILE:\path:MD5` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Md5Entry {
    /// 1-based line number in md5.txt.
    pub line: u32,
    /// Normalised path relative to md5.txt's folder, `/` separators (`update/sbl1.mbn`).
    pub path: String,
    /// The path as written (`\update\sbl1.mbn`).
    pub listed_as: String,
    /// 32 upper-case hex digits.
    pub md5: String,
}

/// A line that was read but deliberately not used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedLine {
    pub line: u32,
    pub text: String,
    pub reason: String,
}

/// A parsed md5.txt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Md5Txt {
    /// The `VERSION:` value, e.g. `1.0`.
    pub version: Option<String>,
    /// Entries in file order, each path once.
    pub entries: Vec<Md5Entry>,
    pub skipped: Vec<SkippedLine>,
    /// `FILE:START` was present.
    pub has_start: bool,
    /// `FILE:END` was present (a file without it may have been cut short).
    pub has_end: bool,
}

/// One malformed line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Md5LineError {
    pub line: u32,
    /// The line (shortened to 120 characters).
    pub text: String,
    pub problem: String,
}

/// Why md5.txt could not be used: every malformed line (up to [`MAX_ERRORS`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Md5TxtError {
    pub errors: Vec<Md5LineError>,
    /// More malformed lines than were kept.
    pub more: bool,
}

/// Malformed lines kept in one error.
pub const MAX_ERRORS: usize = 20;
/// Lines read at most (real files list a few dozen files).
pub const MAX_LINES: usize = 100_000;
/// Longest accepted line.
const MAX_LINE_BYTES: usize = 8192;

impl fmt::Display for Md5TxtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "line {}: {} ({:?})", e.line, e.problem, e.text)?;
        }
        if self.more {
            f.write_str("; and more")?;
        }
        Ok(())
    }
}

impl std::error::Error for Md5TxtError {}

impl Md5TxtError {
    /// The error for people, naming the file.
    pub fn into_error(self, md5_path: &str) -> crate::Error {
        let first = self
            .errors
            .first()
            .map(|e| format!("line {}: {}", e.line, e.problem))
            .unwrap_or_default();
        crate::Error::failure(
            format!("the package's {md5_path} is malformed ({first})"),
            "md5.txt is how the vendor says which files belong to the package and what they contain; a damaged one cannot vouch for anything",
            "Download the package again. If you trust the files anyway, delete md5.txt (qrescue then reports the check as skipped)",
        )
        .with_source(self)
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() <= 120 {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(117).collect();
        t.push_str("...");
        t
    }
}

/// A 32-digit MD5 in upper case, or why not.
pub fn parse_md5_hex(text: &str) -> Result<String, String> {
    let t = text.trim();
    if !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("the MD5 {t:?} is not hexadecimal"));
    }
    if t.len() != 32 {
        return Err(format!(
            "the MD5 has {} hex digits; all 32 are required",
            t.len()
        ));
    }
    Ok(t.to_ascii_uppercase())
}

/// Parse md5.txt.
pub fn parse_md5txt(bytes: &[u8]) -> Result<Md5Txt, Md5TxtError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut out = Md5Txt {
        version: None,
        entries: Vec::new(),
        skipped: Vec::new(),
        has_start: false,
        has_end: false,
    };
    let mut errors = Vec::new();
    let mut more = false;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut push_err = |errors: &mut Vec<Md5LineError>, line: u32, text: &str, problem: String| {
        if errors.len() < MAX_ERRORS {
            errors.push(Md5LineError {
                line,
                text: shorten(text),
                problem,
            });
        } else {
            more = true;
        }
    };
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = (i + 1) as u32;
        if i >= MAX_LINES {
            push_err(
                &mut errors,
                line,
                "",
                format!("the file has more than {MAX_LINES} lines"),
            );
            break;
        }
        if raw.len() > MAX_LINE_BYTES {
            push_err(
                &mut errors,
                line,
                &String::from_utf8_lossy(&raw[..120]),
                format!("the line is longer than {MAX_LINE_BYTES} bytes"),
            );
            continue;
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            push_err(
                &mut errors,
                line,
                &String::from_utf8_lossy(raw),
                "the line is not text (UTF-8)".into(),
            );
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let upper = text.to_ascii_uppercase();
        if let Some(v) = upper.strip_prefix("VERSION:") {
            if out.version.is_none() {
                out.version = Some(text[text.len() - v.len()..].trim().to_string());
            }
            continue;
        }
        if upper == "FILE:START" {
            out.has_start = true;
            continue;
        }
        if upper == "FILE:END" {
            out.has_end = true;
            continue;
        }
        if upper.contains("TARGETFILES.ZIP") {
            out.skipped.push(SkippedLine {
                line,
                text: shorten(text),
                reason: "targetfiles.zip (an update bundle, not flashed over Firehose) is skipped, as QFirehose does".into(),
            });
            continue;
        }
        if !upper.starts_with("FILE:") {
            push_err(
                &mut errors,
                line,
                text,
                "not a VERSION:, FILE:START, FILE:\\path:MD5 or FILE:END line".into(),
            );
            continue;
        }
        let rest = &text[5..];
        let Some((listed, hex)) = rest.rsplit_once(':') else {
            push_err(
                &mut errors,
                line,
                text,
                "a FILE: line needs a path and an MD5 separated by ':'".into(),
            );
            continue;
        };
        let md5 = match parse_md5_hex(hex) {
            Ok(m) => m,
            Err(p) => {
                push_err(&mut errors, line, text, p);
                continue;
            }
        };
        let listed = listed.trim();
        let Some(rel) = listed
            .strip_prefix('\\')
            .or_else(|| listed.strip_prefix('/'))
        else {
            push_err(
                &mut errors,
                line,
                text,
                "the path must start with '\\' (relative to the folder holding md5.txt)".into(),
            );
            continue;
        };
        let path = match PackagePath::parse(rel) {
            Ok(Some(p)) if p.components().any(|c| c == "..") => {
                push_err(
                    &mut errors,
                    line,
                    text,
                    "the path climbs out of the package with '..'".into(),
                );
                continue;
            }
            Ok(Some(p)) => p.as_str().to_string(),
            Ok(None) => {
                push_err(&mut errors, line, text, "the path is empty".into());
                continue;
            }
            Err(p) => {
                push_err(&mut errors, line, text, format!("the path {p}"));
                continue;
            }
        };
        if let Some(&prev) = seen.get(&path) {
            let earlier: &Md5Entry = &out.entries[prev];
            if earlier.md5 == md5 {
                out.skipped.push(SkippedLine {
                    line,
                    text: shorten(text),
                    reason: format!("repeats line {}", earlier.line),
                });
            } else {
                let msg = format!(
                    "{path} is listed again with a different MD5 (line {} says {})",
                    earlier.line, earlier.md5
                );
                push_err(&mut errors, line, text, msg);
            }
            continue;
        }
        seen.insert(path.clone(), out.entries.len());
        out.entries.push(Md5Entry {
            line,
            path,
            listed_as: listed.to_string(),
            md5,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(Md5TxtError { errors, more })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REAL: &[u8] = include_bytes!("../../tests/data/realpkg/eg25g/md5.txt");

    #[test]
    fn the_real_eg25g_md5_txt() {
        let m = parse_md5txt(REAL).unwrap();
        assert_eq!(m.version.as_deref(), Some("1.0"));
        assert!(m.has_start && m.has_end);
        assert_eq!(m.entries.len(), 18);
        assert_eq!(m.skipped.len(), 1);
        assert_eq!(m.skipped[0].line, 21);
        assert!(m.skipped[0].text.contains("targetfiles.zip"));
        assert_eq!(m.entries[0].path, "contents.xml");
        assert_eq!(m.entries[0].md5, "5B15ED398BC0F9612B6BFB1FC8B844C8");
        let raw = m
            .entries
            .iter()
            .find(|e| e.path == "update/firehose/rawprogram_nand_p2K_b128K_update.xml")
            .unwrap();
        assert_eq!(
            raw.listed_as,
            "\\update\\firehose\\rawprogram_nand_p2K_b128K_update.xml"
        );
        assert_eq!(raw.line, 9);
    }

    #[test]
    fn bom_lf_lower_case_and_blank_lines() {
        let text = "\u{feff}VERSION:1.0\nFILE:START\n\nFILE:\\a\\b.bin:0123456789abcdef0123456789ABCDEF\n  FILE:/c.bin:00000000000000000000000000000000  \nFILE:END";
        let m = parse_md5txt(text.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].path, "a/b.bin");
        assert_eq!(m.entries[0].md5, "0123456789ABCDEF0123456789ABCDEF");
        assert_eq!(m.entries[1].path, "c.bin");
        assert_eq!(m.entries[1].line, 5);
    }

    #[test]
    fn malformed_lines_are_named() {
        let text = "VERSION:1.0\r\nFILE:START\r\nFILE:\\update\\sbl1.mbn:52AC9148230560CB\r\nhello\r\nFILE:\\..\\..\\etc\\passwd:52AC9148230560CBB752869835752DDF\r\nFILE:C:\\x.bin:52AC9148230560CBB752869835752DDF\r\nFILE:update\\x.bin:52AC9148230560CBB752869835752DDF\r\nFILE:\\y.bin:52AC9148230560CBB752869835752DDG\r\nFILE:END\r\n";
        let e = parse_md5txt(text.as_bytes()).unwrap_err();
        let lines: Vec<u32> = e.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7, 8]);
        assert!(e.errors[0].problem.contains("16 hex digits; all 32"));
        assert!(e.errors[1].problem.contains("not a VERSION:"));
        assert!(e.errors[2].problem.contains("climbs out"));
        assert!(
            e.errors[3].problem.contains("colon") || e.errors[3].problem.contains("start with")
        );
        assert!(e.errors[4].problem.contains("must start with"));
        assert!(e.errors[5].problem.contains("not hexadecimal"));
        let err = e.clone().into_error("md5.txt");
        assert!(err.what.contains("line 3"), "{err}");
        assert!(e.to_string().contains("line 8"));
    }

    #[test]
    fn duplicates() {
        let same = "FILE:\\a:00000000000000000000000000000000\nFILE:\\a:00000000000000000000000000000000\n";
        let m = parse_md5txt(same.as_bytes()).unwrap();
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.skipped[0].reason, "repeats line 1");
        assert!(!m.has_start && !m.has_end);
        let diff = "FILE:\\a:00000000000000000000000000000000\nFILE:\\.\\a:11111111111111111111111111111111\n";
        let e = parse_md5txt(diff.as_bytes()).unwrap_err();
        assert_eq!(e.errors[0].line, 2);
        assert!(e.errors[0].problem.contains("different MD5"));
    }

    #[test]
    fn error_count_is_bounded() {
        let text = "junk\n".repeat(1000);
        let e = parse_md5txt(text.as_bytes()).unwrap_err();
        assert_eq!(e.errors.len(), MAX_ERRORS);
        assert!(e.more);
    }

    fn name() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.-]{1,12}".prop_filter("not a dot name", |s| s != "." && s != "..")
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_md5txt(&bytes);
        }

        #[test]
        fn never_panics_on_near_valid_lines(
            lines in proptest::collection::vec("(FILE:|VERSION:)?[\\\\/A-Za-z0-9:.\u{e9}]{0,40}", 0..12),
            crlf in any::<bool>(),
        ) {
            let text = lines.join(if crlf { "\r\n" } else { "\n" });
            if let Ok(m) = parse_md5txt(text.as_bytes()) {
                for e in m.entries {
                    prop_assert_eq!(e.md5.len(), 32);
                    prop_assert!(!e.path.split('/').any(|c| c == ".." || c.is_empty()));
                }
            }
        }

        #[test]
        fn round_trip(
            files in proptest::collection::btree_map(
                proptest::collection::vec(name(), 1..4), proptest::array::uniform16(any::<u8>()), 0..10),
            crlf in any::<bool>(),
            bom in any::<bool>(),
            lower in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            if bom { text.push('\u{feff}'); }
            text.push_str(&format!("VERSION:1.0{eol}FILE:START{eol}"));
            let mut want = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            for (parts, md5) in &files {
                let path = parts.join("/");
                if path.to_ascii_lowercase().contains("targetfiles.zip") || !seen.insert(path.clone()) {
                    continue;
                }
                let hex = if lower { hex::encode(md5) } else { hex::encode_upper(md5) };
                text.push_str(&format!("FILE:\\{}:{hex}{eol}", parts.join("\\")));
                want.push((path, hex::encode_upper(md5)));
            }
            text.push_str(&format!("FILE:END{eol}"));
            let m = parse_md5txt(text.as_bytes()).unwrap();
            let got: Vec<(String, String)> = m.entries.into_iter().map(|e| (e.path, e.md5)).collect();
            prop_assert_eq!(got, want);
            prop_assert!(m.has_start && m.has_end);
        }
    }
}
