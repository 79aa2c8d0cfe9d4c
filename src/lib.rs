//! qrescue: a recovery console for Quectel (Qualcomm-based) cellular modems.
//!
//! Layout (see `../shared/docs/DESIGN.md`): `protocol` is sans-IO (bytes in, actions out);
//! `transport` is the one I/O seam; `engine` drives protocols over a transport and emits events;
//! `sim` is the emulated modem; `cli` holds one runner per subcommand.

pub mod backup;
pub mod cli;
pub mod device;
pub mod engine;
pub mod error;
pub mod explain;
pub mod package;
pub mod preflight;
pub mod protocol;
pub mod record;
pub mod sim;
pub mod transport;
pub mod tui;
pub mod workflow;

pub use error::{Error, ErrorKind, Result};
