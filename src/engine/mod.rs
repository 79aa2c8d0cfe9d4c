//! Drives protocols over a transport and emits events; never renders.

pub mod at;
pub mod connect;
pub mod diag;
pub mod events;
pub mod firehose;
pub mod flash;
pub mod guards;
pub mod identify;
pub mod journal;
pub mod outcome;
pub mod partitions;
pub mod plan;
pub mod prepare;
pub mod resume;
pub mod sahara;
pub mod station;
pub mod workflow;
