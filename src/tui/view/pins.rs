//! The pin-bridging screen: full screen while the person holds a wire on USB_BOOT (the flow is
//! `Armed { pins: true }`, or `Flashing { pins: true }` until [`PIN_SCREEN_LINGER_MS`] after the
//! programmer upload). Three states in big high-contrast letters, readable from across a bench:
//! WAITING (time since armed), "9008 SEEN — RELEASE NOW", "PROGRAMMER UPLOADED". Below: what to
//! do, and the model's pin note with its sources (no pad positions are ever invented).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use crate::device::models::edl_pin_note;

use super::super::model::{Model, Stage};
use super::bigtext::{self, Scale};
use super::{dur, key_line, wrapped_height, Ctx};

/// How long the pin screen stays after the programmer upload, so the person sees it happened.
pub const PIN_SCREEN_LINGER_MS: u64 = 3_000;

/// Rows kept for the text under the big letters.
const TEXT_ROWS: u16 = 12;

/// The pin screen replaces the panes now.
pub fn showing(m: &Model) -> bool {
    match m.flow.stage {
        Stage::Armed { pins: true, .. } => true,
        Stage::Flashing { pins: true, .. } => m
            .flow
            .uploaded_ms
            .is_none_or(|u| m.now_ms.saturating_sub(u) < PIN_SCREEN_LINGER_MS),
        _ => false,
    }
}

enum PinState {
    Waiting { since_ms: Option<u64> },
    Seen { at_ms: Option<u64> },
    Uploaded { at_ms: u64 },
}

fn state(m: &Model) -> PinState {
    match (&m.flow.stage, m.flow.seen_ms, m.flow.uploaded_ms) {
        (Stage::Flashing { .. }, _, Some(u)) => PinState::Uploaded { at_ms: u },
        (Stage::Flashing { .. }, seen, None) => PinState::Seen { at_ms: seen },
        (_, Some(seen), _) => PinState::Seen { at_ms: Some(seen) },
        (Stage::Armed { since_ms, .. }, None, _) => PinState::Waiting {
            since_ms: Some(*since_ms),
        },
        _ => PinState::Waiting { since_ms: None },
    }
}

/// Scales tried, biggest first.
const SCALES: [Scale; 5] = [
    Scale { x: 4, y: 3 },
    Scale { x: 3, y: 2 },
    Scale { x: 2, y: 2 },
    Scale { x: 2, y: 1 },
    Scale::ONE,
];

/// The first candidate, at the biggest scale, whose big letters fit `width` and `height` (with
/// a blank row above and below).
fn pick_big(candidates: &[&[&str]], width: u16, height: u16) -> Option<(Vec<String>, Scale)> {
    for cand in candidates {
        for s in SCALES {
            let mut lines = Vec::with_capacity(4);
            let mut ok = true;
            for part in *cand {
                match bigtext::layout(part, width.saturating_sub(2), s) {
                    Some(l) => lines.extend(l),
                    None => {
                        ok = false;
                        break;
                    }
                }
            }
            if ok && bigtext::height(lines.len(), s) + 2 <= height {
                return Some((lines, s));
            }
        }
    }
    None
}

pub(crate) fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let m = ctx.m;
    let now = m.now_ms;
    let dev = ctx.flow_device();

    // Header.
    let head = Rect::new(area.x, area.y, area.width, 1);
    buf.set_style(head, t.header);
    let who = match dev {
        Some(d) => format!(" {} · {} ", d.id, d.device.id()),
        None => " no modem chosen ".to_string(),
    };
    Line::from(vec![
        Span::styled(" qrescue ", t.brand),
        Span::styled(" PIN BRIDGING ", t.brand),
        Span::styled(who, t.header),
    ])
    .render(head, buf);

    let (candidates, style, status, doing): (&[&[&str]], Style, String, String) = match state(m)
    {
        PinState::Waiting { since_ms } => (
            &[&["WAITING"]],
            t.big_wait,
            format!(
                "WAITING for 9008 — {} since armed",
                since_ms.map_or_else(|| "–".into(), |s| dur(now.saturating_sub(s)))
            ),
            "Power the modem on with USB_BOOT held to 1.8 V. Keep holding until this screen says RELEASE NOW."
                .into(),
        ),
        PinState::Seen { at_ms } => (
            &[&["9008 SEEN", "RELEASE NOW"], &["RELEASE NOW"]],
            t.big_seen,
            format!(
                "9008 SEEN — RELEASE NOW{}",
                at_ms.map_or(String::new(), |s| format!(" (seen {} ago)", dur(now.saturating_sub(s))))
            ),
            "Let go of USB_BOOT now. The programmer is being uploaded: keep the modem powered and connected."
                .into(),
        ),
        PinState::Uploaded { at_ms } => (
            &[&["PROGRAMMER UPLOADED"], &["UPLOADED"]],
            t.big_done,
            format!(
                "PROGRAMMER UPLOADED {} ago — the flash goes on",
                dur(now.saturating_sub(at_ms))
            ),
            "Keep the modem powered and connected; the flash view comes back in a moment.".into(),
        ),
    };

    let body = Rect::new(
        area.x,
        area.y + 1,
        area.width,
        area.height.saturating_sub(2),
    );
    // Text under the big letters, most important first.
    let model_name = dev
        .and_then(|d| d.class.model().map(str::to_string))
        .or_else(|| {
            m.flow
                .review
                .as_ref()
                .and_then(|r| r.package_revision.clone())
        });
    let note = edl_pin_note(model_name.as_deref());
    let mut lines: Vec<Line> = Vec::with_capacity(12);
    lines.push(Line::styled(status, style));
    lines.push(Line::raw(doing));
    lines.push(Line::raw(""));
    lines.push(Line::from(vec![
        Span::styled("How: ", t.title),
        Span::raw(note.text),
    ]));
    if let Some(src) = note.source {
        lines.push(Line::styled(format!("  source: {src}"), t.dim));
    }
    for q in &note.quirks {
        lines.push(Line::from(vec![
            Span::styled("Quirk: ", t.warn),
            Span::raw(q.text),
        ]));
        lines.push(Line::styled(format!("  source: {}", q.source), t.dim));
    }
    lines.push(Line::from(vec![
        Span::styled("Pads: ", t.title),
        Span::raw(note.pads),
    ]));
    let text_w = body.width.saturating_sub(2);
    let text_need = wrapped_height(&lines, text_w);
    let big_room = body.height.saturating_sub(text_need.min(TEXT_ROWS));
    let big = pick_big(candidates, body.width, big_room);
    let big_h = big
        .as_ref()
        .map_or(0, |(l, s)| bigtext::height(l.len(), *s) + 2);
    // The big letters and the text together, centred vertically.
    let top = body.y + body.height.saturating_sub(big_h + text_need) / 2;
    if let Some((lines, scale)) = &big {
        let band = Rect::new(body.x, top, body.width, big_h);
        if matches!(state(m), PinState::Seen { .. }) {
            buf.set_style(band, style);
        }
        bigtext::render(
            lines,
            Rect::new(body.x, top + 1, body.width, big_h - 1),
            *scale,
            style,
            buf,
        );
    }
    let text_area = Rect::new(
        body.x + 1,
        top + big_h,
        text_w,
        body.bottom().saturating_sub(top + big_h),
    );
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(text_area, buf);

    // Keys on the last line.
    let mut keys: Vec<(&str, &str)> = vec![("c", "cancel"), ("Esc", "back")];
    if m.config.demo.is_some() {
        keys.push(("b", "bridge pins + power-cycle"));
        keys.push(("r", "release"));
    }
    keys.push(("?", "help"));
    keys.push(("q", "quit"));
    if area.height >= 2 {
        key_line(t, &keys).render(Rect::new(area.x, area.bottom() - 1, area.width, 1), buf);
    }
}
