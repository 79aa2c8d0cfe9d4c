//! Firmware packages: where their files come from (folder or zip, confined), discovery of the
//! layout, md5.txt and sha256 integrity, rawprogram/patch parsing, expressions (NUM_DISK_SECTORS,
//! CRC32), host-side file patches, sparse images, revision strings and compatibility rules.

pub mod compat;
pub mod discover;
pub mod expr;
pub mod hostpatch;
pub mod integrity;
pub mod md5txt;
pub mod rawprogram;
pub mod revision;
pub mod source;
pub mod sparse;
pub mod zip;
