//! The emulated modem in normal mode: a composite device with DM (DIAG), NMEA, AT and modem
//! ports whose answers follow what the unit's storage holds.
//!
//! - [`unit`]: model, factory revision, per-unit IMEI / ICCID / calibration.
//! - [`efs`]: the emulated EFS image (NV 550 IMEI, calibration file) in the EFS partitions.
//! - [`state`]: the boot rule (boot ROM or normal mode; `+CFUN` 1, 5 or 7) and factory seeding.
//! - [`at`], [`diag`]: sans-IO responders for the AT/modem ports and the DM port.
//! - [`ports`]: serving the ports over ptys or in-process pipes; the USB composition.
//!
//! # Using it (e.g. from a demo world)
//!
//! 1. Seed a unit's storage as it leaves the factory: [`seed_factory`]`(programmer.storage_mut(),
//!    &profile)`. Without it a storage is erased and does not boot.
//! 2. After a Firehose `<power value="reset"/>` (or at power-up), ask [`boot`]`(storage,
//!    &profile)`: [`Boot::Normal`] — run the unit in normal mode with
//!    [`ports::InProcessNormal::start`] (pipes) or let [`crate::sim::enumerate::run_on_usb`] do it
//!    on ptys ([`crate::sim::enumerate::Schedule::normal`]); [`Boot::BootRom`] — it re-enumerates
//!    as 05c6:9008. [`crate::sim::device::DeviceConfig::boot_from_storage`] makes the boot-ROM
//!    runner end with `RunOutcome::Rebooted` on such a reset when the storage boots.
//! 3. A normal-mode unit ends with a [`ports::NormalExit`]: `SwitchToEdl` (DIAG `4B 65 01 00`:
//!    bring it back as 9008 [`crate::sim::enumerate::SWITCH_GAP`] after the command), `Reset`
//!    (`AT+CFUN=x,1`: boot again), `PowerDown` (`AT+QPOWD`).

pub mod at;
pub mod diag;
pub mod efs;
pub mod ports;
pub mod state;
pub mod unit;

pub use state::{boot, seed_factory, Boot, NormalBoot};
