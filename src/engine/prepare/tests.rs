use std::io::Write;

use super::*;
use crate::engine::guards::MemoryLedger;
use crate::sim::firehose::storage::StorageProfile;
use crate::sim::package_gen::{self, PackageOptions};
use crate::sim::profile::Profile;

/// The EC25-E's EFS2 partition in 4 KiB pages (blocks 20..108 of 64 pages).
const EFS2_START: u64 = 1280;
const EFS2_PAGES: u64 = 5632;

/// A generated EC25 NAND package (4K pages, 256K blocks) in `dir/name`.
fn ec25_package(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    let unit = Profile::by_name("ec25").unwrap().for_unit(1);
    let storage = StorageProfile::by_name("nand-ec25e").unwrap();
    package_gen::emit(
        &root,
        &unit,
        &storage,
        PackageOptions {
            image_bytes: 512 << 10,
            seed: 1,
        },
    )
    .unwrap();
    root
}

fn fw(root: &Path) -> PathBuf {
    root.join("update/firehose")
}

fn efs2_entry(kind: &str, file: Option<&str>) -> String {
    let f = file
        .map(|f| format!(" filename=\"{f}\""))
        .unwrap_or_default();
    format!(
        "  <{kind} PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\"{f} label=\"EFS2\" last_sector=\"{}\" num_partition_sectors=\"{EFS2_PAGES}\" physical_partition_number=\"0\" start_sector=\"{EFS2_START}\"/>\n",
        EFS2_START + EFS2_PAGES - 1
    )
}

/// Add a `_factory` set: the update entries plus cefs.mbn programmed to EFS2.
fn add_factory(root: &Path) {
    let update =
        std::fs::read_to_string(fw(root).join("rawprogram_nand_p4K_b256K_update.xml")).unwrap();
    let extra = efs2_entry("erase", None) + &efs2_entry("program", Some("..\\cefs.mbn"));
    let factory = update.replace("</data>", &format!("{extra}</data>"));
    std::fs::write(
        fw(root).join("rawprogram_nand_p4K_b256K_factory.xml"),
        factory,
    )
    .unwrap();
    std::fs::write(root.join("update/cefs.mbn"), vec![0x5a; 16 << 10]).unwrap();
}

fn request(root: &Path) -> PrepareRequest {
    PrepareRequest {
        package: root.to_path_buf(),
        ..PrepareRequest::default()
    }
}

fn prepared(req: &PrepareRequest) -> Prepared {
    prepare(req, &MemoryLedger::new(), None).unwrap()
}

#[test]
fn a_generated_nand_package_is_flashable_with_its_table_and_integrity() {
    let d = tempfile::tempdir().unwrap();
    let root = ec25_package(d.path(), "pkg");
    let p = prepared(&request(&root));
    let v = p.verdict();
    assert!(v.flashable, "{v:?}");
    assert!(v.reasons.is_empty());
    let md5 = p.md5.as_ref().unwrap();
    assert!(md5.all_ok() && md5.ok > 5, "{}", md5.summary());
    assert!(
        matches!(&p.programmer, ProgrammerUse::Package { path, .. } if path.ends_with("prog_nand_firehose_mdm9207.mbn")),
        "{:?}",
        p.programmer
    );
    let plan = p.plan.as_ref().unwrap();
    assert_eq!(plan.storage, StorageKind::Nand);
    // Every program source, the XMLs and the programmer are in the manifest.
    for e in plan.extents() {
        for f in &e.files {
            assert!(p.manifest.get(f).is_some(), "{f} in the manifest");
        }
    }
    assert!(p
        .manifest
        .get("update/firehose/rawprogram_nand_p4K_b256K_update.xml")
        .is_some());
    assert!(p
        .manifest
        .get("update/firehose/prog_nand_firehose_mdm9207.mbn")
        .is_some());
    let g = p.guard.as_ref().unwrap();
    assert!(g.allowed);
    assert!(
        g.table_source.as_deref().unwrap().contains("MIBIB"),
        "{g:?}"
    );
    assert!(g
        .device_unique
        .iter()
        .any(|n| n.eq_ignore_ascii_case("efs2")));
    assert!(g.touched.is_empty());
    assert!(g.untouched().iter().any(|n| n.eq_ignore_ascii_case("efs2")));
    match &p.compat {
        CompatReport::NotChecked { reason, next, .. } => {
            assert!(reason.starts_with("not checked"), "{reason}");
            assert!(next.contains("--modem-revision"), "{next}");
        }
        other => panic!("{other:?}"),
    }
    // Ordinary images stream whole and are checked on the way: nothing to hash again.
    assert!(
        p.files_to_reverify().is_empty(),
        "{:?}",
        p.files_to_reverify()
    );
    p.reverify().unwrap();
    // The whole report serialises for --json.
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["compat"]["state"], "not_checked");
    assert!(json["summary"]["steps"].as_array().unwrap().len() > 10);
}

#[test]
fn a_file_changed_after_the_check_is_refused_while_streaming() {
    let d = tempfile::tempdir().unwrap();
    let root = ec25_package(d.path(), "pkg");
    let p = prepared(&request(&root));
    let plan = p.plan.as_ref().unwrap();
    let (source, path) = plan
        .steps
        .iter()
        .find_map(|s| match s {
            FlashStep::Program {
                source: src @ ImageSource::File { path, .. },
                ..
            } if path.ends_with("tz.mbn") => Some((src.clone(), path.clone())),
            _ => None,
        })
        .unwrap();
    assert!(plan.source_bytes(&source, 1 << 30).is_ok());
    // Same size, one byte different.
    let file = root.join(&path);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let e = plan.source_bytes(&source, 1 << 30).unwrap_err();
    assert!(e.why.contains("changed while in use"), "{e}");
}

#[test]
fn a_damaged_image_is_refused_naming_the_file_and_both_digests() {
    let d = tempfile::tempdir().unwrap();
    let root = ec25_package(d.path(), "pkg");
    let file = root.join("update/tz.mbn");
    let mut bytes = std::fs::read(&file).unwrap();
    let expected = hex::encode_upper(<md5::Md5 as md5::Digest>::digest(&bytes));
    bytes[7] ^= 1;
    let actual = hex::encode_upper(<md5::Md5 as md5::Digest>::digest(&bytes));
    std::fs::write(&file, &bytes).unwrap();
    let p = prepared(&request(&root));
    let v = p.verdict();
    assert!(!v.flashable);
    let r = v
        .reasons
        .iter()
        .find(|r| r.stage == Stage::Integrity)
        .unwrap();
    assert!(r.what.contains("update/tz.mbn"), "{}", r.what);
    assert!(
        r.what.contains(&expected) && r.what.contains(&actual),
        "{}",
        r.what
    );
    assert!(v.to_error().unwrap().what.contains("tz.mbn"));
}

#[test]
fn update_and_factory_need_a_choice_and_factory_is_blocked_by_the_guard() {
    let d = tempfile::tempdir().unwrap();
    let root = ec25_package(d.path(), "pkg");
    add_factory(&root);
    let e = prepare(&request(&root), &MemoryLedger::new(), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage);
    assert!(e.what.contains("--set"), "{e}");
    assert!(e.what.contains("rawprogram_nand_p4K_b256K_factory"), "{e}");
    assert!(e.what.contains("rawprogram_nand_p4K_b256K_update"), "{e}");
    assert!(e.next.contains("--set update"), "{e}");

    let mut req = request(&root);
    req.set = Some("update".into());
    let p = prepared(&req);
    assert!(p.verdict().flashable, "{:?}", p.verdict());
    assert!(
        p.md5.as_ref().unwrap().unlisted.len() >= 2,
        "new files are reported as unlisted"
    );

    req.set = Some("factory".into());
    let p = prepared(&req);
    let v = p.verdict();
    assert!(!v.flashable);
    let g = p.guard.as_ref().unwrap();
    assert!(!g.allowed);
    assert!(g
        .touched
        .iter()
        .any(|t| t.partition.eq_ignore_ascii_case("efs2")));
    let e = v.to_error().unwrap();
    assert!(e.what.contains("before sending anything"), "{e}");
    assert!(e.what.contains("EFS2"), "{e}");
    assert!(e.why.contains("cefs.mbn"), "{e}");
    assert!(e.next.contains("_update"), "{e}");
}

#[test]
fn an_erase_of_the_whole_flash_is_blocked() {
    let d = tempfile::tempdir().unwrap();
    let root = ec25_package(d.path(), "pkg");
    let update =
        std::fs::read_to_string(fw(&root).join("rawprogram_nand_p4K_b256K_update.xml")).unwrap();
    let all = "  <erase PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" label=\"all\" last_sector=\"131071\" num_partition_sectors=\"131072\" physical_partition_number=\"0\" start_sector=\"0\"/>\n";
    std::fs::write(
        fw(&root).join("rawprogram_nand_p4K_b256K_update.xml"),
        update.replace("<data>\n", &format!("<data>\n{all}")),
    )
    .unwrap();
    std::fs::remove_file(root.join("md5.txt")).unwrap();
    let p = prepared(&request(&root));
    assert!(p.warnings.iter().any(|w| w.contains("no md5.txt")));
    let g = p.guard.as_ref().unwrap();
    assert!(g.blocked.iter().any(|b| b.erase_all), "{g:?}");
    let e = p.verdict().to_error().unwrap();
    assert!(e.why.contains("erases the whole flash"), "{e}");
}

#[test]
fn compatibility_follows_the_revision_in_the_package_name() {
    let d = tempfile::tempdir().unwrap();
    // USERS.md §1.3: an R06A17 20.200 modem must not get an R08A01 package.
    let root = ec25_package(d.path(), "EC25EFAR08A01M4G_01.001.01.001");
    let mut req = request(&root);
    let p = prepared(&req);
    assert_eq!(
        p.revision.as_ref().unwrap().text,
        "EC25EFAR08A01M4G_01.001.01.001"
    );
    assert!(matches!(p.compat, CompatReport::NotChecked { .. }));
    assert!(p.verdict().flashable);

    req.modem_revision = Some("EC25EFAR06A17M4G_20.200.20.200".into());
    let p = prepared(&req);
    match &p.compat {
        CompatReport::Refused { rule, .. } => assert_eq!(*rule, Some(Rule::BaselineChange)),
        other => panic!("{other:?}"),
    }
    let e = p.verdict().to_error().unwrap();
    assert!(e.what.contains("EC25EFAR08A01M4G_01.001.01.001"), "{e}");
    assert!(e.what.contains("EC25EFAR06A17M4G_20.200.20.200"), "{e}");

    // The override needs a verified backup; with none on file it is not accepted.
    let phrase = match &p.compat {
        CompatReport::Refused {
            override_phrase, ..
        } => override_phrase.clone().unwrap(),
        _ => unreachable!(),
    };
    req.override_phrase = Some(phrase.clone());
    let p = prepared(&req);
    let e = p.verdict().to_error().unwrap();
    assert!(e.next.contains("needs a verified backup"), "{e}");

    // With every device-unique partition backed up and verified, the typed phrase overrides.
    let g = p.guard.as_ref().unwrap();
    let mut ledger = MemoryLedger::new();
    for part in &g.table_partitions {
        if classify(&part.name, StorageKind::Nand).is_some() {
            let region = Region {
                lun: part.lun,
                start_sector: part.start_sector,
                num_sectors: part.num_sectors,
                sector_size: 4096,
            };
            ledger.record("0xunit", &part.name, region, &"ab".repeat(32), true);
        }
    }
    let p = prepare(&req, &ledger, Some("0xunit")).unwrap();
    assert!(p.verdict().flashable, "{:?}", p.verdict());
    assert!(matches!(
        p.compat,
        CompatReport::Allowed {
            rule: Allow::Overridden { .. },
            ..
        }
    ));
    req.override_phrase = Some("I understand".into());
    let p = prepare(&req, &ledger, Some("0xunit")).unwrap();
    assert!(p
        .verdict()
        .to_error()
        .unwrap()
        .next
        .contains("does not match"));
}

#[test]
fn variant_and_release_rules_through_the_package_name() {
    let d = tempfile::tempdir().unwrap();
    let ea = ec25_package(d.path(), "RM502QEAAAR13A02M4G");
    let mut req = request(&ea);
    req.modem_revision = Some("RM502QAEAAR13A02M4G".into());
    let p = prepared(&req);
    assert!(
        matches!(
            p.compat,
            CompatReport::Refused {
                rule: Some(Rule::VariantMismatch),
                ..
            }
        ),
        "{:?}",
        p.compat
    );
    let a03 = ec25_package(d.path(), "RM502QAEAAR13A03M4G");
    let mut req = request(&a03);
    req.modem_revision = Some("RM502QAEAAR13A02M4G".into());
    let p = prepared(&req);
    assert!(
        matches!(
            p.compat,
            CompatReport::Allowed {
                rule: Allow::Upgrade,
                ..
            }
        ),
        "{:?}",
        p.compat
    );
    assert!(p.verdict().flashable);
}

#[test]
fn a_package_without_a_revision_is_refused_when_the_modem_is_known() {
    let d = tempfile::tempdir().unwrap();
    let root = ec25_package(d.path(), "pkg");
    let mut req = request(&root);
    req.modem_revision = Some("EC25EFAR06A08M4G".into());
    let p = prepared(&req);
    assert!(matches!(
        p.compat,
        CompatReport::Refused { package: None, .. }
    ));
    assert!(!p.verdict().flashable);
    req.modem_revision = Some("not a revision".into());
    let e = prepare(&req, &MemoryLedger::new(), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage);
}

#[test]
fn a_zipped_package_prepares_like_the_folder() {
    let d = tempfile::tempdir().unwrap();
    let root = ec25_package(d.path(), "EC25EFAR06A08M4G_01.001.01.001");
    let zip_path = d.path().join("EC25EFAR06A08M4G_01.001.01.001.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let pkg = crate::package::source::DirPackage::open(&root).unwrap();
    for f in pkg.list().unwrap() {
        w.start_file(format!("EC25EFAR06A08M4G_01.001.01.001/{}", f.path), opts)
            .unwrap();
        w.write_all(&pkg.read_all(&f.path, 1 << 30).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
    let folder = prepared(&request(&root));
    let zipped = prepared(&request(&zip_path));
    assert!(zipped.verdict().flashable, "{:?}", zipped.verdict());
    let strip = |m: &Sha256Manifest| -> Vec<(String, String)> {
        m.files
            .iter()
            .map(|(k, v)| {
                let k = k
                    .split_once('/')
                    .filter(|(a, _)| a.starts_with("EC25"))
                    .map_or(k.as_str(), |(_, b)| b);
                (k.to_string(), v.sha256.clone())
            })
            .collect()
    };
    assert_eq!(strip(&folder.manifest), strip(&zipped.manifest));
    assert_eq!(
        folder.summary.as_ref().unwrap().steps.len(),
        zipped.summary.as_ref().unwrap().steps.len()
    );
    // Streaming from the zip is checked against the manifest as well.
    let plan = zipped.plan.as_ref().unwrap();
    for s in &plan.steps {
        if let FlashStep::Program { source, .. } = s {
            if source.is_resolved() {
                plan.source_bytes(source, 1 << 30).unwrap();
            }
        }
    }
}

#[test]
fn an_override_programmer_must_exist_and_a_missing_one_is_a_refusal() {
    let d = tempfile::tempdir().unwrap();
    let root = ec25_package(d.path(), "pkg");
    let mut req = request(&root);
    req.programmer = Some(d.path().join("nope.mbn"));
    let e = prepare(&req, &MemoryLedger::new(), None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage);

    std::fs::remove_file(fw(&root).join("prog_nand_firehose_mdm9207.mbn")).unwrap();
    let p = prepared(&request(&root));
    let r = p
        .refusals
        .iter()
        .find(|r| r.stage == Stage::Programmer)
        .unwrap();
    assert!(r.next.contains("--programmer"), "{r:?}");
    assert!(matches!(p.programmer, ProgrammerUse::Missing { .. }));
}

#[test]
fn verifying_files_pass_the_checked_bytes_and_refuse_a_shorter_file() {
    use std::io::Read as _;
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.bin"), b"0123456789").unwrap();
    let v = VerifyingFiles::new(Box::new(
        crate::package::source::DirPackage::open(d.path()).unwrap(),
    ));
    let m = integrity::manifest_for(&v, &["a.bin".to_string()]).unwrap();
    v.arm(m);
    let mut r = v.open("a.bin", 0).unwrap();
    assert_eq!(r.read(&mut []).unwrap(), 0, "an empty read is not an end");
    let mut all = Vec::new();
    r.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"0123456789");
    drop(r);
    // Grown: only the checked bytes are handed out.
    std::fs::write(d.path().join("a.bin"), b"0123456789extra").unwrap();
    let mut all = Vec::new();
    v.open("a.bin", 0).unwrap().read_to_end(&mut all).unwrap();
    assert_eq!(all, b"0123456789");
    // Shorter: refused at its end.
    std::fs::write(d.path().join("a.bin"), b"01234").unwrap();
    let e = v
        .open("a.bin", 0)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(e.to_string().contains("changed while in use"), "{e}");
    // Opened at an offset: passed through unchecked (Prepared::reverify covers those).
    let mut tail = Vec::new();
    v.open("a.bin", 2).unwrap().read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"234");
}
