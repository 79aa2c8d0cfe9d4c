//! Typed Firehose host commands (PROTOCOLS.md §2.4–§2.9). Each command builds an [`Element`]
//! and, through [`FirehoseCommand::to_bytes`], a complete host document that is never an exact
//! multiple of 512 bytes ([`host_document`]).
//!
//! Addresses are kept as the package wrote them: `start_sector` may be symbolic
//! (`NUM_DISK_SECTORS-34.`) and is sent verbatim; the programmer evaluates it. Extra attributes
//! (`slot`, `read_back_verify`, Quectel's erase attributes `a_rawdata_start_sector`,
//! `b_rawdata_num_sector`, `c_project_name`, `d_project_type`, `vendor`, …) are passed through in
//! order after the standard ones; an extra whose name repeats a standard attribute is dropped so a
//! document never carries the same attribute twice.

use super::xml::{host_document, Element};

/// The storage behind the programmer, as named in `<configure MemoryName=…>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    Nand,
    Emmc,
    Ufs,
    Nvme,
    SpiNor,
}

impl StorageKind {
    /// The MemoryName value sent in `<configure>` (lower case, as qdl-rs and QFirehose send it).
    pub fn memory_name(self) -> &'static str {
        match self {
            StorageKind::Nand => "nand",
            StorageKind::Emmc => "emmc",
            StorageKind::Ufs => "ufs",
            StorageKind::Nvme => "nvme",
            StorageKind::SpiNor => "spinor",
        }
    }

    /// The MaxPayloadSizeToTargetInBytes asked for first: 8192 for NAND (what Quectel NAND
    /// programmers grant), 1 MiB otherwise (PROTOCOLS.md §2.4, §10).
    pub fn default_payload(self) -> u32 {
        match self {
            StorageKind::Nand => 8192,
            _ => 1024 * 1024,
        }
    }

    /// MaxDigestTableSizeInBytes as QFirehose sends it: 2048 on NAND, 8192 otherwise.
    pub fn default_digest_table(self) -> u32 {
        match self {
            StorageKind::Nand => 2048,
            _ => 8192,
        }
    }

    /// The sector size a host assumes before it knows better (qdl-rs defaults, §9.8).
    pub fn default_sector_size(self) -> u32 {
        match self {
            StorageKind::Emmc | StorageKind::Nvme => 512,
            _ => 4096,
        }
    }

    /// Parse a MemoryName as devices and tools spell it (`eMMC`, `UFS`, `NAND`, `spinor`, `Sdcc`).
    pub fn from_name(name: &str) -> Option<StorageKind> {
        let n = name.trim().to_ascii_lowercase().replace(['-', '_'], "");
        match n.as_str() {
            "nand" => Some(StorageKind::Nand),
            "emmc" | "sdcc" | "mmc" => Some(StorageKind::Emmc),
            "ufs" => Some(StorageKind::Ufs),
            "nvme" => Some(StorageKind::Nvme),
            "spinor" | "nor" => Some(StorageKind::SpiNor),
            _ => None,
        }
    }
}

impl std::fmt::Display for StorageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StorageKind::Nand => "NAND",
            StorageKind::Emmc => "eMMC",
            StorageKind::Ufs => "UFS",
            StorageKind::Nvme => "NVMe",
            StorageKind::SpiNor => "SPI-NOR",
        })
    }
}

/// `<power value=…>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerMode {
    /// Reboot into the installed firmware.
    Reset,
    /// Reboot back into emergency download (9008).
    ResetToEdl,
    /// Power off.
    Off,
}

impl PowerMode {
    pub fn value(self) -> &'static str {
        match self {
            PowerMode::Reset => "reset",
            PowerMode::ResetToEdl => "reset_to_edl",
            PowerMode::Off => "off",
        }
    }
}

/// Anything that can be sent as one Firehose host document.
pub trait FirehoseCommand {
    /// The command element (`<program …/>` etc.).
    fn to_element(&self) -> Element;

    /// The whole host document, ready to write.
    fn to_bytes(&self) -> Vec<u8> {
        host_document(&self.to_element())
    }
}

fn push_extras(mut e: Element, extra: &[(String, String)]) -> Element {
    for (k, v) in extra {
        if e.get_ci(k).is_none() {
            e.attrs.push((k.clone(), v.clone()));
        }
    }
    e
}

/// `<configure>` (PROTOCOLS.md §2.4, §9.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configure {
    pub memory: StorageKind,
    pub max_payload_to_target: u32,
    /// Sent as `ZlpAwareHost="1"` (the host terminates transfers that are a multiple of the
    /// packet size with a zero-length packet) or `"0"`.
    pub zlp_aware: bool,
    pub skip_storage_init: bool,
    pub max_digest_table: u32,
    pub verbose: bool,
    pub always_validate: bool,
    /// NAND only, as edl sends it.
    pub pages_per_block: Option<u32>,
    pub extra: Vec<(String, String)>,
}

impl Configure {
    /// The defaults for `memory`: its default payload, ZLP-aware, storage init on.
    pub fn new(memory: StorageKind) -> Self {
        Configure {
            memory,
            max_payload_to_target: memory.default_payload(),
            zlp_aware: true,
            skip_storage_init: false,
            max_digest_table: memory.default_digest_table(),
            verbose: false,
            always_validate: false,
            pages_per_block: None,
            extra: Vec::new(),
        }
    }
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

impl FirehoseCommand for Configure {
    fn to_element(&self) -> Element {
        let mut e = Element::new("configure")
            .attr("MemoryName", self.memory.memory_name())
            .attr("Verbose", flag(self.verbose))
            .attr("AlwaysValidate", flag(self.always_validate))
            .attr("MaxDigestTableSizeInBytes", self.max_digest_table)
            .attr("MaxPayloadSizeToTargetInBytes", self.max_payload_to_target)
            .attr("ZlpAwareHost", flag(self.zlp_aware))
            .attr("SkipStorageInit", flag(self.skip_storage_init));
        if let Some(p) = self.pages_per_block {
            e = e.attr("PAGES_PER_BLOCK", p);
        }
        push_extras(e, &self.extra)
    }
}

/// Builder methods shared by the addressed commands.
macro_rules! region_builders {
    ($t:ty) => {
        impl $t {
            /// The partition label (informational for the device; used in messages).
            pub fn label(mut self, label: impl Into<String>) -> Self {
                self.label = Some(label.into());
                self
            }
            /// NAND: pages per erase block, checked by the programmer against the chip.
            pub fn pages_per_block(mut self, n: u32) -> Self {
                self.pages_per_block = Some(n);
                self
            }
            /// NAND: the last sector of the partition.
            pub fn last_sector(mut self, n: u64) -> Self {
                self.last_sector = Some(n);
                self
            }
            /// A pass-through attribute sent after the standard ones.
            pub fn extra(mut self, key: impl Into<String>, value: impl ToString) -> Self {
                self.extra.push((key.into(), value.to_string()));
                self
            }
        }
    };
}

/// `<program>`: write `num_sectors` sectors of raw data after `ACK rawmode="true"` (§2.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub sector_size: u32,
    pub num_sectors: u64,
    pub physical_partition: u32,
    /// Verbatim, possibly symbolic (`NUM_DISK_SECTORS-34.`).
    pub start_sector: String,
    pub label: Option<String>,
    /// Informational for the device (the package file name).
    pub filename: Option<String>,
    pub pages_per_block: Option<u32>,
    pub last_sector: Option<u64>,
    pub extra: Vec<(String, String)>,
}

impl Program {
    pub fn new(
        sector_size: u32,
        num_sectors: u64,
        physical_partition: u32,
        start_sector: impl Into<String>,
    ) -> Self {
        Program {
            sector_size,
            num_sectors,
            physical_partition,
            start_sector: start_sector.into(),
            label: None,
            filename: None,
            pages_per_block: None,
            last_sector: None,
            extra: Vec::new(),
        }
    }

    pub fn filename(mut self, f: impl Into<String>) -> Self {
        self.filename = Some(f.into());
        self
    }

    /// Bytes the device expects after `ACK rawmode="true"`, or None on overflow.
    pub fn byte_len(&self) -> Option<u64> {
        self.num_sectors.checked_mul(u64::from(self.sector_size))
    }
}
region_builders!(Program);

/// `<read>`: the device sends `num_sectors` sectors after `ACK rawmode="true"` (§2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    pub sector_size: u32,
    pub num_sectors: u64,
    pub physical_partition: u32,
    pub start_sector: String,
    pub label: Option<String>,
    pub filename: Option<String>,
    pub pages_per_block: Option<u32>,
    pub last_sector: Option<u64>,
    pub extra: Vec<(String, String)>,
}

impl Read {
    pub fn new(
        sector_size: u32,
        num_sectors: u64,
        physical_partition: u32,
        start_sector: impl Into<String>,
    ) -> Self {
        Read {
            sector_size,
            num_sectors,
            physical_partition,
            start_sector: start_sector.into(),
            label: None,
            filename: None,
            pages_per_block: None,
            last_sector: None,
            extra: Vec::new(),
        }
    }

    pub fn filename(mut self, f: impl Into<String>) -> Self {
        self.filename = Some(f.into());
        self
    }

    /// Bytes the device will send, or None on overflow.
    pub fn byte_len(&self) -> Option<u64> {
        self.num_sectors.checked_mul(u64::from(self.sector_size))
    }
}
region_builders!(Read);

/// `<erase>` (§2.7). Without `num_sectors` and `start_sector` the programmer erases the whole
/// physical partition, so those are explicit options here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erase {
    pub sector_size: u32,
    pub num_sectors: Option<u64>,
    pub physical_partition: u32,
    pub start_sector: Option<String>,
    pub label: Option<String>,
    pub pages_per_block: Option<u32>,
    pub last_sector: Option<u64>,
    /// Pass-through, e.g. Quectel's `a_rawdata_start_sector`, `b_rawdata_num_sector`,
    /// `c_project_name`, `d_project_type`, `vendor`.
    pub extra: Vec<(String, String)>,
}

impl Erase {
    /// Erase `num_sectors` sectors from `start_sector`.
    pub fn new(
        sector_size: u32,
        num_sectors: u64,
        physical_partition: u32,
        start_sector: impl Into<String>,
    ) -> Self {
        Erase {
            sector_size,
            num_sectors: Some(num_sectors),
            physical_partition,
            start_sector: Some(start_sector.into()),
            label: None,
            pages_per_block: None,
            last_sector: None,
            extra: Vec::new(),
        }
    }

    /// Erase the whole physical partition (no num_partition_sectors / start_sector attributes).
    pub fn whole_partition(sector_size: u32, physical_partition: u32) -> Self {
        Erase {
            sector_size,
            num_sectors: None,
            physical_partition,
            start_sector: None,
            label: None,
            pages_per_block: None,
            last_sector: None,
            extra: Vec::new(),
        }
    }

    /// Bytes covered, when the count is known.
    pub fn byte_len(&self) -> Option<u64> {
        self.num_sectors?.checked_mul(u64::from(self.sector_size))
    }
}
region_builders!(Erase);

/// The addressing attributes shared by program, read and erase, in the order real tools send
/// them.
struct RegionRef<'a> {
    name: &'a str,
    sector_size: u32,
    num_sectors: Option<u64>,
    physical_partition: u32,
    start_sector: Option<&'a str>,
    label: Option<&'a str>,
    filename: Option<&'a str>,
    pages_per_block: Option<u32>,
    last_sector: Option<u64>,
    extra: &'a [(String, String)],
}

impl RegionRef<'_> {
    fn element(&self) -> Element {
        let mut e = Element::new(self.name).attr("SECTOR_SIZE_IN_BYTES", self.sector_size);
        if let Some(n) = self.num_sectors {
            e = e.attr("num_partition_sectors", n);
        }
        e = e.attr("physical_partition_number", self.physical_partition);
        if let Some(s) = self.start_sector {
            e = e.attr("start_sector", s);
        }
        if let Some(l) = self.label {
            e = e.attr("label", l);
        }
        if let Some(f) = self.filename {
            e = e.attr("filename", f);
        }
        if let Some(p) = self.pages_per_block {
            e = e.attr("PAGES_PER_BLOCK", p);
        }
        if let Some(l) = self.last_sector {
            e = e.attr("last_sector", l);
        }
        push_extras(e, self.extra)
    }
}

impl FirehoseCommand for Program {
    fn to_element(&self) -> Element {
        RegionRef {
            name: "program",
            sector_size: self.sector_size,
            num_sectors: Some(self.num_sectors),
            physical_partition: self.physical_partition,
            start_sector: Some(&self.start_sector),
            label: self.label.as_deref(),
            filename: self.filename.as_deref(),
            pages_per_block: self.pages_per_block,
            last_sector: self.last_sector,
            extra: &self.extra,
        }
        .element()
    }
}

impl FirehoseCommand for Read {
    fn to_element(&self) -> Element {
        RegionRef {
            name: "read",
            sector_size: self.sector_size,
            num_sectors: Some(self.num_sectors),
            physical_partition: self.physical_partition,
            start_sector: Some(&self.start_sector),
            label: self.label.as_deref(),
            filename: self.filename.as_deref(),
            pages_per_block: self.pages_per_block,
            last_sector: self.last_sector,
            extra: &self.extra,
        }
        .element()
    }
}

impl FirehoseCommand for Erase {
    fn to_element(&self) -> Element {
        RegionRef {
            name: "erase",
            sector_size: self.sector_size,
            num_sectors: self.num_sectors,
            physical_partition: self.physical_partition,
            start_sector: self.start_sector.as_deref(),
            label: self.label.as_deref(),
            filename: None,
            pages_per_block: self.pages_per_block,
            last_sector: self.last_sector,
            extra: &self.extra,
        }
        .element()
    }
}

/// `<patch>` (§2.8). Only patches with `filename="DISK"` go to the device; patches naming a file
/// (`gpt_main0.bin` …) are host-side edits of that file before it is programmed, applied by the
/// package layer, and the session skips them ([`Patch::targets_device`]). `start_sector` and
/// `value` are sent verbatim with their expressions (`NUM_DISK_SECTORS-34.`, `CRC32(1,92)`): the
/// programmer evaluates them, in order, against the current disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patch {
    pub sector_size: u32,
    pub byte_offset: u64,
    pub filename: String,
    pub physical_partition: u32,
    pub size_in_bytes: u32,
    pub start_sector: String,
    pub value: String,
    /// A description some packages carry (`what="Update last partition …"`).
    pub what: Option<String>,
    pub extra: Vec<(String, String)>,
}

impl Patch {
    /// A DISK patch.
    pub fn disk(
        sector_size: u32,
        physical_partition: u32,
        start_sector: impl Into<String>,
        byte_offset: u64,
        size_in_bytes: u32,
        value: impl Into<String>,
    ) -> Self {
        Patch {
            sector_size,
            byte_offset,
            filename: "DISK".into(),
            physical_partition,
            size_in_bytes,
            start_sector: start_sector.into(),
            value: value.into(),
            what: None,
            extra: Vec::new(),
        }
    }

    /// True for `filename="DISK"`: the patch is applied by the programmer to the storage.
    pub fn targets_device(&self) -> bool {
        self.filename.trim().eq_ignore_ascii_case("DISK")
    }
}

impl FirehoseCommand for Patch {
    fn to_element(&self) -> Element {
        let mut e = Element::new("patch")
            .attr("SECTOR_SIZE_IN_BYTES", self.sector_size)
            .attr("byte_offset", self.byte_offset)
            .attr("filename", &self.filename)
            .attr("physical_partition_number", self.physical_partition)
            .attr("size_in_bytes", self.size_in_bytes)
            .attr("start_sector", &self.start_sector)
            .attr("value", &self.value);
        if let Some(w) = &self.what {
            e = e.attr("what", w);
        }
        push_extras(e, &self.extra)
    }
}

/// `<getstorageinfo physical_partition_number="N"/>` (§2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetStorageInfo {
    pub physical_partition: u32,
}

impl FirehoseCommand for GetStorageInfo {
    fn to_element(&self) -> Element {
        Element::new("getstorageinfo").attr("physical_partition_number", self.physical_partition)
    }
}

/// `<getsha256digest …/>` over a sector range (§2.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetSha256Digest {
    pub sector_size: u32,
    pub num_sectors: u64,
    pub physical_partition: u32,
    pub start_sector: String,
}

impl GetSha256Digest {
    pub fn new(
        sector_size: u32,
        num_sectors: u64,
        physical_partition: u32,
        start_sector: impl Into<String>,
    ) -> Self {
        GetSha256Digest {
            sector_size,
            num_sectors,
            physical_partition,
            start_sector: start_sector.into(),
        }
    }

    pub fn byte_len(&self) -> Option<u64> {
        self.num_sectors.checked_mul(u64::from(self.sector_size))
    }
}

impl FirehoseCommand for GetSha256Digest {
    fn to_element(&self) -> Element {
        Element::new("getsha256digest")
            .attr("SECTOR_SIZE_IN_BYTES", self.sector_size)
            .attr("num_partition_sectors", self.num_sectors)
            .attr("physical_partition_number", self.physical_partition)
            .attr("start_sector", &self.start_sector)
    }
}

/// `<nop value="ping"/>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Nop;

impl FirehoseCommand for Nop {
    fn to_element(&self) -> Element {
        Element::new("nop").attr("value", "ping")
    }
}

/// `<setbootablestoragedrive value="N"/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetBootableStorageDrive {
    pub drive: u32,
}

impl FirehoseCommand for SetBootableStorageDrive {
    fn to_element(&self) -> Element {
        Element::new("setbootablestoragedrive").attr("value", self.drive)
    }
}

/// `<power value="reset|reset_to_edl|off" DelayInSeconds="N"/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Power {
    pub mode: PowerMode,
    pub delay_s: u32,
}

impl FirehoseCommand for Power {
    fn to_element(&self) -> Element {
        Element::new("power")
            .attr("value", self.mode.value())
            .attr("DelayInSeconds", self.delay_s)
    }
}

#[cfg(test)]
mod tests {
    use super::super::xml::{parse_elements, Limits};
    use super::*;

    fn text(c: &dyn FirehoseCommand) -> String {
        String::from_utf8(c.to_bytes()).unwrap()
    }

    #[test]
    fn program_matches_the_real_quectel_nand_step() {
        let p = Program::new(4096, 2491, 0, "13696")
            .filename("..\\sdxprairie-boot.img")
            .pages_per_block(64)
            .last_sector(17279);
        let els = parse_elements(&p.to_bytes(), Limits::WIRE).unwrap();
        let e = &els[1];
        assert_eq!(e.name, "program");
        assert_eq!(e.get("SECTOR_SIZE_IN_BYTES"), Some("4096"));
        assert_eq!(e.get("num_partition_sectors"), Some("2491"));
        assert_eq!(e.get("physical_partition_number"), Some("0"));
        assert_eq!(e.get("start_sector"), Some("13696"));
        assert_eq!(e.get("filename"), Some("..\\sdxprairie-boot.img"));
        assert_eq!(e.get("PAGES_PER_BLOCK"), Some("64"));
        assert_eq!(e.get("last_sector"), Some("17279"));
        assert_eq!(p.byte_len(), Some(2491 * 4096));
    }

    #[test]
    fn symbolic_start_sector_is_verbatim_and_extras_pass_through() {
        let r = Read::new(512, 33, 0, "NUM_DISK_SECTORS-33.")
            .label("gpt_backup")
            .extra("slot", 0)
            .extra("start_sector", "999");
        let s = text(&r);
        assert!(s.contains("start_sector=\"NUM_DISK_SECTORS-33.\""), "{s}");
        assert!(s.contains("slot=\"0\""));
        assert_eq!(
            s.matches("start_sector=").count(),
            1,
            "duplicate dropped: {s}"
        );
        assert!(s.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\" ?><data><read "));
    }

    #[test]
    fn quectel_erase_attributes_and_whole_partition_erase() {
        let e = Erase::new(4096, 64, 0, "0")
            .pages_per_block(64)
            .extra("a_rawdata_start_sector", 10)
            .extra("b_rawdata_num_sector", 20)
            .extra("c_project_name", "EG25GGB")
            .extra("d_project_type", "R07")
            .extra("vendor", "quectel");
        let els = parse_elements(&e.to_bytes(), Limits::WIRE).unwrap();
        let el = &els[1];
        for k in [
            "a_rawdata_start_sector",
            "b_rawdata_num_sector",
            "c_project_name",
            "d_project_type",
            "vendor",
        ] {
            assert!(el.get(k).is_some(), "{k}");
        }
        let w = Erase::whole_partition(512, 3).to_element();
        assert_eq!(w.get("num_partition_sectors"), None);
        assert_eq!(w.get("start_sector"), None);
        assert_eq!(w.get("physical_partition_number"), Some("3"));
        assert_eq!(Erase::whole_partition(512, 3).byte_len(), None);
    }

    #[test]
    fn configure_attributes() {
        let mut c = Configure::new(StorageKind::Nand);
        c.pages_per_block = Some(64);
        let e = c.to_element();
        assert_eq!(e.get("MemoryName"), Some("nand"));
        assert_eq!(e.get("MaxPayloadSizeToTargetInBytes"), Some("8192"));
        assert_eq!(e.get("MaxDigestTableSizeInBytes"), Some("2048"));
        assert_eq!(e.get("ZlpAwareHost"), Some("1"));
        assert_eq!(e.get("SkipStorageInit"), Some("0"));
        assert_eq!(e.get("PAGES_PER_BLOCK"), Some("64"));
        let u = Configure::new(StorageKind::Ufs).to_element();
        assert_eq!(u.get("MaxPayloadSizeToTargetInBytes"), Some("1048576"));
        c.zlp_aware = false;
        assert_eq!(c.to_element().get("ZlpAwareHost"), Some("0"));
    }

    #[test]
    fn patch_power_nop_bootable_digest_storageinfo() {
        let p = Patch::disk(
            512,
            0,
            "NUM_DISK_SECTORS-1.",
            16,
            4,
            "CRC32(NUM_DISK_SECTORS-1.,92)",
        );
        assert!(p.targets_device());
        let s = text(&p);
        assert!(s.contains("value=\"CRC32(NUM_DISK_SECTORS-1.,92)\""));
        assert!(s.contains("filename=\"DISK\""));
        let mut f = p.clone();
        f.filename = "gpt_main0.bin".into();
        assert!(!f.targets_device());

        assert!(text(&Power {
            mode: PowerMode::ResetToEdl,
            delay_s: 0
        })
        .contains("<power value=\"reset_to_edl\" DelayInSeconds=\"0\" />"));
        assert!(text(&Nop).contains("<nop value=\"ping\" />"));
        assert!(text(&SetBootableStorageDrive { drive: 1 })
            .contains("<setbootablestoragedrive value=\"1\" />"));
        assert!(text(&GetStorageInfo {
            physical_partition: 0
        })
        .contains("<getstorageinfo physical_partition_number=\"0\" />"));
        let d = GetSha256Digest::new(4096, 10, 0, "5").to_element();
        assert_eq!(d.get("num_partition_sectors"), Some("10"));
    }

    #[test]
    fn storage_kind_names() {
        assert_eq!(StorageKind::from_name("eMMC"), Some(StorageKind::Emmc));
        assert_eq!(StorageKind::from_name("UFS"), Some(StorageKind::Ufs));
        assert_eq!(StorageKind::from_name("NAND"), Some(StorageKind::Nand));
        assert_eq!(StorageKind::from_name("spi-nor"), Some(StorageKind::SpiNor));
        assert_eq!(StorageKind::from_name("Sdcc"), Some(StorageKind::Emmc));
        assert_eq!(StorageKind::from_name("tape"), None);
    }
}
