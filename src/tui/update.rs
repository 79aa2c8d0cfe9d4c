//! `update(&mut Model, Msg) -> Vec<Effect>`: the only place the model changes. Pure: no I/O,
//! no clock (times come with the messages).
//!
//! The guided unbrick flow for one chosen modem (see [`Stage`]):
//! Idle → (Enter) Checking → Ready | Refused → (confirm) Flashing | Armed → Flashing →
//! Verifying → Finished. A modem in normal mode is identified over AT first (its revision goes
//! into the package check), switched to EDL over DIAG once the person confirms (or by the pins),
//! and asked over AT again when it comes back: `workflow::verdict::judge` decides. The submodules: `keys` (key presses and overlays), `flow` (choosing,
//! checking, confirming, the automatic catch, verification), `flash` (engine events and the
//! end of a job).

mod flash;
mod flow;
mod keys;
mod station;
#[cfg(test)]
mod tests;

use crate::device::monitor::Update;
use crate::device::{DeviceChange, DeviceEvent};

use super::model::{Blip, Identity, Model, Stage, HISTORY_LIMIT};
use super::msg::{Effect, Msg};

/// Apply one message; return what the runtime should do.
pub fn update(model: &mut Model, msg: Msg) -> Vec<Effect> {
    let mut fx = Vec::new();
    match msg {
        Msg::Resize { width, height } => {
            model.width = width;
            model.height = height;
            model.dirty = true;
        }
        Msg::Tick { now_ms } => {
            let shown = model.animating();
            model.now_ms = model.now_ms.max(now_ms);
            if model.station.is_some() {
                station::on_tick(model);
            } else {
                if shown {
                    model.dirty = true;
                }
                flow::on_tick(model, &mut fx);
            }
        }
        Msg::Device { event, initial } => {
            model.now_ms = model.now_ms.max(event.t_ms);
            let upd = observe(model, &event, initial);
            match model.station.as_mut() {
                // The station's own jobs follow these modems; the screen shows the run (its
                // frames are coalesced by the tick).
                Some(st) if st.running() => st.pending = true,
                Some(_) => model.dirty = true,
                None => {
                    flow::on_device(model, &event, &upd, &mut fx);
                    model.dirty = true;
                }
            }
        }
        Msg::Key(key) => {
            keys::on_key(model, key, &mut fx);
            model.dirty = true;
        }
        Msg::Identified {
            device,
            result,
            t_ms,
        } => {
            model.now_ms = model.now_ms.max(t_ms);
            flow::on_identified(model, device, result.map(|info| Identity { info, t_ms }));
            model.dirty = true;
        }
        Msg::NormalIdentified {
            device,
            result,
            t_ms,
        } => {
            model.now_ms = model.now_ms.max(t_ms);
            flow::on_normal_identified(model, device, result, &mut fx);
            model.dirty = true;
        }
        Msg::Switched {
            device,
            result,
            t_ms,
        } => {
            model.now_ms = model.now_ms.max(t_ms);
            flow::on_switched(model, device, result);
            model.dirty = true;
        }
        Msg::Checked {
            token,
            result,
            t_ms,
        } => {
            model.now_ms = model.now_ms.max(t_ms);
            flow::on_checked(model, token, result);
            model.dirty = true;
        }
        Msg::Engine { job, event, t_ms } => {
            model.now_ms = model.now_ms.max(t_ms);
            flash::on_engine(model, job, event, &mut fx);
            model.dirty = true;
        }
        Msg::JobEnded { job, result, t_ms } => {
            model.now_ms = model.now_ms.max(t_ms);
            flash::on_job_ended(model, job, result, &mut fx);
            model.dirty = true;
        }
        Msg::Station { run, event, t_ms } => {
            model.now_ms = model.now_ms.max(t_ms);
            station::on_event(model, run, event);
        }
        Msg::StationEnded { run, result, t_ms } => {
            model.now_ms = model.now_ms.max(t_ms);
            station::on_ended(model, run, result, &mut fx);
        }
        Msg::Hangup => {
            model.headless = true;
        }
        Msg::Terminate if model.station_running() => {
            station::terminate(model, &mut fx);
            model.dirty = true;
        }
        Msg::Terminate => {
            match model.running_job() {
                Some(job) => {
                    model.flow.cancel_requested = true;
                    fx.push(Effect::Cancel { job });
                    quit(model, true, &mut fx);
                }
                None => quit(model, false, &mut fx),
            }
            model.dirty = true;
        }
    }
    // Headless (the terminal is gone): nobody can answer a question any more, so leave as soon
    // as nothing is being written or waited on.
    if model.headless
        && !model.quit_sent
        && !model.station_running()
        && !matches!(
            model.flow.stage,
            Stage::Flashing { .. } | Stage::Verifying { .. }
        )
    {
        quit(model, false, &mut fx);
    }
    fx
}

/// Feed a device event to the monitor and the per-device history; auto-select the first modem.
fn observe(model: &mut Model, event: &DeviceEvent, initial: bool) -> Update {
    let upd = if initial {
        model.monitor.observe_initial(event)
    } else {
        model.monitor.observe(event)
    };
    if let Some(id) = upd.id {
        let h = model.history.entry(id).or_default();
        h.push(Blip {
            t_ms: event.t_ms,
            appear: matches!(event.change, DeviceChange::Appear { .. }),
            mode: upd
                .class
                .as_ref()
                .map(|c| c.tag().to_string())
                .unwrap_or_default(),
        });
        if h.len() > HISTORY_LIMIT {
            let excess = h.len() - HISTORY_LIMIT;
            h.drain(..excess);
        }
        if model.selected.is_none() && upd.relevant() {
            model.selected = Some(id);
        }
    }
    upd
}

/// Ask the runtime to leave (once).
fn quit(model: &mut Model, cancel_jobs: bool, fx: &mut Vec<Effect>) {
    if !model.quit_sent {
        model.quit_sent = true;
        fx.push(Effect::Quit { cancel_jobs });
    }
}

/// Ring the bell when the person wants it.
fn bell(model: &Model, fx: &mut Vec<Effect>) {
    if model.config.bell {
        fx.push(Effect::Bell);
    }
}
