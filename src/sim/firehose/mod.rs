//! The emulated Firehose programmer and its storage.
//!
//! - [`programmer`]: [`Programmer`], the [`crate::sim::AfterUpload`] implementation that sends
//!   the welcome logs and serves Firehose commands, with fault injection and a [`SimReport`].
//! - [`storage`]: [`StorageProfile`]s (Quectel NAND layouts, eMMC, UFS) and the [`Storage`] built
//!   from them.
//! - [`nand`], [`mibib`], [`gpt`], [`sparse`]: NAND rules (erase before program, bad-block
//!   skipping, alignment), the MIBIB partition table, GPT creation/validation, and the sparse
//!   in-memory store underneath.

pub mod gpt;
pub mod mibib;
pub mod nand;
pub mod programmer;
pub mod sparse;
pub mod storage;

#[cfg(test)]
mod tests;

pub use programmer::{
    writes_per_region, CommandRecord, PartitionDigest, Programmer, ProgrammerOptions, RegionWrites,
    SimReport, StorageSummary, StorageWrite, WriteKind, SUPPORTED_FUNCTIONS,
};
pub use storage::{
    BadBlocks, BlockMemory, BlockSpec, LunSpec, NandSpec, Region, Storage, StorageProfile,
};
