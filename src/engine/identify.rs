//! Who a modem in normal mode is, over whichever of its AT and DM ports the caller opened: the AT
//! identity record ([`AtSession::identify`]: model, revision, IMEI, ICCID, CFUN, `usbnet`), the
//! `AT+QSECBOOT?` status where the firmware answers it, and the firmware revision over DIAG
//! (extended build ID, [`DiagSession::build_id`]).
//!
//! Only reads: the AT commands sent are `ATI`, `AT+QGMR` (`AT+CGMR`), `AT+CGSN`, `AT+QCCID`,
//! `AT+CFUN?`, `AT+QCFG="usbnet"` and the read form `AT+QSECBOOT?`; the AT session refuses any
//! command that would change the USB composition. Over DIAG only `7C` is sent. Never fails as a
//! whole: what could not be read is said in [`NormalInfo::problems`] and the records' own
//! problem lists. Renders nothing.
//!
//! [`identify_over_at`] is the one "find its AT port, open it, ask, and try again while a port
//! that just enumerated refuses or stays silent" for a modem back in normal mode (the station's
//! check after a flash, the workflows' identify and verify steps, the demo); [`open_port`] opens
//! the tty of one of its roles.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::backup::identity::{Identity, UsbComposition};
use crate::device::classify::{classify, PortRole};
use crate::device::DeviceSnapshot;
use crate::engine::at::{AtSession, AtTimeouts, NormalIdentity};
use crate::engine::diag::{DiagSession, DiagStats, DiagTimeouts};
use crate::protocol::at::{parse_qsecboot, QSecBoot};
use crate::protocol::diag::packet::BuildId;
use crate::transport::serial::SerialTransport;
use crate::transport::Transport;
use crate::{Error, ErrorKind};

/// The waits of both sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalInfoOptions {
    pub at: AtTimeouts,
    pub diag: DiagTimeouts,
}

/// What the DM port told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiagInfo {
    /// The extended build ID, when the modem answered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_id: Option<BuildId>,
    /// Why it could not be read (QFirehose notes this fails while the modem is still starting).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub stats: DiagStats,
}

/// The `AT+QSECBOOT?` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SecBoot {
    /// The firmware answered: its fields as sent (neither PROTOCOLS.md nor USERS.md documents
    /// them, so they are not interpreted).
    Answered { fields: Vec<String> },
    /// The firmware does not offer the command (ERROR / +CME ERROR), or its answer was not the
    /// expected one: what it said.
    NotSupported { answer: String },
    /// Not asked: the AT port went away earlier.
    NotAsked,
}

/// A normal-mode modem's identity as read over its ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NormalInfo {
    /// The AT identity record; `None` when no AT port was given.
    pub at: Option<NormalIdentity>,
    /// `None` when no AT port was given.
    pub secboot: Option<SecBoot>,
    /// `None` when no DM port was given.
    pub diag: Option<DiagInfo>,
    /// Port-level problems for people (no AT port, DIAG silent …).
    pub problems: Vec<String>,
}

/// Read the identity of a modem in normal mode over `at` and/or `dm`.
pub fn identify_normal(
    at: Option<&mut dyn Transport>,
    dm: Option<&mut dyn Transport>,
    opts: &NormalInfoOptions,
) -> NormalInfo {
    let mut problems = Vec::new();
    let (at_id, secboot) = match at {
        Some(t) => {
            let mut s = AtSession::with_timeouts(t, opts.at);
            let id = s.identify();
            let lost = id
                .problems
                .iter()
                .any(|p| p.error.contains("went away") || p.error.contains("not asked"));
            let secboot = if lost {
                SecBoot::NotAsked
            } else {
                match s.query("AT+QSECBOOT?", parse_qsecboot) {
                    Ok(QSecBoot { fields }) => SecBoot::Answered { fields },
                    Err(e) => SecBoot::NotSupported {
                        answer: if e.why.is_empty() { e.what } else { e.why },
                    },
                }
            };
            (Some(id), Some(secboot))
        }
        None => {
            problems.push(
                "No AT port was opened: model, IMEI, ICCID and CFUN are not known".to_string(),
            );
            (None, None)
        }
    };
    let diag = dm.map(|t| {
        let mut s = DiagSession::with_timeouts(t, opts.diag);
        let r = s.build_id();
        let stats = s.stats();
        match r {
            Ok(b) => DiagInfo {
                build_id: Some(b),
                error: None,
                stats,
            },
            Err(e) => {
                problems.push(format!(
                    "The firmware revision could not be read over DIAG: {} ({})",
                    e.what, e.why
                ));
                DiagInfo {
                    build_id: None,
                    error: Some(format!("{}: {}", e.what, e.why)),
                    stats,
                }
            }
        }
    });
    NormalInfo {
        at: at_id,
        secboot,
        diag,
        problems,
    }
}

impl NormalInfo {
    /// The revision over DIAG, when read.
    pub fn diag_revision(&self) -> Option<&str> {
        self.diag
            .as_ref()
            .and_then(|d| d.build_id.as_ref())
            .map(|b| b.sw_revision.as_str())
            .filter(|r| !r.is_empty())
    }

    /// The firmware revision: from AT (AT+QGMR, the full one), else from DIAG.
    pub fn revision(&self) -> Option<&str> {
        self.at
            .as_ref()
            .and_then(|a| a.revision.as_ref())
            .map(|r| r.text.as_str())
            .or_else(|| self.diag_revision())
    }

    /// Plain-words warnings: the AT record's, a revision that differs between AT and DIAG, and
    /// the port-level problems.
    pub fn advice(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .at
            .as_ref()
            .map(NormalIdentity::advice)
            .unwrap_or_default();
        let at_rev = self
            .at
            .as_ref()
            .and_then(|a| a.revision.as_ref())
            .map(|r| r.text.as_str());
        if let (Some(a), Some(d)) = (at_rev, self.diag_revision()) {
            // AT+QGMR adds a sub-version (`_20.200.20.200`) to what DIAG reports.
            if !a.starts_with(d) && !d.starts_with(a) {
                out.push(format!(
                    "AT says revision {a} but DIAG says {d}: the ports may belong to two different modems"
                ));
            }
        }
        out.extend(self.problems.iter().cloned());
        out
    }

    /// The identity for a backup manifest: the AT fields, the DIAG revision when AT gave none,
    /// and `usb`.
    pub fn identity(&self, usb: Option<UsbComposition>) -> Identity {
        let mut id = match &self.at {
            Some(a) => Identity::from_normal(a),
            None => Identity::default(),
        };
        if id.revision.is_none() {
            id.revision = self
                .diag_revision()
                .filter(|r| r.len() <= 256 && !r.chars().any(char::is_control))
                .map(str::to_string);
        }
        id.with_usb(usb)
    }
}

/// How often [`identify_over_at`] asks, and the pause between: a modem that just enumerated may
/// refuse the first open of its AT port, or not answer for a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtTries {
    /// At least 1.
    pub tries: u32,
    pub pause: Duration,
}

impl AtTries {
    /// One try, no pause.
    pub const ONCE: AtTries = AtTries {
        tries: 1,
        pause: Duration::ZERO,
    };
}

impl Default for AtTries {
    fn default() -> Self {
        AtTries {
            tries: 5,
            pause: Duration::from_millis(200),
        }
    }
}

/// The tty bound to `role` of `snapshot` (its classification's interface), or why there is
/// none.
pub fn port_tty(snapshot: &DeviceSnapshot, role: PortRole) -> crate::Result<PathBuf> {
    let class = classify(snapshot);
    let what = match role {
        PortRole::At => "AT",
        PortRole::Dm => "DM (DIAG)",
        _ => "serial",
    };
    let port = class.port(role).ok_or_else(|| {
        Error::new(
            ErrorKind::NoDevice,
            format!("{} has no {what} port in this mode", snapshot.id()),
            format!("it shows as {}", class.label),
            "Check that the modem is in normal mode (`qrescue list`)",
        )
    })?;
    port.tty
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NoDevice,
                format!(
                    "No serial device is bound to the {what} interface {} of {}",
                    port.interface,
                    snapshot.id()
                ),
                "the kernel's option/qcserial driver makes the ttys; without one there is nothing to open",
                "Load the option driver (`modprobe option`), check `qrescue preflight`, or put the modem in download mode (9008)",
            )
        })
}

/// Open the tty of `role` of `snapshot`.
pub fn open_port(snapshot: &DeviceSnapshot, role: PortRole) -> crate::Result<SerialTransport> {
    crate::transport::open::open_tty(&port_tty(snapshot, role)?)
}

/// Whether the modem told anything of who it is (revision, IMEI, CFUN or model).
pub fn at_answered(id: &NormalIdentity) -> bool {
    id.revision.is_some() || id.imei.is_some() || id.cfun.is_some() || id.model.is_some()
}

/// Ask the modem of `snapshot` who it is over its AT port ([`AtSession::identify`], every
/// command bounded): open the port and ask, up to `tries` times with the pause between, until
/// it answers. `wrap` wraps each opened port (a recording). A stop request (`cancel`) ends the
/// tries early. `Err` when it has no AT port, the port could not be opened, or it never
/// answered (the problems it gave).
pub fn identify_over_at(
    snapshot: &DeviceSnapshot,
    tries: AtTries,
    wrap: &dyn Fn(SerialTransport) -> Box<dyn Transport>,
    cancel: &AtomicBool,
) -> crate::Result<NormalIdentity> {
    let tty = port_tty(snapshot, PortRole::At)?;
    let mut last = None;
    for attempt in 0..tries.tries.max(1) {
        if attempt > 0 {
            if cancel.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(tries.pause);
        }
        let t = match crate::transport::open::open_tty(&tty) {
            Ok(t) => t,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let id = AtSession::new(wrap(t)).identify();
        if at_answered(&id) {
            return Ok(id);
        }
        last = Some(silent(&tty, &id));
    }
    Err(last.unwrap_or_else(|| silent(&tty, &NormalIdentity::default())))
}

fn silent(tty: &Path, id: &NormalIdentity) -> Error {
    let why = id
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.command, p.error))
        .collect::<Vec<_>>()
        .join("; ");
    Error::failure(
        format!("The modem's AT port {} did not answer", tty.display()),
        if why.is_empty() {
            "no answer".to_string()
        } else {
            why
        },
        "Close programs holding it (qrescue preflight), then `qrescue info`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::normal::ports::{InProcessNormal, ServeOptions};
    use crate::sim::normal::state;
    use crate::sim::profile::Profile;
    use std::time::Duration;

    fn quick() -> NormalInfoOptions {
        NormalInfoOptions {
            at: AtTimeouts {
                write: Duration::from_secs(5),
                resync_quiet: Duration::from_millis(50),
                resync_max: Duration::from_secs(2),
            },
            diag: DiagTimeouts {
                write: Duration::from_secs(5),
                response: Duration::from_secs(5),
                drain_quiet: Duration::from_millis(50),
                drain_max: Duration::from_secs(2),
                edl_echo: Duration::from_secs(5),
            },
        }
    }

    fn unit() -> (
        Profile,
        InProcessNormal,
        crate::sim::normal::ports::HostPorts,
    ) {
        let p = Profile::by_name("ec25").unwrap().for_unit(3);
        let boot = state::factory_boot(&p).unwrap();
        let opts = ServeOptions {
            boot_urcs: false,
            ..ServeOptions::default()
        };
        let (m, h) = InProcessNormal::start(&p, boot, 0, opts);
        (p, m, h)
    }

    #[test]
    fn a_factory_unit_is_identified_over_at_and_diag() {
        let (p, modem, mut host) = unit();
        let info = identify_normal(Some(&mut host.at), Some(&mut host.dm), &quick());
        let at = info.at.as_ref().unwrap();
        assert!(at.problems.is_empty(), "{:?}", at.problems);
        assert_eq!(at.cfun.unwrap().level, 1);
        let imei = crate::sim::normal::unit::unit_imei(&p);
        assert_eq!(at.imei.as_ref().unwrap().digits, imei);
        // The emulator does not model AT+QSECBOOT: an answer, not a failure.
        assert!(
            matches!(info.secboot, Some(SecBoot::NotSupported { .. })),
            "{:?}",
            info.secboot
        );
        let rev = info.diag_revision().unwrap().to_string();
        assert_eq!(info.revision(), Some(rev.as_str()));
        assert!(info.advice().is_empty(), "{:?}", info.advice());
        let id = info.identity(None);
        assert_eq!(id.imei.as_deref(), Some(imei.as_str()));
        assert_eq!(id.normal_key(), Some(format!("imei-{imei}")));
        assert!(id.validate().is_ok());
        let (_, state) = modem.finish().unwrap();
        assert_eq!(state.boot.cfun, 1);
    }

    #[test]
    fn only_a_dm_port_still_gives_the_revision_and_says_what_is_missing() {
        let (_p, modem, mut host) = unit();
        let info = identify_normal(None, Some(&mut host.dm), &quick());
        assert!(info.at.is_none() && info.secboot.is_none());
        assert!(info.revision().is_some());
        assert!(info.advice().iter().any(|a| a.contains("No AT port")));
        assert!(info.identity(None).revision.is_some());
        drop(modem);
    }

    #[test]
    fn a_silent_dm_port_is_a_problem_not_a_failure() {
        let (_p, modem, mut host) = unit();
        let (mut dead, _keep) = crate::transport::pipe::pair(crate::transport::Framing::Stream);
        let mut opts = quick();
        opts.diag.response = Duration::from_millis(200);
        let info = identify_normal(Some(&mut host.at), Some(&mut dead), &opts);
        assert!(info.at.as_ref().unwrap().imei.is_some());
        let d = info.diag.as_ref().unwrap();
        assert!(d.build_id.is_none() && d.error.is_some());
        assert!(info.advice().iter().any(|a| a.contains("over DIAG")));
        // The AT revision still stands.
        assert!(info.revision().is_some());
        drop(modem);
    }

    #[test]
    fn a_modem_without_an_at_tty_is_refused_before_anything_is_opened() {
        let snap = DeviceSnapshot {
            bus: 3,
            ports: vec![1],
            address: 5,
            vid: 0x05c6,
            pid: 0x9008,
            bcd_device: 0,
            manufacturer: None,
            product: None,
            serial: None,
            speed: None,
            interfaces: Vec::new(),
            origin: None,
        };
        let e = identify_over_at(
            &snap,
            AtTries::default(),
            &|t| Box::new(t),
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoDevice);
        assert!(e.what.contains("no AT port"), "{e}");
        assert_eq!(
            open_port(&snap, PortRole::Dm).unwrap_err().kind,
            ErrorKind::NoDevice
        );
        let mut id = NormalIdentity::default();
        assert!(!at_answered(&id));
        id.model = Some("EC25".into());
        assert!(at_answered(&id));
    }
}
