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
