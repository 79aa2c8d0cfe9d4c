//! Station scaling for `qrescue bench`: 1, 4, 8 and 16 emulated modems (EC25, NAND), each
//! throttled to 4 MB/s like real NAND, flashed in parallel by [`crate::engine::station::run`]
//! exactly as `qrescue flash PACKAGE --all` does (ptys, per-bus monitors, Sahara, Firehose, the
//! return to normal mode and the AT verdict). Reported: the aggregate write throughput (package
//! bytes of all modems over the span from the first plan to the last finished write) against N×
//! the single-modem figure, the wall time including the verdicts, and the CPU seconds of the
//! whole process (which also runs the emulated modems). A table, never a pass/fail.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::cli::bench::Figure;
use crate::cli::output::{self, Output};
use crate::device::DeviceSource;
use crate::engine::events::EngineEvent;
use crate::engine::guards::MemoryLedger;
use crate::engine::prepare::{prepare, PrepareRequest};
use crate::engine::station::{self, Bus, Note, Selection, StationConfig};
use crate::sim::fleet::{self, Fleet, FleetOptions};
use crate::sim::package_gen::{self, PackageOptions};
use crate::{Error, ErrorKind};

/// Storage throughput of each emulated modem (bytes/s): real NAND writes at about 4 MB/s.
pub const THROTTLE: u64 = 4_000_000;
/// Modem counts measured.
pub const SIZES: &[usize] = &[1, 4, 8, 16];

/// One station run.
#[derive(Debug, Clone)]
pub struct StationRun {
    pub modems: usize,
    pub verified: usize,
    /// Package bytes written to all modems.
    pub bytes: u64,
    /// From the first modem's plan to the last modem's finished write.
    pub write_secs: f64,
    /// The whole run, verdicts included.
    pub wall_secs: f64,
    /// CPU seconds of the process (station and emulated modems).
    pub cpu_secs: f64,
}

impl StationRun {
    /// Aggregate write throughput in MB/s.
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.write_secs.max(1e-6) / 1e6
    }
}

fn bench_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Failure,
        what.to_string(),
        format!("the station benchmark could not run: {e}"),
        "Run with -v for details",
    )
}

/// CPU seconds (user + system) of the whole process.
fn process_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// Flash `modems` emulated modems in parallel with the package in `pkg`.
pub fn measure(modems: usize, pkg: &Path, dir: &Path) -> crate::Result<StationRun> {
    let p = prepare(
        &PrepareRequest {
            package: pkg.to_path_buf(),
            ..PrepareRequest::default()
        },
        &MemoryLedger::new(),
        None,
    )?;
    let plan = p
        .plan
        .clone()
        .ok_or_else(|| bench_error("the benchmark package has no plan", "refused"))?;
    let per_modem = plan.total_bytes();
    let fleet = Fleet::start(&FleetOptions {
        units: modems,
        per_hub: 8,
        throttle: Some(THROTTLE),
        ..FleetOptions::default()
    })?;
    let cfg = StationConfig::new(
        pkg.display().to_string(),
        plan,
        p.programmer_image()?,
        dir.join(format!("run-{modems}")),
    );
    let buses = fleet
        .hubs()
        .iter()
        .enumerate()
        .map(|(i, h)| Bus {
            name: format!("emulated hub {}", i + 1),
            source: Box::new(h.source()) as Box<dyn DeviceSource>,
            sim: true,
        })
        .collect();
    let (mut first_plan, mut last_done) = (u64::MAX, 0u64);
    let cpu = process_cpu();
    let summary = station::run(
        buses,
        &Selection::All,
        &cfg,
        &mut |e| {
            if let Note::Engine { engine } = &e.note {
                match engine {
                    EngineEvent::Plan { .. } => first_plan = first_plan.min(e.t_ms),
                    EngineEvent::Done { ok: true, .. } => last_done = last_done.max(e.t_ms),
                    _ => {}
                }
            }
        },
        &AtomicBool::new(false),
    );
    let cpu_secs = process_cpu() - cpu;
    fleet.stop();
    let summary = summary?;
    Ok(StationRun {
        modems,
        verified: summary.verified,
        bytes: per_modem * summary.verified as u64,
        write_secs: last_done.saturating_sub(first_plan) as f64 / 1000.0,
        wall_secs: summary.duration_ms as f64 / 1000.0,
        cpu_secs,
    })
}

/// Every size in [`SIZES`], with one package for all (16 MiB of images, 4 MiB with `quick`).
pub fn runs(quick: bool) -> crate::Result<Vec<StationRun>> {
    let dir = tempfile::tempdir().map_err(|e| bench_error("cannot create a temp folder", e))?;
    let opts = FleetOptions::default();
    let unit = fleet::unit_profile(&opts.model, opts.first_serial)?;
    let pkg = dir.path().join("pkg");
    package_gen::emit(
        &pkg,
        &unit,
        &fleet::layout_of(&unit),
        PackageOptions {
            image_bytes: if quick { 4 << 20 } else { 16 << 20 },
            seed: 11,
        },
    )?;
    SIZES
        .iter()
        .map(|&n| measure(n, &pkg, dir.path()))
        .collect()
}

/// The figures for the bench table.
pub fn figures(quick: bool) -> crate::Result<Vec<Figure>> {
    let runs = runs(quick)?;
    let one = runs
        .iter()
        .find(|r| r.modems == 1)
        .map(StationRun::mb_per_s)
        .unwrap_or(0.0);
    Ok(runs
        .iter()
        .map(|r| Figure {
            name: format!("station: {} modem(s) x 4 MB/s, aggregate write", r.modems),
            value: r.mb_per_s(),
            unit: "MB/s".into(),
            detail: format!(
                "{:.0}% of {}x one modem ({:.2} MB/s); {}/{} verified; {} in {:.1} s writing, {:.1} s with verdicts; {:.2} CPU s (station + emulators)",
                100.0 * r.mb_per_s() / (one * r.modems as f64).max(1e-9),
                r.modems,
                one,
                r.verified,
                r.modems,
                output::bytes(r.bytes),
                r.write_secs,
                r.wall_secs,
                r.cpu_secs
            ),
        })
        .collect())
}

/// `qrescue bench --station-only`: the station table alone.
pub fn run(quick: bool, out: &Output) -> crate::Result<()> {
    out.line("Measuring station scaling (emulated EC25s, NAND throttled to 4 MB/s each)…");
    let figures = figures(quick)?;
    out.json_line(&serde_json::json!({ "event": "bench", "figures": figures }));
    out.line(format!("{:<48} {:>12}  detail", "figure", "value"));
    for f in &figures {
        out.line(format!(
            "{:<48} {:>8.2} {:<4} {}",
            f.name, f.value, f.unit, f.detail
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_station_run_measures_every_modem_verified() {
        let dir = tempfile::tempdir().unwrap();
        let opts = FleetOptions::default();
        let unit = fleet::unit_profile(&opts.model, opts.first_serial).unwrap();
        let pkg = dir.path().join("pkg");
        package_gen::emit(
            &pkg,
            &unit,
            &fleet::layout_of(&unit),
            PackageOptions {
                image_bytes: 1 << 20,
                seed: 2,
            },
        )
        .unwrap();
        let r = measure(2, &pkg, dir.path()).unwrap();
        assert_eq!((r.modems, r.verified), (2, 2));
        assert!(r.bytes >= 2 << 20, "{r:?}");
        assert!(r.mb_per_s() > 0.0 && r.cpu_secs >= 0.0);
        let summary = std::fs::read_to_string(dir.path().join("run-2/summary.csv")).unwrap();
        assert_eq!(summary.lines().count(), 3);
    }
}
