//! Backups of a modem's own data: the identity snapshot ([`identity`]), the store of backup
//! folders with their sealed sha256 manifests and the guard's ledger over it ([`store`]), and
//! taking / restoring a backup over a Firehose session ([`run`]), and an NV/EFS backup over
//! DIAG for a modem in normal mode ([`diag`]).
//!
//! The backup gate of `engine::guards` asks [`store::StoreLedger`]; `qrescue backup` and
//! `qrescue restore` (src/cli/backup_cmds.rs) are the front end.

pub mod diag;
pub mod identity;
pub mod run;
pub mod store;

pub use identity::{EdlIdentity, Identity, UsbComposition};
pub use store::{
    BackupKind, FileEntry, ItemEntry, ItemOrigin, Manifest, Store, StoreLedger, StoredBackup,
};
