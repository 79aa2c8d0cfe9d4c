//! The live picture of what is plugged in, shared by `qrescue watch`, `replay` and the console:
//! every [`DeviceEvent`] goes through the identity tracker (one id per physical modem across
//! mode switches), the classifier, and one boot-loop detector per device.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::device::bootloop::{LoopConfig, LoopDetector, LoopStatus, ModeClass};
use crate::device::classify::{classify, Classification, Mode};
use crate::device::identity::{DeviceId, DeviceTracker, Observation};
use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot};

/// The loop detector's view of a classified mode.
pub fn mode_class(mode: &Mode) -> ModeClass {
    match mode {
        Mode::Edl => ModeClass::Edl,
        Mode::CrashDump => ModeClass::CrashDump,
        Mode::QuectelNormal { .. } => ModeClass::Normal,
        Mode::Fastboot => ModeClass::Fastboot,
        Mode::Broken { .. } => ModeClass::Broken,
        Mode::QualcommDownload { .. } | Mode::Unrelated => ModeClass::Other,
    }
}

/// What one event meant.
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    pub t_ms: u64,
    /// `appear`, `present` (there when watching began) or `vanish`.
    pub event: &'static str,
    pub location: String,
    /// The tracked device (None for a vanish nobody tracked).
    pub id: Option<DeviceId>,
    /// The snapshot of the appearance, or the last one known for a vanish.
    pub device: Option<DeviceSnapshot>,
    pub class: Option<Classification>,
    /// How the tracker matched the event to a device.
    pub matched: Observation,
    /// The device's loop status after this event.
    pub loop_status: LoopStatus,
    /// True when this event turned the status into a detected loop.
    pub loop_detected: bool,
}

impl Update {
    /// A modem qrescue cares about (not a keyboard or a hub).
    pub fn relevant(&self) -> bool {
        self.class
            .as_ref()
            .map(|c| c.mode.is_relevant())
            .unwrap_or(false)
    }
}

/// One device as the monitor sees it now.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub id: DeviceId,
    pub present: bool,
    pub location: String,
    pub device: DeviceSnapshot,
    pub class: Classification,
    pub loop_status: LoopStatus,
}

/// Tracker + classifier + per-device loop detectors.
#[derive(Debug)]
pub struct Monitor {
    tracker: DeviceTracker,
    loops: BTreeMap<DeviceId, LoopDetector>,
    classes: BTreeMap<DeviceId, Classification>,
    config: LoopConfig,
    last_t: u64,
}

impl Default for Monitor {
    fn default() -> Self {
        Monitor::new(LoopConfig::default())
    }
}

impl Monitor {
    pub fn new(config: LoopConfig) -> Monitor {
        Monitor {
            tracker: DeviceTracker::new(),
            loops: BTreeMap::new(),
            classes: BTreeMap::new(),
            config,
            last_t: 0,
        }
    }

    /// A device that was already there when watching began (its appearance time is unknown,
    /// so it does not count towards a loop period).
    pub fn observe_initial(&mut self, ev: &DeviceEvent) -> Update {
        self.take(ev, true)
    }

    /// A live event.
    pub fn observe(&mut self, ev: &DeviceEvent) -> Update {
        self.take(ev, false)
    }

    fn take(&mut self, ev: &DeviceEvent, initial: bool) -> Update {
        self.last_t = self.last_t.max(ev.t_ms);
        let matched = self.tracker.observe(ev);
        let id = matched.id;
        let before = id
            .map(|id| self.loop_status(id, ev.t_ms).is_looping())
            .unwrap_or(false);
        let (event, device, class) = match &ev.change {
            DeviceChange::Appear { device } => {
                let class = classify(device);
                if let Some(id) = id {
                    let det = self
                        .loops
                        .entry(id)
                        .or_insert_with(|| LoopDetector::new(self.config.clone()));
                    let mode = mode_class(&class.mode);
                    if initial {
                        det.observe_already_present(ev.t_ms, mode, device.id());
                    } else {
                        det.observe_appear(ev.t_ms, mode, device.id());
                    }
                    self.classes.insert(id, class.clone());
                }
                (
                    if initial { "present" } else { "appear" },
                    Some(device.clone()),
                    Some(class),
                )
            }
            DeviceChange::Vanish { last, .. } => {
                let tracked_last = id
                    .and_then(|id| self.tracker.get(id))
                    .map(|d| d.last.clone());
                if let Some(det) = id.and_then(|id| self.loops.get_mut(&id)) {
                    det.observe_vanish(ev.t_ms);
                }
                let device = last.clone().or(tracked_last);
                let class = id
                    .and_then(|id| self.classes.get(&id).cloned())
                    .or_else(|| device.as_ref().map(classify));
                ("vanish", device, class)
            }
        };
        let loop_status = id
            .map(|id| self.loop_status(id, ev.t_ms))
            .unwrap_or(LoopStatus::None);
        Update {
            t_ms: ev.t_ms,
            event,
            location: ev.location(),
            id,
            device,
            class,
            matched,
            loop_detected: loop_status.is_looping() && !before,
            loop_status,
        }
    }

    /// The loop status of one device at `now_ms`.
    pub fn loop_status(&self, id: DeviceId, now_ms: u64) -> LoopStatus {
        self.loops
            .get(&id)
            .map(|d| d.status(now_ms))
            .unwrap_or(LoopStatus::None)
    }

    /// Every tracked device, present ones first, then by id.
    pub fn devices(&self, now_ms: u64) -> Vec<DeviceView> {
        let mut out: Vec<DeviceView> = self
            .tracker
            .devices()
            .filter_map(|d| {
                Some(DeviceView {
                    id: d.id,
                    present: d.present,
                    location: d.location.clone(),
                    device: d.last.clone(),
                    class: self.classes.get(&d.id)?.clone(),
                    loop_status: self.loop_status(d.id, now_ms),
                })
            })
            .collect();
        out.sort_by_key(|v| (!v.present, v.id));
        out
    }

    /// The latest event time seen.
    pub fn last_t_ms(&self) -> u64 {
        self.last_t
    }
}
