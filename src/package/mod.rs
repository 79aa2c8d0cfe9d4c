//! Firmware packages: rawprogram/patch parsing, expressions (NUM_DISK_SECTORS, CRC32), and later
//! discovery, sparse images, manifests and compatibility rules.

pub mod compat;
pub mod expr;
pub mod rawprogram;
pub mod revision;
pub mod source;
pub mod sparse;
