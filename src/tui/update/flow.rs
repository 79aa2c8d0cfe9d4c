//! The guided flow: choosing a modem, the package check, confirming, the automatic catch of
//! the next EDL window, and verification after the flash.

use crate::device::bootloop::{LoopStatus, ModeClass};
use crate::device::classify::{Mode, PortRole};
use crate::device::identity::{DeviceId, MatchRule};
use crate::device::monitor::{DeviceView, Update};
use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot};
use crate::engine::at::NormalIdentity;
use crate::tui::model::{
    AtIdentity, FlashView, Flow, Identity, Model, Outcome, Overlay, Stage, MIN_WINDOW_LEFT_MS,
};
use crate::tui::msg::{Effect, JobId, PlanReview, Problem};
use crate::workflow::verdict::{judge, Expectation, Return, Verdict};

use super::bell;

/// The problem shown when no package was given.
pub(super) fn no_package() -> Problem {
    Problem {
        what: "No firmware package chosen".into(),
        why: "qrescue flashes only a package it has checked against this modem first.".into(),
        next: "Start the console with --package PATH (folder or .zip)".into(),
    }
}

/// The explanation for a modem in crash-dump mode.
pub(super) fn crash_dump() -> Problem {
    Problem {
        what: "The modem crashed: it is in crash-dump mode (900e)".into(),
        why: "In 900e the boot ROM offers the modem's RAM for a crash dump, not a download: it \
              cannot be flashed in this mode."
            .into(),
        next: "A RAM dump can be taken with `qrescue ramdump` (useful for a bug report); then \
               power-cycle the modem. If it comes back as 9008, continue here (press Enter)."
            .into(),
    }
}

/// The explanation for a modem that is not in EDL and cannot be switched over DIAG.
fn not_in_edl(label: &str) -> Problem {
    Problem {
        what: format!("The modem is not in EDL (9008): it shows as {label}"),
        why: "Firmware is written through the boot ROM's emergency download mode. qrescue \
              switches a Quectel modem in normal mode to it over its DM (DIAG) port, but no DM \
              port of this one can be opened."
            .into(),
        next: "Switch it to EDL: bridge USB_BOOT (press p for the pin screen) and power-cycle it; \
               the flash starts the moment 9008 appears."
            .into(),
    }
}

/// A modem in normal mode whose `role` port has a tty to open.
fn has_port(v: &DeviceView, role: PortRole) -> bool {
    matches!(v.class.mode, Mode::QuectelNormal { .. })
        && v.class.port(role).is_some_and(|p| p.tty.is_some())
}

/// Would this device come to us in EDL by itself: it was last seen in EDL, or its boot loop
/// passes through EDL?
fn edl_path(v: &DeviceView) -> bool {
    v.class.mode == Mode::Edl
        || v.loop_status
            .report()
            .filter(|_| v.loop_status.is_looping())
            .is_some_and(|r| r.mode_sequence.iter().any(|s| s.mode == ModeClass::Edl))
}

/// Enter on the selected device.
pub(super) fn enter(model: &mut Model, fx: &mut Vec<Effect>) {
    let Some(sel) = model.selected else {
        model.notice = Some("No modem to choose yet".into());
        return;
    };
    let same = model.flow.device == Some(sel);
    match &model.flow.stage {
        Stage::Checking
        | Stage::Armed { .. }
        | Stage::Flashing { .. }
        | Stage::Verifying { .. } => {
            let busy = model.flow.device.map(|d| d.to_string()).unwrap_or_default();
            model.notice = Some(if same {
                "Already working on this modem".to_string()
            } else {
                format!("Finish or disarm the rescue of {busy} first (Esc disarms a catch)")
            });
        }
        Stage::Ready if same => model.overlay = Overlay::ConfirmFlash,
        _ => start(model, sel, fx),
    }
}

/// Start (or restart) the flow for `id`: check the package, identify the modem (Sahara in
/// EDL; over AT in normal mode, whose revision the check then uses).
pub(super) fn start(model: &mut Model, id: DeviceId, fx: &mut Vec<Effect>) {
    model.flow = Flow {
        device: Some(id),
        ..Flow::default()
    };
    model.flash = None;
    model.overlay = Overlay::None;
    model.selected = Some(id);
    let view = model.flow_view();
    if view
        .as_ref()
        .is_some_and(|v| v.class.mode == Mode::CrashDump)
    {
        model.flow.problem = Some(crash_dump());
        return;
    }
    let Some(package) = model.config.package.clone() else {
        model.flow.problem = Some(no_package());
        return;
    };
    model.flow.stage = Stage::Checking;
    let at = view
        .as_ref()
        .filter(|v| v.present && has_port(v, PortRole::At));
    if let Some(v) = at {
        // Who it is first: the revision it reports is what the package is checked against.
        model.flow.at_pending = true;
        model.flow.check_deferred = model.config.modem_revision.is_none();
        fx.push(Effect::IdentifyNormal {
            device: id,
            snapshot: v.device.clone(),
        });
    }
    if !model.flow.check_deferred {
        let modem_revision = model.config.modem_revision.clone();
        check(model, id, package, modem_revision, None, fx);
    }
    match view {
        Some(v) if v.present && v.class.mode == Mode::Edl => {
            if !model.identities.contains_key(&id) {
                fx.push(Effect::Identify {
                    device: id,
                    snapshot: v.device,
                });
            }
        }
        Some(v) if v.present && has_port(&v, PortRole::Dm) => {}
        Some(v) if v.present => model.flow.problem = Some(not_in_edl(&v.class.label)),
        Some(v) => {
            model.flow.identify_pending = !model.identities.contains_key(&id);
            if !edl_path(&v) {
                model.flow.problem = Some(not_in_edl(&v.class.label));
            }
        }
        None => model.flow.identify_pending = true,
    }
}

/// An identity over AT arrived: before the check it gives the revision to check against; after
/// the flash it is what the verdict judges.
pub(super) fn on_normal_identified(
    model: &mut Model,
    device: DeviceId,
    result: Result<NormalIdentity, Problem>,
    fx: &mut Vec<Effect>,
) {
    if let Ok(id) = &result {
        model.at_identities.insert(
            device,
            AtIdentity {
                id: id.clone(),
                t_ms: model.now_ms,
            },
        );
    }
    if model.flow.device != Some(device) || !model.flow.at_pending {
        return;
    }
    model.flow.at_pending = false;
    match model.flow.stage.clone() {
        Stage::Checking => {
            let revision = match result {
                Ok(id) => {
                    let rev = id.revision.as_ref().map(|r| r.text.clone());
                    model.flow.before = Some(id);
                    rev
                }
                Err(mut p) => {
                    p.next = format!(
                        "{} The package is checked without the modem's revision.",
                        p.next.trim_end()
                    );
                    model.flow.problem = Some(p);
                    None
                }
            };
            if std::mem::take(&mut model.flow.check_deferred) {
                if let Some(package) = model.config.package.clone() {
                    let modem_revision = model.config.modem_revision.clone().or(revision);
                    check(model, device, package, modem_revision, None, fx);
                }
            }
        }
        Stage::Verifying { .. } => {
            let ret = match result {
                Ok(id) => Return::Normal(Box::new(id)),
                Err(p) => Return::Unidentified { why: p.what },
            };
            decide(model, &ret, fx);
        }
        _ => {}
    }
}

/// What the flash should have kept and installed.
fn expectation(model: &Model) -> Expectation {
    let before = model.flow.before.as_ref();
    Expectation {
        imei: before.and_then(|b| b.imei.as_ref().map(|i| i.digits.clone())),
        revision: model
            .flow
            .review
            .as_ref()
            .and_then(|r| r.package_revision.clone()),
        calibrated_before: before.and_then(|b| b.cfun.map(|c| c.level == 1)),
        backup: None,
    }
}

/// The verdict after the flash ([`judge`]), as the flow's outcome.
fn decide(model: &mut Model, ret: &Return, fx: &mut Vec<Effect>) {
    let v = judge(&expectation(model), ret);
    let outcome = match &v {
        Verdict::Verified { checks } => Outcome::Verified {
            detail: checks.join("; "),
        },
        Verdict::NotVerified { failures, next } => Outcome::NotVerified {
            what_failed: failures
                .iter()
                .map(|f| f.what())
                .collect::<Vec<_>>()
                .join("; "),
            next: next.join(" "),
        },
    };
    model.flow.verdict = Some(v);
    finish(model, outcome, fx);
}

/// `y` in the switch confirmation: send the DIAG switch; the catch is armed for the 9008 that
/// follows.
pub(super) fn switch(model: &mut Model, fx: &mut Vec<Effect>) {
    model.overlay = Overlay::None;
    let Some(v) = model
        .flow_view()
        .filter(|v| v.present && has_port(v, PortRole::Dm))
    else {
        model.notice = Some("The modem is no longer in normal mode: nothing was sent".into());
        return;
    };
    if model.flow.stage != Stage::Ready {
        return;
    }
    model.flow.problem = None;
    model.flow.switching = true;
    model.flow.seen_ms = None;
    model.flow.stage = Stage::Armed {
        since_ms: model.now_ms,
        pins: false,
    };
    fx.push(Effect::SwitchToEdl {
        device: v.id,
        snapshot: v.device,
    });
}

/// `p` in the switch confirmation: the pins instead of DIAG.
pub(super) fn pins_instead(model: &mut Model) {
    model.overlay = Overlay::None;
    if model.flow.stage != Stage::Ready {
        return;
    }
    model.flow.seen_ms = None;
    model.flow.stage = Stage::Armed {
        since_ms: model.now_ms,
        pins: true,
    };
}

/// The DIAG switch was sent (or failed).
pub(super) fn on_switched(model: &mut Model, device: DeviceId, result: Result<(), Problem>) {
    if model.flow.device != Some(device) || !model.flow.switching {
        return;
    }
    match result {
        Ok(()) => {
            model.notice =
                Some("The modem took the DIAG switch: it resets and comes back as 05c6:9008".into())
        }
        Err(mut p) => {
            model.flow.switching = false;
            p.next = format!(
                "{} Or bridge the pins: press p for the pin screen.",
                p.next.trim_end()
            );
            model.flow.problem = Some(p);
        }
    }
}

/// A Sahara identity arrived.
pub(super) fn on_identified(
    model: &mut Model,
    device: DeviceId,
    result: Result<Identity, Problem>,
) {
    match result {
        Ok(identity) => {
            model.identities.insert(device, identity);
            if model.flow.device == Some(device) {
                model.flow.identify_pending = false;
            }
        }
        Err(problem) => {
            let ours = model.flow.device == Some(device);
            if ours && matches!(model.flow.stage, Stage::Checking | Stage::Ready) {
                model.flow.problem = Some(problem);
            }
        }
    }
}

/// The problem a refused review shows.
fn refusal(review: &PlanReview) -> Problem {
    let mut p = match review.verdict.to_error() {
        Some(e) => Problem::from(&e),
        None => Problem {
            what: review.verdict.summary.clone(),
            why: "The checks did not allow this package for this modem.".into(),
            next: "Choose a package made for this modem.".into(),
        },
    };
    if let crate::engine::prepare::CompatReport::Refused {
        override_phrase: Some(phrase),
        ..
    } = &review.compat
    {
        p.next = format!(
            "{} If you have a verified backup and accept the risk, press o and type: {phrase}",
            p.next.trim_end()
        );
    }
    p
}

/// A package check finished.
pub(super) fn on_checked(model: &mut Model, token: u32, result: Result<Box<PlanReview>, Problem>) {
    if model.flow.stage != Stage::Checking || token != model.flow.check_token {
        // Nobody waits for this check now (a late answer, or one for another modem).
        return;
    }
    match result {
        Ok(review) => {
            if review.verdict.flashable {
                model.flow.stage = Stage::Ready;
            } else {
                model.flow.problem = Some(refusal(&review));
                model.flow.stage = Stage::Refused;
            }
            model.flow.review = Some(*review);
        }
        Err(problem) => {
            model.flow.problem = Some(problem);
            model.flow.stage = Stage::Idle;
        }
    }
}

/// The typed override was submitted.
pub(super) fn submit_override(model: &mut Model, typed: &str, fx: &mut Vec<Effect>) {
    let Some(phrase) = model.override_phrase().map(str::to_string) else {
        model.overlay = Overlay::None;
        return;
    };
    let (Some(package), Some(device)) = (model.config.package.clone(), model.flow.device) else {
        model.overlay = Overlay::None;
        return;
    };
    if typed.trim() != phrase {
        model.flow.problem = Some(Problem {
            what: "The override text did not match".into(),
            why: "An override must be typed exactly, so that it cannot happen by accident.".into(),
            next: format!("Type exactly: {phrase}"),
        });
        return;
    }
    model.overlay = Overlay::None;
    model.flow.problem = None;
    model.flow.stage = Stage::Checking;
    let modem_revision = model.config.modem_revision.clone();
    check(model, device, package, modem_revision, Some(phrase), fx);
}

/// Ask for a package check under a new token; only its answer counts.
fn check(
    model: &mut Model,
    device: DeviceId,
    package: std::path::PathBuf,
    modem_revision: Option<String>,
    override_phrase: Option<String>,
    fx: &mut Vec<Effect>,
) {
    let token = model.next_check;
    model.next_check = model.next_check.wrapping_add(1).max(1);
    model.flow.check_token = token;
    fx.push(Effect::CheckPackage {
        token,
        device: Some(device),
        package,
        modem_revision,
        override_phrase,
    });
}

/// `y` in the plan confirmation: flash now when the modem is in EDL with time left in its
/// window, otherwise arm the automatic catch (or the pin screen for a modem not in EDL).
pub(super) fn confirm(model: &mut Model, fx: &mut Vec<Effect>) {
    model.overlay = Overlay::None;
    let flashable = model
        .flow
        .review
        .as_ref()
        .is_some_and(|r| r.verdict.flashable);
    let Some(id) = model.flow.device.filter(|_| flashable) else {
        return;
    };
    if model.flow.stage != Stage::Ready {
        return;
    }
    let mut pins = std::mem::take(&mut model.flow.pins_requested);
    let now = model.now_ms;
    match model.flow_view() {
        Some(v) if v.present && v.class.mode == Mode::Edl => {
            let enough = match &v.loop_status {
                LoopStatus::Looping(r) => r
                    .open_window_closes_ms
                    .is_none_or(|c| c.saturating_sub(now) >= MIN_WINDOW_LEFT_MS),
                _ => true,
            };
            if enough {
                start_flash(model, id, v.device, pins, fx);
                return;
            }
        }
        Some(v) if v.present && !pins && has_port(&v, PortRole::Dm) => {
            // A running modem: switch it over DIAG, once the person said so.
            model.overlay = Overlay::ConfirmSwitch;
            return;
        }
        Some(v) if !edl_path(&v) => {
            model.flow.problem = Some(not_in_edl(&v.class.label));
            pins = true;
        }
        _ => {}
    }
    model.flow.seen_ms = None;
    model.flow.stage = Stage::Armed {
        since_ms: now,
        pins,
    };
}

/// `p`: the pin-bridging screen. At Ready it asks for the confirmation first (the catch flashes
/// by itself the moment 9008 appears); while armed it switches the screen on.
pub(super) fn pins(model: &mut Model) {
    match model.flow.stage {
        Stage::Ready => {
            model.flow.pins_requested = true;
            model.overlay = Overlay::ConfirmFlash;
        }
        Stage::Armed { since_ms, .. } => {
            model.flow.stage = Stage::Armed {
                since_ms,
                pins: true,
            }
        }
        _ => model.notice = Some("The pin screen comes after the package check (Enter)".into()),
    }
}

/// Esc while armed: back to Ready, nothing happens on the next appearance.
pub(super) fn disarm(model: &mut Model) {
    model.flow.stage = Stage::Ready;
    model.flow.seen_ms = None;
    model.flow.pins_requested = false;
}

/// Hand the confirmed plan to the runtime for the device now present as `snapshot`.
fn start_flash(
    model: &mut Model,
    id: DeviceId,
    snapshot: DeviceSnapshot,
    pins: bool,
    fx: &mut Vec<Effect>,
) {
    let Some(plan) = model.flow.review.as_ref().map(|r| r.plan) else {
        return;
    };
    let job = JobId(model.next_job);
    model.next_job = model.next_job.saturating_add(1);
    let now = model.now_ms;
    model.flow.stage = Stage::Flashing { job, pins };
    model.flow.seen_ms = Some(now);
    model.flow.uploaded_ms = None;
    model.flow.cancel_requested = false;
    model.flow.identify_pending = false;
    model.flow.switching = false;
    model.flash = Some(FlashView {
        job,
        device: id,
        rows: Vec::new(),
        total_bytes: 0,
        overall: 0.0,
        started_ms: now,
        ended_ms: None,
        ok: None,
        device_log: Vec::new(),
    });
    fx.push(Effect::StartFlash {
        job,
        plan,
        device: id,
        snapshot,
    });
    if pins {
        bell(model, fx);
    }
}

/// End the flow with a verdict (the bell asks for the person's eyes).
pub(super) fn finish(model: &mut Model, outcome: Outcome, fx: &mut Vec<Effect>) {
    model.flow.stage = Stage::Finished(outcome);
    bell(model, fx);
}

/// Was this device ever seen in EDL?
fn seen_in_edl(model: &Model, id: DeviceId) -> bool {
    model
        .history
        .get(&id)
        .is_some_and(|h| h.iter().any(|b| b.appear && b.mode == Mode::Edl.tag()))
}

/// Present relevant devices, and those of them in `mode`.
fn present_counts(model: &Model, mode: &Mode) -> (usize, usize) {
    let views = model.devices();
    let present: Vec<&DeviceView> = views.iter().filter(|v| v.present).collect();
    let in_mode = present.iter().filter(|v| &v.class.mode == mode).count();
    (present.len(), in_mode)
}

/// A device appeared or vanished: identify, catch, or verify.
pub(super) fn on_device(
    model: &mut Model,
    event: &DeviceEvent,
    upd: &Update,
    fx: &mut Vec<Effect>,
) {
    let DeviceChange::Appear { device } = &event.change else {
        return;
    };
    let (Some(id), Some(class)) = (upd.id, upd.class.as_ref()) else {
        return;
    };
    let ours = model.flow.device == Some(id);
    let new_id = upd.matched.rule == MatchRule::New;
    match model.flow.stage.clone() {
        Stage::Armed { pins, .. } => match &class.mode {
            Mode::Edl => {
                // A modem the person bridges from normal mode may come back under a new id when
                // nothing linked the two appearances: take it only when it is the one EDL device.
                // The armed modem must have left the bus (a bridged modem re-enumerates).
                let adopt = !ours
                    && new_id
                    && model
                        .flow
                        .device
                        .is_some_and(|d| !seen_in_edl(model, d) && model.present(d).is_none())
                    && present_counts(model, &Mode::Edl).1 == 1;
                if ours || adopt {
                    if adopt {
                        model.flow.device = Some(id);
                        model.selected = Some(id);
                    }
                    start_flash(model, id, device.clone(), pins, fx);
                }
            }
            Mode::CrashDump if ours => model.flow.problem = Some(crash_dump()),
            Mode::QuectelNormal { .. } if ours && pins => {
                model.notice = Some(
                    "It came up in normal mode: USB_BOOT was not held at power-on. Keep the \
                     bridge and power-cycle again"
                        .into(),
                );
            }
            _ => {}
        },
        Stage::Verifying { since_ms } => {
            let normal = matches!(class.mode, Mode::QuectelNormal { .. });
            let adopt = !ours && new_id && normal && present_counts(model, &class.mode) == (1, 1);
            if !(ours || adopt) || model.flow.at_pending {
                return;
            }
            if adopt {
                model.flow.device = Some(id);
            }
            if normal {
                // Back: who is it now? The verdict waits for its answer over AT.
                model.flow.at_pending = true;
                fx.push(Effect::IdentifyNormal {
                    device: id,
                    snapshot: device.clone(),
                });
                return;
            }
            // Back, but not in normal mode: it does not boot the new firmware.
            model.flow.last_mode = Some(class.label.clone());
            let ret = Return::NoReturn {
                waited_ms: event.t_ms.saturating_sub(since_ms),
                last_mode: Some(class.label.clone()),
            };
            decide(model, &ret, fx);
        }
        Stage::Checking | Stage::Ready | Stage::Refused
            if ours && model.flow.identify_pending && class.mode == Mode::Edl =>
        {
            model.flow.identify_pending = false;
            fx.push(Effect::Identify {
                device: id,
                snapshot: device.clone(),
            });
        }
        _ => {}
    }
}

/// Time passed: the verification deadline, and an armed catch on a modem that stopped looping
/// and stays in EDL.
pub(super) fn on_tick(model: &mut Model, fx: &mut Vec<Effect>) {
    match model.flow.stage {
        Stage::Verifying { since_ms } => {
            let limit = model.config.verify_timeout_ms;
            // An identity in flight is bounded and answers; its answer decides.
            if model.now_ms.saturating_sub(since_ms) >= limit && !model.flow.at_pending {
                let ret = Return::NoReturn {
                    waited_ms: limit,
                    last_mode: model.flow.last_mode.clone(),
                };
                decide(model, &ret, fx);
                model.dirty = true;
            }
        }
        Stage::Armed { pins, .. } => {
            let Some(v) = model.flow_view() else {
                return;
            };
            if v.present && v.class.mode == Mode::Edl && !v.loop_status.is_looping() {
                start_flash(model, v.id, v.device, pins, fx);
                model.dirty = true;
            }
        }
        _ => {}
    }
}
