//! USB bulk transport (nusb) to a modem in emergency download mode (05c6:9008) or crash-dump
//! mode (05c6:900e).
//!
//! Facts this follows (docs/PROTOCOLS.md §5.2, §5.3):
//! - the EDL interface is found by class ff, subclass ff, protocol 0x10/0x11/0x13 (modern) or
//!   0xff (older boot ROMs), never by number; its bulk IN/OUT pair carries Sahara and Firehose;
//! - OUT: a logical write is split into chunks of `out_chunk` bytes (a multiple of
//!   wMaxPacketSize, default 1 MiB, like qdl's `--out-chunk-size`) and, when its total length is
//!   a multiple of wMaxPacketSize, terminated by a zero-length packet. Some hosts (MT7621) and
//!   SDX20 need the ZLP off, so it is switchable ([`UsbOptions::zlp`]);
//! - IN: a transfer that filled its buffer exactly, with a size that is a multiple of
//!   wMaxPacketSize, may be followed by a ZLP; that ZLP is consumed, not reported;
//! - the Linux `qcserial` driver may hold 9008: it is detached (and logged); ModemManager and
//!   other flashers are named when the interface is busy;
//! - two openers wedge the boot ROM, so a [`DeviceLock`] (per location and serial) and a `flock`
//!   on the usbfs node are held for the transport's lifetime.
//!
//! The rules above are pure functions ([`WritePlan`], [`in_request_len`], [`InZlp`],
//! [`UsbSelector`], [`select`]) tested without hardware. The I/O uses nusb's blocking API only
//! (`MaybeFuture::wait`, `Endpoint::wait_next_complete`, `cancel_all`): no async runtime.
//! One transfer per direction is in flight at a time; a read or write that times out cancels its
//! transfer and waits for it to come back, so nothing arrives late into a later call, and data
//! that raced the cancel is delivered, not dropped.

use std::fmt;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::str::FromStr;
use std::time::{Duration, Instant};

use nusb::transfer::{
    Buffer, Bulk, Completion, Direction, EndpointDirection, In, Out, TransferError,
};
use nusb::{Endpoint, MaybeFuture};

use super::lock::{self, DeviceLock, LockFailure};
use super::{Framing, Transport, TransportError};

/// Default OUT chunk: 1 MiB (qdl's default `--out-chunk-size`).
pub const DEFAULT_OUT_CHUNK: usize = 1 << 20;
/// Largest IN transfer submitted for one read.
pub const MAX_IN_TRANSFER: usize = 1 << 20;
/// How long a cancelled transfer may take to come back before we give up waiting for it.
const CANCEL_GRACE: Duration = Duration::from_secs(2);

/// Qualcomm's USB vendor ID.
pub const QUALCOMM_VID: u16 = 0x05c6;
/// Qualcomm PIDs whose boot ROM speaks Sahara: 9008 EDL, 900e crash dump, 901d and 90db
/// (further EDL/ramdump IDs), PROTOCOLS.md §5.1.
pub const SAHARA_PIDS: &[u16] = &[0x9008, 0x900e, 0x901d, 0x90db];
/// EDL interface protocols of modern boot ROMs (class ff, subclass ff).
pub const EDL_PROTOCOLS: &[u8] = &[0x10, 0x11, 0x13];
/// The EDL interface protocol of older boot ROMs. Also used by normal-mode QMI interfaces, so
/// it is trusted only on a Sahara VID:PID.
pub const EDL_PROTOCOL_LEGACY: u8 = 0xff;

/// The udev rule hint shown when access is denied.
pub const UDEV_HINT: &str = "install the udev rule with `qrescue udev-rules | sudo tee /etc/udev/rules.d/51-qrescue.rules`, then `sudo udevadm control --reload-rules && sudo udevadm trigger` (or replug the modem), or run qrescue as root";

/// What to tell people when the EDL interface is held by someone else.
pub const BUSY_HINT: &str = "stop ModemManager (`sudo systemctl stop ModemManager`), unload or unbind a kernel driver that grabbed it (`sudo modprobe -r qcserial`), and close other flashers (qdl, edl, QFirehose, fwupd, another qrescue); two programs on one modem in download mode can wedge its boot ROM until a power cycle";

/// Knobs for the USB transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsbOptions {
    /// Terminate OUT transfers whose length is a multiple of wMaxPacketSize with a zero-length
    /// packet (on by default; off for MT7621 hosts and SDX20).
    pub zlp: bool,
    /// OUT chunk size in bytes; rounded down to a multiple of wMaxPacketSize (at least one
    /// packet).
    pub out_chunk: usize,
}

impl Default for UsbOptions {
    fn default() -> Self {
        UsbOptions {
            zlp: true,
            out_chunk: DEFAULT_OUT_CHUNK,
        }
    }
}

// ---------------------------------------------------------------------------- OUT: write plan

/// The chunk size actually used: `requested` rounded down to a multiple of `max_packet_size`,
/// at least one packet. A zero `max_packet_size` (a broken descriptor) counts as 1.
pub fn effective_chunk(requested: usize, max_packet_size: usize) -> usize {
    let mps = max_packet_size.max(1);
    (requested / mps * mps).max(mps)
}

/// How one logical write goes on the wire: consecutive chunks of [`WritePlan::chunk_size`]
/// bytes (the last may be shorter), then a zero-length packet iff ZLPs are on and the total is
/// a multiple of wMaxPacketSize. An empty write is a lone ZLP when ZLPs are on, nothing
/// otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlan {
    total: usize,
    chunk: usize,
    zlp: bool,
}

impl WritePlan {
    pub fn new(total: usize, max_packet_size: usize, out_chunk: usize, zlp_on: bool) -> Self {
        let mps = max_packet_size.max(1);
        WritePlan {
            total,
            chunk: effective_chunk(out_chunk, mps),
            zlp: zlp_on && total % mps == 0,
        }
    }

    /// Bytes per chunk (a multiple of wMaxPacketSize).
    pub fn chunk_size(&self) -> usize {
        self.chunk
    }

    /// The byte ranges of the data transfers, in order.
    pub fn chunks(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.total)
            .step_by(self.chunk)
            .map(move |start| start..(start + self.chunk).min(self.total))
    }

    /// Whether a zero-length packet follows the data.
    pub fn trailing_zlp(&self) -> bool {
        self.zlp
    }

    /// Number of bulk transfers submitted, the ZLP included.
    pub fn transfers(&self) -> usize {
        self.total.div_ceil(self.chunk) + usize::from(self.zlp)
    }
}

// ---------------------------------------------------------------------------- IN rules

/// The IN transfer length for a read into a buffer of `wanted` bytes: rounded up to a multiple
/// of `max_packet_size` (nusb and the host controller require it; the surplus is kept for the
/// next read), capped at `max` (itself rounded down to whole packets, at least one packet).
pub fn in_request_len(wanted: usize, max_packet_size: usize, max: usize) -> usize {
    let mps = max_packet_size.max(1);
    let cap = effective_chunk(max, mps);
    wanted.max(1).div_ceil(mps).saturating_mul(mps).min(cap)
}

/// What to do with a completed IN transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InStep {
    /// Hand the bytes (possibly none: a ZLP) to the reader.
    Deliver,
    /// A zero-length packet terminating the previous full transfer: swallow it.
    ConsumeZlp,
}

/// The IN zero-length-packet rule: a transfer that filled its buffer exactly with a multiple of
/// wMaxPacketSize may be followed by a ZLP that ends it on the wire; that ZLP is framing, not
/// a message, and is consumed. Any other transfer clears the expectation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InZlp {
    expect: bool,
}

impl InZlp {
    /// Classify a completed transfer of `actual` bytes out of `requested`.
    pub fn on_transfer(
        &mut self,
        actual: usize,
        requested: usize,
        max_packet_size: usize,
    ) -> InStep {
        if actual == 0 && self.expect {
            self.expect = false;
            return InStep::ConsumeZlp;
        }
        let mps = max_packet_size.max(1);
        self.expect = actual > 0 && actual == requested && actual % mps == 0;
        InStep::Deliver
    }

    /// Whether the next ZLP will be consumed.
    pub fn expecting(&self) -> bool {
        self.expect
    }
}

// ---------------------------------------------------------------------------- selection

/// Which USB device `--port usb…` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsbSelector {
    /// `usb`: the only modem in download or crash-dump mode present.
    Only,
    /// `usb:3-1.2`: the device at this sysfs location (bus 3, port 1, then port 2).
    Location(String),
    /// `usb:serial=49CBD7EF`: the `_SN:` in the product string, or the USB serial.
    Serial(String),
    /// `usb:bus=3,addr=5`: bus number and device address as `lsusb` prints them.
    BusAddress { bus: u8, address: u8 },
}

impl UsbSelector {
    /// Parse a `--port` value. `None` when it does not name USB at all (`/dev/ttyUSB0`, a pty);
    /// `Some(Err(why))` when it starts with `usb:` but the rest is not understood.
    pub fn parse_port(s: &str) -> Option<Result<UsbSelector, String>> {
        if s.eq_ignore_ascii_case("usb") {
            return Some(Ok(UsbSelector::Only));
        }
        let rest = s.strip_prefix("usb:").or_else(|| s.strip_prefix("USB:"))?;
        Some(rest.parse())
    }

    /// Whether `c` is what this selector names (its mode is not checked here).
    pub fn matches(&self, c: &UsbCandidate) -> bool {
        match self {
            UsbSelector::Only => true,
            UsbSelector::Location(l) => c.location() == *l,
            UsbSelector::Serial(s) => {
                c.edl_serial().is_some_and(|e| e.eq_ignore_ascii_case(s))
                    || c.serial
                        .as_deref()
                        .is_some_and(|u| u.trim().eq_ignore_ascii_case(s))
            }
            UsbSelector::BusAddress { bus, address } => c.bus == *bus && c.address == *address,
        }
    }
}

impl FromStr for UsbSelector {
    type Err = String;

    /// Parse what follows `usb:`.
    fn from_str(rest: &str) -> Result<Self, Self::Err> {
        let rest = rest.trim();
        if let Some(sn) = rest
            .strip_prefix("serial=")
            .or_else(|| rest.strip_prefix("sn="))
        {
            let sn = sn.trim();
            let sn = sn
                .strip_prefix("0x")
                .or_else(|| sn.strip_prefix("0X"))
                .unwrap_or(sn);
            if sn.is_empty() || sn.len() > 64 || !sn.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "`{sn}` is not a serial number (usb:serial=49CBD7EF)"
                ));
            }
            return Ok(UsbSelector::Serial(sn.to_string()));
        }
        if rest.starts_with("bus=") {
            let mut bus = None;
            let mut address = None;
            for part in rest.split(',') {
                let (k, v) = part
                    .split_once('=')
                    .ok_or_else(|| format!("`{part}` is not key=value (usb:bus=3,addr=5)"))?;
                let n: u8 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("`{v}` is not a number from 0 to 255"))?;
                match k.trim() {
                    "bus" => bus = Some(n),
                    "addr" | "address" | "dev" | "device" => address = Some(n),
                    other => return Err(format!("unknown key `{other}` (usb:bus=3,addr=5)")),
                }
            }
            return match (bus, address) {
                (Some(bus), Some(address)) => Ok(UsbSelector::BusAddress { bus, address }),
                _ => Err("give both the bus and the address: usb:bus=3,addr=5".into()),
            };
        }
        if is_location(rest) {
            return Ok(UsbSelector::Location(rest.to_string()));
        }
        Err(format!(
            "`{rest}` is not a USB location (usb:3-1.2), serial (usb:serial=49CBD7EF) or bus and address (usb:bus=3,addr=5)"
        ))
    }
}

impl fmt::Display for UsbSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsbSelector::Only => write!(f, "usb"),
            UsbSelector::Location(l) => write!(f, "usb:{l}"),
            UsbSelector::Serial(s) => write!(f, "usb:serial={s}"),
            UsbSelector::BusAddress { bus, address } => write!(f, "usb:bus={bus},addr={address}"),
        }
    }
}

/// `3-1.2`: a bus number, a dash, then dot-separated port numbers (each 1–255).
pub fn is_location(s: &str) -> bool {
    let Some((bus, ports)) = s.split_once('-') else {
        return false;
    };
    let num = |p: &str| {
        !p.is_empty()
            && p.len() <= 3
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u16>().is_ok_and(|n| n <= 255)
    };
    num(bus) && ports.split('.').all(num)
}

/// The EDL serial inside a product string: the hex digits after `_SN:`
/// (`QUSB_BULK_CID:0410_SN:49CBD7EF` → `49CBD7EF`).
pub fn edl_serial_from_product(product: &str) -> Option<String> {
    let at = product.find("_SN:")? + 4;
    let sn: String = product[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    (!sn.is_empty()).then_some(sn)
}

/// One interface as the selection rules see it (alternate setting 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfaceId {
    pub number: u8,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
}

/// The EDL interface among `ifaces`: class ff, subclass ff and a modern EDL protocol, else
/// (only when `legacy_ok`, i.e. on a Sahara VID:PID) protocol 0xff.
pub fn pick_edl_interface(ifaces: &[IfaceId], legacy_ok: bool) -> Option<IfaceId> {
    let vendor = |i: &&IfaceId| i.class == 0xff && i.subclass == 0xff;
    ifaces
        .iter()
        .filter(vendor)
        .find(|i| EDL_PROTOCOLS.contains(&i.protocol))
        .or_else(|| {
            ifaces
                .iter()
                .filter(vendor)
                .find(|i| legacy_ok && i.protocol == EDL_PROTOCOL_LEGACY)
        })
        .copied()
}

/// What enumeration tells about one USB device, before opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbCandidate {
    pub bus: u8,
    pub ports: Vec<u8>,
    pub address: u8,
    pub vid: u16,
    pub pid: u16,
    pub product: Option<String>,
    pub serial: Option<String>,
    pub interfaces: Vec<IfaceId>,
}

impl UsbCandidate {
    /// `3-1.2`, as sysfs and [`crate::device::DeviceSnapshot::location`] write it.
    pub fn location(&self) -> String {
        if self.ports.is_empty() {
            return format!("{}-0", self.bus);
        }
        let chain: Vec<String> = self.ports.iter().map(u8::to_string).collect();
        format!("{}-{}", self.bus, chain.join("."))
    }

    /// A Qualcomm VID with a PID whose boot ROM speaks Sahara.
    pub fn is_sahara_id(&self) -> bool {
        self.vid == QUALCOMM_VID && SAHARA_PIDS.contains(&self.pid)
    }

    /// In download or crash-dump mode: a Sahara VID:PID, or any device with a modern EDL
    /// interface (qdl recognises EDL by interface, not by a PID list).
    pub fn is_download_mode(&self) -> bool {
        self.is_sahara_id() || pick_edl_interface(&self.interfaces, false).is_some()
    }

    /// The EDL serial: `_SN:` in the product string, else the USB serial.
    pub fn edl_serial(&self) -> Option<String> {
        self.product
            .as_deref()
            .and_then(edl_serial_from_product)
            .or_else(|| {
                self.serial
                    .as_deref()
                    .map(printable)
                    .filter(|s| !s.is_empty())
            })
    }

    /// One line for people: `3-1.2 05c6:9008 "QUSB__BULK" serial 49CBD7EF`.
    pub fn summary(&self) -> String {
        let mut s = format!("{} {:04x}:{:04x}", self.location(), self.vid, self.pid);
        if let Some(p) = self
            .product
            .as_deref()
            .map(printable)
            .filter(|p| !p.is_empty())
        {
            s.push_str(&format!(" \"{p}\""));
        }
        if let Some(sn) = self.edl_serial() {
            s.push_str(&format!(" serial {sn}"));
        }
        s
    }

    /// How to name this device on the command line.
    pub fn selector_hint(&self) -> String {
        match self.edl_serial() {
            Some(sn) => format!("--port usb:{} or --port usb:serial={sn}", self.location()),
            None => format!("--port usb:{}", self.location()),
        }
    }
}

/// Device strings are untrusted: keep printable characters, at most 64.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect::<String>()
        .trim()
        .to_string()
}

/// Why no device could be opened.
#[derive(Debug, thiserror::Error)]
pub enum UsbOpenError {
    /// Nothing matched. `present` lists every USB device seen (summaries); `note` says why the
    /// list may be empty.
    #[error("no modem in download or crash-dump mode matches `{wanted}`")]
    NotFound {
        wanted: String,
        present: Vec<String>,
        note: Option<String>,
    },
    /// `usb` was asked for but several modems qualify.
    #[error("{} modems are in download or crash-dump mode", candidates.len())]
    Ambiguous {
        /// Summary of each, with how to choose it.
        candidates: Vec<(String, String)>,
    },
    /// The named device exists but is not in download or crash-dump mode.
    #[error("{device} is not in download or crash-dump mode")]
    NotDownloadMode { device: String },
    /// The device was found but could not be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// Pick the device `sel` names among `cands`.
pub fn select<'a>(
    cands: &'a [UsbCandidate],
    sel: &UsbSelector,
) -> Result<&'a UsbCandidate, UsbOpenError> {
    let named: Vec<&UsbCandidate> = cands.iter().filter(|c| sel.matches(c)).collect();
    let usable: Vec<&UsbCandidate> = named
        .iter()
        .copied()
        .filter(|c| c.is_download_mode())
        .collect();
    match usable.as_slice() {
        [one] => Ok(one),
        [] => match (sel, named.first()) {
            (UsbSelector::Only, _) | (_, None) => Err(UsbOpenError::NotFound {
                wanted: sel.to_string(),
                present: cands.iter().map(UsbCandidate::summary).collect(),
                note: None,
            }),
            (_, Some(c)) => Err(UsbOpenError::NotDownloadMode {
                device: c.summary(),
            }),
        },
        many => Err(UsbOpenError::Ambiguous {
            candidates: many
                .iter()
                .map(|c| (c.summary(), c.selector_hint()))
                .collect(),
        }),
    }
}

// ---------------------------------------------------------------------------- the transport

/// An open, claimed EDL interface.
///
/// Field order is drop order: endpoints (cancelling anything pending), the interface (released;
/// a detached kernel driver is re-attached), the device, then the locks.
pub struct UsbTransport {
    ep_in: Endpoint<Bulk, In>,
    ep_out: Endpoint<Bulk, Out>,
    _interface: nusb::Interface,
    _device: nusb::Device,
    mps_in: usize,
    mps_out: usize,
    opts: UsbOptions,
    /// Bytes of the last IN transfer not yet handed out: `rx[rx_pos..]`.
    rx: Option<Buffer>,
    rx_pos: usize,
    in_zlp: InZlp,
    /// An IN transfer we cancelled has not come back yet (it is still pending).
    in_stale: bool,
    spare_in: Option<Buffer>,
    spare_out: Option<Buffer>,
    location: String,
    serial: Option<String>,
    desc: String,
    _usbfs_lock: Option<File>,
    _lock: DeviceLock,
}

impl fmt::Debug for UsbTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsbTransport")
            .field("desc", &self.desc)
            .field(
                "ep_in",
                &format_args!("0x{:02x}", self.ep_in.endpoint_address()),
            )
            .field(
                "ep_out",
                &format_args!("0x{:02x}", self.ep_out.endpoint_address()),
            )
            .field("mps", &self.mps_out)
            .field("opts", &self.opts)
            .finish()
    }
}

/// The devices present, each with the nusb handle to open it, and a note when the list is
/// empty for a reason people should know.
type Enumeration = (Vec<(nusb::DeviceInfo, UsbCandidate)>, Option<String>);

/// Every USB device present, as candidates (with the nusb handle to open it). A host without
/// a USB bus (no `/sys/bus/usb`, e.g. a container) has none, with a note saying so.
fn enumerate() -> Result<Enumeration, UsbOpenError> {
    let list = match nusb::list_devices().wait() {
        Ok(l) => l,
        Err(e) if e.kind() == nusb::ErrorKind::PermissionDenied => {
            return Err(TransportError::Permission(format!(
                "cannot list USB devices ({e}); run qrescue as root or {UDEV_HINT}"
            ))
            .into())
        }
        Err(e) => {
            return Ok((
                Vec::new(),
                Some(format!(
                    "this system shows no USB bus ({e}); in a container or VM, pass the USB device through"
                )),
            ))
        }
    };
    let found = list
        .map(|info| {
            let c = UsbCandidate {
                bus: info.bus_id().parse().unwrap_or(0),
                ports: info.port_chain().to_vec(),
                address: info.device_address(),
                vid: info.vendor_id(),
                pid: info.product_id(),
                product: info.product_string().map(str::to_string),
                serial: info.serial_number().map(str::to_string),
                interfaces: info
                    .interfaces()
                    .map(|i| IfaceId {
                        number: i.interface_number(),
                        class: i.class(),
                        subclass: i.subclass(),
                        protocol: i.protocol(),
                    })
                    .collect(),
            };
            (info, c)
        })
        .collect();
    Ok((found, None))
}

impl UsbTransport {
    /// Find the device `selector` names, lock it, claim its EDL interface and find the bulk
    /// pair.
    pub fn open(selector: &UsbSelector, opts: UsbOptions) -> Result<UsbTransport, UsbOpenError> {
        let (devices, note) = enumerate()?;
        let cands: Vec<UsbCandidate> = devices.iter().map(|(_, c)| c.clone()).collect();
        let chosen = match select(&cands, selector) {
            Ok(c) => c,
            Err(UsbOpenError::NotFound {
                wanted, present, ..
            }) => {
                return Err(UsbOpenError::NotFound {
                    wanted,
                    present,
                    note,
                })
            }
            Err(e) => return Err(e),
        };
        let (info, cand) = devices
            .iter()
            .find(|(_, c)| c == chosen)
            .expect("the chosen candidate came from this list");
        Self::open_device(info, cand, opts)
    }

    fn open_device(
        info: &nusb::DeviceInfo,
        cand: &UsbCandidate,
        opts: UsbOptions,
    ) -> Result<UsbTransport, UsbOpenError> {
        let location = cand.location();
        let serial = cand.edl_serial();
        let what = format!("USB {location} {:04x}:{:04x}", cand.vid, cand.pid);

        // 1. Our own locks first: nothing touches the device while another qrescue has it.
        let mut keys = vec![lock::location_key(&location)];
        if let Some(sn) = &serial {
            keys.push(lock::serial_key(sn));
        }
        let dev_lock = DeviceLock::acquire(&keys, &what)?;
        let usbfs_lock = lock_usbfs_node(cand, &what)?;

        // 2. Open, find the EDL interface by class/subclass/protocol and its bulk pair.
        let device = info
            .open()
            .wait()
            .map_err(|e| nusb_error(&e, &what, "open the device"))?;
        let config = device.active_configuration().map_err(|e| {
            TransportError::Io(io::Error::other(format!(
                "{what}: {e}; the modem is not ready (it may be re-enumerating) — wait a moment and try again"
            )))
        })?;
        let alts: Vec<_> = config
            .interface_alt_settings()
            .filter(|a| a.alternate_setting() == 0)
            .collect();
        let ids: Vec<IfaceId> = alts
            .iter()
            .map(|a| IfaceId {
                number: a.interface_number(),
                class: a.class(),
                subclass: a.subclass(),
                protocol: a.protocol(),
            })
            .collect();
        let Some(edl) = pick_edl_interface(&ids, cand.is_sahara_id()) else {
            return Err(UsbOpenError::NotDownloadMode {
                device: format!(
                    "{} (no EDL interface ff/ff/10, 11, 13 or ff)",
                    cand.summary()
                ),
            });
        };
        let alt = alts
            .iter()
            .find(|a| a.interface_number() == edl.number)
            .expect("picked from these interfaces");
        let bulk = |dir: Direction| {
            alt.endpoints().find(|e| {
                e.transfer_type() == nusb::descriptors::TransferType::Bulk && e.direction() == dir
            })
        };
        let (Some(ep_in_d), Some(ep_out_d)) = (bulk(Direction::In), bulk(Direction::Out)) else {
            return Err(TransportError::Io(io::Error::other(format!(
                "{what}: interface {} has no bulk IN/OUT pair; this is not a usable download-mode interface",
                edl.number
            )))
            .into());
        };
        let (addr_in, addr_out) = (ep_in_d.address(), ep_out_d.address());
        let (mps_in, mps_out) = (ep_in_d.max_packet_size(), ep_out_d.max_packet_size());
        if mps_in == 0 || mps_out == 0 {
            return Err(TransportError::Io(io::Error::other(format!(
                "{what}: the bulk endpoints report wMaxPacketSize 0 (a broken descriptor); replug the modem"
            )))
            .into());
        }
        drop(alts);

        // 3. Claim, detaching a kernel driver (qcserial) if one is bound.
        let driver = bound_driver(info, &location, config.configuration_value(), edl.number);
        match driver.as_deref() {
            Some("usbfs") => {
                return Err(TransportError::Busy(format!(
                    "{what} is claimed by another program through usbfs; {BUSY_HINT}"
                ))
                .into())
            }
            Some(d) => tracing::info!(
                target: "qrescue::usb",
                "detaching kernel driver {d} from {what} interface {}; it is re-attached when qrescue lets go (to stop {d} taking 9008, remove or blacklist it; if ModemManager probed the port first and Sahara fails, stop ModemManager and replug)",
                edl.number
            ),
            None => {}
        }
        let interface = device
            .detach_and_claim_interface(edl.number)
            .wait()
            .map_err(|e| nusb_error(&e, &what, "claim the download interface"))?;
        let ep_in = interface
            .endpoint::<Bulk, In>(addr_in)
            .map_err(|e| nusb_error(&e, &what, "open the bulk IN endpoint"))?;
        let ep_out = interface
            .endpoint::<Bulk, Out>(addr_out)
            .map_err(|e| nusb_error(&e, &what, "open the bulk OUT endpoint"))?;

        let desc = match &serial {
            Some(sn) => format!(
                "USB {location} {:04x}:{:04x} (serial {sn})",
                cand.vid, cand.pid
            ),
            None => format!("USB {location} {:04x}:{:04x}", cand.vid, cand.pid),
        };
        tracing::info!(
            target: "qrescue::usb",
            "opened {desc}: interface {} (ff/ff/{:02x}), bulk IN 0x{addr_in:02x} / OUT 0x{addr_out:02x}, wMaxPacketSize {mps_in}/{mps_out}, ZLP {}, OUT chunk {} bytes",
            edl.number,
            edl.protocol,
            if opts.zlp { "on" } else { "off" },
            effective_chunk(opts.out_chunk, mps_out)
        );
        Ok(UsbTransport {
            ep_in,
            ep_out,
            _interface: interface,
            _device: device,
            mps_in,
            mps_out,
            opts,
            rx: None,
            rx_pos: 0,
            in_zlp: InZlp::default(),
            in_stale: false,
            spare_in: None,
            spare_out: None,
            location,
            serial,
            desc,
            _usbfs_lock: usbfs_lock,
            _lock: dev_lock,
        })
    }

    /// The sysfs-style location (`3-1.2`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The EDL serial (`_SN:`) or USB serial, when the device has one.
    pub fn serial(&self) -> Option<&str> {
        self.serial.as_deref()
    }

    /// wMaxPacketSize of the bulk OUT endpoint.
    pub fn max_packet_size(&self) -> usize {
        self.mps_out
    }

    pub fn options(&self) -> UsbOptions {
        self.opts
    }

    /// Serve bytes left over from the last IN transfer.
    fn take_leftover(&mut self, buf: &mut [u8]) -> Option<usize> {
        let rx = self.rx.as_ref()?;
        let rest = &rx[self.rx_pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.rx_pos += n;
        if self.rx_pos >= rx.len() {
            self.spare_in = self.rx.take();
            self.rx_pos = 0;
        }
        Some(n)
    }

    fn in_buffer(&mut self, len: usize) -> Buffer {
        match self.spare_in.take() {
            Some(mut b) if b.capacity() >= len => {
                b.clear();
                b.set_requested_len(len);
                b
            }
            _ => self.ep_in.allocate(len),
        }
    }

    fn out_buffer(&mut self, len: usize) -> Buffer {
        match self.spare_out.take() {
            Some(mut b) if b.capacity() >= len => {
                b.clear();
                b
            }
            _ => self.ep_out.allocate(len.max(1)),
        }
    }

    /// Classify a completed IN transfer: `Some(n)` bytes delivered into `buf`, `None` when it
    /// was a ZLP that is framing or a transfer we cancelled before anything arrived.
    fn accept_in(
        &mut self,
        c: Completion,
        buf: &mut [u8],
        we_cancelled: bool,
    ) -> Result<Option<usize>, TransportError> {
        match c.status {
            Ok(()) => {}
            Err(TransferError::Cancelled) if we_cancelled => {}
            Err(e) => {
                self.spare_in = Some(c.buffer);
                return Err(self.transfer_failed(e, true));
            }
        }
        let requested = c.buffer.requested_len();
        let actual = c.buffer.len();
        if actual == 0 && c.status.is_err() {
            // Cancelled before anything arrived: not a ZLP, nothing to hand out.
            self.spare_in = Some(c.buffer);
            return Ok(None);
        }
        match self.in_zlp.on_transfer(actual, requested, self.mps_in) {
            InStep::ConsumeZlp => {
                tracing::trace!(target: "qrescue::usb", "consumed the ZLP after a full {requested}-byte transfer");
                self.spare_in = Some(c.buffer);
                Ok(None)
            }
            InStep::Deliver => {
                let n = actual.min(buf.len());
                buf[..n].copy_from_slice(&c.buffer[..n]);
                if n < actual {
                    self.rx = Some(c.buffer);
                    self.rx_pos = n;
                } else {
                    self.spare_in = Some(c.buffer);
                }
                Ok(Some(n))
            }
        }
    }

    fn transfer_failed(&mut self, e: TransferError, is_in: bool) -> TransportError {
        let ep = if is_in {
            self.ep_in.endpoint_address()
        } else {
            self.ep_out.endpoint_address()
        };
        if e == TransferError::Stall {
            // Clear the halt so the next command can go through; nothing is pending now.
            let cleared = if is_in {
                self.ep_in.clear_halt().wait()
            } else {
                self.ep_out.clear_halt().wait()
            };
            if let Err(ce) = cleared {
                tracing::warn!(target: "qrescue::usb", "could not clear the halt on 0x{ep:02x}: {ce}");
            }
        }
        transfer_error(e, &self.desc, ep)
    }
}

/// Cancel what is pending on `ep` and wait (bounded) for it to come back. Returns the returned
/// transfer (it may hold data that completed before the cancel took effect).
fn cancel_and_drain<D: EndpointDirection>(
    ep: &mut Endpoint<Bulk, D>,
    desc: &str,
) -> Option<Completion> {
    if ep.pending() == 0 {
        return None;
    }
    ep.cancel_all();
    let until = Instant::now() + CANCEL_GRACE;
    let got = ep.wait_next_complete(until.saturating_duration_since(Instant::now()));
    if got.is_none() {
        tracing::warn!(
            target: "qrescue::usb",
            "{desc}: a cancelled transfer on 0x{:02x} has not come back after {CANCEL_GRACE:?}; it is collected later",
            ep.endpoint_address()
        );
    }
    got
}

fn remaining(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

impl Transport for UsbTransport {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(n) = self.take_leftover(buf) {
            return Ok(n);
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            // A transfer left pending by an earlier cancel that did not come back is waited
            // for instead of submitting a second one: its data comes first.
            if self.ep_in.pending() == 0 {
                let len = in_request_len(buf.len(), self.mps_in, MAX_IN_TRANSFER);
                let b = self.in_buffer(len);
                self.ep_in.submit(b);
            }
            let (c, cancelled) = match self.ep_in.wait_next_complete(remaining(deadline)) {
                // A late transfer we cancelled earlier may come back as Cancelled: that is ours.
                Some(c) => (c, std::mem::take(&mut self.in_stale)),
                None => match cancel_and_drain(&mut self.ep_in, &self.desc) {
                    // Cancelled before anything arrived: a plain timeout.
                    Some(c) if c.buffer.is_empty() && c.status == Err(TransferError::Cancelled) => {
                        self.spare_in = Some(c.buffer);
                        return Err(TransportError::Timeout {
                            op: "receive from the modem over USB",
                            after: timeout,
                        });
                    }
                    // Data, a ZLP or an error that raced the timeout is handled, never dropped.
                    Some(c) => (c, true),
                    None => {
                        self.in_stale = true;
                        return Err(TransportError::Timeout {
                            op: "receive from the modem over USB",
                            after: timeout,
                        });
                    }
                },
            };
            if let Some(n) = self.accept_in(c, buf, cancelled)? {
                return Ok(n);
            }
            if cancelled && remaining(deadline).is_zero() {
                return Err(TransportError::Timeout {
                    op: "receive from the modem over USB",
                    after: timeout,
                });
            }
        }
    }

    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        let deadline = Instant::now().checked_add(timeout);
        let timed_out = || TransportError::Timeout {
            op: "send to the modem over USB (it is not reading)",
            after: timeout,
        };
        // A transfer still pending from an earlier write that timed out and did not come back
        // must finish before new data goes out, or completions would be matched wrongly.
        while self.ep_out.pending() > 0 {
            match self.ep_out.wait_next_complete(remaining(deadline)) {
                Some(c) => self.spare_out = Some(c.buffer),
                None => return Err(timed_out()),
            }
        }
        let plan = WritePlan::new(data.len(), self.mps_out, self.opts.out_chunk, self.opts.zlp);
        let zlp: &[u8] = &[];
        let pieces = plan
            .chunks()
            .map(|r| &data[r])
            .chain(plan.trailing_zlp().then_some(zlp));
        for piece in pieces {
            let mut b = self.out_buffer(piece.len());
            b.extend_from_slice(piece);
            self.ep_out.submit(b);
            let c = match self.ep_out.wait_next_complete(remaining(deadline)) {
                Some(c) => c,
                None => match cancel_and_drain(&mut self.ep_out, &self.desc) {
                    // Completed just as the time ran out: count it as sent.
                    Some(c) if c.status.is_ok() && c.actual_len == piece.len() => c,
                    Some(c) => {
                        self.spare_out = Some(c.buffer);
                        return Err(timed_out());
                    }
                    None => return Err(timed_out()),
                },
            };
            let status = c.status;
            let sent = c.actual_len;
            self.spare_out = Some(c.buffer);
            if let Err(e) = status {
                return Err(self.transfer_failed(e, false));
            }
            if sent != piece.len() {
                return Err(TransportError::Io(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "{}: the modem took {sent} of {} bytes in one transfer",
                        self.desc,
                        piece.len()
                    ),
                )));
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.desc.clone()
    }

    fn framing(&self) -> Framing {
        Framing::Packet {
            max_packet_size: self.mps_in,
        }
    }
}

/// `flock` the usbfs node (`/dev/bus/usb/BBB/DDD`) so that two qrescue processes running as
/// different users (whose lock folders may differ) still exclude each other. Best effort: a
/// node that cannot be opened here is reported by the real open that follows.
fn lock_usbfs_node(c: &UsbCandidate, what: &str) -> Result<Option<File>, TransportError> {
    let node = format!("/dev/bus/usb/{:03}/{:03}", c.bus, c.address);
    let Ok(file) = File::open(&node) else {
        return Ok(None);
    };
    match lock::try_flock(std::os::fd::AsFd::as_fd(&file)) {
        Ok(()) => Ok(Some(file)),
        Err(LockFailure::Held { .. }) => Err(TransportError::Busy(format!(
            "{what} ({node}) is already open in another qrescue, perhaps run by another user; two programs on one modem in download mode can wedge its boot ROM until a power cycle — let it finish, then try again"
        ))),
        Err(LockFailure::Io(e)) => {
            tracing::debug!(target: "qrescue::usb", "no flock on {node}: {e}");
            Ok(None)
        }
    }
}

/// The kernel driver bound to an interface, from sysfs (`qcserial`, `usbfs` for a program).
#[cfg(target_os = "linux")]
fn bound_driver(info: &nusb::DeviceInfo, location: &str, config: u8, iface: u8) -> Option<String> {
    let link = info
        .sysfs_path()
        .join(format!("{location}:{config}.{iface}"))
        .join("driver");
    let target = std::fs::read_link(link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

#[cfg(not(target_os = "linux"))]
fn bound_driver(_: &nusb::DeviceInfo, _: &str, _: u8, _: u8) -> Option<String> {
    None
}

/// Map an nusb open/claim error to what the person should do.
fn nusb_error(e: &nusb::Error, what: &str, doing: &str) -> TransportError {
    open_error(
        e.kind(),
        e.os_error().map(|c| c as i32),
        &e.to_string(),
        what,
        doing,
    )
}

/// The mapping behind [`nusb_error`], on its parts so it can be tested.
fn open_error(
    kind: nusb::ErrorKind,
    errno: Option<i32>,
    e: &str,
    what: &str,
    doing: &str,
) -> TransportError {
    match (kind, errno) {
        (nusb::ErrorKind::PermissionDenied, _) | (_, Some(libc::EACCES | libc::EPERM)) => {
            TransportError::Permission(format!("cannot {doing} {what} ({e}); {UDEV_HINT}"))
        }
        (nusb::ErrorKind::Busy, _) | (_, Some(libc::EBUSY)) => {
            TransportError::Busy(format!("{what} is in use: could not {doing} ({e}); {BUSY_HINT}"))
        }
        (nusb::ErrorKind::Disconnected, _) | (_, Some(libc::ENODEV)) => TransportError::Disconnected(format!(
            "{what} left the bus while trying to {doing} ({e}); it probably reset or re-enumerated — wait for it to reappear and try again"
        )),
        (nusb::ErrorKind::NotFound, _) => TransportError::Io(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{what}: could not {doing}: {e}"),
        )),
        _ => TransportError::Io(io::Error::other(format!("{what}: could not {doing}: {e}"))),
    }
}

/// Map a failed bulk transfer.
fn transfer_error(e: TransferError, desc: &str, ep: u8) -> TransportError {
    match e {
        TransferError::Disconnected => TransportError::Disconnected(format!(
            "{desc} left the bus (unplugged, reset or re-enumerating)"
        )),
        TransferError::Stall => TransportError::Io(io::Error::other(format!(
            "{desc}: the modem stalled endpoint 0x{ep:02x} (it refused the transfer); the halt was cleared"
        ))),
        TransferError::Fault => TransportError::Io(io::Error::other(format!(
            "{desc}: USB protocol error on endpoint 0x{ep:02x} (the kind dmesg shows as error -71): check the cable, power and hub — a short cable straight to the host helps; it can also be the modem's firmware"
        ))),
        TransferError::Cancelled => TransportError::Io(io::Error::new(
            io::ErrorKind::Interrupted,
            format!("{desc}: the transfer on 0x{ep:02x} was cancelled by the system"),
        )),
        other => TransportError::Io(io::Error::other(format!(
            "{desc}: transfer on endpoint 0x{ep:02x} failed: {other}"
        ))),
    }
}

#[cfg(test)]
mod tests;
