//! Backups of a modem's own data: the identity snapshot ([`identity`]), the store of backup
//! folders with their sealed sha256 manifests and the guard's ledger over it ([`store`]), and
//! taking / restoring a backup over a Firehose session ([`run`]).
//!
//! The backup gate of `engine::guards` asks [`store::StoreLedger`]; `qrescue backup` and
//! `qrescue restore` (src/cli/backup_cmds.rs) are the front end.

pub mod identity;
pub mod run;
pub mod store;

pub use identity::{EdlIdentity, Identity};
pub use store::{BackupKind, FileEntry, Manifest, Store, StoreLedger, StoredBackup};
