//! Text dumps people paste, into [`DeviceSnapshot`]s: `lsusb` and `lsusb -v`, `usb-devices`
//! (`T: P: S: C: I: E:` lines, also as QFirehose prints them with its `[004.273]:` prefix and
//! `/sys/bus/usb/devices/3-1 5c6/9008/0` lines), and Windows device paths (`usb#vid_05c6&pid_9008`
//! with a `Bus Name:`). Used by the real-data tests and by `qrescue list --from-text`.
//!
//! The text is untrusted: nothing here panics, every count is bounded, and lines that are not
//! understood are skipped (excerpts are full of them). Values that look like a field but do not
//! parse are reported as warnings.

use std::collections::HashMap;

use super::snapshot::{DeviceSnapshot, EndpointSnapshot, InterfaceSnapshot, Speed, TransferType};

/// The largest text we read (a full `lsusb -v` of a busy host is well under 1 MiB).
pub const MAX_TEXT: usize = 16 << 20;
pub const MAX_DEVICES: usize = 1024;
pub const MAX_INTERFACES: usize = 64;
pub const MAX_ENDPOINTS: usize = 32;
const MAX_WARNINGS: usize = 100;

/// Why a dump gave nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DumpError {
    #[error("the text is {0} bytes, more than the {MAX_TEXT} a USB listing can reasonably be")]
    TooLarge(usize),
    #[error(
        "no USB device description was found (expected lsusb, lsusb -v or usb-devices output)"
    )]
    NoDevices,
}

/// One device found in a dump, with what the dump itself says about completeness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedDevice {
    pub snapshot: DeviceSnapshot,
    /// 1-based line where the device's description starts.
    pub line: usize,
    /// bNumInterfaces / `#Ifs=` as the dump states it.
    pub declared_interfaces: Option<u8>,
    /// The speed was not stated and was inferred from the bulk wMaxPacketSize.
    pub speed_inferred: bool,
}

impl ParsedDevice {
    /// Notes about the dump itself (a cut listing, an inferred speed).
    pub fn dump_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let listed = self
            .snapshot
            .interfaces
            .iter()
            .filter(|i| i.alt == 0)
            .count();
        if let Some(n) = self.declared_interfaces {
            if listed < n as usize {
                notes.push(format!(
                    "the dump lists {listed} of the {n} interfaces the descriptor declares (cut?)"
                ));
            }
        }
        if self.speed_inferred {
            if let Some(s) = self.snapshot.speed {
                notes.push(format!(
                    "speed {} inferred from the bulk packet size (not stated in the dump)",
                    s.label()
                ));
            }
        }
        notes
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParsedDump {
    pub devices: Vec<ParsedDevice>,
    /// Lines that looked like fields but did not parse, devices without an ID, limits reached.
    pub warnings: Vec<String>,
}

#[derive(Debug, Default)]
struct EpB {
    address: Option<u8>,
    transfer: Option<TransferType>,
    attrs: Option<u8>,
    mps: Option<u16>,
}

#[derive(Debug, Default)]
struct IfB {
    number: Option<u8>,
    alt: Option<u8>,
    class: Option<u8>,
    subclass: Option<u8>,
    protocol: Option<u8>,
    eps: Vec<EpB>,
    driver: Option<String>,
}

#[derive(Debug, Default)]
struct DevB {
    line: usize,
    bus: Option<u8>,
    ports: Vec<u8>,
    address: u8,
    vid: Option<u16>,
    pid: Option<u16>,
    bcd: u16,
    manufacturer: Option<String>,
    product: Option<String>,
    serial: Option<String>,
    speed: Option<Speed>,
    declared_ifs: Option<u8>,
    ifs: Vec<IfB>,
    /// A usb-devices `P:` line was seen (a second one starts the next device).
    p_seen: bool,
    /// A `C:*` (active configuration) marker was seen; interfaces of other configurations are
    /// skipped.
    starred_config: bool,
    skip_ifs: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Device,
    Config,
    Interface,
    Endpoint,
    Other,
}

struct Parser {
    out: ParsedDump,
    cur: Option<DevB>,
    block: Block,
    /// usb-devices tree: (bus, device number) → port chain.
    chains: HashMap<(u8, u8), Vec<u8>>,
    lineno: usize,
}

/// Parse a dump. Errors only when the text is too large or describes no device at all.
pub fn parse_dump(text: &str) -> Result<ParsedDump, DumpError> {
    if text.len() > MAX_TEXT {
        return Err(DumpError::TooLarge(text.len()));
    }
    let mut p = Parser {
        out: ParsedDump::default(),
        cur: None,
        block: Block::Other,
        chains: HashMap::new(),
        lineno: 0,
    };
    for (i, raw) in text.lines().enumerate() {
        p.lineno = i + 1;
        let line = strip_prefix(raw.trim());
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            // Annotations between pasted excerpts: a description does not run across them.
            p.finish_device();
            p.block = Block::Other;
            continue;
        }
        p.line(line);
    }
    p.finish_device();
    if p.out.devices.is_empty() {
        return Err(DumpError::NoDevices);
    }
    Ok(p.out)
}

/// Drop a log prefix such as QFirehose's `[004.273]:` or a kernel timestamp `[ 12.5]`.
fn strip_prefix(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let inside = &rest[..end];
            if !inside.is_empty()
                && inside
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == ' ')
            {
                let after = &rest[end + 1..];
                return after.strip_prefix(':').unwrap_or(after).trim_start();
            }
        }
    }
    line
}

/// `key=value` in a usb-devices line; the value may follow spaces (`Dev#=  2`) and ends at
/// whitespace. The key must start a token.
fn kv<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    let mut from = 0;
    while let Some(off) = line.get(from..)?.find(&pat) {
        let at = from + off;
        let boundary = at == 0 || line[..at].ends_with(|c: char| c.is_whitespace());
        if boundary {
            let rest = line[at + pat.len()..].trim_start();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            return Some(&rest[..end]);
        }
        from = at + pat.len();
    }
    None
}

/// `ff(vend.)` → `ff`; `81(I)` → `81`.
fn before_paren(v: &str) -> &str {
    v.split('(').next().unwrap_or(v)
}

fn hex_u8(v: &str) -> Option<u8> {
    u8::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

fn hex_u16(v: &str) -> Option<u16> {
    u16::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

/// A number as lsusb prints it: decimal, or `0x..` hex.
fn num_u16(v: &str) -> Option<u16> {
    match v.strip_prefix("0x") {
        Some(h) => u16::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

fn num_u8(v: &str) -> Option<u8> {
    num_u16(v).and_then(|n| u8::try_from(n).ok())
}

/// bcdDevice as `4.14` (lsusb) or `03.18` (usb-devices): both halves are hex digits.
fn bcd(v: &str) -> Option<u16> {
    let (a, b) = v.split_once('.')?;
    if a.is_empty() || a.len() > 2 || b.len() != 2 {
        return None;
    }
    Some((u16::from_str_radix(a, 16).ok()? << 8) | u16::from_str_radix(b, 16).ok()?)
}

/// usb-devices `Spd=` in Mbit/s.
fn speed_mbps(v: &str) -> Option<Speed> {
    match v {
        "1.5" => Some(Speed::Low),
        "12" => Some(Speed::Full),
        "480" => Some(Speed::High),
        "5000" => Some(Speed::Super),
        "10000" | "20000" => Some(Speed::SuperPlus),
        _ => None,
    }
}

/// lsusb's `Negotiated speed: SuperSpeed (5Gbps)`.
fn speed_words(v: &str) -> Option<Speed> {
    let v = v.to_ascii_lowercase();
    if v.contains("10gbps") || v.contains("20gbps") || v.contains("superspeed+") {
        Some(Speed::SuperPlus)
    } else if v.contains("5gbps") || v.contains("superspeed") {
        Some(Speed::Super)
    } else if v.contains("480mbps") || v.contains("high") {
        Some(Speed::High)
    } else if v.contains("12mbps") || v.contains("full") {
        Some(Speed::Full)
    } else if v.contains("1.5mbps") || v.contains("1mbps") || v.contains("low") {
        Some(Speed::Low)
    } else {
        None
    }
}

fn transfer_of(attrs: u8) -> TransferType {
    match attrs & 3 {
        0 => TransferType::Control,
        1 => TransferType::Isochronous,
        2 => TransferType::Bulk,
        _ => TransferType::Interrupt,
    }
}

/// A sysfs location such as `3-1.2` (bus 3, ports 1 then 2).
pub fn parse_location(loc: &str) -> Option<(u8, Vec<u8>)> {
    let (bus, chain) = loc.split_once('-')?;
    let bus: u8 = bus.parse().ok()?;
    let mut ports = Vec::new();
    for p in chain.split('.') {
        let n: u8 = p.parse().ok()?;
        if n == 0 || ports.len() >= 7 {
            return None;
        }
        ports.push(n);
    }
    Some((bus, ports))
}

impl Parser {
    fn warn(&mut self, msg: String) {
        self.warn_at(self.lineno, msg);
    }

    fn warn_at(&mut self, line: usize, msg: String) {
        if self.out.warnings.len() < MAX_WARNINGS {
            self.out.warnings.push(format!("line {line}: {msg}"));
        }
    }

    fn start_device(&mut self) -> bool {
        self.finish_device();
        if self.out.devices.len() >= MAX_DEVICES {
            self.warn(format!(
                "more than {MAX_DEVICES} devices; the rest is ignored"
            ));
            return false;
        }
        self.cur = Some(DevB {
            line: self.lineno,
            ..DevB::default()
        });
        self.block = Block::Device;
        true
    }

    fn finish_device(&mut self) {
        let Some(d) = self.cur.take() else { return };
        let (Some(vid), Some(pid)) = (d.vid, d.pid) else {
            self.warn_at(
                d.line,
                "a device without idVendor/idProduct was skipped".into(),
            );
            return;
        };
        let mut interfaces = Vec::new();
        let mut unnumbered = false;
        for (k, i) in d.ifs.into_iter().enumerate() {
            // `lsusb -v | grep bInterface…` pastes may lack the numbers: count in order.
            let number = match i.number {
                Some(n) => n,
                None => {
                    unnumbered = true;
                    u8::try_from(k).unwrap_or(u8::MAX)
                }
            };
            let endpoints = i
                .eps
                .into_iter()
                .filter_map(|e| {
                    Some(EndpointSnapshot {
                        address: e.address?,
                        transfer: e.transfer.or(e.attrs.map(transfer_of))?,
                        max_packet_size: e.mps.unwrap_or(0),
                    })
                })
                .collect();
            interfaces.push(InterfaceSnapshot {
                number,
                alt: i.alt.unwrap_or(0),
                class: i.class.unwrap_or(0),
                subclass: i.subclass.unwrap_or(0),
                protocol: i.protocol.unwrap_or(0),
                endpoints,
                driver: i.driver,
                tty: None,
            });
        }
        if unnumbered {
            self.warn_at(
                d.line,
                "interfaces without bInterfaceNumber were numbered in the order listed".into(),
            );
        }
        let mut speed_inferred = false;
        let speed = d.speed.or_else(|| {
            let mps = interfaces
                .iter()
                .flat_map(|i| &i.endpoints)
                .filter(|e| e.transfer == TransferType::Bulk)
                .map(|e| e.max_packet_size)
                .max()?;
            let s = match mps {
                1024 => Speed::Super,
                512 => Speed::High,
                64 => Speed::Full,
                _ => return None,
            };
            speed_inferred = true;
            Some(s)
        });
        self.out.devices.push(ParsedDevice {
            snapshot: DeviceSnapshot {
                bus: d.bus.unwrap_or(0),
                ports: d.ports,
                address: d.address,
                vid,
                pid,
                bcd_device: d.bcd,
                manufacturer: d.manufacturer,
                product: d.product,
                serial: d.serial,
                speed,
                interfaces,
                origin: Some("text".into()),
            },
            line: d.line,
            declared_interfaces: d.declared_ifs,
            speed_inferred,
        });
    }

    fn new_interface(&mut self) {
        let Some(d) = self.cur.as_mut() else { return };
        if d.skip_ifs {
            self.block = Block::Other;
            return;
        }
        if d.ifs.len() >= MAX_INTERFACES {
            self.block = Block::Other;
            self.warn(format!("more than {MAX_INTERFACES} interfaces; ignored"));
            return;
        }
        d.ifs.push(IfB::default());
        self.block = Block::Interface;
    }

    fn new_endpoint(&mut self) -> bool {
        let Some(i) = self.cur.as_mut().and_then(|d| d.ifs.last_mut()) else {
            return false;
        };
        if i.eps.len() >= MAX_ENDPOINTS {
            self.warn(format!("more than {MAX_ENDPOINTS} endpoints; ignored"));
            return false;
        }
        i.eps.push(EpB::default());
        true
    }

    fn line(&mut self, line: &str) {
        if let Some(at) = line.find("Bus Name:") {
            // Windows: the bus-reported device description, i.e. the product string.
            let v = line[at + "Bus Name:".len()..].trim();
            if let Some(d) = self.cur.as_mut() {
                if !v.is_empty() {
                    d.product = Some(v.to_string());
                }
            }
            return;
        }
        // Device starts.
        if let Some(rest) = line.strip_prefix("Bus ") {
            self.bus_line(rest);
            return;
        }
        if let Some(at) = line.find("/sys/bus/usb/devices/") {
            self.sysfs_line(&line[at + "/sys/bus/usb/devices/".len()..]);
            return;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(at) = lower.find("usb#vid_") {
            self.windows_line(&lower[at + 8..]);
            return;
        }
        if line.len() >= 2 && line.as_bytes()[1] == b':' && line.as_bytes()[0].is_ascii_uppercase()
        {
            self.usb_devices_line(line);
            return;
        }
        if self.cur.is_none() {
            return;
        }
        if let Some(v) = line.strip_prefix("Negotiated speed:") {
            let s = speed_words(v);
            if let Some(d) = self.cur.as_mut() {
                d.speed = s.or(d.speed);
            }
            return;
        }
        if let Some(at) = line.find("find interface ") {
            // QFirehose: `usbfs_is_kernel_driver_alive find interface 0 has match the driver X`.
            let rest = &line[at + "find interface ".len()..];
            let n = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u8>().ok());
            let drv = rest
                .split("the driver ")
                .nth(1)
                .map(|d| d.trim().to_string());
            if let (Some(n), Some(drv), Some(d)) = (n, drv, self.cur.as_mut()) {
                if let Some(i) = d.ifs.iter_mut().find(|i| i.number == Some(n)) {
                    i.driver = Some(drv);
                }
            }
            return;
        }
        match line {
            "Device Descriptor:" => {
                self.block = Block::Device;
                return;
            }
            "Configuration Descriptor:" => {
                self.block = Block::Config;
                return;
            }
            "Interface Descriptor:" => {
                self.new_interface();
                return;
            }
            "Endpoint Descriptor:" => {
                self.block = if self.new_endpoint() {
                    Block::Endpoint
                } else {
                    Block::Other
                };
                return;
            }
            _ => {}
        }
        if line.ends_with(':') || line.starts_with("Device Status:") || line.starts_with("**") {
            self.block = Block::Other;
            return;
        }
        if let Some(v) = line.strip_prefix("Transfer Type") {
            let t = match v.trim() {
                "Bulk" => Some(TransferType::Bulk),
                "Interrupt" => Some(TransferType::Interrupt),
                "Isochronous" => Some(TransferType::Isochronous),
                "Control" => Some(TransferType::Control),
                _ => None,
            };
            if self.block == Block::Endpoint {
                if let Some(e) = self.cur_ep() {
                    e.transfer = t;
                }
            }
            return;
        }
        let mut parts = line.splitn(2, char::is_whitespace);
        let key = parts.next().unwrap_or("");
        let value = parts.next().unwrap_or("").trim();
        let first = value.split_whitespace().next().unwrap_or("");
        self.field(key, value, first);
    }

    fn cur_ep(&mut self) -> Option<&mut EpB> {
        self.cur.as_mut()?.ifs.last_mut()?.eps.last_mut()
    }

    fn cur_if(&mut self) -> Option<&mut IfB> {
        self.cur.as_mut()?.ifs.last_mut()
    }

    /// A string descriptor field: `iProduct  2 LTE-A Module` → `LTE-A Module`.
    fn string_value(value: &str) -> Option<String> {
        let mut it = value.splitn(2, char::is_whitespace);
        let _index = it.next()?;
        let s = it.next()?.trim();
        (!s.is_empty()).then(|| s.to_string())
    }

    fn field(&mut self, key: &str, value: &str, first: &str) {
        let block = self.block;
        macro_rules! num_or_warn {
            ($f:expr, $v:expr) => {
                match $f($v) {
                    Some(n) => n,
                    None => {
                        self.warn(format!("{key}: cannot read {:?}", $v));
                        return;
                    }
                }
            };
        }
        match (block, key) {
            (_, "idVendor") => {
                let n = num_or_warn!(num_u16, first);
                if let Some(d) = self.cur.as_mut() {
                    d.vid = Some(n);
                }
            }
            (_, "idProduct") => {
                let n = num_or_warn!(num_u16, first);
                if let Some(d) = self.cur.as_mut() {
                    d.pid = Some(n);
                }
            }
            (Block::Device, "bcdDevice") => {
                let n = num_or_warn!(bcd, first);
                if let Some(d) = self.cur.as_mut() {
                    d.bcd = n;
                }
            }
            (Block::Device, "iManufacturer" | "iProduct" | "iSerial") => {
                let s = Self::string_value(value);
                if let Some(d) = self.cur.as_mut() {
                    match key {
                        "iManufacturer" => d.manufacturer = s,
                        "iProduct" => d.product = s,
                        _ => d.serial = s,
                    }
                }
            }
            (Block::Config, "bNumInterfaces") => {
                let n = num_or_warn!(num_u8, first);
                if let Some(d) = self.cur.as_mut() {
                    d.declared_ifs = Some(n);
                }
            }
            (
                _,
                "bInterfaceNumber" | "bAlternateSetting" | "bInterfaceClass" | "bInterfaceSubClass"
                | "bInterfaceProtocol",
            ) => {
                let n = num_or_warn!(num_u8, first);
                // Outside an interface block (a grep'd paste), or a field seen twice: the
                // next interface begins.
                let taken = |i: &IfB| match key {
                    "bInterfaceNumber" => i.number.is_some(),
                    "bAlternateSetting" => i.alt.is_some(),
                    "bInterfaceClass" => i.class.is_some(),
                    "bInterfaceSubClass" => i.subclass.is_some(),
                    _ => i.protocol.is_some(),
                };
                let fresh = block != Block::Interface || self.cur_if().is_none_or(|i| taken(i));
                if fresh {
                    if self.cur.is_none() {
                        return;
                    }
                    self.new_interface();
                }
                if self.block != Block::Interface {
                    return;
                }
                if let Some(i) = self.cur_if() {
                    let slot = match key {
                        "bInterfaceNumber" => &mut i.number,
                        "bAlternateSetting" => &mut i.alt,
                        "bInterfaceClass" => &mut i.class,
                        "bInterfaceSubClass" => &mut i.subclass,
                        _ => &mut i.protocol,
                    };
                    *slot = Some(n);
                }
            }
            (Block::Interface | Block::Endpoint, "bEndpointAddress") => {
                let n = num_or_warn!(num_u8, first);
                let reuse = block == Block::Endpoint
                    && self.cur_ep().map(|e| e.address.is_none()) == Some(true);
                if !reuse && !self.new_endpoint() {
                    return;
                }
                if let Some(e) = self.cur_ep() {
                    e.address = Some(n);
                }
                self.block = Block::Endpoint;
            }
            (Block::Endpoint, "bmAttributes") => {
                let n = num_or_warn!(num_u8, first);
                if let Some(e) = self.cur_ep() {
                    e.attrs = Some(n);
                }
            }
            (Block::Endpoint, "wMaxPacketSize") => {
                let n = num_or_warn!(num_u16, first);
                if let Some(e) = self.cur_ep() {
                    e.mps = Some(n & 0x7ff);
                }
            }
            _ => {}
        }
    }

    /// `Bus 004 Device 007: ID 2c7c:0800 Quectel …`
    fn bus_line(&mut self, rest: &str) {
        let mut it = rest.split_whitespace();
        let bus = it.next().and_then(|v| v.parse::<u8>().ok());
        let dev = match (it.next(), it.next()) {
            (Some("Device"), Some(n)) => n.trim_end_matches(':').parse::<u8>().ok(),
            _ => None,
        };
        let id = match (it.next(), it.next()) {
            (Some("ID"), Some(id)) => id.split_once(':').and_then(|(v, p)| {
                Some((
                    u16::from_str_radix(v, 16).ok()?,
                    u16::from_str_radix(p, 16).ok()?,
                ))
            }),
            _ => None,
        };
        let (Some(bus), Some(dev), Some((vid, pid))) = (bus, dev, id) else {
            return;
        };
        if !self.start_device() {
            return;
        }
        if let Some(d) = self.cur.as_mut() {
            d.bus = Some(bus);
            d.address = dev;
            d.vid = Some(vid);
            d.pid = Some(pid);
        }
    }

    /// QFirehose: `3-1 5c6/9008/0` (location, then the uevent PRODUCT value).
    fn sysfs_line(&mut self, rest: &str) {
        let mut it = rest.split_whitespace();
        let Some((bus, ports)) = it.next().and_then(parse_location) else {
            return;
        };
        if !self.start_device() {
            return;
        }
        let product = it.next().and_then(|p| {
            let mut f = p.split('/');
            Some((
                hex_u16(f.next()?)?,
                hex_u16(f.next()?)?,
                f.next().and_then(hex_u16),
            ))
        });
        if let Some(d) = self.cur.as_mut() {
            d.bus = Some(bus);
            d.ports = ports;
            if let Some((v, p, b)) = product {
                d.vid = Some(v);
                d.pid = Some(p);
                d.bcd = b.unwrap_or(0);
            }
        }
    }

    /// Windows: `…usb#vid_05c6&pid_9008#…` (already lower case, after `usb#vid_`).
    fn windows_line(&mut self, rest: &str) {
        let vid = rest.get(..4).and_then(hex_u16);
        let pid = rest
            .get(4..)
            .and_then(|r| r.strip_prefix("&pid_"))
            .and_then(|r| r.get(..4))
            .and_then(hex_u16);
        if let (Some(v), Some(p)) = (vid, pid) {
            if self.start_device() {
                if let Some(d) = self.cur.as_mut() {
                    d.vid = Some(v);
                    d.pid = Some(p);
                }
            }
        }
    }

    fn usb_devices_line(&mut self, line: &str) {
        let tag = line.as_bytes()[0];
        let body = &line[2..];
        let starred = body.starts_with('*');
        let body = body.trim_start_matches('*');
        match tag {
            b'T' => self.t_line(body),
            b'P' => {
                let seen = self.cur.as_ref().map(|d| d.p_seen);
                if seen != Some(false) && !self.start_device() {
                    return;
                }
                // `Vendor=2c7c ProdID=0125 Rev=03.18` or QFirehose's
                // `/dev/bus/usb/003/002 idVendor=05c6 idProduct=9008`.
                let vid = kv(body, "Vendor")
                    .or(kv(body, "idVendor"))
                    .and_then(hex_u16);
                let pid = kv(body, "ProdID")
                    .or(kv(body, "idProduct"))
                    .and_then(hex_u16);
                let rev = kv(body, "Rev").and_then(bcd);
                let node = body
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("/dev/bus/usb/"))
                    .and_then(|p| p.split_once('/'))
                    .and_then(|(b, a)| Some((b.parse::<u8>().ok()?, a.parse::<u8>().ok()?)));
                if vid.is_none() || pid.is_none() {
                    self.warn("P: line without a readable vendor/product ID".into());
                }
                if let Some(d) = self.cur.as_mut() {
                    d.p_seen = true;
                    d.vid = vid.or(d.vid);
                    d.pid = pid.or(d.pid);
                    if let Some(r) = rev {
                        d.bcd = r;
                    }
                    if let Some((b, a)) = node {
                        d.bus = d.bus.or(Some(b));
                        d.address = a;
                    }
                }
            }
            b'S' => {
                let Some(d) = self.cur.as_mut() else { return };
                let body = body.trim();
                if let Some((k, v)) = body.split_once('=') {
                    let v = v.trim();
                    let v = (!v.is_empty()).then(|| v.to_string());
                    match k.trim() {
                        "Manufacturer" => d.manufacturer = v,
                        "Product" => d.product = v,
                        "SerialNumber" => d.serial = v,
                        _ => {}
                    }
                }
            }
            b'C' => {
                let Some(d) = self.cur.as_mut() else { return };
                if starred {
                    d.starred_config = true;
                    d.skip_ifs = false;
                    d.ifs.clear();
                } else {
                    d.skip_ifs = d.starred_config;
                }
                if !d.skip_ifs {
                    let n = kv(body, "#Ifs")
                        .and_then(|v| v.parse::<u8>().ok())
                        .or_else(|| {
                            // QFirehose: `C: /dev/bus/usb/003/002 bNumInterfaces: 1`
                            body.split("bNumInterfaces:")
                                .nth(1)
                                .and_then(|v| v.trim().parse::<u8>().ok())
                        });
                    if n.is_some() {
                        d.declared_ifs = n;
                    }
                }
                self.block = Block::Config;
            }
            b'I' => {
                if self.cur.is_none() {
                    return;
                }
                let number = kv(body, "If#").and_then(|v| match v.strip_prefix("0x") {
                    Some(h) => u8::from_str_radix(h, 16).ok(),
                    None => v.parse().ok(),
                });
                let Some(number) = number else {
                    self.warn("I: line without a readable If#".into());
                    return;
                };
                self.new_interface();
                if self.block != Block::Interface {
                    return;
                }
                let h = |k: &str| kv(body, k).map(before_paren).and_then(hex_u8);
                let driver = kv(body, "Driver")
                    .filter(|d| !d.starts_with('('))
                    .map(str::to_string);
                let (class, subclass, protocol) = (h("Cls"), h("Sub"), h("Prot"));
                let alt = kv(body, "Alt").and_then(|v| v.parse().ok()).unwrap_or(0);
                if let Some(i) = self.cur_if() {
                    i.number = Some(number);
                    i.alt = Some(alt);
                    i.class = class;
                    i.subclass = subclass;
                    i.protocol = protocol;
                    i.driver = driver;
                }
                // Endpoint lines follow.
                self.block = Block::Interface;
            }
            b'E' => {
                if self.block != Block::Interface && self.block != Block::Endpoint {
                    return;
                }
                let addr = kv(body, "Ad").map(before_paren).and_then(hex_u8);
                let attrs = kv(body, "Atr").map(before_paren).and_then(hex_u8);
                let mps = kv(body, "MxPS").and_then(|v| v.parse::<u16>().ok());
                let (Some(addr), Some(attrs)) = (addr, attrs) else {
                    self.warn("E: line without a readable Ad= or Atr=".into());
                    return;
                };
                if !self.new_endpoint() {
                    return;
                }
                if let Some(e) = self.cur_ep() {
                    e.address = Some(addr);
                    e.attrs = Some(attrs);
                    e.mps = mps;
                }
                self.block = Block::Endpoint;
            }
            _ => {}
        }
    }

    /// `T:  Bus=03 Lev=01 Prnt=01 Port=00 Cnt=01 Dev#=  2 Spd=480 MxCh= 0`
    fn t_line(&mut self, body: &str) {
        let n = |k: &str| kv(body, k).and_then(|v| v.parse::<u8>().ok());
        let (Some(bus), Some(lev)) = (n("Bus"), n("Lev")) else {
            self.warn("T: line without Bus= and Lev=".into());
            return;
        };
        let dev = n("Dev#");
        let chain = if lev == 0 {
            Some(Vec::new())
        } else {
            let port = n("Port").and_then(|p| p.checked_add(1));
            let parent = if lev == 1 {
                Some(Vec::new())
            } else {
                n("Prnt").and_then(|p| self.chains.get(&(bus, p)).cloned())
            };
            match (parent, port) {
                (Some(mut c), Some(p)) if c.len() < 7 => {
                    c.push(p);
                    Some(c)
                }
                _ => None,
            }
        };
        if chain.is_none() {
            self.warn("T: line whose parent hub is not in the listing; port chain unknown".into());
        }
        if !self.start_device() {
            return;
        }
        if let (Some(dev), Some(c)) = (dev, &chain) {
            if self.chains.len() < MAX_DEVICES * 2 {
                self.chains.insert((bus, dev), c.clone());
            }
        }
        let speed = kv(body, "Spd").and_then(speed_mbps);
        if let Some(d) = self.cur.as_mut() {
            d.bus = Some(bus);
            d.ports = chain.unwrap_or_default();
            d.address = dev.unwrap_or(0);
            d.speed = speed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const USB_DEVICES: &str = "\
T:  Bus=03 Lev=00 Prnt=00 Port=00 Cnt=00 Dev#=  1 Spd=480 MxCh= 4
D:  Ver= 2.00 Cls=09(hub  ) Sub=00 Prot=01 MxPS=64 #Cfgs=  1
P:  Vendor=1d6b ProdID=0002 Rev=05.15
S:  Manufacturer=Linux 5.15.0 xhci-hcd
S:  Product=xHCI Host Controller
C:  #Ifs= 1 Cfg#= 1 Atr=e0 MxPwr=0mA
I:  If#= 0 Alt= 0 #EPs= 1 Cls=09(hub  ) Sub=00 Prot=00 Driver=hub
E:  Ad=81(I) Atr=03(Int.) MxPS=   4 Ivl=256ms

T:  Bus=03 Lev=01 Prnt=01 Port=01 Cnt=01 Dev#=  2 Spd=480 MxCh= 4
P:  Vendor=05e3 ProdID=0610 Rev=93.02
C:  #Ifs= 1 Cfg#= 1 Atr=e0 MxPwr=100mA
I:  If#= 0 Alt= 0 #EPs= 1 Cls=09(hub  ) Sub=00 Prot=00 Driver=hub

T:  Bus=03 Lev=02 Prnt=02 Port=02 Cnt=01 Dev#=  5 Spd=480 MxCh= 0
D:  Ver= 2.00 Cls=00(>ifc ) Sub=00 Prot=00 MxPS=64 #Cfgs=  1
P:  Vendor=2c7c ProdID=0125 Rev=03.18
S:  Manufacturer=Quectel
S:  Product=EG25-G
C:  #Ifs= 5 Cfg#= 1 Atr=a0 MxPwr=500mA
I:  If#=0x0 Alt= 0 #EPs= 2 Cls=ff(vend.) Sub=ff Prot=ff Driver=option
E:  Ad=81(I) Atr=02(Bulk) MxPS= 512 Ivl=0ms
E:  Ad=01(O) Atr=02(Bulk) MxPS= 512 Ivl=0ms
I:  If#=0x1 Alt= 0 #EPs= 3 Cls=ff(vend.) Sub=00 Prot=00 Driver=option
E:  Ad=83(I) Atr=03(Int.) MxPS=  10 Ivl=32ms
E:  Ad=82(I) Atr=02(Bulk) MxPS= 512 Ivl=0ms
E:  Ad=02(O) Atr=02(Bulk) MxPS= 512 Ivl=0ms
I:  If#=0x4 Alt= 0 #EPs= 3 Cls=ff(vend.) Sub=ff Prot=ff Driver=(none)
";

    #[test]
    fn usb_devices_text_builds_the_port_chain_from_the_tree() {
        let d = parse_dump(USB_DEVICES).unwrap();
        assert_eq!(d.devices.len(), 3, "{:?}", d.warnings);
        let q = &d.devices[2];
        let s = &q.snapshot;
        assert_eq!(s.location(), "3-2.3");
        assert_eq!(s.id(), "2c7c:0125");
        assert_eq!(s.bcd_text(), "3.18");
        assert_eq!(s.product.as_deref(), Some("EG25-G"));
        assert_eq!(s.speed, Some(Speed::High));
        assert!(!q.speed_inferred);
        assert_eq!(s.interfaces.len(), 3);
        assert_eq!(s.interfaces[0].driver.as_deref(), Some("option"));
        assert_eq!(s.interfaces[2].driver, None);
        assert_eq!(s.interfaces[2].number, 4);
        assert_eq!(s.interfaces[1].endpoints.len(), 3);
        assert_eq!(
            s.interfaces[1].endpoints[0].transfer,
            TransferType::Interrupt
        );
        assert_eq!(q.declared_interfaces, Some(5));
        assert!(q.dump_notes().iter().any(|n| n.contains("3 of the 5")));
    }

    #[test]
    fn plain_lsusb_lines_are_devices_without_interfaces() {
        let d = parse_dump(
            "Bus 001 Device 002: ID 8087:0024 Intel Corp. Hub\n\
             Bus 003 Device 003: ID 05c6:9008 Qualcomm, Inc. Gobi Wireless Modem (QDL mode)\n",
        )
        .unwrap();
        assert_eq!(d.devices.len(), 2);
        let s = &d.devices[1].snapshot;
        assert_eq!((s.bus, s.address, s.vid, s.pid), (3, 3, 0x05c6, 0x9008));
        assert!(s.interfaces.is_empty());
    }

    #[test]
    fn nothing_recognisable_is_an_error() {
        assert_eq!(parse_dump("hello\nworld\n"), Err(DumpError::NoDevices));
        assert_eq!(parse_dump(""), Err(DumpError::NoDevices));
    }

    #[test]
    fn bad_field_values_become_warnings() {
        let d =
            parse_dump("Bus 001 Device 002: ID 2c7c:0125\nDevice Descriptor:\n  bcdDevice  x.yz\n")
                .unwrap();
        assert_eq!(d.devices.len(), 1);
        assert!(d.warnings.iter().any(|w| w.contains("bcdDevice")));
    }

    #[test]
    fn bcd_and_locations() {
        assert_eq!(bcd("4.14"), Some(0x0414));
        assert_eq!(bcd("03.18"), Some(0x0318));
        assert_eq!(bcd("0.00"), Some(0));
        assert_eq!(bcd("1.2"), None);
        assert_eq!(parse_location("3-1.2"), Some((3, vec![1, 2])));
        assert_eq!(parse_location("usb3"), None);
        assert_eq!(parse_location("3-0"), None);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,400}") {
            let _ = parse_dump(&s);
        }

        #[test]
        fn field_soup_never_panics(lines in proptest::collection::vec(
            prop_oneof![
                Just("Bus 001 Device 002: ID 2c7c:0125".to_string()),
                Just("Interface Descriptor:".to_string()),
                Just("Endpoint Descriptor:".to_string()),
                Just("Configuration Descriptor:".to_string()),
                Just("T:  Bus=03 Lev=02 Prnt=09 Port=255 Dev#=  5".to_string()),
                Just("C:* #Ifs= 5".to_string()),
                Just("C:  #Ifs= 2".to_string()),
                "[A-Z]: [ -~]{0,40}",
                "(bInterfaceNumber|bEndpointAddress|wMaxPacketSize|bcdDevice|idVendor|iProduct) [ -~]{0,12}",
                "[0-9]{1,3}-[0-9.]{0,12} [0-9a-f/]{0,12}",
                "\\[[0-9. ]{0,6}\\]:? ?[ -~]{0,30}",
                "usb#vid_[0-9a-f&_pid]{0,16}",
            ],
            0..60,
        )) {
            let text = lines.join("\n");
            if let Ok(d) = parse_dump(&text) {
                prop_assert!(d.devices.len() <= MAX_DEVICES);
                for dev in &d.devices {
                    prop_assert!(dev.snapshot.interfaces.len() <= MAX_INTERFACES);
                    prop_assert!(dev.snapshot.ports.len() <= 7);
                }
                prop_assert!(d.warnings.len() <= MAX_WARNINGS);
            }
        }
    }
}
