//! Test helpers for the workflow machines: observations in a line, and random ones.

use proptest::prelude::*;

use super::{Action, Machine, Mode, Observation, PackageCheck, Said, MAX_STEPS};
use crate::engine::at::NormalIdentity;
use crate::protocol::at::info::{Cfun, FirmwareRevision, Imei};

pub const IMEI: &str = "867962041234561";
pub const UNIT: &str = "0x0cf94c64";
pub const REV_OLD: &str = "EC25EFAR06A17M4G_20.200.20.200";
pub const REV_NEW: &str = "EC25EFAR06A18M4G_20.200.20.200";

pub fn seen_in(mode: Mode) -> Observation {
    Observation::Seen {
        mode,
        dm_port: true,
    }
}

pub fn identity(imei: &str, cfun: u8, rev: &str) -> Observation {
    Observation::NormalIdentity {
        identity: Box::new(NormalIdentity {
            imei: Some(Imei {
                digits: imei.to_string(),
                luhn_ok: crate::sim::normal::unit::is_valid_imei(imei),
            }),
            cfun: Some(Cfun::new(cfun)),
            revision: Some(FirmwareRevision {
                text: rev.to_string(),
            }),
            ..NormalIdentity::default()
        }),
    }
}

pub fn checked(flashable: bool, backups: usize) -> Observation {
    Observation::PackageChecked {
        check: PackageCheck {
            flashable,
            reasons: Vec::new(),
            revision: Some(REV_NEW.into()),
            steps: 9,
            unit: Some(UNIT.into()),
            backups_on_file: backups,
            backup: (backups > 0).then(|| "old-backup".to_string()),
            imei_on_file: (backups > 0).then(|| IMEI.to_string()),
        },
    }
}

pub fn refused_check(what: &str) -> Observation {
    Observation::PackageChecked {
        check: PackageCheck {
            flashable: false,
            reasons: vec![Said {
                what: what.into(),
                why: "it does not fit".into(),
                next: "use the right package".into(),
            }],
            ..PackageCheck::default()
        },
    }
}

pub fn failure(action: &str) -> Observation {
    Observation::Failed {
        action: action.into(),
        said: Said {
            what: format!("{action} broke"),
            why: "the link dropped".into(),
            next: "try again".into(),
        },
    }
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Normal), Just(Mode::Edl), Just(Mode::CrashDump)]
}

/// Any observation, biased towards the ones the machines expect.
pub fn observation() -> impl Strategy<Value = Observation> {
    prop_oneof![
        (mode(), any::<bool>()).prop_map(|(mode, dm_port)| Observation::Seen { mode, dm_port }),
        (any::<u64>(), proptest::option::of(mode())).prop_map(|(waited_ms, last_mode)| {
            Observation::WaitExpired {
                waited_ms,
                last_mode,
            }
        }),
        (0u8..9, any::<bool>(), any::<bool>()).prop_map(|(cfun, same, rev)| identity(
            if same { IMEI } else { "867962041234579" },
            cfun,
            if rev { REV_NEW } else { REV_OLD }
        )),
        proptest::option::of(Just(UNIT.to_string()))
            .prop_map(|unit| Observation::EdlIdentity { unit }),
        (any::<bool>(), 0usize..3).prop_map(|(f, b)| checked(f, b)),
        Just(refused_check("no")),
        Just(Observation::BackedUp { backup: "b".into() }),
        Just(Observation::Switched),
        Just(Observation::Uploaded),
        Just(Observation::Flashed { steps: 1, bytes: 1 }),
        Just(Observation::ResetSent),
        Just(Observation::Dumped {
            dir: "d".into(),
            bytes: 1
        }),
        Just(Observation::Restored {
            regions: 1,
            bytes: 1
        }),
        any::<bool>().prop_map(|yes| Observation::Answered { yes }),
        Just(failure("x")),
    ]
}

pub fn observations() -> impl Strategy<Value = Vec<Observation>> {
    proptest::collection::vec(observation(), 1..80)
}

/// Feed `obs` (cycled) until the machine answers a terminal action; it must within
/// [`MAX_STEPS`] + 1 observations, and stay there.
pub fn check_terminates(m: &mut dyn Machine, obs: Vec<Observation>) {
    let mut last: Option<Action> = None;
    for o in obs.iter().cycle().take(MAX_STEPS + 1) {
        let a = m.step(o.clone());
        if a.is_terminal() {
            last = Some(a);
            break;
        }
    }
    let a =
        last.unwrap_or_else(|| panic!("{} did not end within {} steps", m.name(), MAX_STEPS + 1));
    assert_eq!(m.step(obs[0].clone()), a, "a terminal action is sticky");
}

/// A plausible answer to `a`: `choice` picks among success, failure and the other outcomes a
/// real driver can report for that action.
pub fn respond(a: &Action, choice: u8) -> Observation {
    use super::{Channel, Question, Want};
    let c = choice % 4;
    match a {
        Action::Identify { over: Channel::At } | Action::Verify => match c {
            0 => failure("identify"),
            1 => identity(IMEI, 5, REV_NEW),
            2 => identity("867962041234579", 1, REV_NEW),
            _ => identity(IMEI, 1, REV_OLD),
        },
        Action::Identify {
            over: Channel::Sahara,
        } => match c {
            0 => failure("identify"),
            1 => Observation::EdlIdentity { unit: None },
            _ => Observation::EdlIdentity {
                unit: Some(UNIT.into()),
            },
        },
        Action::CheckPackage { .. } => match c {
            0 => failure("check_package"),
            1 => refused_check("refused"),
            2 => checked(true, 1),
            _ => checked(true, 0),
        },
        Action::Backup => match c {
            0 => failure("backup"),
            _ => Observation::BackedUp { backup: "b".into() },
        },
        Action::SwitchToEdl => match c {
            0 => failure("switch_to_edl"),
            _ => Observation::Switched,
        },
        Action::Upload => match c {
            0 => failure("upload"),
            _ => Observation::Uploaded,
        },
        Action::Flash => match c {
            0 => failure("flash"),
            _ => Observation::Flashed { steps: 1, bytes: 1 },
        },
        Action::Reset => match c {
            0 => failure("reset"),
            _ => Observation::ResetSent,
        },
        Action::WaitFor { want, within_ms } => {
            let seen = |mode| Observation::Seen {
                mode,
                dm_port: choice % 8 < 6,
            };
            match (c, want) {
                (0, _) => Observation::WaitExpired {
                    waited_ms: *within_ms,
                    last_mode: Some(Mode::CrashDump),
                },
                (_, Want::Mode(m)) => seen(*m),
                (1, Want::Any) => seen(Mode::CrashDump),
                (2, Want::Any) => seen(Mode::Normal),
                (_, Want::Any) => seen(Mode::Edl),
            }
        }
        Action::RamDump => match c {
            0 => failure("ramdump"),
            _ => Observation::Dumped {
                dir: "d".into(),
                bytes: 1,
            },
        },
        Action::Restore { .. } => match c {
            0 => failure("restore"),
            _ => Observation::Restored {
                regions: 1,
                bytes: 1,
            },
        },
        Action::AskPerson { question } => Observation::Answered {
            yes: matches!(question, Question::BridgePins { .. }) || c != 0,
        },
        Action::Done { .. } | Action::Stop { .. } => failure("terminal"),
    }
}

/// Drive `m` from `first` with plausible answers chosen by `choices` (cycled): it must end
/// within [`MAX_STEPS`] steps.
pub fn check_plausible_run_ends(m: &mut dyn Machine, first: Observation, choices: Vec<u8>) {
    let mut a = m.step(first);
    let mut n = 1;
    let mut it = choices.iter().cycle();
    while !a.is_terminal() {
        assert!(n <= MAX_STEPS, "{} did not end: {a:?}", m.name());
        let o = respond(&a, *it.next().unwrap_or(&0));
        a = m.step(o);
        n += 1;
    }
}

pub fn choices() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..40)
}
