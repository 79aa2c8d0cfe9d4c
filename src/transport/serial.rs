//! Serial ttys (`/dev/ttyUSB*`, `/dev/ttyACM*`, a pty slave from `qrescue sim`) as a
//! [`Transport`], on top of the `serialport` crate.
//!
//! Opening follows docs/PROTOCOLS.md §9.1 and §9.11:
//! - 115200 8N1, no flow control, raw mode (no echo, no CR/LF translation, 8-bit clean);
//! - exclusive: `TIOCEXCL` *and* an advisory `flock(LOCK_EX|LOCK_NB)`. Root bypasses `TIOCEXCL`,
//!   but not the lock, so a second qrescue (or any tool that also locks) gets
//!   [`TransportError::Busy`] instead of wedging the boot ROM with two readers;
//! - the input queue is **not** flushed: the boot ROM sends HELLO once, and a HELLO queued before
//!   we opened must survive;
//! - writes are never followed by `tcflush` (edl's truncation bug, §9.11).
//!
//! Reads and writes use `poll(2)` on a non-blocking descriptor, so every call is bounded by its
//! timeout. The fd helpers at the bottom are shared with [`super::pty`].

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, SetArg};
use serialport::{DataBits, FlowControl, Parity, SerialPort, StopBits, TTYPort};

use super::{Framing, Transport, TransportError};

/// The line speed every Quectel/Qualcomm serial function is opened with. On USB CDC/QDLoader
/// ports it is ignored by the device but some drivers insist on a sane value.
pub const BAUD_RATE: u32 = 115_200;

/// An open serial tty.
pub struct SerialTransport {
    port: TTYPort,
    path: PathBuf,
    /// `serial /dev/tty…`, kept so reads and writes do not format it each time.
    desc: String,
}

impl std::fmt::Debug for SerialTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialTransport")
            .field("path", &self.path)
            .field("fd", &self.port.as_raw_fd())
            .finish()
    }
}

impl SerialTransport {
    /// Open `path` at 115200 8N1, raw, no flow control, exclusively, without flushing what the
    /// device already queued.
    ///
    /// Errors: a missing path is [`TransportError::Io`] with kind `NotFound`; no access is
    /// [`TransportError::Permission`]; a port held by another process is [`TransportError::Busy`];
    /// a device that vanished while opening is [`TransportError::Disconnected`].
    pub fn open(path: &Path) -> Result<Self, TransportError> {
        let shown = path.display().to_string();
        let raw = nix::fcntl::open(
            path,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| open_error(e, &shown))?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        if !nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false) {
            return Err(TransportError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{shown} is not a serial port (not a tty); pass the modem's /dev/ttyUSB* or /dev/ttyACM* path"),
            )));
        }

        // The advisory lock first: it is what stops a second qrescue even when we run as root.
        // If this fails the fd is simply closed; we never touch TIOCEXCL on a port we do not own.
        lock_exclusive(fd.as_fd(), &shown)?;

        // Raw mode before anything else reads the port. TCSANOW does not flush queued input.
        let mut tio = termios::tcgetattr(fd.as_fd())
            .map_err(|e| setup_error(e, &shown, "read the line settings"))?;
        termios::cfmakeraw(&mut tio);
        tio.control_flags |= termios::ControlFlags::CREAD | termios::ControlFlags::CLOCAL;
        tio.control_chars[termios::SpecialCharacterIndices::VMIN as usize] = 1;
        tio.control_chars[termios::SpecialCharacterIndices::VTIME as usize] = 0;
        termios::tcsetattr(fd.as_fd(), SetArg::TCSANOW, &tio)
            .map_err(|e| setup_error(e, &shown, "switch the port to raw mode"))?;

        // Hand the descriptor to serialport for exclusivity and the line settings. Its Drop
        // clears TIOCEXCL and closes the fd; the flock goes with the close.
        // SAFETY: ownership of the descriptor moves into the TTYPort.
        let mut port = unsafe { TTYPort::from_raw_fd(fd.into_raw_fd()) };
        let settings = |what: &str, r: serialport::Result<()>| {
            r.map_err(|e| {
                TransportError::Io(io::Error::other(format!(
                    "could not {what} on {shown}: {e}; check that this is the modem's serial port and that no other program reconfigures it"
                )))
            })
        };
        settings("take exclusive access (TIOCEXCL)", port.set_exclusive(true))?;
        settings("set 115200 baud", port.set_baud_rate(BAUD_RATE))?;
        settings("set 8 data bits", port.set_data_bits(DataBits::Eight))?;
        settings("disable parity", port.set_parity(Parity::None))?;
        settings("set 1 stop bit", port.set_stop_bits(StopBits::One))?;
        settings(
            "disable flow control",
            port.set_flow_control(FlowControl::None),
        )?;

        Ok(SerialTransport {
            port,
            path: path.to_path_buf(),
            desc: format!("serial {shown}"),
        })
    }

    /// The path this port was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes waiting in the input queue (what a read would return without waiting).
    pub fn bytes_to_read(&self) -> Result<usize, TransportError> {
        self.port.bytes_to_read().map(|n| n as usize).map_err(|e| {
            TransportError::Io(io::Error::other(format!(
                "could not query the input queue of {}: {e}",
                self.path.display()
            )))
        })
    }
}

impl AsFd for SerialTransport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the TTYPort owns this descriptor for as long as `self` lives.
        unsafe { BorrowedFd::borrow_raw(self.port.as_raw_fd()) }
    }
}

impl Transport for SerialTransport {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        read_fd(self.as_fd(), buf, timeout, &self.desc)
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        write_all_fd(self.as_fd(), data, timeout, &self.desc)
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn framing(&self) -> Framing {
        Framing::Stream
    }
}

/// Take `flock(LOCK_EX|LOCK_NB)` on `fd`; a lock held elsewhere is [`TransportError::Busy`].
fn lock_exclusive(fd: BorrowedFd<'_>, shown: &str) -> Result<(), TransportError> {
    loop {
        // SAFETY: plain syscall on a valid descriptor.
        let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EWOULDBLOCK => {
                return Err(TransportError::Busy(format!(
                    "{shown} is already open in another program (another qrescue, edl, QFirehose, ModemManager or a terminal); close it and try again — two programs on one port can wedge the boot ROM until the modem is power-cycled"
                )))
            }
            e => {
                return Err(TransportError::Io(io::Error::new(
                    io::Error::from(e).kind(),
                    format!("could not lock {shown} for exclusive use: {}", e.desc()),
                )))
            }
        }
    }
}

/// Map an `open(2)` failure to what the user should do about it.
fn open_error(e: Errno, shown: &str) -> TransportError {
    match e {
        Errno::ENOENT => TransportError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{shown} does not exist; check the port name (qrescue lists ports it sees) and that the modem is plugged in"),
        )),
        Errno::EACCES | Errno::EPERM => TransportError::Permission(format!(
            "cannot open {shown}; run as root, or install the udev rule (`qrescue udev-rules`) and replug the modem"
        )),
        Errno::EBUSY => TransportError::Busy(format!(
            "{shown} is held exclusively by another program (another qrescue, edl, QFirehose, ModemManager); close it and try again"
        )),
        Errno::EIO | Errno::ENXIO | Errno::ENODEV => TransportError::Disconnected(format!(
            "{shown} vanished while opening ({}); the modem probably reset or re-enumerated — wait for it to reappear and try again",
            e.desc()
        )),
        other => TransportError::Io(io::Error::new(
            io::Error::from(other).kind(),
            format!("could not open {shown}: {}", other.desc()),
        )),
    }
}

/// Map a failure while configuring an open port.
fn setup_error(e: Errno, shown: &str, what: &str) -> TransportError {
    match e {
        Errno::EIO | Errno::ENXIO | Errno::ENODEV => TransportError::Disconnected(format!(
            "{shown} went away while trying to {what}; wait for the modem to reappear and try again"
        )),
        other => TransportError::Io(io::Error::new(
            io::Error::from(other).kind(),
            format!("could not {what} on {shown}: {}", other.desc()),
        )),
    }
}

/// Errors during I/O that mean the device is gone.
fn is_gone(e: Errno) -> bool {
    matches!(
        e,
        Errno::EIO | Errno::ENXIO | Errno::ENODEV | Errno::EPIPE | Errno::ECONNRESET
    )
}

fn gone(desc: &str, why: &str) -> TransportError {
    TransportError::Disconnected(format!(
        "{desc}: {why}; the device was unplugged, reset or closed its end — wait for it to reappear and reopen"
    ))
}

fn io_error(e: Errno, desc: &str, op: &str) -> TransportError {
    TransportError::Io(io::Error::new(
        io::Error::from(e).kind(),
        format!("{desc}: could not {op}: {}", e.desc()),
    ))
}

/// Outcome of waiting on a descriptor.
enum Ready {
    /// The wanted event is signalled.
    Yes,
    /// Hang-up or error without the wanted event.
    Hangup,
    /// The deadline passed.
    TimedOut,
}

/// `poll(2)` for `events` until `deadline` (`None`: the caller's timeout overflowed `Instant`;
/// wait in long slices). Retries on EINTR.
fn wait_fd(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
    desc: &str,
) -> Result<Ready, TransportError> {
    loop {
        let ms: i32 = match deadline {
            None => 60_000,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    0
                } else {
                    // Round up so a sub-millisecond remainder does not spin at 0 ms.
                    let ms = left.as_micros().div_ceil(1000);
                    i32::try_from(ms).unwrap_or(i32::MAX)
                }
            }
        };
        let mut fds = [PollFd::new(fd, events)];
        match nix::poll::poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Ready::TimedOut);
                }
            }
            Ok(_) => {
                let rev = fds[0].revents().unwrap_or(PollFlags::empty());
                if rev.intersects(events) {
                    return Ok(Ready::Yes);
                }
                if rev.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                    return Ok(Ready::Hangup);
                }
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(io_error(e, desc, "wait for the port")),
        }
    }
}

/// Read what is available from a non-blocking tty descriptor, waiting at most `timeout` for the
/// first byte. Shared with [`super::pty`].
pub(crate) fn read_fd(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    timeout: Duration,
    desc: &str,
) -> Result<usize, TransportError> {
    if buf.is_empty() {
        return Ok(0);
    }
    let deadline = Instant::now().checked_add(timeout);
    let mut hung_up = false;
    loop {
        match nix::unistd::read(fd.as_raw_fd(), buf) {
            // In raw mode (VMIN=1) a 0 return means the line hung up.
            Ok(0) => return Err(gone(desc, "end of file on the port")),
            Ok(n) => return Ok(n),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                if hung_up {
                    return Err(gone(desc, "the port hung up"));
                }
            }
            Err(e) if is_gone(e) => return Err(gone(desc, e.desc())),
            Err(e) => return Err(io_error(e, desc, "read")),
        }
        match wait_fd(fd, PollFlags::POLLIN, deadline, desc)? {
            Ready::Yes => {}
            // Read once more: the read reports the precise reason (EIO, EOF) or late data.
            Ready::Hangup => hung_up = true,
            Ready::TimedOut => {
                return Err(TransportError::Timeout {
                    op: "receive from the serial port",
                    after: timeout,
                })
            }
        }
    }
}

/// Write all of `data` to a non-blocking tty descriptor within `timeout`, looping on partial
/// writes. Never flushes. Shared with [`super::pty`].
pub(crate) fn write_all_fd(
    fd: BorrowedFd<'_>,
    data: &[u8],
    timeout: Duration,
    desc: &str,
) -> Result<(), TransportError> {
    let deadline = Instant::now().checked_add(timeout);
    let mut sent = 0;
    while sent < data.len() {
        match nix::unistd::write(fd, &data[sent..]) {
            Ok(n) => {
                sent += n;
                continue;
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {}
            Err(e) if is_gone(e) => return Err(gone(desc, e.desc())),
            Err(e) => return Err(io_error(e, desc, "write")),
        }
        match wait_fd(fd, PollFlags::POLLOUT, deadline, desc)? {
            Ready::Yes => {}
            Ready::Hangup => return Err(gone(desc, "the port hung up while sending")),
            Ready::TimedOut => {
                return Err(TransportError::Timeout {
                    op: "send everything to the serial port (the other side is not reading)",
                    after: timeout,
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_port_says_not_found() {
        let err = SerialTransport::open(Path::new("/dev/qrescue-no-such-port")).unwrap_err();
        match err {
            TransportError::Io(e) => {
                assert_eq!(e.kind(), io::ErrorKind::NotFound);
                assert!(e.to_string().contains("/dev/qrescue-no-such-port"), "{e}");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn a_regular_file_is_refused_as_not_a_tty() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = SerialTransport::open(file.path()).unwrap_err();
        match err {
            TransportError::Io(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                assert!(e.to_string().contains("not a serial port"), "{e}");
            }
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn open_errors_map_to_actionable_variants() {
        let p = "/dev/ttyUSB9";
        assert!(
            matches!(open_error(Errno::EACCES, p), TransportError::Permission(m) if m.contains("udev-rules") && m.contains(p))
        );
        assert!(
            matches!(open_error(Errno::EPERM, p), TransportError::Permission(m) if m.contains("root"))
        );
        assert!(matches!(open_error(Errno::EBUSY, p), TransportError::Busy(m) if m.contains(p)));
        for e in [Errno::EIO, Errno::ENXIO, Errno::ENODEV] {
            assert!(matches!(open_error(e, p), TransportError::Disconnected(m) if m.contains(p)));
        }
        assert!(
            matches!(open_error(Errno::ENOENT, p), TransportError::Io(e) if e.kind() == io::ErrorKind::NotFound)
        );
        assert!(matches!(
            open_error(Errno::EINVAL, p),
            TransportError::Io(_)
        ));
    }
}
