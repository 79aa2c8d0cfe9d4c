//! An emulated flash shaped after a flash plan, for `qrescue flash PACKAGE --dry-run`: the plan
//! runs against it exactly as against a modem, so every step is exercised without hardware.
//!
//! - NAND: the plan's page size and pages per block, no bad blocks, and as many blocks as the
//!   plan reaches (rounded up to a power of two, at least 1024: real Quectel parts have 1024 or
//!   2048). The factory table is one partition over the whole chip; the package's own MIBIB
//!   replaces it when the plan programs one.
//! - eMMC/UFS: the plan's sector size, one physical partition per LUN up to the highest the plan
//!   uses, blank (the package writes its own GPT). A LUN's size is the disk size the package's
//!   primary GPT records (AlternateLBA + 1) when there is one, else room for everything the plan
//!   writes there.

use std::collections::BTreeMap;

use crate::engine::firehose::StorageKind;
use crate::engine::plan::{FlashPlan, FlashStep, MAX_HOST_PATCH_FILE};
use crate::protocol::partitions::parse_gpt_header;
use crate::sim::firehose::mibib::NandPartSpec;
use crate::sim::firehose::nand::NandGeometry;
use crate::sim::firehose::storage::{
    BadBlocks, BlockMemory, BlockSpec, LunSpec, NandSpec, StorageProfile,
};

/// Smallest emulated NAND, in blocks.
const MIN_NAND_BLOCKS: u64 = 1024;
/// Most blocks of an emulated NAND (8 GiB of 4 KiB × 64 pages is far beyond real modems).
const MAX_NAND_BLOCKS: u64 = 1 << 15;
/// Smallest emulated eMMC/UFS LUN, in sectors.
const MIN_LUN_SECTORS: u64 = 8192;
/// Largest emulated LUN in bytes (the store is sparse; this only bounds what a plan can ask).
const MAX_LUN_BYTES: u64 = 1 << 40;

/// A storage profile for the emulated modem of a dry run of `plan`, with a one-line description.
pub fn storage_for_plan(plan: &FlashPlan) -> (StorageProfile, String) {
    match plan.storage {
        StorageKind::Nand => nand_for_plan(plan),
        kind => block_for_plan(plan, kind),
    }
}

fn nand_for_plan(plan: &FlashPlan) -> (StorageProfile, String) {
    let mut page = 0u32;
    let mut ppb = 0u32;
    let mut end = 0u64;
    for s in &plan.steps {
        let (ss, p, start, n, last) = match s {
            FlashStep::Erase { cmd, .. } => (
                cmd.sector_size,
                cmd.pages_per_block,
                cmd.start_sector.as_deref(),
                cmd.num_sectors,
                cmd.last_sector,
            ),
            FlashStep::Program { cmd, .. } => (
                cmd.sector_size,
                cmd.pages_per_block,
                Some(cmd.start_sector.as_str()),
                Some(cmd.num_sectors),
                cmd.last_sector,
            ),
            _ => continue,
        };
        if page == 0 {
            page = ss;
        }
        if ppb == 0 {
            ppb = p.unwrap_or(0);
        }
        let start = start
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        end = end
            .max(start.saturating_add(n.unwrap_or(0)))
            .max(last.map_or(0, |l| l.saturating_add(1)));
    }
    let page = if page.is_power_of_two() && (512..=65536).contains(&page) {
        page
    } else {
        4096
    };
    let ppb = if ppb.is_power_of_two() && (16..=1024).contains(&ppb) {
        ppb
    } else {
        64
    };
    let blocks = end
        .div_ceil(u64::from(ppb))
        .max(MIN_NAND_BLOCKS)
        .next_power_of_two()
        .min(MAX_NAND_BLOCKS) as u32;
    let geometry = NandGeometry {
        page_size: page,
        pages_per_block: ppb,
        num_blocks: blocks,
    };
    let description = format!(
        "NAND, {} KiB pages, {} pages per block ({} KiB blocks), {} blocks ({} MiB), no bad blocks",
        page / 1024,
        ppb,
        page / 1024 * ppb,
        blocks,
        (u64::from(page) * u64::from(ppb) * u64::from(blocks)) >> 20
    );
    let spec = NandSpec {
        name: format!("dry-run-nand-p{}K-b{}K", page / 1024, page / 1024 * ppb),
        target_name: "dry-run".into(),
        prod_name: "emulated NAND".into(),
        geometry,
        layout: vec![NandPartSpec {
            name: "0:ALL".into(),
            size_kib: 0,
            attrs: [0xFF, 0x01, 0xFF],
        }],
        bad_blocks: BadBlocks::None,
        check_pages_per_block: true,
    };
    (StorageProfile::Nand(spec), description)
}

fn block_for_plan(plan: &FlashPlan, kind: StorageKind) -> (StorageProfile, String) {
    let mut sector = 0u32;
    // LUN → (sectors the plan reaches, disk size from the package's GPT).
    let mut luns: BTreeMap<u32, (u64, Option<u64>)> = BTreeMap::new();
    for s in &plan.steps {
        let (ss, lun, start, n) = match s {
            FlashStep::Erase { cmd, .. } => (
                cmd.sector_size,
                cmd.physical_partition,
                cmd.start_sector.as_deref(),
                cmd.num_sectors.unwrap_or(0),
            ),
            FlashStep::Program { cmd, .. } => (
                cmd.sector_size,
                cmd.physical_partition,
                Some(cmd.start_sector.as_str()),
                cmd.num_sectors,
            ),
            FlashStep::Patch { cmd, .. } => (
                cmd.sector_size,
                cmd.physical_partition,
                Some(cmd.start_sector.as_str()),
                1,
            ),
            FlashStep::SetBootable { .. } => continue,
        };
        if sector == 0 {
            sector = ss;
        }
        let entry = luns.entry(lun).or_insert((0, None));
        let literal = start.and_then(|v| v.trim().parse::<u64>().ok());
        match literal {
            Some(st) => entry.0 = entry.0.max(st.saturating_add(n)),
            // Symbolic (NUM_DISK_SECTORS-33.): needs room at the end, like its length.
            None => entry.0 = entry.0.saturating_add(n),
        }
        if let FlashStep::Program { cmd, source, .. } = s {
            if literal == Some(0) && entry.1.is_none() {
                entry.1 = gpt_disk_sectors(plan, source.files(), cmd.sector_size);
            }
        }
    }
    let sector = if sector.is_power_of_two() && (512..=65536).contains(&sector) {
        sector
    } else if kind == StorageKind::Ufs {
        4096
    } else {
        512
    };
    let max_sectors = MAX_LUN_BYTES / u64::from(sector);
    let top = luns.keys().next_back().copied().unwrap_or(0).min(7);
    let specs: Vec<LunSpec> = (0..=top)
        .map(|l| {
            let (reach, gpt) = luns.get(&l).copied().unwrap_or((0, None));
            let room = reach.saturating_add(reach / 4).div_ceil(2048) * 2048;
            let num_sectors = gpt
                .filter(|g| *g >= reach)
                .unwrap_or(room)
                .max(MIN_LUN_SECTORS)
                .min(max_sectors);
            LunSpec {
                num_sectors,
                gpt: None,
            }
        })
        .collect();
    let memory = if kind == StorageKind::Ufs {
        BlockMemory::Ufs
    } else {
        BlockMemory::Emmc
    };
    let name = if kind == StorageKind::Ufs {
        "UFS"
    } else {
        "eMMC"
    };
    let description = format!(
        "{name}, {sector}-byte sectors, {} physical partition(s): {}",
        specs.len(),
        specs
            .iter()
            .enumerate()
            .map(|(i, l)| format!("LUN {i} {} MiB", (l.num_sectors * u64::from(sector)) >> 20))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let spec = BlockSpec {
        name: format!("dry-run-{}", name.to_ascii_lowercase()),
        target_name: "dry-run".into(),
        prod_name: format!("emulated {name}"),
        memory,
        sector_size: sector,
        luns: specs,
    };
    (StorageProfile::Block(spec), description)
}

/// The disk size (sectors) a primary GPT image records: its AlternateLBA + 1.
fn gpt_disk_sectors(plan: &FlashPlan, files: Vec<&str>, sector: u32) -> Option<u64> {
    let path = files.into_iter().find(|f| {
        f.rsplit('/')
            .next()
            .unwrap_or(f)
            .to_ascii_lowercase()
            .starts_with("gpt_main")
    })?;
    let bytes = plan.files().read_all(path, MAX_HOST_PATCH_FILE).ok()?;
    let ss = sector as usize;
    let header = bytes.get(ss..ss.checked_mul(2)?)?;
    let h = parse_gpt_header(header, sector, 1, None).ok()?;
    h.alternate_lba.checked_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::firehose::storage::Storage;
    use crate::sim::package_gen::{self, PackageOptions};
    use crate::sim::profile::Profile;

    fn plan_of(storage: &str) -> (tempfile::TempDir, FlashPlan) {
        let d = tempfile::tempdir().unwrap();
        let unit = Profile::by_name("ec25").unwrap().for_unit(1);
        let profile = StorageProfile::by_name(storage).unwrap();
        let s = package_gen::emit(
            &d.path().join("p"),
            &unit,
            &profile,
            PackageOptions {
                image_bytes: 256 << 10,
                seed: 1,
            },
        )
        .unwrap();
        let rel = |v: &[std::path::PathBuf]| -> Vec<String> {
            v.iter()
                .map(|p| {
                    p.strip_prefix(&s.root)
                        .unwrap()
                        .to_str()
                        .unwrap()
                        .to_string()
                })
                .collect()
        };
        let files = std::sync::Arc::new(crate::package::source::DirPackage::open(&s.root).unwrap());
        let input = crate::engine::plan::PlanInput {
            rawprogram: rel(&s.rawprogram),
            patch: rel(&s.patch),
            storage: None,
        };
        let plan = FlashPlan::build(files, &input).unwrap();
        (d, plan)
    }

    #[test]
    fn nand_follows_the_plans_geometry() {
        let (_d, plan) = plan_of("nand-ec25e");
        let (p, text) = storage_for_plan(&plan);
        let StorageProfile::Nand(n) = &p else {
            panic!("{p:?}")
        };
        assert_eq!(n.geometry.page_size, 4096);
        assert_eq!(n.geometry.pages_per_block, 64);
        assert_eq!(n.geometry.num_blocks, 2048);
        assert!(text.contains("4 KiB pages"), "{text}");
        assert_eq!(Storage::new(&p).sector_size(), 4096);
    }

    #[test]
    fn block_storage_takes_the_disk_size_from_the_packages_gpt() {
        let (_d, plan) = plan_of("emmc-msm8916");
        let (p, text) = storage_for_plan(&plan);
        let StorageProfile::Block(b) = &p else {
            panic!("{p:?}")
        };
        assert_eq!(b.memory, BlockMemory::Emmc);
        assert_eq!(b.sector_size, 512);
        assert_eq!(b.luns[0].num_sectors, 7_634_944, "{text}");
        let (_d, plan) = plan_of("ufs-qcs6490");
        let (p, _) = storage_for_plan(&plan);
        let StorageProfile::Block(b) = &p else {
            panic!("{p:?}")
        };
        assert_eq!(b.memory, BlockMemory::Ufs);
        assert_eq!(b.sector_size, 4096);
        assert_eq!(b.luns.len(), 6);
        assert_eq!(b.luns[4].num_sectors, 262_144);
    }
}
