use std::path::{Path, PathBuf};

use super::*;
use crate::package::rawprogram::{parse_rawprogram, RawEntry};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn quectel_layout_resolves_dotdot_paths_and_keeps_file_order() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "update/sbl1.mbn", &[1u8; 5000]);
    write(d.path(), "update/NON-HLOS.ubi", &[2u8; 9000]);
    let xml = write(
        d.path(),
        "update/firehose/rawprogram_nand_p4K_b256K_update.xml",
        br#"<?xml version="1.0" ?>
<data>
  <erase PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="4096" num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="4096" filename="..\sbl1.mbn" num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="4096" filename="..\NON-HLOS.ubi" num_partition_sectors="0" physical_partition_number="0" start_sector="1280"/>
  <program SECTOR_SIZE_IN_BYTES="4096" filename="" num_partition_sectors="10" physical_partition_number="0" start_sector="5000"/>
</data>"#,
    );
    let plan = FlashPlan::from_xml(&xml, None, None).unwrap();
    assert_eq!(plan.storage, StorageKind::Nand);
    assert_eq!(plan.steps.len(), 3);
    assert!(matches!(plan.steps[0], FlashStep::Erase { .. }));
    // NAND order: the SBL program (start sector 0) comes last.
    assert_eq!(plan.steps[2].name(), "sbl1");
    match &plan.steps[1] {
        FlashStep::Program { cmd, source, name } => {
            assert_eq!(name, "NON-HLOS");
            assert_eq!(cmd.num_sectors, 3, "size from file, rounded up");
            assert_eq!(cmd.last_sector, None);
            assert_eq!(source.len(), 9000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(plan.skipped.len(), 1);
    // sbl1: 5000 bytes = 2 sectors; NON-HLOS: 9000 bytes = 3 sectors.
    assert_eq!(plan.total_bytes(), (2 + 3) * 4096);
}

#[test]
fn missing_files_and_escapes_are_refused_before_anything_is_sent() {
    let d = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    write(outside.path(), "secret.bin", b"x");
    let xml = write(
        d.path(),
        "rawprogram0.xml",
        br#"<data><program SECTOR_SIZE_IN_BYTES="512" filename="missing.img" num_partition_sectors="8" physical_partition_number="0" start_sector="0"/></data>"#,
    );
    let e = FlashPlan::from_xml(&xml, None, None).unwrap_err();
    assert!(e.what.contains("has no file missing.img"), "{e}");
    assert!(e.what.starts_with("program entry 1 (missing)"), "{e}");
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(outside.path().join("secret.bin"), d.path().join("link.img"))
            .unwrap();
        let xml = write(
            d.path(),
            "rawprogram1.xml",
            br#"<data><program SECTOR_SIZE_IN_BYTES="512" filename="link.img" num_partition_sectors="8" physical_partition_number="0" start_sector="0"/></data>"#,
        );
        let e = FlashPlan::from_xml(&xml, None, None).unwrap_err();
        assert!(e.what.contains("outside the package"), "{e}");
    }
}

#[test]
fn oversize_images_and_whole_disk_erases_are_refused() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "big.img", &[0u8; 5000]);
    let xml = write(
        d.path(),
        "rawprogram0.xml",
        br#"<data><program SECTOR_SIZE_IN_BYTES="512" filename="big.img" num_partition_sectors="8" physical_partition_number="0" start_sector="0"/></data>"#,
    );
    let e = FlashPlan::from_xml(&xml, None, None).unwrap_err();
    assert!(e.what.contains("holds only 4096 bytes"), "{e}");
    let xml = write(
        d.path(),
        "rawprogram1.xml",
        br#"<data><erase physical_partition_number="0"/></data>"#,
    );
    let e = FlashPlan::from_xml(&xml, None, None).unwrap_err();
    assert!(e.what.contains("whole storage"), "{e}");
}

fn nand_info(page: u64, ppb: u64, blocks: u64) -> StorageInfo {
    StorageInfo {
        total_blocks: Some(blocks),
        block_size: Some(page * ppb),
        page_size: Some(page),
        ..StorageInfo::default()
    }
}

#[test]
fn geometry_is_checked_against_what_the_device_reports() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "update/boot.img", &[1u8; 3000]);
    let xml = write(
        d.path(),
        "update/firehose/rawprogram_nand_p2K_b128K_update.xml",
        br#"<data>
  <erase PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" num_partition_sectors="640" physical_partition_number="0" start_sector="0"/>
  <erase PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" num_partition_sectors="64" physical_partition_number="0" start_sector="960"/>
  <program PAGES_PER_BLOCK="64" SECTOR_SIZE_IN_BYTES="2048" filename="..\\boot.img" num_partition_sectors="64" physical_partition_number="0" start_sector="960"/>
</data>"#,
    );
    let plan = FlashPlan::from_xml(&xml, None, None).unwrap();
    // The part the package was built for: 2 KiB pages, 64 per block, 1024 blocks.
    plan.validate_geometry(&nand_info(2048, 64, 1024)).unwrap();
    // A 128-page-per-block part (EG25 256 MB with 256 KiB blocks).
    let e = plan
        .validate_geometry(&nand_info(2048, 128, 1024))
        .unwrap_err();
    assert!(e.what.contains("64 pages per block"), "{e}");
    assert!(e.next.starts_with("Nothing was written"), "{e}");
    // A smaller part: the erase at 960..1024 does not fit 15 blocks.
    let e = plan
        .validate_geometry(&nand_info(2048, 64, 15))
        .unwrap_err();
    assert!(e.what.contains("past the end"), "{e}");
    assert!(e.why.contains("bigger flash variant"), "{e}");
    // 4 KiB pages.
    let e = plan
        .validate_geometry(&nand_info(4096, 64, 1024))
        .unwrap_err();
    assert!(e.what.contains("4096-byte pages"), "{e}");
}

#[test]
fn only_disk_patches_become_steps_and_bootable_follows_sbl1() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "sbl1.mbn", &[1u8; 512]);
    let xml = write(
        d.path(),
        "rawprogram0.xml",
        br#"<data><program SECTOR_SIZE_IN_BYTES="512" filename="sbl1.mbn" label="sbl1" num_partition_sectors="1" physical_partition_number="0" start_sector="34"/></data>"#,
    );
    let patch = write(
        d.path(),
        "patch0.xml",
        br#"<patches>
  <patch SECTOR_SIZE_IN_BYTES="512" byte_offset="16" filename="gpt_main0.bin" physical_partition_number="0" size_in_bytes="4" start_sector="1" value="0" what="host"/>
  <patch SECTOR_SIZE_IN_BYTES="512" byte_offset="16" filename="DISK" physical_partition_number="0" size_in_bytes="4" start_sector="1" value="CRC32(1,92)" what="disk"/>
</patches>"#,
    );
    let plan = FlashPlan::from_xml(&xml, Some(&patch), None).unwrap();
    assert_eq!(plan.storage, StorageKind::Emmc);
    let kinds: Vec<StepKind> = plan.steps.iter().map(FlashStep::kind).collect();
    assert_eq!(
        kinds,
        vec![StepKind::Program, StepKind::Patch, StepKind::SetBootable]
    );
}

// ------------------------------------------------------------------------------- helpers

fn folder(d: &Path) -> Arc<dyn PackageFiles> {
    Arc::new(DirPackage::open(d).unwrap())
}

fn input(raw: &[&str], patch: &[&str]) -> PlanInput {
    PlanInput {
        rawprogram: raw.iter().map(|s| s.to_string()).collect(),
        patch: patch.iter().map(|s| s.to_string()).collect(),
        storage: None,
    }
}

fn prog(attrs: &str) -> String {
    format!("<program {attrs}/>")
}

fn data(entries: &[String]) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" ?>\n<data>\n{}\n</data>\n",
        entries.join("\n")
    )
    .into_bytes()
}

fn emmc_prog(file: &str, label: &str, start: u64, sectors: u64) -> String {
    prog(&format!(
        "SECTOR_SIZE_IN_BYTES=\"512\" filename=\"{file}\" label=\"{label}\" num_partition_sectors=\"{sectors}\" physical_partition_number=\"0\" start_sector=\"{start}\""
    ))
}

fn emmc_info(sectors: u64) -> StorageInfo {
    let mut raw = std::collections::BTreeMap::new();
    raw.insert("total_blocks".into(), sectors.to_string());
    StorageInfo {
        total_blocks: Some(sectors),
        block_size: Some(512),
        page_size: Some(512),
        raw,
        ..StorageInfo::default()
    }
}

fn geo(lun: u32, info: StorageInfo) -> BTreeMap<u32, StorageInfo> {
    let mut g = BTreeMap::new();
    g.insert(lun, info);
    g
}

/// Every regular file under `dir` with its bytes, to prove that nothing was written.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

// ------------------------------------------------------------------------------- sparse images

/// A chunk of a generated sparse image.
#[derive(Debug, Clone)]
enum Ch {
    Raw(Vec<u8>),
    Fill(u32, u32),
    Dont(u32),
    Crc,
    /// A CRC32 chunk holding a wrong value.
    BadCrc,
}

/// Build a sparse image; returns it and the expanded image (None where DONT_CARE).
fn sparse_image(blk: u32, chunks: &[Ch]) -> (Vec<u8>, Vec<Option<u8>>) {
    let mut body = Vec::new();
    let mut out: Vec<Option<u8>> = Vec::new();
    let mut blocks = 0u32;
    let zeroed = |out: &[Option<u8>]| out.iter().map(|b| b.unwrap_or(0)).collect::<Vec<u8>>();
    for c in chunks {
        let (kind, n, payload): (u16, u32, Vec<u8>) = match c {
            Ch::Raw(d) => {
                assert_eq!(d.len() % blk as usize, 0);
                out.extend(d.iter().map(|b| Some(*b)));
                (0xCAC1, (d.len() / blk as usize) as u32, d.clone())
            }
            Ch::Fill(v, n) => {
                for _ in 0..(*n * blk / 4) {
                    out.extend(v.to_le_bytes().iter().map(|b| Some(*b)));
                }
                (0xCAC2, *n, v.to_le_bytes().to_vec())
            }
            Ch::Dont(n) => {
                out.extend(std::iter::repeat_n(None, (*n * blk) as usize));
                (0xCAC3, *n, Vec::new())
            }
            Ch::Crc => (
                0xCAC4,
                0,
                crc32fast::hash(&zeroed(&out)).to_le_bytes().to_vec(),
            ),
            Ch::BadCrc => (
                0xCAC4,
                0,
                (crc32fast::hash(&zeroed(&out)) ^ 1).to_le_bytes().to_vec(),
            ),
        };
        blocks += n;
        body.extend(kind.to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend(n.to_le_bytes());
        body.extend((12 + payload.len() as u32).to_le_bytes());
        body.extend(payload);
    }
    let mut img = Vec::new();
    img.extend(0xED26_FF3Au32.to_le_bytes());
    img.extend(1u16.to_le_bytes());
    img.extend(0u16.to_le_bytes());
    img.extend(28u16.to_le_bytes());
    img.extend(12u16.to_le_bytes());
    img.extend(blk.to_le_bytes());
    img.extend(blocks.to_le_bytes());
    img.extend((chunks.len() as u32).to_le_bytes());
    img.extend(0u32.to_le_bytes());
    img.extend(body);
    (img, out)
}

fn bytes_of(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Stream every program step and lay it on a model disk of `sectors` 512-byte sectors.
fn model_disk(plan: &FlashPlan, sectors: u64) -> Vec<Option<u8>> {
    let mut disk = vec![None; (sectors * 512) as usize];
    for s in &plan.steps {
        if let FlashStep::Program { cmd, source, .. } = s {
            let bytes = plan.source_bytes(source, 1 << 26).unwrap();
            assert!(bytes.len() as u64 <= cmd.byte_len().unwrap());
            let at = (cmd.start_sector.parse::<u64>().unwrap() * 512) as usize;
            for (i, b) in bytes.iter().enumerate() {
                disk[at + i] = Some(*b);
            }
        }
    }
    disk
}

#[test]
fn sparse_images_expand_into_program_steps_per_disk_contiguous_run() {
    let d = tempfile::tempdir().unwrap();
    let blk = 4096;
    let (img, expanded) = sparse_image(
        blk,
        &[
            Ch::Raw(bytes_of(1, 2 * 4096)),
            Ch::Raw(bytes_of(2, 4096)),
            Ch::Fill(0xDEAD_BEEF, 3),
            Ch::Crc,
            Ch::Dont(5),
            Ch::Fill(0, 2),
            Ch::Dont(1),
            Ch::Raw(bytes_of(3, 4096)),
            Ch::Crc,
        ],
    );
    write(d.path(), "userdata.img", &img);
    write(
        d.path(),
        "rawprogram0.xml",
        &data(&[prog(
            "SECTOR_SIZE_IN_BYTES=\"512\" filename=\"userdata.img\" label=\"userdata\" num_partition_sectors=\"0\" physical_partition_number=\"0\" sparse=\"true\" start_byte_hex=\"0x200000\" start_sector=\"4096\"",
        )]),
    );
    let plan = FlashPlan::build(folder(d.path()), &input(&["rawprogram0.xml"], &[])).unwrap();
    // RAW+RAW+FILL are contiguous on the disk: one step; the zero FILL; the last RAW.
    let names: Vec<String> = plan.steps.iter().map(FlashStep::name).collect();
    assert_eq!(
        names,
        ["userdata [1/3]", "userdata [2/3]", "userdata [3/3]"]
    );
    let starts: Vec<(String, u64)> = plan
        .steps
        .iter()
        .map(|s| match s {
            FlashStep::Program { cmd, .. } => (cmd.start_sector.clone(), cmd.num_sectors),
            _ => panic!("{s:?}"),
        })
        .collect();
    assert_eq!(
        starts,
        [
            ("4096".to_string(), 6 * 8),
            ((4096 + 11 * 8).to_string(), 2 * 8),
            ((4096 + 14 * 8).to_string(), 8)
        ]
    );
    match &plan.steps[0] {
        FlashStep::Program {
            source: ImageSource::Chain(parts),
            ..
        } => {
            assert_eq!(parts.len(), 3, "{parts:?}");
            assert!(
                matches!(parts[2], ImageSource::Fill { pattern: 0xDEAD_BEEF, len } if len == 3 * 4096)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        &plan.steps[1],
        FlashStep::Program {
            source: ImageSource::Fill { pattern: 0, .. },
            ..
        }
    ));
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("Android sparse image")),
        "{:?}",
        plan.notes
    );
    // Streamed, the steps reproduce the expanded image; DONT_CARE stays untouched.
    let disk = model_disk(&plan, 4096 + 200);
    let base = 4096 * 512;
    assert_eq!(disk[base..base + expanded.len()], expanded[..]);
    assert!(disk[..base].iter().all(Option::is_none));
    assert!(disk[base + expanded.len()..].iter().all(Option::is_none));
    // The grow entry is bounded by the device.
    plan.for_device(&geo(0, emmc_info(4096 + 120))).unwrap();
    let e = plan.for_device(&geo(0, emmc_info(4096 + 100))).unwrap_err();
    assert!(
        e.what.contains("past the end of this modem's storage"),
        "{e}"
    );
}

#[test]
fn broken_or_misplaced_sparse_images_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (bad_crc, _) = sparse_image(4096, &[Ch::Raw(bytes_of(1, 4096)), Ch::BadCrc]);
    let (big, _) = sparse_image(4096, &[Ch::Dont(10), Ch::Raw(bytes_of(1, 4096))]);
    let (odd_blk, _) = sparse_image(4, &[Ch::Raw(vec![1, 2, 3, 4])]);
    let mut truncated = big.clone();
    truncated.truncate(big.len() - 100);
    write(d.path(), "crc.img", &bad_crc);
    write(d.path(), "big.img", &big);
    write(d.path(), "odd.img", &odd_blk);
    write(d.path(), "cut.img", &truncated);
    let case = |name: &str, entry: String| {
        write(d.path(), name, &data(&[entry]));
        FlashPlan::build(folder(d.path()), &input(&[name], &[])).unwrap_err()
    };
    let e = case("r1.xml", emmc_prog("crc.img", "a", 0, 100));
    assert!(e.what.contains("CRC"), "{e}");
    assert!(e.what.starts_with("program entry 1 (a)"), "{e}");
    let e = case("r2.xml", emmc_prog("big.img", "b", 0, 80));
    assert!(e.what.contains("expands to 45056 bytes"), "{e}");
    let e = case("r3.xml", emmc_prog("odd.img", "c", 0, 80));
    assert!(e.what.contains("4-byte blocks"), "{e}");
    let e = case("r4.xml", emmc_prog("cut.img", "d", 0, 100));
    assert!(e.what.contains("ends early"), "{e}");
    let e = case(
        "r5.xml",
        prog("SECTOR_SIZE_IN_BYTES=\"512\" filename=\"crc.img\" num_partition_sectors=\"8\" physical_partition_number=\"0\" start_sector=\"NUM_DISK_SECTORS-8.\""),
    );
    assert!(e.what.contains("known only on the device"), "{e}");
    let e = case(
        "r6.xml",
        prog("PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" filename=\"big.img\" num_partition_sectors=\"64\" physical_partition_number=\"0\" start_sector=\"64\""),
    );
    assert!(e.what.contains("does not write to NAND"), "{e}");
}

// ------------------------------------------------------------------------------- host patches

/// A NAND package with a MIBIB image and its Quectel-style patch file.
fn mibib_package(d: &Path) {
    let mut mibib = vec![0xFFu8; 3 * 4096 + 100];
    mibib[..4].copy_from_slice(&0xFE56_9FACu32.to_le_bytes());
    write(
        d,
        "update/firehose/partition_complete_p4K_b256K.mbn",
        &mibib,
    );
    write(d, "update/sbl1.mbn", &[7u8; 5000]);
    write(
        d,
        "update/firehose/rawprogram_nand_p4K_b256K_update.xml",
        &data(&[
            "<erase PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" label=\"SBL\" num_partition_sectors=\"640\" physical_partition_number=\"0\" start_sector=\"0\"/>".into(),
            "<erase PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" label=\"MIBIB\" num_partition_sectors=\"640\" physical_partition_number=\"0\" start_sector=\"640\"/>".into(),
            prog("PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" filename=\"partition_complete_p4K_b256K.mbn\" label=\"MIBIB\" num_partition_sectors=\"640\" physical_partition_number=\"0\" start_sector=\"640\""),
            prog("PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" filename=\"..\\sbl1.mbn\" label=\"SBL\" num_partition_sectors=\"640\" physical_partition_number=\"0\" start_sector=\"0\""),
        ]),
    );
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/realxml/quectel_em12g_sdx20__patch_p4K_b256K.xml"),
        d.join("update/firehose/patch_p4K_b256K.xml"),
    )
    .unwrap();
}

#[test]
fn host_patches_of_the_mibib_wait_for_the_device_and_are_streamed_over_the_file() {
    let d = tempfile::tempdir().unwrap();
    mibib_package(d.path());
    let before = snapshot(d.path());
    let plan = FlashPlan::from_xml(
        &d.path()
            .join("update/firehose/rawprogram_nand_p4K_b256K_update.xml"),
        Some(&d.path().join("update/firehose/patch_p4K_b256K.xml")),
        None,
    )
    .unwrap();
    assert_eq!(plan.storage, StorageKind::Nand);
    assert_eq!(plan.host_patches.len(), 2);
    assert!(plan.needs_device_geometry());
    assert!(
        !plan.steps.iter().any(|s| s.kind() == StepKind::Patch),
        "no DISK patch"
    );
    let mibib = plan
        .steps
        .iter()
        .find_map(|s| match s {
            FlashStep::Program { name, source, .. } if name == "MIBIB" => Some(source.clone()),
            _ => None,
        })
        .unwrap();
    assert!(matches!(mibib, ImageSource::Patched { overlays: None, .. }));
    assert!(plan.summary().steps.iter().any(|s| s.host_patched));
    assert!(plan.summary().needs_device_geometry);
    // Streaming an unresolved plan fails instead of sending unpatched bytes.
    assert!(plan.source_bytes(&mibib, 1 << 20).is_err());
    // A programmer without getstorageinfo: refused, saying why.
    let e = plan.for_device(&BTreeMap::new()).unwrap_err();
    assert!(e.what.contains("NUM_DISK_BLOCKS-1904."), "{e}");
    assert!(e.why.contains("getstorageinfo"), "{e}");
    assert!(e.next.starts_with("Nothing was written"), "{e}");
    // With the device's geometry: 2048 blocks of 64 pages.
    let info = StorageInfo {
        total_blocks: Some(2048),
        block_size: Some(64 * 4096),
        page_size: Some(4096),
        ..StorageInfo::default()
    };
    let ready = plan.for_device(&geo(0, info)).unwrap();
    assert!(!ready.needs_device_geometry());
    let mibib = ready
        .steps
        .iter()
        .find_map(|s| match s {
            FlashStep::Program { name, source, .. } if name == "MIBIB" => Some(source.clone()),
            _ => None,
        })
        .unwrap();
    let bytes = ready.source_bytes(&mibib, 1 << 20).unwrap();
    assert_eq!(
        &bytes[4096 + 568..4096 + 572],
        &(2048u32 - 1904).to_le_bytes()
    );
    assert_eq!(
        &bytes[3 * 4096 + 12..3 * 4096 + 16],
        &crc32fast::hash(&bytes[..8192]).to_le_bytes()
    );
    assert_eq!(bytes[..4], 0xFE56_9FACu32.to_le_bytes());
    // The package folder was not touched.
    assert_eq!(snapshot(d.path()), before);
    // A NAND smaller than the value's base: refused before anything is written.
    let small = StorageInfo {
        total_blocks: Some(1024),
        block_size: Some(64 * 4096),
        page_size: Some(4096),
        ..StorageInfo::default()
    };
    let e = plan.for_device(&geo(0, small)).unwrap_err();
    assert!(e.what.contains("would be negative"), "{e}");
}

#[test]
fn host_patches_without_device_values_are_applied_at_once_and_unused_ones_noted() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "gpt_main0.bin", &[0u8; 34 * 512]);
    write(
        d.path(),
        "rawprogram0.xml",
        &data(&[emmc_prog("gpt_main0.bin", "PrimaryGPT", 0, 34)]),
    );
    write(
        d.path(),
        "patch0.xml",
        br#"<patches>
  <patch SECTOR_SIZE_IN_BYTES="512" byte_offset="16" filename="gpt_main0.bin" physical_partition_number="0" size_in_bytes="4" start_sector="1" value="CRC32(1,92)" what="crc"/>
  <patch SECTOR_SIZE_IN_BYTES="512" byte_offset="0" filename="gpt_other.bin" physical_partition_number="0" size_in_bytes="4" start_sector="1" value="7" what="unused"/>
</patches>"#,
    );
    let plan = FlashPlan::build(
        folder(d.path()),
        &input(&["rawprogram0.xml"], &["patch0.xml"]),
    )
    .unwrap();
    assert!(!plan.needs_device_geometry());
    assert!(
        plan.notes.iter().any(|n| n.contains("gpt_other.bin")),
        "{:?}",
        plan.notes
    );
    let FlashStep::Program { source, .. } = &plan.steps[0] else {
        panic!()
    };
    let bytes = plan.source_bytes(source, 1 << 20).unwrap();
    assert_eq!(&bytes[528..532], &crc32fast::hash(&[0u8; 92]).to_le_bytes());
    // A host patch past the end of its file is refused while planning.
    write(
        d.path(),
        "patch1.xml",
        br#"<patches><patch SECTOR_SIZE_IN_BYTES="512" byte_offset="0" filename="gpt_main0.bin" physical_partition_number="0" size_in_bytes="4" start_sector="34" value="1"/></patches>"#,
    );
    let e = FlashPlan::build(
        folder(d.path()),
        &input(&["rawprogram0.xml"], &["patch1.xml"]),
    )
    .unwrap_err();
    assert!(e.what.contains("which has only 17408 bytes"), "{e}");
}

// ------------------------------------------------------------------------------- real XML

/// Stage a real rawprogram/patch pair with small generated images; returns the temp folder and
/// the package-relative XML paths.
fn stage_real(raw: &str, patch: Option<&str>, quectel: bool) -> (tempfile::TempDir, PlanInput) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/realxml");
    let d = tempfile::tempdir().unwrap();
    let xml_dir = if quectel { "update/firehose/" } else { "" };
    let strip = |n: &str| n.split_once("__").unwrap().1.to_string();
    let raw_rel = format!("{xml_dir}{}", strip(raw));
    let bytes = std::fs::read(src.join(raw)).unwrap();
    write(d.path(), &raw_rel, &bytes);
    let mut inp = PlanInput {
        rawprogram: vec![raw_rel.clone()],
        ..PlanInput::default()
    };
    if let Some(p) = patch {
        let rel = format!("{xml_dir}{}", strip(p));
        write(d.path(), &rel, &std::fs::read(src.join(p)).unwrap());
        inp.patch.push(rel);
    }
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    for e in parse_rawprogram(&bytes).unwrap() {
        let RawEntry::Program(p) = e else { continue };
        let Some(path) = &p.path else { continue };
        let rel = join_relative(parent_dir(&raw_rel), path).unwrap();
        let ss = u64::from(p.sector_size);
        let want = if path.file_name().starts_with("gpt_") {
            p.num_partition_sectors * ss
        } else if p.num_partition_sectors == 0 {
            3 * ss + 7
        } else {
            (p.num_partition_sectors * ss).min(4 * ss) - 1
        };
        let slot = sizes.entry(rel).or_insert(want);
        *slot = (*slot).min(want);
    }
    for (rel, len) in sizes {
        write(d.path(), &rel, &bytes_of(len as u8, len as usize));
    }
    (d, inp)
}

#[test]
fn every_real_rawprogram_and_patch_pair_plans() {
    for (raw, patch, quectel, kind, steps, patched) in [
        (
            "quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml",
            Some("quectel_eg25g_mdm9607__patch_p2K_b128K.xml"),
            true,
            StorageKind::Nand,
            22,
            1,
        ),
        (
            "quectel_em12g_sdx20__rawprogram_nand_p4K_b256K_update.xml",
            Some("quectel_em12g_sdx20__patch_p4K_b256K.xml"),
            true,
            StorageKind::Nand,
            24,
            1,
        ),
        (
            "qcom_emmc_msm8916_ptool__rawprogram0.xml",
            Some("qcom_emmc_msm8916_ptool__patch0.xml"),
            false,
            StorageKind::Emmc,
            // 20 images (11 entries name no file), 13 DISK patches, setbootable.
            20 + 13 + 1,
            2,
        ),
        (
            "qcom_ufs_qcs6490_rubikpi3__rawprogram4.xml",
            Some("qcom_ufs_qcs6490_rubikpi3__patch4.xml"),
            false,
            StorageKind::Ufs,
            0,
            2,
        ),
        (
            "qcom_ufs_qcs6490_rubikpi3__rawprogram0.xml",
            None,
            false,
            StorageKind::Ufs,
            1,
            0,
        ),
        (
            "uz801_msm8916_emmc_edlbackup__rawprogram0.xml",
            Some("uz801_msm8916_emmc_edlbackup__patch0.xml"),
            false,
            StorageKind::Emmc,
            0,
            0,
        ),
    ] {
        let (d, inp) = stage_real(raw, patch, quectel);
        let plan =
            FlashPlan::build(folder(d.path()), &inp).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(plan.storage, kind, "{raw}");
        if steps > 0 {
            assert_eq!(
                plan.steps.len(),
                steps,
                "{raw}: {:#?}",
                plan.summary().steps
            );
        }
        let n_patched = plan
            .steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    FlashStep::Program {
                        source: ImageSource::Patched { .. },
                        ..
                    }
                )
            })
            .count();
        assert_eq!(n_patched, patched, "{raw}");
        assert_eq!(plan.needs_device_geometry(), patched > 0, "{raw}");
        let summary = plan.summary();
        assert_eq!(summary.steps.len(), plan.steps.len());
        assert!(summary.steps.iter().all(|s| s.destructive));
        serde_json::to_string(&summary).unwrap();
        let extents = plan.extents();
        assert_eq!(
            extents.len(),
            plan.steps
                .iter()
                .filter(|s| s.kind() != StepKind::SetBootable)
                .count()
        );
        assert!(extents
            .iter()
            .filter(|e| e.kind == StepKind::Program)
            .all(|e| e.files.len() == 1 && e.sectors.is_some()));
    }
}

#[test]
fn real_ptool_plan_resolves_for_a_device_and_checks_the_grow_entry() {
    let (d, inp) = stage_real(
        "qcom_emmc_msm8916_ptool__rawprogram0.xml",
        Some("qcom_emmc_msm8916_ptool__patch0.xml"),
        false,
    );
    let plan = FlashPlan::build(folder(d.path()), &inp).unwrap();
    // userdata is marked sparse but the staged file has no sparse header: a plain image.
    assert!(plan
        .notes
        .iter()
        .any(|n| n.contains("userdata.img is marked sparse")));
    let sectors = 7_634_944;
    let ready = plan.for_device(&geo(0, emmc_info(sectors))).unwrap();
    assert!(!ready.needs_device_geometry());
    let main = ready
        .steps
        .iter()
        .find_map(|s| match s {
            FlashStep::Program { source, .. } if source.files() == ["gpt_main0.bin"] => {
                Some(source.clone())
            }
            _ => None,
        })
        .unwrap();
    let bytes = ready.source_bytes(&main, 1 << 20).unwrap();
    // Entry 29 (userdata)'s last LBA in the primary GPT: NUM_DISK_SECTORS-34.
    assert_eq!(
        &bytes[9 * 512 + 40..9 * 512 + 48],
        &(sectors - 34).to_le_bytes()
    );
    // A device too small for the layout.
    let e = plan.for_device(&geo(0, emmc_info(3_870_720))).unwrap_err();
    assert!(e.why.contains("bigger storage"), "{e}");
    // A grow image that runs into the backup GPT at NUM_DISK_SECTORS-33.
    let userdata_end = 3_870_720 + 1;
    let e = plan
        .for_device(&geo(0, emmc_info(userdata_end + 33 - 1)))
        .unwrap_err();
    assert!(e.what.contains("overlap"), "{e}");
    assert!(
        e.what.contains("userdata") && e.what.contains("BackupGPT"),
        "{e}"
    );
}

#[test]
fn start_byte_hex_must_match_the_start_sector() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.img", &[1u8; 600]);
    let xml = |hex: &str, start: &str| {
        data(&[prog(&format!(
            "SECTOR_SIZE_IN_BYTES=\"512\" filename=\"a.img\" label=\"a\" num_partition_sectors=\"8\" physical_partition_number=\"0\" start_byte_hex=\"{hex}\" start_sector=\"{start}\""
        ))])
    };
    write(d.path(), "ok.xml", &xml("0x4400", "34"));
    FlashPlan::build(folder(d.path()), &input(&["ok.xml"], &[])).unwrap();
    write(
        d.path(),
        "ok2.xml",
        &xml("(512*NUM_DISK_SECTORS)-4096.", "NUM_DISK_SECTORS-8."),
    );
    FlashPlan::build(folder(d.path()), &input(&["ok2.xml"], &[])).unwrap();
    write(d.path(), "bad.xml", &xml("0x4600", "34"));
    let e = FlashPlan::build(folder(d.path()), &input(&["bad.xml"], &[])).unwrap_err();
    assert!(e.what.contains("start_byte_hex says 0x4600"), "{e}");
    assert!(e.what.contains("byte 17408"), "{e}");
    write(
        d.path(),
        "bad2.xml",
        &xml("(512*NUM_DISK_SECTORS)-4608.", "NUM_DISK_SECTORS-8."),
    );
    let e = FlashPlan::build(folder(d.path()), &input(&["bad2.xml"], &[])).unwrap_err();
    assert!(
        e.what.contains("disagree") || e.what.contains("start_byte_hex says"),
        "{e}"
    );
}

#[test]
fn overlapping_program_ranges_are_refused_naming_both() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.img", &[1u8; 4096]);
    write(d.path(), "b.img", &[2u8; 512]);
    write(
        d.path(),
        "raw.xml",
        &data(&[
            emmc_prog("a.img", "boot", 100, 0),
            emmc_prog("b.img", "dtb", 104, 8),
        ]),
    );
    let e = FlashPlan::build(folder(d.path()), &input(&["raw.xml"], &[])).unwrap_err();
    assert!(e.what.contains("boot (sectors 100..108)"), "{e}");
    assert!(e.what.contains("dtb (sectors 104..105)"), "{e}");
    assert!(e.what.contains("overlap on physical partition 0"), "{e}");
}

#[test]
fn several_rawprogram_files_combine_in_order_with_their_patches() {
    let d = tempfile::tempdir().unwrap();
    let lun = |n: u32, file: &str, start: u64| {
        let label = file.split('.').next().unwrap();
        prog(&format!("SECTOR_SIZE_IN_BYTES=\"4096\" filename=\"{file}\" label=\"{label}\" num_partition_sectors=\"4\" physical_partition_number=\"{n}\" start_sector=\"{start}\""))
    };
    write(d.path(), "xbl.elf", &[1u8; 4096]);
    write(d.path(), "boot.img", &[2u8; 8000]);
    write(d.path(), "rawprogram0.xml", &data(&[lun(0, "boot.img", 6)]));
    write(d.path(), "rawprogram1.xml", &data(&[lun(1, "xbl.elf", 6)]));
    let patch = |n: u32| {
        format!("<patches><patch SECTOR_SIZE_IN_BYTES=\"4096\" byte_offset=\"0\" filename=\"DISK\" physical_partition_number=\"{n}\" size_in_bytes=\"4\" start_sector=\"1\" value=\"NUM_DISK_SECTORS-1.\" what=\"p{n}\"/></patches>")
    };
    write(d.path(), "patch0.xml", patch(0).as_bytes());
    write(d.path(), "patch1.xml", patch(1).as_bytes());
    let plan = FlashPlan::build(
        folder(d.path()),
        &input(
            &["rawprogram0.xml", "rawprogram1.xml"],
            &["patch0.xml", "patch1.xml"],
        ),
    )
    .unwrap();
    assert_eq!(plan.storage, StorageKind::Ufs);
    let order: Vec<(StepKind, Option<u32>)> =
        plan.steps.iter().map(|s| (s.kind(), s.lun())).collect();
    assert_eq!(
        order,
        [
            (StepKind::Program, Some(0)),
            (StepKind::Program, Some(1)),
            (StepKind::Patch, Some(0)),
            (StepKind::Patch, Some(1)),
            (StepKind::SetBootable, None),
        ]
    );
    assert!(matches!(plan.steps[4], FlashStep::SetBootable { drive: 1 }));
    assert_eq!(plan.luns(), [0, 1]);
    // The same ranges on different LUNs do not overlap.
    let ufs = |sectors: u64| StorageInfo {
        total_blocks: Some(sectors),
        block_size: Some(4096),
        page_size: Some(4096),
        ..StorageInfo::default()
    };
    let mut g = geo(0, ufs(1000));
    g.insert(1, ufs(6));
    let e = plan.for_device(&g).unwrap_err();
    assert!(e.what.contains("xbl ends at sector 7"), "{e}");
    g.insert(1, ufs(64));
    plan.for_device(&g).unwrap();
}

// ------------------------------------------------------------------------------- hostile packages

#[test]
fn hostile_packages_are_refused_with_clear_errors_and_nothing_written() {
    let outer = tempfile::tempdir().unwrap();
    let d = outer.path().join("pkg");
    std::fs::create_dir_all(&d).unwrap();
    write(outer.path(), "secret.bin", b"secret");
    write(&d, "ok.img", &[1u8; 512]);
    std::os::unix::fs::symlink(outer.path().join("secret.bin"), d.join("link.img")).unwrap();
    std::os::unix::fs::symlink(outer.path(), d.join("up")).unwrap();
    let before = snapshot(outer.path());
    let build = |name: &str, xml: &[u8]| {
        write(&d, name, xml);
        FlashPlan::build(folder(&d), &input(&[name], &[])).unwrap_err()
    };
    let one = |file: &str| data(&[emmc_prog(file, "x", 0, 8)]);
    // Traversal out of the package.
    let e = build("t1.xml", &one("..\\secret.bin"));
    assert!(e.what.contains("lies outside the package"), "{e}");
    assert!(e.next.contains("Refusing"), "{e}");
    let e = build("t2.xml", &one("../../../../etc/passwd"));
    assert!(e.what.contains("outside the package"), "{e}");
    // Absolute paths and drive letters.
    let e = build("t3.xml", &one("/etc/passwd"));
    assert!(e.what.contains("/etc/passwd"), "{e}");
    let e = build("t4.xml", &one("C:\\Windows\\x.bin"));
    assert!(e.what.contains("C:"), "{e}");
    // Symlinks leaving the package (a file, a folder).
    let e = build("t5.xml", &one("link.img"));
    assert!(e.what.contains("outside the package folder"), "{e}");
    let e = build("t6.xml", &one("up/secret.bin"));
    assert!(e.what.contains("outside the package folder"), "{e}");
    // A host patch aimed outside the package.
    write(&d, "raw.xml", &one("ok.img"));
    write(
        &d,
        "p.xml",
        br#"<patches><patch SECTOR_SIZE_IN_BYTES="512" byte_offset="0" filename="..\..\secret.bin" physical_partition_number="0" size_in_bytes="4" start_sector="0" value="1"/></patches>"#,
    );
    let e = FlashPlan::build(folder(&d), &input(&["raw.xml"], &["p.xml"])).unwrap_err();
    assert!(e.what.contains("outside the package"), "{e}");
    // Oversize XML.
    let big = vec![b' '; (MAX_XML_BYTES + 1) as usize];
    let e = build("big.xml", &big);
    assert!(e.what.contains("big.xml is 16777217 bytes"), "{e}");
    // Hostile XML: attribute floods, deep nesting, giant numbers, element floods.
    let attrs: String = (0..200).map(|i| format!(" a{i}=\"1\"")).collect();
    let e = build(
        "a.xml",
        format!("<data><program{attrs}/></data>").as_bytes(),
    );
    assert!(e.what.contains("a.xml"), "{e}");
    assert!(e.to_string().contains("attributes"), "{e}");
    let deep = format!("<data>{}{}</data>", "<x>".repeat(100), "</x>".repeat(100));
    let e = build("deep.xml", deep.as_bytes());
    assert!(e.to_string().contains("nesting"), "{e}");
    let e = build(
        "num.xml",
        &data(&[prog("SECTOR_SIZE_IN_BYTES=\"512\" filename=\"ok.img\" num_partition_sectors=\"99999999999999999999999\" physical_partition_number=\"0\" start_sector=\"0\"")]),
    );
    assert!(e.what.contains("num_partition_sectors"), "{e}");
    let e = build(
        "num2.xml",
        &data(&[prog("SECTOR_SIZE_IN_BYTES=\"512\" filename=\"ok.img\" num_partition_sectors=\"8\" physical_partition_number=\"0\" start_sector=\"36028797018963968\"")]),
    );
    assert!(e.what.contains("start_sector"), "{e}");
    let flood = "<erase/>".repeat(100_001);
    let e = build("flood.xml", format!("<data>{flood}</data>").as_bytes());
    assert!(e.to_string().contains("elements"), "{e}");
    // Nothing was written anywhere (besides the XML the test itself wrote).
    let after: Vec<_> = snapshot(outer.path())
        .into_iter()
        .filter(|(p, _)| p.extension().is_none_or(|x| x != "xml"))
        .collect();
    assert_eq!(after, before);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    /// Random sparse images: the planned steps, streamed, reproduce the expanded image and touch
    /// nothing else.
    #[test]
    fn planned_sparse_steps_reproduce_the_image(
        specs in proptest::collection::vec((0u8..4, 1u32..4, proptest::prelude::any::<u32>()), 0..10),
    ) {
        let chunks: Vec<Ch> = specs
            .iter()
            .map(|(k, n, v)| match k {
                0 => Ch::Raw(bytes_of(*v as u8, (*n * 1024) as usize)),
                1 => Ch::Fill(*v, *n),
                2 => Ch::Dont(*n),
                _ => Ch::Crc,
            })
            .collect();
        let (img, expanded) = sparse_image(1024, &chunks);
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "s.img", &img);
        write(d.path(), "r.xml", &data(&[emmc_prog("s.img", "s", 16, 0)]));
        match FlashPlan::build(folder(d.path()), &input(&["r.xml"], &[])) {
            Ok(plan) => {
                let disk = model_disk(&plan, 16 + 64);
                proptest::prop_assert_eq!(&disk[16 * 512..16 * 512 + expanded.len()], &expanded[..]);
                proptest::prop_assert!(disk[..16 * 512].iter().all(Option::is_none));
                proptest::prop_assert!(disk[16 * 512 + expanded.len()..].iter().all(Option::is_none));
            }
            Err(e) => {
                // Only an image without any data may fail to plan ("nothing to flash").
                proptest::prop_assert!(expanded.iter().all(Option::is_none), "{}", e);
            }
        }
    }

    /// Random program entries over random files: planning never panics, and a plan's program
    /// steps fit their entries and never overlap.
    #[test]
    fn random_entries_plan_or_fail_cleanly(
        entries in proptest::collection::vec((0u64..64, 0u64..16, 0usize..3, 0u64..3, proptest::prelude::any::<bool>()), 1..8),
    ) {
        let d = tempfile::tempdir().unwrap();
        for (i, len) in [0usize, 700, 3000].iter().enumerate() {
            write(d.path(), &format!("f{i}.img"), &bytes_of(i as u8, *len));
        }
        let xml: Vec<String> = entries
            .iter()
            .map(|(start, n, f, off, sparse)| prog(&format!(
                "SECTOR_SIZE_IN_BYTES=\"512\" filename=\"f{f}.img\" file_sector_offset=\"{off}\" num_partition_sectors=\"{n}\" physical_partition_number=\"0\" sparse=\"{sparse}\" start_sector=\"{start}\""
            )))
            .collect();
        write(d.path(), "r.xml", &data(&xml));
        if let Ok(plan) = FlashPlan::build(folder(d.path()), &input(&["r.xml"], &[])) {
            let mut ranges = Vec::new();
            for s in &plan.steps {
                if let FlashStep::Program { cmd, source, .. } = s {
                    proptest::prop_assert!(source.len() <= cmd.byte_len().unwrap());
                    proptest::prop_assert!(source.len() > (cmd.num_sectors - 1) * 512);
                    let st: u64 = cmd.start_sector.parse().unwrap();
                    ranges.push((st, st + cmd.num_sectors));
                }
            }
            ranges.sort();
            for w in ranges.windows(2) {
                proptest::prop_assert!(w[0].1 <= w[1].0);
            }
        }
    }
}

#[test]
fn nand_entries_must_agree_with_their_blocks_and_the_file_name() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "update/tz.mbn", &[3u8; 9000]);
    let case = |name: &str, entry: &str| {
        let rel = format!("update/firehose/{name}");
        write(d.path(), &rel, &data(&[entry.to_string()]));
        FlashPlan::build(folder(d.path()), &input(&[&rel], &[]))
    };
    let ok = "<program PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" filename=\"..\\tz.mbn\" last_sector=\"767\" num_partition_sectors=\"128\" physical_partition_number=\"0\" start_sector=\"640\"/>";
    case("rawprogram_nand_p4K_b256K_update.xml", ok).unwrap();
    let e = case("rawprogram_nand_p2K_b128K_update.xml", ok).unwrap_err();
    assert!(
        e.what
            .contains("the file name says 2 KiB pages and 128 KiB blocks"),
        "{e}"
    );
    let e = case(
        "rawprogram_nand_p4K_b256K_update.xml",
        &ok.replace("start_sector=\"640\"", "start_sector=\"650\"")
            .replace("767", "777"),
    )
    .unwrap_err();
    assert!(e.what.contains("not on a 64-page block boundary"), "{e}");
    let e = case(
        "rawprogram_nand_p4K_b256K_update.xml",
        &ok.replace("767", "768"),
    )
    .unwrap_err();
    assert!(e.what.contains("last_sector does not equal"), "{e}");
}

#[test]
fn bom_and_crlf_files_plan_like_the_originals() {
    let (d, inp) = stage_real(
        "quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml",
        Some("quectel_eg25g_mdm9607__patch_p2K_b128K.xml"),
        true,
    );
    let plain = FlashPlan::build(folder(d.path()), &inp).unwrap();
    for xml in inp.rawprogram.iter().chain(&inp.patch) {
        let p = d.path().join(xml);
        let text = std::fs::read_to_string(&p).unwrap();
        let crlf = format!(
            "\u{feff}{}",
            text.replace("\r\n", "\n").replace('\n', "\r\n")
        );
        std::fs::write(&p, crlf).unwrap();
    }
    let bom = FlashPlan::build(folder(d.path()), &inp).unwrap();
    assert_eq!(bom.steps, plain.steps);
    assert_eq!(bom.host_patches, plain.host_patches);
}

#[test]
fn disk_patches_must_land_inside_the_device() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "a.img", &[1u8; 512]);
    write(
        d.path(),
        "raw.xml",
        &data(&[emmc_prog("a.img", "a", 34, 8)]),
    );
    write(
        d.path(),
        "patch.xml",
        br#"<patches><patch SECTOR_SIZE_IN_BYTES="512" byte_offset="0" filename="DISK" physical_partition_number="0" size_in_bytes="8" start_sector="NUM_DISK_SECTORS-1." value="0" what="last"/><patch SECTOR_SIZE_IN_BYTES="512" byte_offset="0" filename="DISK" physical_partition_number="0" size_in_bytes="8" start_sector="5000" value="0" what="far"/></patches>"#,
    );
    let plan = FlashPlan::build(folder(d.path()), &input(&["raw.xml"], &["patch.xml"])).unwrap();
    plan.for_device(&geo(0, emmc_info(5001))).unwrap();
    let e = plan.for_device(&geo(0, emmc_info(4000))).unwrap_err();
    assert!(e.what.contains("far ends at sector 5001"), "{e}");
}

/// A package held in memory that counts its opens: the plan must work through
/// [`PackageFiles`] alone (a zip is read the same way).
#[derive(Debug, Default)]
struct MemPackage {
    files: BTreeMap<String, Vec<u8>>,
    opens: std::sync::atomic::AtomicUsize,
}

impl PackageFiles for MemPackage {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn list(&self) -> crate::Result<Vec<crate::package::source::PackageFile>> {
        Ok(self
            .files
            .iter()
            .map(|(p, b)| crate::package::source::PackageFile {
                path: p.clone(),
                size: b.len() as u64,
            })
            .collect())
    }

    fn size(&self, path: &str) -> crate::Result<u64> {
        self.files
            .get(path)
            .map(|b| b.len() as u64)
            .ok_or_else(|| Error::failure(format!("no {path}"), "absent", "add it"))
    }

    fn open(&self, path: &str, offset: u64) -> crate::Result<Box<dyn Read + Send + '_>> {
        self.opens.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let b = self
            .files
            .get(path)
            .ok_or_else(|| Error::failure(format!("no {path}"), "absent", "add it"))?;
        // Like a deflated zip entry: no seeking, the reader starts at the offset.
        Ok(Box::new(&b[(offset as usize).min(b.len())..]))
    }
}

#[test]
fn plans_build_and_stream_through_any_package_files_implementation() {
    let (img, expanded) = sparse_image(
        4096,
        &[
            Ch::Raw(bytes_of(1, 4096)),
            Ch::Dont(2),
            Ch::Raw(bytes_of(2, 4096)),
            Ch::Dont(1),
            Ch::Fill(7, 1),
            Ch::Dont(1),
            Ch::Raw(bytes_of(3, 8192)),
        ],
    );
    let mut pkg = MemPackage::default();
    pkg.files.insert("images/system.img".into(), img);
    pkg.files
        .insert("images/gpt_main0.bin".into(), vec![0u8; 34 * 512]);
    pkg.files.insert(
        "xml/rawprogram0.xml".into(),
        data(&[
            emmc_prog("..\\images\\gpt_main0.bin", "PrimaryGPT", 0, 34),
            emmc_prog("../images/system.img", "system", 64, 1000),
        ]),
    );
    pkg.files.insert(
        "xml/patch0.xml".into(),
        br#"<patches><patch SECTOR_SIZE_IN_BYTES="512" byte_offset="48" filename="..\images\gpt_main0.bin" physical_partition_number="0" size_in_bytes="8" start_sector="1" value="NUM_DISK_SECTORS-34." what="last usable"/></patches>"#.to_vec(),
    );
    let pkg = Arc::new(pkg);
    let files: Arc<dyn PackageFiles> = pkg.clone();
    let plan =
        FlashPlan::build(files, &input(&["xml/rawprogram0.xml"], &["xml/patch0.xml"])).unwrap();
    assert_eq!(plan.summary().package, "memory");
    assert_eq!(plan.steps.len(), 1 + 4, "GPT, then four sparse runs");
    let ready = plan.for_device(&geo(0, emmc_info(100_000))).unwrap();
    let opens_before = pkg.opens.load(std::sync::atomic::Ordering::SeqCst);
    // Stream every step in order through one streamer, as the runner does.
    let mut disk = vec![None; 2000 * 512];
    let mut st = ready.streamer();
    for s in &ready.steps {
        let FlashStep::Program { cmd, source, .. } = s else {
            continue;
        };
        let mut bytes = Vec::new();
        st.reader(source).read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes.len() as u64, source.len());
        let at = cmd.start_sector.parse::<usize>().unwrap() * 512;
        for (i, b) in bytes.into_iter().enumerate() {
            disk[at + i] = Some(b);
        }
    }
    // One open for the GPT file, one for the whole sparse image: its runs are read forward
    // from the same reader (a zip entry is not decompressed again per run).
    assert_eq!(
        pkg.opens.load(std::sync::atomic::Ordering::SeqCst) - opens_before,
        2
    );
    assert_eq!(disk[64 * 512..64 * 512 + expanded.len()], expanded[..]);
    assert_eq!(
        disk[512 + 48..512 + 56]
            .iter()
            .map(|b| b.unwrap())
            .collect::<Vec<u8>>(),
        (100_000u64 - 34).to_le_bytes()
    );
}
