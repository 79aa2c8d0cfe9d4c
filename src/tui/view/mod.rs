//! Views: pure functions of the model, one file per pane. [`view`] lays the screen out; nothing
//! here changes the model, touches a device or reads a clock (times come from `model.now_ms`).
//!
//! Layout. Below 80×24 the screen says it is too small. From 80×24 a compact stack (header,
//! devices, timeline or partitions, workflow, log, status line) with one-line pane titles; from
//! 120×36 panes get full borders, devices and the timeline sit beside the workflow, and the
//! timeline and workflow say more. The pin-bridging screen replaces the panes while the person
//! holds a wire; overlays (help, confirmations) cover whatever is below.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Borders, Clear, Paragraph, Widget, Wrap};
use ratatui::Frame;

use crate::device::bootloop::LoopStatus;
use crate::device::classify::{Classification, Mode};
use crate::device::monitor::DeviceView;

use super::model::{Focus, Model, Overlay, Stage};
use super::theme::Theme;

pub mod bigtext;
mod confirm;
mod devices;
mod help;
mod log;
mod partitions;
mod pins;
mod station;
mod timeline;
mod workflow;

pub use pins::{showing as pin_screen_showing, PIN_SCREEN_LINGER_MS};

/// The smallest screen the console draws its panes on.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;
/// From this size on, the roomy layout.
pub const WIDE_WIDTH: u16 = 120;
pub const WIDE_HEIGHT: u16 = 36;

/// What every pane reads, computed once per frame.
pub(crate) struct Ctx<'a> {
    pub m: &'a Model,
    pub t: Theme,
    /// `model.devices()`, once.
    pub devices: Vec<DeviceView>,
    /// The roomy layout.
    pub wide: bool,
}

impl<'a> Ctx<'a> {
    fn new(m: &'a Model, area: Rect) -> Ctx<'a> {
        Ctx {
            m,
            t: Theme::for_config(&m.config),
            devices: m.devices(),
            wide: area.width >= WIDE_WIDTH && area.height >= WIDE_HEIGHT,
        }
    }

    /// The selected device.
    pub fn selected(&self) -> Option<&DeviceView> {
        let id = self.m.selected?;
        self.devices.iter().find(|d| d.id == id)
    }

    /// The device the flow is about (else the selected one).
    pub fn flow_device(&self) -> Option<&DeviceView> {
        match self.m.flow.device {
            Some(id) => self.devices.iter().find(|d| d.id == id),
            None => self.selected(),
        }
    }

    /// A pane: a one-line title rule in the compact layout, a rounded box in the roomy one;
    /// the pane with the keyboard gets a thick border and a `▸` before its title.
    pub fn pane<'t>(&self, title: &str, focused: bool) -> Block<'t> {
        let mut spans = Vec::with_capacity(3);
        if focused {
            spans.push(Span::styled("▸ ", self.t.border_focus));
        }
        spans.push(Span::styled(format!("{title} "), self.t.title));
        let block = Block::new()
            .title(Line::from(spans))
            .border_style(if focused {
                self.t.border_focus
            } else {
                self.t.border
            })
            .border_type(if focused {
                BorderType::Thick
            } else {
                BorderType::Rounded
            });
        if self.wide {
            block.borders(Borders::ALL)
        } else {
            block.borders(Borders::TOP)
        }
    }
}

/// Draw the whole screen.
pub fn view(model: &Model, frame: &mut Frame) {
    let area = frame.area();
    render(model, area, frame.buffer_mut());
}

/// Draw the model into a buffer region (what [`view`] does with the frame).
pub fn render(model: &Model, area: Rect, buf: &mut Buffer) {
    let area = area.intersection(buf.area);
    if model.headless || area.is_empty() {
        return;
    }
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(area, &Theme::for_config(&model.config), buf);
        return;
    }
    let ctx = Ctx::new(model, area);
    if let Some(st) = &model.station {
        station::render(&ctx, st, area, buf);
    } else if pins::showing(model) {
        pins::render(&ctx, area, buf);
    } else {
        panes(&ctx, area, buf);
    }
    match &model.overlay {
        Overlay::None => {}
        Overlay::Help => help::render(&ctx, area, buf),
        Overlay::ConfirmFlash => confirm::flash(&ctx, area, buf),
        Overlay::OverrideInput { typed } => confirm::override_input(&ctx, typed, area, buf),
        Overlay::ConfirmQuit => confirm::quit(&ctx, area, buf),
        Overlay::ConfirmCancel => confirm::cancel(&ctx, area, buf),
        Overlay::ConfirmSwitch => confirm::switch(&ctx, area, buf),
        Overlay::ConfirmStation { count } => station::confirm(&ctx, *count, area, buf),
        Overlay::ConfirmStationStop => station::confirm_stop(&ctx, area, buf),
    }
}

fn too_small(area: Rect, t: &Theme, buf: &mut Buffer) {
    let text = vec![
        Line::styled(
            format!("terminal too small: need {MIN_WIDTH}×{MIN_HEIGHT}"),
            t.warn,
        ),
        Line::raw(format!("now {}×{}", area.width, area.height)),
        Line::raw("make the window larger; q quits"),
    ];
    let h = (text.len() as u16).min(area.height);
    let y = area.y + area.height.saturating_sub(h) / 2;
    Paragraph::new(text)
        .centered()
        .wrap(Wrap { trim: true })
        .render(
            Rect::new(area.x, y, area.width, area.height - (y - area.y)),
            buf,
        );
}

fn panes(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let [header_area, body, status_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    header(ctx, header_area, buf);
    status_line(ctx, status_area, buf);
    let n_dev = ctx.devices.len().max(1) as u16;
    let flash_rows = ctx.m.flash.as_ref().map(|f| f.rows.len() as u16);
    let log_focus = ctx.m.focus == Focus::Log;
    if ctx.wide {
        // Devices across the top, timeline beside the workflow, then partitions and the log.
        let dev_h = (3 + n_dev.min(8)).min(body.height / 4);
        let part_h = flash_rows
            .map(|r| (r + 4).min(body.height.saturating_sub(dev_h + 12 + 6)))
            .unwrap_or(0);
        let remaining = body.height.saturating_sub(dev_h + part_h);
        let mid_h = if part_h > 0 {
            remaining.saturating_sub(8).max(12.min(remaining))
        } else {
            (remaining * 3 / 5).max(12.min(remaining))
        };
        let [dev_area, mid, part, log_area] = Layout::vertical([
            Constraint::Length(dev_h),
            Constraint::Length(mid_h),
            Constraint::Length(part_h),
            Constraint::Min(0),
        ])
        .areas(body);
        let [tl_area, wf_area] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(mid);
        devices::render(ctx, dev_area, buf);
        timeline::render(ctx, tl_area, buf);
        let wf = workflow::lines(ctx, wf_area.width.saturating_sub(2));
        workflow::render(ctx, wf, wf_area, buf);
        if part_h > 0 {
            partitions::render(ctx, part, buf);
        }
        log::render(ctx, log_focus, log_area, buf);
    } else {
        // Explicit heights, so what matters keeps its room at 80×24: the workflow gets what
        // its text needs, taken from the log, then the timeline, then the partitions.
        let wf = workflow::lines(ctx, body.width);
        let wf_need = 1 + wrapped_height(&wf, body.width);
        let dev_h = 1 + n_dev.min(4);
        let mut log_h = 4u16;
        let mut tl_h = match (flash_rows, ctx.devices.is_empty()) {
            (None, false) => 5u16,
            _ => 0,
        };
        let mut part_h = flash_rows.map_or(0, |r| r + 2);
        let fixed = |log_h: u16, tl_h: u16, part_h: u16| dev_h + log_h + tl_h + part_h;
        let room = |log_h, tl_h, part_h| body.height.saturating_sub(fixed(log_h, tl_h, part_h));
        if room(log_h, tl_h, part_h) < wf_need && log_h > 2 {
            log_h = 2;
        }
        if room(log_h, tl_h, part_h) < wf_need && tl_h > 3 {
            tl_h = 3;
        }
        while room(log_h, tl_h, part_h) < wf_need && part_h > 5 {
            part_h -= 1;
        }
        // The workflow never gets less than 6 rows (partitions give way).
        while room(log_h, tl_h, part_h) < 6 && part_h > 3 {
            part_h -= 1;
        }
        let wf_h = room(log_h, tl_h, part_h);
        let [dev_area, tl_area, wf_area, part_area, log_area] = Layout::vertical([
            Constraint::Length(dev_h),
            Constraint::Length(tl_h),
            Constraint::Length(wf_h),
            Constraint::Length(part_h),
            Constraint::Min(0),
        ])
        .areas(body);
        devices::render(ctx, dev_area, buf);
        if tl_h > 0 {
            timeline::render(ctx, tl_area, buf);
        }
        workflow::render(ctx, wf, wf_area, buf);
        if part_h > 0 {
            partitions::render(ctx, part_area, buf);
        }
        log::render(ctx, log_focus, log_area, buf);
    }
}

/// Rows `lines` take when wrapped at `width` (an estimate that errs on the generous side:
/// word wrapping loses up to a word per row).
pub(crate) fn wrapped_height(lines: &[Line], width: u16) -> u16 {
    let w = width.max(1) as usize;
    lines
        .iter()
        .map(|l| {
            let n = l.width();
            if n <= w {
                1
            } else {
                (n + n / 8).div_ceil(w)
            }
        })
        .sum::<usize>()
        .min(u16::MAX as usize) as u16
}

fn header(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    buf.set_style(area, t.header);
    let mut left = vec![
        Span::styled(" qrescue ", t.brand),
        Span::styled(format!(" {} ", ctx.m.config.source), t.header),
    ];
    if let Some(demo) = &ctx.m.config.demo {
        left.push(Span::styled(
            format!("│ demo: {} ", demo.scenario),
            t.header,
        ));
    }
    let left = Line::from(left);
    let used = left.width() as u16;
    left.render(area, buf);
    let right = Line::from(vec![
        Span::styled("?", t.header.add_modifier(Modifier::BOLD)),
        Span::styled(" help  ", t.header),
        Span::styled("q", t.header.add_modifier(Modifier::BOLD)),
        Span::styled(" quit ", t.header),
    ]);
    let w = right.width() as u16;
    if area.width >= used + w {
        right.render(Rect::new(area.right() - w, area.y, w, 1), buf);
    }
}

/// The keys that matter now, most important first (the line is cut at the width).
fn status_line(ctx: &Ctx, area: Rect, buf: &mut Buffer) {
    let m = ctx.m;
    let mut keys: Vec<(&str, &str)> = Vec::with_capacity(10);
    match &m.flow.stage {
        Stage::Idle => {
            keys.push(("Enter", "start"));
            if m.station_offer().is_some() {
                keys.push(("A", "flash all in 9008"));
            }
            keys.push(("↑↓/jk", "select"));
        }
        Stage::Checking => keys.push(("Esc", "back")),
        Stage::Refused => {
            if override_offered(m) {
                keys.push(("o", "override"));
            }
            keys.push(("Esc", "back"));
        }
        Stage::Ready => {
            keys.push(("f", "flash"));
            keys.push(("p", "pin screen"));
            keys.push(("Esc", "back"));
        }
        Stage::Armed { .. } => {
            keys.push(("c", "cancel"));
            if m.config.demo.is_some() {
                keys.push(("b", "bridge pins + power-cycle"));
                keys.push(("r", "release"));
            }
        }
        Stage::Flashing { .. } => keys.push(("c", "cancel")),
        Stage::Verifying { .. } => keys.push(("c", "cancel")),
        Stage::Finished(_) => {
            keys.push(("Esc", "back"));
            keys.push(("Enter", "start again"));
        }
    }
    keys.push(("Tab", "focus"));
    keys.push(("PgUp/PgDn", "log"));
    keys.push(("?", "help"));
    keys.push(("q", "quit"));
    key_line(&ctx.t, &keys).render(area, buf);
}

/// `Enter start · f flash` with the keys emphasised.
pub(crate) fn key_line<'a>(t: &Theme, keys: &[(&'a str, &'a str)]) -> Line<'a> {
    let mut spans = Vec::with_capacity(keys.len() * 3 + 1);
    spans.push(Span::raw(" "));
    for (i, (k, what)) in keys.iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" · ", t.dim));
        }
        spans.push(Span::styled(*k, t.key));
        spans.push(Span::raw(format!(" {what}")));
    }
    Line::from(spans)
}

/// The refusal allows a typed override.
pub(crate) fn override_offered(m: &Model) -> bool {
    use crate::engine::prepare::CompatReport;
    m.flow.review.as_ref().is_some_and(|r| {
        matches!(
            &r.compat,
            CompatReport::Refused {
                override_phrase: Some(_),
                ..
            }
        )
    })
}

/// A rectangle of at most `w`×`h`, centred in `area`.
pub(crate) fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

/// An overlay box: cleared, bordered, titled; returns the inner area.
pub(crate) fn overlay_box(
    t: &Theme,
    title: &str,
    area: Rect,
    w: u16,
    h: u16,
    buf: &mut Buffer,
) -> Rect {
    let r = centered(area, w, h);
    Clear.render(r, buf);
    let block = Block::bordered()
        .border_type(BorderType::Double)
        .border_style(t.border_focus)
        .title(Span::styled(format!(" {title} "), t.title))
        .style(t.overlay);
    let inner = block.inner(r);
    block.render(r, buf);
    inner
}

/// `4.2 s`, `1 min 05 s`, `2 h 03 min`.
pub(crate) fn dur(ms: u64) -> String {
    let s = ms / 1000;
    if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// A loop period for a badge: `14 s` from ten seconds on, `5.2 s` below.
pub(crate) fn period(ms: u64) -> String {
    if ms >= 10_000 {
        format!("{} s", (ms + 500) / 1000)
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// An ETA in seconds: `0:42`, `12:05`, `1:02:03`.
pub(crate) fn eta(s: f64) -> String {
    if !s.is_finite() || s < 0.0 {
        return "–".into();
    }
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, (s % 3600) / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The mode as one short word or two (`EDL`, `normal EC25/EG25`) and its style.
pub(crate) fn mode_word(class: &Classification, t: &Theme) -> (String, Style) {
    match &class.mode {
        Mode::Edl => ("EDL".into(), t.mode_edl),
        Mode::CrashDump => ("crash-dump".into(), t.mode_crash),
        Mode::QuectelNormal { model } => (format!("normal {model}"), t.mode_normal),
        Mode::Fastboot => ("fastboot".into(), t.mode_other),
        Mode::Broken { model, .. } => (
            match model {
                Some(m) => format!("broken {m}"),
                None => "broken".into(),
            },
            t.bad,
        ),
        Mode::QualcommDownload { .. } => ("Qualcomm dl".into(), t.mode_other),
        Mode::Unrelated => ("other".into(), t.dim),
    }
}

/// The loop badge: `LOOP 14 s`, `suspected`, `loop stopped`.
pub(crate) fn loop_badge(status: &LoopStatus, t: &Theme) -> Option<(String, Style)> {
    match status {
        LoopStatus::None => None,
        LoopStatus::Suspected { .. } => Some(("suspected".into(), t.loop_soft)),
        LoopStatus::Looping(r) => Some((format!("LOOP {}", period(r.period_ms)), t.loop_badge)),
        LoopStatus::Stopped { .. } => Some(("loop stopped".into(), t.loop_soft)),
    }
}

/// Cut `s` to `max` characters with `…`.
pub(crate) fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else if max == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// The last component of a path as text.
pub(crate) fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(dur(4_200), "4.2 s");
        assert_eq!(dur(65_000), "1 min 05 s");
        assert_eq!(dur(7_380_000), "2 h 03 min");
        assert_eq!(period(14_000), "14 s");
        assert_eq!(period(13_600), "14 s");
        assert_eq!(period(5_200), "5.2 s");
        assert_eq!(eta(42.4), "0:42");
        assert_eq!(eta(3723.0), "1:02:03");
        assert_eq!(eta(f64::NAN), "–");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }

    #[test]
    fn centered_never_leaves_the_area() {
        let a = Rect::new(3, 4, 10, 5);
        let r = centered(a, 40, 40);
        assert_eq!(r, a);
        let r = centered(a, 4, 1);
        assert_eq!(r, Rect::new(6, 6, 4, 1));
    }
}
