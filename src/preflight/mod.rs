//! Preflight: before a flash or backup, who holds the modem's ports, and is there room for the
//! backup (USERS.md §1 problems 8 and 10, issue 7 item 7).
//!
//! - [`holders`] scans `/proc/<pid>/fd` for the modem's tty nodes and its `/dev/bus/usb/BBB/DDD`
//!   node, names each process (ModemManager, qmi-proxy, gpsd, a router daemon, another qrescue,
//!   a terminal …) and says in plain words how to free the port.
//! - [`space`] reads the free space at the backup folder (statvfs) against what is needed.
//! - [`check`] puts both together into [`Finding`]s with a severity.
//!
//! The `/proc` and `/dev` roots are injectable ([`Roots`]) so tests use a fake tree of symlinks
//! in a temporary folder. Nothing here opens a device or writes anything; every directory walk is
//! bounded.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::device::classify::{classify, PortRole};
use crate::device::DeviceSnapshot;
use crate::explain::Severity;

pub mod holders;
pub mod space;

pub use holders::{scan_holders, Holder, HolderKind, Scan};
pub use space::{free_space, Space};

/// Characters of a holder's command line shown to people (JSON carries all that was read).
const SHOWN_CMDLINE: usize = 160;

/// Where `/proc` and `/dev` are: the host's, or a fake tree in tests.
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc_dir: PathBuf,
    pub dev_dir: PathBuf,
    /// A process left out of the scan (qrescue itself on a real host).
    pub exclude_pid: Option<u32>,
}

impl Roots {
    /// This host: `/proc` and `/dev`, leaving out this process.
    pub fn host() -> Self {
        Roots {
            proc_dir: PathBuf::from("/proc"),
            dev_dir: PathBuf::from("/dev"),
            exclude_pid: Some(std::process::id()),
        }
    }

    /// A fake tree: `root/proc` and `root/dev`.
    pub fn under(root: &Path) -> Self {
        Roots {
            proc_dir: root.join("proc"),
            dev_dir: root.join("dev"),
            exclude_pid: None,
        }
    }

    /// A `/dev/...` path as it lies under this tree's `/dev`.
    pub fn dev_path(&self, host_path: &str) -> PathBuf {
        match host_path.strip_prefix("/dev/") {
            Some(rest) => self.dev_dir.join(rest),
            None => PathBuf::from(host_path),
        }
    }
}

/// One device node of a modem to look for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub path: PathBuf,
    /// For people: `AT port (if2)`, `USB device`, `the port you named`.
    pub what: String,
    /// Holding it is a problem for flashing (false for the NMEA port).
    #[serde(skip)]
    pub matters: bool,
}

/// The nodes of one modem: each tty by interface and its usbfs node.
pub fn modem_nodes(snap: &DeviceSnapshot, roots: &Roots) -> Vec<Node> {
    let class = classify(snap);
    let mut out: Vec<Node> = class
        .ports
        .iter()
        .filter_map(|p| {
            let tty = p.tty.as_ref()?;
            Some(Node {
                path: roots.dev_path(tty),
                what: format!("{} port (if{})", p.role.label(), p.interface),
                matters: p.role != PortRole::Nmea,
            })
        })
        .collect();
    if snap.address != 0 {
        out.push(Node {
            path: roots
                .dev_dir
                .join(format!("bus/usb/{:03}/{:03}", snap.bus, snap.address)),
            what: "USB device".into(),
            matters: true,
        });
    }
    out
}

/// What preflight checks and what it found, for people and `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `holder`, `access`, `space`, `modems`.
    pub check: &'static str,
    pub severity: Severity,
    pub title: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Ways to fix it, in plain words with the commands to type.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
}

impl Finding {
    pub fn new(check: &'static str, severity: Severity, title: impl Into<String>) -> Self {
        Finding {
            check,
            severity,
            title: title.into(),
            detail: String::new(),
            fixes: Vec::new(),
            holder: None,
        }
    }
}

/// Findings about who holds `nodes` (the nodes of one modem, or the ports the person named).
pub fn check_holders(roots: &Roots, subject: &str, nodes: &[Node]) -> Vec<Finding> {
    let paths: Vec<PathBuf> = nodes.iter().map(|n| n.path.clone()).collect();
    let scan = scan_holders(roots, &paths);
    let mut out = Vec::new();
    for h in &scan.holders {
        let held: Vec<&Node> = nodes
            .iter()
            .filter(|n| h.nodes.iter().any(|p| Path::new(p) == n.path))
            .collect();
        let matters = held.iter().any(|n| n.matters);
        let what: Vec<String> = held
            .iter()
            .map(|n| format!("{} ({})", n.path.display(), n.what))
            .collect();
        let mut f = Finding::new(
            "holder",
            if matters {
                Severity::Error
            } else {
                Severity::Warning
            },
            format!(
                "{} (pid {}) holds {}",
                h.kind.label(&h.name),
                h.pid,
                what.join(", ")
            ),
        );
        let cmd = if h.cmdline.is_empty() {
            h.name.as_str()
        } else {
            h.cmdline.as_str()
        };
        let shown: String = cmd.chars().take(SHOWN_CMDLINE).collect();
        let cut = if shown.len() < cmd.len() { " …" } else { "" };
        f.detail = format!("{} Command line: {shown}{cut}", h.kind.why());
        f.fixes = holders::how_to_free(h);
        f.holder = Some(h.clone());
        out.push(f);
    }
    if scan.holders.is_empty() {
        let mut f = Finding::new(
            "holder",
            Severity::Info,
            format!("No other program holds {subject}"),
        );
        f.detail = format!(
            "{} node(s) checked against {} process(es)",
            nodes.len(),
            scan.scanned
        );
        out.push(f);
    }
    if scan.unreadable > 0 {
        let mut f = Finding::new(
            "access",
            Severity::Warning,
            format!(
                "{} process(es) could not be checked (their open files are not readable by this user)",
                scan.unreadable
            ),
        );
        f.detail =
            "ModemManager and router daemons usually run as root, so they may be among them".into();
        f.fixes =
            vec!["Run the preflight as root (sudo qrescue preflight) to see every program".into()];
        out.push(f);
    }
    out
}

/// The finding about free space at `dir` for a backup of `needed` bytes (None: unknown).
pub fn check_space(dir: &Path, needed: Option<u64>) -> Finding {
    match free_space(dir) {
        Err(e) => {
            let mut f = Finding::new(
                "space",
                Severity::Error,
                format!("Cannot read the free space at {}", dir.display()),
            );
            f.detail = e.to_string();
            f.fixes = vec!["Choose an existing folder for backups (--backup-dir DIR)".into()];
            f
        }
        Ok(s) => space::finding(dir, &s, needed),
    }
}

/// The worst severity among `findings`.
pub fn worst(findings: &[Finding]) -> Option<Severity> {
    findings.iter().map(|f| f.severity).max()
}

#[cfg(test)]
mod tests;
