//! The help overlay: every key the console knows, and what it does.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use super::{overlay_box, Ctx};

/// Every key, in the order a rescue uses them.
pub const KEYS: &[(&str, &str)] = &[
    ("↑/↓  j/k", "select a device"),
    (
        "Enter",
        "start: identify the modem (read-only) and check the package",
    ),
    ("f", "flash: show the plan to confirm"),
    (
        "A",
        "flash every modem in download mode at once (station; --package)",
    ),
    (
        "y",
        "confirm (the plan, the switch to EDL over DIAG, or quitting)",
    ),
    (
        "o",
        "type the phrase that overrides a compatibility refusal",
    ),
    ("p", "pin-bridging screen (put the modem into EDL by hand)"),
    ("Esc", "back / close"),
    ("c", "cancel the running step at the next safe point"),
    ("Tab", "move the keyboard focus (devices / log)"),
    ("PgUp/PgDn", "scroll the log"),
    ("?", "this help"),
    ("q", "quit (asks first while the modem is being written)"),
];

/// Keys that act on the emulated modem in `qrescue demo`.
pub const DEMO_KEYS: &[(&str, &str)] = &[
    (
        "b",
        "bridge the pins and power-cycle (the modem comes up in 9008)",
    ),
    ("r", "release the pins"),
];

pub(crate) fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let demo = ctx.m.config.demo.is_some();
    let mut lines: Vec<Line> = Vec::with_capacity(KEYS.len() + DEMO_KEYS.len() + 4);
    let key_line = |k: &'static str, what: &'static str| {
        Line::from(vec![
            Span::styled(format!("{k:>10}  "), t.key),
            Span::raw(what),
        ])
    };
    for (k, what) in KEYS {
        lines.push(key_line(k, what));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        if demo {
            "demo (emulated modem):"
        } else {
            "in qrescue demo (emulated modem):"
        },
        t.title,
    ));
    for (k, what) in DEMO_KEYS {
        lines.push(key_line(k, what));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled("Esc or ? closes this help", t.dim));
    let h = lines.len() as u16 + 2;
    let inner = overlay_box(t, "Keys", area, 78, h, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}
