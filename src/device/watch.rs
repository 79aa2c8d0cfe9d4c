//! Watching the bus: a [`PollingSource`] turns repeated listings into appear/vanish events (woken
//! at once by nusb hotplug when the host runs udev, and rescanning on a short interval anyway, so
//! it also works on routers without udevd and never misses a device that enumerated between a
//! hotplug message and a listing), and a [`MergedSource`] follows several sources at once (real USB
//! alongside an emulator).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot, DeviceSource};

/// A function listing the devices present now.
pub type Lister = Box<dyn FnMut() -> crate::Result<Vec<DeviceSnapshot>> + Send>;

/// Turns successive listings into events. A device is the same one while its location, bus
/// address and VID:PID stay the same; a re-enumeration on the same port (new address, or a new
/// VID:PID after a mode switch) is a vanish followed by an appear, even when both happened
/// between two listings.
#[derive(Debug, Default)]
pub struct Differ {
    known: BTreeMap<String, DeviceSnapshot>,
}

fn same_device(a: &DeviceSnapshot, b: &DeviceSnapshot) -> bool {
    a.address == b.address && a.vid == b.vid && a.pid == b.pid
}

impl Differ {
    pub fn new() -> Differ {
        Differ::default()
    }

    /// The changes from the previous listing to `now`, stamped `t_ms`: vanishes first (sorted by
    /// location), then appears.
    pub fn update(&mut self, now: Vec<DeviceSnapshot>, t_ms: u64) -> Vec<DeviceEvent> {
        let mut next: BTreeMap<String, DeviceSnapshot> = BTreeMap::new();
        for d in now {
            next.insert(d.location(), d);
        }
        let mut events = Vec::new();
        for (loc, old) in &self.known {
            let gone = match next.get(loc) {
                None => true,
                Some(new) => !same_device(old, new),
            };
            if gone {
                events.push(DeviceEvent {
                    t_ms,
                    change: DeviceChange::Vanish {
                        location: loc.clone(),
                        last: Some(old.clone()),
                    },
                });
            }
        }
        for (loc, new) in &next {
            let fresh = match self.known.get(loc) {
                None => true,
                Some(old) => !same_device(old, new),
            };
            if fresh {
                events.push(DeviceEvent {
                    t_ms,
                    change: DeviceChange::Appear {
                        device: new.clone(),
                    },
                });
            }
        }
        self.known = next;
        events
    }

    /// The devices of the last listing.
    pub fn present(&self) -> impl Iterator<Item = &DeviceSnapshot> {
        self.known.values()
    }
}

/// A device source built from a [`Lister`], rescanned every `interval` and at once when a wake-up
/// arrives (from nusb hotplug, see [`PollingSource::with_usb_hotplug`]).
pub struct PollingSource {
    list: Lister,
    differ: Differ,
    pending: VecDeque<DeviceEvent>,
    start: Instant,
    interval: Duration,
    last_scan: Option<Instant>,
    wake: Option<Receiver<()>>,
    stop: Arc<AtomicBool>,
    name: String,
}

/// How often the bus is rescanned when no hotplug message arrives.
pub const DEFAULT_RESCAN: Duration = Duration::from_millis(250);

impl PollingSource {
    pub fn new(name: impl Into<String>, list: Lister, interval: Duration) -> PollingSource {
        PollingSource {
            list,
            differ: Differ::new(),
            pending: VecDeque::new(),
            start: Instant::now(),
            interval: interval.max(Duration::from_millis(10)),
            last_scan: None,
            wake: None,
            stop: Arc::new(AtomicBool::new(false)),
            name: name.into(),
        }
    }

    /// Also rescan the moment the kernel (through udev) announces a USB device. The hotplug watch
    /// is opened here, before the first listing, so nothing that enumerates in between is
    /// missed. Without udev (many routers) or without permission for the netlink socket, the
    /// source keeps its interval rescans and says so in the log.
    pub fn with_usb_hotplug(mut self) -> PollingSource {
        match nusb::watch_devices() {
            Ok(watch) => {
                let (tx, rx) = mpsc::sync_channel(1);
                let stop = self.stop.clone();
                let spawned = std::thread::Builder::new()
                    .name("usb-hotplug".into())
                    .spawn(move || hotplug_loop(watch, tx, stop));
                if spawned.is_ok() {
                    self.wake = Some(rx);
                    self.name.push_str(" + hotplug");
                }
            }
            Err(e) => {
                tracing::info!(
                    "USB hotplug notifications are unavailable ({e}); rescanning every {} ms instead",
                    self.interval.as_millis()
                );
            }
        }
        self
    }

    fn t_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn scan(&mut self) -> crate::Result<()> {
        let now = (self.list)()?;
        let t = self.t_ms();
        self.last_scan = Some(Instant::now());
        self.pending.extend(self.differ.update(now, t));
        Ok(())
    }
}

impl Drop for PollingSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl DeviceSource for PollingSource {
    fn next_event(&mut self, timeout: Duration) -> crate::Result<Option<DeviceEvent>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(Some(e));
            }
            let due = match self.last_scan {
                None => true,
                Some(at) => at.elapsed() >= self.interval,
            };
            if due {
                self.scan()?;
                if !self.pending.is_empty() {
                    continue;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let until_scan = self
                .last_scan
                .map(|at| self.interval.saturating_sub(at.elapsed()))
                .unwrap_or_default();
            let wait = until_scan.min(deadline - now);
            let woken = match &self.wake {
                Some(rx) => match rx.recv_timeout(wait) {
                    Ok(()) => true,
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => {
                        self.wake = None;
                        false
                    }
                },
                None => {
                    std::thread::sleep(wait);
                    false
                }
            };
            if woken {
                // udev announces the device before every interface is bound; a short settle
                // lets the listing see the ttys too. The interval rescan catches later changes.
                std::thread::sleep(Duration::from_millis(20));
                self.scan()?;
            }
        }
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}

/// This host's USB bus as a source: sysfs listings (via nusb) rescanned every
/// [`DEFAULT_RESCAN`] and at once on a hotplug message. A host where USB cannot be listed at all
/// (a container without /sys/bus/usb) gives a source that stays empty, with the reason logged
/// once, so an emulator source beside it still works.
pub fn usb_source(sysfs: crate::device::enumerate::Sysfs) -> PollingSource {
    let mut warned = false;
    let lister: Lister = Box::new(
        move || match crate::device::enumerate::list_devices(&sysfs) {
            Ok(list) => Ok(list),
            Err(e) => {
                if !warned {
                    tracing::warn!("USB is not visible here, watching other sources only: {e}");
                    warned = true;
                }
                Ok(Vec::new())
            }
        },
    );
    PollingSource::new("USB", lister, DEFAULT_RESCAN).with_usb_hotplug()
}

struct ThreadWaker(std::thread::Thread);

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn hotplug_loop(mut watch: nusb::hotplug::HotplugWatch, tx: SyncSender<()>, stop: Arc<AtomicBool>) {
    use futures_core::Stream;
    use std::task::{Context, Poll};
    let waker = Arc::new(ThreadWaker(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    while !stop.load(Ordering::SeqCst) {
        match std::pin::Pin::new(&mut watch).poll_next(&mut cx) {
            Poll::Ready(Some(_)) => {
                // A full channel already holds a wake-up: the rescan will see this change too.
                if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(()) {
                    return;
                }
            }
            Poll::Ready(None) => return,
            // Parked until the reactor wakes us; the timeout lets the loop notice `stop`.
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(500)),
        }
    }
}

/// Several sources followed at once, each on its own thread. Events are re-stamped with this
/// source's clock (each source counts from its own start) unless there is only one source.
pub struct MergedSource {
    rx: Receiver<crate::Result<DeviceEvent>>,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
    start: Instant,
    restamp: bool,
    live: usize,
    done: Arc<std::sync::atomic::AtomicUsize>,
}

impl MergedSource {
    pub fn new(sources: Vec<Box<dyn DeviceSource>>) -> MergedSource {
        let (tx, rx) = mpsc::sync_channel(1024);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let names = sources.iter().map(|s| s.describe()).collect();
        let restamp = sources.len() > 1;
        let live = sources.len();
        for mut s in sources {
            let tx = tx.clone();
            let stop = stop.clone();
            let done = done.clone();
            let _ = std::thread::Builder::new()
                .name("device-source".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        match s.next_event(Duration::from_millis(200)) {
                            Ok(Some(e)) => {
                                if tx.send(Ok(e)).is_err() {
                                    break;
                                }
                            }
                            Ok(None) if s.finished() => break,
                            Ok(None) => {}
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                break;
                            }
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
        }
        MergedSource {
            rx,
            names,
            stop,
            start: Instant::now(),
            restamp,
            live,
            done,
        }
    }
}

impl Drop for MergedSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl DeviceSource for MergedSource {
    fn next_event(&mut self, timeout: Duration) -> crate::Result<Option<DeviceEvent>> {
        match self.rx.recv_timeout(timeout) {
            Ok(Ok(mut e)) => {
                if self.restamp {
                    e.t_ms = self.start.elapsed().as_millis() as u64;
                }
                Ok(Some(e))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(None),
        }
    }

    fn describe(&self) -> String {
        self.names.join(" + ")
    }

    fn finished(&self) -> bool {
        self.done.load(Ordering::SeqCst) >= self.live && self.rx.try_recv().is_err()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn dev(ports: &[u8], address: u8, pid: u16) -> DeviceSnapshot {
        DeviceSnapshot {
            bus: 1,
            ports: ports.to_vec(),
            address,
            vid: 0x05c6,
            pid,
            bcd_device: 0,
            manufacturer: None,
            product: None,
            serial: None,
            speed: None,
            interfaces: vec![],
            origin: None,
        }
    }

    fn kinds(events: &[DeviceEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match &e.change {
                DeviceChange::Appear { device } => format!("+{}@{}", device.id(), e.location()),
                DeviceChange::Vanish { .. } => format!("-{}", e.location()),
            })
            .collect()
    }

    #[test]
    fn differ_reports_appear_vanish_and_same_port_reenumeration() {
        let mut d = Differ::new();
        assert_eq!(
            kinds(&d.update(vec![dev(&[1], 3, 0x9008)], 0)),
            ["+05c6:9008@1-1"]
        );
        assert!(d.update(vec![dev(&[1], 3, 0x9008)], 10).is_empty());
        // Reset between two listings: same port, new address.
        assert_eq!(
            kinds(&d.update(vec![dev(&[1], 4, 0x9008)], 20)),
            ["-1-1", "+05c6:9008@1-1"]
        );
        // Mode switch on the same port.
        assert_eq!(
            kinds(&d.update(vec![dev(&[1], 4, 0x900e), dev(&[2], 5, 0x9008)], 30)),
            ["-1-1", "+05c6:900e@1-1", "+05c6:9008@1-2"]
        );
        assert_eq!(kinds(&d.update(vec![], 40)), ["-1-1", "-1-2"]);
    }

    #[test]
    fn polling_source_turns_listings_into_events() {
        let script = Arc::new(Mutex::new(vec![
            vec![],
            vec![dev(&[1], 2, 0x9008)],
            vec![dev(&[1], 2, 0x9008)],
            vec![],
        ]));
        let s2 = script.clone();
        let lister: Lister = Box::new(move || {
            let mut s = s2.lock().unwrap();
            Ok(if s.len() > 1 {
                s.remove(0)
            } else {
                s[0].clone()
            })
        });
        let mut src = PollingSource::new("test", lister, Duration::from_millis(10));
        let mut seen = Vec::new();
        for _ in 0..50 {
            if let Some(e) = src.next_event(Duration::from_millis(20)).unwrap() {
                seen.push(e);
            }
            if seen.len() == 2 {
                break;
            }
        }
        assert_eq!(kinds(&seen), ["+05c6:9008@1-1", "-1-1"]);
        assert!(seen[0].t_ms <= seen[1].t_ms);
    }

    #[test]
    fn merged_source_forwards_from_every_source() {
        let mk = |ports: u8| -> Box<dyn DeviceSource> {
            let lister: Lister = Box::new(move || Ok(vec![dev(&[ports], 1, 0x9008)]));
            Box::new(PollingSource::new(
                format!("s{ports}"),
                lister,
                Duration::from_millis(10),
            ))
        };
        let mut m = MergedSource::new(vec![mk(1), mk(2)]);
        let mut locs = Vec::new();
        for _ in 0..100 {
            if let Some(e) = m.next_event(Duration::from_millis(20)).unwrap() {
                locs.push(e.location());
            }
            if locs.len() == 2 {
                break;
            }
        }
        locs.sort();
        assert_eq!(locs, ["1-1", "1-2"]);
        assert_eq!(m.describe(), "s1 + s2");
    }
}
