//! A production bench of emulated modems: many units of one model on emulated hubs, each on its
//! own thread ([`super::enumerate::run_on_usb`] with [`Schedule::normal`]), for station tests and
//! benchmarks.
//!
//! Each unit leaves the factory (boot chain, firmware, its own IMEI and calibration in the EFS)
//! and then loses its modem image, so it sits in its boot ROM (05c6:9008) — the state a rescue
//! bench starts from — and comes back in normal mode once a flash restored it and reset it.
//! Units differ in their Sahara serial (hence their `_SN:`, IMEI and USB port) but share the
//! model's OEM key, as real units of one OEM do, so one package's programmer loads on all.
//!
//! A hub holds at most 15 units (the emulator derives a unit's root-hub port from its serial);
//! larger fleets spread over several hubs, each followed as its own bus. A unit given a fault
//! for its first run ([`FleetOptions::first_run_faults`]) is "power-cycled" when that run ends on
//! its own (e.g. the link dropped): it comes back without the fault, on a new pty.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::device::{DeviceConfig, RunOutcome};
use super::enumerate::{run_on_usb, Schedule};
use super::faults::{Fault, FaultPlan};
use super::firehose::programmer::{writes_per_region, RegionWrites, StorageWrite};
use super::firehose::storage::{Storage, StorageProfile};
use super::firehose::{Programmer, ProgrammerOptions};
use super::hub::UsbHub;
use super::normal::{self, state};
use super::package_gen::{self, PackageOptions, PackageSummary};
use super::profile::Profile;
use crate::Error;

/// Most units on one emulated hub (distinct root-hub ports).
pub const UNITS_PER_HUB: usize = 15;

/// What to build.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Model profile name (`ec25`, `rm502q`, `rm520n`).
    pub model: String,
    pub units: usize,
    /// Units per hub (1..=15).
    pub per_hub: usize,
    /// The first unit's Sahara serial; the others count up from it.
    pub first_serial: u32,
    /// Storage throughput limit of each unit in bytes/s (None: as fast as it goes).
    pub throttle: Option<u64>,
    /// Faults for the first run of some units (by index): then the unit is power-cycled
    /// without them. Boot-ROM faults apply to the first run; the programmer's (`drop-in-raw`,
    /// `nak` …) fire once, in the first run that reaches them.
    pub first_run_faults: Vec<(usize, Vec<Fault>)>,
    /// The units' storage (`None`: the model's own, NAND for the built-in models): eMMC or UFS
    /// units of the same model for tests of block storage.
    pub storage: Option<super::profile::Storage>,
    /// A unit whose run ended with a dropped link is power-cycled with its boot pin held
    /// (USB_BOOT bridged, as a production bench does for a unit whose flash was cut), so it
    /// comes back in download mode whatever its storage holds — a half-written eMMC modem
    /// image may otherwise boot. A reset by the programmer still boots the storage.
    pub edl_after_drop: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            model: "ec25".into(),
            units: 8,
            per_hub: 8,
            first_serial: 0x5A17_C000,
            throttle: None,
            first_run_faults: Vec::new(),
            storage: None,
            edl_after_drop: false,
        }
    }
}

/// How one unit's thread ended.
#[derive(Debug, Clone)]
pub struct UnitEnd {
    pub serial: u32,
    /// The outcome of each run (more than one after a power cycle).
    pub runs: Vec<RunOutcome>,
    /// Whether its storage boots to normal mode now.
    pub boots_normal: bool,
    /// Every command that changed its storage, over all runs ([`Programmer::writes`]).
    pub writes: Vec<StorageWrite>,
    /// The same counted per partition ([`writes_per_region`] over its partition table now).
    pub region_writes: Vec<RegionWrites>,
}

/// The running bench.
pub struct Fleet {
    hubs: Vec<UsbHub>,
    units: Vec<Profile>,
    layout: StorageProfile,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<UnitEnd>>,
}

fn bug(what: String) -> Error {
    Error::failure(
        what,
        "the emulated bench is built in",
        "This is a bug in qrescue; please report it",
    )
}

/// Unit `serial` of `model` with its own storage kind (`None`: the model's), keeping the
/// model's OEM key.
fn fleet_unit(
    model: &str,
    serial: u32,
    storage: Option<super::profile::Storage>,
) -> crate::Result<Profile> {
    let mut p = unit_profile(model, serial)?;
    if let Some(kind) = storage {
        p.storage = kind;
    }
    Ok(p)
}

/// Unit `serial` of `model`, keeping the model's OEM key.
pub fn unit_profile(model: &str, serial: u32) -> crate::Result<Profile> {
    let mut p = Profile::by_name(model).ok_or_else(|| bug(format!("no profile {model}")))?;
    p.identity.serial = serial.max(1);
    Ok(p)
}

/// The storage layout a unit of `profile` has.
pub fn layout_of(profile: &Profile) -> StorageProfile {
    let name = match profile.storage {
        super::profile::Storage::Nand if profile.name.starts_with("ec25") => "nand-ec25e",
        super::profile::Storage::Nand => "nand-em12g",
        super::profile::Storage::Emmc => "emmc-msm8916",
        super::profile::Storage::Ufs => "ufs-qcs6490",
    };
    StorageProfile::by_name(name).expect("built-in storage names exist")
}

/// A unit's storage as it left the factory, with its modem image lost: it boots to 9008.
pub fn bricked_storage(profile: &Profile, layout: &StorageProfile) -> crate::Result<Storage> {
    let mut storage = Storage::new(layout);
    state::seed_factory(&mut storage, profile).map_err(bug)?;
    let modem = state::find_region(&storage, "modem")
        .ok_or_else(|| bug("the layout has no modem partition".into()))?;
    state::erase_region(&mut storage, &modem).map_err(bug)?;
    Ok(storage)
}

impl Fleet {
    /// Build the units, start each on its hub, and wait (bounded) until every one is on the bus.
    pub fn start(opts: &FleetOptions) -> crate::Result<Fleet> {
        let per_hub = opts.per_hub.clamp(1, UNITS_PER_HUB);
        let hub_count = opts.units.div_ceil(per_hub).max(1);
        let hubs: Vec<UsbHub> = (0..hub_count).map(|_| UsbHub::new()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut units = Vec::new();
        let mut threads = Vec::new();
        let first = fleet_unit(&opts.model, opts.first_serial, opts.storage)?;
        let layout = layout_of(&first);
        for i in 0..opts.units {
            // Consecutive serials on one hub sit on consecutive ports (serial mod 15).
            let profile = fleet_unit(
                &opts.model,
                opts.first_serial.wrapping_add(i as u32),
                opts.storage,
            )?;
            let storage = bricked_storage(&profile, &layout)?;
            let faults = opts
                .first_run_faults
                .iter()
                .filter(|(u, _)| *u == i)
                .flat_map(|(_, f)| f.clone())
                .collect::<Vec<_>>();
            // The programmer's faults (drop-in-raw, nak …) are one-shot: each fires once.
            let programmer = Programmer::with_storage(
                storage,
                ProgrammerOptions {
                    throughput_limit: opts.throttle,
                    faults: FaultPlan::new(faults.clone(), u64::from(profile.identity.serial)),
                    ..ProgrammerOptions::default()
                },
            );
            let hub = hubs[i / per_hub].clone();
            let stop = stop.clone();
            let p = profile.clone();
            let seed = u64::from(profile.identity.serial);
            let held = opts.edl_after_drop;
            let t = std::thread::Builder::new()
                .name(format!("unit {:08X}", profile.identity.serial))
                .spawn(move || serve_unit(p, programmer, faults, seed, held, &hub, &stop))
                .map_err(|e| bug(format!("cannot start an emulated unit: {e}")))?;
            threads.push(t);
            units.push(profile);
        }
        let fleet = Fleet {
            hubs,
            units,
            layout,
            stop,
            threads,
        };
        let end = Instant::now() + Duration::from_secs(20);
        while fleet.hubs.iter().map(|h| h.present().len()).sum::<usize>() < opts.units {
            if Instant::now() > end {
                return Err(bug("the emulated units did not all appear".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(fleet)
    }

    pub fn hubs(&self) -> &[UsbHub] {
        &self.hubs
    }

    pub fn units(&self) -> &[Profile] {
        &self.units
    }

    /// A package for these units in `dir` (signed for the model's OEM key).
    pub fn emit_package(
        &self,
        dir: &std::path::Path,
        opts: PackageOptions,
    ) -> crate::Result<PackageSummary> {
        let unit = self
            .units
            .first()
            .ok_or_else(|| bug("a fleet without units".into()))?;
        package_gen::emit(dir, unit, &self.layout, opts)
    }

    /// Stop every unit, close the hubs, and say how each ended.
    pub fn stop(self) -> Vec<UnitEnd> {
        self.stop.store(true, Ordering::SeqCst);
        let ends = self
            .threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .collect();
        for h in &self.hubs {
            h.close();
        }
        ends
    }
}

fn serve_unit(
    profile: Profile,
    mut programmer: Programmer,
    faults: Vec<Fault>,
    seed: u64,
    edl_after_drop: bool,
    hub: &UsbHub,
    stop: &AtomicBool,
) -> UnitEnd {
    let mut cfg = DeviceConfig::new(profile.clone()).with_faults(FaultPlan::new(faults, seed));
    let schedule = Schedule {
        normal: true,
        limit: Some(1),
        ..Schedule::default()
    };
    let mut runs = Vec::new();
    let mut held = false;
    loop {
        // Held in its boot ROM: it appears in 9008; the programmer's reset ends the run and
        // the next one boots the storage.
        let this = Schedule {
            normal: !held,
            ..schedule
        };
        match run_on_usb(&mut cfg, &mut programmer, hub, this, stop, &mut |_| {}) {
            Ok(o) => {
                held =
                    edl_after_drop && matches!(o, RunOutcome::LinkDropped | RunOutcome::LinkLost);
                runs.push(o)
            }
            Err(e) => {
                tracing::warn!("emulated unit {:08X}: {e}", profile.identity.serial);
                break;
            }
        }
        if stop.load(Ordering::SeqCst) || runs.len() > 64 {
            break;
        }
        // Its run ended on its own: the bench power-cycles it, without the first run's faults.
        cfg.faults = FaultPlan::none();
        std::thread::sleep(Duration::from_millis(50));
    }
    UnitEnd {
        serial: profile.identity.serial,
        runs,
        boots_normal: normal::boot(programmer.storage(), &profile).is_normal(),
        writes: programmer.writes().to_vec(),
        region_writes: writes_per_region(programmer.writes(), &programmer.storage().regions()),
    }
}
