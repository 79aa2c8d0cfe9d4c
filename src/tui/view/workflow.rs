//! The workflow pane: where the guided rescue is (`1 Identify · 2 Check package · 3 Confirm ·
//! 4 Catch · 5 Flash · 6 Verify`, the current step marked), the last problem in plain words
//! (what / why / next), the final outcome big and unambiguous, what to do next and which key
//! does it, and the review of the checked package.
//!
//! Lines are ordered by importance: when the pane is short, the end is cut, never the problem
//! or the outcome.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use crate::device::bootloop::LoopStatus;
use crate::device::classify::Mode;
use crate::engine::prepare::CompatReport;

use super::super::model::{Outcome, Stage};
use super::super::msg::{PlanReview, Problem};
use super::super::theme::Theme;
use super::{dur, file_name, override_offered, Ctx};
use crate::tui::view::timeline::countdown;
use crate::workflow::verdict::Verdict;

const STAGES: [&str; 6] = [
    "Identify",
    "Check package",
    "Confirm",
    "Catch",
    "Flash",
    "Verify",
];

/// The step the flow is on (0-based), and whether it ended there badly.
fn step(ctx: &Ctx) -> (Option<usize>, bool) {
    let m = ctx.m;
    match &m.flow.stage {
        Stage::Idle => (None, false),
        Stage::Checking => {
            let identified = m
                .flow
                .device
                .is_some_and(|id| m.identities.contains_key(&id));
            (Some(usize::from(identified)), false)
        }
        Stage::Refused => (Some(1), true),
        Stage::Ready => (Some(2), false),
        Stage::Armed { .. } => (Some(3), false),
        Stage::Flashing { .. } => (Some(4), false),
        Stage::Verifying { .. } => (Some(5), false),
        Stage::Finished(Outcome::Verified { .. }) => (Some(6), false),
        Stage::Finished(Outcome::NotVerified { .. }) => (Some(5), true),
        Stage::Finished(Outcome::Failed { .. }) | Stage::Finished(Outcome::Cancelled { .. }) => {
            (Some(if m.flash.is_some() { 4 } else { 3 }), true)
        }
    }
}

/// `✓1 Identify · ▶2 Check package · 3 Confirm …`, or a short form when it does not fit.
fn stage_line(ctx: &Ctx, width: u16) -> Line<'static> {
    let t = &ctx.t;
    let (cur, bad) = step(ctx);
    for sep in [" · ", "  "] {
        let mut spans = Vec::with_capacity(12);
        for (i, name) in STAGES.iter().enumerate() {
            if i > 0 {
                spans.push(Span::styled(sep, t.dim));
            }
            let (text, style) = match cur {
                Some(c) if i < c => (format!("✓{} {name}", i + 1), t.stage_done),
                Some(c) if i == c && bad => (format!("✗{} {name}", i + 1), t.bad),
                Some(c) if i == c => (format!("▶{} {name}", i + 1), t.stage_current),
                _ => (format!("{} {name}", i + 1), t.dim),
            };
            spans.push(Span::styled(text, style));
        }
        let line = Line::from(spans);
        if line.width() <= width as usize {
            return line;
        }
    }
    match cur {
        Some(c) if c < STAGES.len() => Line::from(vec![
            Span::styled(
                format!(
                    "{}step {} of 6: {}",
                    if bad { "✗" } else { "▶" },
                    c + 1,
                    STAGES[c]
                ),
                if bad { t.bad } else { t.stage_current },
            ),
            Span::styled(
                match STAGES.get(c + 1) {
                    Some(n) => format!(" · then {n}"),
                    None => String::new(),
                },
                t.dim,
            ),
        ]),
        Some(_) => Line::styled("✓ all 6 steps done", t.stage_done),
        None => Line::styled(
            "steps: Identify · Check · Confirm · Catch · Flash · Verify",
            t.dim,
        ),
    }
}

/// A full-width band with a centred word.
fn banner(text: &str, style: Style, width: u16) -> Line<'static> {
    let w = width as usize;
    let n = text.chars().count();
    let pad = w.saturating_sub(n);
    let s = format!(
        "{}{}{}",
        " ".repeat(pad / 2),
        text,
        " ".repeat(pad - pad / 2)
    );
    Line::styled(s, style)
}

pub(crate) fn problem_lines(p: &Problem, t: &Theme, heading: &str) -> Vec<Line<'static>> {
    vec![
        Line::styled(
            if heading.is_empty() {
                format!("✗ {}", p.what)
            } else {
                format!("✗ {heading} {}", p.what)
            },
            t.bad,
        ),
        Line::from(vec![
            Span::styled("  why: ", t.dim),
            Span::raw(p.why.clone()),
        ]),
        Line::from(vec![
            Span::styled("  next: ", t.key),
            Span::raw(p.next.clone()),
        ]),
    ]
}

fn outcome_lines(
    o: &Outcome,
    verdict: Option<&Verdict>,
    t: &Theme,
    width: u16,
    tall: bool,
) -> Vec<Line<'static>> {
    let mut out = Vec::with_capacity(6);
    let (word, style) = match o {
        Outcome::Verified { .. } => (
            "✓ VERIFIED — flashed, and the modem came back as the same unit",
            t.banner_ok,
        ),
        Outcome::NotVerified { .. } => ("! FLASHED, NOT VERIFIED", t.banner_warn),
        Outcome::Failed { .. } => ("✗ FLASH FAILED", t.banner_bad),
        Outcome::Cancelled { .. } => ("CANCELLED", t.banner_warn),
    };
    if tall {
        out.push(banner("", style, width));
    }
    out.push(banner(word, style, width));
    if tall {
        out.push(banner("", style, width));
    }
    match (o, verdict) {
        (Outcome::Verified { .. }, Some(Verdict::Verified { checks })) => {
            for c in checks {
                out.push(Line::from(vec![
                    Span::styled("✓ ", t.ok),
                    Span::raw(c.clone()),
                ]));
            }
        }
        (Outcome::NotVerified { .. }, Some(Verdict::NotVerified { failures, next })) => {
            for f in failures {
                out.push(Line::from(vec![
                    Span::styled("✗ ", t.bad),
                    Span::styled(f.what(), t.warn),
                ]));
            }
            for n in next {
                out.push(Line::from(vec![
                    Span::styled("next: ", t.key),
                    Span::raw(n.clone()),
                ]));
            }
        }
        (Outcome::Verified { detail }, _) => out.push(Line::raw(detail.clone())),
        (Outcome::NotVerified { what_failed, next }, _) => {
            out.push(Line::from(vec![
                Span::styled("what failed: ", t.warn),
                Span::raw(what_failed.clone()),
            ]));
            out.push(Line::from(vec![
                Span::styled("next: ", t.key),
                Span::raw(next.clone()),
            ]));
        }
        (Outcome::Failed { problem }, _) => out.extend(problem_lines(problem, t, "")),
        (Outcome::Cancelled { detail }, _) => out.push(Line::raw(detail.clone())),
    }
    out
}

fn kv(t: &Theme, k: &str, v: String, style: Style) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{k:<11}"), t.dim),
        Span::styled(v, style),
    ])
}

/// The checked package, for the workflow pane and the confirm overlay.
pub(crate) fn review_lines(r: &PlanReview, t: &Theme, full: bool) -> Vec<Line<'static>> {
    let mut out = Vec::with_capacity(8);
    out.push(kv(
        t,
        "package",
        format!(
            "{} · revision {}",
            file_name(&r.package),
            r.package_revision.as_deref().unwrap_or("not in its names")
        ),
        Style::new(),
    ));
    out.push(kv(
        t,
        "verdict",
        r.verdict.summary.clone(),
        if r.verdict.flashable { t.ok } else { t.bad },
    ));
    let (compat, style) = match &r.compat {
        CompatReport::NotChecked { reason, .. } => (format!("not checked: {reason}"), t.warn),
        CompatReport::Allowed {
            modem,
            package,
            note,
            ..
        } => (format!("allowed ({modem} → {package}): {note}"), t.ok),
        CompatReport::Refused {
            modem,
            package,
            title,
            ..
        } => (
            format!(
                "REFUSED: {title} ({modem} → {})",
                package.as_deref().unwrap_or("unknown")
            ),
            t.bad,
        ),
    };
    out.push(kv(t, "compat", compat, style));
    match &r.guard {
        Some(g) => {
            let untouched = g.untouched();
            let mut text = if untouched.is_empty() {
                String::new()
            } else {
                format!("untouched: {}", untouched.join(", "))
            };
            for touch in &g.touched {
                if !text.is_empty() {
                    text.push_str("; ");
                }
                text.push_str(&format!(
                    "TOUCHED: {} ({}) — {}",
                    touch.partition,
                    touch.holds,
                    match &touch.backup {
                        Some(b) if touch.covered => format!("verified backup {b}"),
                        _ => "NO verified backup".to_string(),
                    }
                ));
            }
            if text.is_empty() {
                text = "no device-unique partitions in the table".into();
            }
            let style = if g.touched.iter().any(|t| !t.covered) {
                t.bad
            } else if g.touched.is_empty() {
                t.ok
            } else {
                t.warn
            };
            out.push(kv(t, "unique", text, style));
        }
        None => out.push(kv(
            t,
            "unique",
            "no partition table in the package: device-unique data checked by name only".into(),
            t.warn,
        )),
    }
    if full {
        for w in &r.warnings {
            out.push(Line::from(vec![
                Span::styled("! ", t.warn),
                Span::raw(w.clone()),
            ]));
        }
    }
    out
}

/// What to do now, and the key that does it.
fn next_lines(ctx: &Ctx) -> Vec<Line<'static>> {
    let t = &ctx.t;
    let m = ctx.m;
    let key = |k: &str| Span::styled(k.to_string(), t.key);
    let dev = ctx.flow_device();
    let report = dev.and_then(|d| match &d.loop_status {
        LoopStatus::Looping(r) => Some(r),
        _ => None,
    });
    let when = |prefix: &str| -> Option<Line<'static>> {
        let d = dev?;
        report.map(|r| {
            Line::from(vec![
                Span::raw(prefix.to_string()),
                Span::styled(countdown(r, d.present, m.now_ms), t.key),
            ])
        })
    };
    let mut out = Vec::with_capacity(6);
    match &m.flow.stage {
        Stage::Idle => match dev {
            None => {
                out.push(Line::styled("No modem seen yet.", t.warn));
                out.push(Line::from(vec![
                    Span::raw("Plug one in and it shows up the moment it enumerates — or rehearse a rescue with an emulated modem: run "),
                    key("qrescue demo"),
                    Span::raw("."),
                ]));
            }
            Some(d) => {
                let how = if matches!(d.class.mode, Mode::QuectelNormal { .. }) {
                    "over AT (read-only: IMEI, firmware, +CFUN) and check the package against its revision"
                } else {
                    "over Sahara (read-only) and check the package against it"
                };
                match m.station_offer() {
                    Some(n) => out.push(Line::from(vec![
                        Span::raw("Next: press "),
                        key("A"),
                        Span::raw(format!(
                            " to flash all {n} modems in download mode at once (a job each, \
                             then one summary), or "
                        )),
                        key("Enter"),
                        Span::raw(format!(" to identify {} alone.", d.id)),
                    ])),
                    None => out.push(Line::from(vec![
                        Span::raw("Next: press "),
                        key("Enter"),
                        Span::raw(format!(" to identify {} {how}.", d.id)),
                    ])),
                }
                match &m.config.package {
                    Some(p) => out.push(Line::from(vec![
                        Span::styled("package: ", t.dim),
                        Span::raw(p.display().to_string()),
                    ])),
                    None => out.push(Line::styled(
                        "No package given: start qrescue with --package PATH to flash.",
                        t.warn,
                    )),
                }
                if !d.present {
                    out.push(Line::raw(
                        "The modem is away: qrescue waits for it to come back.",
                    ));
                }
                if let Some(l) = when("Its loop: ") {
                    out.push(l);
                }
            }
        },
        Stage::Checking => {
            out.push(Line::raw(if m.flow.at_pending {
                "Asking the modem over AT who it is (read-only); then the package is checked against its revision: integrity, plan, compatibility, device-unique data…"
            } else {
                "Identifying the modem over Sahara (read-only) and checking the package: integrity, plan, compatibility, device-unique data…"
            }));
            if dev.is_some_and(|d| !d.present) {
                out.push(Line::raw("Waiting for the modem's next window."));
            }
            if let Some(l) = when("") {
                out.push(l);
            }
        }
        Stage::Refused => {
            out.push(Line::styled(
                "REFUSED: qrescue will not flash this package onto this modem. Nothing was written.",
                t.bad,
            ));
            if override_offered(m) {
                out.push(Line::from(vec![
                    Span::raw("If you know better and have a verified backup: press "),
                    key("o"),
                    Span::raw(" and type the override phrase. "),
                    key("Esc"),
                    Span::raw(" goes back."),
                ]));
            } else {
                out.push(Line::from(vec![
                    Span::raw("Use a package made for this modem. "),
                    key("Esc"),
                    Span::raw(" goes back."),
                ]));
            }
        }
        Stage::Ready
            if dev.is_some_and(|d| {
                d.present && matches!(d.class.mode, Mode::QuectelNormal { .. })
            }) =>
        {
            out.push(Line::styled(
                "Checked: this package can be flashed onto this modem.",
                t.ok,
            ));
            out.push(Line::from(vec![
                Span::raw("Next: press "),
                key("f"),
                Span::raw(" to see the plan and confirm; then qrescue offers to switch the modem to EDL over DIAG (you confirm that too), and the flash starts the moment 9008 appears. "),
                key("p"),
                Span::raw(" bridges the pins instead."),
            ]));
        }
        Stage::Ready => {
            out.push(Line::styled(
                "Checked: this package can be flashed onto this modem.",
                t.ok,
            ));
            out.push(Line::from(vec![
                Span::raw("Next: press "),
                key("f"),
                Span::raw(" to see the plan and confirm; the flash starts the moment the modem is in EDL. If it must be put into EDL by hand, press "),
                key("p"),
                Span::raw(" for the pin-bridging screen."),
            ]));
        }
        Stage::Armed { since_ms, .. } => {
            if m.flow.switching {
                out.push(Line::styled(
                    "Switched over DIAG: the modem resets into EDL and re-enumerates as 05c6:9008.",
                    t.warn,
                ));
            }
            out.push(Line::styled(
                "ARMED: the flash starts the moment the modem appears in EDL (9008).",
                t.warn,
            ));
            out.push(Line::raw(format!(
                "Waiting {} so far. Nothing is written until it appears.",
                dur(m.now_ms.saturating_sub(*since_ms))
            )));
            if let Some(l) = when("") {
                out.push(l);
            }
            out.push(Line::from(vec![key("c"), Span::raw(" disarms.")]));
        }
        Stage::Flashing { .. } => {
            let active = m
                .flash
                .as_ref()
                .and_then(|f| f.active())
                .map(|r| r.name.clone());
            let doing = if m.uploading() {
                "UPLOADING the programmer".to_string()
            } else {
                format!(
                    "FLASHING{}",
                    active.map(|a| format!(" {a}")).unwrap_or_default()
                )
            };
            out.push(Line::styled(
                format!("{doing} — do not unplug or power off the modem."),
                t.warn,
            ));
            out.push(Line::from(vec![
                key("c"),
                Span::raw(" cancels at the next safe point; a stopped flash leaves the modem partly written until a flash completes."),
            ]));
        }
        Stage::Verifying { .. } if m.flow.at_pending => {
            out.push(Line::styled(
                "Back in normal mode. Asking it over AT: same IMEI? +CFUN: 1 (calibrated)? the package's revision?",
                t.warn,
            ));
        }
        Stage::Verifying { since_ms } => {
            let waited = m.now_ms.saturating_sub(*since_ms);
            out.push(Line::styled(
                "Written. Waiting for the modem to come back in normal mode — a write alone is not a rescue.",
                t.warn,
            ));
            out.push(Line::raw(format!(
                "{} of {} waited.",
                dur(waited),
                dur(m.config.verify_timeout_ms)
            )));
        }
        Stage::Finished(_) => {
            out.push(Line::from(vec![
                key("Esc"),
                Span::raw(" back to the device list · "),
                key("Enter"),
                Span::raw(" start again"),
            ]));
        }
    }
    out
}

/// `over AT   RM502QAEAAR13A02M4G_01.200.01.200 · IMEI 86… · +CFUN: 1`: the latest identity read
/// over AT (after the flash: the one the verdict judged; before it: the one read first).
fn at_identity_line(ctx: &Ctx, id: crate::device::identity::DeviceId) -> Option<Line<'static>> {
    let t = &ctx.t;
    let m = ctx.m;
    let a = m
        .at_identities
        .get(&id)
        .map(|a| &a.id)
        .or(m.flow.before.as_ref())?;
    let mut parts = Vec::new();
    if let Some(r) = &a.revision {
        parts.push(r.text.clone());
    }
    parts.push(match &a.imei {
        Some(i) => format!("IMEI {}", i.digits),
        None => "no IMEI".into(),
    });
    let cfun = a.cfun.map(|c| c.level);
    parts.push(match cfun {
        Some(l) => format!("+CFUN: {l}"),
        None => "+CFUN: ?".into(),
    });
    let style = match cfun {
        Some(1) if a.imei.is_some() => t.ok,
        Some(5) | Some(7) => t.bad,
        _ => t.warn,
    };
    Some(kv(t, "over AT", parts.join(" · "), style))
}

/// Every line of the pane, most important first.
pub(crate) fn lines(ctx: &Ctx, width: u16) -> Vec<Line<'static>> {
    let t = &ctx.t;
    let m = ctx.m;
    let mut out = Vec::with_capacity(24);
    out.push(stage_line(ctx, width));
    if let Stage::Finished(o) = &m.flow.stage {
        out.extend(outcome_lines(
            o,
            m.flow.verdict.as_ref(),
            t,
            width,
            ctx.wide,
        ));
    }
    if let Some(p) = &m.flow.problem {
        let same_as_outcome =
            matches!(&m.flow.stage, Stage::Finished(Outcome::Failed { problem }) if problem == p);
        if !same_as_outcome {
            out.extend(problem_lines(p, t, "PROBLEM:"));
        }
    }
    out.extend(next_lines(ctx));
    if let Some(r) = &m.flow.review {
        if matches!(m.flow.stage, Stage::Refused) {
            for reason in &r.verdict.reasons {
                out.push(Line::from(vec![
                    Span::styled("✗ ", t.bad),
                    Span::styled(reason.what.clone(), t.bad),
                ]));
                out.push(Line::from(vec![
                    Span::styled("  why: ", t.dim),
                    Span::raw(reason.why.clone()),
                ]));
                out.push(Line::from(vec![
                    Span::styled("  next: ", t.key),
                    Span::raw(reason.next.clone()),
                ]));
            }
        }
        let review = review_lines(r, t, ctx.wide);
        // While the modem is worked on, the compact screen keeps its rows for the progress.
        let busy = matches!(
            m.flow.stage,
            Stage::Armed { .. }
                | Stage::Flashing { .. }
                | Stage::Verifying { .. }
                | Stage::Finished(_)
        );
        if busy && !ctx.wide {
            out.extend(review.into_iter().take(1));
        } else {
            out.extend(review);
        }
    }
    if let Some(d) = ctx.flow_device() {
        if let Some(line) = at_identity_line(ctx, d.id) {
            out.push(line);
        }
        if let Some(id) = m.identities.get(&d.id) {
            let i = &id.info;
            let mut parts = Vec::new();
            if let Some(s) = &i.serial_hex {
                parts.push(format!("serial {s}"));
            }
            if let Some(h) = &i.hw_id {
                parts.push(format!("HW id {}", h.hex));
            } else if let Some(c) = &i.chip_id_v3 {
                parts.push(format!("MSM {}", c.msm_id_hex));
            }
            if let Some(v) = i.sahara_version {
                parts.push(format!("Sahara v{v}"));
            }
            if !parts.is_empty() {
                out.push(kv(t, "identity", parts.join(" · "), Style::new()));
            }
        }
    }
    if matches!(m.flow.stage, Stage::Idle) {
        if let Some(demo) = &m.config.demo {
            out.push(Line::from(vec![
                Span::styled(format!("demo {}: ", demo.scenario), t.title),
                Span::raw(demo.about.clone()),
            ]));
        }
    }
    out
}

/// Draw the pane with `lines` (from [`lines`], made once per frame for the layout too).
pub(crate) fn render(ctx: &Ctx, lines: Vec<Line<'static>>, area: Rect, buf: &mut Buffer) {
    let title = match ctx.flow_device() {
        Some(d) => format!("Rescue {}", d.id),
        None => "Rescue".to_string(),
    };
    let block = ctx.pane(&title, false);
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.is_empty() {
        return;
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}
