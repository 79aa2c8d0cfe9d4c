//! From a [`DeviceSnapshot`] to what the device is doing: EDL, crash dump, another Qualcomm
//! download/diag identity, Quectel normal mode (with its model and port map), fastboot, a known
//! broken state, or unrelated. Pure: no I/O. Ports are named by interface number, never by tty.

use serde::{Deserialize, Serialize};

use super::models::{
    self, PortLayout, QualcommKind, EDL_INTERFACE_PROTOCOLS, FASTBOOT_PID, GOOGLE_VID,
    QUALCOMM_VID, QUECTEL_DIAG_PROTOCOL, QUECTEL_VID,
};
use super::snapshot::{DeviceSnapshot, InterfaceSnapshot, TransferType};

/// The mode a device is in. The serde tag (and [`Mode::tag`]) is the stable short name used in
/// JSON and by other modules: `edl`, `crashdump`, `qdl`, `normal`, `fastboot`, `broken`, `other`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode")]
pub enum Mode {
    /// 05c6:9008: the boot ROM speaks Sahara and waits for a programmer.
    #[serde(rename = "edl")]
    Edl,
    /// 05c6:900e: the boot ROM offers RAM over Sahara memory debug after a crash.
    #[serde(rename = "crashdump")]
    CrashDump,
    /// Another Qualcomm download or diag identity (901d, 90db, 9006, 9025, 901f, 9091, or an
    /// unknown 05c6 PID with a boot-ROM interface).
    #[serde(rename = "qdl")]
    QualcommDownload { kind: QualcommKind, what: String },
    /// A Quectel module running its application firmware.
    #[serde(rename = "normal")]
    QuectelNormal { model: String },
    /// Android fastboot (18d1:d00d), which Quectel modules enter with AT+QFASTBOOT.
    #[serde(rename = "fastboot")]
    Fastboot,
    /// A known broken enumeration (not a mode a tool can talk to normally).
    #[serde(rename = "broken")]
    Broken {
        reason: String,
        /// The model the ID belongs to, when the table knows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        model: Option<String>,
    },
    /// Not a modem qrescue knows.
    #[serde(rename = "other")]
    Unrelated,
}

impl Mode {
    /// The stable short tag.
    pub fn tag(&self) -> &'static str {
        match self {
            Mode::Edl => "edl",
            Mode::CrashDump => "crashdump",
            Mode::QualcommDownload { .. } => "qdl",
            Mode::QuectelNormal { .. } => "normal",
            Mode::Fastboot => "fastboot",
            Mode::Broken { .. } => "broken",
            Mode::Unrelated => "other",
        }
    }

    /// A device qrescue cares about (everything but [`Mode::Unrelated`]).
    pub fn is_relevant(&self) -> bool {
        !matches!(self, Mode::Unrelated)
    }

    /// The boot ROM is talking Sahara on this identity (EDL or crash dump).
    pub fn speaks_sahara(&self) -> bool {
        matches!(self, Mode::Edl | Mode::CrashDump)
    }
}

/// What an interface is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortRole {
    /// The boot ROM's Sahara interface (EDL, crash dump, other download IDs).
    Sahara,
    /// QCDM/DIAG.
    Dm,
    /// GPS NMEA.
    Nmea,
    /// AT primary.
    At,
    /// AT secondary (PPP modem).
    Modem,
    /// Network (QMI/rmnet, MBIM, ECM).
    Net,
    /// Android debug bridge.
    Adb,
    /// Anything else.
    Other,
}

impl PortRole {
    pub fn label(self) -> &'static str {
        match self {
            PortRole::Sahara => "sahara",
            PortRole::Dm => "DM",
            PortRole::Nmea => "NMEA",
            PortRole::At => "AT",
            PortRole::Modem => "modem",
            PortRole::Net => "net",
            PortRole::Adb => "adb",
            PortRole::Other => "other",
        }
    }
}

/// One interface with its role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub interface: u8,
    pub role: PortRole,
    /// `ff/ff/30` when the descriptor is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
    /// False when the snapshot did not list interfaces and the port comes from the model table.
    pub seen: bool,
}

/// The classifier's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Classification {
    #[serde(flatten)]
    pub mode: Mode,
    /// For people: `EDL (emergency download, 9008)`.
    pub label: String,
    /// The serial from `_SN:` in the product string (EDL / crash dump).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edl_serial: Option<String>,
    /// Every interface with its role, by interface number.
    pub ports: Vec<Port>,
    /// Things a person should know (driver bindings, composition oddities, next steps).
    pub notes: Vec<String>,
}

impl Classification {
    pub fn tag(&self) -> &'static str {
        self.mode.tag()
    }

    /// Model names when known (`RM500Q/RM5xx (SDX55)`), in normal mode or a broken state.
    pub fn model(&self) -> Option<&str> {
        match &self.mode {
            Mode::QuectelNormal { model } => Some(model),
            Mode::Broken { model, .. } => model.as_deref(),
            _ => None,
        }
    }

    /// The first port with this role.
    pub fn port(&self, role: PortRole) -> Option<&Port> {
        self.ports.iter().find(|p| p.role == role)
    }

    /// The best serial to show: the EDL serial, else the USB iSerial.
    pub fn serial<'a>(&'a self, snap: &'a DeviceSnapshot) -> Option<&'a str> {
        self.edl_serial.as_deref().or(snap.serial.as_deref())
    }
}

/// The serial after `_SN:` in a product string such as `QUSB_BULK_CID:0410_SN:49CBD7EF`.
pub fn edl_serial(product: &str) -> Option<String> {
    let at = product.find("_SN:")?;
    let s: String = product[at + 4..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .take(32)
        .collect();
    (!s.is_empty()).then_some(s)
}

/// Does this interface look like a boot-ROM (Sahara) interface: ff/ff with protocol 0x10, 0x11,
/// 0x13 or 0xff, and a bulk pair when the endpoints are known.
pub fn is_edl_interface(i: &InterfaceSnapshot) -> bool {
    i.class == 0xff
        && i.subclass == 0xff
        && EDL_INTERFACE_PROTOCOLS.contains(&i.protocol)
        && (i.endpoints.is_empty() || i.bulk_pair().is_some())
}

fn class_text(i: &InterfaceSnapshot) -> Option<String> {
    // Class 0 is not a valid interface class: it means the dump did not say.
    (i.class != 0).then(|| format!("{:02x}/{:02x}/{:02x}", i.class, i.subclass, i.protocol))
}

fn alt0(snap: &DeviceSnapshot) -> impl Iterator<Item = &InterfaceSnapshot> {
    snap.interfaces.iter().filter(|i| i.alt == 0)
}

fn port_of(i: &InterfaceSnapshot, role: PortRole) -> Port {
    Port {
        interface: i.number,
        role,
        class: class_text(i),
        driver: i.driver.clone(),
        tty: i.tty.clone(),
        seen: true,
    }
}

fn unseen(interface: u8, role: PortRole) -> Port {
    Port {
        interface,
        role,
        class: None,
        driver: None,
        tty: None,
        seen: false,
    }
}

/// Classify one snapshot.
pub fn classify(snap: &DeviceSnapshot) -> Classification {
    let edl_serial = snap.product.as_deref().and_then(edl_serial);
    let mut c = Classification {
        mode: Mode::Unrelated,
        label: String::new(),
        edl_serial,
        ports: Vec::new(),
        notes: Vec::new(),
    };
    match (snap.vid, snap.pid) {
        (QUALCOMM_VID, pid) if models::qualcomm_id(pid).is_some() => {
            let id = models::qualcomm_id(pid).expect("checked");
            c.mode = match id.kind {
                QualcommKind::Edl => Mode::Edl,
                QualcommKind::CrashDump => Mode::CrashDump,
                kind => Mode::QualcommDownload {
                    kind,
                    what: id.label.to_string(),
                },
            };
            if id.kind == QualcommKind::Diag {
                other_ports(snap, &mut c);
            } else {
                sahara_ports(snap, &mut c);
            }
        }
        (vid, pid) if models::quectel_model(vid, pid).is_some() => {
            let m = models::quectel_model(vid, pid).expect("checked");
            quectel(snap, Some(m), &mut c);
        }
        (QUALCOMM_VID, _) if single_edl_interface(snap) => {
            c.mode = Mode::QualcommDownload {
                kind: QualcommKind::Download,
                what: format!(
                    "unknown Qualcomm ID {} with a boot-ROM interface",
                    snap.id()
                ),
            };
            sahara_ports(snap, &mut c);
        }
        (GOOGLE_VID, FASTBOOT_PID) => {
            c.mode = Mode::Fastboot;
            other_ports(snap, &mut c);
            c.notes.push(
                "Android fastboot: Quectel modules enter it with AT+QFASTBOOT (any other Android \
                 device in fastboot shows the same ID); qrescue does not speak fastboot, \
                 `fastboot reboot` restarts the module"
                    .into(),
            );
        }
        (QUECTEL_VID, _) => quectel(snap, None, &mut c),
        _ => other_ports(snap, &mut c),
    }
    c.label = label(&c.mode);
    c
}

fn label(mode: &Mode) -> String {
    match mode {
        Mode::Edl => "EDL (emergency download, 9008)".into(),
        Mode::CrashDump => "crash dump (900e)".into(),
        Mode::QualcommDownload { what, .. } => format!("Qualcomm {what}"),
        Mode::QuectelNormal { .. } => "normal mode".into(),
        Mode::Fastboot => "fastboot".into(),
        Mode::Broken { reason, .. } => format!("broken: {reason}"),
        Mode::Unrelated => "not a modem".into(),
    }
}

fn single_edl_interface(snap: &DeviceSnapshot) -> bool {
    let ifs: Vec<_> = alt0(snap).collect();
    ifs.len() == 1 && is_edl_interface(ifs[0])
}

/// Roles for a device the tables say nothing about per interface.
fn other_ports(snap: &DeviceSnapshot, c: &mut Classification) {
    for i in alt0(snap) {
        c.ports.push(port_of(i, generic_role(i)));
    }
}

fn generic_role(i: &InterfaceSnapshot) -> PortRole {
    match (i.class, i.subclass, i.protocol) {
        // The Android debug bridge interface triple.
        (0xff, 0x42, 0x01) => PortRole::Adb,
        // QMI/rmnet on Qualcomm-based modules (RM500Q if#4, EC25 if#4).
        (0xff, 0xff, 0xff) => PortRole::Net,
        // CDC communication / data (MBIM, ECM, NCM).
        (0x02, _, _) | (0x0a, _, _) => PortRole::Net,
        _ => PortRole::Other,
    }
}

fn sahara_ports(snap: &DeviceSnapshot, c: &mut Classification) {
    let mut found = false;
    // A dump that gives no class (e.g. `lsusb -v | grep bInterfaceProtocol`) with a single
    // interface: that interface is the boot ROM's.
    let ifs: Vec<_> = alt0(snap).collect();
    let lone_unknown = ifs.len() == 1 && ifs[0].class == 0;
    for i in ifs {
        if !found && (is_edl_interface(i) || lone_unknown) {
            found = true;
            c.ports.push(port_of(i, PortRole::Sahara));
            if i.protocol == 0x13 {
                c.notes.push(format!(
                    "interface {} has protocol 0x13, the Sahara ramdump protocol",
                    i.number
                ));
            }
            match (&i.driver, &i.tty) {
                (Some(d), Some(t)) => c.notes.push(format!(
                    "the kernel driver {d} holds interface {}: it is reachable as {t} (use \
                     --port {t}); a tool that talks USB directly must detach {d} first",
                    i.number
                )),
                (Some(d), None) => c.notes.push(format!(
                    "the kernel driver {d} holds interface {}; a tool that talks USB directly \
                     must detach it first",
                    i.number
                )),
                _ => {}
            }
        } else {
            c.ports.push(port_of(i, generic_role(i)));
        }
    }
    if snap.interfaces.is_empty() {
        // A one-line listing: the boot ROM's interface is interface 0.
        c.ports.push(unseen(0, PortRole::Sahara));
    } else if !found {
        c.notes.push(
            "no interface has the boot ROM's shape (class ff/ff, protocol 10/11/13/ff, bulk in \
             and out); the descriptor may be damaged — replug or power-cycle the modem"
                .into(),
        );
    }
    match c.mode {
        Mode::Edl => c.notes.push(
            "the boot ROM waits for a programmer; only one program may open it (a second opener \
             can wedge it until the power is cut) — stop ModemManager first"
                .into(),
        ),
        Mode::CrashDump => c.notes.push(
            "the modem crashed and offers its RAM: save it with `qrescue ramdump` before \
             anything resets it"
                .into(),
        ),
        _ => {}
    }
}

fn quectel(snap: &DeviceSnapshot, model: Option<&models::QuectelModel>, c: &mut Classification) {
    let n_ifs = alt0(snap).count();
    let product = snap.product.as_deref().unwrap_or("");
    let upper = product.to_ascii_uppercase();
    if snap.vid == QUECTEL_VID && (upper.contains("QHSUSB") || upper.contains("QUSB_")) {
        c.mode = Mode::Broken {
            reason: format!("Quectel ID with the boot ROM's product string \"{product}\""),
            model: model.map(|m| m.names.to_string()),
        };
        other_ports(snap, c);
        c.notes.push(
            "a broken boot state seen on EG25 (bcdDevice 0.00, product QHSUSB__BULK): only a \
             real power-off clears it — cut the module's power, a USB replug of a powered \
             board is not enough"
                .into(),
        );
        return;
    }
    if snap.vid == QUECTEL_VID && models::quectel_non_qualcomm(snap.pid) {
        c.mode = Mode::QuectelNormal {
            model: format!("ASR/HiSilicon-based Quectel module ({})", snap.id()),
        };
        other_ports(snap, c);
        c.notes.push(
            "2c7c:6xxx and 2c7c:8xxx (except 6008/6009) are not Qualcomm-based: Sahara, Firehose \
             and DIAG do not apply"
                .into(),
        );
        return;
    }
    let only = alt0(snap).next().filter(|_| n_ifs == 1);
    if let Some(i) = only.filter(|i| malformed(i)) {
        c.mode = Mode::Broken {
            reason: format!(
                "{} enumerated with a single interface (corrupt application firmware, not EDL)",
                snap.id()
            ),
            model: model.map(|m| m.names.to_string()),
        };
        other_ports(snap, c);
        c.notes.push(format!(
            "its only interface ({}) is not a serial/DIAG interface with a bulk pair; normal mode \
             has 4 or more interfaces, and one malformed interface on a Quectel ID was seen with \
             corrupt application firmware (RM5xx 2c7c:0801) — power-cycle, and if it stays, \
             bring it into EDL (test point) and reflash",
            class_text(i).unwrap_or_else(|| "class not known".into())
        ));
        return;
    }
    if n_ifs == 1 {
        c.notes.push(
            "only one interface is listed (normal mode has 4 or more): a cut dump, or a damaged \
             composition"
                .into(),
        );
    }
    let names = model
        .map(|m| m.names.to_string())
        .unwrap_or_else(|| format!("unknown Quectel module {}", snap.id()));
    c.mode = Mode::QuectelNormal { model: names };
    if let Some(note) = model.and_then(|m| m.note) {
        c.notes.push(note.to_string());
    }
    let layout = model.map(|m| m.layout).unwrap_or(PortLayout::UNKNOWN);
    normal_ports(snap, layout, c);
}

fn table_role(layout: &PortLayout, n: u8) -> Option<PortRole> {
    [
        (layout.dm, PortRole::Dm),
        (layout.nmea, PortRole::Nmea),
        (layout.at, PortRole::At),
        (layout.modem, PortRole::Modem),
    ]
    .into_iter()
    .find(|(i, _)| *i == Some(n))
    .map(|(_, r)| r)
}

fn normal_ports(snap: &DeviceSnapshot, layout: PortLayout, c: &mut Classification) {
    if snap.interfaces.is_empty() {
        for (n, role) in [
            (layout.dm, PortRole::Dm),
            (layout.nmea, PortRole::Nmea),
            (layout.at, PortRole::At),
            (layout.modem, PortRole::Modem),
        ] {
            if let Some(n) = n {
                c.ports.push(unseen(n, role));
            }
        }
        c.ports.sort_by_key(|p| p.interface);
        return;
    }
    let mut dm_by_protocol = None;
    for i in alt0(snap) {
        let role = match table_role(&layout, i.number) {
            Some(r) => r,
            None if layout.dm.is_none()
                && dm_by_protocol.is_none()
                && (i.class, i.subclass, i.protocol) == (0xff, 0xff, QUECTEL_DIAG_PROTOCOL) =>
            {
                dm_by_protocol = Some(i.number);
                PortRole::Dm
            }
            None => generic_role(i),
        };
        c.ports.push(port_of(i, role));
    }
    if let Some(n) = dm_by_protocol {
        c.notes.push(format!(
            "DM found on interface {n} by its interface protocol 0x30 (the model table does not \
             say where DM is)"
        ));
    }
    if let Some(dm) = layout.dm {
        match snap.interface(dm) {
            None => c.notes.push(format!(
                "there is no interface {dm}, where this model's DM port should be: the USB \
                 composition was changed (e.g. AT+QCFG=\"usbnet\") — the DIAG switch to EDL is \
                 not available"
            )),
            Some(i) if i.class != 0 && i.class != 0xff => c.notes.push(format!(
                "interface {dm} should be DM but has class {:02x}: the USB composition differs \
                 from the usual one",
                i.class
            )),
            Some(i) if i.class == 0xff && !has_bulk_pair_or_unknown(i) => c.notes.push(format!(
                "interface {dm} should be DM but has no bulk in/out pair"
            )),
            Some(_) => {}
        }
    }
    if let Some(p) = c.port(PortRole::Dm) {
        c.notes.push(format!(
            "the DM port (interface {}) can switch the modem to EDL (DIAG command 4b 65 01 00)",
            p.interface
        ));
    }
}

/// A lone interface that cannot be a working serial/DIAG port: a known class other than vendor
/// specific, or known endpoints without a bulk in/out pair.
fn malformed(i: &InterfaceSnapshot) -> bool {
    (i.class != 0 && i.class != 0xff) || (!i.endpoints.is_empty() && i.bulk_pair().is_none())
}

fn has_bulk_pair_or_unknown(i: &InterfaceSnapshot) -> bool {
    i.endpoints.is_empty()
        || i.endpoints
            .iter()
            .all(|e| e.transfer == TransferType::Bulk || e.transfer == TransferType::Interrupt)
            && i.bulk_pair().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::snapshot::{EndpointSnapshot, Speed};

    pub(crate) fn bulk(addr: u8, mps: u16) -> EndpointSnapshot {
        EndpointSnapshot {
            address: addr,
            transfer: TransferType::Bulk,
            max_packet_size: mps,
        }
    }

    fn iface(number: u8, class: (u8, u8, u8), eps: Vec<EndpointSnapshot>) -> InterfaceSnapshot {
        InterfaceSnapshot {
            number,
            alt: 0,
            class: class.0,
            subclass: class.1,
            protocol: class.2,
            endpoints: eps,
            driver: None,
            tty: None,
        }
    }

    fn dev(
        vid: u16,
        pid: u16,
        product: Option<&str>,
        ifs: Vec<InterfaceSnapshot>,
    ) -> DeviceSnapshot {
        DeviceSnapshot {
            bus: 3,
            ports: vec![1],
            address: 2,
            vid,
            pid,
            bcd_device: 0,
            manufacturer: None,
            product: product.map(str::to_string),
            serial: None,
            speed: Some(Speed::High),
            interfaces: ifs,
            origin: None,
        }
    }

    fn edl_if(proto: u8) -> InterfaceSnapshot {
        iface(
            0,
            (0xff, 0xff, proto),
            vec![bulk(0x81, 512), bulk(0x01, 512)],
        )
    }

    #[test]
    fn edl_serial_comes_from_the_product_string() {
        assert_eq!(
            edl_serial("QUSB_BULK_CID:0410_SN:49CBD7EF").as_deref(),
            Some("49CBD7EF")
        );
        assert_eq!(edl_serial("QUSB__BULK"), None);
        assert_eq!(edl_serial("x_SN:"), None);
        assert_eq!(edl_serial("_SN:ab12 tail").as_deref(), Some("ab12"));
    }

    #[test]
    fn edl_with_every_known_interface_protocol() {
        for proto in [0x10, 0x11, 0x13, 0xff] {
            let mut i = edl_if(proto);
            i.driver = Some("qcserial".into());
            i.tty = Some("/dev/ttyUSB0".into());
            let c = classify(&dev(
                0x05c6,
                0x9008,
                Some("QUSB_BULK_CID:0410_SN:49CBD7EF"),
                vec![i],
            ));
            assert_eq!(c.mode, Mode::Edl);
            assert_eq!(c.tag(), "edl");
            assert_eq!(c.edl_serial.as_deref(), Some("49CBD7EF"));
            let p = c.port(PortRole::Sahara).unwrap();
            assert_eq!((p.interface, p.tty.as_deref()), (0, Some("/dev/ttyUSB0")));
            assert!(c.notes.iter().any(|n| n.contains("qcserial")), "{c:?}");
            assert_eq!(
                c.notes.iter().any(|n| n.contains("0x13")),
                proto == 0x13,
                "{proto:x}"
            );
        }
    }

    #[test]
    fn edl_without_a_boot_rom_interface_says_so() {
        let c = classify(&dev(
            0x05c6,
            0x9008,
            None,
            vec![iface(0, (0xff, 0x00, 0x00), vec![])],
        ));
        assert_eq!(c.mode, Mode::Edl);
        assert!(c.port(PortRole::Sahara).is_none());
        assert!(c.notes.iter().any(|n| n.contains("boot ROM's shape")));
    }

    #[test]
    fn crash_dump_and_other_download_ids() {
        let c = classify(&dev(0x05c6, 0x900e, None, vec![edl_if(0x10)]));
        assert_eq!(c.tag(), "crashdump");
        assert!(c.notes.iter().any(|n| n.contains("ramdump")));
        for pid in [0x901d, 0x90db, 0x9006, 0x9025] {
            let c = classify(&dev(0x05c6, pid, None, vec![edl_if(0x10)]));
            assert_eq!(c.tag(), "qdl", "{pid:x}");
            assert!(c.port(PortRole::Sahara).is_some());
        }
        for pid in [0x901f, 0x9091] {
            let c = classify(&dev(0x05c6, pid, None, vec![]));
            assert!(matches!(
                c.mode,
                Mode::QualcommDownload {
                    kind: QualcommKind::Diag,
                    ..
                }
            ));
        }
        // An unknown Qualcomm PID with exactly one boot-ROM interface.
        let c = classify(&dev(0x05c6, 0x9999, None, vec![edl_if(0x11)]));
        assert_eq!(c.tag(), "qdl");
        // An unknown Qualcomm PID with something else is not ours.
        let c = classify(&dev(
            0x05c6,
            0x9999,
            None,
            vec![iface(0, (0x03, 0, 0), vec![])],
        ));
        assert_eq!(c.tag(), "other");
    }

    fn normal_ifs(n: u8) -> Vec<InterfaceSnapshot> {
        (0..n)
            .map(|k| {
                let class = if k == 0 {
                    (0xff, 0xff, 0x30)
                } else {
                    (0xff, 0, 0)
                };
                iface(k, class, vec![bulk(0x81 + k, 512), bulk(0x01 + k, 512)])
            })
            .collect()
    }

    #[test]
    fn quectel_normal_mode_maps_ports_by_interface_number() {
        let c = classify(&dev(0x2c7c, 0x0125, Some("EG25-G"), normal_ifs(5)));
        assert_eq!(
            c.mode,
            Mode::QuectelNormal {
                model: "EC25/EG25".into()
            }
        );
        let roles: Vec<(u8, PortRole)> = c.ports.iter().map(|p| (p.interface, p.role)).collect();
        assert_eq!(
            &roles[..4],
            &[
                (0, PortRole::Dm),
                (1, PortRole::Nmea),
                (2, PortRole::At),
                (3, PortRole::Modem)
            ]
        );
    }

    #[test]
    fn the_dm_exceptions_are_respected() {
        let c = classify(&dev(0x2c7c, 0x0514, None, normal_ifs(5)));
        assert_eq!(c.port(PortRole::Dm).unwrap().interface, 2);
        assert!(c.port(PortRole::At).is_none());
        for pid in [0x030a, 0x0128, 0x6008, 0x0803, 0x0127] {
            let c = classify(&dev(0x2c7c, pid, None, normal_ifs(6)));
            assert_eq!(c.port(PortRole::Dm).unwrap().interface, 3, "{pid:x}");
            assert_eq!(c.tag(), "normal");
        }
    }

    #[test]
    fn an_unknown_quectel_pid_finds_dm_by_protocol_0x30() {
        let c = classify(&dev(0x2c7c, 0x0999, None, normal_ifs(5)));
        assert_eq!(c.tag(), "normal");
        assert_eq!(c.port(PortRole::Dm).unwrap().interface, 0);
        assert!(c.notes.iter().any(|n| n.contains("0x30")));
    }

    #[test]
    fn a_changed_composition_is_pointed_out() {
        let mut ifs = normal_ifs(5);
        ifs.remove(0);
        let c = classify(&dev(0x2c7c, 0x0125, None, ifs));
        assert!(c.port(PortRole::Dm).is_none());
        assert!(c.notes.iter().any(|n| n.contains("no interface 0")));
        let mut ifs = normal_ifs(5);
        ifs[0].class = 0x02;
        let c = classify(&dev(0x2c7c, 0x0125, None, ifs));
        assert!(c.notes.iter().any(|n| n.contains("should be DM")));
    }

    #[test]
    fn a_listing_without_interfaces_uses_the_table() {
        let c = classify(&dev(0x2c7c, 0x0125, None, vec![]));
        assert_eq!(c.tag(), "normal");
        assert_eq!(c.ports.len(), 4);
        assert!(c.ports.iter().all(|p| !p.seen));
        let c = classify(&dev(0x05c6, 0x9008, None, vec![]));
        assert_eq!(c.port(PortRole::Sahara).map(|p| p.seen), Some(false));
    }

    #[test]
    fn broken_states() {
        let mut s = dev(
            0x2c7c,
            0x0125,
            Some("QHSUSB__BULK"),
            vec![iface(0, (0xff, 0xff, 0xff), vec![])],
        );
        s.manufacturer = Some("Qualcomm CDMA Technologies MSM".into());
        let c = classify(&s);
        assert_eq!(c.tag(), "broken");
        assert!(c.notes.iter().any(|n| n.contains("power-off")));
        // One interface without a bulk pair: corrupt application firmware.
        let int_only = EndpointSnapshot {
            address: 0x81,
            transfer: TransferType::Interrupt,
            max_packet_size: 8,
        };
        let c = classify(&dev(
            0x2c7c,
            0x0801,
            Some("RM520N-GL"),
            vec![iface(0, (0xff, 0xff, 0x30), vec![int_only])],
        ));
        assert_eq!(c.tag(), "broken");
        assert_eq!(c.model(), Some("RM520N/RM530N (RM5xx)"));
        // One well-formed DIAG interface (e.g. a cut dump) is not called broken.
        let c = classify(&dev(
            0x2c7c,
            0x0801,
            None,
            vec![iface(
                0,
                (0xff, 0xff, 0x30),
                vec![bulk(0x81, 1024), bulk(0x01, 1024)],
            )],
        ));
        assert_eq!(c.tag(), "normal");
        assert!(c.notes.iter().any(|n| n.contains("only one interface")));
    }

    #[test]
    fn bg96_with_bcd_0_00_and_qualcomm_strings_is_normal() {
        let mut s = dev(
            0x2c7c,
            0x0296,
            Some("Qualcomm CDMA Technologies MSM"),
            normal_ifs(5),
        );
        s.manufacturer = Some("Qualcomm, Incorporated".into());
        assert_eq!(classify(&s).tag(), "normal");
    }

    #[test]
    fn fastboot_asr_and_unrelated() {
        assert_eq!(
            classify(&dev(0x18d1, 0xd00d, None, vec![])).tag(),
            "fastboot"
        );
        let c = classify(&dev(0x2c7c, 0x6005, None, normal_ifs(4)));
        assert_eq!(c.tag(), "normal");
        assert!(c.port(PortRole::Dm).is_none());
        let c = classify(&dev(0x046d, 0xc52b, None, vec![]));
        assert_eq!(c.tag(), "other");
        assert!(!c.mode.is_relevant());
    }

    #[test]
    fn json_carries_the_short_tag() {
        let c = classify(&dev(0x2c7c, 0x0125, None, normal_ifs(5)));
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["mode"], "normal");
        assert_eq!(v["model"], "EC25/EG25");
        assert_eq!(v["ports"][0]["role"], "dm");
        let back: Classification = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }
}
