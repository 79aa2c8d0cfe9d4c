//! Sahara, the boot ROM's upload and memory-dump protocol (PROTOCOLS.md §1). Sans-IO.

pub mod packet;

pub use packet::{Packet, ParseError};
