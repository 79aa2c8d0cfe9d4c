//! `qrescue info`: who the modem is, in whatever mode it is in.
//!
//! - `--port PATH|usb[:WHICH]`: Sahara command mode on that port, as always (EDL 9008 / 900e).
//! - `--at TTY` and/or `--dm TTY`: a modem in normal mode on those ports.
//! - Neither: find the one modem — on this host's USB, or with `--sim SOCKET` the one a running
//!   `qrescue sim` announces — and answer by its mode: normal mode over its AT and DM ports (found
//!   by interface number), EDL / crash dump over Sahara, anything else with what it is and what
//!   to do.
//!
//! In normal mode only reading commands are sent ([`crate::engine::identify`]); nothing changes
//! the USB composition. `--json` prints one object.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::backup::identity::{Identity, UsbComposition};
use crate::cli::args::{FindArgs, InfoArgs, PortArgs};
use crate::cli::output::Output;
use crate::cli::port::{self, PortSpec};
use crate::cli::{recording, sahara_cmds};
use crate::device::classify::{classify, Classification, Mode, PortRole};
use crate::device::enumerate::{self, Sysfs};
use crate::device::sim_source::SimSource;
use crate::device::{DeviceChange, DeviceSnapshot, DeviceSource};
use crate::engine::identify::{identify_normal, NormalInfo, NormalInfoOptions, SecBoot};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::transport::usb::UsbSelector;
use crate::transport::Transport;
use crate::{Error, ErrorKind};

/// After the emulator's header, its present devices arrive at once: stop listening once it has
/// been quiet this long …
const SIM_QUIET: Duration = Duration::from_millis(300);
/// … and wait at most this long for a modem to appear when none is there yet (one switching
/// modes is briefly absent).
const SIM_WAIT: Duration = Duration::from_secs(5);

/// The one modem found, and where.
#[derive(Debug, Clone)]
pub struct Found {
    pub snap: DeviceSnapshot,
    pub class: Classification,
    /// `this host's USB` or `the emulator at SOCKET`.
    pub source: String,
}

impl Found {
    /// The tty of the first interface with `role`.
    pub fn tty(&self, role: PortRole) -> Option<PathBuf> {
        self.class
            .ports
            .iter()
            .find(|p| p.role == role && p.tty.is_some())
            .and_then(|p| p.tty.as_ref())
            .map(|t| {
                if t.starts_with('/') {
                    PathBuf::from(t)
                } else {
                    Path::new("/dev").join(t)
                }
            })
    }

    /// The USB composition for an identity record.
    pub fn composition(&self) -> UsbComposition {
        UsbComposition::from_device(&self.snap, &self.class)
    }

    /// `2c7c:0125 Quectel normal mode (EC25) at 3-1.2`.
    pub fn headline(&self) -> String {
        let mut s = format!("{}  {}", self.snap.id(), self.class.label);
        if let Some(m) = self.class.model() {
            if !self.class.label.contains(m) {
                s.push_str(&format!("  {m}"));
            }
        }
        if !self.snap.ports.is_empty() {
            s.push_str(&format!("  at {}", self.snap.location()));
        }
        s
    }

    fn json(&self) -> serde_json::Value {
        let mut v = json!({
            "location": (!self.snap.ports.is_empty()).then(|| self.snap.location()),
            "usb_id": self.snap.id(),
            "product": self.snap.product,
            "source": self.source,
        });
        if let (Some(obj), Ok(serde_json::Value::Object(c))) =
            (v.as_object_mut(), serde_json::to_value(&self.class))
        {
            obj.extend(c);
        }
        v
    }
}

/// Whether `--port` was given (`-` stands for "not given").
pub fn port_given(p: &PortArgs) -> bool {
    !matches!(&p.port, PortSpec::Path(p) if p.as_os_str() == "-")
}

/// The present devices an emulator announces (bounded waits).
fn sim_devices(path: &Path) -> crate::Result<Vec<DeviceSnapshot>> {
    let mut src = SimSource::connect(path)?;
    let mut present: Vec<DeviceSnapshot> = Vec::new();
    let start = Instant::now();
    loop {
        let any_modem = present.iter().any(|d| classify(d).mode.is_relevant());
        let wait = if any_modem {
            SIM_QUIET
        } else {
            match SIM_WAIT.checked_sub(start.elapsed()) {
                Some(left) if !left.is_zero() => left.min(SIM_QUIET),
                _ => break,
            }
        };
        match src.next_event(wait)? {
            Some(ev) => match ev.change {
                DeviceChange::Appear { device } => {
                    present.retain(|d| d.location() != device.location());
                    present.push(device);
                }
                DeviceChange::Vanish { location, .. } => {
                    present.retain(|d| d.location() != location)
                }
            },
            None if src.finished() => break,
            None if any_modem => break,
            None => {}
        }
    }
    Ok(present)
}

/// Find the one modem: on `--sim`'s emulator or this host's USB.
pub fn find_modem(find: &FindArgs) -> crate::Result<Found> {
    let (devices, source) = match (&find.sim, &find.sysfs_root) {
        (Some(sock), _) => (
            sim_devices(sock)?,
            format!("the emulator at {}", sock.display()),
        ),
        (None, Some(root)) => (
            Sysfs::new(root).devices(),
            format!("the USB tree under {}", root.display()),
        ),
        (None, None) => (
            enumerate::list_devices(&Sysfs::host())?,
            "this host's USB".to_string(),
        ),
    };
    let mut modems: Vec<Found> = devices
        .into_iter()
        .map(|snap| Found {
            class: classify(&snap),
            snap,
            source: source.clone(),
        })
        .filter(|f| f.class.mode.is_relevant())
        .collect();
    match modems.len() {
        0 => Err(Error::new(
            ErrorKind::NoDevice,
            format!("No modem found on {source}"),
            "a Quectel module in normal mode shows as 2c7c:xxxx, one in emergency download as 05c6:9008",
            "Check the cable and power (qrescue list, qrescue watch), or name the ports: --at /dev/ttyUSB2 --dm /dev/ttyUSB0 in normal mode, --port PATH|usb in download mode",
        )),
        1 => Ok(modems.remove(0)),
        n => {
            let which: Vec<String> = modems.iter().map(|m| m.headline()).collect();
            Err(Error::usage(
                format!("{n} modems found on {source}; qrescue will not guess which one is meant: {}", which.join("; ")),
                "Name one: --at TTY / --dm TTY for a modem in normal mode (qrescue list shows its ports), --port usb:LOCATION for one in download mode",
            ))
        }
    }
}

/// The AT and DM ports of a modem in normal mode, opened (raw, exclusive, recorded under
/// `--record`). A port that cannot be opened is a problem, not a failure, while the other one
/// opens.
pub struct NormalPorts {
    pub at: Option<Box<dyn Transport>>,
    pub dm: Option<Box<dyn Transport>>,
    pub at_path: Option<PathBuf>,
    pub dm_path: Option<PathBuf>,
    /// Ports that could not be opened, for people.
    pub problems: Vec<String>,
}

impl NormalPorts {
    /// Open `at` and `dm` (either may be absent). Fails only when no port was given or every
    /// given port failed (with the first failure).
    pub fn open(at: Option<&Path>, dm: Option<&Path>) -> crate::Result<NormalPorts> {
        if at.is_none() && dm.is_none() {
            return Err(Error::new(
                ErrorKind::NoDevice,
                "The modem shows no AT or DM port",
                "in normal mode qrescue talks to the modem over its AT port (interface 2 on most Quectel modules) and its DM port (interface 0); the kernel made no tty for either",
                "Load the option driver for the module (modprobe option; echo 2c7c PID > /sys/bus/usb-serial/drivers/option1/new_id) or name the ports with --at/--dm",
            ));
        }
        let mut ports = NormalPorts {
            at: None,
            dm: None,
            at_path: at.map(Path::to_path_buf),
            dm_path: dm.map(Path::to_path_buf),
            problems: Vec::new(),
        };
        let mut first_err = None;
        for (role, path) in [("AT", at), ("DM", dm)] {
            let Some(path) = path else { continue };
            match port::open_serial(path) {
                Ok(t) => {
                    let t: Box<dyn Transport> = Box::new(recording::wrap(t));
                    if role == "AT" {
                        ports.at = Some(t);
                    } else {
                        ports.dm = Some(t);
                    }
                }
                Err(e) => {
                    ports.problems.push(format!(
                        "The {role} port {} could not be opened: {} ({})",
                        path.display(),
                        e.what,
                        e.why
                    ));
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if ports.at.is_none() && ports.dm.is_none() => Err(e),
            _ => Ok(ports),
        }
    }

    /// Identify the modem over the opened ports.
    pub fn identify(&mut self, opts: &NormalInfoOptions) -> NormalInfo {
        let at = self.at.as_mut().map(|t| t as &mut dyn Transport);
        let dm = self.dm.as_mut().map(|t| t as &mut dyn Transport);
        let mut info = identify_normal(at, dm, opts);
        info.problems.extend(self.problems.iter().cloned());
        info
    }
}

/// The AT and DM ttys of the found modem (`None` where the kernel made no tty).
pub fn normal_ttys(found: &Found) -> (Option<PathBuf>, Option<PathBuf>) {
    (found.tty(PortRole::At), found.tty(PortRole::Dm))
}

pub fn run(a: &InfoArgs, out: &Output) -> crate::Result<()> {
    if port_given(&a.port) {
        return sahara_cmds::info(&a.port, out);
    }
    if a.find.at.is_some() || a.find.dm.is_some() {
        let ports = NormalPorts::open(a.find.at.as_deref(), a.find.dm.as_deref())?;
        return normal(None, ports, out);
    }
    let found = find_modem(&a.find)?;
    match &found.class.mode {
        Mode::QuectelNormal { .. } => {
            let (at, dm) = normal_ttys(&found);
            let ports = NormalPorts::open(at.as_deref(), dm.as_deref())?;
            normal(Some(&found), ports, out)
        }
        m if m.speaks_sahara() => edl(&found, out),
        _ => {
            out.json_line(&json!({
                "event": "info", "mode": found.class.tag(), "device": found.json(),
            }));
            out.line(format!("Modem: {}", found.headline()));
            for n in &found.class.notes {
                out.line(format!("  note: {n}"));
            }
            Err(Error::new(
                ErrorKind::NoDevice,
                format!("The modem is in a mode qrescue cannot ask who it is ({})", found.class.label),
                "identity comes from the AT and DM ports in normal mode, or from the boot ROM in emergency download (9008) or crash-dump (900e) mode",
                "See the notes above; power-cycle the modem, or bring it to download mode (qrescue watch shows when it gets there)",
            ))
        }
    }
}

/// EDL / crash dump: the boot ROM's identity over Sahara command mode.
fn edl(found: &Found, out: &Output) -> crate::Result<()> {
    // A kernel driver (qcserial) that made a tty for the boot ROM's interface is used as it is;
    // without one the interface is claimed over USB.
    let spec = match found.tty(PortRole::Sahara) {
        Some(p) => PortSpec::Path(p),
        None => PortSpec::Usb(UsbSelector::Location(found.snap.location())),
    };
    let args = PortArgs {
        port: spec,
        no_zlp: false,
        usb_chunk: None,
    };
    let t = port::open(&args)?;
    let mut s = SaharaSession::new(t, SaharaConfig::default());
    let info = s.read_info()?;
    let identity = Identity::from_device_info(&info);
    out.json_line(&json!({
        "event": "info", "mode": found.class.tag(), "device": found.json(), "port": args.port,
        "info": info, "identity": identity,
    }));
    out.line(format!("Modem: {}", found.headline()));
    for l in sahara_cmds::describe_info(&info) {
        out.line(l);
    }
    Ok(())
}

/// Normal mode: AT identity, QSECBOOT, DIAG build ID, composition.
fn normal(found: Option<&Found>, mut ports: NormalPorts, out: &Output) -> crate::Result<()> {
    let info = ports.identify(&NormalInfoOptions::default());
    let usb = found.map(Found::composition);
    let identity = info.identity(usb.clone());
    let advice = info.advice();
    out.json_line(&json!({
        "event": "info",
        "mode": "normal",
        "device": found.map(Found::json),
        "ports": { "at": ports.at_path, "dm": ports.dm_path },
        "at": info.at,
        "secboot": info.secboot,
        "diag": info.diag,
        "usb": usb,
        "identity": identity,
        "advice": advice,
    }));
    match found {
        Some(f) => out.line(format!("Modem: {}", f.headline())),
        None => out.line("Modem in normal mode:"),
    }
    for l in describe_normal(&info, found, &ports) {
        out.line(format!("  {l}"));
    }
    for a in &advice {
        out.line(format!("  note: {a}"));
    }
    Ok(())
}

/// Lines for people about a normal-mode modem.
pub fn describe_normal(
    info: &NormalInfo,
    found: Option<&Found>,
    ports: &NormalPorts,
) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(f) = found {
        let ports: Vec<String> = f
            .class
            .ports
            .iter()
            .map(|p| match &p.tty {
                Some(t) => format!("if{} {} {t}", p.interface, p.role.label()),
                None => format!("if{} {}", p.interface, p.role.label()),
            })
            .collect();
        v.push(format!("ports     {}", ports.join(", ")));
    } else {
        let show = |p: &Option<PathBuf>| {
            p.as_ref()
                .map_or("-".to_string(), |p| p.display().to_string())
        };
        v.push(format!(
            "ports     AT {}, DM {}",
            show(&ports.at_path),
            show(&ports.dm_path)
        ));
    }
    if let Some(at) = &info.at {
        let model = [at.manufacturer.as_deref(), at.model.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !model.is_empty() {
            v.push(format!("model     {model}"));
        }
    }
    if let Some(r) = info.revision() {
        match info.diag_revision() {
            Some(d) if d != r => v.push(format!("revision  {r}  (DIAG: {d})")),
            _ => v.push(format!("revision  {r}")),
        }
    }
    if let Some(at) = &info.at {
        if let Some(i) = &at.imei {
            let check = if i.luhn_ok {
                "check digit ok"
            } else {
                "check digit WRONG"
            };
            v.push(format!("IMEI      {} ({check})", i.digits));
        }
        if let Some(i) = &at.iccid {
            v.push(format!("ICCID     {}", i.value));
        }
        if let Some(c) = &at.cfun {
            v.push(format!("CFUN      {} ({})", c.level, c.describe()));
        }
        if let Some(u) = &at.usbnet {
            v.push(format!("usbnet    {} ({})", u.mode, u.name()));
        }
        for p in &at.problems {
            v.push(format!(
                "{:<9} not read: {} ({})",
                p.field, p.error, p.command
            ));
        }
    }
    match &info.secboot {
        Some(SecBoot::Answered { fields }) => v.push(format!("QSECBOOT  {}", fields.join(", "))),
        Some(SecBoot::NotSupported { .. }) => {
            v.push("QSECBOOT  not offered by this firmware".to_string())
        }
        Some(SecBoot::NotAsked) | None => {}
    }
    v
}
