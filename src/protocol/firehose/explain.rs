//! The one table of known Firehose programmer messages and what they mean in plain words
//! (USERS.md §2.1, §2.5, §16; PROTOCOLS.md §2.3, §2.4, §9.12). A NAK is explained from the logs
//! the programmer sent around it; unknown NAKs show the device's last lines.

use crate::error::Error;

/// What the host should do about a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Advice {
    /// Normal noise; count or hide it.
    Benign,
    /// Part of payload negotiation; handled without bothering anyone.
    Renegotiate,
    /// A transient refusal; one retry is reasonable.
    Retry,
    /// Stop and tell the person.
    Stop,
}

/// A plain-words reading of a device message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// Stable identifier (for tests, `--json` and the recorder).
    pub id: &'static str,
    pub advice: Advice,
    pub what: String,
    pub why: String,
    pub next: String,
    /// The device's own line that matched, verbatim.
    pub device_line: Option<String>,
}

impl Explanation {
    /// As a people-facing error (kind Failure); the device's line is quoted in `why`.
    pub fn to_error(&self) -> Error {
        let why = match &self.device_line {
            Some(l) => format!("{} (the programmer said: \"{}\")", self.why, l),
            None => self.why.clone(),
        };
        Error::failure(self.what.clone(), why, self.next.clone())
    }
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.to_ascii_lowercase()
        .contains(&needle.to_ascii_lowercase())
}

/// Numbers in the order they appear in `s`.
fn numbers(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|t| !t.is_empty())
        .filter_map(|t| t.parse().ok())
        .collect()
}

type Matcher = fn(&str) -> Option<Explanation>;

fn simple(
    id: &'static str,
    advice: Advice,
    what: &str,
    why: &str,
    next: &str,
    line: &str,
) -> Explanation {
    Explanation {
        id,
        advice,
        what: what.into(),
        why: why.into(),
        next: next.into(),
        device_line: Some(line.chars().take(300).collect()),
    }
}

const SAFE_AGAIN: &str = "The modem stays in download mode, so it is safe to run the flash again once the cause is fixed.";

/// The table, most specific first. Each entry looks at one log line.
const TABLE: &[Matcher] = &[
    |l| {
        contains_ci(l, "start_sector unaligned").then(|| {
            simple(
                "nand_start_sector_unaligned",
                Advice::Stop,
                "The package doesn't match this module's flash chip. Nothing was written by this command",
                "The package was built for a different NAND block size (for example a p2K_b128K package on a module with 256 KiB blocks), so its partition starts don't fall on this chip's block boundaries",
                &format!("Use the firmware package made for this exact module variant and flash size. {SAFE_AGAIN}"),
                l,
            )
        })
    },
    |l| {
        (contains_ci(l, "NAND write failure") || contains_ci(l, "program page failed")).then(|| {
            simple(
                "nand_write_failure",
                Advice::Stop,
                "The modem's NAND failed to write a page",
                "The flash chip reported a write error: the partition being written is incomplete and the modem will not boot from it",
                "Run the same flash once more (the modem stays in download mode). If it fails again at the same page, the NAND is failing: stop and save a full backup of what still reads",
                l,
            )
        })
    },
    |l| {
        contains_ci(l, "exceeding total number of blocks").then(|| {
            simple(
                "nand_erase_beyond_end",
                Advice::Stop,
                "The package is for a bigger flash variant",
                "It addresses blocks past the end of this module's NAND (for example an image for a 256 MB part on a 128 MB part)",
                &format!("Use the package for this module's flash size (check the variant letters of the module and the package). {SAFE_AGAIN}"),
                l,
            )
        })
    },
    |l| {
        if !(contains_ci(l, "PAGES_PER_BLOCK") && contains_ci(l, "pages per block")) {
            return None;
        }
        let n = numbers(l);
        let (pkg, disk) = match n.as_slice() {
            [.., a, b] => (a.to_string(), b.to_string()),
            _ => ("?".into(), "?".into()),
        };
        Some(simple(
            "nand_pages_per_block_mismatch",
            Advice::Stop,
            &format!("The package's NAND geometry ({pkg} pages per block) doesn't match this chip ({disk} pages per block)"),
            "The package or the PAGES_PER_BLOCK setting was made for a different flash part; the programmer refused the command before writing",
            &format!("Use the package for this module's flash chip, or correct PAGES_PER_BLOCK to {disk}. {SAFE_AGAIN}"),
            l,
        ))
    },
    |l| {
        contains_ci(l, "payload to target size is too large").then(|| {
            simple(
                "payload_too_large",
                Advice::Renegotiate,
                "The programmer asked for a smaller transfer size",
                "This is part of the normal start-up negotiation",
                "Nothing to do: qrescue uses the size the programmer offers",
                l,
            )
        })
    },
    |l| {
        (contains_ci(l, "Failed to open device, type:nand") || contains_ci(l, "NAND Error")).then(|| {
            simple(
                "nand_open_failed",
                Advice::Stop,
                "Download mode works, but the flash storage can't be opened with this programmer",
                "The programmer could not open or erase the NAND; usually the programmer doesn't match the module's baseline",
                "Stop here; try the programmer (prog_*firehose*) from this module's original firmware package",
                l,
            )
        })
    },
    |l| {
        (contains_ci(l, "Failed to open device") || contains_ci(l, "Failed to initialize"))
            .then(|| {
                simple(
                    "storage_open_failed",
                    Advice::Stop,
                    "The programmer could not open the flash storage",
                    "The storage type asked for may not be the one this module has, or the programmer doesn't match it",
                    "Check the storage type (most Quectel LTE modules are NAND; 5G modules are NAND or UFS) and use the programmer from this module's package",
                    l,
                )
            })
    },
    |l| {
        contains_ci(l, "Not support configure MemoryName").then(|| {
            simple(
                "memory_name_unsupported",
                Advice::Stop,
                "The programmer doesn't support the storage type qrescue asked for",
                "Each programmer is built for one kind of flash (NAND, eMMC, UFS)",
                "Choose the storage type this module really has, or let qrescue read it from the package",
                l,
            )
        })
    },
    |l| {
        contains_ci(l, "Only nop and sig tag").then(|| {
            simple(
                "authentication_required",
                Advice::Stop,
                "The programmer only accepts commands after vendor authentication",
                "This programmer is locked to signed sessions (seen with phone vendors' programmers)",
                "Use the programmer from this module's own Quectel firmware package",
                l,
            )
        })
    },
    |l| {
        contains_ci(l, "XML not formed correctly").then(|| {
            simple(
                "xml_not_formed",
                Advice::Retry,
                "The programmer couldn't read a command",
                "Usually stray bytes from the previous transfer reached it together with the command",
                "qrescue retries once; if it repeats, power-cycle the modem and run the flash again",
                l,
            )
        })
    },
    |l| {
        contains_ci(l, "bad block").then(|| {
            simple(
                "nand_bad_block",
                Advice::Benign,
                "The flash reported a bad block",
                "Raw NAND always has a few bad blocks; the programmer skips them",
                "Nothing to do unless a refused command follows",
                l,
            )
        })
    },
];

/// Explain one log line, if it is known.
pub fn explain_log(line: &str) -> Option<Explanation> {
    TABLE.iter().find_map(|m| m(line))
}

/// Explain a NAK to `command` from the logs around it: the most specific known line wins (the
/// table order); benign and renegotiation lines never explain a refusal on their own. Without a
/// known line, the device's last lines are shown.
pub fn explain_nak<S: AsRef<str>>(command: &str, logs: &[S]) -> Explanation {
    for m in TABLE {
        for l in logs {
            if let Some(e) = m(l.as_ref()) {
                if matches!(e.advice, Advice::Stop | Advice::Retry) {
                    return e;
                }
            }
        }
    }
    if command == "configure" {
        if let Some(l) = logs
            .iter()
            .find(|l| contains_ci(l.as_ref(), "payload to target size is too large"))
        {
            return simple(
                "configure_refused_payload",
                Advice::Stop,
                "The programmer refused every transfer size qrescue offered",
                "It NAKed configure without offering a size that works",
                "Power-cycle the modem and try again; if it repeats, use the programmer from this module's package",
                l.as_ref(),
            );
        }
    }
    let tail: Vec<String> = logs
        .iter()
        .rev()
        .take(5)
        .map(|l| format!("\"{}\"", l.as_ref().chars().take(200).collect::<String>()))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let why = if tail.is_empty() {
        "It answered NAK without saying why".to_string()
    } else {
        format!(
            "It answered NAK; its last messages were: {}",
            tail.join(", ")
        )
    };
    Explanation {
        id: "nak",
        advice: Advice::Stop,
        what: format!("The programmer refused the {command} command"),
        why,
        next: format!("Check that the package and programmer match this module. {SAFE_AGAIN}"),
        device_line: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_naks() {
        let e = explain_nak(
            "program",
            &[
                "INFO: Calling handler for program",
                "start_sector unaligned",
            ],
        );
        assert_eq!(e.id, "nand_start_sector_unaligned");
        assert!(e.what.contains("Nothing was written"));
        let err = e.to_error();
        assert!(err.why.contains("start_sector unaligned"));
        assert_eq!(err.kind, crate::ErrorKind::Failure);

        let e = explain_nak("program", &["ERROR: NAND write failure at page 4242"]);
        assert_eq!(e.id, "nand_write_failure");
        assert!(e.next.contains("again"));

        let e = explain_nak(
            "erase",
            &["ERROR: Block erase request exceeding total number of blocks"],
        );
        assert_eq!(e.id, "nand_erase_beyond_end");
        assert!(e.what.contains("bigger flash variant"));

        let e = explain_nak(
            "program",
            &["ERROR: Attribute 'PAGES_PER_BLOCK'=2048 must be equal to disk pages per block 64"],
        );
        assert_eq!(e.id, "nand_pages_per_block_mismatch");
        assert!(e.what.contains("2048 pages per block"), "{}", e.what);
        assert!(e.what.contains("(64 pages per block)"), "{}", e.what);

        let e = explain_nak(
            "erase",
            &["ERROR: Failed to open device, type:nand, slot:0, lun:0 error:4"],
        );
        assert_eq!(e.id, "nand_open_failed");
        let e = explain_nak("configure", &["Not support configure MemoryName eMMC"]);
        assert_eq!(e.id, "memory_name_unsupported");
    }

    #[test]
    fn payload_too_large_is_silent_renegotiation() {
        let e = explain_log("LOG: Host's payload to target size is too large").unwrap();
        assert_eq!(e.advice, Advice::Renegotiate);
        let n = explain_nak("configure", &["Host's payload to target size is too large"]);
        assert_eq!(n.id, "configure_refused_payload");
    }

    #[test]
    fn benign_lines_do_not_explain_a_nak_and_generic_shows_last_logs() {
        let logs: Vec<String> = (0..8)
            .map(|i| format!("line {i}"))
            .chain(["bad block 12".into()])
            .collect();
        let e = explain_nak("program", &logs);
        assert_eq!(e.id, "nak");
        assert!(e.why.contains("\"bad block 12\""));
        assert!(e.why.contains("\"line 4\""));
        assert!(!e.why.contains("\"line 3\""));
        assert!(e.what.contains("program"));
        let e = explain_nak::<&str>("patch", &[]);
        assert!(e.why.contains("without saying why"));
        assert_eq!(
            explain_log("bad block at 0x40").unwrap().advice,
            Advice::Benign
        );
        assert!(explain_log("INFO: Calling handler for program").is_none());
    }
}
