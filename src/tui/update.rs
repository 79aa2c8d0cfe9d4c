//! `update(&mut Model, Msg) -> Vec<Effect>`: the only place the model changes. Pure: no I/O,
//! no clock (times come with the messages).

use crate::device::DeviceChange;

use super::model::{Blip, Model, HISTORY_LIMIT};
use super::msg::{Effect, Msg};

/// Apply one message; return what the runtime should do.
pub fn update(model: &mut Model, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Resize { width, height } => {
            model.width = width;
            model.height = height;
            model.dirty = true;
            Vec::new()
        }
        Msg::Tick { now_ms } => {
            model.now_ms = model.now_ms.max(now_ms);
            model.dirty = true;
            Vec::new()
        }
        Msg::Device { event, initial } => {
            model.now_ms = model.now_ms.max(event.t_ms);
            let upd = if initial {
                model.monitor.observe_initial(&event)
            } else {
                model.monitor.observe(&event)
            };
            if let Some(id) = upd.id {
                let h = model.history.entry(id).or_default();
                h.push(Blip {
                    t_ms: event.t_ms,
                    appear: matches!(event.change, DeviceChange::Appear { .. }),
                    mode: upd
                        .class
                        .as_ref()
                        .map(|c| c.tag().to_string())
                        .unwrap_or_default(),
                });
                if h.len() > HISTORY_LIMIT {
                    let excess = h.len() - HISTORY_LIMIT;
                    h.drain(..excess);
                }
                if model.selected.is_none() && upd.relevant() {
                    model.selected = Some(id);
                }
            }
            model.dirty = true;
            Vec::new()
        }
        _ => Vec::new(),
    }
}
