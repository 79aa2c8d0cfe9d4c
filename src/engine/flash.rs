//! The flash runner: runs a validated [`FlashPlan`] (built in `engine::plan`) over any
//! [`Transport`]: Sahara upload of the programmer (unless one is already running:
//! [`attach_or_upload`] decides), Firehose configure, the geometry check and the host patches
//! that wait for the device's size ([`FlashPlan::for_device`]), every step, then a reset. Emits
//! [`EngineEvent`]s in the documented order and never renders anything. Image bytes are streamed
//! through the plan's [`PackageFiles`](crate::package::source::PackageFiles) (a folder or a zip).
//!
//! Nothing destructive is sent to the device until the whole plan validated against the
//! package and the device.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::engine::connect::{attach_or_upload, Attach};
use crate::engine::events::{EngineEvent, ProgressThrottle, StepInfo, StepKind, Weights};
use crate::engine::firehose::{FirehoseOptions, FirehoseSession, PowerMode, StorageKind};
use crate::engine::sahara::SaharaConfig;
use crate::transport::Transport;
use crate::{Error, ErrorKind};

/// The plan types, re-exported for callers that know them from here.
pub use crate::engine::plan::{
    storage_from_entries, FlashPlan, FlashStep, ImageSource, PlanInput, PlanSummary, StepExtent,
    StepSummary,
};

/// What a finished flash did.
#[derive(Debug, Clone, Serialize)]
pub struct FlashReport {
    pub steps: usize,
    pub bytes: u64,
    pub elapsed_ms: u64,
    pub programmer_uploaded: bool,
    pub max_payload: Option<u32>,
}

/// How to run a flash.
#[derive(Debug, Clone)]
pub struct FlashJob {
    /// The programmer to upload if the device is still in Sahara.
    pub programmer: Option<Vec<u8>>,
    /// How to leave the device: None keeps it in Firehose.
    pub reset: Option<PowerMode>,
    pub sahara: SaharaConfig,
    pub firehose: FirehoseOptions,
}

impl Default for FlashJob {
    fn default() -> Self {
        FlashJob {
            programmer: None,
            reset: Some(PowerMode::Reset),
            sahara: SaharaConfig::default(),
            firehose: FirehoseOptions::default(),
        }
    }
}

struct Runner<'e> {
    emit: &'e mut dyn FnMut(EngineEvent),
    weights: Weights,
    started: Instant,
    bytes: u64,
}

impl Runner<'_> {
    fn step<R>(
        &mut self,
        index: usize,
        info: &StepInfo,
        body: impl FnOnce(&mut dyn FnMut(u64)) -> crate::Result<R>,
    ) -> crate::Result<R> {
        (self.emit)(EngineEvent::StepStarted {
            index,
            kind: info.kind,
            name: info.name.clone(),
            bytes: info.bytes,
        });
        let total = info.bytes;
        let mut throttle = ProgressThrottle::new(total);
        let weights = self.weights.clone();
        let emit = &mut *self.emit;
        let mut last = 0u64;
        let result = {
            let mut progress = |done: u64| {
                last = done;
                if let Some((rate, eta)) = throttle.update(done) {
                    emit(EngineEvent::Progress {
                        index,
                        done,
                        total,
                        bytes_per_s: rate,
                        eta_s: eta,
                        overall: weights.overall(index, done, total),
                    });
                }
            };
            body(&mut progress)
        };
        let elapsed = throttle.elapsed();
        match result {
            Ok(r) => {
                self.bytes += last;
                (self.emit)(EngineEvent::StepFinished {
                    index,
                    bytes: last,
                    elapsed_ms: elapsed.as_millis() as u64,
                    bytes_per_s: last as f64 / elapsed.as_secs_f64().max(1e-6),
                });
                Ok(r)
            }
            Err(e) => {
                (self.emit)(EngineEvent::StepFailed {
                    index,
                    what: e.what.clone(),
                    why: e.why.clone(),
                    next: e.next.clone(),
                });
                Err(e)
            }
        }
    }
}

fn interrupted_error(done: usize, total: usize) -> Error {
    Error::new(
        ErrorKind::Interrupted,
        format!("Flash stopped on request after {done} of {total} steps"),
        "the modem holds a partly written firmware and will probably not boot",
        "It stays in download mode: run the same flash again to finish it",
    )
}

/// Run `plan` on `transport`: upload the programmer (if given and needed), configure, run every
/// step, reset. Emits events through `emit`; checks `cancel` between steps (a partition being
/// written is always finished, never cut in half).
pub fn run<T: Transport>(
    transport: T,
    plan: &FlashPlan,
    job: &FlashJob,
    emit: &mut dyn FnMut(EngineEvent),
    cancel: &AtomicBool,
) -> crate::Result<FlashReport> {
    let mut infos = Vec::new();
    let mut push = |kind, name: &str, bytes| {
        infos.push(StepInfo {
            index: infos.len(),
            kind,
            name: name.to_string(),
            bytes,
            lun: None,
            start_sector: None,
            sectors: None,
        })
    };
    if let Some(p) = &job.programmer {
        push(StepKind::SaharaUpload, "programmer", p.len() as u64);
    }
    push(StepKind::Configure, "configure", 0);
    let first_plan_step = infos.len();
    for (i, s) in plan.steps.iter().enumerate() {
        infos.push(s.info(first_plan_step + i));
    }
    if job.reset.is_some() {
        let index = infos.len();
        infos.push(StepInfo {
            index,
            kind: StepKind::Reset,
            name: "reset".into(),
            bytes: 0,
            lun: None,
            start_sector: None,
            sectors: None,
        });
    }
    emit(EngineEvent::Plan {
        steps: infos.clone(),
        total_bytes: infos.iter().map(|s| s.bytes).sum(),
    });
    let mut runner = Runner {
        emit,
        weights: Weights::new(&infos),
        started: Instant::now(),
        bytes: 0,
    };
    let result = run_steps(transport, plan, job, &infos, &mut runner, cancel);
    let elapsed_ms = runner.started.elapsed().as_millis() as u64;
    (runner.emit)(EngineEvent::Done {
        ok: result.is_ok(),
        bytes: runner.bytes,
        elapsed_ms,
    });
    result.map(|(uploaded, max_payload)| FlashReport {
        steps: infos.len(),
        bytes: runner.bytes,
        elapsed_ms,
        programmer_uploaded: uploaded,
        max_payload,
    })
}

fn run_steps<T: Transport>(
    transport: T,
    plan: &FlashPlan,
    job: &FlashJob,
    infos: &[StepInfo],
    runner: &mut Runner<'_>,
    cancel: &AtomicBool,
) -> crate::Result<(bool, Option<u32>)> {
    let mut index = 0;
    let mut transport = Some(transport);
    let mut session = None;
    let mut uploaded = false;
    if let Some(programmer) = &job.programmer {
        // The upload step: Sahara if the modem is in the boot ROM, otherwise an attach to the
        // programmer that is already running (the step then moves no bytes).
        let (fh, attach) = runner.step(index, &infos[index], |progress| {
            let t = transport.take().expect("the transport is used once");
            let (fh, attach) = attach_or_upload(
                t,
                Some(programmer),
                &job.sahara,
                job.firehose.clone(),
                progress,
            )?;
            if matches!(attach, Attach::Uploaded(_)) {
                // The boot ROM reads only the programmer's loadable parts (headers and
                // segments), usually less than the file: the step is complete when it says so.
                progress(programmer.len() as u64);
            }
            Ok((fh, attach))
        })?;
        uploaded = matches!(attach, Attach::Uploaded(_));
        if !uploaded {
            (runner.emit)(EngineEvent::Log {
                message: "A Firehose programmer was already running; attached to it, nothing was uploaded".into(),
            });
        }
        session = Some(fh);
        index += 1;
    }
    // Connect (when no programmer was given), configure, then check the plan against the
    // geometry the device reports, all before the first destructive command. A programmer
    // without getstorageinfo leaves the checks to the device itself.
    let (mut fh, negotiated, described, plan) = runner.step(index, &infos[index], |_| {
        let mut fh = match session.take() {
            Some(fh) => fh,
            None => {
                let t = transport.take().expect("the transport is used once");
                attach_or_upload(t, None, &job.sahara, job.firehose.clone(), &mut |_| {})?.0
            }
        };
        let n = fh.configure(plan.storage)?;
        let geo = device_geometry(&mut fh, plan)?;
        let ready = plan.for_device(&geo)?;
        Ok((fh, n, !geo.is_empty(), ready))
    })?;
    (runner.emit)(EngineEvent::Log {
        message: format!(
            "Configured {}: {} bytes per transfer",
            plan.storage.memory_name(),
            negotiated.max_payload_to_target
        ),
    });
    if !described {
        (runner.emit)(EngineEvent::Log {
            message: "The programmer did not describe its storage; geometry is checked by the device only".into(),
        });
    }
    index += 1;
    let mut streamer = plan.streamer();
    for step in &plan.steps {
        if cancel.load(Ordering::SeqCst) {
            return Err(interrupted_error(index, infos.len()));
        }
        runner.step(index, &infos[index], |progress| match step {
            FlashStep::Erase { cmd, .. } => fh.erase(cmd),
            FlashStep::Patch { cmd, .. } => fh.patch(cmd),
            FlashStep::SetBootable { drive } => fh.set_bootable(*drive),
            FlashStep::Program { cmd, source, .. } => {
                let mut reader = streamer.reader(source);
                fh.program(cmd, &mut reader, source.len(), progress)
            }
        })?;
        index += 1;
    }
    if let Some(mode) = job.reset {
        runner.step(index, &infos[index], |_| fh.power(mode, 1))?;
    }
    Ok((uploaded, Some(negotiated.max_payload_to_target)))
}

/// What the programmer reports about the storage the plan touches: getstorageinfo for LUN 0,
/// then (eMMC/UFS) for every other LUN of the plan. A programmer that does not answer leaves
/// the map empty (or without that LUN); only a lost link or a stop request is an error.
fn device_geometry<T: Transport>(
    fh: &mut FirehoseSession<T>,
    plan: &FlashPlan,
) -> crate::Result<BTreeMap<u32, crate::engine::firehose::StorageInfo>> {
    let mut geo = BTreeMap::new();
    let mut luns = vec![0];
    if plan.storage != StorageKind::Nand {
        luns.extend(plan.luns().into_iter().filter(|l| *l != 0));
    }
    for lun in luns {
        match fh.storage_info(lun) {
            Ok(info) if !info.is_empty() => {
                geo.insert(lun, info);
            }
            Err(e) if matches!(e.kind, ErrorKind::DeviceLost | ErrorKind::Interrupted) => {
                return Err(e)
            }
            _ if lun == 0 => break,
            _ => {}
        }
    }
    Ok(geo)
}
