//! [`SimSource`]: follow a running `qrescue sim` from another process through the socket named
//! in its first JSON line (`"socket"`), as a [`DeviceSource`] beside real USB.
//!
//! - Every wait is bounded: `connect` waits at most [`HEADER_WAIT`] for the header, and
//!   [`DeviceSource::next_event`] at most its timeout.
//! - Input is checked: lines longer than [`sim_wire::MAX_LINE`], non-JSON, or objects that are not
//!   events are an error (the source then ends); nothing panics.
//! - When the emulator exits it says `bye`: devices it still listed are reported as vanished and
//!   the source is [`finished`](DeviceSource::finished). If it disappears without a word (killed),
//!   the same vanish events come first, then one error saying so.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::sim_wire::{self, ByeReason, LineBuffer, SimHeader, WireError, WireLine};
use super::{DeviceChange, DeviceEvent, DeviceSnapshot, DeviceSource};
use crate::{Error, ErrorKind};

/// Longest `connect` waits for the emulator's header line.
pub const HEADER_WAIT: Duration = Duration::from_secs(5);

/// A device source reading an emulator's announcement socket.
pub struct SimSource {
    stream: UnixStream,
    path: PathBuf,
    header: SimHeader,
    lines: LineBuffer,
    /// Events ready to hand out (synthesised vanishes at the end).
    pending: VecDeque<DeviceEvent>,
    /// Devices the emulator listed as present, by location.
    present: BTreeMap<String, DeviceSnapshot>,
    /// The last event's t_ms and when it arrived, to date synthesised vanishes.
    last: Option<(u64, Instant)>,
    /// An error to report once `pending` is empty.
    failure: Option<Error>,
    done: bool,
}

impl std::fmt::Debug for SimSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSource")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("present", &self.present.keys().collect::<Vec<_>>())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

fn connect_error(path: &Path, e: std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    let (kind, why) = match e.kind() {
        K::NotFound | K::ConnectionRefused => (
            ErrorKind::NoDevice,
            "no emulator is listening there (it may have exited, or the path is mistyped)",
        ),
        K::PermissionDenied => (
            ErrorKind::Permission,
            "the socket belongs to another user (it is created 0600)",
        ),
        _ => (ErrorKind::Failure, "the socket could not be opened"),
    };
    Error::new(
        kind,
        format!("Cannot follow the emulator at {}", path.display()),
        why,
        "Start `qrescue sim --pty` and pass the \"socket\" from its first JSON line",
    )
    .with_source(e)
}

fn wire_error(path: &Path, e: WireError) -> Error {
    Error::failure(
        format!(
            "The emulator at {} sent something unexpected",
            path.display()
        ),
        format!("{e}; the device list from it can no longer be trusted"),
        "Check that the path is a `qrescue sim` socket of the same qrescue version",
    )
    .with_source(e)
}

impl SimSource {
    /// Connect to the socket at `path` and read its header (waiting at most [`HEADER_WAIT`]).
    pub fn connect(path: impl AsRef<Path>) -> crate::Result<SimSource> {
        Self::connect_within(path, HEADER_WAIT)
    }

    /// [`SimSource::connect`] with a chosen bound for the header.
    pub fn connect_within(path: impl AsRef<Path>, wait: Duration) -> crate::Result<SimSource> {
        let path = path.as_ref().to_path_buf();
        let stream = UnixStream::connect(&path).map_err(|e| connect_error(&path, e))?;
        let mut s = SimSource {
            stream,
            header: SimHeader::new(0, "", None),
            path,
            lines: LineBuffer::new(sim_wire::MAX_LINE),
            pending: VecDeque::new(),
            present: BTreeMap::new(),
            last: None,
            failure: None,
            done: false,
        };
        let deadline = Instant::now() + wait;
        let line = loop {
            if let Some(l) = s.lines.next_line().map_err(|e| wire_error(&s.path, e))? {
                break l;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    ErrorKind::NoDevice,
                    format!(
                        "The emulator at {} did not introduce itself",
                        s.path.display()
                    ),
                    format!("no header line within {} s", wait.as_secs_f64()),
                    "Check that the path is a `qrescue sim` socket",
                ));
            }
            match s.fill(left) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(Error::new(
                        ErrorKind::NoDevice,
                        format!("The emulator at {} closed the connection", s.path.display()),
                        "it was exiting or is not a qrescue sim",
                        "Start `qrescue sim --pty` again",
                    ))
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(connect_error(&s.path, e)),
            }
        };
        s.header = sim_wire::decode_header(&line).map_err(|e| wire_error(&s.path, e))?;
        Ok(s)
    }

    /// What the emulator said about itself.
    pub fn header(&self) -> &SimHeader {
        &self.header
    }

    /// Read once, waiting at most `left`. `Ok(false)` at end of stream.
    fn fill(&mut self, left: Duration) -> std::io::Result<bool> {
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        let mut buf = [0u8; 8192];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.lines.push(&buf[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The stream ended: whatever the emulator still listed is gone with it.
    fn end(&mut self, failure: Option<Error>) {
        let t_ms = self
            .last
            .map(|(t, at)| t.saturating_add(u64::try_from(at.elapsed().as_millis()).unwrap_or(0)))
            .unwrap_or(0);
        for (location, last) in std::mem::take(&mut self.present) {
            self.pending.push_back(DeviceEvent {
                t_ms,
                change: DeviceChange::Vanish {
                    location,
                    last: Some(last),
                },
            });
        }
        self.failure = failure;
        self.done = true;
    }

    fn fail(&mut self, e: Error) -> crate::Result<Option<DeviceEvent>> {
        // After bad input nothing from this stream is believed, not even the end of devices.
        self.present.clear();
        self.pending.clear();
        self.done = true;
        Err(e)
    }

    fn take(&mut self, line: &[u8]) -> crate::Result<Option<DeviceEvent>> {
        match sim_wire::decode_line(line) {
            Ok(WireLine::Event(e)) => {
                match &e.change {
                    DeviceChange::Appear { device } => {
                        self.present.insert(device.location(), device.clone());
                    }
                    DeviceChange::Vanish { location, .. } => {
                        self.present.remove(location);
                    }
                }
                self.last = Some((e.t_ms, Instant::now()));
                Ok(Some(e))
            }
            Ok(WireLine::Bye(ByeReason::Stopped)) => {
                self.end(None);
                Ok(self.pending.pop_front())
            }
            Ok(WireLine::Bye(ByeReason::TooSlow)) => {
                let e = Error::failure(
                    format!(
                        "The emulator at {} stopped sending events",
                        self.path.display()
                    ),
                    "this watcher read too slowly and the emulator dropped it",
                    "Watch again",
                );
                self.end(Some(e));
                self.next_pending()
            }
            Err(e) => {
                let e = wire_error(&self.path, e);
                self.fail(e)
            }
        }
    }

    fn next_pending(&mut self) -> crate::Result<Option<DeviceEvent>> {
        if let Some(e) = self.pending.pop_front() {
            return Ok(Some(e));
        }
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

impl DeviceSource for SimSource {
    fn next_event(&mut self, timeout: Duration) -> crate::Result<Option<DeviceEvent>> {
        if self.done {
            return self.next_pending();
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.next_line() {
                Ok(Some(line)) => match self.take(&line)? {
                    Some(e) => return Ok(Some(e)),
                    None if self.done => return self.next_pending(),
                    None => continue,
                },
                Ok(None) => {}
                Err(e) => {
                    let e = wire_error(&self.path, e);
                    return self.fail(e);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.fill(left) {
                Ok(true) => {}
                Ok(false) => {
                    let e = Error::new(
                        ErrorKind::DeviceLost,
                        format!("The emulator at {} went away", self.path.display()),
                        "it closed the socket without saying goodbye (killed or crashed); its devices are gone too",
                        "Start `qrescue sim --pty` again and watch the new socket",
                    );
                    self.end(Some(e));
                    return self.next_pending();
                }
                Err(e) if is_timeout(&e) => return Ok(None),
                Err(e) => {
                    let e = Error::new(
                        ErrorKind::DeviceLost,
                        format!(
                            "Lost the connection to the emulator at {}",
                            self.path.display()
                        ),
                        "reading its socket failed",
                        "Start `qrescue sim --pty` again and watch the new socket",
                    )
                    .with_source(e);
                    self.end(Some(e));
                    return self.next_pending();
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("emulator at {}", self.path.display())
    }

    fn finished(&self) -> bool {
        self.done && self.pending.is_empty() && self.failure.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim_wire::{encode_bye, encode_event, encode_header};
    use crate::sim::profile::Profile;
    use crate::sim::usb_ids::boot_rom_snapshot;
    use std::io::Write;
    use std::os::unix::net::UnixListener;

    const T: Duration = Duration::from_secs(5);

    /// A fake emulator that writes `script` to the first client, then closes (or stays open).
    fn serve(script: Vec<u8>, linger: bool) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fake.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let _ = s.write_all(&script);
            if linger {
                std::thread::sleep(Duration::from_secs(3));
            }
        });
        (dir, path)
    }

    fn header() -> String {
        encode_header(&SimHeader::new(7, "ec25", None))
    }

    fn appear(t_ms: u64) -> (DeviceEvent, String) {
        let e = DeviceEvent {
            t_ms,
            change: DeviceChange::Appear {
                device: boot_rom_snapshot(&Profile::by_name("ec25").unwrap(), None, 2),
            },
        };
        let line = encode_event(&e);
        (e, line)
    }

    fn drain(s: &mut SimSource) -> (Vec<DeviceEvent>, Option<Error>) {
        let mut v = Vec::new();
        loop {
            match s.next_event(T) {
                Ok(Some(e)) => v.push(e),
                Ok(None) => return (v, None),
                Err(e) => return (v, Some(e)),
            }
        }
    }

    #[test]
    fn bye_ends_cleanly_with_vanishes_for_what_was_left() {
        let (a, line) = appear(10);
        let script = format!("{}{line}{}", header(), encode_bye(ByeReason::Stopped));
        let (_d, path) = serve(script.into_bytes(), false);
        let mut s = SimSource::connect(&path).unwrap();
        assert_eq!(s.header().profile, "ec25");
        assert!(s.describe().contains("fake.sock"));
        let (events, err) = drain(&mut s);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0], a);
        assert!(matches!(events[1].change, DeviceChange::Vanish { .. }));
        assert!(events[1].t_ms >= 10);
        assert!(s.finished());
        assert_eq!(s.next_event(T).unwrap(), None);
    }

    #[test]
    fn a_killed_emulator_is_an_error_after_its_devices_vanish() {
        let (_, line) = appear(10);
        let (_d, path) = serve(format!("{}{line}", header()).into_bytes(), false);
        let mut s = SimSource::connect(&path).unwrap();
        let (events, err) = drain(&mut s);
        assert_eq!(events.len(), 2);
        let err = err.expect("an error after the vanish");
        assert_eq!(err.kind, ErrorKind::DeviceLost);
        assert!(err.why.contains("without saying goodbye"), "{err:?}");
        assert!(s.finished());
    }

    #[test]
    fn malformed_and_overlong_lines_are_errors_never_panics() {
        for bad in [
            b"{\"event\":\"appear\"}\n".to_vec(),
            b"garbage\n".to_vec(),
            vec![b'x'; sim_wire::MAX_LINE + 10],
            b"{\"event\":\"bye\",\"reason\":\"?\"}\n".to_vec(),
        ] {
            let mut script = header().into_bytes();
            script.extend_from_slice(&bad);
            let (_d, path) = serve(script, true);
            let mut s = SimSource::connect(&path).unwrap();
            let (events, err) = drain(&mut s);
            assert!(events.is_empty());
            let err = err.expect("bad input is an error");
            assert!(err.what.contains("unexpected"), "{err:?}");
            assert!(s.finished());
        }
    }

    #[test]
    fn connecting_to_nothing_or_to_a_stranger_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = SimSource::connect(dir.path().join("none.sock")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoDevice);
        assert!(e.next.contains("qrescue sim"));

        let (_d, path) = serve(b"{\"hello\":1}\n".to_vec(), true);
        let e = SimSource::connect(&path).unwrap_err();
        assert!(e.why.contains("header"), "{e:?}");

        // Silent server: bounded wait for the header.
        let (_d2, path) = serve(Vec::new(), true);
        let e = SimSource::connect_within(&path, Duration::from_millis(200)).unwrap_err();
        assert!(e.what.contains("did not introduce itself"), "{e:?}");
    }

    #[test]
    fn waits_are_bounded() {
        let (_d, path) = serve(header().into_bytes(), true);
        let mut s = SimSource::connect(&path).unwrap();
        let t = Instant::now();
        assert_eq!(s.next_event(Duration::from_millis(100)).unwrap(), None);
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(!s.finished());
    }
}
