//! Restore a chosen backup onto the unit it was taken from, and only that one.
//!
//! From normal mode: identify over AT (an IMEI that differs from the backup's refuses at once)
//! → confirm → switch to EDL over DIAG → wait for 9008 → identify over Sahara (another serial
//! refuses before anything is written) → upload the programmer → write the backup (the engine
//! checks the unit, the files' sha256 and the layout again, and reads every region back) →
//! reset → wait for normal mode → verify (same IMEI, `+CFUN: 1`).
//!
//! From EDL: identify over Sahara → confirm → upload → write → reset → wait → verify.

use super::verdict::{judge, Expectation};
use super::{
    failed, flash_return, unexpected, Action, Channel, Machine, Mode, Observation, Question, Stop,
    StopKind, Want, MAX_STEPS,
};
use crate::engine::at::NormalIdentity;

/// The backup to restore, as its manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTarget {
    /// The backup's name in the store.
    pub backup: String,
    /// The unit it was taken from (Sahara serial, `0x…`).
    pub unit: String,
    /// The IMEI its identity records, when it does.
    pub imei: Option<String>,
}

/// How long the restore waits for each appearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreTiming {
    pub edl_within_ms: u64,
    pub normal_within_ms: u64,
}

impl Default for RestoreTiming {
    fn default() -> Self {
        RestoreTiming {
            edl_within_ms: 30_000,
            normal_within_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Identifying,
    Confirming,
    Switching,
    WaitingEdl,
    IdentifyingEdl,
    Uploading,
    Restoring,
    Resetting,
    WaitingNormal,
    Verifying,
    End,
}

/// The restore workflow ([module notes](self)).
#[derive(Debug, Clone)]
pub struct Restore {
    target: RestoreTarget,
    timing: RestoreTiming,
    state: State,
    steps: usize,
    /// Started in normal mode (confirm before the switch) or in EDL (confirm after the check).
    from_normal: bool,
    before: Option<NormalIdentity>,
    end: Option<Action>,
}

const NAME: &str = "restore";

impl Restore {
    pub fn new(target: RestoreTarget, timing: RestoreTiming) -> Restore {
        Restore {
            target,
            timing,
            state: State::Start,
            steps: 0,
            from_normal: false,
            before: None,
            end: None,
        }
    }

    /// What the verdict compares with: the backup's IMEI (else the one read before), the
    /// revision it ran before (a restore does not change the firmware).
    pub fn expectation(&self) -> Expectation {
        let before = self.before.as_ref();
        Expectation {
            imei: self
                .target
                .imei
                .clone()
                .or_else(|| before.and_then(|b| b.imei.as_ref().map(|i| i.digits.clone()))),
            revision: before.and_then(|b| b.revision.as_ref().map(|r| r.text.clone())),
            calibrated_before: None,
            backup: Some(self.target.backup.clone()),
        }
    }

    fn changed(&self) -> bool {
        match self.state {
            State::Start | State::Identifying | State::Confirming => false,
            State::IdentifyingEdl => self.from_normal,
            _ => true,
        }
    }

    fn end(&mut self, a: Action) -> Action {
        self.state = State::End;
        self.end = Some(a.clone());
        a
    }

    fn stop(&mut self, s: Stop) -> Action {
        self.end(Action::Stop { stop: s })
    }

    fn go(&mut self, state: State, a: Action) -> Action {
        self.state = state;
        a
    }

    fn confirm(&mut self) -> Action {
        self.go(
            State::Confirming,
            Action::AskPerson {
                question: Question::ConfirmRestore {
                    backup: self.target.backup.clone(),
                    unit: self.target.unit.clone(),
                },
            },
        )
    }

    fn not_this_unit(&self, why: String, changed: bool) -> Stop {
        Stop::new(
            StopKind::Refused,
            format!(
                "Backup {} is not from this modem; nothing was written",
                self.target.backup
            ),
            format!("{why}; calibration and IMEI belong to one unit, and another unit's data would leave this one without signal"),
            if changed {
                "Restore a backup of this very modem (see `qrescue backup list`); the modem waits in download mode: power-cycle it to return to normal mode"
            } else {
                "Restore a backup of this very modem (see `qrescue backup list`)"
            },
            changed,
        )
    }
}

impl Machine for Restore {
    fn name(&self) -> &'static str {
        NAME
    }

    fn step(&mut self, obs: Observation) -> Action {
        if let Some(end) = &self.end {
            return end.clone();
        }
        self.steps += 1;
        if self.steps > MAX_STEPS {
            let s = unexpected(NAME, "taking too many steps", &obs, self.changed());
            return self.stop(s);
        }
        let changed = self.changed();
        if let Some(ret) = flash_return(
            self.state == State::WaitingNormal,
            self.state == State::Verifying,
            &obs,
        ) {
            let verdict = judge(&self.expectation(), &ret);
            return self.end(Action::Done { verdict });
        }
        match (self.state, obs) {
            (
                State::Start,
                Observation::Seen {
                    mode: Mode::Normal, ..
                },
            ) => {
                self.from_normal = true;
                self.go(
                    State::Identifying,
                    Action::Identify { over: Channel::At },
                )
            }
            (State::Start, Observation::Seen { mode: Mode::Edl, .. }) => self.go(
                State::IdentifyingEdl,
                Action::Identify {
                    over: Channel::Sahara,
                },
            ),
            (State::Start, Observation::Seen { mode, .. }) => self.stop(Stop::new(
                StopKind::Unexpected,
                format!("The modem is in {}", mode.words()),
                "a backup is written back in download mode, reached from normal mode or EDL",
                "Run the crash workflow first (`qrescue update PACKAGE`), then restore",
                false,
            )),
            (State::Identifying, Observation::NormalIdentity { identity }) => {
                let now = identity.imei.as_ref().map(|i| i.digits.clone());
                if let (Some(b), Some(n)) = (&self.target.imei, &now) {
                    if b != n {
                        let why = format!("the backup records IMEI {b}, the modem reports {n}");
                        return self.stop(self.not_this_unit(why, false));
                    }
                }
                self.before = Some(*identity);
                self.confirm()
            }
            (State::Confirming, Observation::Answered { yes: true }) => {
                if self.from_normal {
                    self.go(State::Switching, Action::SwitchToEdl)
                } else {
                    self.go(State::Uploading, Action::Upload)
                }
            }
            (State::Confirming, Observation::Answered { yes: false }) => self.stop(Stop::new(
                StopKind::Declined,
                "Not confirmed: nothing was written",
                "a restore overwrites the modem's own data and needs your go-ahead",
                "Run the restore again and confirm",
                self.changed(),
            )),
            (State::Switching, Observation::Switched) => self.go(
                State::WaitingEdl,
                Action::WaitFor {
                    want: Want::Mode(Mode::Edl),
                    within_ms: self.timing.edl_within_ms,
                },
            ),
            (State::WaitingEdl, Observation::Seen { mode: Mode::Edl, .. }) => self.go(
                State::IdentifyingEdl,
                Action::Identify {
                    over: Channel::Sahara,
                },
            ),
            (State::WaitingEdl, Observation::WaitExpired { waited_ms, .. }) => {
                self.stop(Stop::new(
                    StopKind::Lost,
                    format!(
                        "The modem did not appear in download mode (9008) within {} s",
                        waited_ms / 1000
                    ),
                    "the backup is written in download mode",
                    "Use the test-point method (USB_BOOT to 1.8 V, power-cycle), then run the restore again",
                    true,
                ))
            }
            (State::IdentifyingEdl, Observation::EdlIdentity { unit }) => match unit {
                Some(u) if u == self.target.unit => {
                    if self.from_normal {
                        self.go(State::Uploading, Action::Upload)
                    } else {
                        self.confirm()
                    }
                }
                Some(u) => {
                    let why = format!(
                        "the backup is of unit {}, the modem connected is unit {u}",
                        self.target.unit
                    );
                    let s = self.not_this_unit(why, self.from_normal);
                    self.stop(s)
                }
                None => {
                    let s = self.not_this_unit(
                        "the modem did not tell its serial number over Sahara".into(),
                        self.from_normal,
                    );
                    self.stop(s)
                }
            },
            (State::Uploading, Observation::Uploaded) => self.go(
                State::Restoring,
                Action::Restore {
                    backup: self.target.backup.clone(),
                },
            ),
            (State::Restoring, Observation::Restored { .. }) => {
                self.go(State::Resetting, Action::Reset)
            }
            (State::Resetting, Observation::ResetSent) => self.go(
                State::WaitingNormal,
                Action::WaitFor {
                    want: Want::Mode(Mode::Normal),
                    within_ms: self.timing.normal_within_ms,
                },
            ),
            (
                State::WaitingNormal,
                Observation::Seen {
                    mode: Mode::Normal, ..
                },
            ) => self.go(State::Verifying, Action::Verify),
            (_, Observation::Failed { said, .. }) => self.stop(failed(&said, changed)),
            (state, obs) => {
                let s = unexpected(NAME, state_words(state), &obs, changed);
                self.stop(s)
            }
        }
    }
}

fn state_words(s: State) -> &'static str {
    match s {
        State::Start => "starting",
        State::Identifying => "identifying it over AT",
        State::Confirming => "waiting for the confirmation",
        State::Switching => "switching it to download mode",
        State::WaitingEdl => "waiting for 9008",
        State::IdentifyingEdl => "identifying it over Sahara",
        State::Uploading => "starting the programmer",
        State::Restoring => "writing the backup",
        State::Resetting => "restarting it",
        State::WaitingNormal => "waiting for normal mode",
        State::Verifying => "verifying",
        State::End => "finished",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::testing::*;

    fn target() -> RestoreTarget {
        RestoreTarget {
            backup: "b1".into(),
            unit: UNIT.into(),
            imei: Some(IMEI.into()),
        }
    }

    fn start() -> Restore {
        Restore::new(target(), RestoreTiming::default())
    }

    #[test]
    fn from_normal_mode_it_confirms_before_the_switch_and_ends_with_a_verdict() {
        let mut m = start();
        assert_eq!(
            m.step(seen_in(Mode::Normal)),
            Action::Identify { over: Channel::At }
        );
        assert!(matches!(
            m.step(identity(IMEI, 5, REV_NEW)),
            Action::AskPerson {
                question: Question::ConfirmRestore { .. }
            }
        ));
        assert_eq!(
            m.step(Observation::Answered { yes: true }),
            Action::SwitchToEdl
        );
        m.step(Observation::Switched);
        m.step(seen_in(Mode::Edl));
        assert_eq!(
            m.step(Observation::EdlIdentity {
                unit: Some(UNIT.into())
            }),
            Action::Upload
        );
        assert_eq!(
            m.step(Observation::Uploaded),
            Action::Restore {
                backup: "b1".into()
            }
        );
        assert_eq!(
            m.step(Observation::Restored {
                regions: 2,
                bytes: 9
            }),
            Action::Reset
        );
        m.step(Observation::ResetSent);
        assert_eq!(m.step(seen_in(Mode::Normal)), Action::Verify);
        let Action::Done { verdict } = m.step(identity(IMEI, 1, REV_NEW)) else {
            panic!()
        };
        assert!(verdict.is_verified(), "{verdict:?}");
    }

    #[test]
    fn another_unit_is_refused_by_imei_or_by_serial() {
        let mut m = start();
        m.step(seen_in(Mode::Normal));
        let Action::Stop { stop } = m.step(identity("867962041234579", 1, REV_NEW)) else {
            panic!()
        };
        assert_eq!((stop.kind, stop.device_changed), (StopKind::Refused, false));

        let mut m = start();
        m.step(seen_in(Mode::Edl));
        let Action::Stop { stop } = m.step(Observation::EdlIdentity {
            unit: Some("0x00000001".into()),
        }) else {
            panic!()
        };
        assert_eq!((stop.kind, stop.device_changed), (StopKind::Refused, false));
        assert!(stop.why.contains("unit 0x00000001"));
    }

    #[test]
    fn from_edl_it_confirms_after_the_identity_check() {
        let mut m = start();
        m.step(seen_in(Mode::Edl));
        assert!(matches!(
            m.step(Observation::EdlIdentity {
                unit: Some(UNIT.into())
            }),
            Action::AskPerson { .. }
        ));
        assert_eq!(m.step(Observation::Answered { yes: true }), Action::Upload);
    }

    proptest::proptest! {
        #[test]
        fn random_observations_never_panic_and_end(obs in observations()) {
            check_terminates(&mut start(), obs);
        }

        #[test]
        fn plausible_answers_always_end(c in choices()) {
            check_plausible_run_ends(&mut start(), seen_in(Mode::Normal), c);
        }
    }
}
