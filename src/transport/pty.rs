//! The *device* side of an emulated modem exposed as a pseudo-terminal, so a host tool (qrescue
//! itself, edl, qdlrs, QFirehose) can open [`PtyDevice::slave_path`] like a real `/dev/ttyUSB*`.
//!
//! How it behaves, and why:
//! - The slave is switched to raw mode (`cfmakeraw`: no echo, no CR/LF translation, 8-bit clean)
//!   before anything is written, so host bytes are never echoed back and binary Sahara packets
//!   pass unchanged.
//! - `PtyDevice` keeps its own slave descriptor open for its whole life. Bytes the device writes
//!   before any host opens the slave stay queued in the slave's input and a host that opens later
//!   reads them (a HELLO sent once at attach time survives, docs/PROTOCOLS.md §9.1). And the
//!   master never sees EIO/hang-up when a host closes the slave: the emulated device keeps
//!   running across host opens and closes, like a real boot ROM.
//! - Consequence of that: bytes the device wrote that a host never read stay queued for the next
//!   host. Call [`PtyDevice::discard_unread_by_host`] to drop them, e.g. when emulating a USB
//!   re-enumeration.
//! - The slave node is chmod 0600 (owner: the user running the emulator). That keeps `write(1)`
//!   and `wall` (group `tty`, which the default 0620 would admit) from injecting text into a
//!   binary protocol; host tools must run as the same user or as root.
//! - The master is non-blocking and every read/write polls, so nothing blocks past its timeout; a
//!   1 MiB write completes as fast as the host drains it. The kernel buffers only a few KiB
//!   towards the host, so a device that writes with no host reading gets a `Timeout`.
//! - Dropping the `PtyDevice` closes the master and the kernel hangs up the slave: a host holding
//!   it gets `Disconnected` at once (reads see end-of-file, writes EIO) and bytes it had not read
//!   yet are lost — like an unplugged modem.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::PtyMaster;
use nix::sys::stat::Mode;
use nix::sys::termios::{self, BaudRate, FlushArg, SetArg, SpecialCharacterIndices};

use super::serial::{read_fd, write_all_fd};
use super::{Framing, Transport, TransportError};

/// An emulated device's end of a pseudo-terminal. Implements [`Transport`] on the master.
pub struct PtyDevice {
    // Field order is drop order: the master closes first, so a host sees the hang-up.
    master: PtyMaster,
    /// Held open for the device's whole life (see the module docs).
    slave: OwnedFd,
    slave_path: PathBuf,
    /// `pty device /dev/pts/N`.
    desc: String,
}

impl std::fmt::Debug for PtyDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtyDevice")
            .field("slave_path", &self.slave_path)
            .field("master_fd", &self.master.as_raw_fd())
            .finish()
    }
}

fn setup_error(e: Errno, what: &str) -> TransportError {
    let hint = match e {
        Errno::ENOENT | Errno::ENODEV => {
            "; is devpts mounted on /dev/pts and /dev/ptmx present? (containers may need --privileged or a devpts mount)"
        }
        Errno::EMFILE | Errno::ENFILE => "; too many open files — close other emulated devices",
        Errno::ENOSPC => "; the system's pty limit (/proc/sys/kernel/pty/max) is reached",
        Errno::EACCES | Errno::EPERM => "; the user may not create pseudo-terminals here",
        _ => "",
    };
    TransportError::Io(io::Error::new(
        io::Error::from(e).kind(),
        format!(
            "could not create the emulated serial port: {what} failed: {}{hint}",
            e.desc()
        ),
    ))
}

impl PtyDevice {
    /// Create a new pseudo-terminal with a raw, 0600 slave whose path hosts can open.
    pub fn open() -> Result<PtyDevice, TransportError> {
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(|e| setup_error(e, "opening /dev/ptmx"))?;
        nix::pty::grantpt(&master).map_err(|e| setup_error(e, "grantpt"))?;
        nix::pty::unlockpt(&master).map_err(|e| setup_error(e, "unlockpt"))?;
        let slave_path =
            PathBuf::from(nix::pty::ptsname_r(&master).map_err(|e| setup_error(e, "ptsname"))?);

        let raw = nix::fcntl::open(
            &slave_path,
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| setup_error(e, "opening the slave side"))?;
        // SAFETY: `open` just returned this descriptor and nothing else owns it.
        let slave = unsafe { OwnedFd::from_raw_fd(raw) };

        // Raw mode on the slave before a single byte moves.
        let mut tio = termios::tcgetattr(slave.as_fd())
            .map_err(|e| setup_error(e, "reading the slave's line settings"))?;
        termios::cfmakeraw(&mut tio);
        tio.control_flags |= termios::ControlFlags::CREAD | termios::ControlFlags::CLOCAL;
        tio.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        tio.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        // Cosmetic on a pty, but hosts that read the speed back see what a modem port reports.
        termios::cfsetspeed(&mut tio, BaudRate::B115200)
            .map_err(|e| setup_error(e, "setting the slave's speed"))?;
        termios::tcsetattr(slave.as_fd(), SetArg::TCSANOW, &tio)
            .map_err(|e| setup_error(e, "switching the slave to raw mode"))?;

        nix::sys::stat::fchmod(slave.as_raw_fd(), Mode::from_bits_truncate(0o600))
            .map_err(|e| setup_error(e, "chmod 0600 of the slave"))?;

        let flags = fcntl(master.as_raw_fd(), FcntlArg::F_GETFL)
            .map_err(|e| setup_error(e, "reading the master's flags"))?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(master.as_raw_fd(), FcntlArg::F_SETFL(flags))
            .map_err(|e| setup_error(e, "making the master non-blocking"))?;

        let desc = format!("pty device {}", slave_path.display());
        Ok(PtyDevice {
            master,
            slave,
            slave_path,
            desc,
        })
    }

    /// The path a host opens, e.g. `/dev/pts/7`.
    pub fn slave_path(&self) -> &Path {
        &self.slave_path
    }

    /// A duplicate of the device's own slave descriptor. Held after the `PtyDevice` is dropped
    /// (hosts still see the hang-up and the node disappears), it keeps this pty's number taken,
    /// so the next pty gets another path: a re-enumerated modem gets a new port, and a host
    /// holding the old path can never reach the new device through it.
    pub fn keep_number(&self) -> io::Result<OwnedFd> {
        self.slave.try_clone()
    }

    /// Bytes the device wrote that no host has read yet (queued in the slave's input).
    ///
    /// Approximate for a moment after a write: the kernel moves pty bytes into the slave's queue
    /// from a work item, so a count taken right after [`Transport::write`] may still be lower.
    pub fn queued_for_host(&self) -> Result<usize, TransportError> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer; the fd is valid.
        let rc = unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::FIONREAD, &mut n) };
        if rc < 0 {
            return Err(setup_error(Errno::last(), "FIONREAD on the slave"));
        }
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Drop bytes the device wrote that no host has read yet, so the next host that opens the
    /// slave starts clean (what a USB re-enumeration does to a real port).
    pub fn discard_unread_by_host(&self) -> Result<(), TransportError> {
        termios::tcflush(self.slave.as_fd(), FlushArg::TCIFLUSH)
            .map_err(|e| setup_error(e, "flushing the slave's input"))
    }
}

impl AsFd for PtyDevice {
    /// The master descriptor (the device's end).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

impl Transport for PtyDevice {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        read_fd(self.master.as_fd(), buf, timeout, &self.desc)
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        write_all_fd(self.master.as_fd(), data, timeout, &self.desc)
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn framing(&self) -> Framing {
        Framing::Stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::read_exact;
    use crate::transport::serial::SerialTransport;
    use nix::sys::termios::{InputFlags, LocalFlags, OutputFlags};
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    use std::thread;
    use std::time::Instant;

    const LONG: Duration = Duration::from_secs(20);
    const SHORT: Duration = Duration::from_millis(100);

    fn hello_blob() -> [u8; 48] {
        let mut b = [0u8; 48];
        b[0] = 0x01; // HELLO
        b[4] = 0x30; // length 48
        for (i, x) in b.iter_mut().enumerate().skip(8) {
            // Include CR, LF, 0x00, 0x7f, 0xff: anything a cooked tty would mangle.
            *x = [0x0d, 0x0a, 0x00, 0x7f, 0xff, 0x11, 0x13, 0x03][i % 8];
        }
        b
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn is_raw(fd: BorrowedFd<'_>) -> bool {
        let t = termios::tcgetattr(fd).unwrap();
        !t.local_flags.intersects(
            LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG | LocalFlags::IEXTEN,
        ) && !t.output_flags.contains(OutputFlags::OPOST)
            && !t.input_flags.intersects(
                InputFlags::ICRNL | InputFlags::INLCR | InputFlags::IXON | InputFlags::ISTRIP,
            )
            && t.control_flags.contains(termios::ControlFlags::CS8)
    }

    #[test]
    fn slave_is_raw_private_and_described() {
        let dev = PtyDevice::open().unwrap();
        assert!(dev.slave_path().starts_with("/dev/pts") || dev.slave_path().exists());
        let mode = std::fs::metadata(dev.slave_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(is_raw(dev.slave.as_fd()));
        assert_eq!(
            dev.describe(),
            format!("pty device {}", dev.slave_path().display())
        );
        assert_eq!(dev.framing(), Framing::Stream);
    }

    #[test]
    fn hello_queued_before_the_host_opens_survives_the_open() {
        let mut dev = PtyDevice::open().unwrap();
        let hello = hello_blob();
        dev.write(&hello, LONG).unwrap();
        // The kernel moves pty bytes into the slave's queue from a work item: wait (bounded).
        let deadline = Instant::now() + LONG;
        while dev.queued_for_host().unwrap() < 48 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(dev.queued_for_host().unwrap(), 48);

        let mut host = SerialTransport::open(dev.slave_path()).unwrap();
        assert_eq!(
            host.describe(),
            format!("serial {}", dev.slave_path().display())
        );
        assert_eq!(host.framing(), Framing::Stream);
        // Opening reconfigured the line but kept it raw and did not flush.
        assert!(is_raw(host.as_fd()));
        assert_eq!(host.bytes_to_read().unwrap(), 48);
        let mut got = [0u8; 48];
        read_exact(&mut host, &mut got, LONG).unwrap();
        assert_eq!(got, hello);
        assert!(host.read(&mut got, SHORT).unwrap_err().is_timeout());
    }

    #[test]
    fn host_writes_reach_the_device_and_are_not_echoed() {
        let mut dev = PtyDevice::open().unwrap();
        let mut host = SerialTransport::open(dev.slave_path()).unwrap();
        let msg = hello_blob();
        host.write(&msg, LONG).unwrap();
        let mut got = [0u8; 48];
        read_exact(&mut dev, &mut got, LONG).unwrap();
        assert_eq!(got, msg, "bytes were translated on the way to the device");
        // No echo: nothing comes back to the host.
        let mut buf = [0u8; 64];
        assert!(host.read(&mut buf, SHORT).unwrap_err().is_timeout());
        // And the device answers.
        dev.write(b"\r\nOK\r\n", LONG).unwrap();
        read_exact(&mut host, &mut buf[..6], LONG).unwrap();
        assert_eq!(&buf[..6], b"\r\nOK\r\n");
    }

    #[test]
    fn a_second_open_is_busy_and_reopen_after_close_works() {
        let mut dev = PtyDevice::open().unwrap();
        let first = SerialTransport::open(dev.slave_path()).unwrap();
        match SerialTransport::open(dev.slave_path()) {
            Err(TransportError::Busy(msg)) => {
                assert!(
                    msg.contains(&dev.slave_path().display().to_string()),
                    "{msg}"
                )
            }
            other => panic!("second open should be Busy, got {other:?}"),
        }
        // The failed opener must not have cleared the first holder's exclusivity.
        assert!(matches!(
            SerialTransport::open(dev.slave_path()),
            Err(TransportError::Busy(_))
        ));
        drop(first);

        // The device did not notice the host leaving.
        dev.write(b"still here", LONG).unwrap();
        let mut host = SerialTransport::open(dev.slave_path()).unwrap();
        let mut buf = [0u8; 10];
        read_exact(&mut host, &mut buf, LONG).unwrap();
        assert_eq!(&buf, b"still here");
        host.write(b"ping", LONG).unwrap();
        read_exact(&mut dev, &mut buf[..4], LONG).unwrap();
        assert_eq!(&buf[..4], b"ping");
    }

    #[test]
    fn device_reads_time_out_without_a_host() {
        let mut dev = PtyDevice::open().unwrap();
        let mut buf = [0u8; 8];
        let started = Instant::now();
        assert!(dev.read(&mut buf, SHORT).unwrap_err().is_timeout());
        assert!(started.elapsed() >= SHORT);
        assert!(started.elapsed() < LONG);
        // A host that opens and closes without writing does not disturb the device.
        drop(SerialTransport::open(dev.slave_path()).unwrap());
        assert!(dev.read(&mut buf, SHORT).unwrap_err().is_timeout());
    }

    #[test]
    fn device_writes_time_out_when_nobody_reads() {
        let mut dev = PtyDevice::open().unwrap();
        let started = Instant::now();
        let err = dev
            .write(&vec![0x55u8; 1 << 20], Duration::from_millis(300))
            .unwrap_err();
        assert!(err.is_timeout(), "{err}");
        assert!(started.elapsed() < LONG);
        // What did fit is queued and can be dropped before the next host.
        assert!(dev.queued_for_host().unwrap() > 0);
        dev.discard_unread_by_host().unwrap();
        assert_eq!(dev.queued_for_host().unwrap(), 0);
    }

    #[test]
    fn one_mib_host_to_device_arrives_intact() {
        let mut dev = PtyDevice::open().unwrap();
        let mut host = SerialTransport::open(dev.slave_path()).unwrap();
        let data = pseudo_random(1 << 20, 0x5eed);
        let want = Sha256::digest(&data);
        let writer = thread::spawn(move || host.write(&data, LONG).map(|()| host));
        let mut got = vec![0u8; 1 << 20];
        read_exact(&mut dev, &mut got, LONG).unwrap();
        let _host = writer.join().unwrap().unwrap();
        assert_eq!(Sha256::digest(&got), want);
        let mut extra = [0u8; 1];
        assert!(dev.read(&mut extra, SHORT).unwrap_err().is_timeout());
    }

    #[test]
    fn one_mib_device_to_host_arrives_intact() {
        let mut dev = PtyDevice::open().unwrap();
        let mut host = SerialTransport::open(dev.slave_path()).unwrap();
        let data = pseudo_random(1 << 20, 0xfeed);
        let want = Sha256::digest(&data);
        let writer = thread::spawn(move || dev.write(&data, LONG).map(|()| dev));
        let mut got = vec![0u8; 1 << 20];
        read_exact(&mut host, &mut got, LONG).unwrap();
        let _dev = writer.join().unwrap().unwrap();
        assert_eq!(Sha256::digest(&got), want);
    }

    #[test]
    fn dropping_the_device_disconnects_the_host_at_once() {
        let dev = PtyDevice::open().unwrap();
        let mut host = SerialTransport::open(dev.slave_path()).unwrap();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 8];
            let started = Instant::now();
            let r = host.read(&mut buf, LONG);
            (r, started.elapsed(), host)
        });
        thread::sleep(Duration::from_millis(50));
        drop(dev);
        let (r, waited, mut host) = reader.join().unwrap();
        assert!(matches!(r, Err(TransportError::Disconnected(_))), "{r:?}");
        assert!(waited < LONG, "the read waited for its whole timeout");
        assert!(matches!(
            host.write(b"x", SHORT),
            Err(TransportError::Disconnected(_))
        ));
        // Like an unplugged modem, the port is gone for good: reads keep failing fast.
        let mut buf = [0u8; 1];
        assert!(matches!(
            host.read(&mut buf, LONG),
            Err(TransportError::Disconnected(_))
        ));
    }
}
