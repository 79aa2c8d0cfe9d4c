//! Fake firmware packages that match an emulated unit, to flash in tests, demos and benchmarks.
//!
//! NAND profiles get the Quectel layout (PROTOCOLS.md §7.1): `md5.txt` and `contents.xml` at the
//! root, images in `update/`, and `update/firehose/` with the programmer (signed for the unit),
//! `rawprogram_nand_p{P}K_b{B}K_update.xml`, `patch_p{P}K_b{B}K.xml` and the MIBIB image
//! `partition_complete_p{P}K_b{B}K.mbn` built from the emulator's own partition table. eMMC/UFS
//! profiles get a ptool-style set: `rawprogram0..N.xml` / `patch0..N.xml` per LUN with
//! `gpt_main0.bin` / `gpt_backup0.bin` images and DISK patches with `NUM_DISK_SECTORS` / `CRC32`
//! expressions, like real packages.
//!
//! Image contents are deterministic (seeded) and written in 1 MiB pieces, so a 512 MiB package
//! costs little memory. Partitions holding device-unique data (EFS, NV, calibration) are never in
//! an update package.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use md5::{Digest, Md5};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::sim::firehose::mibib;
use crate::sim::firehose::storage::{Storage, StorageProfile};
use crate::sim::profile::Profile;
use crate::{Error, ErrorKind};

/// How big the generated images are.
#[derive(Debug, Clone, Copy)]
pub struct PackageOptions {
    /// Total bytes of partition images to aim for (spread over the partitions by their size,
    /// never more than fits a partition).
    pub image_bytes: u64,
    pub seed: u64,
}

impl Default for PackageOptions {
    fn default() -> Self {
        PackageOptions {
            image_bytes: 8 << 20,
            seed: 1,
        }
    }
}

/// One image in the package.
#[derive(Debug, Clone, Serialize)]
pub struct PackageFile {
    /// Path relative to the package root, `/`-separated.
    pub path: String,
    pub bytes: u64,
    pub md5: String,
    /// The partition it is programmed to (None for XML and the programmer).
    pub partition: Option<String>,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct PackageSummary {
    pub root: PathBuf,
    pub storage: String,
    pub programmer: PathBuf,
    pub rawprogram: Vec<PathBuf>,
    pub patch: Vec<PathBuf>,
    pub files: Vec<PackageFile>,
    pub image_bytes: u64,
}

/// Partition names (lower case) that hold device-unique or user data: never in a package.
const NEVER_IN_PACKAGE: &[&str] = &[
    "efs2",
    "efs",
    "sys_rev",
    "rawdata",
    "cust_info",
    "scrub",
    "apdp",
    "misc",
    "sec",
    "cache",
    "usrfs",
    "usrdata",
    "userdata",
    "persist",
    "modemst1",
    "modemst2",
    "fsg",
    "fsc",
    "ssd",
    "devinfo",
    "keystore",
    "config",
    "frp",
    "msadp",
    "dpo",
    "limits",
    "splash",
    "mdtp",
];

fn io_err(what: String, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Failure,
        what,
        "the fake package is written there",
        "Choose an empty folder you can write to, with enough free space",
    )
    .with_source(e)
}

struct Writer {
    root: PathBuf,
    files: Vec<PackageFile>,
    rng: ChaCha8Rng,
}

impl Writer {
    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn create(&self, rel: &str) -> crate::Result<BufWriter<File>> {
        let p = self.path(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| io_err(format!("Cannot create {}", parent.display()), e))?;
        }
        let f =
            File::create(&p).map_err(|e| io_err(format!("Cannot create {}", p.display()), e))?;
        Ok(BufWriter::with_capacity(1 << 20, f))
    }

    /// Write `head` then `len - head.len()` seeded random bytes.
    fn image(
        &mut self,
        rel: &str,
        head: &[u8],
        len: u64,
        partition: Option<&str>,
    ) -> crate::Result<()> {
        let mut w = self.create(rel)?;
        let mut md5 = Md5::new();
        let head = &head[..head.len().min(len as usize)];
        let err = |e| io_err(format!("Cannot write {rel}"), e);
        w.write_all(head).map_err(err)?;
        md5.update(head);
        let mut left = len - head.len() as u64;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            self.rng.fill_bytes(&mut buf[..n]);
            w.write_all(&buf[..n]).map_err(err)?;
            md5.update(&buf[..n]);
            left -= n as u64;
        }
        w.flush().map_err(err)?;
        self.files.push(PackageFile {
            path: rel.to_string(),
            bytes: len,
            md5: hex::encode_upper(md5.finalize()),
            partition: partition.map(str::to_string),
        });
        Ok(())
    }

    fn text(&mut self, rel: &str, text: &str) -> crate::Result<()> {
        let mut w = self.create(rel)?;
        w.write_all(text.as_bytes())
            .and_then(|_| w.flush())
            .map_err(|e| io_err(format!("Cannot write {rel}"), e))?;
        self.files.push(PackageFile {
            path: rel.to_string(),
            bytes: text.len() as u64,
            md5: hex::encode_upper(Md5::digest(text.as_bytes())),
            partition: None,
        });
        Ok(())
    }

    /// `md5.txt` in Quectel's format: `FILE:\update\…:<MD5 upper case>` between FILE:START/END.
    fn md5_manifest(&mut self) -> crate::Result<()> {
        let mut s = String::from("VERSION:1.0\r\nFILE:START\r\n");
        for f in &self.files {
            let _ = write!(s, "FILE:\\{}:{}\r\n", f.path.replace('/', "\\"), f.md5);
        }
        s.push_str("FILE:END\r\n");
        let p = self.path("md5.txt");
        std::fs::write(&p, s).map_err(|e| io_err(format!("Cannot write {}", p.display()), e))
    }
}

/// Image bytes for a partition of `capacity` bytes: a share of the budget proportional to the
/// partition's size, whole `unit`s, at least one unit, never more than the capacity.
fn share(budget: u64, total_capacity: u64, capacity: u64, unit: u64) -> u64 {
    let want = (budget as u128 * capacity as u128 / total_capacity.max(1) as u128) as u64;
    let rounded = want.div_ceil(unit).max(1) * unit;
    rounded.min(capacity / unit * unit)
}

fn image_name(label: &str, chip: &str) -> String {
    match label.to_ascii_lowercase().as_str() {
        "sbl" | "sbl1" => "sbl1.mbn".into(),
        "tz" => "tz.mbn".into(),
        "rpm" => "rpm.mbn".into(),
        "aboot" => "appsboot.mbn".into(),
        "boot" => format!("{chip}-boot.img"),
        "modem" => "NON-HLOS.ubi".into(),
        "recovery" => format!("{chip}-recovery.img"),
        "recoveryfs" => format!("mdm-recovery-image-{chip}.ubi"),
        "system" => format!("{chip}-sysfs.ubi"),
        other => format!("{other}.img"),
    }
}

/// Write a package for `unit` on `storage` into `dir` (which must be empty or absent). Its
/// images carry no firmware mark: the emulated unit takes them as its own factory build
/// ([`crate::sim::normal::state`]).
pub fn emit(
    dir: &Path,
    unit: &Profile,
    storage: &StorageProfile,
    opts: PackageOptions,
) -> crate::Result<PackageSummary> {
    emit_inner(dir, unit, storage, opts, None)
}

/// As [`emit`], with the modem and system images starting with the firmware mark of `revision`
/// ([`crate::sim::normal::state::firmware_mark`]), so a unit flashed with the package runs that
/// revision: another model or variant than the unit's own boots to `+CFUN: 7`.
pub fn emit_firmware(
    dir: &Path,
    unit: &Profile,
    storage: &StorageProfile,
    opts: PackageOptions,
    revision: &str,
) -> crate::Result<PackageSummary> {
    let mark = crate::sim::normal::state::firmware_mark(revision);
    emit_inner(dir, unit, storage, opts, Some(&mark))
}

/// Images that carry the firmware mark.
fn marked(label: &str) -> bool {
    label.eq_ignore_ascii_case("modem") || label.eq_ignore_ascii_case("system")
}

fn emit_inner(
    dir: &Path,
    unit: &Profile,
    storage: &StorageProfile,
    opts: PackageOptions,
    mark: Option<&[u8]>,
) -> crate::Result<PackageSummary> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("{} is not empty", dir.display()),
            "a generated package must not mix with other files",
            "Give --emit-package a new or empty folder",
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| io_err(format!("Cannot create {}", dir.display()), e))?;
    let mut w = Writer {
        root: dir.to_path_buf(),
        files: Vec::new(),
        rng: ChaCha8Rng::seed_from_u64(opts.seed ^ 0x9ac4_a9e0),
    };
    match storage {
        StorageProfile::Nand(spec) => emit_nand(&mut w, unit, spec, opts, mark),
        StorageProfile::Block(_) => emit_block(&mut w, unit, storage, opts, mark),
    }
}

fn chip_word(unit: &Profile) -> String {
    unit.chip
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

fn emit_nand(
    w: &mut Writer,
    unit: &Profile,
    spec: &crate::sim::firehose::storage::NandSpec,
    opts: PackageOptions,
    mark: Option<&[u8]>,
) -> crate::Result<PackageSummary> {
    let geo = spec.geometry;
    let ps = u64::from(geo.page_size);
    let ppb = u64::from(geo.pages_per_block);
    let block = ps * ppb;
    let tag = format!("p{}K_b{}K", geo.page_size / 1024, block / 1024);
    let chip = chip_word(unit);
    let parts = mibib::resolve(&spec.layout, block as u32, geo.num_blocks);
    let prog_rel = format!("update/firehose/prog_nand_firehose_{chip}.mbn");
    let programmer = unit.programmer(opts.seed);
    w.image(&prog_rel, &programmer, programmer.len() as u64, None)?;

    // Partitions the package programs, with room left for two bad blocks in each.
    let chosen: Vec<&mibib::NandPartition> = parts
        .iter()
        .filter(|p| !NEVER_IN_PACKAGE.contains(&p.label().to_ascii_lowercase().as_str()))
        .filter(|p| p.num_blocks >= 3)
        .collect();
    let room = |p: &mibib::NandPartition| u64::from(p.num_blocks - 2) * block;
    let total_room: u64 = chosen
        .iter()
        .filter(|p| !matches!(p.label(), "SBL" | "MIBIB"))
        .map(|p| room(p))
        .sum();

    let mut xml = String::from("<?xml version=\"1.0\" ?>\n<data>\n");
    let _ = writeln!(
        xml,
        "  <!--NOTE: generated by qrescue sim for emulated unit {} -->",
        unit.name
    );
    let _ = writeln!(xml, "  <!--BlockSize = {} KB-->", block / 1024);
    let _ = writeln!(xml, "  <!--PageSize  = {} KB-->", ps / 1024);
    let entry = |kind: &str, p: &mibib::NandPartition, file: Option<&str>| {
        let start = u64::from(p.first_block) * ppb;
        let n = u64::from(p.num_blocks) * ppb;
        let file_attr = file
            .map(|f| format!(" filename=\"{f}\""))
            .unwrap_or_default();
        format!(
            "  <{kind} PAGES_PER_BLOCK=\"{ppb}\" SECTOR_SIZE_IN_BYTES=\"{ps}\"{file_attr} label=\"{}\" last_sector=\"{}\" num_partition_sectors=\"{n}\" physical_partition_number=\"0\" start_sector=\"{start}\"/>\n",
            p.label(),
            start + n - 1
        )
    };
    let mut image_bytes = 0u64;
    for p in &chosen {
        let label = p.label().to_string();
        let (rel, xml_name, head, len) = match label.as_str() {
            "SBL" => {
                let head = mibib::sbl_stub_page(ps as usize);
                let len = (4 * ps).min(room(p));
                (
                    "update/sbl1.mbn".to_string(),
                    "..\\sbl1.mbn".to_string(),
                    head,
                    len,
                )
            }
            "MIBIB" => {
                let mut head = mibib::mibib_header_page(ps as usize);
                head.extend(mibib::table_page(ps as usize, &parts));
                let len = head.len() as u64;
                (
                    format!("update/firehose/partition_complete_{tag}.mbn"),
                    format!("partition_complete_{tag}.mbn"),
                    head,
                    len,
                )
            }
            _ => {
                let name = image_name(&label, &chip);
                let len = share(opts.image_bytes, total_room, room(p), ps);
                let head = match mark {
                    Some(m) if marked(&label) => m.to_vec(),
                    _ => Vec::new(),
                };
                (format!("update/{name}"), format!("..\\{name}"), head, len)
            }
        };
        w.image(&rel, &head, len, Some(&label))?;
        image_bytes += len;
        xml.push_str(&entry("erase", p, None));
        xml.push_str(&entry("program", p, Some(&xml_name)));
    }
    xml.push_str("</data>\n");
    let raw_rel = format!("update/firehose/rawprogram_nand_{tag}_update.xml");
    w.text(&raw_rel, &xml)?;

    // The MIBIB patch of real packages: the last partition's length, evaluated host-side
    // against NUM_DISK_BLOCKS (here it restates what the generated table already holds).
    let last = parts.last().expect("a NAND layout has partitions");
    let entry_index = parts.len() - 1;
    let patch = format!(
        "<?xml version=\"1.0\" ?>\n<patches>\n  <!--NOTE: Patching is in little endian format-->\n  <patch SECTOR_SIZE_IN_BYTES=\"{ps}\" byte_offset=\"{}\" filename=\"partition_complete_{tag}.mbn\" physical_partition_number=\"0\" size_in_bytes=\"4\" start_sector=\"1\" value=\"NUM_DISK_BLOCKS-{}.\" what=\"Update last partition {} length\"/>\n</patches>\n",
        // Table page layout (sim::firehose::mibib): 16-byte header, 28-byte entries, the block
        // count at +20 of an entry.
        16 + entry_index * 28 + 20,
        last.first_block,
        last.label()
    );
    let patch_rel = format!("update/firehose/patch_{tag}.xml");
    w.text(&patch_rel, &patch)?;
    let contents = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<contents>\n  <product_info>\n    <product_name>{}</product_name>\n    <chipid>{}</chipid>\n  </product_info>\n</contents>\n",
        unit.name, unit.chip
    );
    w.text("contents.xml", &contents)?;
    w.md5_manifest()?;
    Ok(PackageSummary {
        root: w.root.clone(),
        storage: spec.name.clone(),
        programmer: w.path(&prog_rel),
        rawprogram: vec![w.path(&raw_rel)],
        patch: vec![w.path(&patch_rel)],
        files: w.files.clone(),
        image_bytes,
    })
}

fn emit_block(
    w: &mut Writer,
    unit: &Profile,
    profile: &StorageProfile,
    opts: PackageOptions,
    mark: Option<&[u8]>,
) -> crate::Result<PackageSummary> {
    let storage = Storage::new(profile);
    let ss = u64::from(storage.sector_size());
    let chip = chip_word(unit);
    let prog_rel = format!("prog_firehose_{chip}.elf");
    let programmer = unit.programmer(opts.seed);
    w.image(&prog_rel, &programmer, programmer.len() as u64, None)?;
    let regions: Vec<_> = storage
        .regions()
        .into_iter()
        .filter(|r| r.source == "gpt")
        .collect();
    let chosen: Vec<_> = regions
        .iter()
        .filter(|r| !NEVER_IN_PACKAGE.contains(&r.name.to_ascii_lowercase().as_str()))
        .filter(|r| r.num_sectors > 0)
        .take(12)
        .collect();
    let cap = |r: &crate::sim::firehose::storage::Region| (r.num_sectors * ss).min(64 << 20);
    let total: u64 = chosen.iter().map(|r| cap(r)).sum();
    let mut luns: Vec<u32> = regions.iter().map(|r| r.lun).collect();
    luns.dedup();
    let mut summary = PackageSummary {
        root: w.root.clone(),
        storage: profile.name().to_string(),
        programmer: w.path(&prog_rel),
        rawprogram: Vec::new(),
        patch: Vec::new(),
        files: Vec::new(),
        image_bytes: 0,
    };
    for lun in luns {
        let n = storage.num_sectors(lun).unwrap_or(0);
        // The GPT as the factory wrote it: protective MBR + header + the space reserved for
        // the entry array up to FirstUsableLBA, and the backup (array space + header) at the
        // end. The header says where the partitions may start (the first partition may start
        // much later) and how many bytes its array CRC covers (entries × entry size, which can
        // be less than the reserved space).
        let header = storage.read_sectors(lun, 1, 1).map_err(|e| {
            Error::failure(
                format!("cannot read the emulated GPT: {e:?}"),
                "bug",
                "report it",
            )
        })?;
        let le = |at: usize, n: usize| {
            header[at..at + n]
                .iter()
                .rev()
                .fold(0u64, |v, b| (v << 8) | u64::from(*b))
        };
        let first_usable = le(40, 8);
        let array_sectors = first_usable - 2;
        let array_bytes = le(80, 4) * le(84, 4);
        let main = storage.read_sectors(lun, 0, first_usable).map_err(|e| {
            Error::failure(
                format!("cannot read the emulated GPT: {e:?}"),
                "bug",
                "report it",
            )
        })?;
        let backup = storage
            .read_sectors(lun, n - array_sectors - 1, array_sectors + 1)
            .map_err(|e| {
                Error::failure(
                    format!("cannot read the emulated GPT: {e:?}"),
                    "bug",
                    "report it",
                )
            })?;
        let main_rel = format!("gpt_main{lun}.bin");
        let backup_rel = format!("gpt_backup{lun}.bin");
        w.image(&main_rel, &main, main.len() as u64, None)?;
        w.image(&backup_rel, &backup, backup.len() as u64, None)?;
        let mut xml = String::from("<?xml version=\"1.0\" ?>\n<data>\n");
        let _ = writeln!(
            xml,
            "  <!--NOTE: generated by qrescue sim for emulated unit {}; sector size {ss} bytes-->",
            unit.name
        );
        let _ = writeln!(
            xml,
            "  <program SECTOR_SIZE_IN_BYTES=\"{ss}\" file_sector_offset=\"0\" filename=\"{main_rel}\" label=\"PrimaryGPT\" num_partition_sectors=\"{first_usable}\" physical_partition_number=\"{lun}\" sparse=\"false\" start_sector=\"0\"/>"
        );
        for r in chosen.iter().filter(|r| r.lun == lun) {
            let len = share(opts.image_bytes, total, cap(r), ss);
            let rel = format!("{}.img", r.name);
            let head = match mark {
                Some(m) if marked(&r.name) => m,
                _ => &[],
            };
            w.image(&rel, head, len, Some(&r.name))?;
            summary.image_bytes += len;
            let _ = writeln!(
                xml,
                "  <program SECTOR_SIZE_IN_BYTES=\"{ss}\" file_sector_offset=\"0\" filename=\"{rel}\" label=\"{}\" num_partition_sectors=\"{}\" physical_partition_number=\"{lun}\" sparse=\"false\" start_sector=\"{}\"/>",
                r.name, r.num_sectors, r.start_sector
            );
        }
        let _ = writeln!(
            xml,
            "  <program SECTOR_SIZE_IN_BYTES=\"{ss}\" file_sector_offset=\"0\" filename=\"{backup_rel}\" label=\"BackupGPT\" num_partition_sectors=\"{}\" physical_partition_number=\"{lun}\" sparse=\"false\" start_sector=\"NUM_DISK_SECTORS-{}.\"/>",
            array_sectors + 1,
            array_sectors + 1
        );
        xml.push_str("</data>\n");
        let raw_rel = format!("rawprogram{lun}.xml");
        w.text(&raw_rel, &xml)?;
        // The CRC fix-ups real packages end with, evaluated on the device in order.
        let p = |start: &str, off: u32, size: u32, value: &str, what: &str| {
            format!("  <patch SECTOR_SIZE_IN_BYTES=\"{ss}\" byte_offset=\"{off}\" filename=\"DISK\" physical_partition_number=\"{lun}\" size_in_bytes=\"{size}\" start_sector=\"{start}\" value=\"{value}\" what=\"{what}\"/>\n")
        };
        let mut patch = String::from("<?xml version=\"1.0\" ?>\n<patches>\n");
        patch.push_str(&p(
            "1",
            88,
            4,
            &format!("CRC32(2,{array_bytes})"),
            "Update Primary Header with CRC of Partition Array.",
        ));
        patch.push_str(&p(
            "1",
            16,
            4,
            "0",
            "Zero Out Header CRC in Primary Header.",
        ));
        patch.push_str(&p(
            "1",
            16,
            4,
            "CRC32(1,92)",
            "Update Primary Header with CRC of Primary Header.",
        ));
        patch.push_str(&p(
            "NUM_DISK_SECTORS-1.",
            88,
            4,
            &format!(
                "CRC32(NUM_DISK_SECTORS-{}.,{array_bytes})",
                array_sectors + 1
            ),
            "Update Backup Header with CRC of Partition Array.",
        ));
        patch.push_str(&p(
            "NUM_DISK_SECTORS-1.",
            16,
            4,
            "0",
            "Zero Out Header CRC in Backup Header.",
        ));
        patch.push_str(&p(
            "NUM_DISK_SECTORS-1.",
            16,
            4,
            "CRC32(NUM_DISK_SECTORS-1.,92)",
            "Update Backup Header with CRC of Backup Header.",
        ));
        patch.push_str("</patches>\n");
        let patch_rel = format!("patch{lun}.xml");
        w.text(&patch_rel, &patch)?;
        summary.rawprogram.push(w.path(&raw_rel));
        summary.patch.push(w.path(&patch_rel));
    }
    w.md5_manifest()?;
    summary.files = w.files.clone();
    Ok(summary)
}
