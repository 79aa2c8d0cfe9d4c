//! How an emulated unit boots, decided from what its storage holds — the same storage the
//! emulated Firehose programmer writes — and how a unit leaves the factory.
//!
//! # The boot rule ([`boot`])
//!
//! 1. **Boot chain.** The storage needs a readable partition table (MIBIB on NAND, a GPT on
//!    eMMC/UFS), a boot loader (`SBL` with the SBL1 codeword on NAND; the first of `sbl1`, `sbl`,
//!    `xbl_a`, `xbl` holding data on eMMC/UFS) and modem firmware (`modem` holding data). Missing
//!    any of these, the unit falls to its boot ROM: it enumerates as 05c6:9008.
//! 2. **Firmware.** The modem image (else the system image) may carry a firmware mark
//!    ([`firmware_mark`], written by [`crate::sim::package_gen::emit_firmware`]) naming its
//!    revision. An unmarked image counts as the unit's own factory build (packages from
//!    [`crate::sim::package_gen::emit`] and real bytes carry no mark).
//! 3. **Operating mode** (`AT+CFUN?` after boot):
//!    - the firmware's model or variant differs from the unit's ([`super::unit::model_variant`]
//!      of both revisions) → **7**. Why 7: 3GPP TS 27.007 leaves `<fun>` 5..127 to
//!      manufacturers, and Quectel modules flashed with another variant's or baseline's
//!      firmware report `+CFUN: 7` and refuse `AT+CFUN=1` with `+CME ERROR: 0` (USERS.md §1.3,
//!      §1.4, §2.9: forum threads 58100 and 45283). A wrong variant wins over missing
//!      calibration: the firmware cannot use another variant's RF data either way.
//!    - no calibration in the EFS (EFS erased, zeroed or unreadable) → **5**: factory-test mode,
//!      `+CSQ: 99,99`, `AT+CFUN=1` → `+CME ERROR: 3` (USERS.md §1.1, §2.9).
//!    - otherwise → **1**.
//!
//! The EFS is read from `EFS2` on NAND, and from the first readable of `modemst1`, `modemst2`
//! and `fsg` on eMMC/UFS (a real modem restores its working copies from the `fsg` golden copy;
//! the emulator simply uses the first good copy). A missing IMEI (NV 550) does not change the
//! mode; `AT+CGSN` then fails with `+CME ERROR: 23` (memory failure).

use crate::sim::firehose::mibib::SBL_CODEWORD;
use crate::sim::firehose::storage::{Region, Storage};
use crate::sim::profile::Profile;

use super::efs::{self, EfsImage};
use super::unit::{self, ModelFirmware};

/// Magic of a firmware mark at the start of a modem or system image.
pub const FW_MAGIC: &[u8; 8] = b"QRSIMFW1";
/// Longest revision a mark may carry.
pub const MAX_MARK_REVISION: usize = 128;
/// How many bytes of an EFS partition are read to find the image.
const EFS_READ: u64 = 64 * 1024;

/// The bytes a firmware image starts with to say which revision it is: [`FW_MAGIC`], the
/// revision's length (u16 LE), the revision (ASCII).
pub fn firmware_mark(revision: &str) -> Vec<u8> {
    let r = &revision.as_bytes()[..revision.len().min(MAX_MARK_REVISION)];
    let mut v = FW_MAGIC.to_vec();
    v.extend_from_slice(&(r.len() as u16).to_le_bytes());
    v.extend_from_slice(r);
    v
}

/// The revision a firmware image's mark names, if it starts with one.
pub fn parse_firmware_mark(bytes: &[u8]) -> Option<String> {
    if bytes.get(..8)? != FW_MAGIC {
        return None;
    }
    let n = usize::from(u16::from_le_bytes(bytes.get(8..10)?.try_into().ok()?));
    if n == 0 || n > MAX_MARK_REVISION {
        return None;
    }
    let s = std::str::from_utf8(bytes.get(10..10 + n)?).ok()?;
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        .then(|| s.to_string())
}

/// How a unit came up in normal mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalBoot {
    /// Model name `ATI` prints.
    pub model: String,
    /// The full revision the unit runs (`AT+QGMR`).
    pub revision: String,
    /// The revision came from a firmware mark (else: the unit's factory build).
    pub marked: bool,
    /// The unit's own (factory) revision, whose model and variant the hardware has.
    pub factory_revision: String,
    /// The operating mode after boot: 1, 5 or 7 (see the module docs).
    pub cfun: u8,
    /// The IMEI from NV 550, if the EFS holds one.
    pub imei: Option<String>,
    /// The EFS holds the RF calibration.
    pub calibrated: bool,
    /// The partition the EFS was read from.
    pub efs_partition: Option<String>,
    /// The EFS as read (for DIAG NV and EFS2 reads).
    pub efs: Option<EfsImage>,
}

/// What a unit does when it powers up with this storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// It runs its application firmware (normal mode).
    Normal(Box<NormalBoot>),
    /// It stays in its boot ROM (05c6:9008), for this reason.
    BootRom { why: String },
}

impl Boot {
    pub fn is_normal(&self) -> bool {
        matches!(self, Boot::Normal(_))
    }

    /// The normal-mode state, if the unit boots to normal mode.
    pub fn normal(&self) -> Option<&NormalBoot> {
        match self {
            Boot::Normal(n) => Some(n),
            Boot::BootRom { .. } => None,
        }
    }
}

/// The partition named `name` (case-insensitive) from the storage's table.
pub fn find_region(storage: &Storage, name: &str) -> Option<Region> {
    storage
        .regions()
        .into_iter()
        .find(|r| r.source != "fixed" && r.name.eq_ignore_ascii_case(name))
}

/// The first `max_bytes` (whole sectors, at most the partition) of a partition, read the way a
/// Firehose `<read>` of the partition sees them (NAND: through the bad-block mapping).
pub fn read_region(storage: &Storage, r: &Region, max_bytes: u64) -> Option<Vec<u8>> {
    let ss = u64::from(storage.sector_size());
    let count = max_bytes.div_ceil(ss).clamp(1, r.num_sectors.max(1));
    let last = (r.start_sector + r.num_sectors.max(1) - 1).max(r.start_sector);
    let last = storage.is_nand().then_some(last);
    storage
        .read_sectors_in(r.lun, r.start_sector, count, last)
        .ok()
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| *b == 0xFF) || bytes.iter().all(|b| *b == 0)
}

/// Erase a whole partition: NAND blocks erased (0xFF), eMMC/UFS sectors back to zeros.
pub fn erase_region(storage: &mut Storage, r: &Region) -> Result<(), String> {
    let ss = u64::from(storage.sector_size());
    if storage.is_nand() {
        let last = r.start_sector + r.num_sectors.saturating_sub(1);
        let nand = storage.nand_mut().ok_or("no NAND")?;
        nand.erase(r.start_sector, r.num_sectors, Some(last))
            .map_err(|e| e.to_string())?;
        Ok(())
    } else {
        let store = storage
            .block_store_mut(r.lun)
            .ok_or_else(|| format!("physical partition {} does not exist", r.lun))?;
        let (off, len) = (r.start_sector * ss, r.num_sectors * ss);
        if off.saturating_add(len) > store.len() {
            return Err(format!("{} runs past the end of its LUN", r.name));
        }
        store.erase(off, len);
        Ok(())
    }
}

/// Replace a partition's contents with `data` (the rest of the partition erased), as a Firehose
/// erase + program of the partition would.
pub fn write_region(storage: &mut Storage, r: &Region, data: &[u8]) -> Result<(), String> {
    let ss = u64::from(storage.sector_size());
    if data.len() as u64 > r.num_sectors * ss {
        return Err(format!(
            "{} bytes do not fit the {} partition",
            data.len(),
            r.name
        ));
    }
    erase_region(storage, r)?;
    let count = (data.len() as u64).div_ceil(ss);
    if count == 0 {
        return Ok(());
    }
    let mut padded = data.to_vec();
    if storage.is_nand() {
        padded.resize((count * ss) as usize, 0xFF);
        let last = r.start_sector + r.num_sectors - 1;
        let nand = storage.nand_mut().ok_or("no NAND")?;
        let plan = nand
            .plan_program(r.start_sector, count, Some(last))
            .map_err(|e| e.to_string())?;
        nand.program_pages(&plan, 0, &padded);
    } else {
        let store = storage
            .block_store_mut(r.lun)
            .ok_or_else(|| format!("physical partition {} does not exist", r.lun))?;
        store.write(r.start_sector * ss, &padded);
    }
    Ok(())
}

/// Names of the partitions that hold the EFS on this storage, in the order they are read.
pub fn efs_partitions(storage: &Storage) -> &'static [&'static str] {
    if storage.is_nand() {
        &["EFS2"]
    } else {
        &["modemst1", "modemst2", "fsg"]
    }
}

/// Boot-loader partition names, in the order they are looked for.
const BOOT_LOADERS: &[&str] = &["SBL", "sbl1", "xbl_a", "xbl"];

fn boot_chain(storage: &Storage) -> Result<(), String> {
    let regions = storage.regions();
    if regions.iter().any(|r| r.lun == 0 && r.source == "fixed") {
        return Err("no readable partition table on the storage".into());
    }
    let Some(loader) = BOOT_LOADERS.iter().find_map(|n| find_region(storage, n)) else {
        return Err("the partition table names no boot loader partition".into());
    };
    let first = read_region(storage, &loader, 1).ok_or("the boot loader cannot be read")?;
    let good = if storage.is_nand() {
        first.get(..4) == Some(&SBL_CODEWORD.to_le_bytes()[..])
    } else {
        !is_blank(&first)
    };
    if !good {
        return Err(format!(
            "the boot loader partition {} holds no boot loader",
            loader.name
        ));
    }
    let modem =
        find_region(storage, "modem").ok_or("the partition table has no modem partition")?;
    let first = read_region(storage, &modem, 1).ok_or("the modem firmware cannot be read")?;
    if is_blank(&first) {
        return Err("the modem partition is empty".into());
    }
    Ok(())
}

fn mark_of(storage: &Storage, name: &str) -> Option<String> {
    let r = find_region(storage, name)?;
    parse_firmware_mark(&read_region(storage, &r, 1)?)
}

/// The EFS image and the partition it came from.
pub fn read_efs(storage: &Storage) -> Option<(String, EfsImage)> {
    efs_partitions(storage).iter().find_map(|n| {
        let r = find_region(storage, n)?;
        let bytes = read_region(storage, &r, EFS_READ)?;
        Some((r.name.clone(), EfsImage::parse(&bytes)?))
    })
}

/// The boot rule (module docs): what `profile`'s unit does when it powers up with `storage`.
pub fn boot(storage: &Storage, profile: &Profile) -> Boot {
    let Some(fw) = unit::model_firmware(profile) else {
        return Boot::BootRom {
            why: format!(
                "the emulator has no application firmware for {}",
                profile.name
            ),
        };
    };
    if let Err(why) = boot_chain(storage) {
        return Boot::BootRom { why };
    }
    let mark = mark_of(storage, "modem").or_else(|| mark_of(storage, "system"));
    let revision = mark.clone().unwrap_or_else(|| fw.revision.to_string());
    let (efs_partition, efs) = match read_efs(storage) {
        Some((p, e)) => (Some(p), Some(e)),
        None => (None, None),
    };
    let calibrated = efs
        .as_ref()
        .and_then(|e| e.file(efs::CALIBRATION_PATH))
        .is_some_and(|c| !c.is_empty());
    let imei = efs.as_ref().and_then(EfsImage::imei);
    let other_variant = unit::model_variant(&revision) != unit::model_variant(fw.revision);
    let cfun = if other_variant {
        7
    } else if !calibrated {
        5
    } else {
        1
    };
    Boot::Normal(Box::new(NormalBoot {
        model: fw.model.to_string(),
        revision,
        marked: mark.is_some(),
        factory_revision: fw.revision.to_string(),
        cfun,
        imei,
        calibrated,
        efs_partition,
        efs,
    }))
}

/// The EFS a unit leaves the factory with: its IMEI as NV 550 and its RF calibration.
pub fn factory_efs(profile: &Profile) -> EfsImage {
    let mut e = EfsImage::default();
    let imei = unit::unit_imei(profile);
    let nv = efs::encode_imei(&imei).expect("unit_imei gives 15 digits");
    e.put(&efs::nv_path(efs::NV_IMEI), nv.to_vec());
    e.put(efs::CALIBRATION_PATH, unit::calibration_blob(profile));
    e
}

/// How `profile`'s unit boots when the emulator cannot see its storage (a programmer without
/// one): as it left the factory ([`seed_factory`]); `None` for a model without application
/// firmware.
pub fn factory_boot(profile: &Profile) -> Option<NormalBoot> {
    let fw = unit::model_firmware(profile)?;
    let efs = factory_efs(profile);
    Some(NormalBoot {
        model: fw.model.to_string(),
        revision: fw.revision.to_string(),
        marked: true,
        factory_revision: fw.revision.to_string(),
        cfun: 1,
        imei: efs.imei(),
        calibrated: true,
        efs_partition: None,
        efs: Some(efs),
    })
}

/// Partitions the factory writes firmware into (those the layout has), with a first page of
/// content each: the boot chain, the kernel and the root file system.
const FACTORY_IMAGES: &[&str] = &["tz", "rpm", "hyp", "aboot", "boot", "system"];

/// Make `storage` what `profile`'s unit leaves the factory with: a boot loader, firmware (the
/// modem and system images marked with the model's factory revision) and the EFS with the unit's
/// IMEI and calibration in every EFS partition the layout has. Only the first sector of each
/// image is written (the emulator reads no further). Errors name what could not be written.
pub fn seed_factory(storage: &mut Storage, profile: &Profile) -> Result<(), String> {
    let fw: ModelFirmware = unit::model_firmware(profile).ok_or_else(|| {
        format!(
            "the emulator has no application firmware for {}",
            profile.name
        )
    })?;
    let ss = storage.sector_size() as usize;
    let loader = BOOT_LOADERS
        .iter()
        .find_map(|n| find_region(storage, n))
        .ok_or("the partition table names no boot loader partition")?;
    if !storage.is_nand() {
        // NAND keeps the SBL stub the storage was built with.
        write_region(
            storage,
            &loader,
            &crate::sim::firehose::mibib::sbl_stub_page(ss),
        )?;
    }
    let modem = find_region(storage, "modem").ok_or("the layout has no modem partition")?;
    write_region(storage, &modem, &firmware_mark(fw.revision))?;
    for name in FACTORY_IMAGES {
        if let Some(r) = find_region(storage, name) {
            let data = if name.eq_ignore_ascii_case("system") {
                firmware_mark(fw.revision)
            } else {
                format!("qrescue emulated {name} image").into_bytes()
            };
            write_region(storage, &r, &data)?;
        }
    }
    let image = factory_efs(profile).encode();
    let mut written = 0;
    for name in efs_partitions(storage) {
        if let Some(r) = find_region(storage, name) {
            write_region(storage, &r, &image)?;
            written += 1;
        }
    }
    if written == 0 {
        return Err("the layout has no EFS partition".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::firehose::storage::StorageProfile;

    fn unit() -> Profile {
        Profile::by_name("ec25").unwrap().for_unit(3)
    }

    fn seeded(storage: &str, p: &Profile) -> Storage {
        let mut s = Storage::new(&StorageProfile::by_name(storage).unwrap());
        seed_factory(&mut s, p).unwrap();
        s
    }

    #[test]
    fn marks_round_trip_and_reject_junk() {
        let m = firmware_mark("EC25EFAR06A17M4G_20.200.20.200");
        assert_eq!(
            parse_firmware_mark(&m).as_deref(),
            Some("EC25EFAR06A17M4G_20.200.20.200")
        );
        let mut page = m.clone();
        page.resize(4096, 0xFF);
        assert!(parse_firmware_mark(&page).is_some());
        assert_eq!(parse_firmware_mark(&[0xFF; 64]), None);
        assert_eq!(parse_firmware_mark(&m[..12]), None);
        let mut bad = m.clone();
        bad[12] = b'/';
        assert_eq!(parse_firmware_mark(&bad), None);
    }

    #[test]
    fn an_erased_storage_does_not_boot() {
        let p = unit();
        for name in ["nand-ec25e", "emmc-msm8916"] {
            let s = Storage::new(&StorageProfile::by_name(name).unwrap());
            match boot(&s, &p) {
                Boot::BootRom { why } => assert!(
                    why.contains("modem") || why.contains("boot loader"),
                    "{name}: {why}"
                ),
                b => panic!("{name}: {b:?}"),
            }
        }
    }

    #[test]
    fn a_factory_unit_boots_to_cfun_1_with_its_imei_on_every_storage() {
        let p = unit();
        for name in [
            "nand-ec25e",
            "nand-eg25g",
            "nand-em12g",
            "emmc-msm8916",
            "ufs-qcs6490",
        ] {
            if name == "ufs-qcs6490" {
                // No modem partition in that layout: it cannot hold application firmware.
                let mut s = Storage::new(&StorageProfile::by_name(name).unwrap());
                assert!(seed_factory(&mut s, &p).is_err());
                continue;
            }
            let s = seeded(name, &p);
            let b = boot(&s, &p);
            let n = b.normal().unwrap_or_else(|| panic!("{name}: {b:?}"));
            assert_eq!(n.cfun, 1, "{name}");
            assert!(n.calibrated && n.marked);
            assert_eq!(n.imei.as_deref(), Some(unit::unit_imei(&p).as_str()));
            assert_eq!(n.revision, "EC25EFAR06A17M4G_20.200.20.200");
            assert_eq!(n.model, "EC25");
        }
    }

    #[test]
    fn erased_calibration_gives_cfun_5_and_the_golden_copy_is_used() {
        let p = unit();
        let mut s = seeded("nand-ec25e", &p);
        let efs2 = find_region(&s, "efs2").unwrap();
        erase_region(&mut s, &efs2).unwrap();
        let n = boot(&s, &p).normal().cloned().unwrap();
        assert_eq!((n.cfun, n.calibrated, n.imei), (5, false, None));

        let mut s = seeded("emmc-msm8916", &p);
        for name in ["modemst1", "modemst2"] {
            let r = find_region(&s, name).unwrap();
            write_region(&mut s, &r, &[0u8; 4096]).unwrap();
        }
        let n = boot(&s, &p).normal().cloned().unwrap();
        assert_eq!((n.cfun, n.efs_partition.as_deref()), (1, Some("fsg")));
        let fsg = find_region(&s, "fsg").unwrap();
        write_region(&mut s, &fsg, &[0xFF; 512]).unwrap();
        assert_eq!(boot(&s, &p).normal().unwrap().cfun, 5);
    }

    #[test]
    fn another_variant_gives_cfun_7_and_the_same_variant_boots() {
        let p = unit();
        let mut s = seeded("nand-ec25e", &p);
        let modem = find_region(&s, "modem").unwrap();
        write_region(
            &mut s,
            &modem,
            &firmware_mark("EC25AFFAR07A08M4G_01.001.01.001"),
        )
        .unwrap();
        let n = boot(&s, &p).normal().cloned().unwrap();
        assert_eq!(
            (n.cfun, n.revision.as_str()),
            (7, "EC25AFFAR07A08M4G_01.001.01.001")
        );
        // Calibration gone as well: still 7.
        let efs2 = find_region(&s, "EFS2").unwrap();
        erase_region(&mut s, &efs2).unwrap();
        assert_eq!(boot(&s, &p).normal().unwrap().cfun, 7);
        // An upgrade within the variant boots normally and reports the new revision.
        let mut s = seeded("nand-ec25e", &p);
        write_region(
            &mut s,
            &modem,
            &firmware_mark("EC25EFAR06A18M4G_20.201.20.201"),
        )
        .unwrap();
        let n = boot(&s, &p).normal().cloned().unwrap();
        assert_eq!(
            (n.cfun, n.revision.as_str()),
            (1, "EC25EFAR06A18M4G_20.201.20.201")
        );
        // Unmarked firmware counts as the unit's own.
        write_region(&mut s, &modem, &[0x5A; 100]).unwrap();
        let sys = find_region(&s, "system").unwrap();
        write_region(&mut s, &sys, &[0x5A; 100]).unwrap();
        let n = boot(&s, &p).normal().cloned().unwrap();
        assert_eq!((n.cfun, n.marked), (1, false));
        assert_eq!(n.revision, n.factory_revision);
    }

    #[test]
    fn factory_boot_is_what_a_seeded_storage_boots_to() {
        let p = unit();
        let mut from_storage = boot(&seeded("nand-ec25e", &p), &p)
            .normal()
            .cloned()
            .unwrap();
        assert_eq!(from_storage.efs_partition.take().as_deref(), Some("EFS2"));
        assert_eq!(Some(from_storage), factory_boot(&p));
    }

    #[test]
    fn a_broken_boot_chain_falls_to_the_boot_rom() {
        let p = unit();
        let mut s = seeded("nand-ec25e", &p);
        let sbl = find_region(&s, "SBL").unwrap();
        write_region(&mut s, &sbl, &[0x11; 64]).unwrap();
        assert!(!boot(&s, &p).is_normal());
        let mut s = seeded("nand-ec25e", &p);
        let modem = find_region(&s, "modem").unwrap();
        erase_region(&mut s, &modem).unwrap();
        assert!(!boot(&s, &p).is_normal());
        // A model without application firmware never boots to normal mode.
        let other = Profile::by_name("ec25").unwrap();
        let mut crash_named = other.clone();
        crash_named.name = "eg91".into();
        assert!(!boot(&seeded("nand-ec25e", &p), &crash_named).is_normal());
    }
}
