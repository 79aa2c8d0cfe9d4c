//! The demo unit's life on the emulated bus: a controller thread that powers the unit on, lets
//! it boot into whatever its flash allows ([`super::firmware`]), serves its boot ROM and
//! programmer while it is in 9008/900e, and reacts to what happens — a programmer reset, the
//! boot loop's watchdog, a person bridging the test pins and power-cycling it.
//!
//! Each appearance in the boot ROM is a fresh pty with a fresh HELLO (as in
//! [`crate::sim::enumerate`], whose bus it uses); the storage behind the programmer persists.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::sim::device::{self, DeviceConfig, RunOutcome};
use crate::sim::enumerate::Bus;
use crate::sim::firehose::programmer::Programmer;
use crate::sim::firehose::storage::Storage;
use crate::sim::hub::UsbHub;
use crate::sim::normal::{self, at::ModemState, ports, ports::NormalExit};
use crate::sim::profile::{Personality, Profile, UnitIdentity};
use crate::sim::stoplink::StopLink;
use crate::sim::{AfterUpload, ProgrammerExit};
use crate::transport::pty::PtyDevice;
use crate::transport::Transport;

use super::firmware::Firmware;
use super::{Timing, UnitState};

/// Flags the world and the bench share with the controller.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub stop: AtomicBool,
    /// USB_BOOT is held to 1.8 V: the next boot goes to the boot ROM and stays there.
    pub pins: AtomicBool,
    /// A power cycle was asked for (consumed by the controller).
    pub cycle: AtomicBool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The programmer, shared with the world (which reads the storage between sessions). A reset
/// is reported to the runner as a power-off so the run ends and the controller decides what
/// the unit boots into; the real exit is kept.
struct Session<'a> {
    programmer: &'a Mutex<Programmer>,
    exit: Option<ProgrammerExit>,
}

impl AfterUpload for Session<'_> {
    fn serve(&mut self, link: &mut dyn Transport, unit: &UnitIdentity) -> ProgrammerExit {
        let exit = lock(self.programmer).serve(link, unit);
        self.exit = Some(exit);
        match exit {
            ProgrammerExit::Reset | ProgrammerExit::ResetToEdl => ProgrammerExit::PowerOff,
            e => e,
        }
    }
}

/// Why an appearance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Stop,
    Cycle,
    WindowClosed,
    /// The unit's own run ended, with the programmer's exit if one ran.
    Ran(RunOutcome, Option<ProgrammerExit>),
}

/// How a normal-mode appearance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NormalEnd {
    Stop,
    Cycle,
    Exit(NormalExit),
}

/// What the unit does at its next boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// What its flash (and the pins) allow.
    Decide,
    /// Its boot ROM, whatever the flash holds (a DIAG switch, a programmer's reset to EDL).
    Edl,
    /// Crash-dump mode: its modem image just crashed.
    CrashDump,
}

/// How many retired pty numbers stay taken (a normal-mode appearance retires four).
const KEEP_NUMBERS: usize = 6;

/// What the unit boots into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Boot {
    Edl { looping: bool },
    CrashDump,
    Normal,
}

pub(crate) struct Controller {
    pub hub: UsbHub,
    pub edl: Profile,
    pub crash: Profile,
    pub cfg: DeviceConfig,
    pub programmer: Arc<Mutex<Programmer>>,
    pub firmware: Arc<Firmware>,
    pub shared: Arc<Shared>,
    pub state: Arc<Mutex<UnitState>>,
    pub timing: Timing,
    /// `AT+QCFG="usbnet"` as saved: the composition of the next normal-mode boot.
    pub usbnet: u8,
    /// Numbers of retired normal-mode ptys, kept taken.
    pub kept: VecDeque<OwnedFd>,
}

impl Controller {
    fn set(&self, s: UnitState) {
        *lock(&self.state) = s;
    }

    /// What the unit boots into now, and why (for the log).
    fn predict(&self, forced_edl: bool) -> (Boot, String) {
        if forced_edl || self.shared.pins.load(Ordering::SeqCst) {
            return (
                Boot::Edl { looping: false },
                "boot pins held (or reset to EDL): its boot ROM waits in 9008".into(),
            );
        }
        let check = self.firmware.check(lock(&self.programmer).storage());
        if !check.chain_ok() {
            (
                Boot::Edl { looping: true },
                format!(
                    "no valid image in its boot chain ({}): the boot ROM stays in 9008 and the watchdog power-cycles it every {:.1} s",
                    check.chain_bad.join(", "),
                    self.timing.boot_loop.period.as_secs_f64()
                ),
            )
        } else if !check.firmware_ok() {
            (
                Boot::CrashDump,
                format!(
                    "it boots, but {} holds no valid image: it crashes into 900e (crash dump)",
                    check.firmware_bad.join(", ")
                ),
            )
        } else {
            (
                Boot::Normal,
                "every image checks out: it boots into normal mode".into(),
            )
        }
    }

    fn decide(&self, forced_edl: bool) -> Boot {
        let (boot, why) = self.predict(forced_edl);
        tracing::info!(target: "qrescue::demo", "emulated modem: {why}");
        boot
    }

    /// How long the unit takes from a reset or power-on to enumerating in `boot`.
    fn boot_time(&self, boot: Boot) -> Duration {
        match boot {
            Boot::Edl { .. } => self.timing.edl_boot,
            Boot::CrashDump => self.timing.crash_boot,
            Boot::Normal => self.timing.normal_boot,
        }
    }

    /// Off the bus until `gap` passed; a power cycle meanwhile starts the gap again. False when
    /// stopped.
    fn off_for(&self, gap: Duration) -> bool {
        let mut until = Instant::now() + gap;
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            if self.shared.cycle.swap(false, Ordering::SeqCst) {
                until = Instant::now() + self.timing.edl_boot;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// Powered off: wait for a power cycle. False when stopped.
    fn powered_off(&self) -> bool {
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            if self.shared.cycle.swap(false, Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Serve one boot-ROM appearance until the run ends, the world stops, the bench
    /// power-cycles the unit, or `deadline` (the loop's window) passes.
    fn serve(&mut self, pty: &mut PtyDevice, deadline: Option<Instant>) -> End {
        let unit_stop = AtomicBool::new(false);
        // 0 running, 1 stop, 2 power cycle, 3 window closed.
        let why = AtomicU8::new(0);
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let shared = self.shared.clone();
        let programmer = self.programmer.clone();
        let cfg = &mut self.cfg;
        let (outcome, exit) = std::thread::scope(|s| {
            let (us, w) = (&unit_stop, &why);
            s.spawn(move || loop {
                let reason = if shared.stop.load(Ordering::SeqCst) {
                    1
                } else if shared.cycle.load(Ordering::SeqCst) {
                    2
                } else if deadline.is_some_and(|d| Instant::now() >= d) {
                    3
                } else {
                    0
                };
                if reason != 0 {
                    w.store(reason, Ordering::SeqCst);
                    us.store(true, Ordering::SeqCst);
                    return;
                }
                match done_rx.recv_timeout(Duration::from_millis(20)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            });
            let mut session = Session {
                programmer: &programmer,
                exit: None,
            };
            let outcome = {
                let mut link = StopLink::new(pty, &unit_stop);
                device::run(&mut link, cfg, &mut session, &unit_stop)
            };
            drop(done_tx);
            (outcome, session.exit)
        });
        match why.load(Ordering::SeqCst) {
            1 => End::Stop,
            2 => {
                self.shared.cycle.store(false, Ordering::SeqCst);
                End::Cycle
            }
            3 => End::WindowClosed,
            _ => End::Ran(outcome, exit),
        }
    }

    /// Sleep `d` unless the world stops first. False when stopped.
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.shared.stop.load(Ordering::SeqCst) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
    }

    /// Keep the pty's number taken for a while, so the next appearance gets another path.
    fn keep(&mut self, pty: &PtyDevice) {
        match pty.keep_number() {
            Ok(fd) => {
                self.kept.push_back(fd);
                if self.kept.len() > KEEP_NUMBERS {
                    self.kept.pop_front();
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not keep the pty number"),
        }
    }

    /// Run in normal mode: enumerate as the model's composite and serve its DM, NMEA, AT and
    /// modem ports on ptys ([`normal::ports`]), answering as the storage says
    /// ([`normal::boot`]), until a host commands an exit, the bench power-cycles it, the world
    /// stops, or `crash_after` passes (a damaged modem image takes it down).
    fn normal(&mut self, bus: &mut Bus<'_>, crash_after: Option<Duration>) -> NormalEnd {
        let booted = {
            let programmer = lock(&self.programmer);
            let storage = programmer.storage();
            match normal::boot(storage, &self.edl) {
                normal::Boot::Normal(b) => Some(*b),
                normal::Boot::BootRom { why } => self.layout_boot(storage, &why),
            }
        };
        let Some(mut snapshot) = ports::normal_snapshot(&self.edl, bus.next_address(), self.usbnet)
        else {
            // Checked when the world starts; never here.
            return if self.powered_off() {
                NormalEnd::Cycle
            } else {
                NormalEnd::Stop
            };
        };
        let mut ptys = match booted {
            Some(_) => ports::NormalPtys::open()
                .map_err(|e| tracing::error!(target: "qrescue::demo", error = %e, "the emulated modem cannot create its ptys; it enumerates without ports"))
                .ok(),
            None => None,
        };
        if let Some(p) = &ptys {
            p.annotate(&mut snapshot);
        }
        if let Some(b) = &booted {
            tracing::info!(target: "qrescue::demo", revision = %b.revision, cfun = b.cfun,
                imei = b.imei.as_deref().unwrap_or("none"), "emulated modem: normal mode");
        }
        let location = snapshot.location();
        {
            // Held across the event, so whoever saw it reads the new state.
            let mut state = lock(&self.state);
            self.hub.appear(snapshot);
            *state = UnitState::Normal;
        }
        let deadline = crash_after.map(|d| Instant::now() + d);
        let shared = self.shared.clone();
        let local = AtomicBool::new(false);
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let usbnet = self.usbnet;
        let profile = &self.edl;
        let (exit, usbnet) = std::thread::scope(|s| {
            let l = &local;
            s.spawn(move || loop {
                if shared.stop.load(Ordering::SeqCst) || shared.cycle.load(Ordering::SeqCst) {
                    l.store(true, Ordering::SeqCst);
                    return;
                }
                match done_rx.recv_timeout(Duration::from_millis(20)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            });
            let mut usbnet = usbnet;
            let mut exit = NormalExit::Stopped;
            if let (Some(p), Some(b)) = (ptys.as_mut(), booted) {
                let mut unit = ModemState::for_unit(profile, b, usbnet);
                let opts = ports::ServeOptions {
                    deadline,
                    ..ports::ServeOptions::default()
                };
                exit = ports::serve_ports(p.ports(), &mut unit, l, &opts);
                usbnet = unit.usbnet;
            }
            if exit == NormalExit::Stopped && !l.load(Ordering::SeqCst) {
                // No ports (or every port gone): on the bus until something ends it.
                exit = loop {
                    if l.load(Ordering::SeqCst) {
                        break NormalExit::Stopped;
                    }
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break NormalExit::Deadline;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
            }
            drop(done_tx);
            (exit, usbnet)
        });
        self.usbnet = usbnet;
        let end = if self.shared.stop.load(Ordering::SeqCst) {
            NormalEnd::Stop
        } else if exit == NormalExit::Stopped {
            self.shared.cycle.store(false, Ordering::SeqCst);
            tracing::info!(target: "qrescue::demo", "emulated modem: power-cycled");
            NormalEnd::Cycle
        } else {
            tracing::info!(target: "qrescue::demo", ?exit, "emulated modem: normal mode ends");
            NormalEnd::Exit(exit)
        };
        let commanded = matches!(
            exit,
            NormalExit::SwitchToEdl | NormalExit::Reset | NormalExit::PowerDown
        );
        // A commanded exit: the host reads the answer while the ports are still there.
        if commanded && !self.sleep(self.timing.linger) {
            return NormalEnd::Stop;
        }
        if let Some(p) = ptys.take() {
            for (_, _, pty) in &p.ptys {
                self.keep(pty);
            }
            // Close the ptys before announcing: whoever sees the vanish finds the ports gone.
            drop(p);
        }
        {
            let mut state = lock(&self.state);
            self.hub.vanish(&location);
            *state = UnitState::Off;
        }
        end
    }

    /// How the unit runs when the emulated application firmware's own boot rule cannot read
    /// this layout (a UFS layout has no `modem` partition for its firmware mark): the world's
    /// check already found every image good, its own records say which revision is installed,
    /// and the EFS partitions hold IMEI and calibration as on any layout (`+CFUN` by the same
    /// rule as [`normal::boot`]). `None` for a model without application firmware.
    fn layout_boot(&self, storage: &Storage, why: &str) -> Option<normal::NormalBoot> {
        let Some(fw) = normal::unit::model_firmware(&self.edl) else {
            tracing::warn!(target: "qrescue::demo", %why, "no emulated application firmware: the unit enumerates in normal mode without ports");
            return None;
        };
        tracing::debug!(target: "qrescue::demo", %why, "normal mode from the world's records");
        let revision = self.firmware.revision(storage).to_string();
        let (efs_partition, efs) = match normal::state::read_efs(storage) {
            Some((p, e)) => (Some(p), Some(e)),
            None => (None, None),
        };
        let calibrated = efs
            .as_ref()
            .and_then(|e| e.file(normal::efs::CALIBRATION_PATH))
            .is_some_and(|c| !c.is_empty());
        let own = normal::unit::model_variant(&self.firmware.revision_of_factory());
        let cfun = if normal::unit::model_variant(&revision) != own {
            7
        } else if !calibrated {
            5
        } else {
            1
        };
        Some(normal::NormalBoot {
            model: fw.model.to_string(),
            marked: true,
            factory_revision: self.firmware.revision_of_factory(),
            revision,
            cfun,
            imei: efs.as_ref().and_then(|e| e.imei()),
            calibrated,
            efs_partition,
            efs,
        })
    }

    /// After a normal-mode appearance: how long the unit is off the bus, and whether it boots
    /// into its boot ROM next. `None` when the world stopped.
    fn after_normal(&mut self, end: NormalEnd, crashing: bool) -> Option<(Duration, Next)> {
        let t = self.timing;
        Some(match end {
            NormalEnd::Stop => return None,
            NormalEnd::Cycle => (t.edl_boot, Next::Decide),
            // 9008 comes `edl_boot` after the command, which was `linger` ago.
            NormalEnd::Exit(NormalExit::SwitchToEdl) => {
                (t.edl_boot.saturating_sub(t.linger), Next::Edl)
            }
            NormalEnd::Exit(NormalExit::PowerDown) => {
                self.set(UnitState::PoweredOff);
                if !self.powered_off() {
                    return None;
                }
                self.set(UnitState::Off);
                (t.edl_boot, Next::Decide)
            }
            // The damaged modem image took it down: it re-enumerates in crash-dump mode.
            NormalEnd::Exit(NormalExit::Deadline) if crashing => (t.edl_boot, Next::CrashDump),
            NormalEnd::Exit(_) => {
                let (next, _) = self.predict(false);
                (self.boot_time(next), Next::Decide)
            }
        })
    }

    /// The unit's life, until the world stops.
    pub fn run(mut self) {
        let hub = self.hub.clone();
        let edl = self.edl.clone();
        let crash = self.crash.clone();
        let mut bus = Bus::new(&hub, &edl);
        let mut gap = Duration::ZERO;
        let mut next = Next::Decide;
        let mut index = 0u64;
        loop {
            if !self.off_for(gap) {
                return;
            }
            let boot = match next {
                Next::Decide => self.decide(false),
                Next::Edl => self.decide(true),
                Next::CrashDump => {
                    tracing::info!(target: "qrescue::demo", "emulated modem: its modem image crashed: 900e (crash dump)");
                    Boot::CrashDump
                }
            };
            let crashed = next == Next::CrashDump;
            next = Next::Decide;
            let (profile, personality) = match boot {
                Boot::Normal | Boot::CrashDump if !crashed => {
                    let crashing = boot == Boot::CrashDump;
                    let window = crashing.then_some(self.timing.crash_normal);
                    let end = self.normal(&mut bus, window);
                    let Some((g, n)) = self.after_normal(end, crashing) else {
                        return;
                    };
                    (gap, next) = (g, n);
                    continue;
                }
                Boot::Edl { .. } => (&edl, Personality::Edl),
                Boot::Normal | Boot::CrashDump => (&crash, Personality::CrashDump),
            };
            bus.profile = profile;
            self.cfg.personality = personality;
            let looping = matches!(boot, Boot::Edl { looping: true });
            let mut a = {
                // Held across the event, so whoever saw it reads the new state.
                let mut state = lock(&self.state);
                match bus.appear(index, &mut |_| {}) {
                    Ok(a) => {
                        let pty = a.path.clone();
                        *state = match boot {
                            Boot::CrashDump => UnitState::CrashDump { pty },
                            _ => UnitState::Edl { looping, pty },
                        };
                        a
                    }
                    Err(e) => {
                        tracing::error!(target: "qrescue::demo", error = %e, "the emulated modem cannot create a pty; it stays off the bus");
                        *state = UnitState::Off;
                        return;
                    }
                }
            };
            index += 1;
            let appeared = Instant::now();
            let deadline = looping.then(|| appeared + self.timing.boot_loop.window);
            let end = self.serve(&mut a.pty, deadline);
            {
                let mut state = lock(&self.state);
                bus.vanish(a, &mut |_| {});
                *state = if end == End::Ran(RunOutcome::PoweredOff, Some(ProgrammerExit::PowerOff))
                {
                    UnitState::PoweredOff
                } else {
                    UnitState::Off
                };
            }
            tracing::info!(target: "qrescue::demo", ?end, "emulated modem left the bus");
            gap = match end {
                End::Stop => return,
                End::Cycle => self.timing.edl_boot,
                // The watchdog power-cycles it: the next window comes one period after this one.
                End::WindowClosed => (appeared + self.timing.boot_loop.period)
                    .saturating_duration_since(Instant::now()),
                End::Ran(_, Some(ProgrammerExit::ResetToEdl)) => {
                    next = Next::Edl;
                    self.timing.edl_boot
                }
                End::Ran(RunOutcome::PoweredOff, Some(ProgrammerExit::PowerOff)) => {
                    if !self.powered_off() {
                        return;
                    }
                    self.set(UnitState::Off);
                    self.timing.edl_boot
                }
                // A reset (programmer or Sahara), or a run that ended otherwise: it reboots.
                End::Ran(_, _) => {
                    let (next, _) = self.predict(false);
                    self.boot_time(next)
                }
            };
        }
    }
}
