//! The station view (many modems flashed at once): a title with the package and counts
//! (flashing, checking, verified, failed, waiting) and the aggregate write rate; one compact row
//! per modem (key, state, current partition, %, rate, ETA, attempts, outcome), scrolled so the
//! selected row stays in view and marked `▶` as well as highlighted (it reads the same without
//! colour); and a pane for the selected modem: what it does now, its last lines, and at the end
//! its verdict or error as what / why / what next. When the run ended, where its summary went.
//! Fits 80×24 with sixteen modems (twelve rows in view).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget, Wrap};

use crate::cli::output::{bytes, rate};
use crate::engine::station::{DeviceState, Outcome};

use super::super::model::{RowPhase, StationRow, StationView};
use super::super::station::outcome_word;
use super::partitions::first_row;
use super::{cut, dur, eta, file_name, key_line, overlay_box, Ctx};

/// Rows the selected modem's pane gets at least (its title included).
const PANE_MIN: u16 = 6;

/// Column widths of a modem row (after the 2-column marker).
const KEY_W: usize = 12;
const STATE_W: usize = 12;
const STEP_W: usize = 10;

fn state_word(r: &StationRow, t: &super::super::theme::Theme) -> (String, Style) {
    match &r.phase {
        RowPhase::Found => ("found".into(), t.dim),
        RowPhase::Active(DeviceState::Flashing) => ("flashing".into(), t.ok),
        RowPhase::Active(s) => (s.word().into(), Style::new()),
        RowPhase::Finished(row) => (
            outcome_word(row.outcome).into(),
            match row.outcome {
                Outcome::Verified => t.ok,
                Outcome::Failed => t.bad,
                _ => t.warn,
            },
        ),
    }
}

fn row_line<'a>(r: &StationRow, selected: bool, width: u16, ctx: &Ctx) -> Line<'a> {
    let t = &ctx.t;
    let (state, state_style) = state_word(r, t);
    let step = r.step.as_deref().unwrap_or(match r.phase {
        RowPhase::Finished(_) => "",
        _ if r.overall >= 1.0 => "written",
        _ => "—",
    });
    let pct = if r.total_bytes > 0 || r.finished().is_some() {
        let written = r
            .finished()
            .is_some_and(|f| matches!(f.outcome, Outcome::Verified | Outcome::NotVerified));
        let frac = if written { 1.0 } else { r.overall };
        format!("{:>3.0}%", (frac * 100.0).floor())
    } else {
        "  –".into()
    };
    let speed = if r.writing() && r.bytes_per_s > 0.0 {
        rate(r.bytes_per_s)
    } else {
        String::new()
    };
    let left = r.eta_s().map(eta).unwrap_or_default();
    let tries = if r.attempts > 0 {
        r.attempts.to_string()
    } else {
        String::new()
    };
    let outcome = match &r.phase {
        RowPhase::Finished(row) if row.outcome == Outcome::Verified => {
            format!("in {}", dur(row.duration_ms))
        }
        RowPhase::Finished(row) => row.detail.clone(),
        RowPhase::Active(DeviceState::Flashing) => String::new(),
        _ => r.detail.clone(),
    };
    let fixed = 2 + KEY_W + 1 + STATE_W + 1 + STEP_W + 1 + 4 + 1 + 10 + 1 + 5 + 1 + 3 + 1;
    let rest = (width as usize).saturating_sub(fixed);
    let spans = vec![
        Span::raw(if selected { "▶ " } else { "  " }),
        Span::raw(format!("{:<KEY_W$} ", cut(&r.key, KEY_W))),
        Span::styled(format!("{:<STATE_W$}", cut(&state, STATE_W)), state_style),
        Span::raw(format!(
            " {:<STEP_W$} {pct} {speed:>10} {left:>5} {tries:>3} ",
            cut(step, STEP_W)
        )),
        Span::styled(cut(&outcome, rest), t.dim),
    ];
    let line = Line::from(spans);
    if selected {
        line.style(t.selected)
    } else {
        line
    }
}

/// The counts line: `3 flashing · 1 checking · 4 verified · 0 failed · 8 waiting · 12.1 MB/s`.
fn counts_line<'a>(st: &StationView, ctx: &Ctx) -> Line<'a> {
    let t = &ctx.t;
    let c = st.counts();
    let mut spans = vec![Span::raw(" ")];
    let mut part = |n: usize, what: &'static str, style: Style| {
        if spans.len() > 1 {
            spans.push(Span::styled(" · ", t.dim));
        }
        spans.push(Span::styled(format!("{n} {what}"), style));
    };
    part(c.flashing, "flashing", Style::new());
    part(c.checking, "checking", Style::new());
    part(c.verified, "verified", t.ok);
    part(
        c.failed,
        "failed",
        if c.failed > 0 { t.bad } else { Style::new() },
    );
    part(c.waiting, "waiting", Style::new());
    if st.running() {
        spans.push(Span::styled(" · ", t.dim));
        spans.push(Span::raw(rate(st.bytes_per_s())));
    }
    Line::from(spans)
}

/// The lines under the title: counts while it runs; the outcome and the summary's files at
/// the end; why it could not run.
fn info_lines<'a>(st: &StationView, ctx: &Ctx, width: u16) -> Vec<Line<'a>> {
    let t = &ctx.t;
    if let Some(p) = &st.problem {
        return vec![Line::from(vec![
            Span::styled(" COULD NOT RUN ", t.banner_bad),
            Span::raw(format!(" {}", cut(&p.what, width as usize - 16))),
        ])];
    }
    let Some(done) = &st.done else {
        if st.rows.is_empty() {
            return vec![Line::styled(
                format!(
                    " Looking for the {} modems on their buses (each bus is read until it is quiet)…",
                    st.asked
                ),
                t.dim,
            )];
        }
        return vec![counts_line(st, ctx)];
    };
    let s = &done.summary;
    let all = s.verified == s.devices && s.devices > 0;
    let banner = if all {
        Span::styled(" ALL VERIFIED ", t.banner_ok)
    } else if st.stop_requested {
        Span::styled(" STOPPED ", t.banner_warn)
    } else {
        Span::styled(" NOT ALL VERIFIED ", t.banner_bad)
    };
    let files = done.files();
    let folder = done.folder.display().to_string();
    let room = (width as usize).saturating_sub(10 + 30);
    let folder = if folder.chars().count() > room {
        let tail: String = folder
            .chars()
            .rev()
            .take(room.saturating_sub(1))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    } else {
        folder
    };
    vec![
        Line::from(vec![
            Span::raw(" "),
            banner,
            Span::raw(format!(
                " {} of {} verified · {} written · {}",
                s.verified,
                s.devices,
                bytes(s.bytes),
                dur(s.duration_ms)
            )),
        ]),
        Line::from(vec![
            Span::styled(" summary ", t.dim),
            Span::raw(format!(
                "{folder}/{{{},{}}}",
                file_name(&files[0]),
                file_name(&files[1])
            )),
        ]),
    ]
}

/// The selected modem's pane: now, then its last lines; at the end what / why / next.
fn pane_lines<'a>(r: &StationRow, ctx: &Ctx, height: usize) -> Vec<Line<'a>> {
    let t = &ctx.t;
    let label = |s: &'static str| Span::styled(format!("{s:<6}"), t.dim);
    let mut top: Vec<Line> = Vec::new();
    match &r.phase {
        RowPhase::Finished(row) => {
            let (what_style, word) = (state_word(r, t).1, outcome_word(row.outcome));
            let problem = r
                .problem
                .as_ref()
                .filter(|_| row.outcome != Outcome::Verified);
            top.push(Line::from(vec![
                label("what"),
                Span::styled(word, what_style),
                Span::raw(format!(
                    ": {}",
                    problem.map_or(row.detail.as_str(), |p| p.what.as_str())
                )),
            ]));
            let why = match (row.outcome, problem) {
                (_, Some(p)) => p.why.clone(),
                (Outcome::Verified, None) => format!(
                    "written ({} in {}, {} attempt(s)), back in normal mode and asked over AT",
                    bytes(row.bytes),
                    dur(row.duration_ms),
                    row.attempts
                ),
                _ => row.detail.clone(),
            };
            top.push(Line::from(vec![label("why"), Span::raw(why)]));
            let next = row
                .next
                .clone()
                .or_else(|| problem.map(|p| p.next.clone()))
                .unwrap_or_else(|| {
                    if row.outcome == Outcome::Verified {
                        "nothing: this modem is done".into()
                    } else {
                        "see its log, then run the station again for it".into()
                    }
                });
            top.push(Line::from(vec![label("next"), Span::raw(next)]));
        }
        RowPhase::Active(DeviceState::Flashing) if r.step.is_some() => {
            let step = r.step.as_deref().unwrap_or("");
            let mut text = format!("writing {step}");
            if r.step_bytes > 0 {
                text.push_str(&format!(
                    " {} of {}",
                    bytes(r.step_done),
                    bytes(r.step_bytes)
                ));
            }
            text.push_str(&format!(
                " (step {}/{})",
                r.step_index + 1,
                r.steps.max(r.step_index + 1)
            ));
            text.push_str(&format!(" · overall {:.0}%", (r.overall * 100.0).floor()));
            if r.bytes_per_s > 0.0 {
                text.push_str(&format!(" · {}", rate(r.bytes_per_s)));
            }
            if let Some(s) = r.eta_s() {
                text.push_str(&format!(" · ETA {}", eta(s)));
            }
            top.push(Line::from(vec![label("now"), Span::raw(text)]));
        }
        RowPhase::Active(s) => top.push(Line::from(vec![
            label("now"),
            Span::raw(if r.detail.is_empty() {
                s.word().to_string()
            } else {
                format!("{}: {}", s.word(), r.detail)
            }),
        ])),
        RowPhase::Found => top.push(Line::from(vec![
            label("now"),
            Span::raw("taken by the run; its job starts"),
        ])),
    }
    let room = height.saturating_sub(top.len());
    let skip = r.lines.len().saturating_sub(room);
    for (i, l) in r.lines.iter().skip(skip).enumerate() {
        top.push(Line::from(vec![
            if i == 0 {
                label("log")
            } else {
                Span::raw("      ")
            },
            Span::raw(l.clone()),
        ]));
    }
    top
}

/// Draw the station view into `area` (the whole screen).
pub(crate) fn render(ctx: &Ctx, st: &StationView, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    super::header(ctx, Rect::new(area.x, area.y, area.width, 1), buf);
    let info = info_lines(st, ctx, area.width);
    let info_h = info.len() as u16;
    let top = 1 + 1 + info_h + 1;
    let avail = area.height.saturating_sub(top + 1);
    let n = st.rows.len();
    let table_h = (n.max(1) as u16).min(avail.saturating_sub(PANE_MIN));
    let pane_h = avail - table_h;
    let mut y = area.y + 1;

    // Title rule with the package and the modem count; "rows a–b of n" when scrolled.
    let title = format!(
        "Station · {} · {} modem{} · {} ",
        file_name(&st.package),
        n.max(st.asked),
        if n.max(st.asked) == 1 { "" } else { "s" },
        eta(st.elapsed_ms(ctx.m.now_ms) as f64 / 1000.0)
    );
    let rule = Rect::new(area.x, y, area.width, 1);
    Block::new()
        .borders(Borders::TOP)
        .border_style(t.border_focus)
        .title(Span::styled(title.clone(), t.title))
        .render(rule, buf);
    let visible = table_h as usize;
    let first = first_row(n, st.selected_index().unwrap_or(0), visible);
    if n > visible {
        let more = format!(" rows {}–{} of {} ", first + 1, (first + visible).min(n), n);
        let w = more.chars().count() as u16;
        if area.width > w + 2 + title.chars().count() as u16 {
            Line::styled(more, t.dim).render(Rect::new(area.right() - w - 1, y, w, 1), buf);
        }
    }
    y += 1;
    for l in info {
        l.render(Rect::new(area.x, y, area.width, 1), buf);
        y += 1;
    }
    Line::styled(
        format!(
            "  {:<KEY_W$} {:<STATE_W$} {:<STEP_W$} {:>4} {:>10} {:>5} {:>3} {}",
            "modem", "state", "step", "done", "rate", "ETA", "try", "outcome"
        ),
        t.dim,
    )
    .render(Rect::new(area.x, y, area.width, 1), buf);
    y += 1;
    let selected = st.selected_index();
    for (i, r) in st.rows.iter().enumerate().skip(first).take(visible) {
        row_line(r, selected == Some(i), area.width, ctx)
            .render(Rect::new(area.x, y, area.width, 1), buf);
        y += 1;
    }
    y = area.y + top + table_h;

    // The selected modem's pane.
    if pane_h > 0 {
        let pane = Rect::new(area.x, y, area.width, pane_h);
        let (title, body) = match st.selected_row() {
            Some(r) => {
                let mut title = format!("{} ", r.key);
                if !r.location.is_empty() {
                    title.push_str(&format!("· {} · {} ", r.location, r.usb_id));
                }
                if let Some(l) = &r.log {
                    title.push_str(&format!("· log {} ", file_name(l)));
                }
                (title, pane_lines(r, ctx, pane_h.saturating_sub(1) as usize))
            }
            None => match &st.problem {
                Some(p) => (
                    "The station run could not start ".to_string(),
                    vec![
                        Line::from(vec![
                            Span::styled("what  ", t.dim),
                            Span::raw(p.what.clone()),
                        ]),
                        Line::from(vec![
                            Span::styled("why   ", t.dim),
                            Span::raw(p.why.clone()),
                        ]),
                        Line::from(vec![
                            Span::styled("next  ", t.dim),
                            Span::raw(p.next.clone()),
                        ]),
                    ],
                ),
                None => ("Modem ".to_string(), vec![]),
            },
        };
        let block = Block::new()
            .borders(Borders::TOP)
            .border_style(t.border)
            .title(Span::styled(cut(&title, area.width as usize - 2), t.title));
        let inner = block.inner(pane);
        block.render(pane, buf);
        Paragraph::new(body)
            .wrap(Wrap { trim: false })
            .render(inner, buf);
    }

    // The keys that matter now.
    let keys: Vec<(&str, &str)> = if !st.running() {
        vec![
            ("↑↓/jk", "select"),
            ("Esc", "back to the devices"),
            ("q", "quit"),
        ]
    } else if st.stop_requested {
        vec![
            ("↑↓/jk", "select"),
            ("", "stopping every modem at its next safe point…"),
            ("q", "quit when stopped"),
        ]
    } else {
        vec![
            ("↑↓/jk", "select"),
            ("c", "stop all"),
            ("?", "help"),
            ("q", "quit (asks first)"),
        ]
    };
    let status = Rect::new(area.x, area.bottom().saturating_sub(1), area.width, 1);
    let line = match &ctx.m.notice {
        Some(n) if st.running() => Line::styled(format!(" {n}"), t.warn),
        _ => key_line(t, &keys),
    };
    line.render(status, buf);
}

/// The confirmation before a station run: how many modems, which package, what happens.
pub(crate) fn confirm(ctx: &Ctx, count: usize, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let key = |k: &'static str| Span::styled(k, t.key);
    let mut names: Vec<String> = ctx
        .m
        .edl_present()
        .iter()
        .map(|d| {
            d.class
                .edl_serial
                .as_ref()
                .map(|s| format!("SN:{}", s.to_ascii_uppercase()))
                .unwrap_or_else(|| d.device.location())
        })
        .collect();
    names.sort();
    let shown = if names.len() > 4 {
        format!("{} and {} more", names[..4].join(", "), names.len() - 4)
    } else {
        names.join(", ")
    };
    let package = ctx
        .m
        .config
        .package
        .as_deref()
        .map(file_name)
        .unwrap_or_default();
    let lines = vec![
        Line::from(vec![Span::styled("package   ", t.dim), Span::raw(package)]),
        Line::from(vec![
            Span::styled("modems    ", t.dim),
            Span::raw(format!("{count} in download mode (9008): {shown}")),
        ]),
        Line::raw(""),
        Line::raw(
            "The package is checked once; then each modem is flashed by its own job, found \
             again as itself after every reset, and verified over AT when it comes back. One \
             summary (JSON and CSV) records every modem.",
        ),
        Line::raw(""),
        Line::from(vec![
            Span::raw("press "),
            key("y"),
            Span::raw(format!(" to flash all {count}, ")),
            key("Esc"),
            Span::raw(" to go back"),
        ]),
    ];
    let w = area.width.saturating_sub(4).min(76);
    let h = 2 + super::wrapped_height(&lines, w.saturating_sub(2));
    let inner = overlay_box(
        t,
        &format!("Flash {count} modems at once?"),
        area,
        w,
        h,
        buf,
    );
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .render(inner, buf);
}

/// The confirmation before every modem of the run is stopped.
pub(crate) fn confirm_stop(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let key = |k: &'static str| Span::styled(k, t.key);
    let running = ctx
        .m
        .station
        .as_ref()
        .map(|s| s.rows.iter().filter(|r| r.finished().is_none()).count())
        .unwrap_or(0);
    let lines = vec![
        Line::raw(format!(
            "{running} modem(s) are still being worked on. Each stops at its next safe point: \
             a partition being written is finished first."
        )),
        Line::raw(""),
        Line::raw(
            "A modem stopped before its last step is half-written; in download mode (9008) it \
             can be flashed again. The summary says which.",
        ),
        Line::raw(""),
        Line::from(vec![
            Span::raw("press "),
            key("y"),
            Span::raw(" to stop them all, "),
            key("Esc"),
            Span::raw(" to keep going"),
        ]),
    ];
    let w = area.width.saturating_sub(4).min(72);
    let h = 2 + super::wrapped_height(&lines, w.saturating_sub(2));
    let inner = overlay_box(t, "Stop the station run?", area, w, h, buf);
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .render(inner, buf);
}
