//! The announcement socket of a running `qrescue sim`: a Unix socket where any number of
//! watchers (`qrescue watch --sim SOCKET`, the console, tests in other processes) follow the
//! emulated bus. The line format is in [`crate::device::sim_wire`].
//!
//! The emulator never waits for a watcher: each client has a bounded queue in the [`UsbHub`] and
//! its own writer thread with a write timeout; a client that does not keep up or stops reading is
//! dropped (it gets `bye too_slow` if it can still take it). The socket file is created 0600 and
//! removed when the announcer is shut down or dropped.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::device::sim_wire::{self, ByeReason, SimHeader};
use crate::{Error, ErrorKind};

use super::hub::{Subscription, UsbHub, DEFAULT_QUEUE};

/// A write to one client that takes longer than this drops the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the accept loop looks at its stop flag.
const ACCEPT_SLICE: u16 = 100;
/// Longest [`Announcer::shutdown`] waits for writers to send their last lines.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// A listening announcement socket.
pub struct Announcer {
    path: PathBuf,
    hub: UsbHub,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    writers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// A fresh socket path: `$XDG_RUNTIME_DIR/qrescue-sim-<pid>-<n>.sock`, or in the temp folder.
pub fn default_socket_path() -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    dir.join(format!(
        "qrescue-sim-{}-{nanos:08x}.sock",
        std::process::id()
    ))
}

fn socket_error(path: &Path, e: std::io::Error) -> Error {
    let kind = if e.kind() == std::io::ErrorKind::PermissionDenied {
        ErrorKind::Permission
    } else {
        ErrorKind::Failure
    };
    Error::new(
        kind,
        format!("Cannot create the emulator's socket {}", path.display()),
        "watchers follow the emulated USB bus through it",
        "Choose another path with --socket (a folder you can write to, path under 100 characters)",
    )
    .with_source(e)
}

fn client(stream: UnixStream, header: String, sub: Subscription) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let mut out = stream;
    if out.write_all(header.as_bytes()).is_err() {
        return;
    }
    for event in sub.rx.iter() {
        if out
            .write_all(sim_wire::encode_event(&event).as_bytes())
            .is_err()
        {
            // Gone or stuck: dropping `sub` here unsubscribes it at the next publish.
            return;
        }
    }
    let reason = if sub.was_dropped() {
        ByeReason::TooSlow
    } else {
        ByeReason::Stopped
    };
    let _ = out.write_all(sim_wire::encode_bye(reason).as_bytes());
    let _ = out.shutdown(std::net::Shutdown::Both);
}

impl Announcer {
    /// Listen on `path` (which must not exist) and announce `hub`'s events, each client first
    /// getting `header`.
    pub fn bind(path: &Path, header: &SimHeader, hub: &UsbHub) -> crate::Result<Announcer> {
        if path.exists() || path.symlink_metadata().is_ok() {
            return Err(Error::usage(
                format!("{} already exists", path.display()),
                "Remove it if no emulator uses it any more, or choose another path with --socket",
            ));
        }
        let listener = UnixListener::bind(path).map_err(|e| socket_error(path, e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| socket_error(path, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| socket_error(path, e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let header = sim_wire::encode_header(header);
        let accept = {
            let (stop, writers, hub) = (stop.clone(), writers.clone(), hub.clone());
            std::thread::Builder::new()
                .name("sim-announce".into())
                .spawn(move || accept_loop(listener, header, hub, stop, writers))
                .map_err(|e| socket_error(path, e))?
        };
        tracing::info!(socket = %path.display(), "announcing the emulated USB bus");
        Ok(Announcer {
            path: path.to_path_buf(),
            hub: hub.clone(),
            stop,
            accept: Some(accept),
            writers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stop accepting, close the hub (every client gets its last events and `bye`), wait a
    /// bounded time for the writers, and remove the socket file.
    pub fn shutdown(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        let _ = accept.join();
        self.hub.close();
        let _ = std::fs::remove_file(&self.path);
        let writers = std::mem::take(&mut *self.writers.lock().unwrap_or_else(|p| p.into_inner()));
        let deadline = Instant::now() + FLUSH_WAIT;
        for w in writers {
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if w.is_finished() {
                let _ = w.join();
            }
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn accept_loop(
    listener: UnixListener,
    header: String,
    hub: UsbHub,
    stop: Arc<AtomicBool>,
    writers: Arc<Mutex<Vec<JoinHandle<()>>>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::from(ACCEPT_SLICE)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the announcement socket failed; no more watchers");
                return;
            }
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let sub = hub.subscribe(DEFAULT_QUEUE);
                let header = header.clone();
                match std::thread::Builder::new()
                    .name("sim-watcher".into())
                    .spawn(move || client(stream, header, sub))
                {
                    Ok(h) => {
                        let mut w = writers.lock().unwrap_or_else(|p| p.into_inner());
                        w.retain(|h| !h.is_finished());
                        w.push(h);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot serve another watcher"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::sim_wire::{decode_header, decode_line, WireLine};
    use crate::sim::profile::Profile;
    use crate::sim::usb_ids::boot_rom_snapshot;
    use std::io::{BufRead, BufReader};

    fn header() -> SimHeader {
        SimHeader::new(std::process::id(), "ec25", None)
    }

    #[test]
    fn clients_get_header_state_events_and_bye_and_the_file_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let hub = UsbHub::new();
        let snap = boot_rom_snapshot(&Profile::by_name("ec25").unwrap(), None, 2);
        hub.appear(snap.clone());
        let ann = Announcer::bind(&path, &header(), &hub).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second emulator on the same path is refused, not clobbered.
        assert_eq!(
            Announcer::bind(&path, &header(), &hub).err().unwrap().kind,
            ErrorKind::Usage
        );

        let open = || {
            let s = UnixStream::connect(&path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            BufReader::new(s)
        };
        let mut a = open();
        let mut b = open();
        // A client that connects and never reads does not hold anything up.
        let _silent = UnixStream::connect(&path).unwrap();
        let mut line = String::new();
        for r in [&mut a, &mut b] {
            line.clear();
            r.read_line(&mut line).unwrap();
            assert_eq!(decode_header(line.trim_end().as_bytes()).unwrap(), header());
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(matches!(
                decode_line(line.trim_end().as_bytes()).unwrap(),
                WireLine::Event(e) if e.location() == snap.location()
            ));
        }
        hub.vanish(&snap.location());
        ann.shutdown();
        assert!(!path.exists());
        for r in [&mut a, &mut b] {
            let rest: Vec<String> = r.lines().map(|l| l.unwrap()).collect();
            assert_eq!(rest.len(), 2, "{rest:?}");
            assert!(matches!(
                decode_line(rest[0].as_bytes()).unwrap(),
                WireLine::Event(e) if matches!(e.change, crate::device::DeviceChange::Vanish { .. })
            ));
            assert_eq!(
                decode_line(rest[1].as_bytes()).unwrap(),
                WireLine::Bye(ByeReason::Stopped)
            );
        }
    }
}
