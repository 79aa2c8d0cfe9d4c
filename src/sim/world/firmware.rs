//! What is in the demo unit's flash, and what it boots into because of it.
//!
//! The world generates one firmware package for its unit ([`package_gen`]) and fills the unit's
//! emulated storage *as the unit left the factory*: every partition the package programs holds
//! an older image of the same firmware (the "factory image", same size, other bytes), and every
//! device-unique partition (EFS2, modemst1/2, fsg, …: [`guards::classify`]) holds data of its
//! own; the EFS partitions hold the unit's IMEI (NV 550) and RF calibration in the layout the
//! normal-mode firmware reads ([`crate::sim::normal::state`]). The modem and system images start
//! with a firmware mark naming their revision (the factory's, or the package's), so a unit that
//! boots says over AT which one it runs. Then the scenario damages what it needs to (a
//! half-written boot chain, a half-written modem image).
//!
//! # The boot rule
//!
//! A partition is *good* when it holds, from its first byte, an image the unit's chain of trust
//! accepts: the factory image it shipped with, or the generated package's image for that
//! partition (both are "signed" for this unit; the package's programmer is too). Anything else
//! — erased, garbage, a write that stopped half-way — is not. This is how a secure-boot chain
//! behaves (each stage runs the next only when its signature checks), reduced to a hash list.
//!
//! - A bad **boot-chain** partition (SBL/XBL, TZ, RPM, aboot, boot, hyp, …) leaves the unit in
//!   its boot ROM: 9008, and — this is the emulation's choice, after the RM502Q-GL that cycled
//!   "every 14 s, less 14 s of live" (USERS.md §4.2) — a watchdog that power-cycles it, so it
//!   appears for a window every period.
//! - A bad **firmware** partition (modem, system, …) with a good boot chain: the unit boots and
//!   crashes, and waits in 05c6:900e crash-dump mode (Sahara memory debug).
//! - Everything good: normal mode; what it answers there (`+CFUN: 1`, 5 without calibration, 7
//!   with another variant's firmware, its IMEI) follows the storage through
//!   [`crate::sim::normal::boot`].
//!
//! The check runs when the unit boots (after a reset, a power cycle, a watchdog cycle), so what a
//! flash wrote decides what the unit does next — nothing is scripted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use md5::Md5;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::engine::guards;
use crate::protocol::firehose::commands::StorageKind;
use crate::sim::firehose::mibib;
use crate::sim::firehose::storage::{Region, Storage, StorageProfile};
use crate::sim::normal;
use crate::sim::package_gen::{self, PackageOptions, PackageSummary};
use crate::sim::profile::Profile;
use crate::Error;

use super::Scenario;

/// Partition names (lower case, without `_a`/`_b` and `bak`) of the boot chain.
const BOOT_CHAIN: &[&str] = &[
    "sbl",
    "sbl1",
    "xbl",
    "xbl_config",
    "tz",
    "rpm",
    "aboot",
    "abl",
    "boot",
    "hyp",
    "aop",
    "uefi",
    "devcfg",
    "qupfw",
];

/// The revisions the unit's firmware images say they are.
#[derive(Debug, Clone, Copy)]
pub struct Marks<'a> {
    /// The package's folder name (its revision, with a `_factory` tag where it has one).
    pub folder: &'a str,
    /// The revision the package's modem and system images carry.
    pub package: &'a str,
    /// The revision of the firmware the unit left the factory with.
    pub modem: &'a str,
}

/// Images that carry a firmware mark (as `package_gen::emit_firmware` marks them).
fn is_marked(partition: &str) -> bool {
    partition.eq_ignore_ascii_case("modem") || partition.eq_ignore_ascii_case("system")
}

/// Bytes of per-unit data written into each device-unique partition (at most its size).
const UNIQUE_BYTES: u64 = 256 << 10;

/// True when `partition` is part of the boot chain.
pub fn is_boot_chain(partition: &str) -> bool {
    let n = partition.to_ascii_lowercase();
    let n = n.strip_suffix("bak").unwrap_or(&n);
    let n = n
        .strip_suffix("_a")
        .or_else(|| n.strip_suffix("_b"))
        .unwrap_or(n);
    BOOT_CHAIN.contains(&n)
}

/// Where a range of a partition lives.
#[derive(Debug, Clone)]
struct Area {
    name: String,
    lun: u32,
    start: u64,
    /// Sectors the image (or data) covers.
    sectors: u64,
    /// Sectors of the whole partition.
    part_sectors: u64,
}

impl Area {
    fn of(region: &Region, bytes: u64, sector_size: u64) -> Area {
        Area {
            name: region.name.clone(),
            lun: region.lun,
            start: region.start_sector,
            sectors: bytes.div_ceil(sector_size).min(region.num_sectors),
            part_sectors: region.num_sectors,
        }
    }

    /// NAND: the bad-block mapping stays inside the partition, as the package's own
    /// `last_sector` keeps it.
    fn last(&self, storage: &Storage) -> Option<u64> {
        storage
            .is_nand()
            .then(|| self.start + self.part_sectors.saturating_sub(1))
    }

    fn sha256(&self, storage: &Storage) -> Option<[u8; 32]> {
        storage
            .sha256_of(self.lun, self.start, self.sectors, self.last(storage))
            .ok()
    }
}

/// One image the unit checks at boot.
#[derive(Debug, Clone)]
struct Checked {
    area: Area,
    chain: bool,
    /// sha256 of the factory image and of the package's image.
    trusted: [[u8; 32]; 2],
}

/// What the unit finds in its flash when it boots.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootCheck {
    /// Boot-chain partitions that hold no image the chain accepts.
    pub chain_bad: Vec<String>,
    /// Other firmware partitions that hold no image the unit accepts.
    pub firmware_bad: Vec<String>,
}

impl BootCheck {
    pub fn chain_ok(&self) -> bool {
        self.chain_bad.is_empty()
    }

    pub fn firmware_ok(&self) -> bool {
        self.firmware_bad.is_empty()
    }

    /// Boots into normal mode.
    pub fn boots(&self) -> bool {
        self.chain_ok() && self.firmware_ok()
    }
}

/// The unit's firmware: the generated package, what the unit checks at boot, and its
/// device-unique areas.
#[derive(Debug)]
pub struct Firmware {
    pub package: PathBuf,
    pub summary: PackageSummary,
    checked: Vec<Checked>,
    unique: Vec<Area>,
    /// The revisions of the package's images and of the factory's.
    package_revision: String,
    factory_revision: String,
}

fn bug(what: impl Into<String>, e: impl std::fmt::Debug) -> Error {
    Error::failure(
        format!("{}: {e:?}", what.into()),
        "the demo could not set up its emulated modem",
        "This is a bug in qrescue; please report it with the command line used",
    )
}

fn io_err(what: String, e: std::io::Error) -> Error {
    Error::failure(
        what,
        "the demo writes its firmware package into a temporary folder",
        "Check that the temporary folder (TMPDIR) is writable and has room",
    )
    .with_source(e)
}

/// Seeded bytes: `len` bytes for `what` of unit `seed`, starting with `head`.
fn seeded(seed: u64, what: &str, head: &[u8], len: usize) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"qrescue demo world");
    h.update(seed.to_le_bytes());
    h.update(what.as_bytes());
    let mut rng = ChaCha8Rng::from_seed(h.finalize().into());
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    let n = head.len().min(len);
    v[..n].copy_from_slice(&head[..n]);
    v
}

/// Write `bytes` at the start of `area` as a programmer would (NAND: erase the partition's
/// blocks, then program through the bad-block mapping).
fn install(storage: &mut Storage, area: &Area, bytes: &[u8]) -> crate::Result<()> {
    let ss = u64::from(storage.sector_size());
    let last = area.last(storage);
    let mut data = bytes.to_vec();
    data.resize(
        (data.len() as u64).div_ceil(ss).saturating_mul(ss) as usize,
        0xFF,
    );
    let pages = data.len() as u64 / ss;
    if let Some(nand) = storage.nand_mut() {
        nand.erase(area.start, area.part_sectors, last)
            .map_err(|e| bug(format!("erase {}", area.name), e))?;
        let plan = nand
            .plan_program(area.start, pages, last)
            .map_err(|e| bug(format!("program {}", area.name), e))?;
        nand.program_pages(&plan, 0, &data);
        return Ok(());
    }
    let store = storage
        .block_store_mut(area.lun)
        .ok_or_else(|| bug(format!("no LUN {} for {}", area.lun, area.name), ""))?;
    store.write(area.start * ss, &data);
    Ok(())
}

impl Firmware {
    /// Generate the package into `dir/<folder>` for `unit` on `profile`, build the storage as
    /// the unit left the factory, and damage it as `scenario` says. Returns the storage.
    pub fn build(
        dir: &Path,
        revisions: &Marks<'_>,
        unit: &Profile,
        profile: &StorageProfile,
        scenario: Scenario,
        opts: PackageOptions,
    ) -> crate::Result<(Firmware, Storage)> {
        let package = dir.join(revisions.folder);
        let summary = package_gen::emit_firmware(&package, unit, profile, opts, revisions.package)?;
        let mut storage = Storage::new(profile);
        let ss = u64::from(storage.sector_size());
        let regions = storage.regions();
        let kind = if storage.is_nand() {
            StorageKind::Nand
        } else if storage.memory_name() == "UFS" {
            StorageKind::Ufs
        } else {
            StorageKind::Emmc
        };

        // The images the package programs, each with the factory image it replaces.
        let mut checked = Vec::new();
        let mut factory = Vec::new();
        for f in &summary.files {
            let Some(part) = f.partition.as_deref() else {
                continue;
            };
            // The partition table is rewritten with the same table; it is not a boot image.
            if part.eq_ignore_ascii_case("mibib") {
                continue;
            }
            let Some(region) = regions.iter().find(|r| r.name == part) else {
                continue;
            };
            let path = package.join(&f.path);
            let image = std::fs::read(&path)
                .map_err(|e| io_err(format!("Cannot read {}", path.display()), e))?;
            let area = Area::of(region, image.len() as u64, ss);
            let mut padded = image.clone();
            padded.resize((area.sectors * ss) as usize, 0);
            // NAND SBL keeps the SBL header page host tools look for.
            let head = if storage.is_nand() && is_boot_chain(part) && part == "SBL" {
                mibib::sbl_stub_page(ss as usize)
            } else if is_marked(part) {
                // The firmware the unit left the factory with says which revision it is.
                normal::state::firmware_mark(revisions.modem)
            } else {
                Vec::new()
            };
            let old = seeded(opts.seed, &format!("factory {part}"), &head, padded.len());
            checked.push(Checked {
                chain: is_boot_chain(part),
                trusted: [Sha256::digest(&old).into(), Sha256::digest(&padded).into()],
                area,
            });
            factory.push(old);
        }
        if !checked.iter().any(|c| c.chain) || !checked.iter().any(|c| !c.chain) {
            return Err(bug(
                "the generated package has no boot chain or no firmware image",
                profile.name(),
            ));
        }

        // What the scenario damages: a write that stopped half-way.
        let chain: Vec<usize> = (0..checked.len()).filter(|&i| checked[i].chain).collect();
        let damaged: Vec<usize> = match scenario {
            Scenario::Update | Scenario::Factory => Vec::new(),
            // The modem image (the largest firmware image where there is none by that name).
            Scenario::Crash => {
                let firmware = (0..checked.len()).filter(|&i| !checked[i].chain);
                let modem = firmware
                    .clone()
                    .find(|&i| checked[i].area.name.eq_ignore_ascii_case("modem"));
                modem
                    .or_else(|| firmware.max_by_key(|&i| checked[i].area.sectors))
                    .into_iter()
                    .collect()
            }
            Scenario::Unbrick | Scenario::WrongVariant => {
                let mut v = vec![chain[0], chain[chain.len() - 1]];
                v.dedup();
                v
            }
        };
        for (i, (c, old)) in checked.iter().zip(&factory).enumerate() {
            let bytes = if damaged.contains(&i) {
                let half = (c.area.sectors / 2).max(1).min(c.area.sectors - 1) * ss;
                &old[..half as usize]
            } else {
                &old[..]
            };
            install(&mut storage, &c.area, bytes)?;
        }

        // Device-unique data of this unit.
        let mut unique = Vec::new();
        for r in &regions {
            if guards::classify(&r.name, kind).is_none() || r.num_sectors == 0 {
                continue;
            }
            let area = Area::of(r, UNIQUE_BYTES.min(r.num_sectors * ss), ss);
            let data = seeded(
                opts.seed,
                &format!("unit data {} {}", r.lun, r.name),
                &[],
                (area.sectors * ss) as usize,
            );
            install(&mut storage, &area, &data)?;
            unique.push(area);
        }

        // The EFS holds the unit's IMEI (NV 550) and RF calibration, as the normal-mode firmware
        // reads them (`sim::normal::state`).
        let efs = normal::state::factory_efs(unit).encode();
        for name in normal::state::efs_partitions(&storage) {
            if let Some(r) = normal::state::find_region(&storage, name) {
                normal::state::write_region(&mut storage, &r, &efs)
                    .map_err(|e| bug(format!("write the EFS into {name}"), e))?;
            }
        }

        let fw = Firmware {
            package,
            summary,
            checked,
            unique,
            package_revision: revisions.package.to_string(),
            factory_revision: revisions.modem.to_string(),
        };
        if scenario == Scenario::Factory {
            fw.add_factory_set(&storage, opts.seed)?;
        }
        Ok((fw, storage))
    }

    /// What the unit finds at boot in `storage`.
    pub fn check(&self, storage: &Storage) -> BootCheck {
        let mut out = BootCheck::default();
        for c in &self.checked {
            let ok = c
                .area
                .sha256(storage)
                .is_some_and(|h| c.trusted.contains(&h));
            if !ok {
                let list = if c.chain {
                    &mut out.chain_bad
                } else {
                    &mut out.firmware_bad
                };
                list.push(c.area.name.clone());
            }
        }
        out
    }

    /// The revision of the firmware in `storage`: the package's when every firmware image is
    /// the package's, else the factory's (what the unit's firmware marks say on layouts where
    /// the emulated application firmware can read them).
    pub fn revision(&self, storage: &Storage) -> &str {
        let package = self
            .checked
            .iter()
            .filter(|c| !c.chain)
            .all(|c| c.area.sha256(storage).is_some_and(|h| h == c.trusted[1]));
        if package {
            &self.package_revision
        } else {
            &self.factory_revision
        }
    }

    /// The revision the unit left the factory with.
    pub fn revision_of_factory(&self) -> String {
        self.factory_revision.clone()
    }

    /// The device-unique areas and the sha256 of the data they hold now (name, hex).
    pub fn unique_digests(&self, storage: &Storage) -> Vec<(String, String)> {
        self.unique
            .iter()
            .map(|a| {
                (
                    a.name.clone(),
                    a.sha256(storage).map(hex::encode).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The boot-chain partitions the unit checks.
    pub fn chain(&self) -> Vec<String> {
        self.checked
            .iter()
            .filter(|c| c.chain)
            .map(|c| c.area.name.clone())
            .collect()
    }

    /// Turn the package into a factory package: its only XML set also programs a factory EFS
    /// image into a device-unique partition (EFS2 on NAND, the modem EFS on eMMC/UFS), as the
    /// `_factory` sets of real packages do (PROTOCOLS.md §7.3).
    fn add_factory_set(&self, storage: &Storage, seed: u64) -> crate::Result<()> {
        let ss = u64::from(storage.sector_size());
        let want: &[&str] = if storage.is_nand() {
            &["EFS2", "efs2"]
        } else {
            &["modemst1", "fsg", "modemst2"]
        };
        let Some(target) = want
            .iter()
            .find_map(|w| self.unique.iter().find(|a| a.name == *w))
        else {
            return Err(bug(
                "no EFS partition for the factory package",
                storage.profile_name(),
            ));
        };
        let image_len = (64 << 10).min(target.part_sectors * ss) as usize;
        let image = seeded(seed, "factory EFS image", &[], image_len);
        let write = |rel: &str, bytes: &[u8]| -> crate::Result<()> {
            let p = self.package.join(rel);
            std::fs::write(&p, bytes)
                .map_err(|e| io_err(format!("Cannot write {}", p.display()), e))
        };
        let read = |p: &Path| -> crate::Result<String> {
            std::fs::read_to_string(p)
                .map_err(|e| io_err(format!("Cannot read {}", p.display()), e))
        };
        let mut files: Vec<String> = self.summary.files.iter().map(|f| f.path.clone()).collect();
        if let Some(ppb) = storage.pages_per_block() {
            let raw = &self.summary.rawprogram[0];
            let xml = read(raw)?;
            let last = target.start + target.part_sectors - 1;
            let entry = |kind: &str, file: &str| {
                format!(
                    "  <{kind} PAGES_PER_BLOCK=\"{ppb}\" SECTOR_SIZE_IN_BYTES=\"{ss}\"{file} label=\"{}\" last_sector=\"{last}\" num_partition_sectors=\"{}\" physical_partition_number=\"0\" start_sector=\"{}\"/>\n",
                    target.name, target.part_sectors, target.start
                )
            };
            let extra = entry("erase", "") + &entry("program", " filename=\"..\\cefs.mbn\"");
            let name = raw
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .replace("_update.xml", "_factory.xml");
            let new = raw.with_file_name(&name);
            std::fs::write(&new, xml.replace("</data>", &format!("{extra}</data>")))
                .map_err(|e| io_err(format!("Cannot write {}", new.display()), e))?;
            std::fs::remove_file(raw)
                .map_err(|e| io_err(format!("Cannot remove {}", raw.display()), e))?;
            write("update/cefs.mbn", &image)?;
            let old_rel = self
                .summary
                .files
                .iter()
                .find(|f| self.package.join(&f.path) == *raw)
                .map(|f| f.path.clone())
                .unwrap_or_default();
            for f in &mut files {
                if *f == old_rel {
                    *f = format!("update/firehose/{name}");
                }
            }
            files.push("update/cefs.mbn".into());
        } else {
            let raw = self.package.join(format!("rawprogram{}.xml", target.lun));
            let xml = read(&raw)?;
            let line = format!(
                "  <program SECTOR_SIZE_IN_BYTES=\"{ss}\" file_sector_offset=\"0\" filename=\"fs_factory.img\" label=\"{}\" num_partition_sectors=\"{}\" physical_partition_number=\"{}\" sparse=\"false\" start_sector=\"{}\"/>\n",
                target.name, target.part_sectors, target.lun, target.start
            );
            std::fs::write(&raw, xml.replace("</data>", &format!("{line}</data>")))
                .map_err(|e| io_err(format!("Cannot write {}", raw.display()), e))?;
            write("fs_factory.img", &image)?;
            files.push("fs_factory.img".into());
        }
        // md5.txt again, over the files as they are now.
        let mut s = String::from("VERSION:1.0\r\nFILE:START\r\n");
        for rel in &files {
            let p = self.package.join(rel);
            let bytes =
                std::fs::read(&p).map_err(|e| io_err(format!("Cannot read {}", p.display()), e))?;
            let _ = write!(
                s,
                "FILE:\\{}:{}\r\n",
                rel.replace('/', "\\"),
                hex::encode_upper(Md5::digest(&bytes))
            );
        }
        s.push_str("FILE:END\r\n");
        write("md5.txt", s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_chain_names() {
        for n in [
            "SBL",
            "sbl1",
            "sbl1bak",
            "xbl_a",
            "xbl_config_b",
            "TZ",
            "aboot",
            "boot",
        ] {
            assert!(is_boot_chain(n), "{n}");
        }
        for n in [
            "modem",
            "system",
            "EFS2",
            "recoveryfs",
            "userdata",
            "DDR",
            "cdt",
        ] {
            assert!(!is_boot_chain(n), "{n}");
        }
    }
}
