//! Shared helpers for integration tests that run the real `qrescue` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_qrescue")
}

/// Spawn `cmd` with stdout piped; its lines arrive on the receiver (stdin null, stderr
/// inherited). The reader thread ends with the child's stdout.
pub fn spawn_lines(cmd: &mut Command) -> (Child, mpsc::Receiver<String>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn qrescue");
    let stdout: ChildStdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// The next line from `rx` as JSON, waiting at most `within`.
pub fn next_json(rx: &mpsc::Receiver<String>, within: Duration) -> serde_json::Value {
    let l = rx
        .recv_timeout(within)
        .expect("a JSON line within the bound");
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}"))
}

/// A `qrescue sim --pty` child process; killed (SIGTERM, then SIGKILL) on drop.
pub struct Sim {
    pub child: Child,
    pub pty: PathBuf,
    pub ready: serde_json::Value,
    lines: mpsc::Receiver<String>,
}

impl Sim {
    /// Start `qrescue sim --pty ARGS…` and wait (bounded) for its first JSON line.
    pub fn start(args: &[&str]) -> Sim {
        let (child, rx) = spawn_lines(Command::new(bin()).arg("sim").arg("--pty").args(args));
        let first = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("qrescue sim printed its first JSON line within 20 s");
        let ready: serde_json::Value =
            serde_json::from_str(&first).unwrap_or_else(|e| panic!("bad JSON {first:?}: {e}"));
        let pty = PathBuf::from(ready["pty"].as_str().expect("pty in the first line"));
        Sim {
            child,
            pty,
            ready,
            lines: rx,
        }
    }

    pub fn port(&self) -> &str {
        self.pty.to_str().unwrap()
    }

    /// Wait (bounded) for a later JSON line whose "event" equals `event`.
    pub fn wait_event(&self, event: &str, within: Duration) -> Option<serde_json::Value> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return None;
            }
            let line = self.lines.recv_timeout(left).ok()?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["event"] == event {
                    return Some(v);
                }
            }
        }
    }

    /// Stop with SIGTERM and wait (bounded) for exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        self.child.wait().ok()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

/// Run `qrescue ARGS…` to completion with a time bound; returns its output.
pub fn qrescue(args: &[&str], within: Duration) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qrescue");
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "qrescue {args:?} did not finish within {within:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The last JSON object printed on stdout.
pub fn last_json(o: &Output) -> serde_json::Value {
    let s = stdout(o);
    let line = s
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in stdout: {s}\nstderr: {}", stderr(o)));
    serde_json::from_str(line).unwrap()
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// The process's exit code (panics if it was killed by a signal).
pub fn code(o: &Output) -> i32 {
    o.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {:?}\nstderr: {}", o.status, stderr(o)))
}

/// Every stdout line parsed as one JSON object (panics on a line that is not JSON).
pub fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}"))
        })
        .collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn sha256_file(p: &Path) -> String {
    sha256_hex(&std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
}

/// A fresh temporary folder (removed on drop).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create a temporary folder")
}

/// A path as `&str` for argument lists.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// `Output` of a finished run, described for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    )
}

/// One `<program>` of a rawprogram XML, read independently of qrescue's parser.
#[derive(Debug, Clone)]
pub struct Program {
    pub label: String,
    pub file: PathBuf,
    pub sector_size: u64,
    /// None for expressions such as NUM_DISK_SECTORS-33.
    pub start: Option<u64>,
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    let len = tag[at..].find('"')?;
    Some(tag[at..at + len].to_string())
}

pub fn programs(rawprogram: &Path) -> Vec<Program> {
    let xml = std::fs::read_to_string(rawprogram).unwrap();
    let dir = rawprogram.parent().unwrap();
    xml.split('<')
        .filter(|t| t.starts_with("program "))
        .map(|t| Program {
            label: attr(t, "label").unwrap(),
            file: dir.join(attr(t, "filename").unwrap().replace('\\', "/")),
            sector_size: attr(t, "SECTOR_SIZE_IN_BYTES").unwrap().parse().unwrap(),
            start: attr(t, "start_sector").unwrap().parse().ok(),
        })
        .collect()
}

/// A fake sysfs tree under `root` (`sys/bus/usb/devices`) with an EG25-G on 1-4 (bus 1, device 9,
/// serial d1098243) whose interfaces 0-3 have ttyUSB0-3; returns the devices folder so a test
/// can add more.
pub fn fake_eg25g_sysfs(root: &Path) -> PathBuf {
    let dev = root.join("sys/bus/usb/devices");
    put_attrs(
        &dev.join("1-4"),
        &[
            ("idVendor", "2c7c"),
            ("idProduct", "0125"),
            ("bcdDevice", "0318"),
            ("busnum", "1"),
            ("devnum", "9"),
            ("product", "EG25-G"),
            ("serial", "d1098243"),
            ("speed", "480"),
        ],
    );
    for n in 0..5u8 {
        let i = dev.join(format!("1-4:1.{n}"));
        let class = if n == 0 || n == 4 { "ff" } else { "00" };
        put_attrs(
            &i,
            &[
                ("bInterfaceNumber", &format!("{n:02x}")),
                ("bInterfaceClass", "ff"),
                ("bInterfaceSubClass", class),
                ("bInterfaceProtocol", class),
            ],
        );
        if n < 4 {
            std::fs::create_dir_all(i.join(format!("ttyUSB{n}"))).unwrap();
        }
    }
    dev
}

/// A sysfs device folder with one attribute file per (name, value).
pub fn put_attrs(dir: &Path, attrs: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (k, v) in attrs {
        std::fs::write(dir.join(k), format!("{v}\n")).unwrap();
    }
}
