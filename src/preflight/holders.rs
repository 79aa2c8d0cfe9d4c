//! Who holds a device node: `/proc/<pid>/fd/*` symlinks pointing at it, with the process named
//! and classified, and plain-words ways to free the node.
//!
//! Bounded: at most [`MAX_PROCS`] processes and [`MAX_FDS`] descriptors per process are looked
//! at; `comm` and `cmdline` are read up to [`MAX_TEXT`] bytes. Processes whose `fd` folder is
//! not readable (other users' processes without root) are counted, not guessed.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::Roots;

/// Most processes looked at.
pub const MAX_PROCS: usize = 65_536;
/// Most descriptors looked at per process.
pub const MAX_FDS: usize = 16_384;
/// Most bytes read from `comm` / `cmdline`.
pub const MAX_TEXT: u64 = 4096;

/// What kind of program holds the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HolderKind {
    ModemManager,
    QmiProxy,
    MbimProxy,
    Gpsd,
    /// Teltonika gsmd/mobifd, OpenWrt QModem and similar router daemons.
    RouterDaemon,
    /// quectel-CM, uqmi, qmicli, mbimcli, pppd: a data-connection tool.
    ConnectionTool,
    /// QFirehose, qdl, edl, fwupd, fh_loader, QFenix.
    Flasher,
    /// Another qrescue.
    Qrescue,
    /// minicom, screen, picocom, microcom, tio, cu, socat.
    Terminal,
    Other,
}

impl HolderKind {
    /// Classify by the process name (`comm`) and the command line's program names.
    pub fn of(comm: &str, cmdline: &str) -> HolderKind {
        let mut names: Vec<String> = vec![comm.to_ascii_lowercase()];
        // argv[0] and, for interpreters (python3 edl …), argv[1].
        for arg in cmdline.split(' ').filter(|a| !a.is_empty()).take(2) {
            let base = arg.rsplit('/').next().unwrap_or(arg).to_ascii_lowercase();
            names.push(base);
        }
        let is = |list: &[&str]| names.iter().any(|n| list.contains(&n.as_str()));
        if is(&["modemmanager"]) {
            HolderKind::ModemManager
        } else if is(&["qmi-proxy"]) {
            HolderKind::QmiProxy
        } else if is(&["mbim-proxy"]) {
            HolderKind::MbimProxy
        } else if is(&["gpsd"]) {
            HolderKind::Gpsd
        } else if is(&["qrescue"]) {
            HolderKind::Qrescue
        } else if is(&[
            "gsmd",
            "mobifd",
            "qmodem",
            "modem_updater",
            "modemmanagerd",
            "ltestatus",
        ]) {
            HolderKind::RouterDaemon
        } else if is(&[
            "quectel-cm",
            "uqmi",
            "qmicli",
            "mbimcli",
            "pppd",
            "comgt",
            "gcom",
        ]) {
            HolderKind::ConnectionTool
        } else if is(&[
            "qfirehose",
            "qdl",
            "edl",
            "edl.py",
            "fwupd",
            "fh_loader",
            "fh_loader.exe",
            "qfenix",
            "edl-ng",
        ]) {
            HolderKind::Flasher
        } else if is(&[
            "minicom", "screen", "picocom", "microcom", "tio", "cu", "socat", "putty", "cutecom",
            "gtkterm",
        ]) {
            HolderKind::Terminal
        } else {
            HolderKind::Other
        }
    }

    /// How people call it.
    pub fn label(self, name: &str) -> String {
        match self {
            HolderKind::ModemManager => "ModemManager".into(),
            HolderKind::QmiProxy => "qmi-proxy".into(),
            HolderKind::MbimProxy => "mbim-proxy".into(),
            HolderKind::Gpsd => "gpsd".into(),
            HolderKind::Qrescue => "Another qrescue".into(),
            HolderKind::RouterDaemon => format!("The router daemon {name}"),
            HolderKind::ConnectionTool => format!("The connection tool {name}"),
            HolderKind::Flasher => format!("The flasher {name}"),
            HolderKind::Terminal => format!("The terminal program {name}"),
            HolderKind::Other => format!("The program {name}"),
        }
    }

    /// Why holding the port matters, in plain words.
    pub fn why(self) -> &'static str {
        match self {
            HolderKind::ModemManager | HolderKind::QmiProxy | HolderKind::MbimProxy => {
                "ModemManager probes and keeps modem ports open; its probing breaks the Sahara handshake and it fights over the AT and DM ports during a flash."
            }
            HolderKind::Gpsd => "gpsd reads the modem's NMEA port and keeps it open.",
            HolderKind::RouterDaemon => {
                "Router daemons keep talking to the modem's AT port and reset it when it stops answering, which can cut a flash short."
            }
            HolderKind::ConnectionTool => {
                "It keeps the data connection up over the modem's ports."
            }
            HolderKind::Flasher | HolderKind::Qrescue => {
                "Two programs on one modem in download mode can wedge its boot ROM until a power cycle."
            }
            HolderKind::Terminal => "A terminal program has the port open.",
            HolderKind::Other => "Another program has the port open.",
        }
    }
}

/// A process holding one or more of the nodes asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    /// `comm` (the kernel's short name).
    pub name: String,
    /// The command line, arguments joined by spaces.
    pub cmdline: String,
    pub kind: HolderKind,
    /// The nodes it holds (paths as asked).
    pub nodes: Vec<String>,
}

/// The result of one scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub holders: Vec<Holder>,
    /// Processes whose descriptors were read.
    pub scanned: usize,
    /// Processes whose `fd` folder could not be read (permission).
    pub unreadable: usize,
}

fn read_text(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_TEXT).read_to_end(&mut buf);
    }
    let s: String = String::from_utf8_lossy(&buf)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    s.trim().chars().filter(|c| !c.is_control()).collect()
}

/// A node we look for: its path as asked, its canonical path, and its device number when it is
/// a character device.
struct Wanted {
    asked: PathBuf,
    canonical: Option<PathBuf>,
    rdev: Option<u64>,
}

impl Wanted {
    fn new(p: &Path) -> Self {
        let rdev = std::fs::metadata(p)
            .ok()
            .filter(|m| m.file_type().is_char_device())
            .map(|m| m.rdev());
        Wanted {
            asked: p.to_path_buf(),
            canonical: std::fs::canonicalize(p).ok(),
            rdev,
        }
    }

    fn is(&self, target: &Path, fd_link: &Path) -> bool {
        if target == self.asked || self.canonical.as_deref() == Some(target) {
            return true;
        }
        // The same character device under another name (a container's /dev, a renamed node).
        match self.rdev {
            Some(r) if target.starts_with("/dev") => std::fs::metadata(fd_link)
                .map(|m| m.file_type().is_char_device() && m.rdev() == r)
                .unwrap_or(false),
            _ => false,
        }
    }
}

/// Every process under `roots.proc_dir` with one of `nodes` open.
pub fn scan_holders(roots: &Roots, nodes: &[PathBuf]) -> Scan {
    let wanted: Vec<Wanted> = nodes.iter().map(|p| Wanted::new(p)).collect();
    let mut scan = Scan::default();
    if wanted.is_empty() {
        return scan;
    }
    let Ok(rd) = std::fs::read_dir(&roots.proc_dir) else {
        return scan;
    };
    let mut pids: Vec<u32> = rd
        .take(MAX_PROCS * 2)
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| Some(*p) != roots.exclude_pid)
        .take(MAX_PROCS)
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let dir = roots.proc_dir.join(pid.to_string());
        let fds = match std::fs::read_dir(dir.join("fd")) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                scan.unreadable += 1;
                continue;
            }
            // Gone meanwhile, or a kernel thread without fds.
            Err(_) => continue,
        };
        scan.scanned += 1;
        let mut held: BTreeSet<String> = BTreeSet::new();
        for fd in fds.take(MAX_FDS).flatten() {
            let link = fd.path();
            let Ok(target) = std::fs::read_link(&link) else {
                continue;
            };
            for w in &wanted {
                if w.is(&target, &link) {
                    held.insert(w.asked.display().to_string());
                }
            }
        }
        if held.is_empty() {
            continue;
        }
        let name = read_text(&dir.join("comm"));
        let cmdline = read_text(&dir.join("cmdline"));
        scan.holders.push(Holder {
            pid,
            kind: HolderKind::of(&name, &cmdline),
            name: if name.is_empty() {
                format!("pid {pid}")
            } else {
                name
            },
            cmdline,
            nodes: held.into_iter().collect(),
        });
    }
    scan
}

/// Plain-words ways to free the node(s) `h` holds, most direct first.
pub fn how_to_free(h: &Holder) -> Vec<String> {
    let pid = h.pid;
    let udev =
        "So ModemManager never takes a modem in download mode: install qrescue's udev rules \
                (qrescue udev-rules | sudo tee /etc/udev/rules.d/51-qrescue.rules; they set \
                ENV{ID_MM_DEVICE_IGNORE}=\"1\" for 9008/900e and ignore the DM port)";
    match h.kind {
        HolderKind::ModemManager => vec![
            "Stop it for the job: sudo systemctl stop ModemManager (start it again afterwards: sudo systemctl start ModemManager)".into(),
            "Or keep it running but make it let go of this modem: mmcli -L shows the modem's number N; run sudo mmcli -m N --inhibit and leave it running until the job is done (Ctrl-C ends the inhibition)".into(),
            udev.into(),
        ],
        HolderKind::QmiProxy | HolderKind::MbimProxy => vec![
            format!("{} is started by ModemManager or qmicli/mbimcli -p and exits when they let go: stop ModemManager (sudo systemctl stop ModemManager), then check again", h.kind.label(&h.name)),
            format!("If it stays: sudo kill {pid}"),
        ],
        HolderKind::Gpsd => vec![
            "Stop it for the job: sudo systemctl stop gpsd.socket gpsd (start again afterwards)".into(),
        ],
        HolderKind::RouterDaemon => vec![
            format!("Stop it for the job: /etc/init.d/{} stop (OpenWrt/RutOS; it comes back on reboot or with /etc/init.d/{} start)", h.name, h.name),
            format!("If there is no init script: kill {pid}"),
        ],
        HolderKind::ConnectionTool => vec![
            "Bring the mobile data interface down for the job (OpenWrt: ifdown wwan, or the interface's name), or stop the tool".into(),
            format!("Or: kill {pid}"),
        ],
        HolderKind::Flasher => vec![
            format!("Let {} finish, or stop it (Ctrl-C in its terminal, or kill {pid}); then power-cycle the modem before starting again", h.name),
        ],
        HolderKind::Qrescue => vec![
            format!("Wait for the other qrescue (pid {pid}) to finish, or stop it with Ctrl-C in its terminal (or kill {pid})"),
        ],
        HolderKind::Terminal => vec![
            format!("Close {} (minicom: Ctrl-A X; screen: Ctrl-A k; picocom: Ctrl-A Ctrl-X), or kill {pid}", h.name),
        ],
        HolderKind::Other => vec![format!("Close {} or stop it: kill {pid}", h.name)],
    }
}
