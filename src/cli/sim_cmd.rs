//! `qrescue sim`: run an emulated modem (boot ROM + Firehose programmer) on a pty until killed,
//! announcing every change as one JSON line on stdout.
//!
//! The first line is `ready` (with the pty and the announcement `socket`); then `appear` /
//! `vanish` for every appearance on the emulated bus (one, or a boot loop with `--boot-loop`;
//! with `--mode normal` or `--normal-for` a normal-mode appearance first, `"ports_served": true`
//! with its DM/NMEA/AT/modem ptys under `ports`, a `normal_exit` when a host switches, resets or
//! powers it down),
//! `programmer_started` / `programmer_exit`, a run's own end (`powered_off`, `link_lost`,
//! `link_dropped`, `rebooted`) and finally `exit`. Watchers in other processes follow the same
//! appear/vanish events on the socket (`crate::device::sim_source::SimSource`).

use std::path::Path;

use serde_json::json;

use crate::cli::args::{SimArgs, SimMode, StorageArg};
use crate::cli::output::Output;
use crate::cli::signals;
use crate::device::sim_wire::SimHeader;
use crate::device::DeviceChange;
use crate::sim::announce::{self, Announcer};
use crate::sim::device::{DeviceConfig, RunOutcome};
use crate::sim::enumerate::{self, Schedule, UsbNotice};
use crate::sim::faults::FaultPlan;
use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
use crate::sim::firehose::storage::StorageProfile;
use crate::sim::hub::UsbHub;
use crate::sim::normal::{self, ports::NormalExit};
use crate::sim::package_gen::{self, PackageOptions};
use crate::sim::profile::{self, Personality, Profile, UnitIdentity};
use crate::sim::usb_ids;
use crate::sim::{AfterUpload, ProgrammerExit};
use crate::transport::Transport;
use crate::{Error, ErrorKind};

/// The unit profile for `name`, in the requested personality, with a per-unit identity from
/// `seed` (two emulated modems with different seeds differ in serial and PK hash).
pub fn unit_profile(name: &str, mode: SimMode, seed: u64) -> crate::Result<Profile> {
    let base = Profile::by_name(name).ok_or_else(|| {
        Error::usage(
            format!("There is no emulated profile named '{name}'"),
            format!("Choose one of: {}", Profile::names().join(", ")),
        )
    })?;
    let p = base.for_unit(seed);
    Ok(match mode {
        SimMode::Crash if p.personality != Personality::CrashDump => p.crash_dump(),
        _ => p,
    })
}

/// The emulated storage behind the programmer.
pub fn storage_profile(
    unit: &Profile,
    storage: Option<StorageArg>,
    exact: Option<&str>,
) -> crate::Result<StorageProfile> {
    if let Some(name) = exact {
        return StorageProfile::by_name(name).ok_or_else(|| {
            Error::usage(
                format!("There is no emulated storage layout named '{name}'"),
                format!("Choose one of: {}", StorageProfile::NAMES.join(", ")),
            )
        });
    }
    let kind = storage.unwrap_or(match unit.storage {
        profile::Storage::Nand => StorageArg::Nand,
        profile::Storage::Emmc => StorageArg::Emmc,
        profile::Storage::Ufs => StorageArg::Ufs,
    });
    let name = match kind {
        StorageArg::Nand if unit.name.starts_with("ec25") => "nand-ec25e",
        StorageArg::Nand => "nand-em12g",
        StorageArg::Emmc => "emmc-msm8916",
        StorageArg::Ufs => "ufs-qcs6490",
    };
    Ok(StorageProfile::by_name(name).expect("built-in storage names exist"))
}

/// Wraps the programmer so every hand-over and exit is announced.
struct Announcing<'a> {
    inner: &'a mut Programmer,
    out: Output,
}

impl AfterUpload for Announcing<'_> {
    fn boot_storage(&self) -> Option<&crate::sim::firehose::storage::Storage> {
        self.inner.boot_storage()
    }

    fn serve(&mut self, link: &mut dyn Transport, unit: &UnitIdentity) -> ProgrammerExit {
        self.out.always_json(
            &json!({"event": "programmer_started", "serial": format!("0x{:08x}", unit.serial)}),
        );
        let exit = self.inner.serve(link, unit);
        self.out.always_json(
            &json!({"event": "programmer_exit", "reason": format!("{exit:?}").to_lowercase()}),
        );
        exit
    }
}

fn outcome_word(o: RunOutcome) -> &'static str {
    match o {
        RunOutcome::Stopped => "stopped",
        RunOutcome::PoweredOff => "powered_off",
        RunOutcome::LinkLost => "link_lost",
        RunOutcome::LinkDropped => "link_dropped",
        RunOutcome::Rebooted => "rebooted",
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    let tmp = path.with_extension("qrescue-partial");
    let io = |e: std::io::Error| {
        Error::failure(
            format!("Cannot write {}", path.display()),
            "the emulator's report goes there",
            "Choose another path or fix the folder's permissions",
        )
        .with_source(e)
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

pub fn run(args: &SimArgs, out: &Output) -> crate::Result<()> {
    let mut unit = unit_profile(&args.profile, args.mode, args.seed)?;
    if args.model_key {
        if let Some(model) = Profile::by_name(&args.profile) {
            unit.identity.pk_hash = model.identity.pk_hash;
        }
    }
    if let Some(path) = &args.write_programmer {
        let image = unit.programmer(args.seed);
        write_atomically(path, &image)?;
        out.json_line(
            &json!({"event": "programmer_written", "file": path, "bytes": image.len(),
            "profile": unit.name, "serial": format!("0x{:08x}", unit.identity.serial)}),
        );
        out.line(format!(
            "Wrote a fake Firehose programmer for emulated unit {} (serial 0x{:08x}, {} bytes) to {}",
            unit.name,
            unit.identity.serial,
            image.len(),
            path.display()
        ));
        return Ok(());
    }
    if let Some(dir) = &args.emit_package {
        let storage = storage_profile(&unit, args.storage, args.storage_profile.as_deref())?;
        let summary = package_gen::emit(
            dir,
            &unit,
            &storage,
            PackageOptions {
                image_bytes: args.package_mib.saturating_mul(1 << 20),
                seed: args.seed,
            },
        )?;
        out.json_line(&json!({"event": "package_written", "package": summary}));
        out.line(format!(
            "Wrote a fake firmware package for emulated unit {} on {} to {} ({} files, {} of images).",
            unit.name,
            summary.storage,
            dir.display(),
            summary.files.len(),
            crate::cli::output::bytes(summary.image_bytes)
        ));
        for (r, p) in summary.rawprogram.iter().zip(&summary.patch) {
            out.line(format!(
                "  rawprogram {}\n  patch      {}",
                r.display(),
                p.display()
            ));
        }
        out.line(format!("  programmer {}", summary.programmer.display()));
        return Ok(());
    }
    if !args.pty {
        return Err(Error::usage(
            "qrescue sim needs --pty to expose the emulated modem",
            "Run `qrescue sim --pty` and use the printed pty as --port in another terminal",
        ));
    }
    let normal = args.mode == SimMode::Normal || args.normal_for.is_some();
    if normal && usb_ids::normal_mode_snapshot(&unit, 2).is_none() {
        return Err(Error::usage(
            format!(
                "The emulated profile '{}' has no normal-mode USB description",
                unit.name
            ),
            "Use --mode normal or --normal-for with ec25, rm502q or rm520n (or their -crash variants)",
        ));
    }
    let storage = storage_profile(&unit, args.storage, args.storage_profile.as_deref())?;
    let faults = FaultPlan::new(args.faults.clone(), args.seed);
    let mut programmer = Programmer::new(
        &storage,
        ProgrammerOptions {
            throughput_limit: args.throttle,
            faults: faults.clone(),
            ..ProgrammerOptions::default()
        },
    );
    if normal {
        // The unit leaves the factory flashed: it boots to normal mode until a flash says
        // otherwise.
        normal::seed_factory(programmer.storage_mut(), &unit).map_err(|why| {
            Error::usage(
                format!(
                    "The emulated storage layout '{}' cannot hold a normal-mode unit: {why}",
                    storage.name()
                ),
                "Use the profile's own storage (leave out --storage/--storage-profile) or a NAND or eMMC layout",
            )
        })?;
    }
    let personality = unit.personality;
    let mut cfg = DeviceConfig::new(unit.clone()).with_faults(faults);
    let mode = match personality {
        Personality::Edl => "edl",
        Personality::CrashDump => "crash",
    };
    let hub = UsbHub::new();
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(announce::default_socket_path);
    let header = SimHeader::new(
        std::process::id(),
        unit.name.clone(),
        args.boot_loop.map(|b| b.info()),
    );
    let announcer = Announcer::bind(&socket, &header, &hub)?;
    let mut ready = Some(json!({
        "event": "ready",
        "pty": null,
        "mode": if args.mode == SimMode::Normal { "normal" } else { mode },
        "usb_id": format!("05c6:{:04x}", unit.usb_pid),
        "profile": unit.name,
        "storage": storage.name(),
        "serial": format!("0x{:08x}", unit.identity.serial),
        "pk_hash": hex::encode(&unit.identity.pk_hash),
        "faults": args.faults.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
        "seed": args.seed,
        "socket": socket,
        "boot_loop": args.boot_loop.map(|b| json!({
            "period_s": b.period.as_secs_f64(),
            "window_s": b.window.as_secs_f64(),
        })),
        "normal_for_s": args.normal_for.map(|d| d.as_secs_f64()),
    }));
    let stop = signals::flag();
    let schedule = Schedule {
        boot_loop: args.boot_loop,
        limit: None,
        normal_first: args.normal_for,
        normal,
        ..Schedule::default()
    };
    let mut normal_exit: Option<NormalExit> = None;
    let result = {
        let mut announcing = Announcing {
            inner: &mut programmer,
            out: *out,
        };
        // The unit's link is stop-aware (StopLink): SIGTERM or the end of a boot-loop window
        // becomes a link loss for whatever serves the pty (boot ROM or programmer), so the
        // emulator ends promptly in every state and writes its report.
        enumerate::run_on_usb(
            &mut cfg,
            &mut announcing,
            &hub,
            schedule,
            stop,
            &mut |notice| match notice {
                UsbNotice::Appear { index, pty, event } => {
                    if let Some(mut r) = ready.take() {
                        r["pty"] = json!(pty);
                        out.always_json(&r);
                    }
                    let usb_id = match &event.change {
                        DeviceChange::Appear { device } => device.id(),
                        DeviceChange::Vanish { .. } => String::new(),
                    };
                    out.always_json(&json!({"event": "appear", "t_ms": event.t_ms,
                        "appearance": index, "pty": pty, "location": event.location(),
                        "usb_id": usb_id, "mode": mode, "ports_served": true}));
                }
                // The ports are served on ptys: DM, NMEA, AT and modem by interface number.
                UsbNotice::NormalAppear { event } => {
                    if let Some(r) = ready.take() {
                        out.always_json(&r);
                    }
                    normal_exit = None;
                    let (usb_id, ports) = match &event.change {
                        DeviceChange::Appear { device } => {
                            let tty = |n: u8| device.interface(n).and_then(|i| i.tty.clone());
                            (
                                device.id(),
                                json!({"dm": tty(0), "nmea": tty(1), "at": tty(2),
                                    "modem": tty(3)}),
                            )
                        }
                        DeviceChange::Vanish { .. } => (String::new(), json!(null)),
                    };
                    out.always_json(&json!({"event": "appear", "t_ms": event.t_ms,
                        "pty": null, "location": event.location(), "usb_id": usb_id,
                        "mode": "normal", "ports_served": true, "ports": ports}));
                }
                UsbNotice::NormalEnded(exit) => {
                    normal_exit = Some(exit);
                    out.always_json(&json!({"event": "normal_exit", "reason": exit}));
                }
                UsbNotice::NormalVanish { event } => {
                    let next = match normal_exit {
                        Some(NormalExit::Reset) => "normal",
                        Some(NormalExit::PowerDown) => "off",
                        _ => mode,
                    };
                    out.always_json(&json!({"event": "vanish", "t_ms": event.t_ms,
                        "pty": null, "location": event.location(), "mode": "normal",
                        "switching_to": next}));
                }
                UsbNotice::Ended(o) => out.always_json(&json!({"event": outcome_word(o)})),
                UsbNotice::Vanish { index, pty, event } => {
                    out.always_json(&json!({"event": "vanish", "t_ms": event.t_ms,
                        "appearance": index, "pty": pty, "location": event.location()}));
                }
            },
        )
    };
    // Watchers get the last vanish and a goodbye before the socket goes away.
    announcer.shutdown();
    let outcome = result.map_err(|e| {
        Error::new(
            ErrorKind::Failure,
            "Cannot create a pseudo-terminal for the emulated modem",
            "the emulator is exposed to other programs through a pty",
            "Check that /dev/ptmx is available (devpts mounted)",
        )
        .with_source(e)
    })?;
    let word = outcome_word(outcome);
    if let Some(path) = &args.report {
        let report = programmer.report();
        let bytes = serde_json::to_vec_pretty(&report).map_err(|e| {
            Error::failure(
                "Cannot serialise the emulator report",
                "this is a bug in qrescue",
                "Report it with the command line used",
            )
            .with_source(e)
        })?;
        write_atomically(path, &bytes)?;
    }
    out.always_json(&json!({"event": "exit", "outcome": word}));
    Ok(())
}
