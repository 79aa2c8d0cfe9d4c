//! Confirmation overlays: the plan summary before a flash, the typed override of a
//! compatibility refusal, and quitting while the modem is being worked on.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use crate::cli::output::bytes;
use crate::engine::events::StepKind;
use crate::engine::prepare::CompatReport;

use super::super::model::Stage;
use super::workflow::review_lines;
use super::{cut, file_name, mode_word, overlay_box, wrapped_height, Ctx};

fn names(list: &[&str], max: usize) -> String {
    if list.len() <= max {
        list.join(", ")
    } else {
        format!("{} and {} more", list[..max].join(", "), list.len() - max)
    }
}

/// The plan summary with "press y to flash, Esc to go back".
pub(crate) fn flash(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let mut lines: Vec<Line> = Vec::with_capacity(20);
    let key = |k: &'static str| Span::styled(k, t.key);
    match ctx.m.flow.review.as_ref() {
        Some(r) => {
            if let Some(d) = ctx.flow_device() {
                let (mode, style) = mode_word(&d.class, t);
                lines.push(Line::from(vec![
                    Span::styled(format!("{:<11}", "modem"), t.dim),
                    Span::raw(format!("{} ", d.id)),
                    Span::styled(mode, style),
                    Span::raw(format!(
                        " {} serial {}",
                        d.device.id(),
                        d.class.serial(&d.device).unwrap_or("unknown")
                    )),
                ]));
            }
            lines.push(Line::from(vec![
                Span::styled(format!("{:<11}", "programmer"), t.dim),
                Span::raw(
                    r.programmer
                        .as_deref()
                        .map(|p| file_name(std::path::Path::new(p)))
                        .unwrap_or_else(|| "not known".into()),
                ),
            ]));
            match &r.summary {
                Some(s) => {
                    let count = |k: StepKind| s.steps.iter().filter(|x| x.kind == k).count();
                    lines.push(Line::from(vec![
                        Span::styled(format!("{:<11}", "steps"), t.dim),
                        Span::raw(format!(
                            "{} ({} program, {} erase, {} patch) · {} to write · {} storage",
                            s.steps.len(),
                            count(StepKind::Program),
                            count(StepKind::Erase),
                            count(StepKind::Patch),
                            bytes(s.total_bytes),
                            s.storage.memory_name().to_ascii_uppercase()
                        )),
                    ]));
                    let erased: Vec<&str> = s
                        .steps
                        .iter()
                        .filter(|x| x.kind == StepKind::Erase)
                        .map(|x| x.name.as_str())
                        .collect();
                    let written: Vec<&str> = s
                        .steps
                        .iter()
                        .filter(|x| x.kind == StepKind::Program)
                        .map(|x| x.name.as_str())
                        .collect();
                    lines.push(Line::from(vec![
                        Span::styled(format!("{:<11}", "erases"), t.dim),
                        if erased.is_empty() {
                            Span::raw("no erase steps")
                        } else {
                            Span::styled(names(&erased, 6), t.warn)
                        },
                    ]));
                    lines.push(Line::from(vec![
                        Span::styled(format!("{:<11}", "writes"), t.dim),
                        Span::raw(names(&written, if ctx.wide { 14 } else { 6 })),
                    ]));
                }
                None => lines.push(Line::styled("no plan summary", t.bad)),
            }
            lines.extend(review_lines(r, t, false));
            lines.push(Line::raw(""));
            if r.verdict.flashable {
                lines.push(Line::from(vec![
                    Span::raw("press "),
                    key("y"),
                    Span::raw(" to flash, "),
                    key("Esc"),
                    Span::raw(" to go back"),
                ]));
            } else {
                lines.push(Line::from(vec![
                    Span::styled("Refused: nothing will be flashed. ", t.bad),
                    key("Esc"),
                    Span::raw(" to go back"),
                ]));
            }
        }
        None => {
            lines.push(Line::styled("No checked plan to flash.", t.bad));
            lines.push(Line::from(vec![
                key("Esc"),
                Span::raw(" to go back, then "),
                key("Enter"),
                Span::raw(" to check the package"),
            ]));
        }
    }
    let w = if ctx.wide { 110 } else { 78 }.min(area.width);
    let h = wrapped_height(&lines, w.saturating_sub(2)) + 2;
    let inner = overlay_box(t, "Flash this plan?", area, w, h, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

/// The exact phrase to type and what was typed so far.
pub(crate) fn override_input(ctx: &Ctx, typed: &str, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let mut lines: Vec<Line> = Vec::with_capacity(14);
    let phrase = ctx.m.flow.review.as_ref().and_then(|r| match &r.compat {
        CompatReport::Refused {
            title,
            why,
            override_phrase,
            ..
        } => Some((title.as_str(), why.as_str(), override_phrase.as_deref())),
        _ => None,
    });
    match phrase {
        Some((title, why, Some(p))) => {
            lines.push(Line::styled(format!("REFUSED: {title}"), t.bad));
            lines.push(Line::from(vec![
                Span::styled("why: ", t.dim),
                Span::raw(why),
            ]));
            lines.push(Line::raw(
                "Overriding flashes it anyway, for this flash only, with a verified backup of this modem's own data.",
            ));
            lines.push(Line::raw(""));
            lines.push(Line::styled("Type exactly:", t.title));
            lines.push(Line::styled(format!("  {p}"), t.key));
            lines.push(Line::styled("You typed:", t.title));
            lines.push(Line::from(vec![
                Span::raw(format!("  {}", cut(typed, 200))),
                Span::styled("▏", t.key),
            ]));
            let state = if typed == p {
                Span::styled("✓ matches — Enter to override", t.ok)
            } else if p.starts_with(typed) {
                Span::styled(
                    format!(
                        "{} of {} characters",
                        typed.chars().count(),
                        p.chars().count()
                    ),
                    t.dim,
                )
            } else {
                Span::styled("✗ does not match — Backspace to correct", t.bad)
            };
            lines.push(Line::from(vec![Span::raw("  "), state]));
        }
        Some((title, _, None)) => {
            lines.push(Line::styled(format!("REFUSED: {title}"), t.bad));
            lines.push(Line::raw(
                "This refusal cannot be overridden: the package is built for another model.",
            ));
        }
        None => lines.push(Line::raw("There is no compatibility refusal to override.")),
    }
    lines.push(Line::raw(""));
    lines.push(Line::from(vec![
        Span::styled("Enter", t.key),
        Span::raw(" to submit · "),
        Span::styled("Esc", t.key),
        Span::raw(" to cancel"),
    ]));
    let w = 78.min(area.width);
    let h = wrapped_height(&lines, w.saturating_sub(2)) + 2;
    let inner = overlay_box(t, "Override", area, w, h, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

/// The software switch to EDL, explained before it is sent.
pub(crate) fn switch(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let who = ctx
        .flow_device()
        .map(|d| format!("{} ({})", d.id, d.device.id()))
        .unwrap_or_else(|| "The modem".into());
    let lines = vec![
        Line::styled(format!("{who} runs in normal mode."), t.warn),
        Line::raw("To flash it, qrescue sends the Quectel DIAG command 4B 65 01 00 on its DM port: the modem resets into its boot ROM, leaves the bus and re-enumerates as 05c6:9008 (EDL) about 2 s later. The confirmed flash starts the moment 9008 appears."),
        Line::raw("Nothing is written by the switch itself. If the modem does not answer DIAG, bridging its test pins does the same."),
        Line::raw(""),
        Line::from(vec![
            Span::raw("press "),
            Span::styled("y", t.key),
            Span::raw(" to switch it now, "),
            Span::styled("p", t.key),
            Span::raw(" to bridge the pins instead, "),
            Span::styled("Esc", t.key),
            Span::raw(" to go back"),
        ]),
    ];
    let w = 72.min(area.width);
    let h = wrapped_height(&lines, w.saturating_sub(2)) + 2;
    let inner = overlay_box(t, "Switch to download mode?", area, w, h, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

/// What happens to the modem if the console quits now.
pub(crate) fn quit(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    stop(ctx, area, buf, "Quit?", " to quit anyway, ")
}

/// What happens to the modem if the running flash is stopped (the console stays).
pub(crate) fn cancel(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    stop(ctx, area, buf, "Stop the flash?", " to stop it, ")
}

fn stop(ctx: &Ctx, area: Rect, buf: &mut Buffer, title: &str, yes: &str) {
    let t = &ctx.t;
    let (head, body) = match &ctx.m.flow.stage {
        Stage::Flashing { .. } => (
            "A flash is running.",
            "Stopping or quitting now cancels it at the next safe point. The modem is then partly written and will not boot normally until a flash completes: bring it back into EDL (9008) and flash again.",
        ),
        Stage::Armed { .. } => (
            "The catch is armed.",
            "Nothing has been written. Quitting disarms it; the modem stays as it is.",
        ),
        Stage::Verifying { .. } => (
            "The flash is written; the check is still waiting.",
            "Quitting skips checking that the modem comes back in normal mode, so nobody will have verified the rescue.",
        ),
        Stage::Checking => (
            "The modem is being identified and the package checked.",
            "Nothing is written during the check. Quitting stops it.",
        ),
        _ => ("Nothing is being written.", "Quitting leaves the modem as it is."),
    };
    let lines = vec![
        Line::styled(head, t.warn),
        Line::raw(body),
        Line::raw(""),
        Line::from(vec![
            Span::raw("press "),
            Span::styled("y", t.key),
            Span::raw(yes),
            Span::styled("Esc", t.key),
            Span::raw(" to stay"),
        ]),
    ];
    let w = 70.min(area.width);
    let h = wrapped_height(&lines, w.saturating_sub(2)) + 2;
    let inner = overlay_box(t, title, area, w, h, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}
