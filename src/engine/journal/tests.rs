use std::path::Path;

use proptest::prelude::*;

use super::*;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A two-program eMMC plan in `dir`.
fn plan_in(dir: &Path, a: &[u8]) -> FlashPlan {
    write(dir, "a.img", a);
    write(dir, "b.img", &[7u8; 3000]);
    let xml = write(
        dir,
        "rawprogram0.xml",
        br#"<data>
  <program SECTOR_SIZE_IN_BYTES="512" filename="a.img" label="a" num_partition_sectors="64" physical_partition_number="0" start_sector="34"/>
  <program SECTOR_SIZE_IN_BYTES="512" filename="b.img" label="b" num_partition_sectors="64" physical_partition_number="0" start_sector="98"/>
</data>"#,
    );
    FlashPlan::from_xml(&xml, None, None).unwrap()
}

fn unit() -> UnitKey {
    UnitKey::from_serial(0x1234_abcd)
}

#[test]
fn unit_keys_come_from_the_serial_or_hwid_and_pk_hash() {
    let mut info = DeviceInfo {
        serial: Some(0xdead_beef),
        ..DeviceInfo::default()
    };
    assert_eq!(
        UnitKey::from_device_info(&info).unwrap().as_str(),
        "sn-0xdeadbeef"
    );
    info.serial = None;
    assert_eq!(UnitKey::from_device_info(&info), None);
    info.hw_id = Some(crate::protocol::sahara::info::HwId {
        raw: 1,
        hex: "000480E100000000".into(),
        msm_id: 0,
        msm_id_hex: String::new(),
        oem_id: 0,
        model_id: 0,
    });
    info.pk_hash = Some("AB".repeat(48));
    assert_eq!(
        UnitKey::from_device_info(&info).unwrap().as_str(),
        "hw-000480e100000000-abababababababab"
    );
    assert!(UnitKey::parse("../etc/passwd").is_none());
    assert!(UnitKey::parse("sn-0x1/..").is_none());
    assert!(UnitKey::parse("sn-0x0000abcd").is_some());
    assert_eq!(
        UnitKey::from_serial(0xdead_beef).serial(),
        Some(0xdead_beef)
    );
    assert_eq!(UnitKey::parse("sn-0xabcd").unwrap().serial(), None);
    assert_eq!(
        UnitKey::parse("hw-000480e100000000-ab").unwrap().serial(),
        None
    );
}

#[test]
fn a_journal_records_steps_and_continues_after_reopening() {
    let d = tempfile::tempdir().unwrap();
    let plan = plan_in(&d.path().join("pkg"), &[1u8; 5000]);
    let id = PackageIdentity::of_plan(&plan).unwrap();
    assert_eq!(id.files.len(), 2);
    let store = JournalStore::at(d.path().join("journals"));
    let (mut j, opening) = store.open(&unit(), "pkg", &plan, &id, false).unwrap();
    assert_eq!(
        opening,
        Opening::New {
            replaced_finished: false,
            fresh: false
        }
    );
    j.append(Record::Attempt { n: 1, unix_ms: 1 }).unwrap();
    j.append(Record::Started {
        step: 0,
        unix_ms: 2,
    })
    .unwrap();
    j.append(Record::StepDone {
        step: 0,
        bytes: 5120,
        sha256: Some("00".repeat(32)),
        unix_ms: 3,
    })
    .unwrap();
    j.append(Record::Started {
        step: 1,
        unix_ms: 4,
    })
    .unwrap();
    j.append(Record::Chunk {
        step: 1,
        sectors_done: 2,
        unix_ms: 5,
    })
    .unwrap();
    drop(j);
    // A torn last line (power lost mid-append) is ignored and cut off before the next append.
    let path = store.path_for(&unit());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(br#"{"rec":"step_done","step":1,"by"#).unwrap();
    drop(f);
    let (mut j, opening) = store.open(&unit(), "pkg", &plan, &id, false).unwrap();
    assert_eq!(
        opening,
        Opening::Resume {
            steps_done: 1,
            steps_total: 2,
            attempts: 1,
            ignored_tail: true
        }
    );
    assert_eq!(j.state().chunks.get(&1), Some(&2));
    assert!(j.state().started.contains(&1));
    j.append(Record::Attempt { n: 2, unix_ms: 6 }).unwrap();
    let back = parse(&std::fs::read(&path).unwrap()).unwrap();
    assert!(!back.ignored_tail, "the torn line was cut off");
    assert_eq!(back.attempts, 2);
    assert_eq!(back.chunks.get(&1), Some(&2));
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].steps_done, list[0].steps_total), (1, 2));
    assert_eq!(list[0].unit, unit());
    // Finished: the next flash of the same package starts anew.
    j.append(Record::StepDone {
        step: 1,
        bytes: 3072,
        sha256: None,
        unix_ms: 7,
    })
    .unwrap();
    j.append(Record::Finished { unix_ms: 8 }).unwrap();
    assert!(j.state().chunks.is_empty());
    let (j, opening) = store.open(&unit(), "pkg", &plan, &id, false).unwrap();
    assert_eq!(
        opening,
        Opening::New {
            replaced_finished: true,
            fresh: false
        }
    );
    assert!(j.state().done.is_empty());
}

#[test]
fn a_journal_of_another_package_or_fresh_starts_over() {
    let d = tempfile::tempdir().unwrap();
    let plan = plan_in(&d.path().join("pkg"), &[1u8; 5000]);
    let id = PackageIdentity::of_plan(&plan).unwrap();
    let store = JournalStore::at(d.path().join("journals"));
    let (mut j, _) = store.open(&unit(), "pkg", &plan, &id, false).unwrap();
    j.append(Record::StepDone {
        step: 0,
        bytes: 1,
        sha256: None,
        unix_ms: 1,
    })
    .unwrap();
    drop(j);
    // The same layout with one changed image byte.
    let mut changed = vec![1u8; 5000];
    changed[4999] = 2;
    let plan2 = plan_in(&d.path().join("pkg"), &changed);
    let id2 = PackageIdentity::of_plan(&plan2).unwrap();
    assert!(id.differs(&id2).unwrap().contains("a.img"));
    let (j, opening) = store.open(&unit(), "pkg", &plan2, &id2, false).unwrap();
    match opening {
        Opening::Restarted { why } => assert!(why.contains("changed files: a.img"), "{why}"),
        o => panic!("{o:?}"),
    }
    assert!(j.state().done.is_empty());
    drop(j);
    // --fresh ignores a matching journal.
    let (mut j, _) = store.open(&unit(), "pkg", &plan2, &id2, false).unwrap();
    j.append(Record::StepDone {
        step: 0,
        bytes: 1,
        sha256: None,
        unix_ms: 1,
    })
    .unwrap();
    drop(j);
    let (j, opening) = store.open(&unit(), "pkg", &plan2, &id2, true).unwrap();
    assert_eq!(
        opening,
        Opening::New {
            replaced_finished: false,
            fresh: true
        }
    );
    assert!(j.state().done.is_empty());
    // Garbage in place of a journal: starts over, never a crash.
    std::fs::write(store.path_for(&unit()), b"\x00\xffnot json\n").unwrap();
    let (_, opening) = store.open(&unit(), "pkg", &plan2, &id2, false).unwrap();
    assert!(matches!(opening, Opening::Restarted { .. }), "{opening:?}");
}

/// A valid journal's bytes: plan, then `n` step records.
fn sample(n: usize) -> Vec<u8> {
    let plan = PlanRecord {
        version: JOURNAL_VERSION,
        unit: unit(),
        package: "p".into(),
        storage: StorageKind::Emmc,
        identity: PackageIdentity {
            files: BTreeMap::new(),
            steps_sha256: "x".into(),
            steps: 8,
        },
        step_names: (0..8).map(|i| format!("s{i}")).collect(),
        bytes_total: 100,
        created_unix_ms: 0,
    };
    let mut out = encode(&Record::Plan(plan)).unwrap();
    for i in 0..n {
        let r = match i % 3 {
            0 => Record::Started {
                step: i / 3,
                unix_ms: i as u64,
            },
            1 => Record::Chunk {
                step: i / 3,
                sectors_done: 4,
                unix_ms: i as u64,
            },
            _ => Record::StepDone {
                step: i / 3,
                bytes: 10,
                sha256: Some("ab".repeat(32)),
                unix_ms: i as u64,
            },
        };
        out.extend(encode(&r).unwrap());
    }
    out
}

proptest! {
    #[test]
    fn reading_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn a_cut_journal_reads_as_a_prefix_of_the_whole(n in 0usize..24, cut in 0usize..4000) {
        let whole = sample(n);
        let full = parse(&whole).unwrap();
        let cut = cut.min(whole.len());
        match parse(&whole[..cut]) {
            Ok(s) => {
                prop_assert!(s.done.len() <= full.done.len());
                prop_assert!(s.done.iter().all(|(k, v)| full.done.get(k) == Some(v)));
                prop_assert!(s.valid_len as usize <= cut);
                prop_assert_eq!(s.ignored_tail, cut < whole.len() && whole[cut - 1] != b'\n');
            }
            // Only when not even the plan line is whole.
            Err(e) => {
                prop_assert_eq!(e, ParseError::Empty);
                prop_assert!(!whole[..cut].contains(&b'\n'));
            }
        }
    }

    #[test]
    fn a_damaged_line_ends_the_reading_there(n in 1usize..24, at in 0usize..4000, byte in any::<u8>()) {
        let mut whole = sample(n);
        let first_nl = whole.iter().position(|b| *b == b'\n').unwrap();
        let at = (first_nl + 1 + at % (whole.len() - first_nl - 1)).min(whole.len() - 1);
        whole[at] = byte;
        // A changed byte may still be a well-formed record (another number); what is read
        // never names a step outside the plan, and reading stops at a line that is not whole.
        let s = parse(&whole).unwrap();
        prop_assert!(s.done.keys().chain(s.started.iter()).all(|k| *k < 8));
        prop_assert!(s.valid_len as usize <= whole.len());
    }
}
