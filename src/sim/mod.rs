//! The emulated modem: a boot ROM speaking Sahara (EDL 9008 and crash-dump 900e personalities), an
//! emulated Firehose programmer over NAND or eMMC/UFS storage, seeded fault injection, and pty
//! exposure. It behaves like real devices on the wire (PROTOCOLS.md §9), quirks included.

pub mod announce;
pub mod bootrom;
pub mod campaign;
pub mod device;
pub mod dryrun;
pub mod elf;
pub mod enumerate;
pub mod faults;
pub mod firehose;
pub mod fleet;
pub mod hub;
pub mod inproc;
pub mod linkfault;
pub mod normal;
pub mod package_gen;
pub mod profile;
pub mod stoplink;
pub mod usb_ids;
pub mod world;

use crate::transport::Transport;

/// Why an emulated programmer stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgrammerExit {
    /// `<power value="reset"/>`: the device reboots: to normal mode when its storage boots and
    /// the runner boots from storage ([`device::DeviceConfig::boot_from_storage`]), else back to
    /// the boot ROM.
    Reset,
    /// `<power value="reset_to_edl"/>`: back to the boot ROM, which sends a fresh HELLO.
    ResetToEdl,
    /// `<power value="off"/>`.
    PowerOff,
    /// The host side of the link went away.
    LinkLost,
    /// A fault made the programmer stop answering; the runner must keep the link silent.
    Hung,
}

/// What the boot ROM hands over to after a valid programmer upload: the emulated Firehose
/// programmer. The device runner ([`device`]) calls [`AfterUpload::serve`] right after DONE_RESP;
/// the implementation sends its welcome logs (about 100–200 ms later) and serves Firehose until
/// power/reset or the link drops. Storage contents persist across calls.
pub trait AfterUpload: Send {
    fn serve(&mut self, link: &mut dyn Transport, unit: &profile::UnitIdentity) -> ProgrammerExit;

    /// The storage the unit boots from ([`normal::boot`]) after a reset or at power-up; `None`
    /// when the implementation has none (test doubles): the unit then runs its factory firmware.
    fn boot_storage(&self) -> Option<&firehose::storage::Storage> {
        None
    }
}
