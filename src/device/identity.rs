//! Device identity that survives a mode switch. A modem that goes from normal mode to EDL leaves
//! the bus and comes back with another VID:PID, often at another location (a USB 3 modem comes
//! back as USB 2 on the companion bus: `4-1` → `3-1`). [`DeviceTracker`] watches appear/vanish
//! events and gives each physical device a stable [`DeviceId`], saying which rule linked a new
//! appearance to a known device:
//!
//! 1. the EDL serial (`_SN:` in the product string) seen before;
//! 2. the product-string serial equal to a USB iSerial seen before, or the reverse (Qualcomm-based
//!    modules commonly report the chip serial as iSerial in normal mode and as `_SN:` in EDL;
//!    compared case-insensitively);
//! 3. the same USB iSerial on the same vendor ID;
//! 4. port history: the same location shortly after a vanish; then the same port chain on
//!    another bus (the USB 2 / USB 3 companion); then the only modem that vanished recently.
//!
//! Rules 4 apply only within the window (default 30 s) and only between relevant devices
//! (modems in any mode), never to a keyboard plugged into the port a modem left.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::classify::{classify, edl_serial};
use super::lsusb::parse_location;
use super::snapshot::DeviceSnapshot;
use super::{DeviceChange, DeviceEvent};

/// Default window for port-history matches.
pub const DEFAULT_WINDOW_MS: u64 = 30_000;
/// Devices remembered; the oldest absent ones are forgotten first.
pub const MAX_TRACKED: usize = 256;
/// Sightings kept per device.
pub const MAX_HISTORY: usize = 64;
const MAX_SERIALS: usize = 8;

/// A stable id for one physical device, as long as the tracker lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub u32);

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Which rule linked an event to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum MatchRule {
    /// Nothing matched: a new device.
    New,
    /// A device appeared where a tracked device was still present (its vanish was missed).
    SameLocation,
    EdlSerial {
        serial: String,
    },
    /// `_SN:` of one appearance equals the iSerial of another.
    ProductSerial {
        serial: String,
    },
    UsbSerial {
        serial: String,
    },
    /// Same location, `gap_ms` after the device vanished there.
    PortHistory {
        location: String,
        gap_ms: u64,
    },
    /// Same port chain on another bus (USB 3 ↔ USB 2 companion), `gap_ms` after the vanish.
    CompanionPort {
        from: String,
        to: String,
        gap_ms: u64,
    },
    /// The only modem that vanished within the window.
    OnlyRecentVanish {
        from: String,
        gap_ms: u64,
    },
    /// A vanish of a tracked device.
    Vanished,
    /// A vanish at a location where nothing was tracked.
    UnknownVanish,
}

/// What the tracker made of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The device the event is about (`None` for an unknown vanish).
    pub id: Option<DeviceId>,
    #[serde(flatten)]
    pub rule: MatchRule,
    /// One sentence for people and logs.
    pub why: String,
}

/// One appearance of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sighting {
    pub t_ms: u64,
    pub location: String,
    /// `05c6:9008`.
    pub usb_id: String,
    /// The classifier's short tag.
    pub mode: String,
}

/// What the tracker knows about one physical device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedDevice {
    pub id: DeviceId,
    /// Where it is (or was last seen).
    pub location: String,
    pub present: bool,
    /// When it last vanished (while absent).
    pub vanished_ms: Option<u64>,
    /// A modem in any mode (the classifier's relevance).
    pub relevant: bool,
    pub edl_serials: Vec<String>,
    /// (vendor ID, iSerial).
    pub usb_serials: Vec<(u16, String)>,
    pub history: Vec<Sighting>,
    /// The last snapshot seen.
    pub last: DeviceSnapshot,
}

impl TrackedDevice {
    fn remember(&mut self, snap: &DeviceSnapshot, t_ms: u64, mode: &str) {
        if let Some(s) = snap.product.as_deref().and_then(edl_serial) {
            push_unique(&mut self.edl_serials, s);
        }
        if let Some(s) = usable_serial(snap.serial.as_deref()) {
            let entry = (snap.vid, s.to_string());
            if !self.usb_serials.contains(&entry) {
                if self.usb_serials.len() >= MAX_SERIALS {
                    self.usb_serials.remove(0);
                }
                self.usb_serials.push(entry);
            }
        }
        if self.history.len() >= MAX_HISTORY {
            self.history.remove(0);
        }
        self.history.push(Sighting {
            t_ms,
            location: snap.location(),
            usb_id: snap.id(),
            mode: mode.to_string(),
        });
        self.location = snap.location();
        self.present = true;
        self.vanished_ms = None;
        self.last = snap.clone();
    }
}

fn push_unique(v: &mut Vec<String>, s: String) {
    if !v.iter().any(|x| x.eq_ignore_ascii_case(&s)) {
        if v.len() >= MAX_SERIALS {
            v.remove(0);
        }
        v.push(s);
    }
}

/// An iSerial worth matching on: not empty, not all zeros.
fn usable_serial(s: Option<&str>) -> Option<&str> {
    let s = s?.trim();
    (!s.is_empty() && !s.chars().all(|c| c == '0')).then_some(s)
}

/// Assigns stable ids across appear/vanish events.
#[derive(Debug, Clone)]
pub struct DeviceTracker {
    devices: Vec<TrackedDevice>,
    next: u32,
    window_ms: u64,
}

impl Default for DeviceTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceTracker {
    pub fn new() -> Self {
        Self::with_window(DEFAULT_WINDOW_MS)
    }

    /// Port-history matches only within `window_ms` of the vanish.
    pub fn with_window(window_ms: u64) -> Self {
        DeviceTracker {
            devices: Vec::new(),
            next: 1,
            window_ms,
        }
    }

    pub fn get(&self, id: DeviceId) -> Option<&TrackedDevice> {
        self.devices.iter().find(|d| d.id == id)
    }

    pub fn devices(&self) -> impl Iterator<Item = &TrackedDevice> {
        self.devices.iter()
    }

    /// The device present at `location`.
    pub fn at(&self, location: &str) -> Option<&TrackedDevice> {
        self.devices
            .iter()
            .find(|d| d.present && d.location == location)
    }

    /// Take one event into account.
    pub fn observe(&mut self, ev: &DeviceEvent) -> Observation {
        match &ev.change {
            DeviceChange::Appear { device } => self.appear(ev.t_ms, device),
            DeviceChange::Vanish { location, .. } => {
                match self
                    .devices
                    .iter_mut()
                    .find(|d| d.present && &d.location == location)
                {
                    Some(d) => {
                        d.present = false;
                        d.vanished_ms = Some(ev.t_ms);
                        Observation {
                            id: Some(d.id),
                            rule: MatchRule::Vanished,
                            why: format!("{} left {location}", d.id),
                        }
                    }
                    None => Observation {
                        id: None,
                        rule: MatchRule::UnknownVanish,
                        why: format!("a device nobody tracked left {location}"),
                    },
                }
            }
        }
    }

    fn appear(&mut self, t_ms: u64, snap: &DeviceSnapshot) -> Observation {
        let class = classify(snap);
        let relevant = class.mode.is_relevant();
        let location = snap.location();
        let (idx, rule) = match self.find_match(t_ms, snap, relevant) {
            Some((idx, rule)) => (idx, rule),
            None => (self.new_device(snap, relevant), MatchRule::New),
        };
        let d = &mut self.devices[idx];
        d.relevant = relevant;
        d.remember(snap, t_ms, class.tag());
        let id = d.id;
        let what = format!("{} at {location}", snap.id());
        let why = match &rule {
            MatchRule::New => format!("{what} is new: {id}"),
            MatchRule::SameLocation => {
                format!("{what} is {id}: it was still listed at that location")
            }
            MatchRule::EdlSerial { serial } => format!("{what} is {id}: same EDL serial {serial}"),
            MatchRule::ProductSerial { serial } => format!(
                "{what} is {id}: serial {serial} was seen in the product string of one mode and \
                 as USB serial of the other"
            ),
            MatchRule::UsbSerial { serial } => format!("{what} is {id}: same USB serial {serial}"),
            MatchRule::PortHistory { gap_ms, .. } => format!(
                "{what} is {id}: it came back at the same location {gap_ms} ms after leaving"
            ),
            MatchRule::CompanionPort { from, gap_ms, .. } => format!(
                "{what} is {id}: same port chain as {from} on another bus (USB 2/3 companion), \
                 {gap_ms} ms after it left"
            ),
            MatchRule::OnlyRecentVanish { from, gap_ms } => format!(
                "{what} is {id}: the only modem that left recently ({from}, {gap_ms} ms ago)"
            ),
            MatchRule::Vanished | MatchRule::UnknownVanish => String::new(),
        };
        tracing::debug!("{why}");
        Observation {
            id: Some(id),
            rule,
            why,
        }
    }

    fn new_device(&mut self, snap: &DeviceSnapshot, relevant: bool) -> usize {
        if self.devices.len() >= MAX_TRACKED {
            // Forget the absent device that left longest ago (or the oldest if all are present).
            let victim = self
                .devices
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.present)
                .min_by_key(|(_, d)| d.vanished_ms.unwrap_or(0))
                .map(|(i, _)| i)
                .unwrap_or(0);
            self.devices.remove(victim);
        }
        let id = DeviceId(self.next);
        self.next = self.next.saturating_add(1);
        self.devices.push(TrackedDevice {
            id,
            location: snap.location(),
            present: false,
            vanished_ms: None,
            relevant,
            edl_serials: Vec::new(),
            usb_serials: Vec::new(),
            history: Vec::new(),
            last: snap.clone(),
        });
        self.devices.len() - 1
    }

    fn find_match(
        &mut self,
        t_ms: u64,
        snap: &DeviceSnapshot,
        relevant: bool,
    ) -> Option<(usize, MatchRule)> {
        let location = snap.location();
        // A missed vanish: the slot is taken by a stale entry.
        if let Some(i) = self
            .devices
            .iter()
            .position(|d| d.present && d.location == location)
        {
            let same_id =
                self.devices[i].last.vid == snap.vid && self.devices[i].last.pid == snap.pid;
            if same_id || (relevant && self.devices[i].relevant) {
                return Some((i, MatchRule::SameLocation));
            }
            self.devices[i].present = false;
            self.devices[i].vanished_ms = Some(t_ms);
        }
        let absent = |d: &TrackedDevice| !d.present;
        let edl = snap.product.as_deref().and_then(edl_serial);
        let usb = usable_serial(snap.serial.as_deref());
        if let Some(s) = &edl {
            if let Some(i) = self
                .devices
                .iter()
                .position(|d| absent(d) && d.edl_serials.iter().any(|x| x.eq_ignore_ascii_case(s)))
            {
                return Some((i, MatchRule::EdlSerial { serial: s.clone() }));
            }
            if let Some(i) = self.devices.iter().position(|d| {
                absent(d) && d.usb_serials.iter().any(|(_, x)| x.eq_ignore_ascii_case(s))
            }) {
                return Some((i, MatchRule::ProductSerial { serial: s.clone() }));
            }
        }
        if let Some(s) = usb {
            if let Some(i) = self
                .devices
                .iter()
                .position(|d| absent(d) && d.edl_serials.iter().any(|x| x.eq_ignore_ascii_case(s)))
            {
                return Some((
                    i,
                    MatchRule::ProductSerial {
                        serial: s.to_string(),
                    },
                ));
            }
            if let Some(i) = self.devices.iter().position(|d| {
                absent(d) && d.usb_serials.iter().any(|(v, x)| *v == snap.vid && x == s)
            }) {
                return Some((
                    i,
                    MatchRule::UsbSerial {
                        serial: s.to_string(),
                    },
                ));
            }
        }
        if !relevant {
            return None;
        }
        // Port history: recently vanished modems, nearest in time first.
        let window = self.window_ms;
        let recent: Vec<(usize, u64)> = self
            .devices
            .iter()
            .enumerate()
            .filter(|(_, d)| d.relevant && !d.present)
            .filter_map(|(i, d)| {
                let gap = t_ms.checked_sub(d.vanished_ms?)?;
                (gap <= window).then_some((i, gap))
            })
            .collect();
        // Devices with serials that differ from ours are other devices.
        let conflicts = |d: &TrackedDevice| {
            let edl_conflict = edl.as_ref().is_some_and(|s| {
                !d.edl_serials.is_empty()
                    && !d.edl_serials.iter().any(|x| x.eq_ignore_ascii_case(s))
            });
            let usb_conflict = usb.is_some_and(|s| {
                d.usb_serials
                    .iter()
                    .any(|(v, x)| *v == snap.vid && !x.eq_ignore_ascii_case(s))
            });
            edl_conflict || usb_conflict
        };
        let recent: Vec<(usize, u64)> = recent
            .into_iter()
            .filter(|(i, _)| !conflicts(&self.devices[*i]))
            .collect();
        let nearest = |pred: &dyn Fn(&TrackedDevice) -> bool| {
            recent
                .iter()
                .filter(|(i, _)| pred(&self.devices[*i]))
                .min_by_key(|(_, gap)| *gap)
                .copied()
        };
        if let Some((i, gap_ms)) = nearest(&|d| d.location == location) {
            return Some((i, MatchRule::PortHistory { location, gap_ms }));
        }
        let chain = parse_location(&location).map(|(_, p)| p);
        if let Some(chain) = chain.filter(|c| !c.is_empty()) {
            let same_chain = |d: &TrackedDevice| {
                parse_location(&d.location).is_some_and(|(bus, p)| p == chain && bus != snap.bus)
            };
            if let Some((i, gap_ms)) = nearest(&same_chain) {
                return Some((
                    i,
                    MatchRule::CompanionPort {
                        from: self.devices[i].location.clone(),
                        to: location,
                        gap_ms,
                    },
                ));
            }
        }
        if recent.len() == 1 {
            let (i, gap_ms) = recent[0];
            return Some((
                i,
                MatchRule::OnlyRecentVanish {
                    from: self.devices[i].location.clone(),
                    gap_ms,
                },
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::snapshot::Speed;

    fn snap(bus: u8, ports: &[u8], vid: u16, pid: u16) -> DeviceSnapshot {
        DeviceSnapshot {
            bus,
            ports: ports.to_vec(),
            address: 2,
            vid,
            pid,
            bcd_device: 0,
            manufacturer: None,
            product: None,
            serial: None,
            speed: Some(Speed::High),
            interfaces: vec![],
            origin: None,
        }
    }

    fn appear(t_ms: u64, device: DeviceSnapshot) -> DeviceEvent {
        DeviceEvent {
            t_ms,
            change: DeviceChange::Appear { device },
        }
    }

    fn vanish(t_ms: u64, location: &str) -> DeviceEvent {
        DeviceEvent {
            t_ms,
            change: DeviceChange::Vanish {
                location: location.into(),
                last: None,
            },
        }
    }

    #[test]
    fn edl_serial_links_two_edl_sessions_far_apart() {
        let mut t = DeviceTracker::new();
        let mut e = snap(3, &[1], 0x05c6, 0x9008);
        e.product = Some("QUSB_BULK_CID:0410_SN:49CBD7EF".into());
        let a = t.observe(&appear(0, e.clone()));
        assert_eq!(a.rule, MatchRule::New);
        t.observe(&vanish(1_000, "3-1"));
        // An hour later, on another port.
        let mut e2 = e;
        e2.ports = vec![4];
        let b = t.observe(&appear(3_600_000, e2));
        assert_eq!(b.id, a.id);
        assert_eq!(
            b.rule,
            MatchRule::EdlSerial {
                serial: "49CBD7EF".into()
            }
        );
        assert!(b.why.contains("49CBD7EF"));
    }

    #[test]
    fn usb_serial_and_product_serial_link_normal_mode_and_edl() {
        let mut t = DeviceTracker::new();
        let mut n = snap(4, &[1], 0x2c7c, 0x0800);
        n.serial = Some("40046d60".into());
        let a = t.observe(&appear(0, n.clone()));
        t.observe(&vanish(100, "4-1"));
        // EDL far away in time and place, with the same serial in its product string.
        let mut e = snap(1, &[2, 3], 0x05c6, 0x9008);
        e.product = Some("QUSB_BULK_CID:0410_SN:40046D60".into());
        let b = t.observe(&appear(10_000_000, e));
        assert_eq!(b.id, a.id);
        assert!(matches!(b.rule, MatchRule::ProductSerial { .. }), "{b:?}");
        t.observe(&vanish(10_000_100, "1-2.3"));
        // Back in normal mode: the EDL serial recognises the iSerial too.
        let c = t.observe(&appear(20_000_000, n));
        assert_eq!(c.id, a.id);
        assert!(matches!(
            c.rule,
            MatchRule::ProductSerial { .. } | MatchRule::UsbSerial { .. }
        ));
    }

    #[test]
    fn port_history_needs_the_window_and_a_modem() {
        let mut t = DeviceTracker::with_window(30_000);
        let a = t.observe(&appear(0, snap(3, &[1], 0x2c7c, 0x0125)));
        t.observe(&vanish(1_000, "3-1"));
        // A keyboard in the same port is not the modem.
        let k = t.observe(&appear(2_000, snap(3, &[1], 0x046d, 0xc52b)));
        assert_eq!(k.rule, MatchRule::New);
        t.observe(&vanish(2_500, "3-1"));
        let b = t.observe(&appear(5_000, snap(3, &[1], 0x05c6, 0x9008)));
        assert_eq!(b.id, a.id);
        assert_eq!(
            b.rule,
            MatchRule::PortHistory {
                location: "3-1".into(),
                gap_ms: 4_000
            }
        );
        t.observe(&vanish(6_000, "3-1"));
        // Too late: a new device.
        let c = t.observe(&appear(60_000, snap(3, &[1], 0x05c6, 0x9008)));
        assert_eq!(c.rule, MatchRule::New);
        assert_ne!(c.id, a.id);
    }

    #[test]
    fn two_modems_are_not_confused_by_the_only_recent_rule() {
        let mut t = DeviceTracker::new();
        let a = t.observe(&appear(0, snap(3, &[1], 0x2c7c, 0x0125)));
        let b = t.observe(&appear(0, snap(3, &[2], 0x2c7c, 0x0125)));
        t.observe(&vanish(1_000, "3-1"));
        t.observe(&vanish(1_100, "3-2"));
        // Appears on a third port: two candidates, no rule picks one.
        let c = t.observe(&appear(2_000, snap(5, &[7], 0x05c6, 0x9008)));
        assert_eq!(c.rule, MatchRule::New);
        assert!(c.id != a.id && c.id != b.id);
        // Appears at the second one's port: port history.
        let d = t.observe(&appear(2_500, snap(3, &[2], 0x05c6, 0x9008)));
        assert_eq!(d.id, b.id);
    }

    #[test]
    fn a_missed_vanish_is_the_same_location() {
        let mut t = DeviceTracker::new();
        let a = t.observe(&appear(0, snap(3, &[1], 0x2c7c, 0x0125)));
        let b = t.observe(&appear(9_000, snap(3, &[1], 0x2c7c, 0x0125)));
        assert_eq!((b.id, b.rule), (a.id, MatchRule::SameLocation));
        assert_eq!(t.get(a.id.unwrap()).unwrap().history.len(), 2);
    }

    #[test]
    fn different_serials_are_different_devices_even_in_the_same_port() {
        let mut t = DeviceTracker::new();
        let mut x = snap(3, &[1], 0x2c7c, 0x0125);
        x.serial = Some("aaaa1111".into());
        let a = t.observe(&appear(0, x.clone()));
        t.observe(&vanish(1_000, "3-1"));
        x.serial = Some("bbbb2222".into());
        let b = t.observe(&appear(2_000, x));
        assert_eq!(b.rule, MatchRule::New);
        assert_ne!(a.id, b.id);
        assert_eq!(
            t.observe(&vanish(3_000, "9-9")).rule,
            MatchRule::UnknownVanish
        );
    }

    #[test]
    fn memory_is_bounded() {
        let mut t = DeviceTracker::new();
        for k in 0..(MAX_TRACKED as u64 + 50) {
            let mut s = snap(1, &[1], 0x1234, 0x5678);
            s.serial = Some(format!("s{k}"));
            t.observe(&appear(k * 100_000, s));
            t.observe(&vanish(k * 100_000 + 1, "1-1"));
        }
        assert!(t.devices().count() <= MAX_TRACKED);
    }
}
