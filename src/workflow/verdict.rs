//! The verdict after a flash: never "success" on the write alone. A flash is *verified* only
//! when the modem came back in normal mode, said who it is over AT, and is still the unit it
//! was (same IMEI), with its calibration (`+CFUN: 1`, not 5) and a firmware it accepts (not 7),
//! running the package's revision when that is known. Anything short of that is "flashed, NOT
//! verified" with each failed check named and what to do about it (USERS.md §1, §2, §17).

use serde::Serialize;

use crate::engine::at::NormalIdentity;
use crate::package::revision::Revision;

/// What the modem should look like after the flash, from before it (identify, backup) and the
/// package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Expectation {
    /// The IMEI read before the flash (AT+CGSN) or kept in the backup's identity.
    pub imei: Option<String>,
    /// The revision the package installs (its folder or md5.txt name), when known.
    pub revision: Option<String>,
    /// Whether the modem had its calibration before (`+CFUN: 1` then); `None` when unknown
    /// (e.g. a unit that never booted).
    pub calibrated_before: Option<bool>,
    /// A verified backup of this unit exists (it changes what to do when something is lost).
    pub backup: Option<String>,
}

/// How the modem came back (or did not) after the flash and its reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Return {
    /// Not seen in normal mode within the wait; `last_mode` is what was seen last, if anything
    /// (`EDL 9008`, `crash dump 900e`).
    NoReturn {
        waited_ms: u64,
        last_mode: Option<String>,
    },
    /// Back in normal mode, but its AT port did not answer.
    Unidentified { why: String },
    /// Back in normal mode and identified over AT.
    Normal(Box<NormalIdentity>),
}

/// One failed check after a flash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Failure {
    /// It did not come back in normal mode.
    NoReturn {
        waited_ms: u64,
        last_mode: Option<String>,
    },
    /// Back in normal mode, but nothing could be asked.
    Unidentified { why: String },
    /// AT+CGSN did not give an IMEI.
    ImeiUnreadable,
    /// The IMEI is not the one it had.
    ImeiChanged { before: String, after: String },
    /// `+CFUN: 5`: the RF calibration is gone (factory test mode).
    CalibrationLost,
    /// `+CFUN: 7`: the firmware does not fit this unit (wrong variant, SIM/RF disabled).
    WrongFirmware,
    /// Some other `+CFUN` level, or none read.
    NotFullFunction { level: Option<u8> },
    /// It runs another revision than the package's.
    RevisionMismatch { expected: String, running: String },
}

impl Failure {
    /// What failed, in plain words.
    pub fn what(&self) -> String {
        match self {
            Failure::NoReturn {
                waited_ms,
                last_mode,
            } => match last_mode {
                Some(m) => format!(
                    "the modem did not come back in normal mode within {} s (last seen: {m})",
                    waited_ms / 1000
                ),
                None => format!(
                    "the modem did not come back in normal mode within {} s (not seen at all)",
                    waited_ms / 1000
                ),
            },
            Failure::Unidentified { why } => {
                format!("the modem is back in normal mode but its AT port did not answer: {why}")
            }
            Failure::ImeiUnreadable => "the modem did not give its IMEI (AT+CGSN)".to_string(),
            Failure::ImeiChanged { before, after } => {
                format!("the IMEI changed: it was {before}, it is now {after}")
            }
            Failure::CalibrationLost => {
                "+CFUN: 5 — the RF calibration is gone (factory test mode): no network".to_string()
            }
            Failure::WrongFirmware => {
                "+CFUN: 7 — the firmware does not fit this unit (wrong variant)".to_string()
            }
            Failure::NotFullFunction { level: Some(l) } => {
                format!("+CFUN: {l} — the modem is not at full function")
            }
            Failure::NotFullFunction { level: None } => {
                "the modem did not say its function level (AT+CFUN?)".to_string()
            }
            Failure::RevisionMismatch { expected, running } => {
                format!("it runs {running}, not the package's {expected}")
            }
        }
    }

    /// What to do about it.
    pub fn next(&self, backup: Option<&str>) -> String {
        let restore = match backup {
            Some(b) => format!("restore the backup with `qrescue restore {b}`"),
            None => "restore a backup of this unit's EFS/NV partitions (qrescue restore BACKUP); without one, only the maker can recalibrate it".to_string(),
        };
        match self {
            Failure::NoReturn { last_mode: Some(m), .. } if m.contains("900e") => {
                "it crashes at boot: save its RAM dump (qrescue ramdump), then flash again from 9008 with the full package".to_string()
            }
            Failure::NoReturn { last_mode: Some(m), .. } if m.contains("9008") => {
                "it is back in EDL: the boot chain did not take; flash again (qrescue resumes) or use the package's full set".to_string()
            }
            Failure::NoReturn { .. } => {
                "power-cycle the modem (unplug it or cut its power) and run `qrescue list`; if it stays away, check the cable and power".to_string()
            }
            Failure::Unidentified { .. } => {
                "close programs holding its AT port (qrescue preflight), then `qrescue info`".to_string()
            }
            Failure::ImeiUnreadable | Failure::ImeiChanged { .. } | Failure::CalibrationLost => {
                restore
            }
            Failure::WrongFirmware => {
                "flash the package for this exact variant (the label's model and the backup's revision say which)".to_string()
            }
            Failure::NotFullFunction { .. } => {
                "ask again with `qrescue info`; AT+CFUN=1 brings a modem from 0 or 4 to full function".to_string()
            }
            Failure::RevisionMismatch { .. } => {
                "check that the flash wrote the modem image (qrescue status) and flash again".to_string()
            }
        }
    }
}

/// What a flash proved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Flashed, back in normal mode, same unit, full function: each check that passed.
    Verified { checks: Vec<String> },
    /// Flashed, but the checks after it failed: each with its advice.
    NotVerified {
        failures: Vec<Failure>,
        next: Vec<String>,
    },
}

impl Verdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified { .. })
    }

    /// One line for people: `flashed and verified (…)` or `flashed, NOT verified: …`.
    pub fn headline(&self) -> String {
        match self {
            Verdict::Verified { checks } => format!("flashed and verified ({})", checks.join("; ")),
            Verdict::NotVerified { failures, .. } => format!(
                "flashed, NOT verified: {}",
                failures
                    .iter()
                    .map(Failure::what)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Judge a flash from what was expected and how the modem came back.
pub fn judge(expect: &Expectation, ret: &Return) -> Verdict {
    let id = match ret {
        Return::NoReturn {
            waited_ms,
            last_mode,
        } => {
            return not_verified(
                expect,
                vec![Failure::NoReturn {
                    waited_ms: *waited_ms,
                    last_mode: last_mode.clone(),
                }],
            )
        }
        Return::Unidentified { why } => {
            return not_verified(expect, vec![Failure::Unidentified { why: why.clone() }])
        }
        Return::Normal(id) => id,
    };
    let mut failures = Vec::new();
    let mut checks = vec!["back in normal mode".to_string()];
    match (&expect.imei, &id.imei) {
        (_, None) => failures.push(Failure::ImeiUnreadable),
        (Some(before), Some(after)) if before != &after.digits => {
            failures.push(Failure::ImeiChanged {
                before: before.clone(),
                after: after.digits.clone(),
            })
        }
        (Some(_), Some(after)) => checks.push(format!("same IMEI {}", after.digits)),
        (None, Some(after)) if !after.luhn_ok => failures.push(Failure::ImeiChanged {
            before: "(unknown)".to_string(),
            after: format!("{} (fails its check digit)", after.digits),
        }),
        (None, Some(after)) => {
            checks.push(format!("IMEI {} (none on record to compare)", after.digits))
        }
    }
    match id.cfun.map(|c| c.level) {
        Some(1) => checks.push("+CFUN: 1 (calibrated, full function)".to_string()),
        Some(5) => failures.push(Failure::CalibrationLost),
        Some(7) => failures.push(Failure::WrongFirmware),
        level => failures.push(Failure::NotFullFunction { level }),
    }
    if let (Some(expected), Some(running)) = (&expect.revision, &id.revision) {
        match (Revision::parse(expected).ok(), running.parsed()) {
            (Some(e), Some(r))
                if e.prefix() == r.prefix()
                    && e.baseline == r.baseline
                    && e.release == r.release
                    && e.suffix == r.suffix =>
            {
                checks.push(format!("runs {}", running.text))
            }
            (Some(_), Some(_)) => failures.push(Failure::RevisionMismatch {
                expected: expected.clone(),
                running: running.text.clone(),
            }),
            // A revision we cannot parse on either side is not judged.
            _ => {}
        }
    }
    if failures.is_empty() {
        Verdict::Verified { checks }
    } else {
        not_verified(expect, failures)
    }
}

fn not_verified(expect: &Expectation, failures: Vec<Failure>) -> Verdict {
    let mut next: Vec<String> = Vec::new();
    for f in &failures {
        let n = f.next(expect.backup.as_deref());
        if !next.contains(&n) {
            next.push(n);
        }
    }
    Verdict::NotVerified { failures, next }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::at::info::{Cfun, FirmwareRevision, Imei};

    fn identity(imei: &str, cfun: u8, rev: &str) -> Return {
        Return::Normal(Box::new(NormalIdentity {
            imei: Some(Imei {
                digits: imei.to_string(),
                luhn_ok: crate::sim::normal::unit::is_valid_imei(imei),
            }),
            cfun: Some(Cfun::new(cfun)),
            revision: Some(FirmwareRevision {
                text: rev.to_string(),
            }),
            ..NormalIdentity::default()
        }))
    }

    const IMEI: &str = "867962041234561";
    const REV: &str = "EC25EFAR06A08M4G_01.001.01.001";

    fn expect() -> Expectation {
        Expectation {
            imei: Some(IMEI.to_string()),
            revision: Some("EC25EFAR06A08M4G".to_string()),
            calibrated_before: Some(true),
            backup: Some("/b/1".to_string()),
        }
    }

    #[test]
    fn same_unit_full_function_and_the_packages_revision_is_verified() {
        let v = judge(&expect(), &identity(IMEI, 1, REV));
        assert!(v.is_verified(), "{v:?}");
        assert!(v.headline().contains("same IMEI 867962041234561"));
    }

    #[test]
    fn each_lost_property_is_named_with_its_advice() {
        let v = judge(
            &expect(),
            &identity("867962041234576", 5, "EC25EFAR06A07M4G_01.001.01.001"),
        );
        let Verdict::NotVerified { failures, next } = &v else {
            panic!("{v:?}")
        };
        assert!(matches!(failures[0], Failure::ImeiChanged { .. }));
        assert_eq!(failures[1], Failure::CalibrationLost);
        assert!(matches!(failures[2], Failure::RevisionMismatch { .. }));
        assert!(next[0].contains("qrescue restore /b/1"), "{next:?}");
        assert!(v
            .headline()
            .starts_with("flashed, NOT verified: the IMEI changed"));
        let v = judge(&expect(), &identity(IMEI, 7, REV));
        assert!(v.headline().contains("+CFUN: 7"), "{}", v.headline());
    }

    #[test]
    fn no_return_says_where_the_modem_is() {
        let v = judge(
            &Expectation::default(),
            &Return::NoReturn {
                waited_ms: 90_000,
                last_mode: Some("crash dump 900e".to_string()),
            },
        );
        assert!(v
            .headline()
            .contains("within 90 s (last seen: crash dump 900e)"));
        let Verdict::NotVerified { next, .. } = v else {
            panic!()
        };
        assert!(next[0].contains("ramdump"));
    }

    #[test]
    fn without_a_recorded_imei_a_valid_one_passes_and_a_damaged_one_does_not() {
        let e = Expectation::default();
        assert!(judge(&e, &identity(IMEI, 1, REV)).is_verified());
        assert!(!judge(&e, &identity("867962041234562", 1, REV)).is_verified());
        let unread = Return::Normal(Box::new(NormalIdentity {
            cfun: Some(Cfun::new(1)),
            ..NormalIdentity::default()
        }));
        assert!(!judge(&e, &unread).is_verified());
    }
}
