//! What we know about USB identities: the Quectel model table (PID → model names, which interface
//! is DM / NMEA / AT / modem, notes) and the Qualcomm download/diag IDs. Facts only, each row with
//! its source (docs PROTOCOLS.md §5, USERS.md §5). Ports are always named by interface number.

use serde::{Deserialize, Serialize};

/// Quectel's USB vendor ID.
pub const QUECTEL_VID: u16 = 0x2c7c;
/// Qualcomm's USB vendor ID (boot ROM download modes, and some older Quectel modules).
pub const QUALCOMM_VID: u16 = 0x05c6;
/// Google's vendor ID, used by Android fastboot (`18d1:d00d`), which Quectel modules enter with
/// `AT+QFASTBOOT`.
pub const GOOGLE_VID: u16 = 0x18d1;
pub const FASTBOOT_PID: u16 = 0xd00d;

/// Which interface carries which function in normal (application) mode. `None` = not known from
/// a public source; the classifier then does not guess (except DIAG by its interface protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PortLayout {
    /// QCDM/DIAG: the port that can switch the modem to EDL.
    pub dm: Option<u8>,
    /// GPS NMEA sentences.
    pub nmea: Option<u8>,
    /// AT primary port.
    pub at: Option<u8>,
    /// AT secondary port, used for PPP ("modem").
    pub modem: Option<u8>,
}

impl PortLayout {
    /// The ModemManager rules' layout: if#0 DM, if#1 NMEA, if#2 AT, if#3 modem.
    pub const STANDARD: PortLayout = PortLayout {
        dm: Some(0),
        nmea: Some(1),
        at: Some(2),
        modem: Some(3),
    };
    /// Only DM known, on interface `n` (QFirehose's exception lists).
    pub const fn dm_only(n: u8) -> PortLayout {
        PortLayout {
            dm: Some(n),
            nmea: None,
            at: None,
            modem: None,
        }
    }
    /// Nothing known.
    pub const UNKNOWN: PortLayout = PortLayout {
        dm: None,
        nmea: None,
        at: None,
        modem: None,
    };
}

/// One Quectel (or Quectel-on-Qualcomm-VID) normal-mode identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QuectelModel {
    pub vid: u16,
    pub pid: u16,
    /// Model names as people know them, `/`-separated.
    pub names: &'static str,
    pub layout: PortLayout,
    /// A laptop (M.2, MBIM-first) module, where QFirehose looks for DM on interface 3.
    pub laptop: bool,
    /// Where the row comes from.
    pub source: &'static str,
    /// Anything a person should know about this identity.
    pub note: Option<&'static str>,
}

const MM: &str = "ModemManager 77-mm-quectel-port-types.rules";
const QFH_LAPTOP: &str = "QFirehose usb_linux.c (DM on interface 3 on laptop modules)";

const fn std(pid: u16, names: &'static str, source: &'static str) -> QuectelModel {
    QuectelModel {
        vid: QUECTEL_VID,
        pid,
        names,
        layout: PortLayout::STANDARD,
        laptop: false,
        source,
        note: None,
    }
}

const fn laptop(pid: u16, names: &'static str, note: Option<&'static str>) -> QuectelModel {
    QuectelModel {
        vid: QUECTEL_VID,
        pid,
        names,
        layout: PortLayout::dm_only(3),
        laptop: true,
        source: QFH_LAPTOP,
        note,
    }
}

const fn dm0(pid: u16, names: &'static str, source: &'static str) -> QuectelModel {
    QuectelModel {
        vid: QUECTEL_VID,
        pid,
        names,
        layout: PortLayout::dm_only(0),
        laptop: false,
        source,
        note: None,
    }
}

/// The Quectel normal-mode table.
pub const QUECTEL_MODELS: &[QuectelModel] = &[
    std(0x0125, "EC25/EG25", MM),
    std(0x0121, "EC21", MM),
    std(0x0191, "EG91", MM),
    std(0x0195, "EG95", MM),
    std(0x0296, "BG96", MM),
    std(0x0306, "EG06/EP06/EM06", MM),
    std(0x0512, "EG12/EM12/EG18", MM),
    std(0x0800, "RM500Q/RM5xx (SDX55)", MM),
    QuectelModel {
        note: Some("users post this PID for RM520N-GL and RM530N-GL; interface 0 is DIAG (ff/ff/30) in a real descriptor, the other ports are not confirmed"),
        ..dm0(0x0801, "RM520N/RM530N (RM5xx)", "USERS.md §5; a real RM530N-GL lsusb -v")
    },
    dm0(0x0620, "EM20", "QFirehose log (Ubuntu_remote.log.txt)"),
    dm0(0x0435, "AG35", "bacnh.com Quectel Linux USB drivers page"),
    laptop(0x030a, "EM05-G", None),
    laptop(0x0311, "EM05-G", None),
    laptop(0x0310, "EM05-CN", None),
    laptop(
        0x0127,
        "EM05-CE",
        Some("interface 0 is not DM although it has bulk endpoints (QFirehose ReleaseNote 1.4.8)"),
    ),
    laptop(0x0315, "Quectel laptop module", None),
    laptop(0x0309, "Quectel laptop module", None),
    laptop(0x030d, "Quectel laptop module", None),
    laptop(0x0128, "EM060K-GL", None),
    laptop(
        0x6008,
        "EM061K-GL",
        Some("one of the two 2c7c:6xxx PIDs that are Qualcomm-based (QFirehose)"),
    ),
    laptop(
        0x6009,
        "EM061K-GL",
        Some("one of the two 2c7c:6xxx PIDs that are Qualcomm-based (QFirehose)"),
    ),
    laptop(0x0803, "RM520N-GL (Lenovo)", None),
    QuectelModel {
        vid: QUECTEL_VID,
        pid: 0x0514,
        names: "EG060K-EA",
        layout: PortLayout::dm_only(2),
        laptop: false,
        source: "QFirehose usb_linux.c (DM on interface 2)",
        note: None,
    },
    QuectelModel {
        layout: PortLayout::UNKNOWN,
        note: Some("EM05-G variant with Sahara/Firehose support; which interface is DM is not in a public source"),
        ..dm0(0x030c, "EM05-G", MM)
    },
    QuectelModel {
        layout: PortLayout::UNKNOWN,
        note: Some("EM05-G variant with Sahara/Firehose support; which interface is DM is not in a public source"),
        ..dm0(0x0313, "EM05-G", MM)
    },
    QuectelModel {
        layout: PortLayout::UNKNOWN,
        note: Some("EM05-G variant with Sahara/Firehose support; which interface is DM is not in a public source"),
        ..dm0(0x0314, "EM05-G", MM)
    },
    QuectelModel {
        layout: PortLayout::UNKNOWN,
        note: Some("EM05-CN variant with Sahara/Firehose support; which interface is DM is not in a public source"),
        ..dm0(0x0312, "EM05-CN", MM)
    },
    QuectelModel {
        vid: 0x3c93,
        pid: 0xffff,
        names: "3c93:ffff module (listed by QFirehose)",
        layout: PortLayout::dm_only(8),
        laptop: false,
        source: "QFirehose usb_linux.c (DM on interface 8)",
        note: None,
    },
    QuectelModel {
        vid: QUALCOMM_VID,
        pid: 0x9215,
        names: "EC20 (Qualcomm VID)",
        layout: PortLayout::UNKNOWN,
        laptop: false,
        source: "bacnh.com Quectel Linux USB drivers page",
        note: Some("an older Quectel module on Qualcomm's vendor ID"),
    },
    QuectelModel {
        vid: QUALCOMM_VID,
        pid: 0x9003,
        names: "UC20 (Qualcomm VID)",
        layout: PortLayout::UNKNOWN,
        laptop: false,
        source: "bacnh.com Quectel Linux USB drivers page",
        note: Some("an older Quectel module on Qualcomm's vendor ID"),
    },
];

/// The table row for `vid:pid`.
pub fn quectel_model(vid: u16, pid: u16) -> Option<&'static QuectelModel> {
    QUECTEL_MODELS.iter().find(|m| m.vid == vid && m.pid == pid)
}

/// Quectel PIDs 0x6xxx and 0x8xxx (except 6008/6009) are ASR/HiSilicon-based modules, which
/// QFirehose skips: no Sahara/Firehose, no Qualcomm DIAG.
pub fn quectel_non_qualcomm(pid: u16) -> bool {
    matches!(pid >> 12, 0x6 | 0x8) && pid != 0x6008 && pid != 0x6009
}

/// What a Qualcomm-VID download/diag identity is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QualcommKind {
    /// Emergency download: the boot ROM speaks Sahara and waits for a programmer (9008).
    Edl,
    /// Crash dump: Sahara memory debug offers RAM regions (900e).
    CrashDump,
    /// Another boot-ROM/download identity in the EDL family.
    Download,
    /// A Qualcomm-VID composition with a DIAG port (not a boot-ROM mode).
    Diag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct QualcommId {
    pub pid: u16,
    pub kind: QualcommKind,
    /// People's name for it.
    pub label: &'static str,
    pub source: &'static str,
}

/// Qualcomm (05c6) download and diag IDs.
pub const QUALCOMM_IDS: &[QualcommId] = &[
    QualcommId {
        pid: 0x9008,
        kind: QualcommKind::Edl,
        label: "QDLoader 9008 (emergency download, Sahara)",
        source: "linux-msm/qdl README; strongtz/edl-ng EdlManager.cs",
    },
    QualcommId {
        pid: 0x900e,
        kind: QualcommKind::CrashDump,
        label: "crash dump (Sahara memory debug)",
        source: "linux-msm/qdl README; bkerler/edl README",
    },
    QualcommId {
        pid: 0x901d,
        kind: QualcommKind::Download,
        label: "EDL-family 901d (also a Qualcomm Android diag+adb composition)",
        source: "linux-msm/qdl README; bkerler/edl Config/usb_ids.py",
    },
    QualcommId {
        pid: 0x90db,
        kind: QualcommKind::Download,
        label: "diag dump 90db",
        source: "linux-msm/qdl README",
    },
    QualcommId {
        pid: 0x9006,
        kind: QualcommKind::Download,
        label: "QHSUSB_ARMPRG emergency flash 9006",
        source: "strongtz/edl-ng EdlManager.cs",
    },
    QualcommId {
        pid: 0x9025,
        kind: QualcommKind::Download,
        label: "EDL-family 9025",
        source: "bkerler/edl Config/usb_ids.py",
    },
    QualcommId {
        pid: 0x901f,
        kind: QualcommKind::Diag,
        label: "SDX20 Qualcomm default composition 901f",
        source: "QFirehose ReleaseNote 1.4.7",
    },
    QualcommId {
        pid: 0x9091,
        kind: QualcommKind::Diag,
        label: "Quectel-related Qualcomm composition 9091",
        source: "QFirehose usb_linux.c",
    },
];

pub fn qualcomm_id(pid: u16) -> Option<&'static QualcommId> {
    QUALCOMM_IDS.iter().find(|q| q.pid == pid)
}

/// Interface protocols of a boot-ROM (EDL / ramdump) interface with class ff/ff: 0xff on older
/// devices, 0x10 / 0x11 on newer, 0x13 for Sahara ramdump (linux-msm/qdl src/usb.c, PR #286).
pub const EDL_INTERFACE_PROTOCOLS: [u8; 4] = [0x10, 0x11, 0x13, 0xff];

/// The interface protocol Quectel's newer firmware gives its DIAG interface (ff/ff/0x30), seen on
/// RM500Q and RM530N-GL descriptors.
pub const QUECTEL_DIAG_PROTOCOL: u8 = 0x30;

/// What qrescue can tell a person about forcing a model into EDL by bridging test pins
/// (USERS.md §7). Only sourced facts: where no public source gives a model's pad positions,
/// [`PinNote::pads`] says so and nothing is guessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinNote {
    /// The general instruction, in plain words with Quectel's own wording quoted.
    pub text: &'static str,
    /// Where `text` comes from.
    pub source: Option<&'static str>,
    /// Quirks reported for this model, each with its source.
    pub quirks: Vec<PinQuirk>,
    /// Where the pads are on this model, in words.
    pub pads: &'static str,
}

/// A quirk reported for one model when forcing it into EDL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinQuirk {
    pub text: &'static str,
    pub source: &'static str,
}

const QUECTEL_PIN_INSTRUCTION: &str = "Hold USB_BOOT at 1.8 V while the modem powers on, and let \
     go once 9008 shows. Quectel, quoted in a forum thread: \"'USB_BOOT' to 1.8 V before \
     'VDD_EXT' is powered on … after the QDloader port appeared, please disconnect\".";
const QUECTEL_PIN_SOURCE: &str =
    "https://forums.quectel.com/t/unbrick-quectel-rm502q-gl-in-900e/32031";

const EC25_SUSPEND_QUIRK: PinQuirk = PinQuirk {
    text: "EC25-E: one user's bridge of VDD_EXT to USB_BOOT did nothing until the host was also \
           suspended and resumed, and the modem answered the Sahara hello only after a second \
           suspend/resume once it showed in lsusb.",
    source: "https://forums.quectel.com/t/modem-stuck-in-firmware-update/36394",
};

/// The pin note for a model (`EC25/EG25`, `RM502Q`, a package revision such as
/// `EC25EFAR06A17M4G`, or `None` when the model is not known).
pub fn edl_pin_note(model: Option<&str>) -> PinNote {
    let upper = model.map(str::to_ascii_uppercase);
    let mut quirks = Vec::new();
    if upper.as_deref().is_some_and(|m| m.contains("EC25")) {
        quirks.push(EC25_SUSPEND_QUIRK);
    }
    let pads = match model {
        Some(_) => {
            "Where the USB_BOOT and VDD_EXT pads are on this model: no public source is \
                    known to qrescue, so it shows none (it never guesses pad positions)."
        }
        None => {
            "The model is not known yet, and qrescue knows no public source for pad \
                 positions of any model: it shows none rather than guess."
        }
    };
    PinNote {
        text: QUECTEL_PIN_INSTRUCTION,
        source: Some(QUECTEL_PIN_SOURCE),
        quirks,
        pads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_unique_and_layouts_consistent() {
        for (i, a) in QUECTEL_MODELS.iter().enumerate() {
            for b in &QUECTEL_MODELS[i + 1..] {
                assert!(
                    (a.vid, a.pid) != (b.vid, b.pid),
                    "duplicate {:04x}:{:04x}",
                    a.vid,
                    a.pid
                );
            }
            let l = a.layout;
            let roles: Vec<u8> = [l.dm, l.nmea, l.at, l.modem]
                .into_iter()
                .flatten()
                .collect();
            let mut dedup = roles.clone();
            dedup.sort_unstable();
            dedup.dedup();
            assert_eq!(dedup.len(), roles.len(), "{} reuses an interface", a.names);
            if a.laptop {
                assert_eq!(l.dm, Some(3), "{}", a.names);
            }
        }
        for (i, a) in QUALCOMM_IDS.iter().enumerate() {
            assert!(QUALCOMM_IDS[i + 1..].iter().all(|b| b.pid != a.pid));
        }
    }

    #[test]
    fn the_documented_exceptions_are_in_the_table() {
        for pid in [
            0x0127, 0x0310, 0x030a, 0x0311, 0x0315, 0x0309, 0x6008, 0x0128, 0x6009, 0x0803, 0x030d,
        ] {
            assert_eq!(
                quectel_model(QUECTEL_VID, pid).unwrap().layout.dm,
                Some(3),
                "{pid:04x}"
            );
        }
        assert_eq!(
            quectel_model(QUECTEL_VID, 0x0514).unwrap().layout.dm,
            Some(2)
        );
        assert_eq!(quectel_model(0x3c93, 0xffff).unwrap().layout.dm, Some(8));
        for pid in [
            0x0125, 0x0121, 0x0191, 0x0195, 0x0296, 0x0306, 0x0512, 0x0800,
        ] {
            assert_eq!(
                quectel_model(QUECTEL_VID, pid).unwrap().layout,
                PortLayout::STANDARD
            );
        }
    }

    #[test]
    fn asr_and_hisilicon_pids_are_told_apart_from_qualcomm_ones() {
        assert!(quectel_non_qualcomm(0x6005));
        assert!(quectel_non_qualcomm(0x8101));
        assert!(!quectel_non_qualcomm(0x6008));
        assert!(!quectel_non_qualcomm(0x6009));
        assert!(!quectel_non_qualcomm(0x0800));
    }
    #[test]
    fn pin_notes_quote_quectel_and_never_invent_pads() {
        let general = edl_pin_note(None);
        assert!(general
            .text
            .contains("'USB_BOOT' to 1.8 V before 'VDD_EXT' is powered on"));
        assert_eq!(general.source, Some(QUECTEL_PIN_SOURCE));
        assert!(general.quirks.is_empty());
        assert!(general.pads.contains("no public source"));
        let ec25 = edl_pin_note(Some("EC25/EG25"));
        assert_eq!(ec25.quirks, vec![EC25_SUSPEND_QUIRK]);
        assert!(ec25.quirks[0].text.contains("suspend"));
        assert!(ec25.pads.contains("this model") && ec25.pads.contains("no public source"));
        // A package revision names the model too.
        assert_eq!(edl_pin_note(Some("EC25EFAR06A17M4G")).quirks.len(), 1);
        let rm = edl_pin_note(Some("RM500Q/RM5xx (SDX55)"));
        assert!(rm.quirks.is_empty());
        assert!(rm.pads.contains("never guesses"));
    }
}
