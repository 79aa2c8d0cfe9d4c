//! Firmware packages: rawprogram/patch parsing, expressions (NUM_DISK_SECTORS, CRC32), and later
//! discovery, sparse images, manifests and compatibility rules.

pub mod discover;
pub mod expr;
pub mod integrity;
pub mod md5txt;
pub mod rawprogram;
pub mod source;
pub mod sparse;
pub mod zip;
