//! A modem in crash-dump mode (05c6:900e): its firmware crashed and its boot ROM holds the RAM
//! for a host to read.
//!
//! offer the RAM dump → save it (the boot ROM resets the modem after it) → wait for the modem →
//! when it comes up in normal mode showing its DM port, switch it to EDL over DIAG before it
//! crashes again → otherwise pin-bridging guidance (USB_BOOT to 1.8 V, power-cycle) → wait for
//! 9008 → the [`Unbrick`] workflow.
//!
//! A crash-dump boot ROM takes no other software reset than the one after a dump, so a modem
//! that crashes again before the switch gets another dump (at most [`MAX_DUMPS`] in all)
//! before qrescue asks for the pins.

use super::unbrick::{Unbrick, UnbrickTiming};
use super::{
    unexpected, Action, Machine, Mode, Observation, Question, Stop, StopKind, Want, MAX_STEPS,
};

/// Most RAM dumps (each ends with the reset that gives the switch another chance).
pub const MAX_DUMPS: usize = 3;

/// How long the crash workflow waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashTiming {
    /// From the dump's reset to the modem's next appearance.
    pub reboot_within_ms: u64,
    /// From the DIAG switch to 9008.
    pub edl_within_ms: u64,
    /// For a person to bridge the pins and power-cycle.
    pub pins_within_ms: u64,
    pub unbrick: UnbrickTiming,
}

impl Default for CrashTiming {
    fn default() -> Self {
        CrashTiming {
            reboot_within_ms: 60_000,
            edl_within_ms: 30_000,
            pins_within_ms: 300_000,
            unbrick: UnbrickTiming::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    AskingDump,
    Dumping,
    WaitingReboot,
    Switching,
    WaitingEdl,
    AskingPins,
    WaitingPins,
    Unbricking,
    End,
}

/// The crash-dump workflow ([module notes](self)).
#[derive(Debug, Clone)]
pub struct Crash {
    timing: CrashTiming,
    state: State,
    steps: usize,
    dumps: usize,
    switches: usize,
    /// Folders of the dumps taken.
    dumped: Vec<String>,
    unbrick: Unbrick,
    end: Option<Action>,
}

const NAME: &str = "crash";

impl Crash {
    pub fn new(timing: CrashTiming) -> Crash {
        Crash {
            timing,
            state: State::Start,
            steps: 0,
            dumps: 0,
            switches: 0,
            dumped: Vec::new(),
            unbrick: Unbrick::new(timing.unbrick),
            end: None,
        }
    }

    /// The folders of the RAM dumps taken so far.
    pub fn dumps(&self) -> &[String] {
        &self.dumped
    }

    /// The unbrick that follows once the modem is in 9008.
    pub fn unbrick(&self) -> &Unbrick {
        &self.unbrick
    }

    fn changed(&self) -> bool {
        !matches!(self.state, State::Start | State::AskingDump)
    }

    fn end(&mut self, a: Action) -> Action {
        self.state = State::End;
        self.end = Some(a.clone());
        a
    }

    fn go(&mut self, state: State, a: Action) -> Action {
        self.state = state;
        a
    }

    fn pins(&mut self, why: &str) -> Action {
        self.go(
            State::AskingPins,
            Action::AskPerson {
                question: Question::BridgePins { why: why.into() },
            },
        )
    }

    /// Another dump when allowed (its reset is the only way out of 900e in software).
    fn dump_again(&mut self) -> Action {
        if self.dumps < MAX_DUMPS {
            self.go(State::Dumping, Action::RamDump)
        } else {
            self.pins(
                "It crashed again after every reset, before the switch to download mode took.",
            )
        }
    }

    fn hand_to_unbrick(&mut self, obs: Observation) -> Action {
        self.state = State::Unbricking;
        let a = self.unbrick.step(obs);
        if a.is_terminal() {
            return self.end(a);
        }
        a
    }
}

impl Machine for Crash {
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
            return self.end(Action::Stop { stop: s });
        }
        let changed = self.changed();
        match (self.state, obs) {
            (State::Unbricking, obs) => self.hand_to_unbrick(obs),
            (
                State::Start,
                Observation::Seen {
                    mode: Mode::CrashDump,
                    ..
                },
            ) => self.go(
                State::AskingDump,
                Action::AskPerson {
                    question: Question::TakeRamDump,
                },
            ),
            (State::AskingDump, Observation::Answered { yes: true }) => {
                self.go(State::Dumping, Action::RamDump)
            }
            (State::AskingDump, Observation::Answered { yes: false }) => self.pins(
                "Without the RAM dump, whose end resets it, a modem in crash-dump mode only leaves it by a power cycle.",
            ),
            (State::Dumping, Observation::Dumped { dir, .. }) => {
                self.dumps += 1;
                self.dumped.push(dir);
                self.go(
                    State::WaitingReboot,
                    Action::WaitFor {
                        want: Want::Any,
                        within_ms: self.timing.reboot_within_ms,
                    },
                )
            }
            (State::Dumping, Observation::Failed { said, .. }) => {
                self.dumps += 1;
                let why = format!("The RAM dump failed ({}).", said.what);
                self.pins(&why)
            }
            (
                State::WaitingReboot,
                Observation::Seen {
                    mode: Mode::Normal,
                    dm_port: true,
                },
            ) => {
                self.switches += 1;
                self.go(State::Switching, Action::SwitchToEdl)
            }
            (
                State::WaitingReboot,
                Observation::Seen {
                    mode: Mode::Normal,
                    dm_port: false,
                },
            ) => self.pins(
                "It came up in normal mode without a DIAG port, so the software switch cannot reach it.",
            ),
            (
                State::WaitingReboot | State::WaitingEdl,
                Observation::Seen {
                    mode: Mode::CrashDump,
                    ..
                },
            ) => self.dump_again(),
            (
                State::WaitingReboot | State::WaitingEdl | State::WaitingPins,
                o @ Observation::Seen { mode: Mode::Edl, .. },
            ) => self.hand_to_unbrick(o),
            (State::WaitingReboot, Observation::WaitExpired { .. }) => {
                self.pins("It did not come back after the dump's reset.")
            }
            (State::Switching, Observation::Switched) => self.go(
                State::WaitingEdl,
                Action::WaitFor {
                    want: Want::Any,
                    within_ms: self.timing.edl_within_ms,
                },
            ),
            // It may have crashed before the command got through: see where it goes next.
            (State::Switching, Observation::Failed { .. }) if self.switches < MAX_DUMPS => self
                .go(
                    State::WaitingReboot,
                    Action::WaitFor {
                        want: Want::Any,
                        within_ms: self.timing.reboot_within_ms,
                    },
                ),
            (State::Switching, Observation::Failed { said, .. }) => {
                let why = format!("The switch to download mode failed ({}).", said.what);
                self.pins(&why)
            }
            (
                State::WaitingEdl,
                Observation::Seen {
                    mode: Mode::Normal, ..
                },
            ) => self.pins("It came back in normal mode: the firmware ignored the switch."),
            (State::WaitingEdl, Observation::WaitExpired { .. }) => {
                self.pins("It did not appear in download mode after the switch.")
            }
            (State::AskingPins, Observation::Answered { yes: true }) => self.go(
                State::WaitingPins,
                Action::WaitFor {
                    want: Want::Mode(Mode::Edl),
                    within_ms: self.timing.pins_within_ms,
                },
            ),
            (State::AskingPins, Observation::Answered { yes: false }) => {
                let s = Stop::new(
                    StopKind::Declined,
                    "Stopped before the modem reached download mode",
                    "a crashing firmware has to be replaced from EDL (9008)",
                    "Bridge USB_BOOT to 1.8 V, power-cycle the modem, then run `qrescue update PACKAGE` again",
                    changed,
                );
                self.end(Action::Stop { stop: s })
            }
            (State::WaitingPins, Observation::WaitExpired { waited_ms, last_mode }) => {
                let s = Stop::new(
                    StopKind::Lost,
                    format!(
                        "The modem did not appear in download mode (9008) within {} s{}",
                        waited_ms / 1000,
                        last_mode
                            .map(|m| format!(" (last seen in {})", m.words()))
                            .unwrap_or_default()
                    ),
                    "only a modem in EDL can be flashed",
                    "Check the bridge (USB_BOOT to 1.8 V while power is applied) and the cable, then run `qrescue update PACKAGE` again",
                    changed,
                );
                self.end(Action::Stop { stop: s })
            }
            (state, obs) => {
                let s = unexpected(NAME, state_words(state), &obs, changed);
                self.end(Action::Stop { stop: s })
            }
        }
    }
}

fn state_words(s: State) -> &'static str {
    match s {
        State::Start => "starting",
        State::AskingDump => "asking about the RAM dump",
        State::Dumping => "saving the RAM dump",
        State::WaitingReboot => "waiting for it after the reset",
        State::Switching => "switching it to download mode",
        State::WaitingEdl => "waiting for 9008",
        State::AskingPins => "waiting for the test-point bridge",
        State::WaitingPins => "waiting for 9008 after the bridge",
        State::Unbricking => "unbricking",
        State::End => "finished",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::testing::*;
    use crate::workflow::Channel;

    fn start() -> Crash {
        Crash::new(CrashTiming::default())
    }

    fn dumped() -> Observation {
        Observation::Dumped {
            dir: "dump-1".into(),
            bytes: 8 << 20,
        }
    }

    #[test]
    fn dump_then_diag_switch_then_unbrick() {
        let mut m = start();
        assert!(matches!(
            m.step(seen_in(Mode::CrashDump)),
            Action::AskPerson {
                question: Question::TakeRamDump
            }
        ));
        assert_eq!(m.step(Observation::Answered { yes: true }), Action::RamDump);
        assert!(matches!(
            m.step(dumped()),
            Action::WaitFor {
                want: Want::Any,
                ..
            }
        ));
        assert_eq!(m.step(seen_in(Mode::Normal)), Action::SwitchToEdl);
        assert!(matches!(
            m.step(Observation::Switched),
            Action::WaitFor {
                want: Want::Any,
                ..
            }
        ));
        assert_eq!(
            m.step(seen_in(Mode::Edl)),
            Action::Identify {
                over: Channel::Sahara
            }
        );
        assert_eq!(m.dumps(), ["dump-1"]);
        // From here on it is the unbrick.
        assert!(matches!(
            m.step(Observation::EdlIdentity {
                unit: Some(UNIT.into())
            }),
            Action::CheckPackage { .. }
        ));
    }

    #[test]
    fn a_crash_before_the_switch_gets_another_dump_then_the_pins() {
        let mut m = start();
        m.step(seen_in(Mode::CrashDump));
        m.step(Observation::Answered { yes: true });
        for _ in 1..MAX_DUMPS {
            m.step(dumped());
            assert_eq!(m.step(seen_in(Mode::CrashDump)), Action::RamDump);
        }
        m.step(dumped());
        assert!(matches!(
            m.step(seen_in(Mode::CrashDump)),
            Action::AskPerson {
                question: Question::BridgePins { .. }
            }
        ));
        assert!(matches!(
            m.step(Observation::Answered { yes: true }),
            Action::WaitFor {
                want: Want::Mode(Mode::Edl),
                ..
            }
        ));
        let Action::Stop { stop } = m.step(Observation::WaitExpired {
            waited_ms: 300_000,
            last_mode: Some(Mode::CrashDump),
        }) else {
            panic!()
        };
        assert_eq!(stop.kind, StopKind::Lost);
        assert!(stop.what.contains("last seen in crash dump 900e"));
    }

    #[test]
    fn no_dm_port_or_a_declined_dump_leads_to_the_pins() {
        let mut m = start();
        m.step(seen_in(Mode::CrashDump));
        m.step(Observation::Answered { yes: true });
        m.step(dumped());
        let a = m.step(Observation::Seen {
            mode: Mode::Normal,
            dm_port: false,
        });
        assert!(
            matches!(a, Action::AskPerson { question: Question::BridgePins { why } } if why.contains("without a DIAG port"))
        );
        let mut m = start();
        m.step(seen_in(Mode::CrashDump));
        assert!(matches!(
            m.step(Observation::Answered { yes: false }),
            Action::AskPerson {
                question: Question::BridgePins { .. }
            }
        ));
        let Action::Stop { stop } = m.step(Observation::Answered { yes: false }) else {
            panic!()
        };
        assert_eq!(stop.kind, StopKind::Declined);
        // Once bridged, 9008 goes to the unbrick.
        let mut m = start();
        m.step(seen_in(Mode::CrashDump));
        m.step(Observation::Answered { yes: false });
        m.step(Observation::Answered { yes: true });
        assert_eq!(
            m.step(seen_in(Mode::Edl)),
            Action::Identify {
                over: Channel::Sahara
            }
        );
    }

    #[test]
    fn a_failed_switch_waits_to_see_where_it_went() {
        let mut m = start();
        m.step(seen_in(Mode::CrashDump));
        m.step(Observation::Answered { yes: true });
        m.step(dumped());
        m.step(seen_in(Mode::Normal));
        assert!(matches!(
            m.step(failure("switch_to_edl")),
            Action::WaitFor {
                want: Want::Any,
                ..
            }
        ));
        assert_eq!(m.step(seen_in(Mode::CrashDump)), Action::RamDump);
    }

    proptest::proptest! {
        #[test]
        fn random_observations_never_panic_and_end(obs in observations()) {
            check_terminates(&mut start(), obs);
        }

        #[test]
        fn plausible_answers_always_end(c in choices()) {
            check_plausible_run_ends(&mut start(), seen_in(Mode::CrashDump), c);
        }
    }
}
