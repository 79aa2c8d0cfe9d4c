//! The log pane: tui-logger's widget over the process-wide log buffer (levels shown, errors and
//! warnings emphasised), titled with the log file.
//!
//! Scrolling. `model.log_scroll` counts lines back from the end. tui-logger keeps its scroll
//! position in a `TuiWidgetState` that moves by "page" events relative to the previous draw; a
//! view is a pure function of the model, so each frame starts from a fresh state following the
//! end and replays page-up steps (each moves about half the pane) until `log_scroll` lines are
//! covered or the top is reached. That costs one extra draw of this pane per step, only while
//! scrolled back (at most [`MAX_PAGE_STEPS`]).
//!
//! Without a logger (tests, or before the runtime set one up) tui-logger's buffer is empty: the
//! pane draws its title and "no log lines yet", and never panics.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::text::Line;
use ratatui::widgets::Widget;
use tui_logger::{TuiLoggerLevelOutput, TuiLoggerWidget, TuiWidgetEvent, TuiWidgetState};

use super::super::theme::Theme;
use super::Ctx;

/// Most page-up steps replayed per frame.
pub const MAX_PAGE_STEPS: u16 = 64;

fn widget<'a>(t: &Theme, state: &TuiWidgetState) -> TuiLoggerWidget<'a> {
    TuiLoggerWidget::default()
        .style_error(t.bad)
        .style_warn(t.warn)
        .style_info(ratatui::style::Style::new())
        .style_debug(t.dim)
        .style_trace(t.dim)
        .output_separator(' ')
        .output_timestamp(Some("%H:%M:%S".into()))
        .output_level(Some(TuiLoggerLevelOutput::Long))
        .output_target(false)
        .output_file(false)
        .output_line(false)
        .state(state)
}

fn blank(b: &Buffer) -> bool {
    b.content.iter().all(|c| c.symbol() == " ")
}

pub(crate) fn render(ctx: &Ctx, focused: bool, area: Rect, buf: &mut Buffer) {
    let t = &ctx.t;
    let scroll = ctx.m.log_scroll;
    let mut title = match &ctx.m.config.log_file {
        Some(p) => format!("Log → {}", p.display()),
        None => "Log (no log file)".to_string(),
    };
    if scroll > 0 {
        title.push_str(&format!(" · {scroll} lines back, PgDn to follow"));
    }
    let block = ctx.pane(&title, focused);
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.is_empty() {
        return;
    }
    let state = TuiWidgetState::new();
    let mut shown = Buffer::empty(inner);
    widget(t, &state).render(inner, &mut shown);
    if scroll > 0 && !blank(&shown) {
        let half = (inner.height / 2).max(1);
        let steps = scroll.div_ceil(half).min(MAX_PAGE_STEPS);
        let bottom = shown.clone();
        for _ in 0..steps {
            state.transition(TuiWidgetEvent::PrevPageKey);
            let mut next = Buffer::empty(inner);
            widget(t, &state).render(inner, &mut next);
            // At the top tui-logger falls back to following the end: stop one step before.
            if next == bottom || next == shown {
                break;
            }
            shown = next;
        }
    }
    if blank(&shown) {
        Line::styled("no log lines yet", t.dim).render(inner, buf);
    } else {
        buf.merge(&shown);
    }
}
