//! Emulated unit profiles: identity (serial, HWID, PK hash) and Sahara behaviour per model.
//!
//! A [`Profile`] names a model (`ec25`, `rm502q`, `rm520n`, and `-crash` variants that boot into the
//! 900e memory-debug personality). [`Profile::for_unit`] derives a per-unit identity from a seed, so
//! two emulated units of the same model differ in serial number and PK hash (and therefore accept
//! different fake programmers, see [`super::elf`]).

use sha2::{Digest, Sha256};

use super::elf::ElfClass;

/// The identity a boot ROM reports in command mode. Per-unit: two emulated modems differ.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitIdentity {
    /// Sahara serial number (EXECUTE 0x01), also shown in the USB product string after `_SN:`.
    pub serial: u32,
    /// MSM HW ID (EXECUTE 0x02): msm_id bits 63..32, oem_id 31..16, model_id 15..0.
    pub hw_id: u64,
    /// OEM public-key hash (32, 48 or 64 bytes); programmers are "signed" against it.
    pub pk_hash: Vec<u8>,
    /// SBL software version (EXECUTE 0x07).
    pub sbl_version: u32,
}

impl UnitIdentity {
    /// MSM ID (bits 63..32 of the HW ID).
    pub fn msm_id(&self) -> u32 {
        (self.hw_id >> 32) as u32
    }

    /// OEM ID (bits 31..16 of the HW ID).
    pub fn oem_id(&self) -> u16 {
        (self.hw_id >> 16) as u16
    }

    /// Model ID (bits 15..0 of the HW ID).
    pub fn model_id(&self) -> u16 {
        self.hw_id as u16
    }
}

/// Which boot-ROM personality a unit presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Personality {
    /// Emergency download (05c6:9008): HELLO mode 0, programmer upload.
    Edl,
    /// Crash dump (05c6:900e): HELLO mode 2, memory debug.
    CrashDump,
}

/// Storage behind the emulated programmer (a hint for the Firehose side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    Nand,
    Emmc,
    Ufs,
}

impl Storage {
    /// The Firehose `MemoryName` for this storage.
    pub fn memory_name(self) -> &'static str {
        match self {
            Storage::Nand => "nand",
            Storage::Emmc => "emmc",
            Storage::Ufs => "ufs",
        }
    }
}

/// One memory region of the crash-dump personality (contents are generated on the fly).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DumpRegion {
    /// Region description (desc / region field of the table, at most 20 bytes).
    pub desc: String,
    /// File name the device suggests (at most 20 bytes). Hostile on purpose with `hostile_names`.
    pub filename: String,
    pub base: u64,
    pub len: u64,
    /// save_pref (32-bit tables) or type (64-bit tables).
    pub save_pref: u32,
}

/// An emulated modem model: what its boot ROM says and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    /// Profile name as given to `--profile`.
    pub name: String,
    /// Human description (model, chipset).
    pub description: String,
    /// Chipset name as host tools print it.
    pub chip: String,
    pub identity: UnitIdentity,
    /// HELLO.version.
    pub sahara_version: u32,
    /// HELLO.version_supported (minimum compatible version).
    pub version_supported: u32,
    /// HELLO.max_cmd_packet_len.
    pub max_cmd_len: u32,
    /// The ROM requests the programmer with READ_DATA64 (v2.8+ SoCs) instead of READ_DATA.
    pub read64: bool,
    /// Memory-debug tables use MEMORY_DEBUG64 and 64-byte entries.
    pub memory_debug64: bool,
    /// ELF class of programmers this ROM loads.
    pub elf_class: ElfClass,
    pub storage: Storage,
    /// Personality the unit boots into.
    pub personality: Personality,
    /// Region table of the crash-dump personality.
    pub regions: Vec<DumpRegion>,
    /// Address the MEMORY_DEBUG packet points at (the region table).
    pub table_addr: u64,
    /// Size of the fake programmer `qrescue sim`/tests generate for this model (bytes).
    pub programmer_size: usize,
    /// USB product id in this personality (05c6:9008 EDL, 05c6:900e crash dump).
    pub usb_pid: u16,
}

/// Real EC25-E values (PROTOCOLS.md §1.4; defencore/tech_documentation, printed by edl).
const EC25_PK_HASH: &str = "cc3153a80293939b90d02d3bf8b23e0292e452fef662c74998421adad42a380f";

fn regions(large_ddr: bool, hostile: bool) -> Vec<DumpRegion> {
    let mut r = vec![
        DumpRegion {
            desc: "DDR CS0".into(),
            filename: "DDRCS0.BIN".into(),
            base: 0x8000_0000,
            len: if large_ddr { 16 << 20 } else { 8 << 20 },
            save_pref: 1,
        },
        DumpRegion {
            desc: "OCIMEM".into(),
            filename: "OCIMEM.BIN".into(),
            base: 0x0860_0000,
            len: 256 << 10,
            save_pref: 1,
        },
        DumpRegion {
            desc: "CODERAM".into(),
            filename: "CODERAM.BIN".into(),
            base: 0x0010_0000,
            len: 128 << 10,
            save_pref: 0,
        },
        DumpRegion {
            desc: "RST_STAT".into(),
            filename: "RST_STAT.BIN".into(),
            base: 0x0004_b000,
            len: 4,
            save_pref: 0,
        },
    ];
    if hostile {
        // Names a host must sanitise before using them as file names (qdl rejects "/" and "\").
        for (reg, name) in r
            .iter_mut()
            .zip(["../../etc/passwd", "a/b.bin", "con\\x.bin", ""])
        {
            reg.filename = name.into();
        }
    }
    r
}

fn base(name: &str) -> Option<Profile> {
    let p = match name {
        "ec25" => Profile {
            name: "ec25".into(),
            description: "Quectel EC25-E (MDM9207, NAND)".into(),
            chip: "MDM9207".into(),
            identity: UnitIdentity {
                serial: 0x0cf9_4c64,
                hw_id: 0x0004_80e1_0000_0000,
                pk_hash: hex::decode(EC25_PK_HASH).expect("constant hex"),
                // Emulated value.
                sbl_version: 0x0000_0000,
            },
            sahara_version: 2,
            version_supported: 1,
            max_cmd_len: 0x400,
            read64: false,
            memory_debug64: false,
            elf_class: ElfClass::Elf32,
            storage: Storage::Nand,
            personality: Personality::Edl,
            regions: regions(false, false),
            table_addr: 0x0868_0000,
            programmer_size: 273 * 1024,
            usb_pid: 0x9008,
        },
        "rm502q" => Profile {
            name: "rm502q".into(),
            description: "Quectel RM502Q-AE (SDX55, NAND)".into(),
            chip: "SDX55".into(),
            identity: UnitIdentity {
                // Emulated identity: serial, PK hash and HW ID are made up; the msm_id only has
                // the usual Qualcomm shape (…e1 in the low byte).
                serial: 0x5a17_c0de,
                hw_id: 0x000b_00e1_0000_0000,
                pk_hash: Sha256::digest(b"qrescue emulated rm502q oem key").to_vec(),
                sbl_version: 0x0000_0000,
            },
            sahara_version: 2,
            version_supported: 1,
            max_cmd_len: 0x400,
            read64: false,
            memory_debug64: true,
            elf_class: ElfClass::Elf32,
            storage: Storage::Nand,
            personality: Personality::Edl,
            regions: regions(false, false),
            table_addr: 0x1468_0000,
            programmer_size: 280 * 1024,
            usb_pid: 0x9008,
        },
        "rm520n" => Profile {
            name: "rm520n".into(),
            description: "Quectel RM520N-GL (SDX62-class, Sahara v3, NAND)".into(),
            chip: "SDX62".into(),
            identity: UnitIdentity {
                // Emulated identity (see rm502q). On Sahara v3 the HW ID is reported only
                // through chip ID v3 (EXECUTE 0x0A).
                serial: 0x7e57_0520,
                hw_id: 0x001a_60e1_0000_0000,
                pk_hash: Sha256::digest(b"qrescue emulated rm520n oem key").to_vec(),
                sbl_version: 0x0000_0000,
            },
            sahara_version: 3,
            version_supported: 1,
            max_cmd_len: 0x400,
            read64: true,
            memory_debug64: true,
            // Emulated choice: a 64-bit programmer, to exercise the ELF64 path.
            elf_class: ElfClass::Elf64,
            storage: Storage::Nand,
            personality: Personality::Edl,
            regions: regions(true, false),
            table_addr: 0x1468_0000,
            programmer_size: 600 * 1024,
            usb_pid: 0x9008,
        },
        _ => return None,
    };
    Some(p)
}

/// Every profile name accepted by [`Profile::by_name`].
const NAMES: &[&str] = &[
    "ec25",
    "rm502q",
    "rm520n",
    "ec25-crash",
    "rm502q-crash",
    "rm520n-crash",
    "ec25-crash-hostile",
    "rm502q-crash-hostile",
    "rm520n-crash-hostile",
];

impl Profile {
    /// Every known profile name, for help texts.
    pub fn names() -> &'static [&'static str] {
        NAMES
    }

    /// The profile with this name. `NAME-crash` boots into the crash-dump personality (900e);
    /// `NAME-crash-hostile` additionally offers hostile file names in its region table.
    pub fn by_name(name: &str) -> Option<Profile> {
        if !NAMES.contains(&name) {
            return None;
        }
        let (model, rest) = match name.split_once('-') {
            Some((m, r)) => (m, Some(r)),
            None => (name, None),
        };
        let mut p = base(model)?;
        p.name = name.to_string();
        match rest {
            None => {}
            Some(r) => {
                p = p.crash_dump();
                p.name = name.to_string();
                if r == "crash-hostile" {
                    p = p.hostile_names();
                }
            }
        }
        Some(p)
    }

    /// This model in the crash-dump personality (05c6:900e, HELLO mode 2).
    pub fn crash_dump(mut self) -> Profile {
        self.personality = Personality::CrashDump;
        self.usb_pid = 0x900e;
        if !self.name.contains("-crash") {
            self.name = format!("{}-crash", self.name);
        }
        self.description = format!("{}, crashed (memory debug)", self.description);
        self
    }

    /// Give the region table hostile file names ("../../etc/passwd", "a/b.bin", "con\\x.bin", "")
    /// so a host's sanitisation can be tested.
    pub fn hostile_names(mut self) -> Profile {
        let large = self.regions.first().map(|r| r.len > 8 << 20) == Some(true);
        self.regions = regions(large, true);
        self
    }

    /// True when the region table carries hostile file names.
    pub fn has_hostile_names(&self) -> bool {
        self.regions
            .iter()
            .any(|r| r.filename.contains('/') || r.filename.contains('\\') || r.filename.is_empty())
    }

    /// A distinct emulated unit of this model: serial and PK hash derived deterministically from
    /// `seed` (the same seed gives the same unit). The HW ID stays the model's. Seed 0 keeps the
    /// profile's own identity (for `ec25` that is the real EC25-E identity from the docs).
    ///
    /// Real units of one OEM share a PK hash; the emulator gives every unit its own so that
    /// programmer binding ("signed for another unit") can be exercised.
    pub fn for_unit(mut self, seed: u64) -> Profile {
        if seed == 0 {
            return self;
        }
        let d = self.unit_digest(b"seed", seed);
        let serial = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
        self.identity.serial = if serial == 0 { 1 } else { serial };
        self.identity.pk_hash = self.derive_pk(&d);
        self
    }

    /// A unit with this serial number (`--serial`). Its PK hash is derived from the serial too, so
    /// units with different serials accept different programmers. Giving the profile's own serial
    /// changes nothing.
    pub fn with_serial(mut self, serial: u32) -> Profile {
        if serial == self.identity.serial {
            return self;
        }
        let d = self.unit_digest(b"serial", u64::from(serial));
        self.identity.serial = serial;
        self.identity.pk_hash = self.derive_pk(&d);
        self
    }

    fn unit_digest(&self, tag: &[u8], value: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"qrescue emulated unit");
        // The model, so `ec25` and `ec25-crash` with the same seed are the same unit.
        h.update(self.name.split('-').next().unwrap_or("").as_bytes());
        h.update(tag);
        h.update(value.to_le_bytes());
        h.finalize().into()
    }

    fn derive_pk(&self, unit: &[u8; 32]) -> Vec<u8> {
        let pk_len = self.identity.pk_hash.len().max(32);
        let mut pk = Vec::with_capacity(pk_len);
        let mut counter = 0u32;
        while pk.len() < pk_len {
            let mut h = Sha256::new();
            h.update(b"qrescue emulated pk");
            h.update(unit);
            h.update(counter.to_le_bytes());
            pk.extend_from_slice(&h.finalize());
            counter += 1;
        }
        pk.truncate(pk_len);
        pk
    }

    /// Sahara v3 devices answer chip ID v3 (0x0A) and do not answer HW ID (0x02).
    pub fn is_v3(&self) -> bool {
        self.sahara_version >= 3
    }

    /// The HELLO mode of this unit's personality: 0 (EDL) or 2 (crash dump). Never 1.
    pub fn hello_mode(&self) -> u32 {
        match self.personality {
            Personality::Edl => 0,
            Personality::CrashDump => 2,
        }
    }

    /// A fake programmer signed for this unit (see [`super::elf::generate_programmer`]).
    pub fn programmer(&self, seed: u64) -> Vec<u8> {
        super::elf::generate_programmer(
            &self.identity.pk_hash,
            self.programmer_size,
            self.elf_class,
            seed,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_and_unknown_does_not() {
        for n in Profile::names() {
            let p = Profile::by_name(n).unwrap();
            assert_eq!(&p.name, n);
        }
        assert!(Profile::by_name("ec26").is_none());
        assert!(Profile::by_name("ec25-bogus").is_none());
    }

    #[test]
    fn ec25_is_the_real_identity() {
        let p = Profile::by_name("ec25").unwrap();
        assert_eq!(p.identity.serial, 0x0cf94c64);
        assert_eq!(p.identity.hw_id, 0x000480e100000000);
        assert_eq!(p.identity.msm_id(), 0x000480e1);
        assert_eq!(hex::encode(&p.identity.pk_hash), EC25_PK_HASH);
        assert_eq!(p.sahara_version, 2);
        assert!(!p.read64);
        assert_eq!(p.elf_class, ElfClass::Elf32);
        assert_eq!(p.hello_mode(), 0);
        assert_eq!(p.storage, Storage::Nand);
    }

    #[test]
    fn rm520n_is_v3_with_64_bit_reads() {
        let p = Profile::by_name("rm520n").unwrap();
        assert!(p.is_v3());
        assert!(p.read64);
        assert_eq!(p.elf_class, ElfClass::Elf64);
    }

    #[test]
    fn crash_variants() {
        let p = Profile::by_name("rm502q-crash").unwrap();
        assert_eq!(p.personality, Personality::CrashDump);
        assert_eq!(p.hello_mode(), 2);
        assert_eq!(p.usb_pid, 0x900e);
        assert!(!p.has_hostile_names());
        let h = Profile::by_name("ec25-crash-hostile").unwrap();
        assert!(h.has_hostile_names());
        let names: Vec<_> = h.regions.iter().map(|r| r.filename.as_str()).collect();
        assert!(names.contains(&"../../etc/passwd"));
        assert!(names.contains(&""));
        assert!(h
            .regions
            .iter()
            .all(|r| r.filename.len() <= 20 && r.desc.len() <= 20));
    }

    #[test]
    fn units_differ_by_seed_and_are_reproducible() {
        let a = Profile::by_name("ec25").unwrap().for_unit(1);
        let b = Profile::by_name("ec25").unwrap().for_unit(2);
        let a2 = Profile::by_name("ec25").unwrap().for_unit(1);
        assert_ne!(a.identity.serial, b.identity.serial);
        assert_ne!(a.identity.pk_hash, b.identity.pk_hash);
        assert_eq!(a, a2);
        assert_eq!(a.identity.pk_hash.len(), 32);
        assert_eq!(a.identity.hw_id, b.identity.hw_id);
        let same = Profile::by_name("ec25").unwrap().for_unit(0);
        assert_eq!(same.identity.serial, 0x0cf94c64);
        let s = Profile::by_name("ec25").unwrap().with_serial(0x1234);
        assert_eq!(s.identity.serial, 0x1234);
        assert_ne!(hex::encode(&s.identity.pk_hash), EC25_PK_HASH);
        let t = Profile::by_name("ec25").unwrap().with_serial(0x1235);
        assert_ne!(s.identity.pk_hash, t.identity.pk_hash);
        assert_eq!(s, Profile::by_name("ec25").unwrap().with_serial(0x1234));
        let own = Profile::by_name("ec25").unwrap().with_serial(0x0cf94c64);
        assert_eq!(hex::encode(&own.identity.pk_hash), EC25_PK_HASH);
        // The same unit in both personalities.
        let c = Profile::by_name("ec25-crash").unwrap().for_unit(1);
        assert_eq!(c.identity, a.identity);
    }

    #[test]
    fn programmer_is_bound_to_the_unit() {
        let a = Profile::by_name("ec25").unwrap().for_unit(1);
        let b = Profile::by_name("ec25").unwrap().for_unit(2);
        let img = a.programmer(7);
        assert_eq!(crate::sim::elf::validate(&img, &a.identity.pk_hash), Ok(()));
        assert_eq!(
            crate::sim::elf::validate(&img, &b.identity.pk_hash),
            Err(0x25)
        );
    }
}
