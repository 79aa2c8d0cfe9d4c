//! Cross-process device locks: one modem is never opened twice, even by two qrescue processes.
//!
//! Two programs talking to one modem in download mode can wedge its boot ROM until the power is
//! cut (PROTOCOLS.md §5.2), so every opener takes an advisory `flock(LOCK_EX|LOCK_NB)` on one
//! small file per identity of the device (its USB location and, when known, its serial). The
//! locks live as long as the [`DeviceLock`]; the kernel drops them when the file descriptors
//! close, which includes a crash or `kill -9`, so a lock can never outlive its holder.
//!
//! The holder writes its PID into the file, so a second opener can say who holds the device.
//! Files are never deleted (deleting a flock file races with a concurrent opener); they are tiny
//! and live in a tmpfs.
//!
//! Where: `/run/lock/qrescue/` when usable (shared by all users, like `/run/lock` itself, so
//! `sudo qrescue` and a plain `qrescue` see each other), else `$XDG_RUNTIME_DIR/qrescue/`, else
//! `qrescue-locks/` in the temp folder.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::TransportError;

/// Why a lock could not be taken.
#[derive(Debug)]
pub enum LockFailure {
    /// Another open file description holds it; the holder's PID when it wrote one.
    Held { pid: Option<u32> },
    /// The lock itself failed (not supported on this filesystem, …).
    Io(io::Error),
}

/// Take `flock(LOCK_EX|LOCK_NB)` on `fd`, retrying on EINTR.
pub fn try_flock(fd: BorrowedFd<'_>) -> Result<(), LockFailure> {
    loop {
        // SAFETY: plain syscall on a valid descriptor.
        let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Err(LockFailure::Held { pid: None }),
            _ => return Err(LockFailure::Io(e)),
        }
    }
}

/// A held set of device locks. Dropping it releases them.
#[derive(Debug)]
pub struct DeviceLock {
    held: Vec<(PathBuf, File)>,
}

impl DeviceLock {
    /// Lock every key in the default lock folder ([`default_lock_dir`]). `what` names the device
    /// for messages (`USB 3-1.2 05c6:9008`).
    pub fn acquire(keys: &[String], what: &str) -> Result<DeviceLock, TransportError> {
        let dir = default_lock_dir().map_err(|e| {
            TransportError::Io(io::Error::new(
                e.kind(),
                format!("no folder for the device lock of {what} ({e}); set XDG_RUNTIME_DIR to a writable folder"),
            ))
        })?;
        Self::acquire_in(&dir, keys, what)
    }

    /// Lock every key in `dir`. All or nothing: if one key is held, those already taken are
    /// released and [`TransportError::Busy`] names the holder.
    pub fn acquire_in(
        dir: &Path,
        keys: &[String],
        what: &str,
    ) -> Result<DeviceLock, TransportError> {
        let mut names: Vec<String> = keys.iter().map(|k| sanitize_key(k)).collect();
        names.sort();
        names.dedup();
        let mut held = Vec::with_capacity(names.len());
        for name in names {
            let path = dir.join(format!("{name}.lock"));
            let mut file = open_lock_file(&path).map_err(|e| {
                TransportError::Io(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot open the lock file {} for {what}: {e}",
                        path.display()
                    ),
                ))
            })?;
            match try_flock(std::os::fd::AsFd::as_fd(&file)) {
                Ok(()) => {
                    // Best effort: a read-only lock file (another user's) keeps its old text.
                    let _ = write_pid(&mut file);
                    held.push((path, file));
                }
                Err(LockFailure::Held { .. }) => {
                    let pid = read_pid(&mut file);
                    return Err(TransportError::Busy(busy_message(what, pid)));
                }
                Err(LockFailure::Io(e)) => {
                    return Err(TransportError::Io(io::Error::new(
                        e.kind(),
                        format!("cannot lock {} for {what}: {e}", path.display()),
                    )))
                }
            }
        }
        Ok(DeviceLock { held })
    }

    /// The lock files held.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.held.iter().map(|(p, _)| p.as_path())
    }
}

impl Drop for DeviceLock {
    fn drop(&mut self) {
        for (_, file) in &mut self.held {
            // Clear our PID so a stale file never names us; the close below releases the lock.
            let _ = file.set_len(0);
        }
    }
}

/// The lock key for a USB location (`3-1.2`).
pub fn location_key(location: &str) -> String {
    format!("usb-at-{location}")
}

/// The lock key for a device serial (the EDL `_SN:` value or the USB serial).
pub fn serial_key(serial: &str) -> String {
    format!("usb-sn-{}", serial.to_ascii_uppercase())
}

/// Keep lock file names to a safe alphabet and length; device strings are untrusted.
pub fn sanitize_key(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(96)
        .collect();
    // Never a hidden file, `.` or `..`.
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, 'k');
    }
    s
}

/// The folder for lock files: `/run/lock/qrescue`, else `$XDG_RUNTIME_DIR/qrescue`, else
/// `<temp>/qrescue-locks`. Shared folders are created sticky and world-writable (like
/// `/run/lock`), so every user's qrescue can lock there.
pub fn default_lock_dir() -> io::Result<PathBuf> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no usable lock folder");
    let run_lock = Path::new("/run/lock");
    if run_lock.is_dir() {
        match ensure_dir(&run_lock.join("qrescue"), 0o1777) {
            Ok(p) => return Ok(p),
            Err(e) => last = e,
        }
    }
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        match ensure_dir(&Path::new(&x).join("qrescue"), 0o700) {
            Ok(p) => return Ok(p),
            Err(e) => last = e,
        }
    }
    ensure_dir(&std::env::temp_dir().join("qrescue-locks"), 0o1777).inspect_err(|_| {
        tracing::debug!(target: "qrescue::lock", "earlier lock folder failed: {last}");
    })
}

/// Create `dir` with `mode` if missing; accept it only if it is a real, writable directory (not
/// a symlink someone planted).
fn ensure_dir(dir: &Path, mode: u32) -> io::Result<PathBuf> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            // The umask trimmed the mode; set it exactly.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    // Probe that we can create files there (a root-made 0755 folder is not usable by others).
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(io::Error::from)?;
    Ok(dir.to_path_buf())
}

/// Open (creating) a lock file without following symlinks. Another user's file in a shared
/// folder can only be opened read-only, which is enough for `flock`.
fn open_lock_file(path: &Path) -> io::Result<File> {
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path);
    match rw {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path),
        other => other,
    }
}

fn write_pid(file: &mut File) -> io::Result<()> {
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    file.flush()
}

/// The PID a holder wrote, if it is a plausible one. The file is untrusted: read at most a few
/// bytes.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    parse_pid(&text)
}

/// Parse the first line of a lock file as a PID.
pub fn parse_pid(text: &str) -> Option<u32> {
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

/// The program name of a running process (`/proc/PID/comm`), if visible.
pub fn process_name(pid: u32) -> Option<String> {
    let mut name = String::new();
    File::open(format!("/proc/{pid}/comm"))
        .ok()?
        .take(64)
        .read_to_string(&mut name)
        .ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The people-facing text for a device held by someone else.
pub fn busy_message(what: &str, pid: Option<u32>) -> String {
    let who = match pid {
        Some(pid) => match process_name(pid) {
            Some(name) => format!("{name} (PID {pid})"),
            None => format!("process {pid}"),
        },
        None => "another qrescue".to_string(),
    };
    format!(
        "{what} is already open in {who}; two programs on one modem in download mode can wedge its boot ROM until a power cycle — let the other one finish or stop it (`kill {}`), then try again",
        pid.map(|p| p.to_string()).unwrap_or_else(|| "<pid>".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_second_lock_on_the_same_key_is_busy_and_names_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first =
            DeviceLock::acquire_in(dir.path(), &keys(&["usb-at-3-1.2"]), "USB 3-1.2").unwrap();
        let err =
            DeviceLock::acquire_in(dir.path(), &keys(&["usb-at-3-1.2"]), "USB 3-1.2").unwrap_err();
        match err {
            TransportError::Busy(m) => {
                assert!(m.contains("USB 3-1.2"), "{m}");
                assert!(m.contains(&format!("PID {}", std::process::id())), "{m}");
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(first.paths().count(), 1);
    }

    #[test]
    fn the_lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let k = keys(&["usb-at-1-4", "usb-sn-49CBD7EF"]);
        let first = DeviceLock::acquire_in(dir.path(), &k, "x").unwrap();
        drop(first);
        let again = DeviceLock::acquire_in(dir.path(), &k, "x").unwrap();
        assert_eq!(again.paths().count(), 2);
    }

    #[test]
    fn any_shared_key_blocks_and_a_failed_acquire_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Same modem, re-enumerated elsewhere: only the serial matches.
        let _a =
            DeviceLock::acquire_in(dir.path(), &keys(&["usb-at-3-1", "usb-sn-AB"]), "a").unwrap();
        let e = DeviceLock::acquire_in(dir.path(), &keys(&["usb-at-1-2", "usb-sn-AB"]), "b")
            .unwrap_err();
        assert!(matches!(e, TransportError::Busy(_)));
        // The location key taken before the failure was released again.
        DeviceLock::acquire_in(dir.path(), &keys(&["usb-at-1-2"]), "c").unwrap();
    }

    #[test]
    fn keys_are_sanitized_into_plain_file_names() {
        assert_eq!(sanitize_key("usb-at-3-1.2"), "usb-at-3-1.2");
        assert_eq!(sanitize_key("../../etc/passwd"), "k.._.._etc_passwd");
        assert_eq!(sanitize_key(""), "k");
        assert_eq!(sanitize_key("a/b c\0"), "a_b_c_");
        assert!(sanitize_key(&"x".repeat(500)).len() <= 96);
        assert_eq!(serial_key("49cbd7ef"), "usb-sn-49CBD7EF");
        assert_eq!(location_key("3-1.2"), "usb-at-3-1.2");
    }

    #[test]
    fn pids_parse_only_when_plausible() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid(" 77 \nrest"), Some(77));
        assert_eq!(parse_pid(""), None);
        assert_eq!(parse_pid("0\n"), None);
        assert_eq!(parse_pid("-5"), None);
        assert_eq!(parse_pid("abc"), None);
    }

    #[test]
    fn the_busy_message_names_the_holder_and_the_risk() {
        let m = busy_message("USB 3-1.2 05c6:9008", Some(std::process::id()));
        assert!(m.contains(&format!("PID {}", std::process::id())), "{m}");
        assert!(m.contains("power cycle"), "{m}");
        let m = busy_message("USB 3-1.2", None);
        assert!(m.contains("another qrescue"), "{m}");
    }

    const HOLD_ENV: &str = "QRESCUE_TEST_LOCK_HOLD";
    const MARKER: &str = "QRESCUE-LOCK-HELD-BY-PID:";

    /// Run only as a child of the cross-process tests: take the lock named in the environment,
    /// say so on stdout, and hold it until stdin closes.
    #[test]
    #[ignore = "helper: run as a child process by the cross-process lock tests"]
    fn lock_holder_child() {
        let spec = std::env::var(HOLD_ENV).expect("run by the cross-process lock tests");
        let (dir, key) = spec.split_once('\n').expect("dir and key");
        let _lock = DeviceLock::acquire_in(Path::new(dir), &[key.to_string()], "child").unwrap();
        println!("{MARKER}{} ", std::process::id());
        io::stdout().flush().unwrap();
        let mut rest = String::new();
        let _ = io::stdin().read_to_string(&mut rest);
    }

    /// A child test process holding a lock, with its stdout still open (libtest writes its
    /// summary there after the test; a closed pipe would make it fail).
    struct Holder {
        child: std::process::Child,
        out: io::Lines<io::BufReader<std::process::ChildStdout>>,
        pid: u32,
    }

    impl Holder {
        /// Close its stdin so it lets go, read the rest of its output, and reap it.
        fn release(mut self) -> std::process::ExitStatus {
            drop(self.child.stdin.take());
            for line in self.out.by_ref() {
                drop(line);
            }
            self.child.wait().unwrap()
        }
    }

    /// Start a child test process holding `key` in `dir`; returns once it holds the lock.
    fn spawn_holder(dir: &Path, key: &str) -> Holder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "transport::lock::tests::lock_holder_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLD_ENV, format!("{}\n{key}", dir.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut lines = io::BufReader::new(out).lines();
        let pid = loop {
            let line = lines
                .next()
                .expect("the child exited before taking the lock")
                .unwrap();
            // libtest may print `test name ... ` on the same line before our output.
            if let Some(at) = line.find(MARKER) {
                let pid = line[at + MARKER.len()..].split_whitespace().next().unwrap();
                break pid.parse::<u32>().unwrap();
            }
        };
        Holder {
            child,
            out: lines,
            pid,
        }
    }

    #[test]
    fn a_lock_held_by_another_process_is_busy_and_names_that_pid() {
        let dir = tempfile::tempdir().unwrap();
        let holder = spawn_holder(dir.path(), "usb-at-9-9");
        let pid = holder.pid;
        let err = DeviceLock::acquire_in(dir.path(), &keys(&["usb-at-9-9"]), "USB 9-9");
        // Let the child go before asserting, so a failure cannot leak it.
        let status = holder.release();
        assert!(status.success(), "{status:?}");
        match err {
            Err(TransportError::Busy(m)) => assert!(m.contains(&format!("PID {pid}")), "{m}"),
            other => panic!("expected Busy, got {other:?}"),
        }
        // Released when the holder exited.
        DeviceLock::acquire_in(dir.path(), &keys(&["usb-at-9-9"]), "USB 9-9").unwrap();
    }

    #[test]
    fn a_crashed_holder_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let mut holder = spawn_holder(dir.path(), "usb-sn-CRASH");
        holder.child.kill().unwrap();
        holder.child.wait().unwrap();
        DeviceLock::acquire_in(dir.path(), &keys(&["usb-sn-CRASH"]), "x").unwrap();
    }
}
