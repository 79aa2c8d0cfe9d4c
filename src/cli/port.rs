//! Opening the modem's port, with errors for people.
//!
//! `--port` takes a tty path (`/dev/ttyUSB0`, a pty from `qrescue sim --pty`) or a USB
//! selector: `usb` (the one modem in download or crash-dump mode), `usb:3-1.2` (a location),
//! `usb:serial=49CBD7EF` (the `_SN:` of the product string or the USB serial) or
//! `usb:bus=3,addr=5` (as `lsusb` shows). A file literally named `usb` is `./usb`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::cli::args::PortArgs;
use crate::cli::recording;
use crate::transport::serial::SerialTransport;
use crate::transport::usb::{UsbOpenError, UsbOptions, UsbSelector, UsbTransport, UDEV_HINT};
use crate::transport::{Transport, TransportError};
use crate::{Error, ErrorKind};

/// What `--port` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A serial tty or pty.
    Path(PathBuf),
    /// A USB device in download or crash-dump mode.
    Usb(UsbSelector),
}

impl PortSpec {
    /// Parse a `--port` value (clap's value parser).
    pub fn parse(s: &str) -> Result<PortSpec, String> {
        match UsbSelector::parse_port(s) {
            Some(Ok(sel)) => Ok(PortSpec::Usb(sel)),
            Some(Err(why)) => Err(why),
            None if s.is_empty() => {
                Err("give a port: a tty path such as /dev/ttyUSB0, or usb".into())
            }
            None => Ok(PortSpec::Path(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSpec::Path(p) => write!(f, "{}", p.display()),
            PortSpec::Usb(sel) => write!(f, "{sel}"),
        }
    }
}

impl Serialize for PortSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The USB options from the command line.
pub fn usb_options(args: &PortArgs) -> UsbOptions {
    UsbOptions {
        zlp: !args.no_zlp,
        out_chunk: args
            .usb_chunk
            .map_or(UsbOptions::default().out_chunk, |n| n as usize),
    }
}

/// Open what `--port` names: a serial port (raw, exclusive) or a USB device (claimed, locked),
/// recorded under `--record`.
pub fn open(args: &PortArgs) -> crate::Result<Box<dyn Transport>> {
    match &args.port {
        PortSpec::Path(path) => {
            if args.no_zlp || args.usb_chunk.is_some() {
                tracing::info!(
                    "--no-zlp and --usb-chunk apply to USB ports only; {} is a tty",
                    path.display()
                );
            }
            let t = open_serial(path)?;
            Ok(Box::new(recording::wrap(t)))
        }
        PortSpec::Usb(sel) => {
            let t = UsbTransport::open(sel, usb_options(args)).map_err(|e| usb_error(sel, e))?;
            Ok(Box::new(recording::wrap(t)))
        }
    }
}

/// Open `path` as the modem's serial port (raw, exclusive).
pub fn open_serial(path: &Path) -> crate::Result<SerialTransport> {
    SerialTransport::open(path).map_err(|e| open_error(path, e))
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

fn open_error(path: &Path, e: TransportError) -> Error {
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

    #[test]
    fn port_values_parse_to_paths_or_usb_selectors() {
        assert_eq!(
            PortSpec::parse("/dev/ttyUSB0"),
            Ok(PortSpec::Path("/dev/ttyUSB0".into()))
        );
        assert_eq!(PortSpec::parse("usb"), Ok(PortSpec::Usb(UsbSelector::Only)));
        assert_eq!(
            PortSpec::parse("usb:3-1.2"),
            Ok(PortSpec::Usb(UsbSelector::Location("3-1.2".into())))
        );
        assert_eq!(PortSpec::parse("./usb"), Ok(PortSpec::Path("./usb".into())));
        assert!(PortSpec::parse("usb:nonsense").is_err());
        assert!(PortSpec::parse("").is_err());
        assert_eq!(
            PortSpec::parse("usb:serial=AB").unwrap().to_string(),
            "usb:serial=AB"
        );
        assert_eq!(
            serde_json::to_value(PortSpec::parse("/dev/pts/3").unwrap()).unwrap(),
            "/dev/pts/3"
        );
    }

    #[test]
    fn usb_errors_for_people_carry_the_right_exit_codes() {
        let sel = UsbSelector::Only;
        let e = usb_error(
            &sel,
            UsbOpenError::NotFound {
                wanted: "usb".into(),
                present: vec!["1-1 8087:0024".into(), "2-1 2c7c:0800 \"RM500Q-GL\"".into()],
                note: None,
            },
        );
        assert_eq!(e.exit_code(), 3);
        assert!(e.why.contains("2c7c:0800"), "{e}");
        let e = usb_error(
            &sel,
            UsbOpenError::Ambiguous {
                candidates: vec![
                    ("3-1.2 05c6:9008".into(), "--port usb:3-1.2".into()),
                    ("3-1.3 05c6:9008".into(), "--port usb:3-1.3".into()),
                ],
            },
        );
        assert_eq!(e.exit_code(), 2);
        assert!(e.why.contains("--port usb:3-1.3"), "{e}");
        let e = usb_error(
            &sel,
            UsbOpenError::Transport(TransportError::Permission("denied".into())),
        );
        assert_eq!(e.exit_code(), 4);
        assert!(
            e.next
                .contains("qrescue udev-rules | sudo tee /etc/udev/rules.d/51-qrescue.rules"),
            "{e}"
        );
        let e = usb_error(
            &sel,
            UsbOpenError::Transport(TransportError::Busy("held by qdl (PID 7)".into())),
        );
        assert_eq!(e.exit_code(), 1);
        assert!(e.next.contains("PID 7"), "{e}");
        let e = usb_error(
            &sel,
            UsbOpenError::NotDownloadMode {
                device: "2-1 2c7c:0800".into(),
            },
        );
        assert_eq!(e.exit_code(), 3);
    }
}
