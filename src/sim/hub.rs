//! The emulator's USB bus: which emulated devices are present, and the appear/vanish events that
//! go to every listener (the announcement socket's clients, or an in-process [`HubSource`]).
//!
//! Publishing never blocks: every listener has a bounded queue, and a listener whose queue is
//! full is dropped (it learns so when it has drained what it got). A new listener first gets one
//! `Appear` per device already present, with the time it appeared.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot, DeviceSource};
use crate::{Error, ErrorKind};

/// Default queue length per listener: a boot loop makes two events per period.
pub const DEFAULT_QUEUE: usize = 1024;

struct Listener {
    tx: SyncSender<DeviceEvent>,
    dropped: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    /// location → (order of appearance, t_ms of its appearance, snapshot).
    present: BTreeMap<String, (u64, u64, DeviceSnapshot)>,
    seq: u64,
    listeners: Vec<Listener>,
    closed: bool,
}

/// The emulator's bus. Cheap to clone (shared).
#[derive(Clone)]
pub struct UsbHub {
    inner: Arc<Mutex<Inner>>,
    started: Instant,
}

impl Default for UsbHub {
    fn default() -> Self {
        Self::new()
    }
}

/// A listener's end: events in order, then a closed channel.
pub struct Subscription {
    pub rx: Receiver<DeviceEvent>,
    dropped: Arc<AtomicBool>,
}

impl Subscription {
    /// True when the hub dropped this listener because its queue was full.
    pub fn was_dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl UsbHub {
    pub fn new() -> Self {
        UsbHub {
            inner: Arc::new(Mutex::new(Inner::default())),
            started: Instant::now(),
        }
    }

    /// The instant `t_ms` counts from.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Milliseconds since the hub started.
    pub fn t_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking listener cannot leave the map half-updated; keep going with its state.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(inner: &mut Inner, event: &DeviceEvent) {
        inner
            .listeners
            .retain(|l| match l.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::warn!("dropping a device-event listener that does not keep up");
                    l.dropped.store(true, Ordering::SeqCst);
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            });
    }

    /// `device` enumerated now. A device already present at the same location is replaced (a
    /// vanish is published for it first).
    pub fn appear(&self, device: DeviceSnapshot) -> DeviceEvent {
        let mut inner = self.lock();
        let location = device.location();
        let t_ms = self.t_ms();
        if let Some((_, _, last)) = inner.present.remove(&location) {
            let v = DeviceEvent {
                t_ms,
                change: DeviceChange::Vanish {
                    location: location.clone(),
                    last: Some(last),
                },
            };
            Self::publish(&mut inner, &v);
        }
        inner.seq += 1;
        let seq = inner.seq;
        inner.present.insert(location, (seq, t_ms, device.clone()));
        let e = DeviceEvent {
            t_ms,
            change: DeviceChange::Appear { device },
        };
        Self::publish(&mut inner, &e);
        e
    }

    /// The device at `location` left the bus; `None` if nothing was there.
    pub fn vanish(&self, location: &str) -> Option<DeviceEvent> {
        let mut inner = self.lock();
        let (_, _, last) = inner.present.remove(location)?;
        let e = DeviceEvent {
            t_ms: self.t_ms(),
            change: DeviceChange::Vanish {
                location: location.to_string(),
                last: Some(last),
            },
        };
        Self::publish(&mut inner, &e);
        Some(e)
    }

    /// Devices present now.
    pub fn present(&self) -> Vec<DeviceSnapshot> {
        self.lock()
            .present
            .values()
            .map(|(_, _, d)| d.clone())
            .collect()
    }

    /// A new listener with a queue of `capacity` events (at least the devices present plus a few),
    /// primed with an `Appear` per present device. After [`UsbHub::close`] the channel is closed
    /// right after that state.
    pub fn subscribe(&self, capacity: usize) -> Subscription {
        let mut inner = self.lock();
        let (tx, rx) = mpsc::sync_channel(capacity.max(inner.present.len() + 8));
        let dropped = Arc::new(AtomicBool::new(false));
        let mut state: Vec<_> = inner.present.values().collect();
        state.sort_by_key(|(seq, _, _)| *seq);
        let state: Vec<DeviceEvent> = state
            .into_iter()
            .map(|(_, t, d)| DeviceEvent {
                t_ms: *t,
                change: DeviceChange::Appear { device: d.clone() },
            })
            .collect();
        for e in state {
            // Cannot fail: the queue was sized for the state.
            let _ = tx.try_send(e);
        }
        if !inner.closed {
            inner.listeners.push(Listener {
                tx,
                dropped: dropped.clone(),
            });
        }
        Subscription { rx, dropped }
    }

    /// No more events: every listener's channel closes once drained.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.listeners.clear();
    }

    /// An in-process [`DeviceSource`] over this hub (no socket).
    pub fn source(&self) -> HubSource {
        HubSource {
            sub: self.subscribe(DEFAULT_QUEUE),
            finished: false,
        }
    }
}

/// A [`DeviceSource`] reading a hub in the same process (tests, benchmarks, `qrescue demo`).
pub struct HubSource {
    sub: Subscription,
    finished: bool,
}

impl DeviceSource for HubSource {
    fn next_event(&mut self, timeout: Duration) -> crate::Result<Option<DeviceEvent>> {
        if self.finished {
            return Ok(None);
        }
        match self.sub.rx.recv_timeout(timeout) {
            Ok(e) => Ok(Some(e)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => {
                self.finished = true;
                if self.sub.was_dropped() {
                    Err(Error::new(
                        ErrorKind::Failure,
                        "Stopped following the emulated USB bus",
                        "this watcher read its events too slowly and the emulator dropped it",
                        "Watch again; read events promptly",
                    ))
                } else {
                    Ok(None)
                }
            }
        }
    }

    fn describe(&self) -> String {
        "emulator (in-process)".into()
    }

    fn finished(&self) -> bool {
        self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::profile::Profile;
    use crate::sim::usb_ids::boot_rom_snapshot;

    const T: Duration = Duration::from_secs(2);

    fn snap(seed: u64) -> DeviceSnapshot {
        boot_rom_snapshot(&Profile::by_name("ec25").unwrap().for_unit(seed), None, 2)
    }

    #[test]
    fn listeners_get_state_then_changes_in_order() {
        let hub = UsbHub::new();
        let a = snap(1);
        hub.appear(a.clone());
        let mut early = hub.source();
        let b = snap(2);
        assert_ne!(a.location(), b.location());
        hub.appear(b.clone());
        let mut late = hub.source();
        assert!(hub.vanish(&a.location()).is_some());
        assert!(hub.vanish(&a.location()).is_none(), "already gone");
        hub.close();

        let kinds = |s: &mut HubSource| {
            let mut v = Vec::new();
            while let Some(e) = s.next_event(T).unwrap() {
                let k = match e.change {
                    DeviceChange::Appear { .. } => "appear",
                    DeviceChange::Vanish { .. } => "vanish",
                };
                v.push((k, e.location(), e.t_ms));
            }
            assert!(s.finished());
            v
        };
        let e = kinds(&mut early);
        let l = kinds(&mut late);
        assert_eq!(
            e.iter().map(|x| (x.0, x.1.clone())).collect::<Vec<_>>(),
            vec![
                ("appear", a.location()),
                ("appear", b.location()),
                ("vanish", a.location())
            ]
        );
        // The late listener saw both present devices as its state, oldest first.
        assert_eq!(
            l.iter().map(|x| (x.0, x.1.clone())).collect::<Vec<_>>(),
            e.iter().map(|x| (x.0, x.1.clone())).collect::<Vec<_>>()
        );
        assert!(e.windows(2).all(|w| w[0].2 <= w[1].2));
        assert_eq!(hub.present(), vec![b]);
    }

    #[test]
    fn a_full_listener_is_dropped_without_blocking_the_hub() {
        let hub = UsbHub::new();
        let sub = hub.subscribe(1);
        // The queue holds at least 8 events; publish many more without anyone reading.
        for i in 0..50 {
            let s = snap(1 + i % 2);
            hub.appear(s.clone());
            hub.vanish(&s.location());
        }
        assert!(sub.was_dropped());
        let mut src = HubSource {
            sub,
            finished: false,
        };
        let mut n = 0;
        let err = loop {
            match src.next_event(T) {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("a dropped listener must learn it was dropped"),
                Err(e) => break e,
            }
        };
        assert!(n >= 8);
        assert!(err.why.contains("too slowly"), "{err:?}");
        assert!(src.finished());
    }

    #[test]
    fn reappearing_at_the_same_location_replaces_the_device() {
        let hub = UsbHub::new();
        let mut src = hub.source();
        hub.appear(snap(1));
        hub.appear(snap(1));
        let kinds: Vec<_> = std::iter::from_fn(|| src.next_event(Duration::ZERO).unwrap())
            .map(|e| matches!(e.change, DeviceChange::Appear { .. }))
            .collect();
        assert_eq!(kinds, vec![true, false, true]);
        assert_eq!(hub.present().len(), 1);
    }
}
