//! The demo world behind `qrescue demo`: one emulated modem in this process, on its own emulated
//! USB bus, with a firmware package generated for it — so the console (or the line-mode demo)
//! runs the real engine, guards and protocols against it. Only the device is emulated.
//!
//! - [`DemoWorld::start`] generates the package into a temporary folder the world owns, fills
//!   the unit's flash as the [`Scenario`] says ([`firmware`]), and starts the unit's controller
//!   thread ([`unit`]).
//! - The unit's behaviour is decided by what is in its flash when it boots (see
//!   [`firmware`]'s boot rule): a broken boot chain loops in 9008; a broken modem image runs in
//!   normal mode for [`Timing::crash_normal`] and crashes into 900e; a good flash boots into
//!   normal mode. A flash that ends with the programmer's reset is therefore judged by the unit
//!   itself at its next boot.
//! - In normal mode the unit is the model's composite with its DM, NMEA, AT and modem ports on
//!   ptys (the `tty` of interfaces 0..3 in the snapshot), answering AT and DIAG as
//!   [`crate::sim::normal`] does from the storage: IMEI and calibration from its EFS partitions,
//!   `+CFUN: 1` with them intact, 5 with the calibration erased (what the factory scenario's
//!   `_factory` set does), 7 running another variant's firmware. The DIAG EDL command makes it
//!   leave the bus and come back as 9008 [`Timing::edl_boot`] after the command (staying there
//!   until a reset); `AT+CFUN=1,1` reboots it; `AT+QPOWD` powers it off.
//! - [`DemoWorld::source`] is a [`DeviceSource`] on the world's bus: boot-ROM appearances carry
//!   the pty in the EDL interface's `tty`, like a real qcserial port.
//! - [`Bench`] is the person at the bench: bridging the test pins and power-cycling the unit
//!   makes it come back in 9008 [`Timing::edl_boot`] later and stay there (no watchdog) while
//!   the pins are held; releasing them lets it boot normally at its next reset or power cycle.
//!   A reset while the pins are still held comes back in 9008 again, as a real module does.
//!
//! Dropping the world stops the unit, closes its bus (sources end) and removes the folder.

pub mod firmware;
mod unit;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::device::DeviceSource;
use crate::sim::device::DeviceConfig;
use crate::sim::enumerate::{BootLoop, SWITCH_GAP, SWITCH_LINGER};
use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
use crate::sim::firehose::storage::StorageProfile;
use crate::sim::hub::UsbHub;
use crate::sim::package_gen::PackageOptions;
use crate::sim::profile::{self, Personality, Profile};
use crate::sim::usb_ids;
use crate::tui::model::{Config, DemoInfo};
use crate::tui::msg::BenchAction;
use crate::Error;

pub use firmware::BootCheck;
use firmware::Firmware;
use unit::{lock, Controller, Shared};

/// What the demo rehearses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// A unit with a broken boot chain in a 9008 boot loop, and a matching newer package.
    Unbrick,
    /// A working unit in normal mode and a newer package; DIAG (or the pins) get it into 9008.
    Update,
    /// A unit whose modem image is damaged: at every boot it runs briefly in normal mode and
    /// crashes into 900e.
    Crash,
    /// The boot-looping unit and a package for another variant of its model (refused).
    WrongVariant,
    /// A working unit in normal mode and a `_factory` package that rewrites its EFS: blocked
    /// until a backup exists; flashed, it loses its calibration (`+CFUN: 5`) until the backup is
    /// restored.
    Factory,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Unbrick,
        Scenario::Update,
        Scenario::Crash,
        Scenario::WrongVariant,
        Scenario::Factory,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Unbrick => "unbrick",
            Scenario::Update => "update",
            Scenario::Crash => "crash",
            Scenario::WrongVariant => "wrong-variant",
            Scenario::Factory => "factory",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!(
                    "no demo scenario '{s}'; choose one of: {}",
                    Scenario::ALL.map(Scenario::name).join(", ")
                )
            })
    }
}

/// How long things take on the world's bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The 9008 loop of a unit whose boot chain is broken: an RM502Q-GL cycled "every 14 s, less
    /// 14 s of live" (USERS.md §4.2/§4.3); the window is 10 s here.
    pub boot_loop: BootLoop,
    /// Power-on (pins held, a power cycle, a reset with a broken boot chain) to 05c6:9008 on the
    /// bus: ~2 s, as from QFirehose's DIAG→EDL command to the 9008 node (PROTOCOLS.md §5.2).
    pub edl_boot: Duration,
    /// A reset to the normal-mode enumeration. Real modules take ~7.5 s (EG12) to ~30 s
    /// (RM520N, USERS.md §4.2); the demo uses 5 s so nobody waits long.
    pub normal_boot: Duration,
    /// A reset of a crashing unit to its next appearance (it boots, runs briefly in normal
    /// mode, and crashes again).
    pub crash_boot: Duration,
    /// How long a crashing unit runs in normal mode (its DM port answers) before its damaged
    /// modem image takes it down into 900e; a DIAG switch to EDL in that window works.
    pub crash_normal: Duration,
    /// How long a normal-mode unit stays on the bus after a host commanded a switch to EDL, a
    /// reset or a power-down (so the host reads the answer): [`SWITCH_LINGER`]. A switch to EDL
    /// brings 9008 [`Timing::edl_boot`] after the command.
    pub linger: Duration,
}

impl Timing {
    /// The figures above.
    pub fn real() -> Timing {
        Timing {
            boot_loop: BootLoop {
                period: Duration::from_secs(14),
                window: Duration::from_secs(10),
            },
            edl_boot: SWITCH_GAP,
            normal_boot: Duration::from_secs(5),
            crash_boot: Duration::from_secs(5),
            crash_normal: Duration::from_secs(4),
            linger: SWITCH_LINGER,
        }
    }

    /// The real loop, but reboots 10× faster (`qrescue demo --fast`): a flash still has the full
    /// 10 s window, and nobody waits for the modem to come back.
    pub fn quick() -> Timing {
        let r = Timing::real();
        Timing {
            boot_loop: r.boot_loop,
            edl_boot: r.edl_boot / 10,
            normal_boot: r.normal_boot / 10,
            crash_boot: r.crash_boot / 10,
            // Long enough to catch by hand (the DIAG switch takes a moment).
            crash_normal: r.crash_normal / 2,
            linger: r.linger / 10,
        }
    }

    /// Everything times `factor` (tests: 0.1 gives a 1.4 s / 1.0 s loop).
    pub fn scaled(self, factor: f64) -> Timing {
        let f = |d: Duration| d.mul_f64(factor.max(0.0));
        Timing {
            boot_loop: BootLoop {
                period: f(self.boot_loop.period),
                window: f(self.boot_loop.window),
            },
            edl_boot: f(self.edl_boot),
            normal_boot: f(self.normal_boot),
            crash_boot: f(self.crash_boot),
            crash_normal: f(self.crash_normal),
            linger: f(self.linger),
        }
    }
}

/// How to build the world.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// The model: `rm502q` (default), `rm520n` or `ec25`.
    pub profile: String,
    /// The unit's storage; `None`: the model's own.
    pub storage: Option<profile::Storage>,
    /// Raw data rate of the emulated flash in bytes/s; `None`: as fast as the host goes. Real
    /// Quectel NAND writes ~2.3–4 MB/s (USERS.md §4.4); default 4 MB/s.
    pub throttle: Option<u64>,
    /// The unit (serial, PK hash) and the package contents.
    pub seed: u64,
    pub timing: Timing,
    /// Bytes of partition images in the package (default 8 MiB: ~2 s at 4 MB/s, well inside
    /// one 10 s window).
    pub package_bytes: u64,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            profile: "rm502q".into(),
            storage: None,
            throttle: Some(4_000_000),
            seed: 1,
            timing: Timing::real(),
            package_bytes: 8 << 20,
        }
    }
}

/// Where the unit is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitState {
    /// Off the bus: booting, rebooting, or between two windows of its loop.
    Off,
    /// Powered off by the programmer; only a power cycle brings it back.
    PoweredOff,
    /// In its boot ROM as 05c6:9008 on `pty`; `looping` when the watchdog will end the window.
    Edl { looping: bool, pty: PathBuf },
    /// Crashed, in 05c6:900e on `pty`.
    CrashDump { pty: PathBuf },
    /// Running its firmware: its ports are in the normal-mode snapshot's interfaces.
    Normal,
}

/// The revision strings of a scenario: what the modem runs and what the package is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Revisions {
    modem: String,
    package: String,
    /// The variant the package is for, in people's words (`RM502Q-GL`).
    package_variant: String,
    modem_variant: String,
}

fn revisions(model: &str, scenario: Scenario) -> Option<Revisions> {
    // (model+variant, variant in words, other variant, in words, modem tail, newer tail)
    let (own, own_words, other, other_words, old, new) = match model {
        "ec25" => (
            "EC25EFA",
            "EC25-EFA",
            "EC25AFFA",
            "EC25-AFFA",
            "R06A08M4G_01.001.01.001",
            "R06A09M4G_01.001.01.001",
        ),
        "rm502q" => (
            "RM502QAEAA",
            "RM502Q-AE",
            "RM502QGLAA",
            "RM502Q-GL",
            "R13A02M4G_01.200.01.200",
            "R13A03M4G_01.200.01.200",
        ),
        "rm520n" => (
            "RM520NGLAA",
            "RM520N-GL",
            "RM520NGLAP",
            "RM520N-GL-AP",
            "R01A07M4G_01.200.01.200",
            "R01A08M4G_01.200.01.200",
        ),
        _ => return None,
    };
    let (pkg_prefix, pkg_words) = match scenario {
        Scenario::WrongVariant => (other, other_words),
        _ => (own, own_words),
    };
    let mut package = format!("{pkg_prefix}{new}");
    if scenario == Scenario::Factory {
        package.push_str("_factory");
    }
    Some(Revisions {
        modem: format!("{own}{old}"),
        package,
        package_variant: pkg_words.into(),
        modem_variant: own_words.into(),
    })
}

/// The emulated storage for `unit` (`kind` `None`: its own).
pub fn storage_profile(unit: &Profile, kind: Option<profile::Storage>) -> StorageProfile {
    let name = match kind.unwrap_or(unit.storage) {
        profile::Storage::Nand if unit.name.starts_with("ec25") => "nand-ec25e",
        profile::Storage::Nand => "nand-em12g",
        profile::Storage::Emmc => "emmc-msm8916",
        profile::Storage::Ufs => "ufs-qcs6490",
    };
    StorageProfile::by_name(name).expect("built-in storage names exist")
}

/// The person at the bench, for the emulated unit. Cheap to clone; works while the world lives.
#[derive(Debug, Clone)]
pub struct Bench {
    shared: Arc<Shared>,
}

impl Bench {
    pub fn act(&self, action: BenchAction) {
        match action {
            BenchAction::BridgePinsAndPowerCycle => {
                tracing::info!(target: "qrescue::demo", "bench: USB_BOOT bridged to 1.8 V, power cycled");
                self.shared.pins.store(true, Ordering::SeqCst);
                self.shared.cycle.store(true, Ordering::SeqCst);
            }
            BenchAction::ReleasePins => {
                tracing::info!(target: "qrescue::demo", "bench: pins released");
                self.shared.pins.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// A running demo world. See the module notes.
pub struct DemoWorld {
    scenario: Scenario,
    unit: Profile,
    hub: UsbHub,
    shared: Arc<Shared>,
    state: Arc<Mutex<UnitState>>,
    programmer: Arc<Mutex<Programmer>>,
    firmware: Arc<Firmware>,
    revisions: Revisions,
    timing: Timing,
    storage: String,
    thread: Option<JoinHandle<()>>,
    // Last: removed after the unit stopped.
    _dir: tempfile::TempDir,
}

impl fmt::Debug for DemoWorld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoWorld")
            .field("scenario", &self.scenario)
            .field("unit", &self.unit.name)
            .field("package", &self.firmware.package)
            .finish_non_exhaustive()
    }
}

impl DemoWorld {
    /// Generate the package, fill the unit's flash for `scenario`, and power the unit on.
    pub fn start(scenario: Scenario, opts: WorldOptions) -> crate::Result<DemoWorld> {
        let model = opts.profile.split('-').next().unwrap_or_default();
        let names = "rm502q, rm520n or ec25";
        let base = Profile::by_name(model).ok_or_else(|| {
            Error::usage(
                format!("The demo has no emulated modem named '{}'", opts.profile),
                format!("Choose {names}"),
            )
        })?;
        let revisions = revisions(model, scenario).ok_or_else(|| {
            Error::usage(
                format!("The demo cannot run on the emulated '{model}'"),
                format!("Choose {names}"),
            )
        })?;
        let unit = base.for_unit(opts.seed);
        if usb_ids::normal_mode_snapshot(&unit, 2).is_none() {
            return Err(Error::usage(
                format!("The emulated '{model}' has no normal-mode USB description"),
                format!("Choose {names}"),
            ));
        }
        let crash = unit.clone().crash_dump();
        let storage_profile = storage_profile(&unit, opts.storage);
        let dir = tempfile::Builder::new()
            .prefix("qrescue-demo-")
            .tempdir()
            .map_err(|e| {
                Error::failure(
                    "Cannot create a temporary folder for the demo",
                    "the demo's firmware package is written there",
                    "Check that the temporary folder (TMPDIR) is writable",
                )
                .with_source(e)
            })?;
        let (firmware, storage) = Firmware::build(
            dir.path(),
            &firmware::Marks {
                folder: &revisions.package,
                package: revisions.package.trim_end_matches("_factory"),
                modem: &revisions.modem,
            },
            &unit,
            &storage_profile,
            scenario,
            PackageOptions {
                image_bytes: opts.package_bytes.max(1 << 20),
                seed: opts.seed,
            },
        )?;
        let firmware = Arc::new(firmware);
        let programmer = Arc::new(Mutex::new(Programmer::with_storage(
            storage,
            ProgrammerOptions {
                throughput_limit: opts.throttle,
                ..ProgrammerOptions::default()
            },
        )));
        let hub = UsbHub::new();
        let shared = Arc::new(Shared::default());
        let state = Arc::new(Mutex::new(UnitState::Off));
        let mut cfg = DeviceConfig::new(unit.clone()).with_personality(Personality::Edl);
        cfg.seed = opts.seed;
        let controller = Controller {
            hub: hub.clone(),
            edl: unit.clone(),
            crash,
            cfg,
            programmer: programmer.clone(),
            firmware: firmware.clone(),
            shared: shared.clone(),
            state: state.clone(),
            timing: opts.timing,
            usbnet: 0,
            kept: Default::default(),
        };
        let thread = std::thread::Builder::new()
            .name("demo-unit".into())
            .spawn(move || controller.run())
            .map_err(|e| {
                Error::failure(
                    "Cannot start the emulated modem",
                    "it runs on a thread of its own",
                    "Try again; the system may be out of threads",
                )
                .with_source(e)
            })?;
        tracing::info!(target: "qrescue::demo", scenario = scenario.name(), unit = %unit.name,
            serial = format!("0x{:08x}", unit.identity.serial), package = %firmware.package.display(),
            "demo world started");
        Ok(DemoWorld {
            scenario,
            unit,
            hub,
            shared,
            state,
            programmer,
            firmware,
            revisions,
            timing: opts.timing,
            storage: storage_profile.name().to_string(),
            thread: Some(thread),
            _dir: dir,
        })
    }

    pub fn scenario(&self) -> Scenario {
        self.scenario
    }

    /// The emulated unit (EDL personality): model, serial, PK hash.
    pub fn unit(&self) -> &Profile {
        &self.unit
    }

    /// The emulated storage profile's name.
    pub fn storage_name(&self) -> &str {
        &self.storage
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// A device source on the world's bus (first the devices present, then changes).
    pub fn source(&self) -> Box<dyn DeviceSource> {
        Box::new(self.hub.source())
    }

    /// The generated package (a folder named after its revision, inside the world's folder).
    pub fn package(&self) -> PathBuf {
        self.firmware.package.clone()
    }

    /// The package's revision string (its folder name).
    pub fn package_revision(&self) -> &str {
        &self.revisions.package
    }

    /// The firmware revision the modem runs (what `AT+QGMR` would print).
    pub fn modem_revision(&self) -> &str {
        &self.revisions.modem
    }

    /// The unit starts in normal mode (its revision can be read over AT).
    pub fn starts_normal(&self) -> bool {
        matches!(self.scenario, Scenario::Update | Scenario::Factory)
    }

    /// The scenario for the console, and the modem's revision to check the package against
    /// when nobody can ask the modem: a unit that starts in normal mode tells its own over AT.
    pub fn config_hint(&self) -> (DemoInfo, Option<String>) {
        (
            DemoInfo {
                scenario: self.scenario.name().into(),
                about: self.about(),
            },
            (!self.starts_normal()).then(|| self.revisions.modem.clone()),
        )
    }

    /// `base` with the demo's package, modem revision, source line and scenario filled in.
    pub fn console_config(&self, base: Config) -> Config {
        let (demo, modem_revision) = self.config_hint();
        Config {
            package: Some(self.package()),
            modem_revision,
            source: "emulated modem".into(),
            demo: Some(demo),
            verify_timeout_ms: self.verify_timeout().as_millis() as u64,
            ..base
        }
    }

    /// How long to wait after a flash for normal mode before calling it not verified.
    pub fn verify_timeout(&self) -> Duration {
        self.timing.normal_boot * 3 + Duration::from_secs(10)
    }

    /// The person at the bench.
    pub fn bench(&self, action: BenchAction) {
        self.bench_handle().act(action);
    }

    /// A handle for the bench that can outlive borrows of the world (e.g. in a closure).
    pub fn bench_handle(&self) -> Bench {
        Bench {
            shared: self.shared.clone(),
        }
    }

    /// Where the unit is now.
    pub fn state(&self) -> UnitState {
        lock(&self.state).clone()
    }

    /// What the unit would find in its flash if it booted now. Waits while a programmer
    /// session runs.
    pub fn boot_check(&self) -> BootCheck {
        self.firmware.check(lock(&self.programmer).storage())
    }

    /// The boot-chain partitions the unit checks.
    pub fn boot_chain(&self) -> Vec<String> {
        self.firmware.chain()
    }

    /// sha256 of the data in each device-unique partition now (name, hex). Waits while a
    /// programmer session runs.
    pub fn unique_digests(&self) -> Vec<(String, String)> {
        self.firmware
            .unique_digests(lock(&self.programmer).storage())
    }

    /// One or two sentences: what is emulated and what to try.
    pub fn about(&self) -> String {
        let r = &self.revisions;
        let model = &r.modem_variant;
        let lp = self.timing.boot_loop;
        let looping = format!(
            "An emulated {model} whose boot chain is corrupt: it shows up as 05c6:9008 for {:.0} s every {:.0} s (its calibration and IMEI are intact).",
            lp.window.as_secs_f64(),
            lp.period.as_secs_f64()
        );
        match self.scenario {
            Scenario::Unbrick => format!(
                "{looping} The package {} matches it: check it and flash it inside one window; the modem should come back in normal mode.",
                r.package
            ),
            Scenario::Update => format!(
                "A working emulated {model} in normal mode (running {}) and a newer package, {}. qrescue reads who it is over AT, switches it to download mode over DIAG (or bridge the test pins), flashes, and checks over AT that it came back as the same unit with its calibration.",
                r.modem, r.package
            ),
            Scenario::Crash => format!(
                "An emulated {model} whose modem image is damaged: at every boot it runs for {:.0} s in normal mode, then crashes and waits in 05c6:900e crash-dump mode. Save its RAM dump; to reflash it, switch it to download mode over DIAG while it runs, or bridge the test pins so it restarts in 9008.",
                self.timing.crash_normal.as_secs_f64()
            ),
            Scenario::WrongVariant => format!(
                "{looping} The package at hand, {}, is built for the {}: qrescue refuses it, because another variant's firmware can leave a modem without RF.",
                r.package, r.package_variant
            ),
            Scenario::Factory => format!(
                "A working emulated {model} in normal mode and a _factory package, {}, that rewrites the modem's EFS (RF calibration, IMEI): without a verified backup of it, qrescue blocks the flash. Flashed anyway after a backup, the modem comes back in +CFUN: 5 (no calibration) until the backup is restored.",
                r.package
            ),
        }
    }

    /// Stop the unit (it leaves the bus) and close the bus: every source ends.
    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.hub.close();
    }
}

impl Drop for DemoWorld {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests;
