//! The console's styles: a colour theme and a monochrome one (`NO_COLOR`, `--color never`).
//!
//! Rule for both: colour never carries information alone. Every state that matters is also a
//! word or a glyph on screen ("LOOP", "gone", "FAILED", `▶`, `█`/`·`), and the monochrome theme
//! tells emphasis apart with modifiers only (bold, reversed, underlined), so a screen read
//! without colour says the same thing.

use ratatui::style::{Color, Modifier, Style};

use super::model::Config;

/// Every style the views use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    /// True for the colour theme.
    pub color: bool,
    /// The header bar.
    pub header: Style,
    /// The program name in the header.
    pub brand: Style,
    /// Pane titles.
    pub title: Style,
    /// Pane borders; `border_focus` for the pane that has the keyboard (also a thick border).
    pub border: Style,
    pub border_focus: Style,
    /// Secondary text (units, labels, hints).
    pub dim: Style,
    /// A key name in a hint (`Enter`, `f`).
    pub key: Style,
    /// The selected device row.
    pub selected: Style,
    /// A device that left the bus (the row also says "gone").
    pub gone: Style,
    /// Mode words in the device list (the word is always written).
    pub mode_edl: Style,
    pub mode_crash: Style,
    pub mode_normal: Style,
    pub mode_other: Style,
    /// The "LOOP 14.0 s" badge.
    pub loop_badge: Style,
    /// "suspected" / "loop stopped".
    pub loop_soft: Style,
    /// Good, caution and bad words ("done", "REFUSED", "FAILED").
    pub ok: Style,
    pub warn: Style,
    pub bad: Style,
    /// The current stage in the workflow title.
    pub stage_current: Style,
    pub stage_done: Style,
    /// The partition row being written.
    pub active_row: Style,
    /// Filled part of progress bars.
    pub gauge: Style,
    /// Timeline strip: present, predicted and the "now" mark.
    pub strip_present: Style,
    pub strip_future: Style,
    pub strip_now: Style,
    /// Pin screen big text: waiting, "RELEASE NOW", uploaded.
    pub big_wait: Style,
    pub big_seen: Style,
    pub big_done: Style,
    /// Outcome banners.
    pub banner_ok: Style,
    pub banner_bad: Style,
    pub banner_warn: Style,
    /// Overlay frames.
    pub overlay: Style,
}

impl Theme {
    /// The theme the configuration asks for.
    pub fn for_config(config: &Config) -> Theme {
        if config.color {
            Theme::colour()
        } else {
            Theme::mono()
        }
    }

    /// Colours, on a terminal's own background.
    pub fn colour() -> Theme {
        let b = Modifier::BOLD;
        Theme {
            color: true,
            header: Style::new().fg(Color::Black).bg(Color::Cyan),
            brand: Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(b),
            title: Style::new().fg(Color::Cyan).add_modifier(b),
            border: Style::new().fg(Color::DarkGray),
            border_focus: Style::new().fg(Color::Cyan),
            dim: Style::new().fg(Color::Gray),
            key: Style::new().fg(Color::Yellow).add_modifier(b),
            selected: Style::new()
                .bg(Color::Blue)
                .fg(Color::White)
                .add_modifier(b),
            gone: Style::new().fg(Color::DarkGray),
            mode_edl: Style::new().fg(Color::LightGreen).add_modifier(b),
            mode_crash: Style::new().fg(Color::LightMagenta).add_modifier(b),
            mode_normal: Style::new().fg(Color::LightBlue),
            mode_other: Style::new().fg(Color::LightYellow),
            loop_badge: Style::new().fg(Color::White).bg(Color::Red).add_modifier(b),
            loop_soft: Style::new().fg(Color::Yellow),
            ok: Style::new().fg(Color::LightGreen).add_modifier(b),
            warn: Style::new().fg(Color::Yellow).add_modifier(b),
            bad: Style::new().fg(Color::LightRed).add_modifier(b),
            stage_current: Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(b),
            stage_done: Style::new().fg(Color::Green),
            active_row: Style::new()
                .fg(Color::Black)
                .bg(Color::Cyan)
                .add_modifier(b),
            gauge: Style::new().fg(Color::Cyan),
            strip_present: Style::new().fg(Color::LightGreen),
            strip_future: Style::new().fg(Color::Yellow),
            strip_now: Style::new().fg(Color::White).add_modifier(b),
            big_wait: Style::new().fg(Color::Yellow).add_modifier(b),
            big_seen: Style::new()
                .fg(Color::Black)
                .bg(Color::LightGreen)
                .add_modifier(b),
            big_done: Style::new().fg(Color::LightCyan).add_modifier(b),
            banner_ok: Style::new()
                .fg(Color::Black)
                .bg(Color::LightGreen)
                .add_modifier(b),
            banner_bad: Style::new().fg(Color::White).bg(Color::Red).add_modifier(b),
            banner_warn: Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(b),
            overlay: Style::new().fg(Color::White),
        }
    }

    /// No colours at all: emphasis through bold, reversed and underlined only.
    pub fn mono() -> Theme {
        let n = Style::new();
        let b = Modifier::BOLD;
        let r = Modifier::REVERSED;
        let u = Modifier::UNDERLINED;
        Theme {
            color: false,
            header: n.add_modifier(r),
            brand: n.add_modifier(r | b),
            title: n.add_modifier(b),
            border: n,
            border_focus: n.add_modifier(b),
            dim: n,
            key: n.add_modifier(b),
            selected: n.add_modifier(r),
            gone: n.add_modifier(Modifier::DIM),
            mode_edl: n.add_modifier(b),
            mode_crash: n.add_modifier(b | u),
            mode_normal: n,
            mode_other: n.add_modifier(u),
            loop_badge: n.add_modifier(r | b),
            loop_soft: n.add_modifier(u),
            ok: n.add_modifier(b),
            warn: n.add_modifier(b | u),
            bad: n.add_modifier(b | r),
            stage_current: n.add_modifier(r | b),
            stage_done: n,
            active_row: n.add_modifier(r | b),
            gauge: n.add_modifier(b),
            strip_present: n.add_modifier(b),
            strip_future: n,
            strip_now: n.add_modifier(b),
            big_wait: n.add_modifier(b),
            big_seen: n.add_modifier(r | b),
            big_done: n.add_modifier(b),
            banner_ok: n.add_modifier(r | b),
            banner_bad: n.add_modifier(r | b),
            banner_warn: n.add_modifier(r | b | u),
            overlay: n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monochrome_theme_uses_no_colour() {
        let t = Theme::mono();
        let all = [
            t.header,
            t.brand,
            t.title,
            t.border,
            t.border_focus,
            t.dim,
            t.key,
            t.selected,
            t.gone,
            t.mode_edl,
            t.mode_crash,
            t.mode_normal,
            t.mode_other,
            t.loop_badge,
            t.loop_soft,
            t.ok,
            t.warn,
            t.bad,
            t.stage_current,
            t.stage_done,
            t.active_row,
            t.gauge,
            t.strip_present,
            t.strip_future,
            t.strip_now,
            t.big_wait,
            t.big_seen,
            t.big_done,
            t.banner_ok,
            t.banner_bad,
            t.banner_warn,
            t.overlay,
        ];
        for s in all {
            assert_eq!(s.fg, None, "{s:?}");
            assert_eq!(s.bg, None, "{s:?}");
        }
        // The states that must stand out still differ from plain text.
        for s in [t.selected, t.loop_badge, t.bad, t.active_row, t.big_seen] {
            assert!(s.add_modifier.contains(Modifier::REVERSED), "{s:?}");
        }
    }

    #[test]
    fn config_picks_the_theme() {
        let mut c = Config::default();
        assert!(Theme::for_config(&c).color);
        c.color = false;
        assert_eq!(Theme::for_config(&c), Theme::mono());
    }
}
