//! Which modems a station run takes: `--all`, or `--devices SEL…` with the port syntax of
//! `--port` (`usb:3-1.2`, `usb:serial=49CBD7EF`, `usb:bus=3,addr=5`, `usb` for every modem on this
//! host's USB) plus `sim` (every modem of the `--sim` emulators) and `sim:N` (those of the N-th
//! `--sim` socket). Pure: matching looks at snapshots only.

use std::fmt;
use std::str::FromStr;

use crate::device::classify::{Classification, Mode};
use crate::device::DeviceSnapshot;
use crate::transport::usb::UsbSelector;

/// One `--devices` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A USB selector, applied to every bus (host USB and emulators alike); `usb` alone means
    /// every modem on the host's own USB.
    Usb(UsbSelector),
    /// `sim`: every modem of every emulator; `sim:N`: of the N-th `--sim` socket (from 1).
    Sim(Option<usize>),
}

impl FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("sim") {
            return Ok(Selector::Sim(None));
        }
        if let Some(n) = t.strip_prefix("sim:").or_else(|| t.strip_prefix("SIM:")) {
            return match n.trim().parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Selector::Sim(Some(n))),
                _ => Err(format!(
                    "`{n}` is not an emulator number: sim:1 is the first --sim socket"
                )),
            };
        }
        match UsbSelector::parse_port(t) {
            Some(r) => r.map(Selector::Usb),
            None => Err(format!(
                "`{t}` is not a device selector: use usb:3-1.2, usb:serial=49CBD7EF, usb:bus=3,addr=5, usb, sim or sim:N"
            )),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Usb(u) => write!(f, "{u}"),
            Selector::Sim(None) => write!(f, "sim"),
            Selector::Sim(Some(n)) => write!(f, "sim:{n}"),
        }
    }
}

/// Which modems to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every modem on every bus followed.
    All,
    /// Those any of these selectors name.
    Only(Vec<Selector>),
}

/// Where a candidate was seen: its bus's position and whether that bus is an emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusPlace {
    /// Position among the emulator buses (from 1), `None` for host USB.
    pub sim_index: Option<usize>,
}

impl Selector {
    /// Whether this selector names `snap` (seen on `place`).
    pub fn matches(&self, snap: &DeviceSnapshot, class: &Classification, place: BusPlace) -> bool {
        match self {
            Selector::Sim(None) => place.sim_index.is_some(),
            Selector::Sim(Some(n)) => place.sim_index == Some(*n),
            Selector::Usb(UsbSelector::Only) => place.sim_index.is_none(),
            Selector::Usb(UsbSelector::Location(l)) => snap.location() == *l,
            Selector::Usb(UsbSelector::Serial(s)) => {
                class
                    .edl_serial
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(s))
                    || snap
                        .serial
                        .as_deref()
                        .is_some_and(|u| u.trim().eq_ignore_ascii_case(s))
            }
            Selector::Usb(UsbSelector::BusAddress { bus, address }) => {
                snap.bus == *bus && snap.address == *address
            }
        }
    }
}

impl Selection {
    /// Whether the selection takes `snap`. Only modems are ever taken (never a keyboard that
    /// happens to sit at a selected location).
    pub fn takes(&self, snap: &DeviceSnapshot, class: &Classification, place: BusPlace) -> bool {
        if !class.mode.is_relevant() {
            return false;
        }
        match self {
            Selection::All => true,
            Selection::Only(sels) => sels.iter().any(|s| s.matches(snap, class, place)),
        }
    }
}

/// What a station can do with a modem in this mode: `Ok(true)` flash it from download mode,
/// `Ok(false)` switch it from normal mode first, `Err(why)` not at all.
pub fn flashable(class: &Classification) -> Result<bool, String> {
    match &class.mode {
        Mode::Edl => Ok(true),
        Mode::QuectelNormal { .. } => {
            use crate::device::classify::PortRole;
            let tty = |r| class.port(r).and_then(|p| p.tty.as_deref()).is_some();
            if tty(PortRole::Dm) && tty(PortRole::At) {
                Ok(false)
            } else {
                Err("in normal mode, but its DM and AT ports have no tty (is the option driver bound?)".into())
            }
        }
        Mode::CrashDump => Err(
            "it is in crash-dump mode (900e): save its RAM dump (qrescue ramdump), then power-cycle it into 9008".into(),
        ),
        other => Err(format!(
            "it is in {} mode, which qrescue does not flash",
            other.tag()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::classify::classify;
    use crate::sim::profile::Profile;
    use crate::sim::usb_ids::boot_rom_snapshot;
    use proptest::prelude::*;

    #[test]
    fn selectors_parse_like_ports_plus_sim() {
        assert_eq!(
            "usb:3-1.2".parse::<Selector>(),
            Ok(Selector::Usb(UsbSelector::Location("3-1.2".into())))
        );
        assert_eq!(
            "usb:serial=0x0cf94c64".parse::<Selector>(),
            Ok(Selector::Usb(UsbSelector::Serial("0cf94c64".into())))
        );
        assert_eq!("sim".parse::<Selector>(), Ok(Selector::Sim(None)));
        assert_eq!("sim:2".parse::<Selector>(), Ok(Selector::Sim(Some(2))));
        assert!("sim:0".parse::<Selector>().is_err());
        assert!("/dev/ttyUSB0".parse::<Selector>().is_err());
        assert!("usb:nonsense".parse::<Selector>().is_err());
        for s in ["usb", "usb:3-1.2", "usb:serial=AB", "sim", "sim:3"] {
            assert_eq!(s.parse::<Selector>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn matching_uses_serial_location_and_bus() {
        let unit = Profile::by_name("ec25").unwrap();
        let snap = boot_rom_snapshot(&unit, None, 5);
        let class = classify(&snap);
        let sim = BusPlace { sim_index: Some(1) };
        let host = BusPlace { sim_index: None };
        let sel = |s: &str| s.parse::<Selector>().unwrap();
        assert!(sel("usb:serial=0CF94C64").matches(&snap, &class, sim));
        assert!(!sel("usb:serial=0CF94C65").matches(&snap, &class, sim));
        assert!(sel(&format!("usb:{}", snap.location())).matches(&snap, &class, sim));
        assert!(sel("usb:bus=99,addr=5").matches(&snap, &class, sim));
        assert!(sel("sim").matches(&snap, &class, sim));
        assert!(!sel("sim:2").matches(&snap, &class, sim));
        assert!(!sel("usb").matches(&snap, &class, sim));
        assert!(sel("usb").matches(&snap, &class, host));
        assert_eq!(flashable(&class), Ok(true));
        let crash = classify(&boot_rom_snapshot(&unit.clone().crash_dump(), None, 5));
        assert!(flashable(&crash).unwrap_err().contains("ramdump"));
    }

    proptest! {
        #[test]
        fn any_text_parses_or_explains_without_panicking(s in "\\PC{0,40}") {
            match s.parse::<Selector>() {
                Ok(sel) => prop_assert!(!sel.to_string().is_empty()),
                Err(why) => prop_assert!(!why.is_empty()),
            }
        }
    }
}
