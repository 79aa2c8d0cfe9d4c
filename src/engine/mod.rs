//! Drives protocols over a transport and emits events; never renders.

pub mod at;
pub mod connect;
pub mod diag;
pub mod events;
pub mod firehose;
pub mod flash;
pub mod guards;
pub mod outcome;
pub mod partitions;
pub mod plan;
pub mod prepare;
pub mod sahara;
pub mod workflow;
