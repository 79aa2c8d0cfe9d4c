//! Sans-IO protocol code: bytes in, actions out. No I/O, no clocks, no sleeps.

pub mod diag;
pub mod firehose;
pub mod partitions;
pub mod sahara;
