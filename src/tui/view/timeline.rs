//! The timeline pane: the selected device's appearances as a strip over the last seconds
//! (present spans filled with a glyph per mode, gaps `·`), the predicted windows after the `│`
//! "now" mark (`░`), the measured loop period and window, a countdown to the next window and
//! the triage headline.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget, Wrap};

use crate::device::bootloop::{LoopReport, LoopStatus, StopReason};

use super::super::model::Blip;
use super::{dur, period, Ctx};

/// Glyph of a present cell by mode tag (so the strip reads without colour).
fn mode_glyph(tag: &str) -> char {
    match tag {
        "edl" => '█',
        "normal" => '▒',
        _ => '▓',
    }
}

const ABSENT: char = '·';
const PREDICTED: char = '░';
const NOW: char = '│';

/// One present span: `[start, end)` with the appearance's mode tag.
struct Present<'a> {
    start: u64,
    end: u64,
    mode: &'a str,
}

fn spans(history: &[Blip], now: u64) -> Vec<Present<'_>> {
    let mut out: Vec<Present> = Vec::with_capacity(history.len() / 2 + 1);
    let mut open: Option<(u64, &str)> = None;
    for b in history {
        if b.appear {
            if let Some((s, m)) = open.take() {
                out.push(Present {
                    start: s,
                    end: b.t_ms,
                    mode: m,
                });
            }
            open = Some((b.t_ms, b.mode.as_str()));
        } else if let Some((s, m)) = open.take() {
            out.push(Present {
                start: s,
                end: b.t_ms.max(s),
                mode: m,
            });
        }
    }
    if let Some((s, m)) = open {
        out.push(Present {
            start: s,
            end: now.max(s),
            mode: m,
        });
    }
    out
}

/// The strip's time range: `(past_ms, future_ms)` around now.
fn range(report: Option<&LoopReport>, looping: bool) -> (u64, u64) {
    match report {
        Some(r) => {
            let p = r.period_ms.max(1000);
            let past = (p * 4).clamp(20_000, 900_000);
            let future = if looping {
                (p * 6 / 5).min(past / 3)
            } else {
                0
            };
            (past, future)
        }
        None => (60_000, 0),
    }
}

/// The strip and its axis, `width` cells wide.
fn strip(
    ctx: &Ctx,
    history: &[Blip],
    status: &LoopStatus,
    width: usize,
) -> (Line<'static>, Line<'static>) {
    let t = &ctx.t;
    let now = ctx.m.now_ms;
    let report = status.report();
    let (past, future) = range(report, status.is_looping());
    let total = past + future;
    let width = width.max(2);
    let t0 = now.saturating_sub(past);
    let now_cell = ((past as u128 * width as u128) / total as u128).min(width as u128 - 1) as usize;
    let cell_start = |i: usize| t0 + (total as u128 * i as u128 / width as u128) as u64;

    let present = spans(history, now);
    // Predicted windows after now: the open one closing, then each next one.
    let mut predicted: Vec<(u64, u64)> = Vec::new();
    if let Some(r) = report.filter(|_| status.is_looping()) {
        if let Some(close) = r.open_window_closes_ms {
            predicted.push((now, close));
        }
        let p = r.period_ms.max(1);
        let mut a = r.next_appear_ms.max(now.saturating_sub(r.window_ms));
        while a < now + future && predicted.len() < 64 {
            predicted.push((a, a + r.window_ms.max(1)));
            a += p;
        }
    }

    let mut past_text = String::with_capacity(now_cell * 3);
    let mut fut_text = String::with_capacity((width - now_cell) * 3);
    for i in 0..width {
        let (a, b) = (cell_start(i), cell_start(i + 1).max(cell_start(i) + 1));
        if i == now_cell {
            continue;
        }
        if i < now_cell {
            let hit = present.iter().rev().find(|s| s.start < b && s.end > a);
            past_text.push(hit.map_or(ABSENT, |s| mode_glyph(s.mode)));
        } else {
            let hit = predicted.iter().any(|&(s, e)| s < b && e > a);
            fut_text.push(if hit { PREDICTED } else { ' ' });
        }
    }
    let strip = Line::from(vec![
        Span::styled(past_text, t.strip_present),
        Span::styled(NOW.to_string(), t.strip_now),
        Span::styled(fut_text, t.strip_future),
    ]);

    // Axis: "−56 s" at the left, "now" under the mark, "+14 s" at the right.
    let left = format!("−{}", period(past));
    let mut axis: Vec<char> = vec![' '; width];
    let put = |axis: &mut Vec<char>, at: usize, s: &str| {
        for (k, c) in s.chars().enumerate() {
            if let Some(slot) = axis.get_mut(at + k) {
                *slot = c;
            }
        }
    };
    put(&mut axis, 0, &left);
    let now_label_at = now_cell.saturating_sub(1).max(left.chars().count() + 1);
    put(&mut axis, now_label_at, "now");
    if future > 0 {
        let right = format!("+{}", period(future));
        let n = right.chars().count();
        if width > now_label_at + 4 + n {
            put(&mut axis, width - n, &right);
        }
    }
    (
        strip,
        Line::styled(axis.into_iter().collect::<String>(), t.dim),
    )
}

/// "next window in 4.2 s" / "window open: closes in 6.1 s" / "window due now".
pub(crate) fn countdown(r: &LoopReport, present: bool, now: u64) -> String {
    match r.open_window_closes_ms {
        Some(close) if present && close > now => {
            format!("window open: closes in {}", dur(close - now))
        }
        Some(_) if present => "still present, past its usual window".into(),
        _ => {
            let ms = r.ms_until_next(now);
            if ms == 0 {
                "window due now".into()
            } else {
                format!("next window in {}", dur(ms))
            }
        }
    }
}

pub(crate) fn render(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let sel = ctx.selected();
    let title = match sel {
        Some(d) => format!("Timeline {}", d.id),
        None => "Timeline".to_string(),
    };
    let block = ctx.pane(&title, false);
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.is_empty() {
        return;
    }
    let Some(d) = sel else {
        Paragraph::new(Line::styled(
            "Select a device to see when it comes and goes.",
            t.dim,
        ))
        .wrap(Wrap { trim: true })
        .render(inner, buf);
        return;
    };
    let empty = Vec::new();
    let history = ctx.m.history.get(&d.id).unwrap_or(&empty);
    let shown = ctx.m.shown_loop_status(d.id, &d.loop_status);
    let status = &shown;
    let now = ctx.m.now_ms;
    let (strip_line, axis) = strip(ctx, history, status, inner.width as usize);
    let mut lines = vec![strip_line, axis];

    match status {
        LoopStatus::Looping(r) => {
            lines.push(Line::from(vec![
                Span::styled(format!("LOOP every {}", period(r.period_ms)), t.loop_badge),
                Span::raw(format!(
                    ", present {} · {} cycles · ",
                    period(r.window_ms),
                    r.cycles
                )),
                Span::styled(countdown(r, d.present, now), t.key),
            ]));
            lines.push(Line::from(vec![
                Span::styled("likely: ", t.dim),
                Span::styled(r.triage.headline(), t.warn),
            ]));
            if ctx.wide {
                lines.push(Line::styled(r.summary(), t.dim));
                lines.push(Line::raw(r.triage.advice()));
            }
        }
        LoopStatus::Suspected { cycles, triage } => {
            lines.push(Line::from(vec![
                Span::styled("loop suspected", t.loop_soft),
                Span::raw(format!(
                    ": came back {cycles} times, no steady rhythm yet — still watching"
                )),
            ]));
            if let Some(tr) = triage {
                lines.push(Line::from(vec![
                    Span::styled("likely: ", t.dim),
                    Span::styled(tr.headline(), t.warn),
                ]));
                if ctx.wide {
                    lines.push(Line::raw(tr.advice()));
                }
            }
        }
        LoopStatus::Stopped {
            last,
            reason,
            since_ms,
        } => {
            let why = match reason {
                StopReason::StayedPresent => "it stayed present",
                StopReason::StayedAway => "it stayed away",
            };
            lines.push(Line::from(vec![
                Span::styled("loop stopped", t.loop_soft),
                Span::raw(format!(
                    ": {why} for {} (it was every {}, present {})",
                    dur(now.saturating_sub(*since_ms)),
                    period(last.period_ms),
                    period(last.window_ms)
                )),
            ]));
            lines.push(Line::from(vec![
                Span::styled("was: ", t.dim),
                Span::raw(last.triage.headline()),
            ]));
        }
        LoopStatus::None => {
            let since = history.iter().rev().find(|b| b.appear == d.present);
            let text = match (d.present, since) {
                (true, Some(b)) => {
                    format!("no loop: present for {}", dur(now.saturating_sub(b.t_ms)))
                }
                (false, Some(b)) => {
                    format!("no loop: gone for {}", dur(now.saturating_sub(b.t_ms)))
                }
                (true, None) => "no loop: present".to_string(),
                (false, None) => "no loop: gone".to_string(),
            };
            lines.push(Line::raw(text));
        }
    }
    if ctx.wide {
        lines.push(Line::styled(
            "█ EDL  ▓ crash-dump/other  ▒ normal  · away  │ now  ░ predicted window",
            t.dim,
        ));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blip(t_ms: u64, appear: bool) -> Blip {
        Blip {
            t_ms,
            appear,
            mode: "edl".into(),
        }
    }

    #[test]
    fn spans_pair_appearances_with_vanishes() {
        let h = vec![blip(1000, true), blip(5000, false), blip(9000, true)];
        let s = spans(&h, 12_000);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].start, s[0].end), (1000, 5000));
        assert_eq!((s[1].start, s[1].end), (9000, 12_000));
        // A vanish without an appearance and a repeated appearance do not confuse it.
        let h = vec![
            blip(10, false),
            blip(20, true),
            blip(30, true),
            blip(40, false),
        ];
        let s = spans(&h, 50);
        assert_eq!(
            s.iter().map(|s| (s.start, s.end)).collect::<Vec<_>>(),
            vec![(20, 30), (30, 40)]
        );
    }
}
