//! Views: pure functions of the model, one file per pane.

use ratatui::Frame;

use super::model::Model;

/// Draw the whole screen.
pub fn view(model: &Model, frame: &mut Frame) {
    let _ = (model, frame);
}
