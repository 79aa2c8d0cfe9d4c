//! The production record of a station run: one [`SummaryRow`] per modem (identity, package,
//! outcome and verdict, duration, bytes, log, its flash journal and what resuming cost),
//! written as JSON and as CSV ([`CSV_HEADER`] documents the columns; new columns are only ever
//! appended, so a column keeps its position).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::workflow::verdict::Verdict;
use crate::Error;

/// How one modem's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Flashed, back in normal mode, same unit, full function.
    Verified,
    /// Flashed, but the checks after it failed (see the verdict).
    NotVerified,
    /// The flash itself did not finish.
    Failed,
    /// Not flashed: its mode does not allow it, or it could not be reached.
    Skipped,
    /// Stopped on request.
    Interrupted,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Verified => "verified",
            Outcome::NotVerified => "not_verified",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// One modem of a station run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRow {
    /// The key the run knows the modem by (`SN:0CF94C64`, or `USB:<iSerial>` for one first seen
    /// in normal mode before its EDL serial was read).
    pub device: String,
    /// The Sahara / `_SN:` serial, once known.
    pub edl_serial: Option<String>,
    /// The normal-mode USB iSerial, when seen.
    pub usb_serial: Option<String>,
    /// The IMEI read over AT (before the flash, or after it when not before).
    pub imei: Option<String>,
    /// The bus it was found on (`USB (nusb hotplug)`, `emulator at /tmp/x.sock`).
    pub bus: String,
    /// Where it was when the run took it.
    pub location: String,
    pub package: String,
    pub outcome: Outcome,
    /// The verdict after the flash, when the flash finished.
    pub verdict: Option<Verdict>,
    /// One line for people: the verdict's headline, or what went wrong.
    pub detail: String,
    /// What to do next, when something is left to do.
    pub next: Option<String>,
    pub started: String,
    pub duration_ms: u64,
    /// Image bytes sent to the modem by its flash, over all attempts.
    pub bytes: u64,
    /// Flash attempts (more than one after a drop).
    pub attempts: u32,
    pub log: PathBuf,
    pub recording: Option<PathBuf>,
    /// The key of its flash journal (`sn-0x0cf94c64`: its EDL serial), once opened.
    pub journal: Option<String>,
    /// The flash continued from work its journal held (written before a drop, or by an
    /// earlier run) instead of starting over.
    pub resumed: bool,
    /// Image bytes sent more than once: what the interruptions cost (bytes sent in all minus
    /// what the plan still needed when the flash began).
    pub bytes_resent: u64,
}

impl SummaryRow {
    pub fn verified(&self) -> bool {
        self.outcome == Outcome::Verified
    }
}

/// CSV columns, in order (new ones are appended at the end, never inserted):
///
/// | column | meaning |
/// |---|---|
/// | `device` | the key the run knows the modem by (`SN:<EDL serial>`, `USB:<iSerial>`) |
/// | `edl_serial` | its Sahara / `_SN:` serial (upper-case hex), once known |
/// | `usb_serial` | its normal-mode USB iSerial, when seen |
/// | `imei` | the IMEI read over AT |
/// | `bus`, `location` | where the run found it |
/// | `package` | the package flashed |
/// | `outcome` | `verified`, `not_verified`, `failed`, `skipped` or `interrupted` |
/// | `detail` | the verdict's headline, or what went wrong |
/// | `started` | when its job started (UTC, RFC 3339) |
/// | `duration_ms` | how long its job took |
/// | `bytes` | image bytes sent over all attempts |
/// | `attempts` | flash attempts (more than one after a drop) |
/// | `log`, `recording` | its log and traffic recording in the run folder |
/// | `journal` | its flash journal's key (`sn-0x…`) |
/// | `resumed` | `yes` when the flash continued from its journal, else `no` |
/// | `bytes_resent` | image bytes sent more than once because of interruptions |
pub const CSV_HEADER: &[&str] = &[
    "device",
    "edl_serial",
    "usb_serial",
    "imei",
    "bus",
    "location",
    "package",
    "outcome",
    "detail",
    "started",
    "duration_ms",
    "bytes",
    "attempts",
    "log",
    "recording",
    "journal",
    "resumed",
    "bytes_resent",
];

/// One CSV field (RFC 4180: quoted when it holds a comma, quote or line break; a leading
/// `=`, `+`, `-` or `@` is prefixed with `'` so a spreadsheet never runs it as a formula).
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The rows as CSV text (header first, CRLF line ends as RFC 4180 says).
pub fn to_csv(rows: &[SummaryRow]) -> String {
    let mut out = CSV_HEADER.join(",");
    out.push_str("\r\n");
    for r in rows {
        let opt = |o: &Option<String>| o.clone().unwrap_or_default();
        let fields = [
            r.device.clone(),
            opt(&r.edl_serial),
            opt(&r.usb_serial),
            opt(&r.imei),
            r.bus.clone(),
            r.location.clone(),
            r.package.clone(),
            r.outcome.word().to_string(),
            r.detail.clone(),
            r.started.clone(),
            r.duration_ms.to_string(),
            r.bytes.to_string(),
            r.attempts.to_string(),
            r.log.display().to_string(),
            r.recording
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            opt(&r.journal),
            if r.resumed { "yes" } else { "no" }.to_string(),
            r.bytes_resent.to_string(),
        ];
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// The whole run as one JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub package: String,
    pub started: String,
    pub duration_ms: u64,
    pub devices: usize,
    pub verified: usize,
    pub bytes: u64,
    pub rows: Vec<SummaryRow>,
}

impl Summary {
    pub fn new(package: String, started: String, duration_ms: u64, rows: Vec<SummaryRow>) -> Self {
        Summary {
            package,
            started,
            duration_ms,
            devices: rows.len(),
            verified: rows.iter().filter(|r| r.verified()).count(),
            bytes: rows.iter().map(|r| r.bytes).sum(),
            rows,
        }
    }

    /// Write to `path`: CSV when it ends in `.csv`, JSON otherwise. Written to a temporary
    /// file beside it first, then renamed, so a reader never sees half a summary.
    pub fn write(&self, path: &Path) -> crate::Result<()> {
        let csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let bytes = if csv {
            to_csv(&self.rows).into_bytes()
        } else {
            let mut v = serde_json::to_vec_pretty(self).map_err(|e| {
                Error::failure(
                    "Cannot encode the station summary",
                    e.to_string(),
                    "This is a bug in qrescue; please report it",
                )
            })?;
            v.push(b'\n');
            v
        };
        let io = |e: std::io::Error| {
            Error::failure(
                format!("Cannot write the station summary {}", path.display()),
                "the production record of this run goes there",
                "Choose a folder you can write to (--summary FILE.json or FILE.csv)",
            )
            .with_source(e)
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".summary-")
            .tempfile_in(dir)
            .map_err(io)?;
        tmp.write_all(&bytes).map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(device: &str, detail: &str) -> SummaryRow {
        SummaryRow {
            device: device.into(),
            edl_serial: Some("0CF94C64".into()),
            usb_serial: None,
            imei: Some("861234051234564".into()),
            bus: "emulator".into(),
            location: "99-3".into(),
            package: "/p".into(),
            outcome: Outcome::Verified,
            verdict: None,
            detail: detail.into(),
            next: None,
            started: "2024-01-01T00:00:00Z".into(),
            duration_ms: 1200,
            bytes: 4096,
            attempts: 1,
            log: "/logs/a.log".into(),
            recording: None,
            journal: Some("sn-0x0cf94c64".into()),
            resumed: true,
            bytes_resent: 512,
        }
    }

    /// A minimal RFC 4180 reader for the tests: fields of each record.
    fn parse_csv(text: &str) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        let mut row = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (quoted, c) {
                (true, '"') if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                (true, '"') => quoted = false,
                (true, c) => field.push(c),
                (false, '"') => quoted = true,
                (false, ',') => row.push(std::mem::take(&mut field)),
                (false, '\r') => {}
                (false, '\n') => {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                (false, c) => field.push(c),
            }
        }
        rows
    }

    #[test]
    fn csv_has_a_header_and_one_record_per_row_with_quoting() {
        let rows = vec![
            row(
                "SN:0CF94C64",
                "flashed and verified (same IMEI 1; +CFUN: 1)",
            ),
            row("SN:1", "said \"no\", then\nleft"),
        ];
        let text = to_csv(&rows);
        let parsed = parse_csv(&text);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0], CSV_HEADER);
        assert_eq!(parsed[1][0], "SN:0CF94C64");
        assert_eq!(parsed[1][7], "verified");
        assert_eq!(parsed[2][8], "said \"no\", then\nleft");
        // The first columns keep their places; the journal's come last.
        assert_eq!(&CSV_HEADER[..3], ["device", "edl_serial", "usb_serial"]);
        assert_eq!(parsed[0][14], "recording");
        assert_eq!(&parsed[1][15..], ["sn-0x0cf94c64", "yes", "512"]);
        assert!(parsed.iter().all(|r| r.len() == CSV_HEADER.len()));
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }

    #[test]
    fn summaries_count_and_write_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = row("SN:2", "x");
        b.outcome = Outcome::Failed;
        let s = Summary::new("/p".into(), "t".into(), 5, vec![row("SN:1", "ok"), b]);
        assert_eq!((s.devices, s.verified, s.bytes), (2, 1, 8192));
        let j = dir.path().join("s.json");
        let c = dir.path().join("s.CSV");
        s.write(&j).unwrap();
        s.write(&c).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&j).unwrap()).unwrap();
        assert_eq!(v["rows"][1]["outcome"], "failed");
        assert_eq!(parse_csv(&std::fs::read_to_string(&c).unwrap()).len(), 3);
    }

    proptest! {
        #[test]
        fn any_text_survives_a_csv_round_trip(s in "\\PC{0,30}|[,\"\r\n a]{0,12}") {
            let text = to_csv(&[row("d", &s)]);
            let parsed = parse_csv(&text);
            prop_assert_eq!(parsed.len(), 2);
            let want = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.clone() };
            // A bare CR is dropped by the reader above only outside quotes; quoted fields keep it.
            prop_assert_eq!(&parsed[1][8], &want);
        }
    }
}
