//! Sahara, the boot ROM's upload and memory-dump protocol (PROTOCOLS.md §1). Sans-IO.

pub mod host;
pub mod info;
pub mod memdebug;
pub mod packet;

pub use host::{Action, Goal, HostError, HostMachine, Outcome, RawPurpose, UploadSet, Wait};
pub use info::DeviceInfo;
pub use packet::{Packet, ParseError};
