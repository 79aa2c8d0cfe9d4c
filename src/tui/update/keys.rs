//! Key presses: overlays take every key first; then the flow's keys, selection, focus and log
//! scrolling.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::tui::model::{Focus, Model, Overlay, Stage};
use crate::tui::msg::{BenchAction, Effect};

use super::flow;
use super::quit;
use super::station;

/// Longest override text kept (the phrases are a sentence).
const MAX_TYPED: usize = 256;

fn is_ctrl_c(key: &KeyEvent) -> bool {
    key.modifiers.contains(KeyModifiers::CONTROL)
        && matches!(key.code, KeyCode::Char('c') | KeyCode::Char('C'))
}

/// `q` or Ctrl-C: leave, unless a flash runs (then explain and ask).
fn request_quit(model: &mut Model, fx: &mut Vec<Effect>) {
    if model.running_job().is_some() {
        model.overlay = Overlay::ConfirmQuit;
    } else {
        quit(model, false, fx);
    }
}

/// One key press.
pub(super) fn on_key(model: &mut Model, key: KeyEvent, fx: &mut Vec<Effect>) {
    model.notice = None;
    let ctrl_c = is_ctrl_c(&key);
    match model.overlay.clone() {
        Overlay::None => {}
        Overlay::Help => {
            model.overlay = Overlay::None;
            if ctrl_c {
                request_quit(model, fx);
            }
            return;
        }
        Overlay::ConfirmFlash => {
            match key.code {
                _ if ctrl_c => {
                    model.overlay = Overlay::None;
                    model.flow.pins_requested = false;
                    request_quit(model, fx);
                }
                KeyCode::Char('y') | KeyCode::Char('Y') => flow::confirm(model, fx),
                KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('N') => {
                    model.overlay = Overlay::None;
                    model.flow.pins_requested = false;
                }
                _ => {}
            }
            return;
        }
        Overlay::OverrideInput { mut typed } => {
            match key.code {
                _ if ctrl_c => {
                    model.overlay = Overlay::None;
                    request_quit(model, fx);
                }
                KeyCode::Esc => model.overlay = Overlay::None,
                KeyCode::Enter => flow::submit_override(model, &typed, fx),
                KeyCode::Backspace => {
                    typed.pop();
                    model.overlay = Overlay::OverrideInput { typed };
                }
                KeyCode::Char(c)
                    if !key
                        .modifiers
                        .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
                        && !c.is_control() =>
                {
                    if typed.chars().count() < MAX_TYPED {
                        typed.push(c);
                    }
                    model.overlay = Overlay::OverrideInput { typed };
                }
                _ => {}
            }
            return;
        }
        Overlay::ConfirmQuit => {
            match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') if !ctrl_c => {
                    model.overlay = Overlay::None;
                    if let Some(job) = model.running_job() {
                        model.flow.cancel_requested = true;
                        fx.push(Effect::Cancel { job });
                        quit(model, true, fx);
                    } else {
                        quit(model, false, fx);
                    }
                }
                KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('N') => {
                    model.overlay = Overlay::None
                }
                _ => {}
            }
            return;
        }
        Overlay::ConfirmSwitch => {
            match key.code {
                _ if ctrl_c => {
                    model.overlay = Overlay::None;
                    request_quit(model, fx);
                }
                KeyCode::Char('y') | KeyCode::Char('Y') => flow::switch(model, fx),
                KeyCode::Char('p') | KeyCode::Char('P') => flow::pins_instead(model),
                KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('N') => {
                    model.overlay = Overlay::None
                }
                _ => {}
            }
            return;
        }
        Overlay::ConfirmStation { .. } => {
            match key.code {
                _ if ctrl_c => {
                    model.overlay = Overlay::None;
                    request_quit(model, fx);
                }
                KeyCode::Char('y') | KeyCode::Char('Y') => station::confirm(model, fx),
                KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('N') => {
                    model.overlay = Overlay::None
                }
                _ => {}
            }
            return;
        }
        Overlay::ConfirmStationStop => {
            station::on_stop_key(model, key, ctrl_c, fx);
            return;
        }
        Overlay::ConfirmCancel => {
            match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') if !ctrl_c => {
                    model.overlay = Overlay::None;
                    if let Some(job) = model.running_job() {
                        model.flow.cancel_requested = true;
                        fx.push(Effect::Cancel { job });
                    }
                }
                KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('N') => {
                    model.overlay = Overlay::None
                }
                _ if ctrl_c => {
                    model.overlay = Overlay::None;
                    request_quit(model, fx);
                }
                _ => {}
            }
            return;
        }
    }
    if model.station.is_some() {
        station::on_key(model, key, ctrl_c, fx);
        return;
    }
    if ctrl_c {
        request_quit(model, fx);
        return;
    }
    if !key.modifiers.difference(KeyModifiers::SHIFT).is_empty() {
        return;
    }
    let log = model.focus == Focus::Log;
    let page = (model.height / 2).max(1);
    match key.code {
        KeyCode::Char('q') => request_quit(model, fx),
        KeyCode::Char('?') | KeyCode::F(1) => model.overlay = Overlay::Help,
        KeyCode::Tab | KeyCode::BackTab => {
            model.focus = match model.focus {
                Focus::Devices => Focus::Log,
                Focus::Log => Focus::Devices,
            }
        }
        KeyCode::Up | KeyCode::Char('k') if log => {
            model.log_scroll = model.log_scroll.saturating_add(1)
        }
        KeyCode::Down | KeyCode::Char('j') if log => {
            model.log_scroll = model.log_scroll.saturating_sub(1)
        }
        KeyCode::Up | KeyCode::Char('k') => move_selection(model, -1),
        KeyCode::Down | KeyCode::Char('j') => move_selection(model, 1),
        KeyCode::PageUp if log => model.log_scroll = model.log_scroll.saturating_add(page),
        KeyCode::PageDown if log => model.log_scroll = model.log_scroll.saturating_sub(page),
        KeyCode::Home if log => model.log_scroll = u16::MAX,
        KeyCode::End if log => model.log_scroll = 0,
        KeyCode::Enter => flow::enter(model, fx),
        KeyCode::Char('f') => match model.flow.stage {
            Stage::Ready => model.overlay = Overlay::ConfirmFlash,
            _ => {
                model.notice = Some("Nothing to flash yet: press Enter to check the package".into())
            }
        },
        KeyCode::Char('p') => flow::pins(model),
        KeyCode::Char('A') | KeyCode::Char('a') => station::offer(model),
        KeyCode::Char('o') => {
            if model.flow.stage == Stage::Refused && model.override_phrase().is_some() {
                model.overlay = Overlay::OverrideInput {
                    typed: String::new(),
                };
            } else {
                model.notice = Some("There is no refusal that can be overridden".into());
            }
        }
        KeyCode::Char('c') => match model.flow.stage {
            Stage::Flashing { .. } => model.overlay = Overlay::ConfirmCancel,
            Stage::Armed { .. } => flow::disarm(model),
            _ => {}
        },
        // Back from Checking: the check's late answer carries a token nobody waits for.
        KeyCode::Esc => match model.flow.stage {
            Stage::Armed { .. } => flow::disarm(model),
            Stage::Checking => {
                model.flow.stage = Stage::Idle;
                model.flow.check_token = 0;
                model.flow.at_pending = false;
                model.flow.check_deferred = false;
                model.flow.identify_pending = false;
            }
            _ => {}
        },
        KeyCode::Char('b') if model.config.demo.is_some() => {
            fx.push(Effect::Bench(BenchAction::BridgePinsAndPowerCycle))
        }
        KeyCode::Char('r') if model.config.demo.is_some() => {
            fx.push(Effect::Bench(BenchAction::ReleasePins))
        }
        _ => {}
    }
}

/// Move the selection over the listed devices (present ones first).
fn move_selection(model: &mut Model, delta: isize) {
    let ids: Vec<_> = model.devices().into_iter().map(|d| d.id).collect();
    if ids.is_empty() {
        return;
    }
    let pos = model
        .selected
        .and_then(|s| ids.iter().position(|&i| i == s));
    let next = match pos {
        None => 0,
        Some(p) => p.saturating_add_signed(delta).min(ids.len() - 1),
    };
    model.selected = Some(ids[next]);
}
