//! Device sources around recordings: [`RecordingSource`] writes every event of another source
//! to a recording as it passes; [`ReplaySource`] plays a recording's hotplug events back, at the
//! recorded pace times a speed factor.

use std::time::{Duration, Instant};

use super::reader::Recording;
use super::writer::{lock, SharedRecorder};
use crate::device::{DeviceEvent, DeviceSource};

/// Passes another source's events through and records each one (redacted) as `hotplug`.
pub struct RecordingSource<S> {
    inner: S,
    recorder: SharedRecorder,
}

impl<S: DeviceSource> RecordingSource<S> {
    pub fn new(inner: S, recorder: SharedRecorder) -> Self {
        RecordingSource { inner, recorder }
    }

    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: DeviceSource> DeviceSource for RecordingSource<S> {
    fn next_event(&mut self, timeout: Duration) -> crate::Result<Option<DeviceEvent>> {
        let ev = self.inner.next_event(timeout)?;
        if let Some(e) = &ev {
            lock(&self.recorder).hotplug(e);
        }
        Ok(ev)
    }

    fn describe(&self) -> String {
        format!("{} (recording)", self.inner.describe())
    }

    fn finished(&self) -> bool {
        self.inner.finished()
    }
}

/// Drain `source` for `duration` (or until it is finished or `stop` is set), handing each event
/// to `each`; returns how many there were. With a [`RecordingSource`] this records a device
/// timeline, e.g. a 14 s boot loop: `pump(&mut RecordingSource::new(src, rec), 14 s, …)`.
pub fn pump(
    source: &mut dyn DeviceSource,
    duration: Duration,
    stop: &std::sync::atomic::AtomicBool,
    each: &mut dyn FnMut(&DeviceEvent),
) -> crate::Result<usize> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        let left = duration.saturating_sub(start.elapsed());
        if left.is_zero() || source.finished() || stop.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(n);
        }
        if let Some(e) = source.next_event(left.min(Duration::from_millis(100)))? {
            each(&e);
            n += 1;
        }
    }
}

/// The hotplug events of a recording as a [`DeviceSource`]. Events keep their recorded `t_ms`;
/// they are released at the recorded pace (relative to the first one) divided by `speed`;
/// speed 0 releases them as fast as they are asked for.
pub struct ReplaySource {
    events: Vec<DeviceEvent>,
    next: usize,
    speed: f64,
    started: Option<Instant>,
    source: String,
}

impl ReplaySource {
    /// `speed`: 1.0 real time, 2.0 twice as fast, 0 (or anything not positive and finite) no
    /// waiting at all.
    pub fn new(recording: &Recording, speed: f64) -> Self {
        ReplaySource {
            events: recording.device_events(),
            next: 0,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                0.0
            },
            started: None,
            source: recording.source.clone(),
        }
    }

    /// How many events there are in all.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// When event `i` is due, from the start of the replay.
    fn due(&self, i: usize) -> Duration {
        if self.speed == 0.0 {
            return Duration::ZERO;
        }
        let t0 = self.events.first().map(|e| e.t_ms).unwrap_or(0);
        let ms = self.events[i].t_ms.saturating_sub(t0) as f64 / self.speed;
        Duration::from_secs_f64((ms / 1000.0).min(1e9))
    }
}

impl DeviceSource for ReplaySource {
    fn next_event(&mut self, timeout: Duration) -> crate::Result<Option<DeviceEvent>> {
        if self.next >= self.events.len() {
            return Ok(None);
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let due = self.due(self.next);
        let now = started.elapsed();
        if due > now {
            let wait = due - now;
            if wait > timeout {
                std::thread::sleep(timeout);
                return Ok(None);
            }
            std::thread::sleep(wait);
        }
        let ev = self.events[self.next].clone();
        self.next += 1;
        Ok(Some(ev))
    }

    fn describe(&self) -> String {
        format!("replay {}", self.source)
    }

    fn finished(&self) -> bool {
        self.next >= self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceChange, DeviceSnapshot};
    use crate::record::writer::{RecordOptions, Recorder};
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Mem(Arc<Mutex<Vec<u8>>>);
    impl Write for Mem {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A finite scripted source.
    struct Script(Vec<DeviceEvent>);
    impl DeviceSource for Script {
        fn next_event(&mut self, _t: Duration) -> crate::Result<Option<DeviceEvent>> {
            Ok(if self.0.is_empty() {
                None
            } else {
                Some(self.0.remove(0))
            })
        }
        fn describe(&self) -> String {
            "script".into()
        }
        fn finished(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn edl(serial: &str) -> DeviceSnapshot {
        DeviceSnapshot {
            bus: 3,
            ports: vec![1, 2],
            address: 7,
            vid: 0x05c6,
            pid: 0x9008,
            bcd_device: 0,
            manufacturer: None,
            product: Some(format!("QUSB_BULK_CID:0410_SN:{serial}")),
            serial: None,
            speed: None,
            interfaces: vec![],
            origin: Some("sim".into()),
        }
    }

    #[test]
    fn recorded_hotplug_events_replay_in_order_and_redacted() {
        let mem = Mem::default();
        let rec = Recorder::new(Box::new(mem.clone()), RecordOptions::default())
            .unwrap()
            .shared();
        let script = Script(vec![
            DeviceEvent {
                t_ms: 0,
                change: DeviceChange::Appear {
                    device: edl("49CBD7EF"),
                },
            },
            DeviceEvent {
                t_ms: 10,
                change: DeviceChange::Vanish {
                    location: "3-1.2".into(),
                    last: Some(edl("49CBD7EF")),
                },
            },
        ]);
        let mut src = RecordingSource::new(script, rec.clone());
        let stop = std::sync::atomic::AtomicBool::new(false);
        let mut locations = Vec::new();
        let seen = pump(&mut src, Duration::from_secs(5), &stop, &mut |e| {
            locations.push(e.location())
        })
        .unwrap();
        assert_eq!(seen, 2);
        assert_eq!(locations, ["3-1.2", "3-1.2"]);
        assert!(src.finished());
        lock(&rec).finish().unwrap();
        drop(src);
        drop(rec);
        let bytes = mem.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(!text.contains("49CBD7EF"), "{text}");
        let recording = Recording::parse(&bytes[..], "mem").unwrap();
        let mut replay = ReplaySource::new(&recording, 0.0);
        assert_eq!(replay.len(), 2);
        let a = replay.next_event(Duration::ZERO).unwrap().unwrap();
        match a.change {
            DeviceChange::Appear { device } => assert_eq!(
                device.product.as_deref(),
                Some("QUSB_BULK_CID:0410_SN:00000001")
            ),
            other => panic!("{other:?}"),
        }
        let b = replay.next_event(Duration::ZERO).unwrap().unwrap();
        match b.change {
            DeviceChange::Vanish { last: Some(d), .. } => {
                assert_eq!(d.product.as_deref(), Some("QUSB_BULK_CID:0410_SN:00000001"))
            }
            other => panic!("{other:?}"),
        }
        assert!(replay.finished());
        assert_eq!(replay.next_event(Duration::ZERO).unwrap(), None);
    }
}
