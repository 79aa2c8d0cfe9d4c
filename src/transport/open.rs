//! Opening a device the way it was seen: from a [`DeviceSnapshot`] (the console, `watch`) or a
//! `--port` value (the CLI), with errors written for people.
//!
//! - A snapshot whose Sahara interface has a tty (bound to `qcserial`, or the pty an emulated
//!   modem announces) is opened as that serial port; otherwise the device is opened over USB by
//!   its location (bus and port chain) through [`crate::transport::usb`].
//! - One device is never opened twice (a second opener can wedge the boot ROM until the power is
//!   cut): the serial port's own exclusive lock, plus a [`DeviceLock`] per identity of the device
//!   (its USB location and serial, the same keys the USB transport takes, so a tty open and a
//!   `--port usb:…` open of one modem exclude each other). An emulated modem is locked by its pty
//!   only: two emulators share locations and serials but are never the same device.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::device::classify::{classify, PortRole};
use crate::device::DeviceSnapshot;
use crate::transport::lock::{self, DeviceLock};
use crate::transport::serial::SerialTransport;
use crate::transport::usb::{UsbOpenError, UsbOptions, UsbSelector, UsbTransport, UDEV_HINT};
use crate::transport::{Framing, Transport, TransportError};
use crate::{Error, ErrorKind};

/// How to open a device.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// USB write options (ZLP, chunk size).
    pub usb: UsbOptions,
    /// Where the device locks of a tty open live (default: [`lock::default_lock_dir`]). USB
    /// opens always lock in the default folder.
    pub lock_dir: Option<PathBuf>,
}

/// A transport holding device locks for as long as it lives (the transport closes first).
pub struct Locked<T: Transport> {
    inner: T,
    _lock: DeviceLock,
}

impl<T: Transport> Locked<T> {
    pub fn new(inner: T, lock: DeviceLock) -> Self {
        Locked { inner, _lock: lock }
    }
}

impl<T: Transport> Transport for Locked<T> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        self.inner.read(buf, timeout)
    }
    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.inner.write(data, timeout)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn framing(&self) -> Framing {
        self.inner.framing()
    }
}

/// Where a snapshot's device is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The Sahara interface's tty.
    Tty(PathBuf),
    /// USB bulk, by location.
    Usb(UsbSelector),
}

/// How `snapshot` would be opened, or why it cannot be (not in a mode that speaks Sahara).
pub fn route(snapshot: &DeviceSnapshot) -> crate::Result<Route> {
    let class = classify(snapshot);
    let sahara = class.port(PortRole::Sahara);
    if !class.mode.speaks_sahara() && sahara.is_none() {
        return Err(Error::new(
            ErrorKind::NoDevice,
            format!(
                "{} at {} is not in download or crash-dump mode ({})",
                snapshot.id(),
                snapshot.location(),
                class.label
            ),
            "Sahara and Firehose only run on a modem in emergency download mode (05c6:9008) or crash-dump mode (05c6:900e)",
            "Switch the modem to download mode first (AT+QDOWNLOAD=1 or the EDL test point)",
        ));
    }
    match sahara
        .and_then(|p| p.tty.as_deref())
        .filter(|t| !t.is_empty())
    {
        Some(tty) => Ok(Route::Tty(PathBuf::from(tty))),
        None => Ok(Route::Usb(UsbSelector::Location(snapshot.location()))),
    }
}

/// The lock keys of a tty open of `snapshot` at `tty`.
fn tty_lock_keys(snapshot: &DeviceSnapshot, tty: &Path) -> Vec<String> {
    let mut keys = vec![format!("tty-{}", tty.display())];
    if snapshot.origin.is_none() {
        keys.push(lock::location_key(&snapshot.location()));
        let class = classify(snapshot);
        if let Some(sn) = class.serial(snapshot) {
            keys.push(lock::serial_key(sn));
        }
    }
    keys
}

/// Open the device `snapshot` shows, ready for Sahara: its Sahara tty when it has one, else USB
/// by location. Locked against a second opener (here or in another process) until dropped.
pub fn open_device(
    snapshot: &DeviceSnapshot,
    opts: &OpenOptions,
) -> crate::Result<Box<dyn Transport>> {
    match route(snapshot)? {
        Route::Tty(path) => {
            let what = format!(
                "{} {} at {}",
                snapshot.id(),
                path.display(),
                snapshot.location()
            );
            let keys = tty_lock_keys(snapshot, &path);
            let lock = match &opts.lock_dir {
                Some(dir) => DeviceLock::acquire_in(dir, &keys, &what),
                None => DeviceLock::acquire(&keys, &what),
            }
            .map_err(|e| serial_error(&path, e))?;
            let t = open_tty(&path)?;
            tracing::info!("opened {} for {}", path.display(), snapshot.location());
            Ok(Box::new(Locked::new(t, lock)))
        }
        Route::Usb(sel) => Ok(Box::new(open_usb(&sel, opts.usb)?)),
    }
}

/// Open `path` as the modem's serial port (raw, exclusive).
pub fn open_tty(path: &Path) -> crate::Result<SerialTransport> {
    SerialTransport::open(path).map_err(|e| serial_error(path, e))
}

/// Open the USB device `sel` names (claimed, locked).
pub fn open_usb(sel: &UsbSelector, opts: UsbOptions) -> crate::Result<UsbTransport> {
    UsbTransport::open(sel, opts).map_err(|e| usb_error(sel, e))
}

/// A USB open failure for people.
pub fn usb_error(sel: &UsbSelector, e: UsbOpenError) -> Error {
    match e {
        UsbOpenError::NotFound {
            wanted,
            present,
            note,
        } => {
            let why = match (note, present.is_empty()) {
                (Some(n), true) => n,
                (None, true) => "no USB devices are present at all".to_string(),
                (note, false) => {
                    let seen = format!("USB devices present: {}", present.join("; "));
                    match note {
                        Some(n) => format!("{n}; {seen}"),
                        None => seen,
                    }
                }
            };
            Error::new(
                ErrorKind::NoDevice,
                format!("No modem in download (05c6:9008) or crash-dump (05c6:900e) mode matches `{wanted}`"),
                why,
                "Put the modem into download mode (EDL) and check `lsusb`; a modem in normal mode (2c7c:…) must be switched first; give a tty with --port /dev/ttyUSB0 if it shows up as one",
            )
        }
        UsbOpenError::Ambiguous { candidates } => {
            let list: Vec<String> = candidates
                .iter()
                .map(|(summary, how)| format!("{summary} ({how})"))
                .collect();
            Error::new(
                ErrorKind::Usage,
                format!("{} modems are in download or crash-dump mode; `--port {sel}` does not say which", candidates.len()),
                format!("qrescue talks to one modem at a time: {}", list.join("; ")),
                "Choose one with --port usb:<location> or --port usb:serial=<serial>",
            )
        }
        UsbOpenError::NotDownloadMode { device } => Error::new(
            ErrorKind::NoDevice,
            format!("{device} is not in download or crash-dump mode"),
            "Sahara and Firehose only run on a modem in emergency download mode (05c6:9008) or crash-dump mode (05c6:900e)",
            "Switch the modem to download mode first (AT+QDOWNLOAD=1 or the EDL test point), then run this again",
        ),
        UsbOpenError::Transport(t) => usb_transport_error(sel, t),
    }
}

fn usb_transport_error(sel: &UsbSelector, e: TransportError) -> Error {
    match e {
        TransportError::Permission(_) => Error::new(
            ErrorKind::Permission,
            format!("Permission denied opening the USB modem ({sel})"),
            "qrescue needs read/write access to the modem's USB device node",
            format!("To fix it, {UDEV_HINT}"),
        )
        .with_source(e),
        TransportError::Busy(ref m) => Error::new(
            ErrorKind::Failure,
            format!("The USB modem ({sel}) is held by another program"),
            "opening a download-mode modem twice can wedge its boot ROM until a power cycle",
            m.clone(),
        ),
        TransportError::Disconnected(_) => Error::new(
            ErrorKind::DeviceLost,
            format!("The USB modem ({sel}) went away while opening it"),
            "the modem left the bus (reset, boot loop, loose cable)",
            "Wait for it to reappear and try again; check the cable and power",
        )
        .with_source(e),
        other => Error::new(
            ErrorKind::Failure,
            format!("Cannot open the USB modem ({sel})"),
            "its download interface could not be claimed and set up",
            "Replug the modem and try again; with -vv the log shows each step",
        )
        .with_source(other),
    }
}

/// A serial port open failure (or its lock) for people.
pub fn serial_error(path: &Path, e: TransportError) -> Error {
    let p = path.display();
    match e {
        TransportError::Permission(_) => Error::new(
            ErrorKind::Permission,
            format!("Permission denied opening {p}"),
            "qrescue needs read/write access to the modem's port",
            "Run as root, or install the udev rule for Quectel/Qualcomm modems and replug the modem",
        )
        .with_source(e),
        TransportError::Busy(_) => Error::new(
            ErrorKind::Failure,
            format!("{p} is held by another program"),
            "opening a download-mode modem twice can wedge its boot ROM until a power cycle",
            "Close the other program (ModemManager, another qrescue, a terminal); `fuser -v` on the port shows who holds it",
        )
        .with_source(e),
        TransportError::Io(ref io) if io.kind() == std::io::ErrorKind::NotFound => Error::new(
            ErrorKind::NoDevice,
            format!("There is no port {p}"),
            "the modem is not plugged in, not in this mode, or appeared under another name",
            "Check `ls /dev/ttyUSB* /dev/pts/*`, or use --port usb for a modem in download mode; for the emulator use the pty printed by `qrescue sim --pty`",
        )
        .with_source(e),
        TransportError::Disconnected(_) => Error::new(
            ErrorKind::DeviceLost,
            format!("{p} went away while opening it"),
            "the modem left the bus (reset, boot loop, loose cable)",
            "Wait for it to reappear and try again; check the cable and power",
        )
        .with_source(e),
        other => Error::new(
            ErrorKind::Failure,
            format!("Cannot open {p}"),
            "the port could not be set up for raw binary transfers",
            "Check that this is the modem's port (a tty), not a file or another device",
        )
        .with_source(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::profile::Profile;
    use crate::sim::usb_ids::boot_rom_snapshot;
    use crate::transport::pty::PtyDevice;

    fn edl(tty: Option<&Path>) -> DeviceSnapshot {
        boot_rom_snapshot(&Profile::by_name("ec25").unwrap().for_unit(3), tty, 4)
    }

    #[test]
    fn a_snapshot_routes_to_its_tty_or_to_usb_by_location() {
        let pty = PtyDevice::open().unwrap();
        let with = edl(Some(pty.slave_path()));
        assert_eq!(
            route(&with).unwrap(),
            Route::Tty(pty.slave_path().to_path_buf())
        );
        let without = edl(None);
        assert_eq!(
            route(&without).unwrap(),
            Route::Usb(UsbSelector::Location(without.location()))
        );
        let mut normal = without.clone();
        normal.vid = 0x2c7c;
        normal.pid = 0x0800;
        normal.interfaces.clear();
        let e = route(&normal).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoDevice, "{e}");
    }

    #[test]
    fn a_device_is_never_opened_twice() {
        let pty = PtyDevice::open().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions {
            lock_dir: Some(dir.path().to_path_buf()),
            ..OpenOptions::default()
        };
        let snap = edl(Some(pty.slave_path()));
        let first = open_device(&snap, &opts).unwrap();
        assert!(first
            .describe()
            .contains(&pty.slave_path().display().to_string()));
        let e = open_device(&snap, &opts)
            .err()
            .expect("a second open is refused");
        assert_eq!(e.kind, ErrorKind::Failure);
        assert!(e.what.contains("held by another program"), "{e}");
        drop(first);
        assert!(open_device(&snap, &opts).is_ok(), "free again once closed");
    }

    #[test]
    fn real_ttys_lock_by_location_and_serial_emulated_ones_by_pty() {
        let pty = PtyDevice::open().unwrap();
        let mut snap = edl(Some(pty.slave_path()));
        assert_eq!(tty_lock_keys(&snap, pty.slave_path()).len(), 1);
        snap.origin = None;
        let keys = tty_lock_keys(&snap, pty.slave_path());
        assert!(
            keys.contains(&lock::location_key(&snap.location())),
            "{keys:?}"
        );
        assert!(keys.iter().any(|k| k.starts_with("usb-sn-")), "{keys:?}");
    }

    #[test]
    fn a_missing_port_says_so() {
        let e = open_tty(Path::new("/nonexistent/ttyUSB9")).err().unwrap();
        assert_eq!(e.kind, ErrorKind::NoDevice);
    }
}
