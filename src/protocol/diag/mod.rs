//! DIAG (QCDM), the Qualcomm diagnostic protocol on the Quectel DM interface (PROTOCOLS.md §6).
//! Sans-IO.
//!
//! - [`hdlc`]: the HDLC-like framing (CRC-16/X.25, 0x7D escapes, 0x7E terminator) and a
//!   streaming decoder.

pub mod hdlc;

pub use hdlc::{Decoder, FrameError};
