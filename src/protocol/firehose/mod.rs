//! Firehose, the XML flashing protocol spoken by the uploaded programmer (PROTOCOLS.md §2). Sans-IO.
//!
//! - [`xml`]: documents on the wire (splitting, parsing, building);
//! - [`commands`]: typed host commands;
//! - [`response`]: device logs and ACK/NAK responses, and the per-command [`response::Exchange`];
//! - [`welcome`]: the programmer's start-up logs and its function list;
//! - [`configure`]: payload-size negotiation as a state machine;
//! - [`storage`]: getstorageinfo and getsha256digest answers;
//! - [`timeouts`]: size-scaled waits;
//! - [`explain`]: the table of known programmer messages in plain words.
//!
//! The session that drives these over a transport is `crate::engine::firehose`.

pub mod commands;
pub mod configure;
pub mod explain;
pub mod response;
pub mod storage;
pub mod timeouts;
pub mod welcome;
pub mod xml;

pub use commands::{
    Configure, Erase, FirehoseCommand, GetSha256Digest, GetStorageInfo, Nop, Patch, Power,
    PowerMode, Program, Read, SetBootableStorageDrive, StorageKind,
};
pub use configure::{ConfigureError, ConfigureStep, Negotiated, Negotiation};
pub use explain::{explain_log, explain_nak, Advice, Explanation};
pub use response::{parse_device_document, DeviceMessage, Exchange, Response, ResponseError};
pub use storage::{parse_sha256_digest, parse_storage_info, StorageInfo};
pub use timeouts::Timeouts;
pub use welcome::{parse_welcome, Welcome, WelcomeParser};
