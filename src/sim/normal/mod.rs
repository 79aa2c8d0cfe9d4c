//! The emulated modem in normal mode: a composite device with DM (DIAG), NMEA, AT and modem
//! ports whose answers follow what the unit's storage holds.
//!
//! - [`unit`]: model, factory revision, per-unit IMEI / ICCID / calibration.
//! - [`efs`]: the emulated EFS image (NV 550 IMEI, calibration file) in the EFS partitions.
//! - [`state`]: the boot rule (boot ROM or normal mode; `+CFUN` 1, 5 or 7) and factory seeding.

pub mod at;
pub mod diag;
pub mod efs;
pub mod ports;
pub mod state;
pub mod unit;

pub use state::{boot, seed_factory, Boot, NormalBoot};
