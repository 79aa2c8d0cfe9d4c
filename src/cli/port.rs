//! Opening the modem's port, with errors for people.

use std::path::Path;

use crate::cli::recording;
use crate::transport::record::RecordingTransport;
use crate::transport::serial::SerialTransport;
use crate::transport::TransportError;
use crate::{Error, ErrorKind};

/// Open `path` as the modem's serial port (raw, exclusive), recorded under `--record`.
pub fn open(path: &Path) -> crate::Result<RecordingTransport<SerialTransport>> {
    SerialTransport::open(path)
        .map(recording::wrap)
        .map_err(|e| open_error(path, e))
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
            "Check `ls /dev/ttyUSB* /dev/pts/*`; for the emulator use the pty printed by `qrescue sim --pty`",
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
