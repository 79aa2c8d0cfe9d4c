//! Unbrick a modem in EDL (05c6:9008): identify over Sahara → check the package for this unit
//! → confirm → upload the programmer → back up what is still readable (when no verified backup
//! of this unit is on file; a failed backup does not stop the rescue, the guard already decided
//! whether the plan needs one) → flash → reset → wait for normal mode → verify.
//!
//! Its revision cannot be read in EDL, so the package's revision is not compared with the
//! modem's (the check says so); the IMEI to compare with afterwards comes from this unit's
//! newest backup when one is on file.

use super::verdict::{judge, Expectation};
use super::{
    failed, flash_return, refused, unexpected, Action, Channel, Machine, Mode, Observation,
    PackageCheck, Question, Stop, StopKind, Want, MAX_STEPS,
};

/// How long the unbrick waits for the modem to come back after its reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnbrickTiming {
    pub normal_within_ms: u64,
}

impl Default for UnbrickTiming {
    fn default() -> Self {
        UnbrickTiming {
            normal_within_ms: 120_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Identifying,
    Checking,
    Confirming,
    Uploading,
    BackingUp,
    Flashing,
    Resetting,
    WaitingNormal,
    Verifying,
    End,
}

/// The unbrick workflow ([module notes](self)).
#[derive(Debug, Clone)]
pub struct Unbrick {
    timing: UnbrickTiming,
    state: State,
    steps: usize,
    unit: Option<String>,
    check: Option<PackageCheck>,
    backup: Option<String>,
    end: Option<Action>,
}

const NAME: &str = "unbrick";

impl Unbrick {
    pub fn new(timing: UnbrickTiming) -> Unbrick {
        Unbrick {
            timing,
            state: State::Start,
            steps: 0,
            unit: None,
            check: None,
            backup: None,
            end: None,
        }
    }

    /// What the verdict compares with.
    pub fn expectation(&self) -> Expectation {
        let c = self.check.as_ref();
        Expectation {
            imei: c.and_then(|c| c.imei_on_file.clone()),
            revision: c.and_then(|c| c.revision.clone()),
            calibrated_before: None,
            backup: self
                .backup
                .clone()
                .or_else(|| c.and_then(|c| c.backup.clone())),
        }
    }

    fn changed(&self) -> bool {
        !matches!(
            self.state,
            State::Start | State::Identifying | State::Checking | State::Confirming
        )
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
}

impl Machine for Unbrick {
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
                    mode: Mode::Edl, ..
                },
            ) => self.go(
                State::Identifying,
                Action::Identify {
                    over: Channel::Sahara,
                },
            ),
            (State::Start, Observation::Seen { mode, .. }) => self.stop(Stop::new(
                StopKind::Unexpected,
                format!(
                    "The modem is in {}, not in download mode (9008)",
                    mode.words()
                ),
                "the unbrick workflow flashes a modem whose boot ROM waits in EDL",
                "`qrescue update PACKAGE` picks the workflow that fits the modem's mode",
                false,
            )),
            (State::Identifying, Observation::EdlIdentity { unit }) => {
                self.unit = unit.clone();
                self.go(
                    State::Checking,
                    Action::CheckPackage {
                        unit,
                        modem_revision: None,
                        imei: None,
                    },
                )
            }
            (State::Checking, Observation::PackageChecked { check }) => {
                let question = Question::ConfirmFlash {
                    package: check.revision.clone(),
                    steps: check.steps,
                };
                let ok = check.flashable;
                self.check = Some(check);
                if !ok {
                    let s = refused(
                        self.check.as_ref().expect("just set"),
                        false,
                        "Nothing was sent to the modem.",
                    );
                    return self.stop(s);
                }
                self.go(State::Confirming, Action::AskPerson { question })
            }
            (State::Confirming, Observation::Answered { yes: true }) => {
                self.go(State::Uploading, Action::Upload)
            }
            (State::Confirming, Observation::Answered { yes: false }) => self.stop(Stop::new(
                StopKind::Declined,
                "Not confirmed: nothing was written to the modem",
                "the flash needs your go-ahead",
                "Run it again and confirm (or add --yes)",
                false,
            )),
            (State::Uploading, Observation::Uploaded) => {
                let on_file = self.check.as_ref().is_some_and(|c| c.backups_on_file > 0);
                if self.unit.is_some() && !on_file {
                    self.go(State::BackingUp, Action::Backup)
                } else {
                    self.go(State::Flashing, Action::Flash)
                }
            }
            (State::BackingUp, Observation::BackedUp { backup }) => {
                self.backup = Some(backup);
                self.go(State::Flashing, Action::Flash)
            }
            // What could not be read is gone already; the guard decided whether the plan
            // needed a backup before anything was sent.
            (State::BackingUp, Observation::Failed { .. }) => {
                self.go(State::Flashing, Action::Flash)
            }
            (State::Flashing, Observation::Flashed { .. }) => {
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
        State::Identifying => "identifying it over Sahara",
        State::Checking => "checking the package",
        State::Confirming => "waiting for the confirmation",
        State::Uploading => "starting the programmer",
        State::BackingUp => "backing it up",
        State::Flashing => "flashing",
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

    fn start() -> Unbrick {
        Unbrick::new(UnbrickTiming::default())
    }

    #[test]
    fn an_unbrick_identifies_checks_backs_up_flashes_and_verifies() {
        let mut m = start();
        assert_eq!(
            m.step(seen_in(Mode::Edl)),
            Action::Identify {
                over: Channel::Sahara
            }
        );
        assert_eq!(
            m.step(Observation::EdlIdentity {
                unit: Some(UNIT.into())
            }),
            Action::CheckPackage {
                unit: Some(UNIT.into()),
                modem_revision: None,
                imei: None
            }
        );
        assert!(matches!(
            m.step(checked(true, 0)),
            Action::AskPerson {
                question: Question::ConfirmFlash { .. }
            }
        ));
        assert_eq!(m.step(Observation::Answered { yes: true }), Action::Upload);
        assert_eq!(m.step(Observation::Uploaded), Action::Backup);
        // A backup that fails (unreadable partitions) does not stop the rescue.
        assert_eq!(m.step(failure("backup")), Action::Flash);
        assert_eq!(
            m.step(Observation::Flashed { steps: 3, bytes: 9 }),
            Action::Reset
        );
        assert!(matches!(
            m.step(Observation::ResetSent),
            Action::WaitFor {
                want: Want::Mode(Mode::Normal),
                ..
            }
        ));
        assert_eq!(m.step(seen_in(Mode::Normal)), Action::Verify);
        let Action::Done { verdict } = m.step(identity(IMEI, 1, REV_NEW)) else {
            panic!()
        };
        // No IMEI on record: a valid one passes.
        assert!(verdict.is_verified(), "{verdict:?}");
    }

    #[test]
    fn the_imei_on_file_is_what_the_verdict_compares_with() {
        let mut m = start();
        for o in [
            seen_in(Mode::Edl),
            Observation::EdlIdentity {
                unit: Some(UNIT.into()),
            },
            checked(true, 1),
            Observation::Answered { yes: true },
        ] {
            m.step(o);
        }
        assert_eq!(m.step(Observation::Uploaded), Action::Flash);
        m.step(Observation::Flashed { steps: 1, bytes: 1 });
        m.step(Observation::ResetSent);
        m.step(seen_in(Mode::Normal));
        let Action::Done { verdict } = m.step(identity("867962041234579", 1, REV_NEW)) else {
            panic!()
        };
        assert!(
            verdict.headline().contains("IMEI changed"),
            "{}",
            verdict.headline()
        );
    }

    #[test]
    fn a_refusal_or_a_wrong_mode_stops_before_anything_is_sent() {
        let mut m = start();
        m.step(seen_in(Mode::Edl));
        m.step(Observation::EdlIdentity { unit: None });
        let Action::Stop { stop } = m.step(refused_check("blocked by the guard")) else {
            panic!()
        };
        assert_eq!((stop.kind, stop.device_changed), (StopKind::Refused, false));
        let mut m = start();
        assert!(matches!(m.step(seen_in(Mode::Normal)), Action::Stop { .. }));
    }

    #[test]
    fn without_a_serial_no_backup_is_attempted() {
        let mut m = start();
        m.step(seen_in(Mode::Edl));
        m.step(Observation::EdlIdentity { unit: None });
        m.step(checked(true, 0));
        m.step(Observation::Answered { yes: true });
        assert_eq!(m.step(Observation::Uploaded), Action::Flash);
        let Action::Stop { stop } = m.step(failure("flash")) else {
            panic!()
        };
        assert!(stop.device_changed);
    }

    proptest::proptest! {
        #[test]
        fn random_observations_never_panic_and_end(obs in observations()) {
            check_terminates(&mut start(), obs);
        }

        #[test]
        fn plausible_answers_always_end(c in choices()) {
            check_plausible_run_ends(&mut start(), seen_in(Mode::Edl), c);
        }
    }
}
