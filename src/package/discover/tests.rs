use super::*;
use crate::package::integrity::{check_md5, Md5Status};
use crate::package::source::DirPackage;
use crate::package::zip::ZipPackage;
use crate::sim::firehose::storage::StorageProfile;
use crate::sim::package_gen::{self, PackageOptions};
use crate::sim::profile::Profile;
use std::io::{Read, Write};
use std::path::Path;

/// An in-memory package, for property tests.
#[derive(Debug, Default)]
struct MemPackage {
    files: BTreeMap<String, Vec<u8>>,
}

impl PackageFiles for MemPackage {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn list(&self) -> crate::Result<Vec<PackageFile>> {
        Ok(self
            .files
            .iter()
            .map(|(p, d)| PackageFile {
                path: p.clone(),
                size: d.len() as u64,
            })
            .collect())
    }

    fn size(&self, path: &str) -> crate::Result<u64> {
        self.open(path, 0).map(|_| self.files[path].len() as u64)
    }

    fn open(&self, path: &str, offset: u64) -> crate::Result<Box<dyn Read + Send + '_>> {
        let d = self
            .files
            .get(path)
            .ok_or_else(|| Error::failure(format!("no {path}"), "", ""))?;
        Ok(Box::new(&d[(offset as usize).min(d.len())..]))
    }
}

/// Write `files` (path, contents) under `root` in the given order.
fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (p, d) in files {
        let full = root.join(p);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, d).unwrap();
    }
}

/// Zip every file below `dir` (sorted), each under `prefix`.
fn zip_dir(dir: &Path, prefix: &str) -> Vec<u8> {
    let pkg = DirPackage::open(dir).unwrap();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for f in pkg.list().unwrap() {
        w.start_file(format!("{prefix}{}", f.path), opts).unwrap();
        let mut data = Vec::new();
        pkg.open(&f.path, 0)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        w.write_all(&data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn small() -> PackageOptions {
    PackageOptions {
        image_bytes: 256 << 10,
        seed: 3,
    }
}

const RAW_NAND: &[u8] = b"<?xml version=\"1.0\" ?>\n<data>\n<program SECTOR_SIZE_IN_BYTES=\"2048\" PAGES_PER_BLOCK=\"64\" filename=\"..\\sbl1.mbn\" num_partition_sectors=\"640\" physical_partition_number=\"0\" start_sector=\"0\"/>\n</data>\n";
const PATCH: &[u8] = b"<?xml version=\"1.0\" ?>\n<patches>\n</patches>\n";

fn chosen_path(d: &Discovery) -> &str {
    d.programmer.path().expect("a programmer was chosen")
}

#[test]
fn generated_quectel_nand_package() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("EC25EFAR06A08M4G_01.001.01.001");
    let unit = Profile::by_name("ec25").unwrap().for_unit(1);
    let storage = StorageProfile::by_name("nand-eg25g").unwrap();
    package_gen::emit(&root, &unit, &storage, small()).unwrap();
    let pkg = DirPackage::open(&root).unwrap();
    let d = discover(&pkg).unwrap();
    assert_eq!(d.kind, LayoutKind::QuectelFirehose);
    assert_eq!(d.root, "");
    assert_eq!(d.xml_dir, "update/firehose");
    assert!(d.plannable);
    assert_eq!(d.md5_txt.as_deref(), Some("md5.txt"));
    assert_eq!(d.contents_xml.as_deref(), Some("contents.xml"));
    assert_eq!(
        chosen_path(&d),
        "update/firehose/prog_nand_firehose_mdm9207.mbn"
    );
    assert_eq!(
        d.programmer.reason(),
        "prog_nand_firehose_mdm9207.mbn: matches prog_nand_firehose_*.mbn, the first of qrescue's programmer patterns that any file matches"
    );
    assert_eq!(d.sets.len(), 1);
    assert!(!d.needs_choice);
    let set = d.only_set().unwrap();
    assert_eq!(set.id, "rawprogram_nand_p2K_b128K_update");
    assert_eq!(set.flavour, Flavour::Update);
    assert_eq!(set.geometry.as_ref().unwrap().pages_per_block, 64);
    assert!(!set.overwrites_device_data);
    assert_eq!(
        set.parts,
        vec![XmlPart {
            lun: None,
            rawprogram: "update/firehose/rawprogram_nand_p2K_b128K_update.xml".into(),
            patch: Some("update/firehose/patch_p2K_b128K.xml".into()),
        }]
    );
    assert_eq!(
        d.revision_hints[0],
        RevisionHint {
            text: "EC25EFAR06A08M4G_01.001.01.001".into(),
            source: "folder name".into()
        }
    );
    assert!(d
        .revision_hints
        .iter()
        .any(|h| h.source == "contents.xml product_name"));
    assert_eq!(
        d.resolve(
            &set.parts[0].rawprogram,
            &PackagePath::parse("..\\sbl1.mbn").unwrap().unwrap()
        )
        .unwrap(),
        "update/sbl1.mbn"
    );
    // The generated md5.txt verifies every file.
    let r = check_md5(&pkg, "md5.txt").unwrap();
    assert!(r.all_ok(), "{}", r.summary());
    assert!(r.unlisted.is_empty());
    // --json
    let v = serde_json::to_value(&d).unwrap();
    assert_eq!(v["kind"], "quectel_firehose");
    assert_eq!(v["programmer"]["state"], "chosen");
}

#[test]
fn generated_package_zipped_with_and_without_a_top_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pkg");
    let unit = Profile::by_name("ec25").unwrap().for_unit(1);
    let storage = StorageProfile::by_name("nand-ec25e").unwrap();
    package_gen::emit(&root, &unit, &storage, small()).unwrap();
    let folder = discover(&DirPackage::open(&root).unwrap()).unwrap();

    let flat = dir.path().join("flat.zip");
    std::fs::write(&flat, zip_dir(&root, "")).unwrap();
    let z = ZipPackage::open(&flat).unwrap();
    let d = discover(&z).unwrap();
    assert_eq!(d.sets, folder.sets);
    assert_eq!(d.programmer, folder.programmer);

    let top = "EC25EFAR06A08M4G_01.001.01.001";
    let nested = dir.path().join(format!("quectel-{top}.zip"));
    std::fs::write(&nested, zip_dir(&root, &format!("{top}/"))).unwrap();
    let z = ZipPackage::open(&nested).unwrap();
    let d = discover(&z).unwrap();
    assert_eq!(d.kind, LayoutKind::QuectelFirehose);
    assert_eq!(d.root, top);
    assert_eq!(d.xml_dir, format!("{top}/update/firehose"));
    assert_eq!(d.md5_txt, Some(format!("{top}/md5.txt")));
    assert_eq!(
        chosen_path(&d),
        format!("{top}/update/firehose/prog_nand_firehose_mdm9207.mbn")
    );
    assert_eq!(
        d.sets[0].parts[0].patch.as_deref(),
        Some(format!("{top}/update/firehose/patch_p4K_b256K.xml").as_str())
    );
    assert_eq!(d.revision_hints[0].text, top);
    assert_eq!(d.revision_hints[0].source, "zip name");
    let set = &d.sets[0];
    let img = d
        .resolve(
            &set.parts[0].rawprogram,
            &PackagePath::parse("..\\sbl1.mbn").unwrap().unwrap(),
        )
        .unwrap();
    assert_eq!(img, format!("{top}/update/sbl1.mbn"));
    let e = d
        .resolve(
            &set.parts[0].rawprogram,
            &PackagePath::parse("..\\..\\..\\x.bin").unwrap().unwrap(),
        )
        .unwrap_err();
    assert!(e.what.contains("outside the package folder"), "{e}");
    // md5.txt checks the streamed entries.
    let r = check_md5(&z, d.md5_txt.as_deref().unwrap()).unwrap();
    assert!(r.all_ok(), "{}", r.summary());
    assert!(r.files.len() > 5);
}

#[test]
fn generated_ufs_package() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pkg");
    let unit = Profile::by_name("rm520n").unwrap().for_unit(1);
    let storage = StorageProfile::by_name("ufs-qcs6490").unwrap();
    let summary = package_gen::emit(&root, &unit, &storage, small()).unwrap();
    let d = discover(&DirPackage::open(&root).unwrap()).unwrap();
    assert_eq!(d.kind, LayoutKind::EmmcUfs);
    assert_eq!(d.xml_dir, "");
    assert_eq!(chosen_path(&d), "prog_firehose_sdx62.elf");
    assert_eq!(d.sets.len(), 1);
    let set = &d.sets[0];
    assert_eq!(set.id, "rawprogram{N}");
    assert_eq!(set.flavour, Flavour::Plain);
    assert_eq!(set.parts.len(), summary.rawprogram.len());
    for p in &set.parts {
        let n = p.lun.unwrap();
        assert_eq!(p.rawprogram, format!("rawprogram{n}.xml"));
        assert_eq!(p.patch.as_deref(), Some(format!("patch{n}.xml").as_str()));
    }
    let luns: Vec<u32> = set.parts.iter().map(|p| p.lun.unwrap()).collect();
    let mut sorted = luns.clone();
    sorted.sort();
    assert_eq!(luns, sorted);
}

#[test]
fn smart_module_flat_layout() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("prog_firehose_sdx24.mbn", b"ELF"),
            ("rawprogram_nand_p4K_b256K_update.xml", RAW_NAND),
            ("patch_p4K_b256K.xml", PATCH),
            ("sbl1.mbn", b"s"),
            ("md5.txt", b"FILE:START\nFILE:END\n"),
        ],
    );
    let d = discover(&DirPackage::open(dir.path()).unwrap()).unwrap();
    assert_eq!(d.kind, LayoutKind::SmartModule);
    assert_eq!(d.xml_dir, "");
    assert_eq!(chosen_path(&d), "prog_firehose_sdx24.mbn");
    assert_eq!(
        d.sets[0].parts[0].patch.as_deref(),
        Some("patch_p4K_b256K.xml")
    );
    assert_eq!(d.sets[0].geometry.as_ref().unwrap().token, "p4K_b256K");
    assert_eq!(d.md5_txt.as_deref(), Some("md5.txt"));
}

fn update_and_factory(order_reversed: bool) -> Discovery {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(&str, &[u8])> = vec![
        ("md5.txt", b"FILE:START\nFILE:END\n"),
        ("update/sbl1.mbn", b"s"),
        ("update/firehose/prog_nand_firehose_9x07.mbn", b"ELF"),
        (
            "update/firehose/rawprogram_nand_p2K_b128K_update.xml",
            RAW_NAND,
        ),
        (
            "update/firehose/rawprogram_nand_p2K_b128K_factory.xml",
            RAW_NAND,
        ),
        ("update/firehose/patch_p2K_b128K.xml", PATCH),
        ("update/firehose/partition_complete_p2K_b128K.mbn", b"M"),
        ("update/factory.xqcn", b"q"),
    ];
    if order_reversed {
        files.reverse();
    }
    write_tree(dir.path(), &files);
    let mut d = discover(&DirPackage::open(dir.path()).unwrap()).unwrap();
    d.source.clear();
    d.revision_hints.clear();
    d
}

#[test]
fn update_and_factory_need_a_choice() {
    let d = update_and_factory(false);
    assert_eq!(d, update_and_factory(true), "never the filesystem's order");
    assert!(d.needs_choice);
    assert!(d.only_set().is_none());
    let ids: Vec<&str> = d.sets.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "rawprogram_nand_p2K_b128K_factory",
            "rawprogram_nand_p2K_b128K_update"
        ]
    );
    let factory = choose(&d, "factory").unwrap();
    assert_eq!(factory.flavour, Flavour::Factory);
    assert!(factory.overwrites_device_data);
    assert!(factory.warnings.iter().any(|w| w.contains("EFS/NV")));
    assert!(factory.summary().contains("overwrites device-unique data"));
    // Both sets use the one patch file.
    for s in &d.sets {
        assert_eq!(
            s.parts[0].patch.as_deref(),
            Some("update/firehose/patch_p2K_b128K.xml")
        );
    }
    let update = choose(&d, "update").unwrap();
    assert_eq!(update.flavour, Flavour::Update);
    assert!(!update.overwrites_device_data);
    assert_eq!(
        choose(&d, "p2K_b128K update").unwrap().id,
        "rawprogram_nand_p2K_b128K_update"
    );
    assert_eq!(
        choose(&d, "RAWPROGRAM_NAND_P2K_B128K_FACTORY").unwrap().id,
        "rawprogram_nand_p2K_b128K_factory"
    );
    let e = choose(&d, "p2K_b128K").unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage);
    assert!(e.what.contains("2 XML sets fit"), "{e}");
    let e = choose(&d, "p4K_b256K").unwrap_err();
    assert!(e.next.contains("rawprogram_nand_p2K_b128K_update"), "{e}");
    assert!(choose(&d, "").is_err());
}

#[test]
fn old_partition_nand_package_is_described_not_planned() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        dir.path(),
        &[
            ("md5.txt", b"FILE:START\nFILE:END\n"),
            ("update/partition_nand.xml", b"<nandboot/>"),
            ("update/sbl1.mbn", b"s"),
            ("update/NPRG9x07.mbn", b"n"),
            ("update/ENPRG9x07.mbn", b"e"),
        ],
    );
    let d = discover(&DirPackage::open(dir.path()).unwrap()).unwrap();
    assert_eq!(d.kind, LayoutKind::OldPartitionNand);
    assert!(!d.plannable);
    assert!(d.sets.is_empty());
    assert_eq!(
        d.partition_nand_xml.as_deref(),
        Some("update/partition_nand.xml")
    );
    assert!(matches!(d.programmer, ProgrammerChoice::NotFound { .. }));
    assert!(d.notes.iter().any(|n| n.contains("cannot plan")));
    assert!(choose(&d, "update").is_err());
}

#[test]
fn emmc_rawprogram_0_to_3() {
    let dir = tempfile::tempdir().unwrap();
    let mut files: Vec<(String, &[u8])> = Vec::new();
    for n in (0..4).rev() {
        files.push((format!("rawprogram{n}.xml"), RAW_NAND));
        files.push((format!("patch{n}.xml"), PATCH));
    }
    files.push(("prog_emmc_firehose_8916.mbn".into(), b"ELF"));
    files.push(("prog_firehose_ddr.elf".into(), b"ELF"));
    files.push(("gpt_main0.bin".into(), b"g"));
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(a, b)| (a.as_str(), *b)).collect();
    write_tree(dir.path(), &refs);
    let d = discover(&DirPackage::open(dir.path()).unwrap()).unwrap();
    assert_eq!(d.kind, LayoutKind::EmmcUfs);
    assert_eq!(d.sets.len(), 1);
    let parts = &d.sets[0].parts;
    assert_eq!(parts.len(), 4);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.lun, Some(i as u32));
        assert_eq!(p.rawprogram, format!("rawprogram{i}.xml"));
        assert_eq!(p.patch, Some(format!("patch{i}.xml")));
    }
    assert_eq!(d.sets[0].files().len(), 8);
    assert_eq!(chosen_path(&d), "prog_emmc_firehose_8916.mbn");
    assert!(d
        .programmer
        .reason()
        .contains("also seen: prog_firehose_ddr.elf"));
    assert_eq!(d.programmers.len(), 2);
}

#[test]
fn several_programmers_on_the_best_pattern_need_the_person() {
    let mut p = MemPackage::default();
    for f in [
        "update/firehose/prog_nand_firehose_9x07.mbn",
        "update/firehose/prog_nand_firehose_9x06.mbn",
        "update/firehose/prog_firehose_sdx24.mbn",
        "update/firehose/rawprogram_nand_p2K_b128K_update.xml",
    ] {
        p.files.insert(f.into(), b"x".to_vec());
    }
    let d = discover(&p).unwrap();
    match &d.programmer {
        ProgrammerChoice::Ambiguous { pattern, paths, .. } => {
            assert_eq!(pattern, "prog_nand_firehose_*.mbn");
            assert_eq!(
                paths,
                &[
                    "update/firehose/prog_nand_firehose_9x06.mbn",
                    "update/firehose/prog_nand_firehose_9x07.mbn"
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(d.programmer.path().is_none());
}

#[test]
fn the_real_eg25g_files() {
    let pkg =
        DirPackage::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/realpkg/eg25g"))
            .unwrap();
    let d = discover(&pkg).unwrap();
    assert_eq!(d.kind, LayoutKind::QuectelFirehose);
    assert_eq!(
        d.partition_nand_xml.as_deref(),
        Some("update/partition_nand.xml")
    );
    let set = d.only_set().unwrap();
    assert_eq!(set.id, "rawprogram_nand_p2K_b128K_update");
    assert_eq!(
        set.parts[0].patch.as_deref(),
        Some("update/firehose/patch_p2K_b128K.xml")
    );
    // The programmer binary is not in the repository.
    assert!(matches!(d.programmer, ProgrammerChoice::NotFound { .. }));
    assert!(d
        .revision_hints
        .iter()
        .any(|h| h.text == "MDM9607.LE.1.0" && h.source == "contents.xml product_name"));
    let r = check_md5(&pkg, d.md5_txt.as_deref().unwrap()).unwrap();
    assert_eq!(r.ok, 4);
    assert!(r
        .files
        .iter()
        .filter(|f| f.path.ends_with(".xml"))
        .all(|f| f.status == Md5Status::Ok));
}

#[test]
fn a_symlink_leaving_the_folder_is_not_a_programmer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("pkg");
    write_tree(
        &root,
        &[(
            "update/firehose/rawprogram_nand_p2K_b128K_update.xml",
            RAW_NAND,
        )],
    );
    std::fs::write(dir.path().join("outside.mbn"), b"ELF").unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("outside.mbn"),
        root.join("update/firehose/prog_nand_firehose_9x07.mbn"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path(), root.join("update/loop")).unwrap();
    let pkg = DirPackage::open(&root).unwrap();
    let d = discover(&pkg).unwrap();
    assert!(d.programmers.is_empty(), "{:?}", d.programmers);
    let e = pkg
        .open("update/firehose/prog_nand_firehose_9x07.mbn", 0)
        .err()
        .unwrap();
    assert!(e.what.contains("outside the package folder"), "{e}");
}

#[test]
fn no_package_several_packages_and_no_instructions() {
    let mut p = MemPackage::default();
    p.files.insert("notes.pdf".into(), vec![]);
    let e = discover(&p).unwrap_err();
    assert!(e.what.contains("no firmware package found"), "{e}");
    p.files.insert("A/md5.txt".into(), vec![]);
    p.files.insert("B/rawprogram0.xml".into(), vec![]);
    let e = discover(&p).unwrap_err();
    assert!(e.what.contains("several packages: A, B"), "{e}");
    let mut p = MemPackage::default();
    p.files.insert("PKG/md5.txt".into(), vec![]);
    p.files.insert("PKG/update/sbl1.mbn".into(), vec![]);
    let e = discover(&p).unwrap_err();
    assert!(e.what.contains("no flashing instructions"), "{e}");
    // A deeper package-like folder is noted, not used; __MACOSX is ignored.
    let mut p = MemPackage::default();
    p.files.insert("rawprogram0.xml".into(), vec![]);
    p.files.insert("old/rawprogram0.xml".into(), vec![]);
    p.files.insert("__MACOSX/rawprogram1.xml".into(), vec![]);
    let d = discover(&p).unwrap();
    assert_eq!(d.root, "");
    assert!(
        d.notes.iter().any(|n| n.starts_with("old ")),
        "{:?}",
        d.notes
    );
    assert_eq!(d.sets[0].parts.len(), 1);
    // XMLs both in update/firehose and in the root: update/firehose wins, said so.
    let mut p = MemPackage::default();
    p.files.insert("rawprogram0.xml".into(), vec![]);
    p.files.insert(
        "update/firehose/rawprogram_nand_p2K_b128K_update.xml".into(),
        vec![],
    );
    let d = discover(&p).unwrap();
    assert_eq!(d.kind, LayoutKind::QuectelFirehose);
    assert!(
        d.notes.iter().any(|n| n.contains("are not used")),
        "{:?}",
        d.notes
    );
}

#[test]
fn name_helpers() {
    assert!(glob_match(
        "prog_nand_firehose_*.mbn",
        "PROG_NAND_FIREHOSE_9X07.MBN"
    ));
    assert!(!glob_match(
        "prog_nand_firehose_*.mbn",
        "prog_nand_firehose_9x07.elf"
    ));
    assert!(glob_match("firehose-prog*.mbn", "firehose-prog.mbn"));
    assert!(glob_match("a*b*c", "aXbYc"));
    assert!(!glob_match("a*b*c", "ac"));
    assert!(!glob_match("ab*ba", "aba"));
    let x = classify_xml("rawprogram0_secboot.xml").unwrap();
    assert_eq!((x.key.as_str(), x.lun), ("rawprogram{N}_secboot", Some(0)));
    let x = classify_xml("rawprogram_unsparse4.xml").unwrap();
    assert_eq!((x.key.as_str(), x.lun), ("rawprogram_unsparse{N}", Some(4)));
    let x = classify_xml("firehose-rawprogram.xml").unwrap();
    assert_eq!((x.role, x.lun), (XmlRole::Raw, None));
    assert!(classify_xml("rawprogramX.xml").is_none());
    assert!(classify_xml("patches.xml").is_none());
    assert!(classify_xml("rawprogram0.bin").is_none());
    let x = classify_xml("rawprogram99999999999999999999.xml").unwrap();
    assert_eq!(x.lun, None);
    assert_eq!(
        revision_candidates("quectel-EG25GGBR07A08M2G_30.006.30.006 (1)"),
        ["EG25GGBR07A08M2G_30.006.30.006"]
    );
    assert_eq!(
        revision_candidates("RM500QGLAAR01A01M4G_BETA_20200428F."),
        ["RM500QGLAAR01A01M4G_BETA_20200428F"]
    );
    assert!(revision_candidates("firmware_new").is_empty());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn path() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            Just("update".to_string()),
            Just("firehose".to_string()),
            Just("md5.txt".to_string()),
            Just("contents.xml".to_string()),
            Just("partition_nand.xml".to_string()),
            "(rawprogram|patch|prog_nand_firehose_|prog_)[0-9a-zA-Z_]{0,12}(\\.xml|\\.mbn|\\.elf)",
            "[A-Za-z0-9_.]{1,10}",
        ];
        proptest::collection::vec(part, 1..5).prop_map(|v| v.join("/"))
    }

    proptest! {
        #[test]
        fn discovery_never_panics_and_is_consistent(paths in proptest::collection::vec(path(), 0..20)) {
            let mut p = MemPackage::default();
            for x in paths {
                p.files.insert(x, b"<contents><product_name>R01A02</product_name></contents>".to_vec());
            }
            if let Ok(d) = discover(&p) {
                prop_assert_eq!(d.needs_choice, d.sets.len() > 1);
                prop_assert_eq!(d.plannable, !d.sets.is_empty());
                let mut ids: Vec<&String> = d.sets.iter().map(|s| &s.id).collect();
                let n = ids.len();
                ids.dedup();
                prop_assert_eq!(ids.len(), n, "set ids are unique and sorted");
                for s in &d.sets {
                    for f in s.files() {
                        prop_assert!(p.files.contains_key(f));
                    }
                }
                if let Some(path) = d.programmer.path() {
                    prop_assert!(p.files.contains_key(path));
                }
            }
        }

        #[test]
        fn name_helpers_never_panic(name in "\\PC{0,40}", pat in "[a-z*_.]{0,12}") {
            let _ = classify_xml(&name);
            let _ = glob_match(&pat, &name);
            let _ = revision_candidates(&name);
            let _ = contents_hints(name.as_bytes());
        }
    }
}
