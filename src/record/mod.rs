//! Recordings: versioned JSONL files of device timelines (hotplug) and transport traffic, for
//! tests, demos (`qrescue replay`) and bug reports. The format is in [`format`] and
//! `recordings/README.md`.
//!
//! - [`writer::Recorder`] writes one (shared by every transport and device source of a session:
//!   [`SharedRecorder`]); [`crate::transport::record::RecordingTransport`] and
//!   [`source::RecordingSource`] feed it.
//! - [`reader::Recording`] reads and validates one; [`crate::transport::replay::ReplayTransport`]
//!   plays a recorded device back to a host, [`source::ReplaySource`] plays its hotplug events.
//! - [`redact::Redactor`] replaces serial numbers and IMEIs by stable pseudonyms.

pub mod format;
pub mod reader;
pub mod redact;
pub mod source;
pub mod writer;

pub use format::{Body, Event, Header, Payload};
pub use reader::{Recording, StreamSummary};
pub use redact::Direction;
pub use source::{pump, RecordingSource, ReplaySource};
pub use writer::{RecordOptions, Recorder, SharedRecorder};
