//! DIAG (QCDM), the Qualcomm diagnostic protocol on the Quectel DM interface (PROTOCOLS.md §6).
//! Sans-IO.
//!
//! - [`hdlc`]: the HDLC-like framing (CRC-16/X.25, 0x7D escapes, 0x7E terminator) and a
//!   streaming decoder;
//! - [`packet`]: command codes, the switch to EDL, extended build ID, NV read, error responses
//!   and reply matching;
//! - [`efs`]: the EFS2 subset for stat, reading a file and listing a directory.
//!
//! The session that drives these over a transport is `crate::engine::diag`.

pub mod efs;
pub mod hdlc;
pub mod packet;

pub use efs::{EfsDirEntry, EfsRequest, EfsResponse, EfsStat, HelloParams};
pub use hdlc::{Decoder, FrameError};
pub use packet::{
    match_reply, BuildId, DiagError, NvItem, NvStatus, RejectKind, Rejection, Reply, Request,
};
