//! What is plugged in: our own device snapshots ([`snapshot`]), and the stream of appear/vanish
//! events a [`DeviceSource`] produces — from real USB (nusb hotplug), the emulator, or a recording.
//! Everything above a source (classifier, boot-loop detector, console) is testable without
//! hardware because it sees only [`DeviceEvent`]s.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod bootloop;
pub mod classify;
pub mod enumerate;
pub mod identity;
pub mod kernlog;
pub mod lsusb;
pub mod models;
pub mod monitor;
pub mod sim_source;
pub mod sim_wire;
pub mod snapshot;
pub mod watch;

pub use snapshot::{DeviceSnapshot, EndpointSnapshot, InterfaceSnapshot, Speed, TransferType};

/// What happened to a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum DeviceChange {
    /// A device enumerated (or was present when watching began).
    Appear { device: DeviceSnapshot },
    /// The device at `location` left the bus. The last snapshot is carried when the source knows
    /// it (a vanished device cannot be asked for its descriptors any more).
    Vanish {
        location: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<DeviceSnapshot>,
    },
}

/// One event with its time: milliseconds since the source started (monotonic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceEvent {
    pub t_ms: u64,
    #[serde(flatten)]
    pub change: DeviceChange,
}

impl DeviceEvent {
    /// The location the event is about.
    pub fn location(&self) -> String {
        match &self.change {
            DeviceChange::Appear { device } => device.location(),
            DeviceChange::Vanish { location, .. } => location.clone(),
        }
    }
}

/// A blocking source of device events. The first events after creation describe the devices
/// already present (as `Appear`), then live changes follow; implementations must start watching
/// *before* listing so nothing that enumerates in between is missed.
pub trait DeviceSource: Send {
    /// Wait at most `timeout` for the next event. `Ok(None)` when nothing happened in time;
    /// `Err` when the source itself failed (it cannot recover); a finished finite source (a
    /// replay at its end) returns `Ok(None)` immediately and [`DeviceSource::finished`] is true.
    fn next_event(&mut self, timeout: Duration) -> crate::Result<Option<DeviceEvent>>;

    /// One line for people: `USB (nusb hotplug)`, `emulator at /tmp/x.sock`, `replay x.jsonl`.
    fn describe(&self) -> String;

    /// A finite source (a replay) that has nothing more to give.
    fn finished(&self) -> bool {
        false
    }
}

impl<S: DeviceSource + ?Sized> DeviceSource for Box<S> {
    fn next_event(&mut self, timeout: Duration) -> crate::Result<Option<DeviceEvent>> {
        (**self).next_event(timeout)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn finished(&self) -> bool {
        (**self).finished()
    }
}
