//! `qrescue bench`: the resume cost. A generated package is flashed into an in-process emulated
//! modem whose programmer drops the link after a seeded random number of image bytes; the flash
//! resumes from its journal on a fresh appearance (same storage). The figure is the image bytes
//! sent a second time, next to the size of the step the drop interrupted: NAND rewrites the cut
//! partition whole (after erasing it again), eMMC continues after the last confirmed chunk.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::cli::bench::Figure;
use crate::cli::output;
use crate::engine::events::EngineEvent;
use crate::engine::flash::{FlashJob, FlashPlan, DEFAULT_CHUNK_BYTES};
use crate::engine::journal::JournalStore;
use crate::engine::resume::{flash_resumable, Link, ResumeOptions};
use crate::sim::device::DeviceConfig;
use crate::sim::faults::{Fault, FaultPlan};
use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
use crate::sim::firehose::storage::{Storage, StorageProfile};
use crate::sim::inproc::InProcessModem;
use crate::sim::package_gen::{self, PackageOptions};
use crate::sim::profile::Profile;
use crate::transport::{pipe, Framing};
use crate::{Error, ErrorKind};

fn bench_error(what: impl Into<String>, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Failure,
        what,
        format!("the benchmark could not run: {e}"),
        "Run with -v for details",
    )
}

/// One interrupted and resumed flash.
struct Trial {
    /// Image bytes sent before the drop.
    before_drop: u64,
    /// Image bytes sent twice in all.
    resent: u64,
    /// The size of the step the drop cut.
    step_bytes: u64,
}

/// One appearance of the unit: a fresh boot ROM over `storage`, the programmer armed with
/// `faults`.
fn appear(unit: &Profile, storage: Storage, faults: Vec<Fault>) -> (pipe::PipeEnd, InProcessModem) {
    let (host, dev) = pipe::pair(Framing::Stream);
    let programmer = Programmer::with_storage(
        storage,
        ProgrammerOptions {
            faults: FaultPlan::new(faults, 1),
            welcome_delay: Duration::from_millis(5),
            ..ProgrammerOptions::default()
        },
    );
    (
        host,
        InProcessModem::start(dev, DeviceConfig::new(unit.clone()), programmer),
    )
}

fn trial(
    unit: &Profile,
    storage: &StorageProfile,
    plan: &FlashPlan,
    job: &FlashJob,
    drop_at: u64,
    data: &Path,
) -> crate::Result<Trial> {
    let store = JournalStore::at(data.join(format!("journals-{drop_at}")));
    let mut current: Option<InProcessModem> = None;
    let mut next_storage = Some(Storage::new(storage));
    let mut n = 0;
    let mut reconnect = |_w: Duration| -> crate::Result<Option<Link>> {
        if let Some(m) = current.take() {
            let (_, prog) = m
                .finish()
                .ok_or_else(|| bench_error("the emulated modem failed", "its thread panicked"))?;
            next_storage = Some(prog.storage().clone());
        }
        let faults = if n == 0 {
            vec![Fault::DropInRaw(Some(drop_at))]
        } else {
            Vec::new()
        };
        n += 1;
        let s = next_storage.take().expect("the storage carries over");
        let (host, modem) = appear(unit, s, faults);
        current = Some(modem);
        Ok(Some(Link {
            transport: Box::new(host),
            appeared: Instant::now(),
            window: None,
            port: "in-process".into(),
        }))
    };
    let mut sent_per_attempt = Vec::new();
    let mut steps: Vec<u64> = Vec::new();
    let mut cut_step = None;
    let opts = ResumeOptions {
        package: "bench".into(),
        return_wait: Duration::from_secs(10),
        chunk_bytes: DEFAULT_CHUNK_BYTES,
        ..ResumeOptions::default()
    };
    let report = flash_resumable(
        &mut reconnect,
        plan,
        job,
        &store,
        &opts,
        &mut |e| match e {
            EngineEvent::Plan { steps: s, .. } => steps = s.iter().map(|s| s.bytes).collect(),
            EngineEvent::StepFailed { index, .. } if cut_step.is_none() => {
                cut_step = steps.get(index).copied()
            }
            EngineEvent::Done { bytes, .. } => sent_per_attempt.push(bytes),
            _ => {}
        },
        &mut |_| {},
        &AtomicBool::new(false),
    )?;
    Ok(Trial {
        before_drop: sent_per_attempt.first().copied().unwrap_or(0),
        resent: report.bytes_sent.saturating_sub(plan.total_bytes()),
        step_bytes: cut_step.unwrap_or(0),
    })
}

/// The resume-cost figures for NAND and eMMC: `trials` seeded random drop points each.
pub fn figures(quick: bool, dir: &Path, out: &mut Vec<Figure>) -> crate::Result<()> {
    let trials = if quick { 4 } else { 16 };
    let mib = if quick { 4 } else { 16 };
    for (name, storage_name) in [("NAND", "nand-ec25e"), ("eMMC", "emmc-msm8916")] {
        let unit = Profile::by_name("ec25")
            .expect("built-in profile")
            .for_unit(9);
        let storage = StorageProfile::by_name(storage_name).expect("built-in storage");
        let pkg_dir = dir.join(format!("resume-{storage_name}"));
        let pkg = package_gen::emit(
            &pkg_dir,
            &unit,
            &storage,
            PackageOptions {
                image_bytes: mib << 20,
                seed: 4,
            },
        )?;
        let plan = FlashPlan::from_xml(
            &pkg.rawprogram[0],
            pkg.patch.first().map(|p| p.as_path()),
            None,
        )?;
        let job = FlashJob {
            programmer: Some(
                std::fs::read(&pkg.programmer)
                    .map_err(|e| bench_error("cannot read the programmer", e))?,
            ),
            reset: None,
            ..FlashJob::default()
        };
        let total = plan.total_bytes();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(17);
        let mut runs = Vec::new();
        for _ in 0..trials {
            let at = rng.gen_range(1..total.max(2));
            runs.push(trial(&unit, &storage, &plan, &job, at, dir)?);
        }
        let n = runs.len() as f64;
        let mean = |f: &dyn Fn(&Trial) -> u64| runs.iter().map(f).sum::<u64>() as f64 / n;
        let resent = mean(&|t| t.resent);
        let step = mean(&|t| t.step_bytes);
        let before = mean(&|t| t.before_drop);
        let max = runs.iter().map(|t| t.resent).max().unwrap_or(0);
        let ratio = runs
            .iter()
            .filter(|t| t.step_bytes > 0)
            .map(|t| t.resent as f64 / t.step_bytes as f64)
            .sum::<f64>()
            / runs.iter().filter(|t| t.step_bytes > 0).count().max(1) as f64;
        let how = if name == "NAND" {
            "the cut partition is erased again and rewritten whole"
        } else {
            "continues after the last confirmed 1 MiB chunk"
        };
        out.push(Figure {
            name: format!("resume cost, {name}: bytes re-sent after a drop"),
            value: resent / 1024.0,
            unit: "KiB".into(),
            detail: format!(
                "mean of {trials} seeded random drops in a {} package ({how}); max {}; {:.0} % of the interrupted step (mean {}); starting over would re-send {} (mean)",
                output::bytes(total),
                output::bytes(max),
                ratio * 100.0,
                output::bytes(step as u64),
                output::bytes(before as u64)
            ),
        });
    }
    Ok(())
}
