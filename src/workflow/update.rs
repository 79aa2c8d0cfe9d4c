//! Update a working modem (normal mode) without losing what cannot come back.
//!
//! identify over AT → check the package against the revision read → confirm → switch to EDL
//! over DIAG → wait for 9008 → identify over Sahara → check again with the unit's serial (the
//! guard's definitive answer) → upload the programmer → back up the device-unique partitions
//! (when no verified backup of this unit is on file) → flash → reset → wait for normal mode →
//! identify again → verdict ([`super::verdict::judge`]).
//!
//! The backup is taken over Firehose once the programmer runs: that is the backup the guard
//! accepts (region by region). A package that would destroy device-unique data (a `_factory`
//! set) therefore passes only with a verified backup of this unit already on file — found
//! before the switch by the IMEI the modem reports (the backups record it) — and is refused
//! before the modem is touched otherwise.

use super::verdict::{judge, Expectation};
use super::{
    failed, flash_return, refused, unexpected, Action, Channel, Machine, Mode, Observation,
    PackageCheck, Question, Stop, StopKind, Want, MAX_STEPS,
};
use crate::engine::at::NormalIdentity;

/// How long the update waits for each appearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateTiming {
    /// From the DIAG switch to 05c6:9008 (real modems: 2–10 s).
    pub edl_within_ms: u64,
    /// From the reset to normal mode (real modems boot in 20–60 s).
    pub normal_within_ms: u64,
}

impl Default for UpdateTiming {
    fn default() -> Self {
        UpdateTiming {
            edl_within_ms: 30_000,
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
    Switching,
    WaitingEdl,
    IdentifyingEdl,
    Rechecking,
    Uploading,
    BackingUp,
    Flashing,
    Resetting,
    WaitingNormal,
    Verifying,
    End,
}

/// The update workflow ([module notes](self)).
#[derive(Debug, Clone)]
pub struct Update {
    timing: UpdateTiming,
    state: State,
    steps: usize,
    before: Option<NormalIdentity>,
    unit: Option<String>,
    check: Option<PackageCheck>,
    backup: Option<String>,
    end: Option<Action>,
}

impl Update {
    pub fn new(timing: UpdateTiming) -> Update {
        Update {
            timing,
            state: State::Start,
            steps: 0,
            before: None,
            unit: None,
            check: None,
            backup: None,
            end: None,
        }
    }

    /// What the verdict compares with: the IMEI and calibration before, the package's revision,
    /// the backup.
    pub fn expectation(&self) -> Expectation {
        let before = self.before.as_ref();
        Expectation {
            imei: before.and_then(|b| b.imei.as_ref().map(|i| i.digits.clone())),
            revision: self.check.as_ref().and_then(|c| c.revision.clone()),
            calibrated_before: before.and_then(|b| b.cfun.map(|c| c.level == 1)),
            backup: self
                .backup
                .clone()
                .or_else(|| self.check.as_ref().and_then(|c| c.backup.clone())),
        }
    }

    /// The identity read before the flash.
    pub fn before(&self) -> Option<&NormalIdentity> {
        self.before.as_ref()
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

    fn check_action(&self) -> Action {
        let before = self.before.as_ref();
        Action::CheckPackage {
            unit: self.unit.clone(),
            modem_revision: before.and_then(|b| b.revision.as_ref().map(|r| r.text.clone())),
            imei: before.and_then(|b| b.imei.as_ref().map(|i| i.digits.clone())),
        }
    }

    fn need_backup(&self) -> bool {
        self.unit.is_some() && self.check.as_ref().is_none_or(|c| c.backups_on_file == 0)
    }
}

const NAME: &str = "update";

impl Machine for Update {
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
            ) => self.go(
                State::Identifying,
                Action::Identify { over: Channel::At },
            ),
            (State::Start, Observation::Seen { mode, .. }) => self.stop(Stop::new(
                StopKind::Unexpected,
                format!("The modem is in {}, not in normal mode", mode.words()),
                "the update workflow starts from a working modem that answers AT commands",
                match mode {
                    Mode::Edl => "Use the unbrick workflow (`qrescue update PACKAGE` picks it for a modem in 9008)",
                    _ => "Use the crash workflow (`qrescue update PACKAGE` picks it for a modem in 900e)",
                },
                false,
            )),
            (State::Identifying, Observation::NormalIdentity { identity }) => {
                if identity.revision.is_none() {
                    return self.stop(Stop::new(
                        StopKind::Failed,
                        "The modem did not tell its firmware revision (AT+QGMR, AT+CGMR, ATI)",
                        "without it qrescue cannot tell whether the package is for this variant, and a wrong variant leaves the modem at +CFUN: 7",
                        "Run `qrescue info` to see what the AT port answers; close programs holding it (qrescue preflight)",
                        false,
                    ));
                }
                self.before = Some(*identity);
                let a = self.check_action();
                self.go(State::Checking, a)
            }
            (State::Checking, Observation::PackageChecked { check }) => {
                let flashable = check.flashable;
                let question = Question::ConfirmFlash {
                    package: check.revision.clone(),
                    steps: check.steps,
                };
                self.check = Some(check);
                if !flashable {
                    let s = refused(
                        self.check.as_ref().expect("just set"),
                        false,
                        "Nothing was sent to the modem; it stays in normal mode.",
                    );
                    return self.stop(s);
                }
                self.go(State::Confirming, Action::AskPerson { question })
            }
            (State::Confirming, Observation::Answered { yes: true }) => {
                self.go(State::Switching, Action::SwitchToEdl)
            }
            (State::Confirming, Observation::Answered { yes: false }) => self.stop(Stop::new(
                StopKind::Declined,
                "Not confirmed: nothing was changed on the modem",
                "the flash needs your go-ahead",
                "Run the update again and confirm (or add --yes)",
                false,
            )),
            (State::Switching, Observation::Switched) => self.go(
                State::WaitingEdl,
                Action::WaitFor {
                    want: Want::Mode(Mode::Edl),
                    within_ms: self.timing.edl_within_ms,
                },
            ),
            (
                State::WaitingEdl,
                Observation::Seen {
                    mode: Mode::Edl, ..
                },
            ) => self.go(
                State::IdentifyingEdl,
                Action::Identify {
                    over: Channel::Sahara,
                },
            ),
            (State::WaitingEdl, Observation::WaitExpired { waited_ms, last_mode }) => {
                self.stop(Stop::new(
                    StopKind::Lost,
                    format!(
                        "The modem did not appear in download mode (9008) within {} s{}",
                        waited_ms / 1000,
                        last_mode
                            .map(|m| format!(" (last seen in {})", m.words()))
                            .unwrap_or_default()
                    ),
                    "the DIAG switch was sent; some firmware ignores it, and a driver may hold the port",
                    "Run `qrescue watch`; if the modem stays in normal mode, use the test-point method (bridge USB_BOOT to 1.8 V and power-cycle) and run `qrescue update` again",
                    true,
                ))
            }
            (State::IdentifyingEdl, Observation::EdlIdentity { unit }) => {
                self.unit = unit;
                let a = self.check_action();
                self.go(State::Rechecking, a)
            }
            (State::Rechecking, Observation::PackageChecked { check }) => {
                let flashable = check.flashable;
                let revision = self.check.as_ref().and_then(|c| c.revision.clone());
                self.check = Some(PackageCheck {
                    revision: check.revision.clone().or(revision),
                    ..check
                });
                if !flashable {
                    let s = refused(
                        self.check.as_ref().expect("just set"),
                        true,
                        "Nothing was written; the modem waits in download mode: power-cycle it to return to normal mode.",
                    );
                    return self.stop(s);
                }
                self.go(State::Uploading, Action::Upload)
            }
            (State::Uploading, Observation::Uploaded) => {
                if self.need_backup() {
                    self.go(State::BackingUp, Action::Backup)
                } else {
                    self.go(State::Flashing, Action::Flash)
                }
            }
            (State::BackingUp, Observation::BackedUp { backup }) => {
                self.backup = Some(backup);
                self.go(State::Flashing, Action::Flash)
            }
            (State::BackingUp, Observation::Failed { said, .. }) => {
                let s = Stop::new(
                    StopKind::Failed,
                    format!("The backup failed, so nothing was written: {}", said.what),
                    said.why,
                    format!(
                        "{} The modem waits in download mode: power-cycle it to return to normal mode.",
                        said.next
                    ),
                    true,
                );
                self.stop(s)
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
        State::Identifying => "identifying it over AT",
        State::Checking => "checking the package",
        State::Confirming => "waiting for the confirmation",
        State::Switching => "switching it to download mode",
        State::WaitingEdl => "waiting for 9008",
        State::IdentifyingEdl => "identifying it over Sahara",
        State::Rechecking => "checking the package for this unit",
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

    fn start() -> Update {
        Update::new(UpdateTiming::default())
    }

    #[test]
    fn a_good_update_runs_every_step_in_order_and_ends_verified() {
        let mut m = start();
        let mut seen = Vec::new();
        let mut a = m.step(seen_in(Mode::Normal));
        let mut feed = |a: &Action| -> Observation {
            seen.push(a.name());
            match a {
                Action::Identify { over: Channel::At } => identity(IMEI, 1, REV_OLD),
                Action::CheckPackage {
                    unit: None,
                    modem_revision,
                    imei,
                } => {
                    assert_eq!(modem_revision.as_deref(), Some(REV_OLD));
                    assert_eq!(imei.as_deref(), Some(IMEI));
                    checked(true, 0)
                }
                Action::CheckPackage { unit: Some(u), .. } => {
                    assert_eq!(u, UNIT);
                    checked(true, 0)
                }
                Action::AskPerson { .. } => Observation::Answered { yes: true },
                Action::SwitchToEdl => Observation::Switched,
                Action::WaitFor {
                    want: Want::Mode(Mode::Edl),
                    ..
                } => seen_in(Mode::Edl),
                Action::Identify {
                    over: Channel::Sahara,
                } => Observation::EdlIdentity {
                    unit: Some(UNIT.into()),
                },
                Action::Upload => Observation::Uploaded,
                Action::Backup => Observation::BackedUp {
                    backup: "b1".into(),
                },
                Action::Flash => Observation::Flashed { steps: 9, bytes: 1 },
                Action::Reset => Observation::ResetSent,
                Action::WaitFor {
                    want: Want::Mode(Mode::Normal),
                    ..
                } => seen_in(Mode::Normal),
                Action::Verify => identity(IMEI, 1, REV_NEW),
                other => panic!("unexpected {other:?}"),
            }
        };
        while !a.is_terminal() {
            let o = feed(&a);
            a = m.step(o);
        }
        assert_eq!(
            seen,
            [
                "identify",
                "check_package",
                "ask",
                "switch_to_edl",
                "wait",
                "identify",
                "check_package",
                "upload",
                "backup",
                "flash",
                "reset",
                "wait",
                "verify"
            ]
        );
        let Action::Done { verdict } = a else {
            panic!("{a:?}")
        };
        assert!(verdict.is_verified(), "{verdict:?}");
        assert_eq!(m.expectation().backup.as_deref(), Some("b1"));
        // Terminal is sticky.
        assert_eq!(m.step(Observation::Switched).name(), "done");
    }

    #[test]
    fn a_refused_package_stops_before_the_switch() {
        let mut m = start();
        m.step(seen_in(Mode::Normal));
        m.step(identity(IMEI, 1, REV_OLD));
        let a = m.step(refused_check("wrong variant"));
        let Action::Stop { stop } = a else {
            panic!("{a:?}")
        };
        assert_eq!(stop.kind, StopKind::Refused);
        assert!(!stop.device_changed);
        assert!(stop.what.contains("wrong variant"));
        assert!(stop.next.contains("stays in normal mode"));
    }

    #[test]
    fn a_backup_on_file_is_not_taken_again_and_is_named_in_the_expectation() {
        let mut m = start();
        m.step(seen_in(Mode::Normal));
        m.step(identity(IMEI, 1, REV_OLD));
        m.step(checked(true, 1));
        m.step(Observation::Answered { yes: true });
        m.step(Observation::Switched);
        m.step(seen_in(Mode::Edl));
        m.step(Observation::EdlIdentity {
            unit: Some(UNIT.into()),
        });
        m.step(checked(true, 1));
        assert_eq!(m.step(Observation::Uploaded), Action::Flash);
        assert_eq!(m.expectation().backup.as_deref(), Some("old-backup"));
    }

    #[test]
    fn declining_changes_nothing_and_a_lost_switch_says_where_it_was() {
        let mut m = start();
        m.step(seen_in(Mode::Normal));
        m.step(identity(IMEI, 1, REV_OLD));
        m.step(checked(true, 0));
        let Action::Stop { stop } = m.step(Observation::Answered { yes: false }) else {
            panic!()
        };
        assert_eq!(
            (stop.kind, stop.device_changed),
            (StopKind::Declined, false)
        );

        let mut m = start();
        m.step(seen_in(Mode::Normal));
        m.step(identity(IMEI, 1, REV_OLD));
        m.step(checked(true, 0));
        m.step(Observation::Answered { yes: true });
        m.step(Observation::Switched);
        let Action::Stop { stop } = m.step(Observation::WaitExpired {
            waited_ms: 30_000,
            last_mode: Some(Mode::Normal),
        }) else {
            panic!()
        };
        assert_eq!(stop.kind, StopKind::Lost);
        assert!(stop.what.contains("within 30 s (last seen in normal mode)"));
    }

    #[test]
    fn after_the_flash_a_lost_calibration_or_no_return_is_not_verified() {
        for (last, want) in [
            (identity(IMEI, 5, REV_NEW), "+CFUN: 5"),
            (
                Observation::WaitExpired {
                    waited_ms: 120_000,
                    last_mode: Some(Mode::Edl),
                },
                "last seen: EDL 9008",
            ),
        ] {
            let mut m = start();
            for o in [
                seen_in(Mode::Normal),
                identity(IMEI, 1, REV_OLD),
                checked(true, 1),
                Observation::Answered { yes: true },
                Observation::Switched,
                seen_in(Mode::Edl),
                Observation::EdlIdentity { unit: None },
                checked(true, 1),
                Observation::Uploaded,
                Observation::Flashed { steps: 1, bytes: 1 },
                Observation::ResetSent,
            ] {
                assert!(!m.step(o).is_terminal());
            }
            let a = match &last {
                Observation::WaitExpired { .. } => m.step(last),
                _ => {
                    assert_eq!(m.step(seen_in(Mode::Normal)), Action::Verify);
                    m.step(last)
                }
            };
            let Action::Done { verdict } = a else {
                panic!("{a:?}")
            };
            assert!(!verdict.is_verified());
            assert!(verdict.headline().contains(want), "{}", verdict.headline());
        }
    }

    #[test]
    fn an_edl_modem_or_an_unknown_revision_is_not_updated() {
        let mut m = start();
        assert!(matches!(
            m.step(seen_in(Mode::Edl)),
            Action::Stop { stop } if stop.kind == StopKind::Unexpected
        ));
        let mut m = start();
        m.step(seen_in(Mode::Normal));
        let mut id = identity(IMEI, 1, REV_OLD);
        if let Observation::NormalIdentity { identity } = &mut id {
            identity.revision = None;
        }
        assert!(matches!(m.step(id), Action::Stop { stop } if stop.kind == StopKind::Failed));
    }

    #[test]
    fn a_failed_backup_or_flash_stops_with_the_device_changed() {
        let mut m = start();
        for o in [
            seen_in(Mode::Normal),
            identity(IMEI, 1, REV_OLD),
            checked(true, 0),
            Observation::Answered { yes: true },
            Observation::Switched,
            seen_in(Mode::Edl),
            Observation::EdlIdentity {
                unit: Some(UNIT.into()),
            },
            checked(true, 0),
        ] {
            m.step(o);
        }
        assert_eq!(m.step(Observation::Uploaded), Action::Backup);
        let Action::Stop { stop } = m.step(failure("backup")) else {
            panic!()
        };
        assert!(stop.device_changed && stop.what.starts_with("The backup failed"));
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
