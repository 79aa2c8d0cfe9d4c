//! Reading a device's partition table over a Firehose session, and finding a partition by
//! label. The bytes are checked by the pure parsers of `crate::protocol::partitions`; this file
//! only decides what to read.
//!
//! Decisions:
//! - **Geometry first.** `getstorageinfo` for the LUN gives the sector size (eMMC/UFS
//!   `block_size`, NAND `page_size`), the disk size (bounds every LBA of a GPT) and, on NAND,
//!   pages per block and the block count. A programmer that does not answer it is not fatal:
//!   the defaults of [`StorageKind::default_sector_size`] and 64 pages per block (every Quectel
//!   NAND layout) are used, and the sector size is probed.
//! - **GPT.** Read LBA 0..2 (what edl and qdl-rs read first, PROTOCOLS.md §9.8), trying the
//!   sector sizes in turn when the programmer refuses one (qdl's probe); then the entry array
//!   where the checked header says, at most [`MAX_GPT_ARRAY_BYTES`]. If the primary copy is
//!   damaged and the disk size is known, the backup header on the last LBA is tried and a
//!   warning is logged.
//! - **NAND.** Read sector 0 (the SBL codeword tells a blank chip from one with a boot loader),
//!   then the MIBIB block: sector 640 first (where Quectel layouts keep it and edl found it),
//!   then every block start below sector [`NAND_SCAN_SECTORS`], two pages each (header page and
//!   table page; a table page found directly is accepted too). A refused candidate read is
//!   skipped, at most [`MAX_SCAN_FAILURES`] times.
//! - **Nothing is written.** Only `getstorageinfo` and `<read>` are sent.
//! - **Errors** say what is missing in plain words and point at `--start/--count`; a lost link,
//!   a permission problem or an interruption is passed on unchanged.

use crate::engine::firehose::{FirehoseSession, Read, StorageKind};
use crate::error::{Error, ErrorKind};
use crate::protocol::partitions::{
    has_sbl_codeword, is_mibib_header, is_mibib_table, matching, parse_gpt_header,
    parse_mibib_table, Partition, PartitionError, GPT_SECTOR_SIZES, GPT_SIGNATURE,
    MAX_GPT_ARRAY_BYTES, MIBIB_SECTOR,
};
use crate::transport::Transport;

/// NAND: the MIBIB is looked for at block starts below this sector (edl scans 0..0x400).
pub const NAND_SCAN_SECTORS: u64 = 1024;
/// NAND: refused candidate reads tolerated before the scan gives up.
pub const MAX_SCAN_FAILURES: u32 = 3;
/// Pages per block assumed when getstorageinfo does not say.
pub const DEFAULT_PAGES_PER_BLOCK: u32 = 64;
/// UFS: LUNs searched by [`find_partition`] without an explicit LUN.
pub const MAX_SEARCHED_LUNS: u32 = 8;
/// Names listed at most in a "not found" error.
const MAX_LISTED_NAMES: usize = 80;

/// What getstorageinfo said, reduced to what the table readers need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Geometry {
    sector_size: Option<u32>,
    total_sectors: Option<u64>,
    pages_per_block: Option<u32>,
    total_blocks: Option<u64>,
    num_physical: Option<u32>,
}

/// Errors that end the whole operation rather than one attempt.
fn is_fatal(e: &Error) -> bool {
    matches!(
        e.kind,
        ErrorKind::DeviceLost | ErrorKind::Permission | ErrorKind::Interrupted
    )
}

fn plausible_sector(size: u64) -> Option<u32> {
    let s = u32::try_from(size).ok()?;
    (GPT_SECTOR_SIZES.contains(&s) && s.is_power_of_two()).then_some(s)
}

fn geometry<T: Transport>(
    s: &mut FirehoseSession<T>,
    storage: StorageKind,
    lun: u32,
) -> crate::Result<Geometry> {
    let info = match s.storage_info(lun) {
        Ok(i) => i,
        Err(e) if is_fatal(&e) => return Err(e),
        Err(e) => {
            tracing::info!(target: "qrescue::partitions", "getstorageinfo for LUN {lun} gave nothing usable ({}); using defaults", e.what);
            return Ok(Geometry::default());
        }
    };
    let num_physical = info.num_physical.and_then(|n| u32::try_from(n).ok());
    if storage == StorageKind::Nand {
        let sector_size = info.page_size.and_then(plausible_sector);
        let pages_per_block = info
            .pages_per_block()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=4096).contains(n));
        let total_blocks = info.total_blocks.filter(|n| *n > 0);
        let total_sectors = match (total_blocks, pages_per_block) {
            (Some(b), Some(p)) => b.checked_mul(u64::from(p)),
            _ => None,
        };
        return Ok(Geometry {
            sector_size,
            total_sectors,
            pages_per_block,
            total_blocks,
            num_physical,
        });
    }
    // Block devices: the JSON form gives block_size/total_blocks, the older log form
    // SECTOR_SIZE_IN_BYTES/num_partition_sectors; keep each size with its own count.
    let (sector_size, total_sectors) = match info.block_size.and_then(plausible_sector) {
        Some(ss) => (Some(ss), info.total_blocks),
        None => (
            info.sector_size.and_then(plausible_sector),
            info.num_partition_sectors,
        ),
    };
    Ok(Geometry {
        sector_size,
        total_sectors: sector_size.and(total_sectors.filter(|n| *n > 0)),
        pages_per_block: None,
        total_blocks: None,
        num_physical,
    })
}

fn read_sectors<T: Transport>(
    s: &mut FirehoseSession<T>,
    lun: u32,
    sector_size: u32,
    start: u64,
    count: u64,
) -> crate::Result<Vec<u8>> {
    let cmd = Read::new(sector_size, count, lun, start.to_string());
    let len = cmd.byte_len().unwrap_or(0);
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    s.read(&cmd, &mut buf, &mut |_| {})?;
    Ok(buf)
}

/// The sector sizes to try, best guess first, without repeats.
fn sector_candidates(first: Option<u32>, fallback: &[u32]) -> Vec<u32> {
    let mut v: Vec<u32> = Vec::new();
    for s in first.into_iter().chain(fallback.iter().copied()) {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

/// Read `count` sectors at `start`, trying each sector size until the programmer accepts one.
fn probe_read<T: Transport>(
    s: &mut FirehoseSession<T>,
    lun: u32,
    sizes: &[u32],
    start: u64,
    count: u64,
) -> crate::Result<(u32, Vec<u8>)> {
    let mut first_err = None;
    for &ss in sizes {
        match read_sectors(s, lun, ss, start, count) {
            Ok(b) => return Ok((ss, b)),
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                tracing::info!(target: "qrescue::partitions", "reading sector {start} with {ss}-byte sectors failed: {}", e.what);
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err.unwrap_or_else(|| {
        Error::failure(
            "No sector size to try",
            "getstorageinfo gave none and no default applies",
            "Give the sector size explicitly",
        )
    }))
}

/// Read and parse the partition table of physical partition `lun`: the GPT on eMMC, UFS and
/// NVMe (and SPI-NOR), the MIBIB table on NAND. The partitions come in table order, in sectors
/// of the storage (NAND: pages), with `lun` set.
pub fn read_partition_table<T: Transport>(
    s: &mut FirehoseSession<T>,
    storage: StorageKind,
    lun: u32,
) -> crate::Result<Vec<Partition>> {
    let geo = geometry(s, storage, lun)?;
    if storage == StorageKind::Nand {
        read_mibib(s, lun, &geo)
    } else {
        read_gpt(s, storage, lun, &geo)
    }
}

/// Parse one GPT copy whose header sector is `header` (read at `at_lba`), reading its array.
/// I/O errors are the outer result, table errors the inner one.
fn gpt_copy<T: Transport>(
    s: &mut FirehoseSession<T>,
    lun: u32,
    ss: u32,
    header: &[u8],
    at_lba: u64,
    disk: Option<u64>,
) -> crate::Result<Result<Vec<Partition>, PartitionError>> {
    let hdr = match parse_gpt_header(header, ss, at_lba, disk) {
        Ok(h) => h,
        Err(e) => return Ok(Err(e)),
    };
    debug_assert!(hdr.array_bytes() <= MAX_GPT_ARRAY_BYTES);
    let array = read_sectors(s, lun, ss, hdr.entries_lba, hdr.array_sectors())?;
    Ok(hdr.parse_entries(&array, lun))
}

fn read_gpt<T: Transport>(
    s: &mut FirehoseSession<T>,
    storage: StorageKind,
    lun: u32,
    geo: &Geometry,
) -> crate::Result<Vec<Partition>> {
    let sizes = sector_candidates(geo.sector_size, &[storage.default_sector_size(), 512, 4096]);
    let (mut ss, head) = probe_read(s, lun, &sizes, 0, 2)?;
    // A programmer that accepted 4096-byte reads of a 512-byte disk shows the header at 512.
    if ss > 512
        && head.get(512..520) == Some(&GPT_SIGNATURE[..])
        && head.get(ss as usize..ss as usize + 8) != Some(&GPT_SIGNATURE[..])
    {
        tracing::info!(target: "qrescue::partitions", "GPT header found at byte 512: the sector size is 512");
        ss = 512;
    }
    let disk = if geo.sector_size == Some(ss) {
        geo.total_sectors
    } else {
        None
    };
    let primary_err = match gpt_copy(s, lun, ss, head.get(ss as usize..).unwrap_or(&[]), 1, disk)? {
        Ok(parts) => return Ok(parts),
        Err(e) => e,
    };
    tracing::warn!(target: "qrescue::partitions", "primary GPT on LUN {lun}: {primary_err}");
    if let Some(n) = disk.filter(|n| *n > 34) {
        let backup = match read_sectors(s, lun, ss, n - 1, 1) {
            Ok(b) => gpt_copy(s, lun, ss, &b, n - 1, disk)?,
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                tracing::info!(target: "qrescue::partitions", "reading the backup GPT failed: {}", e.what);
                Err(PartitionError::NoGptSignature { lba: n - 1 })
            }
        };
        match backup {
            Ok(parts) => {
                tracing::warn!(target: "qrescue::partitions", "LUN {lun}: the primary GPT is damaged ({primary_err}); using the backup GPT at LBA {}", n - 1);
                return Ok(parts);
            }
            Err(e) => {
                tracing::info!(target: "qrescue::partitions", "backup GPT on LUN {lun}: {e}");
            }
        }
    }
    Err(gpt_error(lun, primary_err))
}

fn gpt_error(lun: u32, e: PartitionError) -> Error {
    let what = match e {
        PartitionError::NoGptSignature { .. } => {
            format!("No valid GPT on LUN {lun}: the storage may be blank or damaged")
        }
        _ => format!("The GPT on LUN {lun} is damaged"),
    };
    Error::failure(
        what,
        format!("{e}, so qrescue cannot tell where the partitions are"),
        "Give the sectors yourself with --start/--count, or restore the partition table by flashing the firmware package (its gpt_main/patch files)",
    )
    .with_source(e)
}

fn read_mibib<T: Transport>(
    s: &mut FirehoseSession<T>,
    lun: u32,
    geo: &Geometry,
) -> crate::Result<Vec<Partition>> {
    let ppb = geo.pages_per_block.unwrap_or(DEFAULT_PAGES_PER_BLOCK);
    let sizes = sector_candidates(geo.sector_size, &[4096, 2048]);
    let (ps, page0) = probe_read(s, lun, &sizes, 0, 1)?;
    let psz = ps as usize;
    let sbl = has_sbl_codeword(&page0);
    tracing::debug!(target: "qrescue::partitions", "NAND sector 0: SBL codeword {}", if sbl { "present" } else { "missing" });
    let total_pages = geo.total_sectors;
    let mut candidates = vec![MIBIB_SECTOR];
    let step = u64::from(ppb);
    let mut c = 0;
    while c < NAND_SCAN_SECTORS {
        if !candidates.contains(&c) {
            candidates.push(c);
        }
        c += step;
    }
    candidates.retain(|c| total_pages.is_none_or(|t| c + 2 <= t));
    let mut failures = 0;
    let mut damaged: Option<(u64, PartitionError)> = None;
    let mut headers_only = Vec::new();
    for c in candidates {
        let pages = match read_sectors(s, lun, ps, c, 2) {
            Ok(b) if b.len() >= 2 * psz => b,
            Ok(_) => continue,
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                tracing::info!(target: "qrescue::partitions", "reading NAND sector {c} failed: {}", e.what);
                failures += 1;
                if failures >= MAX_SCAN_FAILURES {
                    break;
                }
                continue;
            }
        };
        let (p0, p1) = pages.split_at(psz);
        let table = if is_mibib_table(p0) {
            Some(p0)
        } else if is_mibib_header(p0) && is_mibib_table(p1) {
            Some(p1)
        } else {
            if is_mibib_header(p0) {
                headers_only.push(c);
            }
            None
        };
        let Some(table) = table else { continue };
        match parse_mibib_table(table, ppb, geo.total_blocks) {
            Ok(mut parts) => {
                tracing::info!(target: "qrescue::partitions", "found the NAND partition table at sector {c} ({} partitions)", parts.len());
                for p in &mut parts {
                    p.lun = lun;
                }
                return Ok(parts);
            }
            Err(e) => {
                tracing::warn!(target: "qrescue::partitions", "NAND partition table at sector {c}: {e}");
                damaged.get_or_insert((c, e));
            }
        }
    }
    let next = "Give the sectors yourself with --start/--count, or reflash the firmware package (its partition_complete MIBIB image) to restore the table";
    if let Some((c, e)) = damaged {
        return Err(Error::failure(
            format!("The NAND partition table (MIBIB) at sector {c} is damaged"),
            format!("{e}, so qrescue cannot tell where the partitions are"),
            next,
        )
        .with_source(e));
    }
    let why = if let Some(c) = headers_only.first() {
        format!("A MIBIB header is at sector {c} but the page after it holds no partition table")
    } else if sbl {
        format!(
            "Sector 0 holds a boot loader, but no MIBIB was found at sector {MIBIB_SECTOR} or any block start below sector {NAND_SCAN_SECTORS}"
        )
    } else {
        format!(
            "Sector 0 has no boot loader (SBL) codeword and no MIBIB was found below sector {NAND_SCAN_SECTORS}: the NAND may be blank or erased"
        )
    };
    Err(Error::failure(
        format!("No NAND partition table (MIBIB) was found on LUN {lun}"),
        why,
        next,
    ))
}

/// Find the partition labelled `label` (ASCII case ignored) in `parts`. `scope` names where the
/// table came from in messages ("LUN 0"). Not found lists the names that exist; a label on
/// several LUNs asks for the LUN.
pub fn select_partition(parts: &[Partition], label: &str, scope: &str) -> crate::Result<Partition> {
    let hits = matching(parts, label);
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => {
            let multi_lun = parts.iter().any(|p| p.lun != parts[0].lun);
            let names: Vec<String> = parts
                .iter()
                .map(|p| {
                    if multi_lun {
                        format!("{} (LUN {})", p.name, p.lun)
                    } else {
                        p.name.clone()
                    }
                })
                .collect();
            let why = if names.is_empty() {
                format!("The partition table on {scope} lists no partitions")
            } else {
                let shown = names.len().min(MAX_LISTED_NAMES);
                let mut list = names[..shown].join(", ");
                if names.len() > shown {
                    list.push_str(&format!(" and {} more", names.len() - shown));
                }
                format!("The partitions on {scope} are: {list}")
            };
            Err(Error::failure(
                format!("No partition named '{}' on {scope}", label.trim()),
                why,
                "Use one of the names listed (case does not matter), or give the sectors with --start/--count",
            ))
        }
        many => {
            let luns: Vec<String> = many.iter().map(|p| p.lun.to_string()).collect();
            Err(Error::failure(
                format!(
                    "More than one partition is named '{}' on {scope}",
                    label.trim()
                ),
                format!("It exists on LUNs {}", luns.join(", ")),
                "Say which LUN to use with --lun",
            ))
        }
    }
}

/// Read the partition table(s) and find the partition labelled `label` (ASCII case ignored).
/// With `lun` given only that physical partition is searched; without, LUN 0 on eMMC and NAND,
/// and every LUN getstorageinfo reports (at most [`MAX_SEARCHED_LUNS`]) on UFS, skipping LUNs
/// that have no readable table.
pub fn find_partition<T: Transport>(
    s: &mut FirehoseSession<T>,
    storage: StorageKind,
    lun: Option<u32>,
    label: &str,
) -> crate::Result<Partition> {
    if let Some(l) = lun {
        let parts = read_partition_table(s, storage, l)?;
        return select_partition(&parts, label, &format!("LUN {l}"));
    }
    if storage != StorageKind::Ufs {
        let parts = read_partition_table(s, storage, 0)?;
        return select_partition(&parts, label, "LUN 0");
    }
    let luns = match s.storage_info(0) {
        Ok(i) => i
            .num_physical
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1)
            .clamp(1, MAX_SEARCHED_LUNS),
        Err(e) if is_fatal(&e) => return Err(e),
        Err(_) => 1,
    };
    let mut all = Vec::new();
    let mut first_err = None;
    let mut readable = 0;
    for l in 0..luns {
        match read_partition_table(s, storage, l) {
            Ok(parts) => {
                readable += 1;
                all.extend(parts);
            }
            Err(e) if is_fatal(&e) => return Err(e),
            Err(e) => {
                tracing::info!(target: "qrescue::partitions", "LUN {l}: {}", e.what);
                first_err.get_or_insert(e);
            }
        }
    }
    if readable == 0 {
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    select_partition(&all, label, &format!("LUNs 0..{}", luns - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::firehose::FirehoseOptions;
    use crate::sim::faults::{Fault, FaultPlan};
    use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
    use crate::sim::firehose::storage::{Storage, StorageProfile};
    use crate::sim::profile::Profile;
    use crate::sim::AfterUpload;
    use crate::transport::pipe::{pair, PipeEnd};
    use crate::transport::Framing;
    use std::thread::JoinHandle;

    struct Rig {
        session: FirehoseSession<PipeEnd>,
        device: JoinHandle<Programmer>,
    }

    impl Rig {
        /// Close the link and return the programmer (to look at the commands it saw).
        fn finish(self) -> Programmer {
            drop(self.session);
            self.device.join().expect("programmer thread")
        }
    }

    fn start_with(programmer: Programmer, kind: StorageKind) -> Rig {
        let (host, mut dev) = pair(Framing::Stream);
        let unit = Profile::by_name("ec25").unwrap().identity;
        let device = std::thread::spawn(move || {
            let mut p = programmer;
            AfterUpload::serve(&mut p, &mut dev, &unit);
            p
        });
        let mut session = FirehoseSession::new(host, vec![], FirehoseOptions::default());
        session.wait_ready().unwrap();
        session.configure(kind).unwrap();
        Rig { session, device }
    }

    fn options() -> ProgrammerOptions {
        ProgrammerOptions {
            welcome: true,
            ..Default::default()
        }
    }

    fn start(profile: &str, kind: StorageKind) -> Rig {
        let p = Programmer::new(&StorageProfile::by_name(profile).unwrap(), options());
        start_with(p, kind)
    }

    fn expected(profile: &str, lun: u32) -> Vec<(String, u64, u64)> {
        Storage::new(&StorageProfile::by_name(profile).unwrap())
            .regions()
            .into_iter()
            .filter(|r| r.lun == lun)
            .map(|r| (r.name, r.start_sector, r.num_sectors))
            .collect()
    }

    fn triples(parts: &[Partition]) -> Vec<(String, u64, u64)> {
        parts
            .iter()
            .map(|p| (p.name.clone(), p.start_sector, p.num_sectors))
            .collect()
    }

    /// Only getstorageinfo and reads go to the device.
    fn assert_read_only(p: &Programmer) {
        for c in p.commands() {
            assert!(
                matches!(c.tag.as_str(), "configure" | "getstorageinfo" | "read"),
                "unexpected command {c:?}"
            );
        }
    }

    #[test]
    fn nand_table_is_found_at_sector_640() {
        for profile in ["nand-ec25e", "nand-em12g"] {
            let mut rig = start(profile, StorageKind::Nand);
            let parts = read_partition_table(&mut rig.session, StorageKind::Nand, 0).unwrap();
            assert_eq!(triples(&parts), expected(profile, 0), "{profile}");
            assert!(parts.iter().all(|p| p.lun == 0));
            let modem = find_partition(&mut rig.session, StorageKind::Nand, None, "MODEM").unwrap();
            assert_eq!(modem.name, "modem");
            let mibib =
                find_partition(&mut rig.session, StorageKind::Nand, Some(0), "mibib").unwrap();
            assert_eq!(mibib.start_sector, MIBIB_SECTOR);
            let e =
                find_partition(&mut rig.session, StorageKind::Nand, None, "userdata").unwrap_err();
            assert_eq!(e.kind, ErrorKind::Failure);
            assert!(e.what.contains("'userdata'"), "{}", e.what);
            assert!(
                e.why.contains("SBL") && e.why.contains("system"),
                "{}",
                e.why
            );
            let p = rig.finish();
            assert_read_only(&p);
            // The MIBIB was read at 640 right after sector 0, without scanning further.
            let reads: Vec<&str> = p
                .commands()
                .iter()
                .filter(|c| c.tag == "read")
                .filter_map(|c| c.attrs.get("start_sector").map(String::as_str))
                .collect();
            assert_eq!(&reads[..2], ["0", "640"], "{profile}");
        }
    }

    #[test]
    fn nand_2k_pages_use_the_reported_page_size() {
        let mut rig = start("nand-eg25g", StorageKind::Nand);
        let parts = read_partition_table(&mut rig.session, StorageKind::Nand, 0).unwrap();
        assert_eq!(triples(&parts), expected("nand-eg25g", 0));
        let p = rig.finish();
        assert!(p.commands().iter().filter(|c| c.tag == "read").all(|c| c
            .attrs
            .get("SECTOR_SIZE_IN_BYTES")
            .map(String::as_str)
            == Some("2048")));
    }

    #[test]
    fn emmc_gpt_is_read_on_lun_0_and_boot_areas_have_none() {
        let profile = "emmc-msm8916";
        let mut rig = start(profile, StorageKind::Emmc);
        let parts = read_partition_table(&mut rig.session, StorageKind::Emmc, 0).unwrap();
        assert_eq!(triples(&parts), expected(profile, 0));
        assert_eq!(parts.len(), 29);
        let ud = find_partition(&mut rig.session, StorageKind::Emmc, None, "UserData").unwrap();
        assert_eq!(ud.start_sector, 3_870_720);
        assert_eq!(ud.end_sector(), 7_634_944 - 33);
        let e = read_partition_table(&mut rig.session, StorageKind::Emmc, 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Failure);
        assert!(e.what.contains("No valid GPT on LUN 1"), "{}", e.what);
        assert!(e.next.contains("--start/--count"), "{}", e.next);
        assert_read_only(&rig.finish());
    }

    #[test]
    fn ufs_gpts_are_read_per_lun_and_searched_across_luns() {
        let profile = "ufs-qcs6490";
        let mut rig = start(profile, StorageKind::Ufs);
        for lun in 0..6 {
            let parts = read_partition_table(&mut rig.session, StorageKind::Ufs, lun).unwrap();
            assert_eq!(triples(&parts), expected(profile, lun), "LUN {lun}");
            assert!(parts.iter().all(|p| p.lun == lun));
        }
        let fsg = find_partition(&mut rig.session, StorageKind::Ufs, None, "fsg").unwrap();
        assert_eq!((fsg.lun, fsg.start_sector, fsg.num_sectors), (5, 1056, 512));
        let e = find_partition(&mut rig.session, StorageKind::Ufs, Some(1), "fsg").unwrap_err();
        assert!(e.why.contains("xbl_a"), "{}", e.why);
        let e = find_partition(&mut rig.session, StorageKind::Ufs, None, "nothing").unwrap_err();
        assert!(e.why.contains("fsg (LUN 5)"), "{}", e.why);
        assert_read_only(&rig.finish());
    }

    #[test]
    fn without_getstorageinfo_the_page_size_is_probed() {
        // The 2nd command (getstorageinfo, after configure) is refused: 4096-byte pages are
        // tried first and refused by the 2K-page chip, then 2048 works.
        for (profile, kind) in [
            ("nand-eg25g", StorageKind::Nand),
            ("emmc-msm8916", StorageKind::Emmc),
        ] {
            let opts = ProgrammerOptions {
                faults: FaultPlan::new(vec![Fault::Nak(Some(2))], 1),
                ..options()
            };
            let p = Programmer::new(&StorageProfile::by_name(profile).unwrap(), opts);
            let mut rig = start_with(p, kind);
            let parts = read_partition_table(&mut rig.session, kind, 0).unwrap();
            assert_eq!(triples(&parts), expected(profile, 0), "{profile}");
            let p = rig.finish();
            let outcomes: Vec<(&str, &str)> = p
                .commands()
                .iter()
                .map(|c| (c.tag.as_str(), c.outcome.as_str()))
                .collect();
            assert_eq!(outcomes[1], ("getstorageinfo", "NAK"), "{profile}");
            if kind == StorageKind::Nand {
                assert_eq!(outcomes[2], ("read", "NAK"));
                assert_eq!(outcomes[3], ("read", "ACK"));
            }
        }
    }

    #[test]
    fn damaged_primary_gpt_falls_back_to_the_backup() {
        let profile = StorageProfile::by_name("emmc-msm8916").unwrap();
        let mut storage = Storage::new(&profile);
        // Break one byte of the primary entry array (LBA 2): its CRC no longer matches.
        if let Some(store) = storage.block_store_mut(0) {
            store.write(2 * 512 + 60, &[0x41]);
        }
        let p = Programmer::with_storage(storage, options());
        let mut rig = start_with(p, StorageKind::Emmc);
        let parts = read_partition_table(&mut rig.session, StorageKind::Emmc, 0).unwrap();
        assert_eq!(triples(&parts), expected("emmc-msm8916", 0));
        rig.finish();
    }

    #[test]
    fn erased_nand_says_blank() {
        let profile = StorageProfile::by_name("nand-ec25e").unwrap();
        let mut storage = Storage::new(&profile);
        let total = storage.num_sectors(0).unwrap();
        storage.nand_mut().unwrap().erase(0, 1024, None).unwrap();
        assert_eq!(storage.num_sectors(0), Some(total));
        let p = Programmer::with_storage(storage, options());
        let mut rig = start_with(p, StorageKind::Nand);
        let e = read_partition_table(&mut rig.session, StorageKind::Nand, 0).unwrap_err();
        assert!(e.what.contains("No NAND partition table"), "{}", e.what);
        assert!(e.why.contains("blank"), "{}", e.why);
        let p = rig.finish();
        // Sector 0, then 640, then the other block starts below 1024.
        let reads = p.commands().iter().filter(|c| c.tag == "read").count();
        assert_eq!(reads, 1 + 16);
    }

    #[test]
    fn select_partition_lists_and_disambiguates() {
        let part = |lun, name: &str| Partition {
            lun,
            name: name.into(),
            start_sector: 0,
            num_sectors: 1,
        };
        let parts = vec![part(0, "modem"), part(1, "fsg"), part(2, "FSG")];
        assert_eq!(select_partition(&parts, "Modem", "x").unwrap().lun, 0);
        let e = select_partition(&parts, "fsg", "LUNs 0..2").unwrap_err();
        assert!(e.what.contains("More than one"), "{}", e.what);
        assert!(e.why.contains("1, 2"), "{}", e.why);
        let e = select_partition(&[], "fsg", "LUN 0").unwrap_err();
        assert!(e.why.contains("lists no partitions"), "{}", e.why);
        let many: Vec<Partition> = (0..100).map(|i| part(0, &format!("p{i}"))).collect();
        let e = select_partition(&many, "zz", "LUN 0").unwrap_err();
        assert!(e.why.ends_with("and 20 more"), "{}", e.why);
    }
}
