//! The devices pane: every relevant device, one row each — id, mode, VID:PID, serial, port
//! (and tty), speed, loop badge — present ones first. The selection is marked `▶` and
//! highlighted; a device that left the bus says "gone" and is dimmed.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table, Widget, Wrap};

use super::super::model::Focus;
use super::{cut, loop_badge, mode_word, Ctx};

pub(crate) fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let present = ctx.devices.iter().filter(|d| d.present).count();
    let title = match ctx.devices.len() {
        0 => "Devices".to_string(),
        n => format!("Devices ({present} present, {} gone)", n - present),
    };
    let block = ctx.pane(&title, ctx.m.focus == Focus::Devices);
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.is_empty() {
        return;
    }
    if ctx.devices.is_empty() {
        let text = vec![Line::from(vec![
            Span::raw("No modem seen yet. Plug one in, or try "),
            Span::styled("qrescue demo", t.key),
        ])];
        Paragraph::new(text)
            .wrap(Wrap { trim: true })
            .render(inner, buf);
        return;
    }

    let wide = ctx.wide;
    let mode_w: u16 = if wide { 24 } else { 16 };
    let serial_w: u16 = if wide { 16 } else { 10 };
    let header_rows = u16::from(wide);
    let visible = inner.height.saturating_sub(header_rows).max(1) as usize;
    // Keep the selection in view.
    let sel = ctx
        .m
        .selected
        .and_then(|id| ctx.devices.iter().position(|d| d.id == id));
    let first = match sel {
        Some(i) if i >= visible => i + 1 - visible,
        _ => 0,
    };

    let rows = ctx.devices.iter().skip(first).take(visible).map(|d| {
        let selected = Some(d.id) == ctx.m.selected;
        let (mode, mode_style) = mode_word(&d.class, t);
        let serial = d.class.serial(&d.device).unwrap_or("–");
        let badge = loop_badge(&ctx.m.shown_loop_status(d.id, &d.loop_status), t);
        let state = if d.present { "here" } else { "gone" };
        let mut cells = vec![
            Cell::from(if selected { "▶" } else { " " }),
            Cell::from(d.id.to_string()),
            Cell::from(Span::styled(cut(&mode, mode_w as usize), mode_style)),
            Cell::from(d.device.id()),
            Cell::from(cut(serial, serial_w as usize)),
            Cell::from(d.location.clone()),
        ];
        if wide {
            let tty = d
                .class
                .ports
                .iter()
                .find_map(|p| p.tty.as_deref())
                .unwrap_or("–");
            cells.push(Cell::from(cut(tty, 14)));
        }
        cells.push(Cell::from(d.device.speed.map_or("–", |s| s.label())));
        cells.push(Cell::from(state));
        cells.push(match badge {
            Some((text, style)) => Cell::from(Span::styled(text, style)),
            None => Cell::from(""),
        });
        let mut row = Row::new(cells);
        if !d.present {
            row = row.style(t.gone);
        }
        if selected {
            row = row.style(t.selected);
        }
        row
    });

    let mut widths = vec![
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(mode_w),
        Constraint::Length(9),
        Constraint::Length(serial_w),
        Constraint::Length(if wide { 10 } else { 8 }),
    ];
    if wide {
        widths.push(Constraint::Length(14));
    }
    widths.extend([
        Constraint::Length(if wide { 5 } else { 4 }),
        Constraint::Length(4),
        Constraint::Min(9),
    ]);
    let mut table = Table::new(rows, widths).column_spacing(1);
    if wide {
        table = table.header(
            Row::new(vec![
                "", "id", "mode", "VID:PID", "serial", "port", "tty", "speed", "", "loop",
            ])
            .style(t.dim),
        );
    }
    Widget::render(table, inner, buf);
    if first > 0 || first + visible < ctx.devices.len() {
        let more = format!(
            " {}–{} of {} ",
            first + 1,
            (first + visible).min(ctx.devices.len()),
            ctx.devices.len()
        );
        let w = more.chars().count() as u16;
        if area.width > w + 2 {
            Line::styled(more, t.dim).render(Rect::new(area.right() - w - 1, area.y, w, 1), buf);
        }
    }
}
