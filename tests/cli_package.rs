//! `qrescue package inspect` and `qrescue flash PACKAGE` (real binary): generated Quectel NAND
//! and UFS packages as folders and zips, the choice between `_update` and `_factory`, the
//! device-unique-data guard and an erase-all blocked before anything reaches `qrescue sim`, a
//! damaged image, the compatibility cases of USERS.md through `--modem-revision`, `--dry-run`,
//! a real flash into the emulator with read-back, and hostile packages.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{code, describe, json_lines, programs, qrescue, s, stderr, stdout, tempdir, Sim};
use serde_json::Value;

const BOUND: Duration = Duration::from_secs(30);

/// The EC25-E's EFS2 partition in 4 KiB pages (blocks 20..108 of 64 pages).
const EFS2_START: u64 = 1280;
const EFS2_PAGES: u64 = 5632;
const UPDATE_XML: &str = "update/firehose/rawprogram_nand_p4K_b256K_update.xml";

/// `qrescue sim --emit-package` for `profile` (extra args e.g. `--storage ufs`) into `dir`.
fn emit(dir: &Path, profile: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec![
        "--json",
        "sim",
        "--profile",
        profile,
        "--package-mib",
        "1",
        "--emit-package",
        s(dir),
    ];
    args.extend_from_slice(extra);
    let out = qrescue(&args, BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    dir.to_path_buf()
}

fn ec25(dir: &Path) -> PathBuf {
    emit(dir, "ec25", &[])
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

/// Add a `_factory` set beside `_update`: the same entries plus cefs.mbn programmed to EFS2.
fn add_factory(root: &Path) {
    let update = std::fs::read_to_string(root.join(UPDATE_XML)).unwrap();
    let extra = efs2_entry("erase", None) + &efs2_entry("program", Some("..\\cefs.mbn"));
    std::fs::write(
        root.join("update/firehose/rawprogram_nand_p4K_b256K_factory.xml"),
        update.replace("</data>", &format!("{extra}</data>")),
    )
    .unwrap();
    std::fs::write(root.join("update/cefs.mbn"), vec![0x5a; 16 << 10]).unwrap();
}

/// Zip every file under `root` into `zip`, below a top folder `top/`.
fn zip_folder(root: &Path, zip: &Path, top: &str) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(zip).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    for f in files {
        let rel = f.strip_prefix(root).unwrap().to_str().unwrap().to_string();
        w.start_file(format!("{top}/{rel}"), opts).unwrap();
        w.write_all(&std::fs::read(&f).unwrap()).unwrap();
    }
    w.finish().unwrap();
}

fn inspect(pkg: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["package", "inspect", s(pkg)];
    args.extend_from_slice(extra);
    qrescue(&args, BOUND)
}

fn inspect_json(pkg: &Path, extra: &[&str]) -> (std::process::Output, Value) {
    let mut args = vec!["--json", "package", "inspect", s(pkg)];
    args.extend_from_slice(extra);
    let out = qrescue(&args, BOUND);
    let first = json_lines(&out).into_iter().next().expect("a JSON report");
    (out, first)
}

fn plan_rows(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| {
            let t = l.trim_start();
            t.split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u32>().is_ok())
                && (t.contains(" erase ") || t.contains(" program ") || t.contains(" patch "))
        })
        .collect()
}

#[test]
fn inspect_a_generated_nand_package_folder_and_zip() {
    let dir = tempdir();
    let root = ec25(&dir.path().join("EC25EFAR06A08M4G_01.001.01.001"));
    let out = inspect(&root, &[]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Quectel Firehose package"), "{text}");
    assert!(
        text.contains("EC25EFAR06A08M4G_01.001.01.001 (from the folder name): EC25-EFA, R06A08"),
        "{text}"
    );
    assert!(text.contains("prog_nand_firehose_mdm9207.mbn"), "{text}");
    assert!(
        text.contains("md5.txt lists 18 files: 18 ok, 0 wrong, 0 missing"),
        "{text}"
    );
    assert!(text.contains("<- the plan uses this set"), "{text}");
    assert!(text.contains("nand, 28 steps"), "{text}");
    let rows = plan_rows(&text);
    assert_eq!(rows.len(), 28, "{text}");
    assert!(rows
        .iter()
        .any(|r| r.contains("program") && r.contains("sbl1.mbn")));
    for l in text
        .lines()
        .filter(|l| l.starts_with("step") || rows.contains(l))
    {
        assert!(
            l.chars().count() <= 80,
            "{} columns: {l}",
            l.chars().count()
        );
    }
    assert!(
        text.contains("left alone by this plan: EFS2, sys_rev, RAWDATA"),
        "{text}"
    );
    assert!(text.contains("Guard       allowed"), "{text}");
    assert!(text.contains("Compatible  not checked"), "{text}");
    assert!(text.contains("Verdict     flashable"), "{text}");
    assert!(stderr(&out).is_empty(), "{}", describe(&out));

    let (out, v) = inspect_json(&root, &[]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(json_lines(&out).len(), 1, "one JSON object");
    assert_eq!(v["event"], "package_inspect");
    assert_eq!(v["verdict"]["flashable"], true);
    assert_eq!(v["package"]["md5"]["mismatched"], 0);
    assert_eq!(
        v["package"]["summary"]["steps"].as_array().unwrap().len(),
        28
    );
    assert_eq!(v["package"]["guard"]["allowed"], true);

    // The same package zipped below its revision folder.
    let zip = dir.path().join("EC25EFAR06A08M4G_01.001.01.001.zip");
    zip_folder(&root, &zip, "EC25EFAR06A08M4G_01.001.01.001");
    let (out, z) = inspect_json(&zip, &[]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(z["verdict"]["flashable"], true, "{z}");
    assert_eq!(z["package"]["md5"]["ok"], 18);
    assert_eq!(
        z["package"]["summary"]["steps"].as_array().unwrap().len(),
        28
    );
    assert_eq!(
        z["package"]["revision"]["text"],
        "EC25EFAR06A08M4G_01.001.01.001"
    );
    let out = inspect(&zip, &[]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("zip "), "{}", describe(&out));
}

/// Stop the sim and check that nothing reached it: no programmer session (no Sahara upload)
/// and no Firehose command.
fn assert_untouched(mut sim: Sim, report: &Path) {
    // The boot ROM still waits with its HELLO: nothing was uploaded.
    let out = qrescue(&["info", "--port", sim.port()], BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("Sahara v2"), "{}", describe(&out));
    let status = sim.stop().expect("the sim exits");
    assert_eq!(status.code(), Some(130));
    let rep: Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(rep["sessions"], 0, "no programmer was uploaded: {rep}");
    assert!(
        rep["commands"].as_array().unwrap().is_empty(),
        "no Firehose command: {}",
        rep["commands"]
    );
}

#[test]
fn update_and_factory_need_a_choice_and_factory_is_blocked_before_the_first_byte() {
    let dir = tempdir();
    let root = ec25(&dir.path().join("pkg"));
    add_factory(&root);

    let out = inspect(&root, &[]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("holds 2 XML sets; choose one with --set"),
        "{err}"
    );
    assert!(err.contains("--set factory"), "{err}");
    assert!(err.contains("--set update"), "{err}");
    assert!(err.contains("overwrites device-unique data"), "{err}");

    let out = inspect(&root, &["--set", "update"]);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(
        stdout(&out).contains("not listed in md5.txt: update/cefs.mbn"),
        "{}",
        describe(&out)
    );

    let out = inspect(&root, &["--set", "factory"]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        plan_rows(&text)
            .iter()
            .any(|r| r.contains("EFS2") && r.contains("cefs.mbn") && r.ends_with("!*")),
        "{text}"
    );
    assert!(text.contains("Guard       BLOCKED"), "{text}");

    let report = dir.path().join("report.json");
    let sim = Sim::start(&["--profile", "ec25", "--report", s(&report)]);
    let out = qrescue(
        &["flash", s(&root), "--set", "factory", "--port", sim.port()],
        BOUND,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("stopped before sending anything"), "{err}");
    assert!(err.contains("EFS2"), "{err}");
    assert!(err.contains("RF calibration and IMEI"), "{err}");
    assert!(err.contains("_update"), "{err}");
    assert!(err.contains("verified"), "{err}");
    // Backups are matched by the modem's serial; the way to one is named either way.
    assert!(err.contains("qrescue backup"), "{err}");
    assert!(
        !stdout(&out).contains("Plan:"),
        "no engine run: {}",
        describe(&out)
    );
    assert_untouched(sim, &report);
}

#[test]
fn an_erase_all_package_is_blocked_before_the_first_byte() {
    let dir = tempdir();
    let root = ec25(&dir.path().join("pkg"));
    let update = std::fs::read_to_string(root.join(UPDATE_XML)).unwrap();
    let all = "  <erase PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" label=\"all\" last_sector=\"131071\" num_partition_sectors=\"131072\" physical_partition_number=\"0\" start_sector=\"0\"/>\n";
    std::fs::write(
        root.join("update/firehose/rawprogram_nand_p4K_b256K_eraseall.xml"),
        update.replace("<data>\n", &format!("<data>\n{all}")),
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let sim = Sim::start(&["--profile", "ec25", "--report", s(&report)]);
    let out = qrescue(
        &[
            "--json",
            "flash",
            s(&root),
            "--set",
            "eraseall",
            "--port",
            sim.port(),
        ],
        BOUND,
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["event"], "package");
    assert_eq!(lines[0]["verdict"]["flashable"], false);
    assert!(
        lines[0]["package"]["guard"]["blocked"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["erase_all"] == true),
        "{}",
        lines[0]["package"]["guard"]
    );
    assert!(
        !lines.iter().any(|l| l["event"] == "plan"),
        "the engine never started"
    );
    let e = &lines.last().unwrap()["error"];
    assert_eq!(e["exit_code"], 1);
    assert!(
        e["why"]
            .as_str()
            .unwrap()
            .contains("erases the whole flash"),
        "{e}"
    );
    assert_untouched(sim, &report);
}

#[test]
fn a_damaged_image_is_refused_naming_the_file_and_both_digests() {
    let dir = tempdir();
    let root = ec25(&dir.path().join("pkg"));
    let file = root.join("update/tz.mbn");
    let mut bytes = std::fs::read(&file).unwrap();
    let md5 = std::fs::read_to_string(root.join("md5.txt")).unwrap();
    let expected = md5
        .lines()
        .find(|l| l.contains("\\update\\tz.mbn:"))
        .and_then(|l| l.rsplit(':').next())
        .unwrap()
        .trim()
        .to_string();
    bytes[10] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    let out = inspect(&root, &[]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("update/tz.mbn is damaged"), "{err}");
    assert!(err.contains(&expected), "the expected MD5 is named: {err}");
    let line = err.lines().next().unwrap();
    let actual = line.rsplit("the file has ").next().unwrap().trim();
    assert_eq!(actual.len(), 32, "{line}");
    assert_ne!(actual, expected);
    assert!(stdout(&out).contains(&format!(
        "WRONG update/tz.mbn: expected {expected}, found {actual}"
    )));
    assert!(err.contains("Download the package again"), "{err}");
}

#[test]
fn compatibility_cases_from_users_md_through_modem_revision() {
    let dir = tempdir();
    // EC25EFAR06A17M4G_20.200.20.200 → EC25EFAR08A01M4G_01.001.01.001: a baseline change.
    let r08 = ec25(&dir.path().join("EC25EFAR08A01M4G_01.001.01.001"));
    let out = inspect(
        &r08,
        &["--modem-revision", "EC25EFAR06A17M4G_20.200.20.200"],
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("baseline-change"), "{err}");
    assert!(err.contains("EC25EFAR08A01M4G_01.001.01.001"), "{err}");
    assert!(err.contains("EC25EFAR06A17M4G_20.200.20.200"), "{err}");
    assert!(
        stdout(&out).contains("Compatible  REFUSED (a change of firmware baseline)"),
        "{}",
        describe(&out)
    );
    // The typed override needs a verified backup, which cannot exist yet.
    let (_, v) = inspect_json(
        &r08,
        &["--modem-revision", "EC25EFAR06A17M4G_20.200.20.200"],
    );
    let phrase = v["package"]["compat"]["override_phrase"]
        .as_str()
        .unwrap()
        .to_string();
    let out = inspect(
        &r08,
        &[
            "--modem-revision",
            "EC25EFAR06A17M4G_20.200.20.200",
            "--override",
            &phrase,
        ],
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        stderr(&out).contains("needs a verified backup"),
        "{}",
        describe(&out)
    );

    // An RM502Q-EA package on an RM502Q-AE.
    let ea = ec25(&dir.path().join("RM502QEAAAR13A02M4G_01.200.01.200"));
    let out = inspect(
        &ea,
        &["--modem-revision", "RM502QAEAAR13A02M4G_01.200.01.200"],
    );
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("variant-mismatch"), "{err}");
    assert!(err.contains("RM502Q-EAAA"), "{err}");

    // A02 → A03 on the same baseline is allowed.
    let a03 = ec25(&dir.path().join("RM502QAEAAR13A03M4G_01.200.01.200"));
    let (out, v) = inspect_json(
        &a03,
        &["--modem-revision", "RM502QAEAAR13A02M4G_01.200.01.200"],
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert_eq!(v["package"]["compat"]["state"], "allowed", "{v}");
    assert_eq!(v["package"]["compat"]["rule"]["kind"], "upgrade", "{v}");
    assert_eq!(v["verdict"]["flashable"], true);

    // A modem revision that is not one is a usage error.
    let out = inspect(&a03, &["--modem-revision", "hello"]);
    assert_eq!(code(&out), 2, "{}", describe(&out));
}

fn step_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.starts_with('[')).collect()
}

#[test]
fn dry_run_runs_every_step_of_a_nand_and_a_ufs_package() {
    let dir = tempdir();
    let nand = ec25(&dir.path().join("nand"));
    let out = qrescue(&["flash", s(&nand), "--dry-run"], BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "Dry run: an emulated modem in this process with NAND, 4 KiB pages, 64 pages per block"
        ),
        "{text}"
    );
    assert!(text.contains("the emulator's own programmer"), "{text}");
    // Upload, configure, 28 plan steps, reset.
    let steps = step_lines(&text);
    assert_eq!(steps.len(), 31, "{text}");
    assert!(steps.iter().all(|l| l.contains("/31]")), "{text}");
    assert!(!text.contains("FAILED"), "{text}");
    assert!(text.contains("Dry run finished: all 28 steps"), "{text}");
    assert!(text.contains("A real flash"), "{text}");

    let ufs = emit(&dir.path().join("ufs"), "rm520n", &["--storage", "ufs"]);
    let out = qrescue(&["--json", "flash", s(&ufs), "--dry-run"], BOUND);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["event"], "package");
    let plan_steps = lines[0]["package"]["summary"]["steps"]
        .as_array()
        .unwrap()
        .len();
    let dry = lines.iter().find(|l| l["event"] == "dry_run").unwrap();
    assert!(
        dry["device"]
            .as_str()
            .unwrap()
            .starts_with("UFS, 4096-byte sectors"),
        "{dry}"
    );
    let finished: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "step_finished")
        .collect();
    assert_eq!(
        finished.len(),
        plan_steps + 3,
        "upload, configure, every step, reset"
    );
    let done = lines.iter().find(|l| l["event"] == "done").unwrap();
    assert_eq!(done["ok"], true);
    assert_eq!(lines.last().unwrap()["event"], "dry_run_finished");
}

#[test]
fn flash_package_into_the_emulator_and_read_every_image_back() {
    let dir = tempdir();
    let root = ec25(&dir.path().join("EC25EFAR06A08M4G_01.001.01.001"));
    let sim = Sim::start(&["--profile", "ec25"]);
    let out = qrescue(
        &[
            "flash",
            s(&root),
            "--port",
            sim.port(),
            "--modem-revision",
            "EC25EFAR06A08M4G_01.001.01.001",
            "--no-reset",
        ],
        BOUND,
    );
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains("Compatible  yes"), "{text}");
    assert!(text.contains("Verdict     flashable"), "{text}");
    assert!(text.contains("Write finished"), "{text}");
    assert_eq!(
        step_lines(&text).len(),
        30,
        "upload, configure, 28 steps: {text}"
    );

    // The programmer is still running (--no-reset): read each image back.
    for p in programs(&root.join(UPDATE_XML)) {
        let image = std::fs::read(&p.file).unwrap();
        let pages = (image.len() as u64).div_ceil(4096);
        let back = dir.path().join(format!("{}.bin", p.label));
        let out = qrescue(
            &[
                "read",
                "--port",
                sim.port(),
                "--start",
                &p.start.expect("a numeric start sector").to_string(),
                "--count",
                &pages.to_string(),
                "--out",
                s(&back),
            ],
            BOUND,
        );
        assert_eq!(code(&out), 0, "{}", describe(&out));
        let data = std::fs::read(&back).unwrap();
        // The MIBIB is host-patched with the last partition's length from the device's size:
        // on this emulated unit that is the value the generated table already holds.
        assert!(
            data[..image.len()] == image[..],
            "{} reads back as {}",
            p.label,
            p.file.display()
        );
    }
}

#[test]
fn a_zip_with_a_path_that_climbs_out_is_refused_and_nothing_is_written() {
    let dir = tempdir();
    let inner = dir.path().join("inner");
    std::fs::create_dir(&inner).unwrap();
    let zip = inner.join("EC25EFAR06A08M4G_01.001.01.001.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    w.start_file("PKG/md5.txt", opts).unwrap();
    w.write_all(b"VERSION:1.0\r\nFILE:START\r\nFILE:END\r\n")
        .unwrap();
    w.start_file("PKG/../../evil.sh", opts).unwrap();
    w.write_all(b"#!/bin/sh\necho owned\n").unwrap();
    w.finish().unwrap();
    for args in [
        vec!["package", "inspect", s(&zip)],
        vec!["flash", s(&zip), "--dry-run"],
    ] {
        let out = qrescue(&args, BOUND);
        assert_eq!(code(&out), 1, "{}", describe(&out));
        let err = stderr(&out);
        assert!(err.contains("evil.sh"), "the entry is named: {err}");
        assert!(err.contains("next:"), "{err}");
    }
    let mut left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["inner"], "nothing was unpacked or written");
    assert_eq!(std::fs::read_dir(&inner).unwrap().count(), 1);
}

#[test]
fn a_symlink_leaving_the_package_folder_is_refused() {
    let dir = tempdir();
    let root = ec25(&dir.path().join("pkg"));
    let outside = dir.path().join("outside.bin");
    let tz = root.join("update/tz.mbn");
    std::fs::copy(&tz, &outside).unwrap();
    std::fs::remove_file(&tz).unwrap();
    std::os::unix::fs::symlink(&outside, &tz).unwrap();
    let before = std::fs::read(&outside).unwrap();

    let out = inspect(&root, &[]);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    let err = stderr(&out);
    assert!(err.contains("update/tz.mbn"), "{err}");
    assert!(err.contains("outside the package folder"), "{err}");

    let report = dir.path().join("report.json");
    let sim = Sim::start(&["--profile", "ec25", "--report", s(&report)]);
    let out = qrescue(&["flash", s(&root), "--port", sim.port()], BOUND);
    assert_eq!(code(&out), 1, "{}", describe(&out));
    assert!(
        stderr(&out).contains("outside the package folder"),
        "{}",
        describe(&out)
    );
    assert_untouched(sim, &report);
    assert_eq!(std::fs::read(&outside).unwrap(), before);
}
