//! Engine events of the running flash (rows, progress, the pin screen's "uploaded" moment) and
//! the end of the job.

use crate::engine::events::{EngineEvent, StepInfo, StepKind, Weights};
use crate::tui::model::{Model, Outcome, PartRow, RowState, Stage};
use crate::tui::msg::{Effect, JobId, Problem};

use super::bell;
use super::flow::finish;

/// Most device log lines kept for the flash view.
pub const DEVICE_LOG_LIMIT: usize = 200;

/// Overall progress once every step before `next` is done, weighted like the engine does.
fn overall_before(rows: &[PartRow], next: usize) -> f64 {
    let steps: Vec<StepInfo> = rows
        .iter()
        .map(|r| StepInfo {
            index: r.index,
            kind: r.kind,
            name: r.name.clone(),
            bytes: r.bytes,
            lun: None,
            start_sector: None,
            sectors: None,
        })
        .collect();
    Weights::new(&steps).overall(next, 0, 0)
}

/// Rows not run yet become Skipped (after a failure or a cancel).
fn skip_rest(rows: &mut [PartRow]) {
    for r in rows {
        if matches!(r.state, RowState::Pending | RowState::Active) {
            r.state = RowState::Skipped;
        }
    }
}

/// One engine event of job `job`.
pub(super) fn on_engine(model: &mut Model, job: JobId, event: EngineEvent, fx: &mut Vec<Effect>) {
    let now = model.now_ms;
    let pins = matches!(model.flow.stage, Stage::Flashing { pins: true, job: j } if j == job);
    let Some(flash) = model.flash.as_mut().filter(|f| f.job == job) else {
        return;
    };
    match event {
        EngineEvent::Plan { steps, total_bytes } => {
            flash.rows = steps
                .into_iter()
                .map(|s| PartRow {
                    index: s.index,
                    kind: s.kind,
                    name: s.name,
                    bytes: s.bytes,
                    done: 0,
                    bytes_per_s: 0.0,
                    eta_s: None,
                    state: RowState::Pending,
                })
                .collect();
            flash.total_bytes = total_bytes;
            flash.overall = 0.0;
        }
        EngineEvent::StepStarted {
            index,
            kind,
            name,
            bytes,
        } => match flash.rows.iter_mut().find(|r| r.index == index) {
            Some(r) => r.state = RowState::Active,
            None => flash.rows.push(PartRow {
                index,
                kind,
                name,
                bytes,
                done: 0,
                bytes_per_s: 0.0,
                eta_s: None,
                state: RowState::Active,
            }),
        },
        EngineEvent::Progress {
            index,
            done,
            bytes_per_s,
            eta_s,
            overall,
            ..
        } => {
            if let Some(r) = flash.rows.iter_mut().find(|r| r.index == index) {
                r.done = done;
                r.bytes_per_s = bytes_per_s;
                r.eta_s = eta_s;
                if r.state == RowState::Pending {
                    r.state = RowState::Active;
                }
            }
            if overall.is_finite() {
                flash.overall = flash.overall.max(overall.clamp(0.0, 1.0));
            }
        }
        EngineEvent::StepFinished {
            index,
            bytes,
            elapsed_ms,
            bytes_per_s,
        } => {
            let mut upload = false;
            if let Some(r) = flash.rows.iter_mut().find(|r| r.index == index) {
                r.done = r.done.max(bytes);
                r.bytes_per_s = bytes_per_s;
                r.eta_s = None;
                r.state = RowState::Done {
                    elapsed_ms,
                    bytes_per_s,
                };
                upload = r.kind == StepKind::SaharaUpload;
            }
            let pos = flash
                .rows
                .iter()
                .position(|r| r.index == index)
                .map_or(0, |p| p + 1);
            flash.overall = flash.overall.max(overall_before(&flash.rows, pos));
            if upload {
                model.flow.uploaded_ms = Some(now);
                if pins {
                    bell(model, fx);
                }
            }
        }
        EngineEvent::StepFailed {
            index,
            what,
            why,
            next,
        } => {
            let problem = Problem { what, why, next };
            skip_rest(&mut flash.rows);
            if let Some(r) = flash.rows.iter_mut().find(|r| r.index == index) {
                r.state = RowState::Failed {
                    problem: problem.clone(),
                };
            }
            model.flow.problem = Some(problem);
        }
        EngineEvent::Log { message } => {
            flash.device_log.push(message);
            if flash.device_log.len() > DEVICE_LOG_LIMIT {
                let excess = flash.device_log.len() - DEVICE_LOG_LIMIT;
                flash.device_log.drain(..excess);
            }
        }
        EngineEvent::Done { ok, .. } => {
            flash.ok = Some(ok);
            flash.ended_ms = Some(now);
            if ok {
                flash.overall = 1.0;
                if matches!(model.flow.stage, Stage::Flashing { job: j, .. } if j == job) {
                    model.flow.stage = Stage::Verifying { since_ms: now };
                }
            } else {
                skip_rest(&mut flash.rows);
            }
        }
    }
}

/// Job `job` ended: `Err` is the reason it failed or could not run.
pub(super) fn on_job_ended(
    model: &mut Model,
    job: JobId,
    result: Result<(), Problem>,
    fx: &mut Vec<Effect>,
) {
    let now = model.now_ms;
    let Some(flash) = model.flash.as_mut().filter(|f| f.job == job) else {
        return;
    };
    flash.ended_ms.get_or_insert(now);
    skip_rest_unless_done(flash);
    let stopped_at = flash
        .rows
        .iter()
        .rev()
        .find(|r| matches!(r.state, RowState::Failed { .. } | RowState::Done { .. }))
        .map(|r| r.name.clone());
    match (model.flow.stage.clone(), result) {
        (Stage::Flashing { job: j, .. }, Err(problem)) if j == job => {
            let outcome = if model.flow.cancel_requested {
                Outcome::Cancelled {
                    detail: format!(
                        "Stopped {}: the modem is half-written. In EDL (9008) it can be flashed \
                         again.",
                        match stopped_at {
                            Some(step) => format!("after {step}"),
                            None => "before anything was written".into(),
                        }
                    ),
                }
            } else {
                Outcome::Failed {
                    problem: problem.clone(),
                }
            };
            model.flow.problem = Some(problem);
            finish(model, outcome, fx);
        }
        (Stage::Flashing { job: j, .. }, Ok(())) if j == job => {
            let problem = Problem {
                what: "The flash ended without finishing".into(),
                why: "The engine stopped before it reported the last step done, so the firmware \
                      may be incomplete."
                    .into(),
                next: "Flash again while the modem is in EDL (9008); if it keeps happening, \
                       attach the log file to a bug report."
                    .into(),
            };
            model.flow.problem = Some(problem.clone());
            finish(model, Outcome::Failed { problem }, fx);
        }
        (Stage::Verifying { .. }, Err(problem)) => {
            let outcome = Outcome::NotVerified {
                what_failed: format!("the write finished, but then: {}", problem.what),
                next: problem.next.clone(),
            };
            model.flow.problem = Some(problem);
            finish(model, outcome, fx);
        }
        _ => {}
    }
}

/// A job that ended without `Done { ok: true }` ran none of its remaining steps.
fn skip_rest_unless_done(flash: &mut crate::tui::model::FlashView) {
    if flash.ok != Some(true) {
        skip_rest(&mut flash.rows);
    }
}
