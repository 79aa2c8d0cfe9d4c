//! The partitions pane: the flash's overall weighted progress with total rate and ETA, then one
//! row per plan step (name, size, bar, rate, ETA, state), the active row highlighted and kept
//! in view however short the pane is.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Row, Table, Widget};

use crate::cli::output::{bytes, rate};
use crate::engine::events::StepKind;

use super::super::model::{FlashView, PartRow, RowState};
use super::{cut, dur, eta, Ctx};

fn kind_word(k: StepKind) -> &'static str {
    match k {
        StepKind::SaharaUpload => "upload",
        StepKind::Configure => "configure",
        StepKind::Erase => "erase",
        StepKind::Program => "program",
        StepKind::Patch => "patch",
        StepKind::SetBootable => "bootable",
        StepKind::Reset => "reset",
        StepKind::Read => "read",
        StepKind::Verify => "verify",
    }
}

fn active_word(k: StepKind) -> &'static str {
    match k {
        StepKind::SaharaUpload => "uploading",
        StepKind::Erase => "erasing",
        StepKind::Program => "writing",
        StepKind::Reset => "resetting",
        StepKind::Read => "reading",
        StepKind::Verify => "verifying",
        _ => "working",
    }
}

/// `██████░░░░` for `frac` of `w` cells.
fn bar(frac: f64, w: usize) -> String {
    let frac = if frac.is_finite() {
        frac.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let full = (frac * w as f64).round() as usize;
    let mut s = String::with_capacity(w * 3);
    for i in 0..w {
        s.push(if i < full { '█' } else { '░' });
    }
    s
}

fn row_frac(r: &PartRow) -> f64 {
    match &r.state {
        RowState::Done { .. } => 1.0,
        RowState::Pending | RowState::Skipped => 0.0,
        RowState::Active | RowState::Failed { .. } if r.bytes > 0 => {
            r.done.min(r.bytes) as f64 / r.bytes as f64
        }
        _ => 0.0,
    }
}

/// Bytes written so far over all rows.
fn done_bytes(f: &FlashView) -> u64 {
    f.rows
        .iter()
        .map(|r| match r.state {
            RowState::Done { .. } => r.bytes,
            _ => r.done.min(r.bytes),
        })
        .sum()
}

/// The row to keep in view: the active one, else a failed one, else the last done.
fn anchor(f: &FlashView) -> usize {
    f.rows
        .iter()
        .position(|r| r.state == RowState::Active)
        .or_else(|| {
            f.rows
                .iter()
                .position(|r| matches!(r.state, RowState::Failed { .. }))
        })
        .or_else(|| {
            f.rows
                .iter()
                .rposition(|r| matches!(r.state, RowState::Done { .. }))
        })
        .unwrap_or(0)
}

/// First row shown so that `anchor` is visible with some context, for `visible` rows.
pub(crate) fn first_row(n: usize, anchor: usize, visible: usize) -> usize {
    if visible == 0 || n <= visible {
        return 0;
    }
    let lead = visible / 3;
    anchor.saturating_sub(lead).min(n - visible)
}

/// The rate has settled enough for an estimate: some seconds in and a share of the bytes
/// written. Before that, the first chunks (and the programmer upload) give absurd estimates.
pub(crate) fn settled(done: u64, total: u64, elapsed_ms: u64) -> bool {
    elapsed_ms >= SETTLE_MS && done.saturating_mul(SETTLE_SHARE) >= total && done > 0
}

/// A row's own estimate is shown once a share of it is written.
fn row_settled(r: &PartRow) -> bool {
    r.done > 0 && r.done.saturating_mul(SETTLE_SHARE) >= r.bytes
}

/// Estimates wait this long into the flash …
const SETTLE_MS: u64 = 2_000;
/// … and for 1/SETTLE_SHARE of the bytes.
const SETTLE_SHARE: u64 = 20;

fn overall_line(ctx: &Ctx, f: &FlashView, width: u16) -> Line<'static> {
    let t = &ctx.t;
    let now = ctx.m.now_ms;
    let done = done_bytes(f);
    let end = f.ended_ms.unwrap_or(now);
    let elapsed_ms = end.saturating_sub(f.started_ms);
    let avg = if elapsed_ms > 0 {
        done as f64 / (elapsed_ms as f64 / 1000.0)
    } else {
        0.0
    };
    let current = f.active().map(|r| r.bytes_per_s).filter(|r| *r > 0.0);
    let speed = current.unwrap_or(avg);
    let remaining = f.total_bytes.saturating_sub(done);
    let steps_done = f
        .rows
        .iter()
        .filter(|r| matches!(r.state, RowState::Done { .. }))
        .count();
    let pct = (f.overall.clamp(0.0, 1.0) * 100.0).floor();
    let mut tail = format!(
        " {pct:>3.0}% · {} of {} · ",
        bytes(done),
        bytes(f.total_bytes)
    );
    match f.ok {
        Some(true) => tail.push_str(&format!("all written in {}", dur(elapsed_ms))),
        Some(false) => tail.push_str(&format!("stopped after {}", dur(elapsed_ms))),
        None => {
            tail.push_str(&rate(speed));
            if speed > 0.0 && settled(done, f.total_bytes, elapsed_ms) {
                tail.push_str(&format!(" · ETA {}", eta(remaining as f64 / speed)));
            } else {
                tail.push_str(" · ETA —");
            }
        }
    }
    tail.push_str(&format!(" · step {steps_done}/{}", f.rows.len()));
    let label = "overall ";
    let bar_w = (width as usize)
        .saturating_sub(label.len() + tail.chars().count())
        .clamp(4, 40);
    Line::from(vec![
        Span::styled(label, t.title),
        Span::styled(bar(f.overall, bar_w), t.gauge),
        Span::raw(tail),
    ])
}

pub(crate) fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let Some(f) = &ctx.m.flash else { return };
    let title = format!("Flash {} · {} steps", f.device, f.rows.len());
    let block = ctx.pane(&title, false);
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.is_empty() {
        return;
    }
    overall_line(ctx, f, inner.width).render(Rect::new(inner.x, inner.y, inner.width, 1), buf);
    let wide = ctx.wide;
    let header = u16::from(wide);
    let table_area = Rect::new(
        inner.x,
        inner.y + 1,
        inner.width,
        inner.height.saturating_sub(1),
    );
    let visible = table_area.height.saturating_sub(header) as usize;
    if visible == 0 {
        return;
    }
    let first = first_row(f.rows.len(), anchor(f), visible);
    let name_w: usize = if wide { 24 } else { 16 };
    let bar_w: usize = if wide {
        (table_area.width as usize).saturating_sub(86).clamp(10, 48)
    } else {
        10
    };
    let rows = f.rows.iter().skip(first).take(visible).map(|r| {
        let active = r.state == RowState::Active;
        let (state, state_style) = match &r.state {
            RowState::Pending => ("pending".to_string(), t.dim),
            RowState::Active => (active_word(r.kind).to_string(), t.active_row),
            RowState::Done { .. } => ("done".to_string(), t.ok),
            RowState::Failed { .. } => ("FAILED".to_string(), t.bad),
            RowState::Skipped => ("skipped".to_string(), t.dim),
        };
        let (speed, time) = match &r.state {
            RowState::Done {
                bytes_per_s,
                elapsed_ms,
            } => (
                if r.bytes > 0 {
                    rate(*bytes_per_s)
                } else {
                    String::new()
                },
                dur(*elapsed_ms),
            ),
            RowState::Active if r.bytes > 0 => (
                rate(r.bytes_per_s),
                r.eta_s
                    .filter(|_| row_settled(r))
                    .map(eta)
                    .unwrap_or_else(|| "—".into()),
            ),
            _ => (String::new(), String::new()),
        };
        let frac = row_frac(r);
        let size = if r.bytes > 0 {
            bytes(r.bytes)
        } else {
            "–".into()
        };
        let mut cells = vec![
            Cell::from(if active { "▶" } else { " " }),
            Cell::from(cut(&r.name, name_w)),
        ];
        if wide {
            cells.push(Cell::from(kind_word(r.kind)));
        }
        cells.extend([
            Cell::from(size),
            Cell::from(Span::styled(bar(frac, bar_w), t.gauge)),
            Cell::from(format!("{:>3.0}%", (frac * 100.0).floor())),
            Cell::from(speed),
            Cell::from(time),
            Cell::from(Span::styled(state, state_style)),
        ]);
        let row = Row::new(cells);
        if active {
            row.style(t.active_row)
        } else {
            row
        }
    });
    let mut widths = vec![Constraint::Length(1), Constraint::Length(name_w as u16)];
    if wide {
        widths.push(Constraint::Length(9));
    }
    widths.extend([
        Constraint::Length(10),
        Constraint::Length(bar_w as u16),
        Constraint::Length(4),
        Constraint::Length(11),
        Constraint::Length(if wide { 10 } else { 6 }),
        Constraint::Min(7),
    ]);
    let mut table = Table::new(rows, widths).column_spacing(1);
    if wide {
        table = table.header(
            Row::new(vec![
                "",
                "partition",
                "step",
                "size",
                "progress",
                "",
                "rate",
                "ETA/time",
                "state",
            ])
            .style(t.dim),
        );
    }
    Widget::render(table, table_area, buf);
    // Say when rows are out of view.
    if f.rows.len() > visible {
        let more = format!(
            " rows {}–{} of {} ",
            first + 1,
            (first + visible).min(f.rows.len()),
            f.rows.len()
        );
        let w = more.chars().count() as u16;
        if area.width > w + 2 + title.chars().count() as u16 + 4 {
            Line::styled(more, t.dim).render(Rect::new(area.right() - w - 1, area.y, w, 1), buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_row_stays_visible() {
        for n in 0..30usize {
            for visible in 1..12usize {
                for a in 0..n {
                    let f = first_row(n, a, visible);
                    assert!(
                        f <= a && a < f + visible,
                        "n {n} visible {visible} anchor {a}"
                    );
                    assert!(f + visible <= n.max(visible));
                }
            }
        }
    }

    #[test]
    fn estimates_wait_for_the_rate_to_settle() {
        assert!(!settled(0, 100, 10_000));
        assert!(!settled(50, 100, 1_000), "too early");
        assert!(!settled(4, 100, 10_000), "too little written");
        assert!(settled(5, 100, 2_000));
    }

    #[test]
    fn bars_fill_by_fraction() {
        assert_eq!(bar(0.5, 4), "██░░");
        assert_eq!(bar(2.0, 3), "███");
        assert_eq!(bar(f64::NAN, 2), "░░");
    }
}
