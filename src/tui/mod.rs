//! The console: a ratatui application in Elm style (DESIGN.md). One [`model::Model`]; every
//! input becomes a [`msg::Msg`]; [`update::update`] changes the model and returns
//! [`msg::Effect`]s that [`runtime`] executes (devices, packages, flashes run on their own
//! threads and answer with more messages); [`view::view`] draws the model and nothing else.

pub mod exec;
pub mod model;
pub mod msg;
pub mod runtime;
pub mod station;
pub mod terminal;
pub mod theme;
pub mod update;
pub mod view;
