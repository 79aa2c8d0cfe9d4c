//! The real `qrescue` binary flashing a package emitted by `qrescue sim --emit-package` into
//! `qrescue sim --pty`, through real ptys: human and `--json` output, read-back through
//! `qrescue read`, the emulator's own report, `storage-info`, and the Firehose faults with their
//! exit codes.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    code, describe, json_lines, last_json, programs, qrescue, s, stderr, stdout, tempdir, Program,
    Sim,
};
use serde_json::Value;

/// Bound for one flash of a 2 MiB package or one read-back.
const BOUND: Duration = Duration::from_secs(30);

/// A package written by `qrescue sim --emit-package`.
struct Package {
    rawprogram: PathBuf,
    patch: PathBuf,
}

fn emit_package(dir: &Path, extra: &[&str]) -> Package {
    let mut args = vec![
        "--json",
        "sim",
        "--profile",
        "ec25",
        "--package-mib",
        "2",
        "--emit-package",
        s(dir),
    ];
    args.extend_from_slice(extra);
    let out = qrescue(&args, BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = last_json(&out);
    assert_eq!(v["event"], "package_written", "{v}");
    let first = |key: &str| PathBuf::from(v["package"][key][0].as_str().unwrap());
    Package {
        rawprogram: first("rawprogram"),
        patch: first("patch"),
    }
}

/// Read back, through `qrescue read`, the first image-length bytes of each entry (nearby
/// partitions share one read) and return them in the order of `entries`.
fn read_back(port: &str, entries: &[Program], storage: &str, dir: &Path) -> Vec<Vec<u8>> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| entries[i].start.unwrap());
    let sectors = |p: &Program| {
        let len = std::fs::metadata(&p.file).unwrap().len();
        len.div_ceil(p.sector_size)
    };
    // Groups of (first sector, end sector, members).
    let mut groups: Vec<(u64, u64, Vec<usize>)> = Vec::new();
    for i in order {
        let p = &entries[i];
        let (start, end) = (p.start.unwrap(), p.start.unwrap() + sectors(p));
        match groups.last_mut() {
            Some(g) if (start.saturating_sub(g.1)) * p.sector_size <= 16 << 20 => {
                g.1 = g.1.max(end);
                g.2.push(i);
            }
            _ => groups.push((start, end, vec![i])),
        }
    }
    let mut result = vec![Vec::new(); entries.len()];
    for (n, (start, end, members)) in groups.iter().enumerate() {
        let file = dir.join(format!("readback-{n}.bin"));
        let (start_s, count_s) = (start.to_string(), (end - start).to_string());
        let out = qrescue(
            &[
                "read",
                "--port",
                port,
                "--storage",
                storage,
                "--start",
                &start_s,
                "--count",
                &count_s,
                "--out",
                s(&file),
            ],
            BOUND,
        );
        assert_eq!(code(&out), 0, "{}", describe(&out));
        assert!(stdout(&out).contains("Read "), "{}", describe(&out));
        let data = std::fs::read(&file).unwrap();
        let ss = entries[members[0]].sector_size;
        assert_eq!(data.len() as u64, (end - start) * ss);
        for &i in members {
            let p = &entries[i];
            let len = std::fs::metadata(&p.file).unwrap().len() as usize;
            let at = ((p.start.unwrap() - start) * ss) as usize;
            result[i] = data[at..at + len].to_vec();
        }
        std::fs::remove_file(&file).unwrap();
    }
    result
}

/// Stop the sim (SIGTERM) and read its `--report` file.
fn report(sim: &mut Sim, path: &Path) -> Value {
    let status = sim.stop().expect("the sim exits");
    // Stopped by a signal: exit code 130 ("interrupted"), after writing the report.
    assert_eq!(status.code(), Some(130), "sim exit status {status:?}");
    serde_json::from_slice(&std::fs::read(path).expect("the sim wrote its report")).unwrap()
}

fn commands<'a>(report: &'a Value, tag: &str) -> Vec<&'a Value> {
    report["commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["tag"] == tag)
        .collect()
}

/// Every program entry of the package was sent once and ACKed.
fn assert_programmed(report: &Value, entries: &[Program]) {
    let programmed: BTreeSet<String> = commands(report, "program")
        .iter()
        .inspect(|c| assert_eq!(c["outcome"], "ACK", "{c}"))
        .map(|c| c["attrs"]["label"].as_str().unwrap().to_string())
        .collect();
    let wanted: BTreeSet<String> = entries.iter().map(|p| p.label.clone()).collect();
    assert_eq!(programmed, wanted);
    assert_eq!(commands(report, "program").len(), entries.len());
}

#[test]
fn flashing_an_ec25_nand_package_writes_every_image() {
    let dir = tempdir();
    let pkg = emit_package(&dir.path().join("pkg"), &[]);
    let fh = dir.path().join("pkg/update/firehose");
    assert_eq!(
        pkg.rawprogram,
        fh.join("rawprogram_nand_p4K_b256K_update.xml")
    );
    assert_eq!(pkg.patch, fh.join("patch_p4K_b256K.xml"));
    let report_file = dir.path().join("report.json");
    let mut sim = Sim::start(&["--profile", "ec25", "--report", s(&report_file)]);

    let out = qrescue(
        &[
            "flash",
            "--port",
            sim.port(),
            "--rawprogram",
            s(&pkg.rawprogram),
            "--patch",
            s(&pkg.patch),
            "--no-reset",
        ],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Programmer: ") && text.contains("prog_nand_firehose_mdm9207.mbn"),
        "the programmer next to the XML is used: {text}"
    );
    let plan = text.lines().find(|l| l.starts_with("Plan: ")).unwrap();
    assert!(plan.starts_with("Plan: 30 steps"), "{text}");
    let entries = programs(&pkg.rawprogram);
    assert_eq!(entries.len(), 14);
    for p in &entries {
        let line = format!("program {} (", p.label);
        assert!(
            text.lines()
                .any(|l| l.contains(&line) && l.starts_with('[')),
            "a line for {}: {text}",
            p.label
        );
        assert!(text.contains(&format!("erase {}", p.label)), "{text}");
    }
    assert!(text.contains("Write finished"), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert!(sim
        .wait_event("programmer_started", Duration::from_secs(5))
        .is_some());

    // The programmer is still running (--no-reset): read every image back.
    let back = read_back(sim.port(), &entries, "nand", dir.path());
    for (p, data) in entries.iter().zip(&back) {
        assert!(
            *data == std::fs::read(&p.file).unwrap(),
            "{} reads back as its image {}",
            p.label,
            p.file.display()
        );
    }

    let rep = report(&mut sim, &report_file);
    assert_programmed(&rep, &entries);
    assert_eq!(commands(&rep, "erase").len(), entries.len());
    assert!(
        commands(&rep, "power").is_empty(),
        "--no-reset sends no power command"
    );
}

#[test]
fn flash_json_prints_one_engine_event_per_line_in_the_documented_order() {
    let dir = tempdir();
    let pkg = emit_package(&dir.path().join("pkg"), &[]);
    let sim = Sim::start(&["--profile", "ec25"]);
    let out = qrescue(
        &[
            "--json",
            "flash",
            "--port",
            sim.port(),
            "--rawprogram",
            s(&pkg.rawprogram),
            "--patch",
            s(&pkg.patch),
        ],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let events = json_lines(&out);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds[0], "plan", "{kinds:?}");
    // The engine's events end with done; the command's summary follows it.
    let done = kinds.iter().position(|k| *k == "done").expect("done");
    assert_eq!(&kinds[done + 1..], ["flashed"], "{kinds:?}");
    assert_eq!(events[done]["ok"], true);
    assert_eq!(kinds.iter().filter(|k| **k == "plan").count(), 1);
    assert!(!kinds.contains(&"step_failed"), "{kinds:?}");

    let steps = events[0]["steps"].as_array().unwrap();
    // programmer, configure, 14 erases, 14 programs, reset.
    assert_eq!(steps.len(), 31, "{}", events[0]);
    assert_eq!(steps.last().unwrap()["kind"], "reset");
    // Each step starts once, in plan order, and finishes before the next starts.
    let mut current: Option<u64> = None;
    let mut started = Vec::new();
    for e in &events[1..done] {
        match e["event"].as_str().unwrap() {
            "step_started" => {
                assert_eq!(current, None, "a step starts while another runs: {e}");
                let i = e["index"].as_u64().unwrap();
                assert_eq!(e["name"], steps[i as usize]["name"]);
                current = Some(i);
                started.push(i);
            }
            "progress" => {
                assert_eq!(
                    e["index"].as_u64(),
                    current,
                    "progress outside its step: {e}"
                );
                assert!(e["done"].as_u64() <= e["total"].as_u64(), "{e}");
            }
            "step_finished" => {
                assert_eq!(e["index"].as_u64(), current, "{e}");
                current = None;
            }
            "log" => {}
            other => panic!("unexpected event {other} inside the run: {e}"),
        }
    }
    assert_eq!(started, (0..31).collect::<Vec<u64>>());
    let programmed: u64 = steps
        .iter()
        .filter(|st| st["kind"] == "program")
        .map(|st| st["bytes"].as_u64().unwrap())
        .sum();
    let images: u64 = programs(&pkg.rawprogram)
        .iter()
        .map(|p| std::fs::metadata(&p.file).unwrap().len())
        .sum();
    assert_eq!(programmed, images, "the plan writes exactly the images");
    assert_eq!(events[done + 1]["report"]["programmer_uploaded"], true);

    // Without --no-reset the modem is reset at the end.
    let exit = sim
        .wait_event("programmer_exit", Duration::from_secs(10))
        .expect("the programmer exits");
    assert_eq!(exit["reason"], "reset", "{exit}");
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[test]
fn flashing_an_emmc_package_writes_images_patches_the_gpt_and_storage_info_reports_emmc() {
    let dir = tempdir();
    let pkg = emit_package(&dir.path().join("pkg"), &["--storage", "emmc"]);
    assert_eq!(pkg.rawprogram, dir.path().join("pkg/rawprogram0.xml"));
    assert_eq!(pkg.patch, dir.path().join("pkg/patch0.xml"));
    let report_file = dir.path().join("report.json");
    let mut sim = Sim::start(&[
        "--profile",
        "ec25",
        "--storage",
        "emmc",
        "--report",
        s(&report_file),
    ]);
    assert_eq!(sim.ready["storage"], "emmc-msm8916");

    let out = qrescue(
        &[
            "flash",
            "--port",
            sim.port(),
            "--rawprogram",
            s(&pkg.rawprogram),
            "--patch",
            s(&pkg.patch),
            "--no-reset",
        ],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Configured emmc"), "{text}");
    assert!(text.contains("] program modem ("), "{text}");
    assert!(text.contains("] patch Update Primary Header"), "{text}");
    assert!(text.contains("Write finished"), "{text}");

    let out = qrescue(
        &["storage-info", "--storage", "emmc", "--port", sim.port()],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let info = stdout(&out);
    assert!(info.contains("type          eMMC"), "{info}");
    assert!(info.contains("blocks of 512 B"), "{info}");
    assert!(info.contains("physical"), "{info}");

    let out = qrescue(
        &[
            "--json",
            "storage-info",
            "--storage",
            "emmc",
            "--port",
            sim.port(),
        ],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = last_json(&out);
    assert_eq!(v["event"], "storage_info");
    assert!(v["info"]["total_blocks"].as_u64().unwrap() > 0, "{v}");

    let entries = programs(&pkg.rawprogram);
    // GPT images are patched on the device (CRCs); all other images must read back unchanged.
    let (gpt, images): (Vec<Program>, Vec<Program>) = entries
        .iter()
        .cloned()
        .partition(|p| p.label.ends_with("GPT"));
    assert_eq!(gpt.len(), 2);
    let back = read_back(sim.port(), &images, "emmc", dir.path());
    for (p, data) in images.iter().zip(&back) {
        assert!(
            *data == std::fs::read(&p.file).unwrap(),
            "{} reads back as its image",
            p.label
        );
    }
    // The primary GPT on the device is valid: signature, header CRC, partition-array CRC.
    let primary: Vec<Program> = gpt.into_iter().filter(|p| p.start == Some(0)).collect();
    let disk = &read_back(sim.port(), &primary, "emmc", dir.path())[0];
    let hdr = &disk[512..1024];
    assert_eq!(&hdr[..8], b"EFI PART");
    let size = le32(hdr, 12) as usize;
    let mut zeroed = hdr[..size].to_vec();
    zeroed[16..20].fill(0);
    assert_eq!(le32(hdr, 16), crc32(&zeroed), "header CRC");
    let array = (le32(hdr, 80) * le32(hdr, 84)) as usize;
    assert_eq!(le32(hdr, 88), crc32(&disk[1024..1024 + array]), "array CRC");

    let rep = report(&mut sim, &report_file);
    assert_programmed(&rep, &entries);
    let patches = commands(&rep, "patch");
    assert_eq!(patches.len(), 6, "every DISK patch went to the device");
    assert!(patches.iter().all(|c| c["outcome"] == "ACK"));
}

/// Flash the standard NAND package into a sim with `faults`; returns the `--json` run.
fn flash_with_fault(fault: &str) -> (std::process::Output, Sim) {
    let dir = tempdir();
    let pkg = emit_package(&dir.path().join("pkg"), &[]);
    let sim = Sim::start(&["--profile", "ec25", "--fault", fault]);
    let out = qrescue(
        &[
            "--json",
            "flash",
            "--port",
            sim.port(),
            "--rawprogram",
            s(&pkg.rawprogram),
            "--patch",
            s(&pkg.patch),
        ],
        BOUND,
    );
    (out, sim)
}

fn error_object(out: &std::process::Output) -> Value {
    let v = last_json(out);
    assert!(v["error"].is_object(), "{}", describe(out));
    v["error"].clone()
}

#[test]
fn a_nak_from_the_programmer_exits_1_with_the_devices_explanation() {
    let (out, _sim) = flash_with_fault("nak:5");
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let e = error_object(&out);
    assert_eq!(e["kind"], "failure");
    assert_eq!(e["exit_code"], 1);
    let events = json_lines(&out);
    let failed = events
        .iter()
        .find(|e| e["event"] == "step_failed")
        .expect("a step_failed event");
    assert!(failed["why"].as_str().unwrap().contains("NAK"), "{failed}");
    let done = events.iter().find(|e| e["event"] == "done").unwrap();
    assert_eq!(done["ok"], false);
    let err = stderr(&out);
    assert!(err.contains("refused"), "{err}");
    assert!(
        err.contains("ERROR: Failed to handle"),
        "the programmer's own words are quoted: {err}"
    );
    assert!(err.contains("safe to run the flash again"), "{err}");
}

#[test]
fn a_link_dropped_during_raw_data_exits_6_device_lost() {
    let (out, sim) = flash_with_fault("drop-in-raw:100000");
    assert_eq!(code(&out), 6, "{}", describe(&out));
    let e = error_object(&out);
    assert_eq!(e["kind"], "device_lost");
    assert_eq!(e["exit_code"], 6);
    let err = stderr(&out);
    assert!(err.contains("dropped off the bus"), "{err}");
    assert!(err.contains("Don't unplug"), "{err}");
    let done = json_lines(&out)
        .into_iter()
        .find(|e| e["event"] == "done")
        .unwrap();
    assert_eq!(done["ok"], false);
    assert!(sim
        .wait_event("link_lost", Duration::from_secs(5))
        .is_some());
}

#[test]
fn a_package_with_a_missing_image_fails_before_anything_is_sent() {
    let dir = tempdir();
    let pkg = emit_package(&dir.path().join("pkg"), &[]);
    std::fs::remove_file(dir.path().join("pkg/update/tz.mbn")).unwrap();
    let report_file = dir.path().join("report.json");
    let mut sim = Sim::start(&["--profile", "ec25", "--report", s(&report_file)]);
    let out = qrescue(
        &[
            "flash",
            "--port",
            sim.port(),
            "--rawprogram",
            s(&pkg.rawprogram),
            "--patch",
            s(&pkg.patch),
        ],
        BOUND,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("tz.mbn"), "the missing file is named: {err}");
    assert!(err.contains("before sending anything"), "{err}");
    assert!(!stdout(&out).contains("Plan:"), "{}", describe(&out));

    // The boot ROM was never touched: its HELLO is still waiting for the next program.
    let out = qrescue(&["info", "--port", sim.port()], BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("Sahara v2"), "{}", describe(&out));
    assert!(!stdout(&out).contains("note:"), "{}", describe(&out));

    let rep = report(&mut sim, &report_file);
    assert_eq!(rep["sessions"], 0, "no programmer ran");
    assert!(commands(&rep, "program").is_empty());
    assert!(rep["commands"].as_array().unwrap().is_empty());
}

/// `qrescue sim --write-programmer` for the ec25 unit the sim serves by default.
fn write_programmer(dir: &Path) -> PathBuf {
    let p = dir.join("prog_firehose_ec25.mbn");
    let out = qrescue(
        &["sim", "--profile", "ec25", "--write-programmer", s(&p)],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    p
}

#[test]
fn a_second_flash_attaches_to_the_programmer_the_first_left_running() {
    let dir = tempdir();
    let pkg = emit_package(&dir.path().join("pkg"), &[]);
    let report_file = dir.path().join("report.json");
    let mut sim = Sim::start(&["--profile", "ec25", "--report", s(&report_file)]);
    let flash = |json: bool| {
        let mut args = vec![
            "flash",
            "--port",
            sim.port(),
            "--rawprogram",
            s(&pkg.rawprogram),
            "--no-reset",
        ];
        if json {
            args.insert(0, "--json");
        }
        let t0 = std::time::Instant::now();
        let out = qrescue(&args, BOUND);
        (out, t0.elapsed())
    };
    let (first, _) = flash(false);
    assert_eq!(code(&first), 0, "{}", describe(&first));
    assert!(
        !stdout(&first).contains("already running"),
        "{}",
        describe(&first)
    );

    // The programmer found next to the XML is not uploaded again: the silent programmer that
    // the first run left behind answers the probe and the same plan runs on it.
    let (second, took) = flash(true);
    assert_eq!(code(&second), 0, "{}", describe(&second));
    let events = json_lines(&second);
    assert_eq!(
        events[0]["steps"][0]["kind"], "sahara-upload",
        "{}",
        events[0]
    );
    let finished = events
        .iter()
        .find(|e| e["event"] == "step_finished" && e["index"] == 0)
        .expect("the upload step finishes");
    assert_eq!(finished["bytes"], 0, "nothing uploaded: {finished}");
    assert!(
        events.iter().any(|e| e["event"] == "log"
            && e["message"]
                .as_str()
                .unwrap()
                .contains("programmer was already running")),
        "{}",
        describe(&second)
    );
    let last = events.last().unwrap();
    assert_eq!(last["event"], "flashed");
    assert_eq!(last["report"]["programmer_uploaded"], false, "{last}");
    assert!(took < Duration::from_secs(15), "second flash took {took:?}");

    let rep = report(&mut sim, &report_file);
    assert_eq!(rep["sessions"], 1, "one programmer served both flashes");
    let entries = programs(&pkg.rawprogram);
    assert_eq!(commands(&rep, "program").len(), 2 * entries.len());
    assert_eq!(
        commands(&rep, "nop").len(),
        1,
        "one probe, by the second run"
    );
}

#[test]
fn read_with_programmer_attaches_to_a_programmer_that_is_already_running() {
    let dir = tempdir();
    let prog = write_programmer(dir.path());
    let report_file = dir.path().join("report.json");
    let mut sim = Sim::start(&["--profile", "ec25", "--report", s(&report_file)]);
    let out = qrescue(&["sahara-upload", "--port", sim.port(), s(&prog)], BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    // The first read may still find the welcome logs queued; the second finds a silent
    // programmer (the case that used to wait for HELLO and fail with exit 3).
    for n in 0..2 {
        let file = dir.path().join(format!("x{n}.bin"));
        let t0 = std::time::Instant::now();
        let out = qrescue(
            &[
                "read",
                "--port",
                sim.port(),
                "--start",
                "0",
                "--count",
                "4",
                "--out",
                s(&file),
                "--programmer",
                s(&prog),
            ],
            BOUND,
        );
        let took = t0.elapsed();
        assert_eq!(code(&out), 0, "read {n}: {}", describe(&out));
        assert!(
            stdout(&out).contains("already running; attached"),
            "{}",
            describe(&out)
        );
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 4 * 4096);
        assert!(took < Duration::from_secs(5), "read {n} took {took:?}");
    }
    let rep = report(&mut sim, &report_file);
    assert_eq!(rep["sessions"], 1, "the programmer was uploaded once");
    assert_eq!(commands(&rep, "read").len(), 2);
}

#[test]
fn read_label_reads_a_programmed_partition_and_an_unknown_label_lists_the_names() {
    let dir = tempdir();
    let pkg = emit_package(&dir.path().join("pkg"), &[]);
    let sim = Sim::start(&["--profile", "ec25"]);
    let out = qrescue(
        &[
            "flash",
            "--port",
            sim.port(),
            "--rawprogram",
            s(&pkg.rawprogram),
            "--patch",
            s(&pkg.patch),
            "--no-reset",
        ],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let entries = programs(&pkg.rawprogram);
    for label in ["boot", "MODEM"] {
        let entry = entries
            .iter()
            .find(|p| p.label.eq_ignore_ascii_case(label))
            .unwrap_or_else(|| panic!("the package programs {label}"));
        let file = dir.path().join(format!("{label}.bin"));
        let out = qrescue(
            &[
                "--json",
                "read",
                "--port",
                sim.port(),
                "--label",
                label,
                "--out",
                s(&file),
            ],
            BOUND,
        );
        assert_eq!(code(&out), 0, "{}", describe(&out));
        let v = last_json(&out);
        assert_eq!(v["event"], "read", "{v}");
        assert_eq!(v["label"], entry.label, "the table's spelling: {v}");
        assert_eq!(v["lun"], 0);
        assert_eq!(v["start_sector"].as_u64(), entry.start, "{v}");
        let sectors = v["sectors"].as_u64().unwrap();
        assert_eq!(
            v["last_sector"].as_u64(),
            Some(entry.start.unwrap() + sectors - 1)
        );
        let data = std::fs::read(&file).unwrap();
        assert_eq!(data.len() as u64, v["bytes"].as_u64().unwrap());
        assert_eq!(data.len() as u64, sectors * entry.sector_size);
        let image = std::fs::read(&entry.file).unwrap();
        assert!(data.len() > image.len(), "the whole partition was read");
        assert!(
            data[..image.len()] == image[..],
            "{label} reads back as {}",
            entry.file.display()
        );
    }

    // Human output names what was read.
    let file = dir.path().join("boot-again.bin");
    let out = qrescue(
        &[
            "read",
            "--port",
            sim.port(),
            "--label",
            "boot",
            "--out",
            s(&file),
        ],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Partition boot on LUN 0: sectors 9984.."),
        "{text}"
    );
    assert!(
        text.contains("Read ") && text.contains("from boot (LUN 0"),
        "{text}"
    );

    let missing = dir.path().join("nosuch.bin");
    let out = qrescue(
        &[
            "read",
            "--port",
            sim.port(),
            "--label",
            "nosuch",
            "--out",
            s(&missing),
        ],
        BOUND,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("No partition named 'nosuch'"), "{err}");
    for name in ["SBL", "modem", "system"] {
        assert!(err.contains(name), "{name} is listed: {err}");
    }
    assert!(!missing.exists(), "no file for a failed read");
    // Printed once, without colour codes (stderr is a pipe here).
    assert_eq!(err.matches("No partition named").count(), 1, "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}
