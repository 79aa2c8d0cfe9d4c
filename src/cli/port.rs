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
use crate::transport::usb::{UsbOptions, UsbSelector};
use crate::transport::Transport;

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
            let t = crate::transport::open::open_usb(sel, usb_options(args))?;
            Ok(Box::new(recording::wrap(t)))
        }
    }
}

/// Open `path` as the modem's serial port (raw, exclusive).
pub fn open_serial(path: &Path) -> crate::Result<SerialTransport> {
    crate::transport::open::open_tty(path)
}

/// A USB open failure for people.
pub use crate::transport::open::usb_error;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::usb::UsbOpenError;
    use crate::transport::TransportError;

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
