//! Shared by tests/workflow_e2e.rs and tests/cli_update.rs: an emulated EC25 on the emulated
//! bus (normal mode first), packages that fit it (an update, a `_factory` set that rewrites its
//! EFS, another variant), and a driver setup in a temporary folder.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use md5::{Digest, Md5};
use qrescue::sim::device::{DeviceConfig, RunOutcome};
use qrescue::sim::enumerate::{run_on_usb, Schedule, SwitchTiming};
use qrescue::sim::faults::{Fault, FaultPlan};
use qrescue::sim::firehose::programmer::{Programmer, ProgrammerOptions};
use qrescue::sim::firehose::storage::{Storage, StorageProfile};
use qrescue::sim::hub::UsbHub;
use qrescue::sim::normal;
use qrescue::sim::package_gen::{self, PackageOptions};
use qrescue::sim::profile::Profile;

/// What the emulated EC25 runs when it leaves the factory.
pub const FACTORY_REV: &str = "EC25EFAR06A17M4G_20.200.20.200";
/// The update packages install this.
pub const NEW_REV: &str = "EC25EFAR06A18M4G_20.200.20.200";
/// Another variant of the EC25 (wrong for the emulated EC25-E).
pub const OTHER_VARIANT_REV: &str = "EC25AFFAR06A18M4G_20.200.20.200";

pub fn profile(seed: u64) -> Profile {
    Profile::by_name("ec25").unwrap().for_unit(seed)
}

pub fn storage_profile() -> StorageProfile {
    StorageProfile::by_name("nand-ec25e").unwrap()
}

/// A factory-fresh storage of the unit.
pub fn factory_programmer(p: &Profile) -> Programmer {
    let mut prog = Programmer::new(&storage_profile(), ProgrammerOptions::default());
    normal::seed_factory(prog.storage_mut(), p).unwrap();
    prog
}

/// A package in `parent/<revision>` whose images run `revision`.
pub fn package(parent: &Path, p: &Profile, revision: &str) -> PathBuf {
    let dir = parent.join(revision);
    package_gen::emit_firmware(
        &dir,
        p,
        &storage_profile(),
        PackageOptions {
            image_bytes: 1 << 20,
            seed: 7,
        },
        revision,
    )
    .unwrap();
    dir
}

/// A `_factory` package: the update package whose XML set also erases and programs the EFS2
/// partition (a factory EFS without this unit's calibration or IMEI), as real `_factory` sets
/// do. Named `<revision>_factory`.
pub fn factory_package(parent: &Path, p: &Profile, revision: &str) -> PathBuf {
    let name = format!("{revision}_factory");
    let dir = parent.join(&name);
    package_gen::emit_firmware(
        &dir,
        p,
        &storage_profile(),
        PackageOptions {
            image_bytes: 1 << 20,
            seed: 7,
        },
        revision,
    )
    .unwrap();
    let storage = factory_programmer(p).storage_mut().clone();
    add_factory_set(&dir, &storage);
    dir
}

fn add_factory_set(dir: &Path, storage: &Storage) {
    let efs = normal::state::find_region(storage, "EFS2").expect("EFS2 on the EC25 layout");
    let ss = storage.sector_size();
    let ppb = storage.pages_per_block().expect("NAND");
    let firehose = dir.join("update/firehose");
    let raw = std::fs::read_dir(&firehose)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("rawprogram") && n.ends_with("_update.xml"))
        })
        .expect("an update rawprogram");
    let xml = std::fs::read_to_string(&raw).unwrap();
    let last = efs.start_sector + efs.num_sectors - 1;
    let entry = |kind: &str, file: &str| {
        format!(
            "  <{kind} PAGES_PER_BLOCK=\"{ppb}\" SECTOR_SIZE_IN_BYTES=\"{ss}\"{file} label=\"{}\" last_sector=\"{last}\" num_partition_sectors=\"{}\" physical_partition_number=\"0\" start_sector=\"{}\"/>\n",
            efs.name, efs.num_sectors, efs.start_sector
        )
    };
    let extra = entry("erase", "") + &entry("program", " filename=\"..\\cefs.mbn\"");
    let new_name = raw
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .replace("_update.xml", "_factory.xml");
    std::fs::write(
        raw.with_file_name(new_name),
        xml.replace("</data>", &format!("{extra}</data>")),
    )
    .unwrap();
    std::fs::remove_file(&raw).unwrap();
    // A factory EFS: not this unit's (no calibration file, no IMEI).
    let image: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(dir.join("update/cefs.mbn"), image).unwrap();
    // md5.txt again over every file.
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    files.sort();
    let mut s = String::from("VERSION:1.0\r\nFILE:START\r\n");
    for rel in files.iter().filter(|r| r.as_str() != "md5.txt") {
        let bytes = std::fs::read(dir.join(rel)).unwrap();
        let _ = write!(
            s,
            "FILE:\\{}:{}\r\n",
            rel.replace('/', "\\"),
            hex::encode_upper(Md5::digest(&bytes))
        );
    }
    s.push_str("FILE:END\r\n");
    std::fs::write(dir.join("md5.txt"), s).unwrap();
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(root, &p, out);
        } else {
            out.push(
                p.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
            );
        }
    }
}

/// The emulated unit running on its own bus until dropped.
pub struct Unit {
    pub hub: UsbHub,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Unit {
    /// Start `p`'s unit with `prog` (its storage) in normal mode; `crash_after` makes its
    /// firmware crash into 900e that long after each boot.
    pub fn start(p: &Profile, mut prog: Programmer, crash_after: Option<Duration>) -> Unit {
        let hub = UsbHub::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut cfg = DeviceConfig::new(p.clone());
        let (h, s) = (hub.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let schedule = Schedule {
                normal: true,
                crash_after,
                switch: SwitchTiming::quick(),
                ..Schedule::default()
            };
            if let Err(e) = run_on_usb(&mut cfg, &mut prog, &h, schedule, &s, &mut |_| {}) {
                eprintln!("emulated unit ended: {e}");
            }
        });
        Unit {
            hub,
            stop,
            thread: Some(thread),
        }
    }

    /// USB ids of the devices on the bus now.
    pub fn present(&self) -> Vec<String> {
        self.hub.present().iter().map(|d| d.id()).collect()
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.hub.close();
    }
}

/// A factory-fresh storage of the unit whose programmer drops the link after `at` raw data
/// bytes (program and read, counted over its life; once).
pub fn dropping_programmer(p: &Profile, at: u64) -> Programmer {
    let mut prog = Programmer::new(
        &storage_profile(),
        ProgrammerOptions {
            faults: FaultPlan::new(vec![Fault::DropInRaw(Some(at))], 1),
            ..ProgrammerOptions::default()
        },
    );
    normal::seed_factory(prog.storage_mut(), p).unwrap();
    prog
}

/// The emulated unit on its own bus, power-cycled by the bench whenever a run ends on its own:
/// after a dropped link with its boot pin held (it comes back in 9008 whatever its storage
/// holds), otherwise booting its storage. [`CyclingUnit::stop`] hands its programmer back (its
/// storage and write log).
pub struct CyclingUnit {
    pub hub: UsbHub,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Programmer>>,
}

impl CyclingUnit {
    pub fn start(p: &Profile, mut prog: Programmer) -> CyclingUnit {
        let hub = UsbHub::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut cfg = DeviceConfig::new(p.clone());
        let (h, s) = (hub.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut held = false;
            for _ in 0..16 {
                let schedule = Schedule {
                    normal: !held,
                    limit: Some(1),
                    switch: SwitchTiming::quick(),
                    ..Schedule::default()
                };
                match run_on_usb(&mut cfg, &mut prog, &h, schedule, &s, &mut |_| {}) {
                    Ok(o) => held = matches!(o, RunOutcome::LinkDropped | RunOutcome::LinkLost),
                    Err(e) => {
                        eprintln!("emulated unit ended: {e}");
                        break;
                    }
                }
                if s.load(Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            prog
        });
        CyclingUnit {
            hub,
            stop,
            thread: Some(thread),
        }
    }

    /// Stop the unit and take its programmer back.
    pub fn stop(mut self) -> Programmer {
        self.stop.store(true, Ordering::SeqCst);
        let prog = self.thread.take().unwrap().join().unwrap();
        self.hub.close();
        prog
    }
}

impl Drop for CyclingUnit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.hub.close();
    }
}
