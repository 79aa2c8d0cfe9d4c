//! The guided workflows as pure state machines that the console and the CLI both drive:
//! what to do next given what has been seen. No I/O here: the drivers run the actions
//! (identify, back up, switch to EDL, flash, wait) and feed the results back.
//!
//! - [`verdict`]: what a flash proved — "flashed and verified", "flashed, NOT verified" (and
//!   what failed) or "failed" — from what the modem said about itself before and after.
//! - [`update`]: a working modem in normal mode: identify over AT → check the package against
//!   its revision → (confirm) → switch to EDL over DIAG → identify over Sahara → check again
//!   with the unit's serial (the guard's definitive answer) → upload the programmer → back up
//!   its own data → flash → reset → wait for normal mode → identify again → verdict.
//! - [`unbrick`]: a modem in EDL (9008): identify over Sahara → check the package → upload →
//!   back up what is still readable → flash → reset → wait → verify.
//! - [`crash`]: a modem in crash-dump mode (900e): offer the RAM dump → (its reset) → switch to
//!   EDL over DIAG when it shows its DM port → otherwise pin-bridging guidance → unbrick.
//! - [`restore`]: a chosen backup back onto the same unit only: confirm → EDL → identify →
//!   write → verify.
//!
//! # The shape
//!
//! A machine ([`Machine`]) is fed [`Observation`]s — the unit seen in a mode, a wait that ran
//! out, the result of the last action — and answers the next [`Action`]. The first observation
//! is the unit as it was found ([`Observation::Seen`]). Terminal actions are [`Action::Done`]
//! (a flash happened: the verdict) and [`Action::Stop`] (why not, and what to do); after one, a
//! machine keeps answering it. Refusals come before anything changes the device: a package that
//! does not fit is refused before the switch to EDL. Time comes only in observations
//! ([`Observation::WaitExpired`]); each machine reaches a terminal action within
//! [`MAX_STEPS`] observations whatever it is fed.

pub mod crash;
pub mod restore;
pub mod unbrick;
pub mod update;
pub mod verdict;

use serde::{Deserialize, Serialize};

use crate::engine::at::NormalIdentity;

pub use verdict::{Expectation, Return, Verdict};

/// Most observations any machine takes before it answers a terminal action.
pub const MAX_STEPS: usize = 64;

/// The modem's mode as a workflow cares about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Quectel normal mode (AT/DM ports).
    Normal,
    /// Emergency download mode, 05c6:9008 (Sahara).
    Edl,
    /// Crash-dump mode, 05c6:900e (Sahara memory debug).
    CrashDump,
}

impl Mode {
    /// For people; also what [`Return::NoReturn`] names as the last mode seen.
    pub fn words(self) -> &'static str {
        match self {
            Mode::Normal => "normal mode",
            Mode::Edl => "EDL 9008",
            Mode::CrashDump => "crash dump 900e",
        }
    }
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "for", content = "mode", rename_all = "snake_case")]
pub enum Want {
    /// The unit in this mode.
    Mode(Mode),
    /// The unit's next appearance, in whatever mode.
    Any,
}

/// How to ask the modem who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Its AT port in normal mode (revision, IMEI, ICCID, `+CFUN`).
    At,
    /// Its boot ROM over Sahara command mode (serial, HW ID, PK hash).
    Sahara,
}

/// What the person is asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "question", rename_all = "snake_case")]
pub enum Question {
    /// Go ahead with the flash the package check allowed?
    ConfirmFlash {
        package: Option<String>,
        steps: usize,
    },
    /// Save the crashed modem's RAM dump (for its diagnosis) before resetting it?
    TakeRamDump,
    /// The software switch cannot reach the modem: bridge its USB_BOOT test point to 1.8 V and
    /// power-cycle it. Answer yes once done (the wait for 9008 follows).
    BridgePins { why: String },
    /// Write backup `backup` back to unit `unit`?
    ConfirmRestore { backup: String, unit: String },
}

impl Question {
    /// The question for people.
    pub fn text(&self) -> String {
        match self {
            Question::ConfirmFlash { package, steps } => format!(
                "Flash {} ({steps} steps) onto this modem?",
                package.as_deref().unwrap_or("the package")
            ),
            Question::TakeRamDump => "Save the crashed modem's RAM dump before it is reset? It is what a developer needs to find the cause of the crash.".to_string(),
            Question::BridgePins { why } => format!(
                "{why} Bridge the modem's USB_BOOT test point to 1.8 V (or hold its boot key), power-cycle it, and release the bridge once 05c6:9008 shows."
            ),
            Question::ConfirmRestore { backup, unit } => {
                format!("Write backup {backup} back to unit {unit}?")
            }
        }
    }
}

/// What the driver is to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Ask the modem who it is.
    Identify { over: Channel },
    /// Check the package (integrity, plan, revision against `modem_revision`, the guard for
    /// `unit`; with `imei`, a unit whose serial is not known yet is looked up in the backups by
    /// its IMEI).
    CheckPackage {
        unit: Option<String>,
        modem_revision: Option<String>,
        imei: Option<String>,
    },
    /// Back up the device-unique partitions (needs the programmer running).
    Backup,
    /// Switch the modem from normal mode to EDL over DIAG (`4B 65 01 00`).
    SwitchToEdl,
    /// Upload the package's programmer (or attach to a running one).
    Upload,
    /// Run the plan (the programmer is running).
    Flash,
    /// Reset the modem out of the programmer.
    Reset,
    /// Wait for the same unit (by identity, never by port path), at most `within_ms`.
    WaitFor { want: Want, within_ms: u64 },
    /// Ask the modem who it is again after the flash (AT), for the verdict.
    Verify,
    /// Save the crash-dump modem's RAM (its reset follows the dump).
    RamDump,
    /// Write this backup back (the programmer is running; the unit is checked first).
    Restore { backup: String },
    /// Ask the person; the answer comes as [`Observation::Answered`].
    AskPerson { question: Question },
    /// Terminal: a flash (or restore) was written; the verdict says what it proved.
    Done { verdict: Verdict },
    /// Terminal: stopped, with why and what next.
    Stop { stop: Stop },
}

impl Action {
    /// Terminal actions end the workflow.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Action::Done { .. } | Action::Stop { .. })
    }

    /// A short name (`switch_to_edl`), for events and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Identify { .. } => "identify",
            Action::CheckPackage { .. } => "check_package",
            Action::Backup => "backup",
            Action::SwitchToEdl => "switch_to_edl",
            Action::Upload => "upload",
            Action::Flash => "flash",
            Action::Reset => "reset",
            Action::WaitFor { .. } => "wait",
            Action::Verify => "verify",
            Action::RamDump => "ramdump",
            Action::Restore { .. } => "restore",
            Action::AskPerson { .. } => "ask",
            Action::Done { .. } => "done",
            Action::Stop { .. } => "stop",
        }
    }

    /// What this step does, for people.
    pub fn what(&self) -> String {
        match self {
            Action::Identify { over: Channel::At } => {
                "Ask the modem who it is over its AT port".into()
            }
            Action::Identify {
                over: Channel::Sahara,
            } => "Ask the boot ROM who the modem is (Sahara command mode)".into(),
            Action::CheckPackage { .. } => "Check the firmware package".into(),
            Action::Backup => "Back up the modem's own data (calibration, IMEI, NV)".into(),
            Action::SwitchToEdl => "Switch the modem to download mode (EDL) over DIAG".into(),
            Action::Upload => "Start the programmer".into(),
            Action::Flash => "Flash the package".into(),
            Action::Reset => "Restart the modem".into(),
            Action::WaitFor {
                want: Want::Mode(m),
                within_ms,
            } => format!(
                "Wait for the modem in {} (at most {} s)",
                m.words(),
                within_ms / 1000
            ),
            Action::WaitFor {
                want: Want::Any,
                within_ms,
            } => format!(
                "Wait for the modem to come back (at most {} s)",
                within_ms / 1000
            ),
            Action::Verify => "Check that it is back, the same unit, at full function".into(),
            Action::RamDump => "Save the RAM dump".into(),
            Action::Restore { backup } => format!("Write backup {backup} back"),
            Action::AskPerson { question } => question.text(),
            Action::Done { verdict } => verdict.headline(),
            Action::Stop { stop } => stop.what.clone(),
        }
    }

    /// Why this step is there, for people.
    pub fn why(&self) -> &'static str {
        match self {
            Action::Identify { over: Channel::At } => "Before touching anything: its firmware revision decides which package fits, its IMEI and +CFUN are what must survive the flash.",
            Action::Identify { over: Channel::Sahara } => "Its serial number ties backups to this very unit; nothing is uploaded or written.",
            Action::CheckPackage { .. } => "Checksums, the plan, the package's revision against the modem's, and whether it would overwrite data unique to this modem without a verified backup — all before anything changes on the device.",
            Action::Backup => "RF calibration and IMEI exist only on this module; a verified copy makes any loss repairable.",
            Action::SwitchToEdl => "Firmware is written in download mode; the DIAG command gets there without opening the case. The modem leaves the bus and comes back as 05c6:9008.",
            Action::Upload => "The package's programmer (Firehose) is what reads and writes the flash.",
            Action::Flash => "Each partition of the plan is erased and written; the modem's own data is left alone.",
            Action::Reset => "Only a modem that boots its new firmware counts as rescued.",
            Action::WaitFor { .. } => "The modem re-enumerates; qrescue follows the same unit by its identity, not by its port.",
            Action::Verify => "\"Written\" is not \"working\": the verdict comes from the modem itself — same IMEI, +CFUN: 1, the package's revision.",
            Action::RamDump => "The crash left its memory readable; the dump is what a developer needs to find the cause. The boot ROM resets the modem after it.",
            Action::Restore { .. } => "The backup goes back only onto the unit it was taken from, and every region is read back.",
            Action::AskPerson { .. } => "This needs your decision or your hands.",
            Action::Done { .. } => "The verdict comes from what the modem said about itself after the flash.",
            Action::Stop { .. } => "The workflow cannot go on safely.",
        }
    }
}

/// Why a workflow stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopKind {
    /// The package (or backup) does not fit; refused.
    Refused,
    /// The person said no.
    Declined,
    /// An action failed.
    Failed,
    /// The modem did not come (back) when expected.
    Lost,
    /// The modem is in a mode this workflow does not handle, or something out of order
    /// happened.
    Unexpected,
}

/// A stop: what happened, why it matters, what to do next, and whether the device was changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub kind: StopKind,
    pub what: String,
    pub why: String,
    pub next: String,
    /// Something was done to the modem before the stop (switched to EDL, written).
    pub device_changed: bool,
}

impl Stop {
    pub fn new(
        kind: StopKind,
        what: impl Into<String>,
        why: impl Into<String>,
        next: impl Into<String>,
        device_changed: bool,
    ) -> Stop {
        Stop {
            kind,
            what: what.into(),
            why: why.into(),
            next: next.into(),
            device_changed,
        }
    }
}

/// What/why/next of a failure or refusal reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    pub what: String,
    pub why: String,
    pub next: String,
}

/// The package check's answer, as far as a workflow needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PackageCheck {
    pub flashable: bool,
    /// Why not, when not.
    pub reasons: Vec<Said>,
    /// The package's revision, when known.
    pub revision: Option<String>,
    /// Steps of the plan.
    pub steps: usize,
    /// The unit the check matched backups to (the serial, or the one an IMEI led to).
    pub unit: Option<String>,
    /// Verified backups of that unit on file.
    pub backups_on_file: usize,
    /// The newest of them.
    pub backup: Option<String>,
    /// The IMEI recorded in that backup's identity.
    pub imei_on_file: Option<String>,
}

/// What the driver saw or did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "observed", rename_all = "snake_case")]
pub enum Observation {
    /// The unit is there in `mode` (as found at the start, or after a wait); `dm_port`: a
    /// normal-mode unit shows its DIAG port.
    Seen {
        mode: Mode,
        dm_port: bool,
    },
    /// A wait ran out; the last mode the unit was seen in during it, if any.
    WaitExpired {
        waited_ms: u64,
        last_mode: Option<Mode>,
    },
    /// The AT identity (for [`Action::Identify`] over AT and for [`Action::Verify`]).
    NormalIdentity {
        identity: Box<NormalIdentity>,
    },
    /// The boot ROM's answer: the unit key (Sahara serial), `None` when it did not tell.
    EdlIdentity {
        unit: Option<String>,
    },
    PackageChecked {
        check: PackageCheck,
    },
    /// A backup was made and verified.
    BackedUp {
        backup: String,
    },
    /// The modem took the switch to EDL (echoed, or dropped its link at once).
    Switched,
    /// The programmer is running.
    Uploaded,
    /// The plan was written.
    Flashed {
        steps: usize,
        bytes: u64,
    },
    /// The reset was sent.
    ResetSent,
    /// The RAM dump was saved.
    Dumped {
        dir: String,
        bytes: u64,
    },
    /// The backup was written back and read back.
    Restored {
        regions: usize,
        bytes: u64,
    },
    /// The person's answer.
    Answered {
        yes: bool,
    },
    /// The last action failed.
    Failed {
        action: String,
        said: Said,
    },
}

/// A workflow state machine.
pub trait Machine {
    /// `update`, `unbrick`, `crash`, `restore`.
    fn name(&self) -> &'static str;
    /// The next action after `obs`.
    fn step(&mut self, obs: Observation) -> Action;
}

/// How the modem came back after a flash, when `obs` ends the wait for normal mode (`waiting`:
/// the wait ran out) or the verify (`verifying`: its AT identity, or the AT failure). `None`
/// for any other observation. Update, unbrick and restore end the same way on it: the verdict
/// of [`verdict::judge`].
pub(crate) fn flash_return(
    waiting: bool,
    verifying: bool,
    obs: &Observation,
) -> Option<verdict::Return> {
    match obs {
        Observation::WaitExpired {
            waited_ms,
            last_mode,
        } if waiting => Some(verdict::Return::NoReturn {
            waited_ms: *waited_ms,
            last_mode: last_mode.map(|m| m.words().to_string()),
        }),
        Observation::NormalIdentity { identity } if verifying => {
            Some(verdict::Return::Normal(identity.clone()))
        }
        Observation::Failed { said, .. } if verifying => Some(verdict::Return::Unidentified {
            why: format!("{}: {}", said.what, said.why),
        }),
        _ => None,
    }
}

/// The stop for an observation a state does not expect.
pub(crate) fn unexpected(workflow: &str, state: &str, obs: &Observation, changed: bool) -> Stop {
    let seen = match obs {
        Observation::Seen { mode, .. } => format!("the modem in {}", mode.words()),
        Observation::Failed { action, said } => format!("{action} failed: {}", said.what),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| {
                v.get("observed")
                    .and_then(|o| o.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| "something else".into()),
    };
    Stop::new(
        StopKind::Unexpected,
        format!("The {workflow} workflow stopped: {seen} while {state}"),
        "qrescue only goes on when each step ends as expected",
        if changed {
            "Look at the modem with `qrescue watch`; power-cycle it and run the workflow again"
        } else {
            "Nothing was changed on the modem; run the workflow again"
        },
        changed,
    )
}

/// A failed action as a stop.
pub(crate) fn failed(said: &Said, changed: bool) -> Stop {
    Stop::new(
        StopKind::Failed,
        said.what.clone(),
        said.why.clone(),
        said.next.clone(),
        changed,
    )
}

/// A refusal of the package check as a stop.
pub(crate) fn refused(check: &PackageCheck, changed: bool, after: &str) -> Stop {
    let what = match check.reasons.as_slice() {
        [] => "The package cannot be flashed".to_string(),
        [one] => one.what.clone(),
        many => format!(
            "The package is refused ({} reasons): {}",
            many.len(),
            many.iter()
                .map(|r| r.what.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let why = check
        .reasons
        .iter()
        .map(|r| r.why.trim_end_matches('.'))
        .collect::<Vec<_>>()
        .join(". ");
    let mut parts: Vec<&str> = Vec::new();
    for r in check.reasons.iter().map(|r| r.next.as_str()).chain([after]) {
        let r = r.trim();
        if !r.is_empty() && !parts.contains(&r) {
            parts.push(r);
        }
    }
    // Each piece is a sentence of its own, whether or not it ends with a full stop.
    let next = parts
        .iter()
        .map(|p| {
            if p.ends_with(['.', '!', '?']) {
                p.to_string()
            } else {
                format!("{p}.")
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    Stop::new(StopKind::Refused, what, why, next, changed)
}

#[cfg(test)]
pub(crate) mod testing;
