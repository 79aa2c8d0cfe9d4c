//! End to end: the real Sahara host ([`SaharaSession`]) against the real emulated boot ROM
//! ([`sim::device::run`] on its own thread) over the in-process pipe.
//!
//! Covered: programmer upload on a v2 (READ_DATA) and a v3 (READ_DATA64) unit over stream and
//! packet framing; command mode on v2 and v3 followed by an upload in the same session; RAM dumps
//! from 32- and 64-bit region tables, including hostile file names; every boot-ROM fault, a silent
//! port and a programmer that is already running. Every test body runs under [`bounded`], so a
//! hang fails the test instead of stalling the suite. Everything is seeded and reproducible.
//!
//! The Firehose side is a small test double ([`FirehoseDouble`]), not the emulated programmer.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use qrescue::engine::sahara::{SaharaConfig, SaharaSession, UploadProgress};
use qrescue::protocol::sahara::memdebug;
use qrescue::protocol::sahara::packet::{Packet, CMD_HELLO_RESP, CMD_READ_DATA, CMD_READ_DATA64};
use qrescue::sim::bootrom::region_bytes;
use qrescue::sim::device::{self, DeviceConfig, RunOutcome};
use qrescue::sim::elf::{self, ElfClass};
use qrescue::sim::faults::{Fault, FaultPlan};
use qrescue::sim::profile::{Profile, UnitIdentity};
use qrescue::sim::{AfterUpload, ProgrammerExit};
use qrescue::transport::pipe::{self, PipeEnd};
use qrescue::transport::{Framing, Transport, TransportError};
use qrescue::ErrorKind;

/// Upper bound for any single test body: a hang fails the test instead of stalling the suite.
const HANG_LIMIT: Duration = Duration::from_secs(30);
/// Bound for waits inside a test (a log to arrive, a device thread to end).
const WAIT: Duration = Duration::from_secs(5);
const PACKET_512: Framing = Framing::Packet {
    max_packet_size: 512,
};
/// The log document the Firehose double sends after the hand-over.
const FIREHOSE_LOG: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n<log value=\"INFO: End of supported functions 15\" />\n</data>";

// ------------------------------------------------------------------------------------ harness

/// Run `body` on its own thread; fail if it panics or takes longer than [`HANG_LIMIT`].
fn bounded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(()) => h.join().expect("body finished"),
        Err(RecvTimeoutError::Disconnected) => match h.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body ends by sending or by panicking"),
        },
        Err(RecvTimeoutError::Timeout) => {
            panic!("the test body did not finish within {HANG_LIMIT:?}: something hangs")
        }
    }
}

/// The programmer that runs after a successful upload: ~100 ms later it sends one
/// Firehose-looking log document, then idles until the link drops (→ `LinkLost`) or the unit is
/// stopped (→ `PowerOff`).
struct FirehoseDouble {
    ran: Arc<AtomicUsize>,
    unit: Arc<Mutex<Option<UnitIdentity>>>,
    stop: Arc<AtomicBool>,
}

impl AfterUpload for FirehoseDouble {
    fn serve(&mut self, link: &mut dyn Transport, unit: &UnitIdentity) -> ProgrammerExit {
        self.ran.fetch_add(1, Ordering::SeqCst);
        *self.unit.lock().unwrap() = Some(unit.clone());
        std::thread::sleep(Duration::from_millis(100));
        if link
            .write(FIREHOSE_LOG.as_bytes(), Duration::from_secs(2))
            .is_err()
        {
            return ProgrammerExit::LinkLost;
        }
        let mut buf = [0u8; 4096];
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return ProgrammerExit::PowerOff;
            }
            match link.read(&mut buf, Duration::from_millis(50)) {
                Ok(_) | Err(TransportError::Timeout { .. }) => {}
                Err(_) => return ProgrammerExit::LinkLost,
            }
        }
    }
}

/// One emulated unit running [`device::run`] on its own thread.
struct Unit {
    stop: Arc<AtomicBool>,
    ran: Arc<AtomicUsize>,
    served: Arc<Mutex<Option<UnitIdentity>>>,
    thread: Option<JoinHandle<RunOutcome>>,
}

impl Unit {
    /// Start `cfg` on the device end of a fresh pipe; returns the host end and the unit. A
    /// drop-after fault cuts the pipe, so the host sees the disconnect as a real host would.
    fn start(mut cfg: DeviceConfig, framing: Framing) -> (PipeEnd, Unit) {
        let (mut dev, host) = pipe::pair(framing);
        let cutter = host.cutter();
        cfg.on_link_drop = Some(Box::new(move || cutter.cut()));
        let stop = Arc::new(AtomicBool::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(Mutex::new(None));
        let mut double = FirehoseDouble {
            ran: Arc::clone(&ran),
            unit: Arc::clone(&served),
            stop: Arc::clone(&stop),
        };
        let stop2 = Arc::clone(&stop);
        let thread =
            std::thread::spawn(move || device::run(&mut dev, &mut cfg, &mut double, &stop2));
        (
            host,
            Unit {
                stop,
                ran,
                served,
                thread: Some(thread),
            },
        )
    }

    /// How often the programmer double ran.
    fn programmer_runs(&self) -> usize {
        self.ran.load(Ordering::SeqCst)
    }

    /// The identity the boot ROM handed to the programmer.
    fn served_unit(&self) -> Option<UnitIdentity> {
        self.served.lock().unwrap().clone()
    }

    /// Wait (bounded) for the runner to end on its own.
    fn outcome(mut self) -> RunOutcome {
        let t = self.thread.take().expect("joined once");
        let deadline = Instant::now() + WAIT;
        while !t.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the emulated unit did not end within {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().expect("device thread")
    }

    /// Stop the runner and return how it ended.
    fn finish(self) -> RunOutcome {
        self.stop.store(true, Ordering::SeqCst);
        self.outcome()
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A device config with faults parsed from their `--fault` spellings and a seed.
fn unit_cfg(profile: Profile, faults: &[&str], seed: u64) -> DeviceConfig {
    let faults = faults
        .iter()
        .map(|s| s.parse::<Fault>().expect("fault spelling"))
        .collect();
    let mut c = DeviceConfig::new(profile).with_faults(FaultPlan::new(faults, seed));
    c.reboot_delay = Duration::from_millis(10);
    c
}

/// A host-side transport wrapper that records every byte the device sent.
struct Tap<T: Transport> {
    inner: T,
    from_device: Arc<Mutex<Vec<u8>>>,
}

impl<T: Transport> Tap<T> {
    fn new(inner: T) -> (Self, Arc<Mutex<Vec<u8>>>) {
        let rec = Arc::new(Mutex::new(Vec::new()));
        (
            Tap {
                inner,
                from_device: Arc::clone(&rec),
            },
            rec,
        )
    }
}

impl<T: Transport> Transport for Tap<T> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        let n = self.inner.read(buf, timeout)?;
        self.from_device
            .lock()
            .unwrap()
            .extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.inner.write(data, timeout)
    }
    fn describe(&self) -> String {
        format!("tap on {}", self.inner.describe())
    }
    fn framing(&self) -> Framing {
        self.inner.framing()
    }
}

/// Split the device's byte stream into Sahara packets, up to the first non-packet bytes.
fn packets(stream: &[u8]) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut rest = stream;
    while let Ok((p, n)) = Packet::parse(rest) {
        out.push(p);
        rest = &rest[n..];
    }
    out
}

/// Read from `t` until `needle` has arrived (bounded by [`WAIT`]); returns everything read.
fn read_until(t: &mut impl Transport, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{needle:?} did not arrive within {WAIT:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
        match t.read(&mut buf, left) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.is_timeout() => {}
            Err(e) => panic!("link failed while waiting for {needle:?}: {e}"),
        }
    }
    String::from_utf8(got).expect("UTF-8 log")
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The total of a programmer's request plan: what a real ROM reads of it.
fn planned_bytes(prog: &[u8]) -> (u64, usize) {
    let plan = elf::request_plan(prog);
    (plan.iter().map(|&(_, len)| len).sum(), plan.len())
}

/// Bytes crossing the link in a full upload of `prog` (both directions), for drop-after.
fn upload_traffic(prog: &[u8], read64: bool) -> u64 {
    let (data, requests) = planned_bytes(prog);
    let req_len = if read64 { 0x20 } else { 0x14 };
    // HELLO + HELLO_RESP, the requests, the data, END_OF_IMAGE, DONE, DONE_RESP.
    0x30 * 2 + requests as u64 * req_len + data + 0x10 + 0x08 + 0x0c
}

fn lower(e: &qrescue::Error) -> String {
    e.to_string().to_lowercase()
}

// ------------------------------------------------------------------------------------ upload

/// Upload a 600 KiB programmer signed for the unit, then read the Firehose log that follows
/// through `into_transport()`.
fn upload_round_trip(profile_name: &str, framing: Framing, unit_seed: u64, prog_seed: u64) {
    let profile = Profile::by_name(profile_name).unwrap().for_unit(unit_seed);
    let prog = elf::generate_programmer(
        &profile.identity.pk_hash,
        600 * 1024,
        profile.elf_class,
        prog_seed,
    );
    assert_eq!(prog.len(), 600 * 1024);
    let plan = elf::request_plan(&prog);
    let (planned, n_requests) = planned_bytes(&prog);

    let (host, unit) = Unit::start(unit_cfg(profile.clone(), &[], unit_seed), framing);
    let (tap, from_device) = Tap::new(host);
    let mut s = SaharaSession::new(tap, SaharaConfig::default());
    let mut progress: Vec<UploadProgress> = Vec::new();
    let rep = s
        .upload(&prog, &mut |p| progress.push(p))
        .unwrap_or_else(|e| panic!("upload on {profile_name}: {e}"));

    assert!(!rep.already_running);
    assert!(!rep.pending_quirk);
    assert_eq!(rep.bytes_sent, planned, "bytes sent = the ROM's plan");
    assert_eq!(rep.requests as usize, n_requests);
    assert_eq!(rep.image_ids_requested, vec![13]);
    // Progress is monotonic and ends at the report's totals.
    assert_eq!(progress.len(), n_requests);
    assert!(progress
        .windows(2)
        .all(|w| w[0].bytes_sent < w[1].bytes_sent));
    let last = progress.last().unwrap();
    assert_eq!(last.bytes_sent, planned);
    assert_eq!(last.image_len, prog.len() as u64);

    // The Firehose log that followed DONE_RESP is handed on, not swallowed.
    let mut t = s.into_transport();
    let log = read_until(&mut t, "</data>");
    assert!(log.starts_with("<?xml"), "{log:?}");
    assert!(log.contains("End of supported functions 15"), "{log:?}");
    assert_eq!(unit.programmer_runs(), 1);
    assert_eq!(unit.served_unit(), Some(profile.identity.clone()));

    // On the wire: the HELLO version of the profile, then exactly the ROM's request plan, with
    // READ_DATA64 on the v3 unit and READ_DATA on the v2 one.
    let wire = packets(&from_device.lock().unwrap());
    match wire.first() {
        Some(Packet::Hello { version, mode, .. }) => {
            assert_eq!(*version, profile.sahara_version);
            assert_eq!(*mode, 0);
        }
        other => panic!("first packet {other:?}"),
    }
    let requests: Vec<(u64, u64)> = wire
        .iter()
        .filter_map(|p| match *p {
            Packet::ReadData { offset, length, .. } if !profile.read64 => {
                Some((u64::from(offset), u64::from(length)))
            }
            Packet::ReadData64 { offset, length, .. } if profile.read64 => Some((offset, length)),
            Packet::ReadData { .. } | Packet::ReadData64 { .. } => {
                panic!("wrong request width on {profile_name}: {p:?}")
            }
            _ => None,
        })
        .collect();
    assert_eq!(requests, plan);
    assert_eq!(
        wire.iter()
            .filter(|p| p.cmd() == CMD_READ_DATA || p.cmd() == CMD_READ_DATA64)
            .count(),
        n_requests
    );
    assert!(wire.contains(&Packet::EndOfImage {
        image_id: 13,
        status: 0
    }));
    assert_eq!(wire.last(), Some(&Packet::DoneResp { status: 1 }));

    // The host goes away: the programmer sees the link drop, the unit ends.
    drop(t);
    assert_eq!(unit.outcome(), RunOutcome::LinkLost);
}

#[test]
fn upload_ec25_v2_read_data_stream() {
    bounded(|| upload_round_trip("ec25", Framing::Stream, 101, 1));
}

#[test]
fn upload_ec25_v2_read_data_packet() {
    bounded(|| upload_round_trip("ec25", PACKET_512, 102, 2));
}

#[test]
fn upload_rm520n_v3_read_data64_stream() {
    bounded(|| upload_round_trip("rm520n", Framing::Stream, 103, 3));
}

#[test]
fn upload_rm520n_v3_read_data64_packet() {
    bounded(|| upload_round_trip("rm520n", PACKET_512, 104, 4));
}

// ------------------------------------------------------------------------------------ command mode

#[test]
fn read_info_v2_then_upload_in_the_same_session() {
    bounded(|| {
        let profile = Profile::by_name("ec25").unwrap().for_unit(7);
        let id = profile.identity.clone();
        let (host, unit) = Unit::start(unit_cfg(profile.clone(), &[], 7), Framing::Stream);
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let info = s.read_info().expect("read_info on ec25");

        assert_eq!(info.sahara_version, Some(2));
        assert_eq!(info.mode, Some(0));
        assert_eq!(info.serial, Some(id.serial));
        assert_eq!(
            info.serial_hex.as_deref(),
            Some(format!("0x{:08x}", id.serial).as_str())
        );
        let hw = info.hw_id.as_ref().expect("v2 answers the HW ID");
        assert_eq!(hw.raw, id.hw_id);
        assert_eq!(hw.msm_id, id.msm_id());
        assert_eq!(hw.msm_id, 0x0004_80e1, "MDM9207");
        assert_eq!(hw.oem_id, id.oem_id());
        assert_eq!(hw.model_id, id.model_id());
        assert!(info.chip_id_v3.is_none(), "chip ID v3 is a v3 command");
        // The device sends the hash three times; the host keeps one copy.
        assert_eq!(
            info.pk_hash.as_deref(),
            Some(hex::encode(&id.pk_hash).as_str())
        );
        assert_eq!(s.last_info(), Some(&info));

        let prog = profile.programmer(70);
        let (planned, _) = planned_bytes(&prog);
        let rep = s
            .upload(&prog, &mut |_| {})
            .expect("upload after read_info");
        assert_eq!(rep.bytes_sent, planned);
        let mut t = s.into_transport();
        let log = read_until(&mut t, "</data>");
        assert!(log.contains("End of supported functions"));
        assert_eq!(unit.programmer_runs(), 1);
        assert_eq!(unit.finish(), RunOutcome::PoweredOff);
        drop(t);
    });
}

#[test]
fn read_info_v3_has_chip_id_v3_and_no_hw_id_then_upload() {
    bounded(|| {
        let profile = Profile::by_name("rm520n").unwrap().for_unit(8);
        let id = profile.identity.clone();
        let (host, unit) = Unit::start(unit_cfg(profile.clone(), &[], 8), PACKET_512);
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let info = s.read_info().expect("read_info on rm520n");

        assert_eq!(info.sahara_version, Some(3));
        assert_eq!(info.serial, Some(id.serial));
        assert!(info.hw_id.is_none(), "v3 does not answer the HW ID");
        let chip = info.chip_id_v3.as_ref().expect("v3 answers chip ID v3");
        assert_eq!(chip.msm_id, id.msm_id());
        assert_eq!(chip.oem_id, Some(id.oem_id()));
        assert_eq!(chip.model_id, Some(id.model_id()));
        assert_eq!(
            info.pk_hash.as_deref(),
            Some(hex::encode(&id.pk_hash).as_str())
        );

        let prog = profile.programmer(80);
        let rep = s
            .upload(&prog, &mut |_| {})
            .expect("upload after read_info");
        assert_eq!(rep.bytes_sent, planned_bytes(&prog).0);
        assert_eq!(rep.image_ids_requested, vec![13]);
        let mut t = s.into_transport();
        read_until(&mut t, "</data>");
        assert_eq!(unit.programmer_runs(), 1);
        assert_eq!(unit.finish(), RunOutcome::PoweredOff);
        drop(t);
    });
}

// ------------------------------------------------------------------------------------ memory debug

/// Every path under `root` (relative), recursively.
fn walk(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
        }
    }
    out
}

/// Dump a crash-mode unit into `<tmp>/parent/dump` and check every byte and every path.
/// With `info_first`, `read_info()` runs first in the same session (as `qrescue info` would): a
/// crash-dump unit answers with its HELLO fields only and the dump starts from that HELLO.
fn ramdump_round_trip(profile_name: &str, seed: u64, wide: bool, info_first: bool) {
    let profile = Profile::by_name(profile_name).unwrap();
    assert_eq!(profile.memory_debug64, wide);
    let (host, unit) = Unit::start(unit_cfg(profile.clone(), &[], seed), Framing::Stream);

    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("parent");
    fs::create_dir(&parent).unwrap();
    fs::write(parent.join("keep.txt"), b"untouched").unwrap();
    let out = parent.join("dump");
    let before = walk(root.path());

    let mut s = SaharaSession::new(host, SaharaConfig::default());
    if info_first {
        let info = s.read_info().expect("read_info on a crash-dump unit");
        assert_eq!(info.mode, Some(2));
        assert_eq!(info.mode_name.as_deref(), Some("crash-dump"));
        assert_eq!(info.sahara_version, Some(profile.sahara_version));
        assert!(info.serial.is_none(), "no command mode in crash dump");
    }
    let mut last = None;
    let rep = s
        .ramdump(&out, &mut |p| last = Some(p))
        .unwrap_or_else(|e| panic!("ramdump on {profile_name}: {e}"));

    assert_eq!(rep.table_format, if wide { "64-bit" } else { "32-bit" });
    assert!(
        rep.reset_acknowledged,
        "RESET acknowledged: {:?}",
        rep.notes
    );
    assert_eq!(rep.regions.len(), profile.regions.len());
    let total: u64 = profile.regions.iter().map(|r| r.len).sum();
    assert_eq!(rep.bytes_written, total);
    let last = last.expect("progress reported");
    assert_eq!((last.total_done, last.total_len), (total, total));

    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap())
            .expect("manifest.json parses");
    assert_eq!(rep.manifest, out.join("manifest.json"));
    assert_eq!(manifest["table_format"], rep.table_format.as_str());
    assert_eq!(manifest["reset_acknowledged"], true);
    assert_eq!(manifest["device"]["mode_name"], "crash-dump");
    assert_eq!(
        manifest["regions"].as_array().unwrap().len(),
        profile.regions.len()
    );

    let mut files = BTreeSet::new();
    for (i, (got, want)) in rep.regions.iter().zip(&profile.regions).enumerate() {
        assert_eq!(got.index, i);
        assert_eq!((got.base, got.length), (want.base, want.len));
        assert_eq!(got.status, "ok", "{got:?}");
        assert!(
            memdebug::is_plain_file_name(&got.file)
                && !got.file.contains(['/', '\\'])
                && got.file != ".."
                && !got.file.is_empty(),
            "unsafe file name {:?}",
            got.file
        );
        let expected = sha256_hex(&region_bytes(seed, i, 0, want.len));
        let on_disk = fs::read(out.join(&got.file)).unwrap();
        assert_eq!(on_disk.len() as u64, want.len, "{}", got.file);
        assert_eq!(sha256_hex(&on_disk), expected, "contents of {}", got.file);
        assert_eq!(got.sha256.as_deref(), Some(expected.as_str()));
        assert_eq!(manifest["regions"][i]["sha256"], expected.as_str());
        assert_eq!(manifest["regions"][i]["file"], got.file.as_str());
        files.insert(got.file.clone());
    }
    assert_eq!(files.len(), profile.regions.len(), "one file per region");

    // Exactly the region files and the manifest, no temp files, nothing outside the folder.
    let mut expected_names = files.clone();
    expected_names.insert("manifest.json".to_string());
    let names: BTreeSet<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, expected_names);
    let after = walk(root.path());
    let new: Vec<_> = after.difference(&before).collect();
    assert!(
        new.iter().all(|p| p.starts_with("parent/dump")),
        "written outside the dump folder: {new:?}"
    );
    assert!(before.is_subset(&after));
    assert_eq!(fs::read(parent.join("keep.txt")).unwrap(), b"untouched");

    assert_eq!(unit.outcome(), RunOutcome::Rebooted);
}

#[test]
fn ramdump_32_bit_table() {
    bounded(|| ramdump_round_trip("ec25-crash", 31, false, false));
}

#[test]
fn ramdump_64_bit_table() {
    bounded(|| ramdump_round_trip("rm502q-crash", 64, true, true));
}

#[test]
fn ramdump_hostile_names_stay_plain_and_inside_the_folder() {
    bounded(|| {
        let p = Profile::by_name("ec25-crash-hostile").unwrap();
        assert!(p.has_hostile_names());
        ramdump_round_trip("ec25-crash-hostile", 666, false, false);
    });
}

// ------------------------------------------------------------------------------------ faults

#[test]
fn drop_after_is_device_lost_with_exit_code_6() {
    bounded(|| {
        let profile = Profile::by_name("ec25").unwrap();
        let prog = profile.programmer(9);
        let traffic = upload_traffic(&prog, false);
        // The seeded number is the one the unit draws; make sure it falls inside the upload.
        let seed = 5;
        let range = 64..(profile.programmer_size as u64 + 64 * 1024);
        let seeded = FaultPlan::new(vec![Fault::DropAfter(None)], seed)
            .drop_after(range)
            .unwrap();
        assert!(
            seeded < traffic,
            "seed {seed} drops after {seeded} of {traffic}"
        );
        for (spec, seed) in [
            ("drop-after:64".to_string(), 1),
            ("drop-after:150000".to_string(), 1),
            ("drop-after".to_string(), seed),
        ] {
            let (host, unit) = Unit::start(
                unit_cfg(profile.clone(), &[spec.as_str()], seed),
                PACKET_512,
            );
            let mut s = SaharaSession::new(host, SaharaConfig::default());
            let t = Instant::now();
            let e = s
                .upload(&prog, &mut |_| {})
                .expect_err("the link dropped mid-upload");
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{spec}: {:?}",
                t.elapsed()
            );
            assert_eq!(e.kind, ErrorKind::DeviceLost, "{spec}: {e}");
            assert_eq!(e.exit_code(), 6);
            let m = lower(&e);
            assert!(m.contains("left the bus"), "{spec}: {e}");
            assert!(m.contains("try again"), "{spec}: {e}");
            assert_eq!(unit.programmer_runs(), 0);
            assert_eq!(unit.outcome(), RunOutcome::LinkDropped, "{spec}");
        }
    });
}

#[test]
fn refused_programmer_names_status_0x25_and_the_package_programmer() {
    bounded(|| {
        let profile = Profile::by_name("ec25").unwrap();
        let prog = profile.programmer(10);
        let (host, unit) = Unit::start(
            unit_cfg(profile.clone(), &["refuse-programmer"], 10),
            Framing::Stream,
        );
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let e = s.upload(&prog, &mut |_| {}).expect_err("refused");
        assert_eq!(e.kind, ErrorKind::Failure);
        assert_eq!(e.exit_code(), 1);
        let m = lower(&e);
        assert!(m.contains("0x25"), "{e}");
        assert!(m.contains("refused"), "{e}");
        assert!(m.contains("programmer"), "{e}");
        assert!(m.contains("own firmware package"), "{e}");
        assert_eq!(unit.programmer_runs(), 0);
        assert_eq!(unit.finish(), RunOutcome::Stopped);
    });
}

#[test]
fn programmer_signed_for_another_unit_is_refused_with_0x25() {
    bounded(|| {
        let mine = Profile::by_name("ec25").unwrap().for_unit(3);
        let other = Profile::by_name("ec25").unwrap().for_unit(4);
        assert_ne!(mine.identity.pk_hash, other.identity.pk_hash);
        let prog = other.programmer(11);
        let (host, unit) = Unit::start(unit_cfg(mine.clone(), &[], 3), Framing::Stream);
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let e = s.upload(&prog, &mut |_| {}).expect_err("wrong unit");
        assert_eq!(e.kind, ErrorKind::Failure);
        let m = lower(&e);
        assert!(m.contains("0x25"), "{e}");
        assert!(m.contains("own firmware package"), "{e}");
        assert_eq!(unit.programmer_runs(), 0);
        assert_eq!(unit.finish(), RunOutcome::Stopped);
    });
}

#[test]
fn consumed_hello_is_recovered_with_an_unsolicited_hello_resp() {
    bounded(|| {
        let profile = Profile::by_name("ec25").unwrap().for_unit(21);
        let prog = profile.programmer(21);
        let (host, unit) = Unit::start(
            unit_cfg(profile.clone(), &["consume-hello"], 21),
            Framing::Stream,
        );
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let rep = s
            .upload(&prog, &mut |_| {})
            .expect("the unsolicited HELLO_RESP recovers the upload");
        assert_eq!(rep.bytes_sent, planned_bytes(&prog).0);
        assert!(
            rep.notes
                .iter()
                .any(|n| n.to_lowercase().contains("unsolicited")),
            "{:?}",
            rep.notes
        );
        let mut t = s.into_transport();
        read_until(&mut t, "</data>");
        assert_eq!(unit.programmer_runs(), 1);
        assert_eq!(unit.finish(), RunOutcome::PoweredOff);
        drop(t);
    });
}

#[test]
fn mid_session_device_fails_quickly_with_power_cycle_advice() {
    bounded(|| {
        let profile = Profile::by_name("ec25").unwrap();
        let prog = profile.programmer(12);
        let (host, unit) = Unit::start(
            unit_cfg(profile.clone(), &["mid-session:200"], 12),
            Framing::Stream,
        );
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let t = Instant::now();
        let e = s
            .upload(&prog, &mut |_| {})
            .expect_err("past the handshake");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the error took {:?}",
            t.elapsed()
        );
        assert_eq!(e.kind, ErrorKind::Failure);
        assert_eq!(e.exit_code(), 1);
        let m = lower(&e);
        assert!(m.contains("past the handshake"), "{e}");
        assert!(m.contains("power-cycle") || m.contains("replug"), "{e}");
        assert_eq!(unit.programmer_runs(), 0);
        assert_eq!(unit.finish(), RunOutcome::Stopped);
    });
}

#[test]
fn mid_session_after_the_unsolicited_hello_resp_also_fails_plainly() {
    bounded(|| {
        // Silent for longer than the hello wait: the host's recovery HELLO_RESP is swallowed,
        // then the stale END_OF_IMAGE arrives and the restart is refused.
        let profile = Profile::by_name("ec25").unwrap();
        let prog = profile.programmer(13);
        let (host, unit) = Unit::start(
            unit_cfg(profile.clone(), &["mid-session:1500"], 13),
            Framing::Stream,
        );
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let t = Instant::now();
        let e = s
            .upload(&prog, &mut |_| {})
            .expect_err("past the handshake");
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(e.kind, ErrorKind::Failure);
        let m = lower(&e);
        assert!(m.contains("past the handshake"), "{e}");
        assert!(m.contains("power-cycle") || m.contains("replug"), "{e}");
        assert_eq!(unit.programmer_runs(), 0);
        assert_eq!(unit.finish(), RunOutcome::Stopped);
    });
}

#[test]
fn consumed_hello_read_info_then_upload() {
    bounded(|| {
        let profile = Profile::by_name("rm520n").unwrap().for_unit(22);
        let prog = profile.programmer(22);
        let (host, unit) = Unit::start(
            unit_cfg(profile.clone(), &["consume-hello"], 22),
            PACKET_512,
        );
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let info = s.read_info().expect("info after an unsolicited HELLO_RESP");
        assert_eq!(info.serial, Some(profile.identity.serial));
        assert!(info.chip_id_v3.is_some());
        assert!(
            info.notes
                .iter()
                .any(|n| n.to_lowercase().contains("unsolicited")),
            "{:?}",
            info.notes
        );
        let rep = s.upload(&prog, &mut |_| {}).expect("upload after info");
        assert_eq!(rep.bytes_sent, planned_bytes(&prog).0);
        let mut t = s.into_transport();
        read_until(&mut t, "</data>");
        assert_eq!(unit.programmer_runs(), 1);
        assert_eq!(unit.finish(), RunOutcome::PoweredOff);
        drop(t);
    });
}

#[test]
fn delayed_answers_still_upload() {
    bounded(|| {
        let profile = Profile::by_name("ec25").unwrap().for_unit(50);
        // A small programmer keeps the run short: every device write waits 50 ms.
        let prog =
            elf::generate_programmer(&profile.identity.pk_hash, 64 * 1024, ElfClass::Elf32, 50);
        let (host, unit) = Unit::start(
            unit_cfg(profile.clone(), &["delay:50"], 50),
            Framing::Stream,
        );
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let rep = s
            .upload(&prog, &mut |_| {})
            .expect("a slow device still works");
        assert_eq!(rep.bytes_sent, planned_bytes(&prog).0);
        // Every request was delayed: the delay really was in effect.
        assert!(
            rep.elapsed_ms >= rep.requests * 50,
            "{} ms for {} requests",
            rep.elapsed_ms,
            rep.requests
        );
        let mut t = s.into_transport();
        read_until(&mut t, "</data>");
        assert_eq!(unit.programmer_runs(), 1);
        assert_eq!(unit.finish(), RunOutcome::PoweredOff);
        drop(t);
    });
}

#[test]
fn done_pending_is_accepted_by_the_quirk() {
    bounded(|| {
        let profile = Profile::by_name("rm520n").unwrap().for_unit(60);
        let prog = profile.programmer(60);
        let (host, unit) = Unit::start(
            unit_cfg(profile.clone(), &["done-pending"], 60),
            Framing::Stream,
        );
        let (tap, from_device) = Tap::new(host);
        let mut s = SaharaSession::new(tap, SaharaConfig::default());
        let rep = s.upload(&prog, &mut |_| {}).expect("pending quirk");
        assert!(rep.pending_quirk);
        assert!(
            rep.notes.iter().any(|n| n.contains("pending")),
            "{:?}",
            rep.notes
        );
        assert_eq!(
            packets(&from_device.lock().unwrap()).last(),
            Some(&Packet::DoneResp { status: 0 })
        );
        let mut t = s.into_transport();
        read_until(&mut t, "</data>");
        assert_eq!(unit.programmer_runs(), 1);
        assert_eq!(unit.finish(), RunOutcome::PoweredOff);
        drop(t);
    });
}

#[test]
fn a_silent_port_is_no_device_with_exit_code_3() {
    bounded(|| {
        // A device end that stays connected but never answers.
        let (mut dev, host) = pipe::pair(Framing::Stream);
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let t = Instant::now();
        let e = s
            .upload(&[0x7f; 4096], &mut |_| {})
            .expect_err("nobody there");
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "NoDevice took {:?}",
            t.elapsed()
        );
        assert_eq!(e.kind, ErrorKind::NoDevice);
        assert_eq!(e.exit_code(), 3);
        let m = lower(&e);
        assert!(m.contains("sent nothing"), "{e}");
        assert!(m.contains("replug") || m.contains("power-cycle"), "{e}");
        // The host tried qdl's recovery once: an unsolicited HELLO_RESP, nothing else.
        let mut sent = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(n) = dev.read(&mut buf, Duration::from_millis(50)) {
            sent.extend_from_slice(&buf[..n]);
        }
        let p = packets(&sent);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].cmd(), CMD_HELLO_RESP);
    });
}

#[test]
fn link_drop_during_a_ramdump_is_device_lost_and_leaves_no_partial_files() {
    bounded(|| {
        let profile = Profile::by_name("ec25-crash").unwrap();
        // Inside the first (8 MiB) region.
        let (host, unit) = Unit::start(
            unit_cfg(profile, &["drop-after:300000"], 14),
            Framing::Stream,
        );
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("dump");
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let e = s.ramdump(&out, &mut |_| {}).expect_err("the link dropped");
        assert_eq!(e.kind, ErrorKind::DeviceLost, "{e}");
        assert_eq!(e.exit_code(), 6);
        assert!(lower(&e).contains("left the bus"), "{e}");
        let left: Vec<_> = fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(left.is_empty(), "partial files left behind: {left:?}");
        assert_eq!(unit.outcome(), RunOutcome::LinkDropped);
    });
}

#[test]
fn wrong_personality_is_refused_plainly_and_the_hello_is_kept() {
    bounded(|| {
        // ramdump on a download-mode unit: refused, and the upload that follows still works.
        let profile = Profile::by_name("ec25").unwrap().for_unit(15);
        let prog = profile.programmer(15);
        let (host, unit) = Unit::start(unit_cfg(profile, &[], 15), Framing::Stream);
        let root = tempfile::tempdir().unwrap();
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let e = s
            .ramdump(&root.path().join("dump"), &mut |_| {})
            .expect_err("no crash dump");
        assert_eq!(e.kind, ErrorKind::Failure);
        assert!(lower(&e).contains("not crash-dump mode"), "{e}");
        s.upload(&prog, &mut |_| {})
            .expect("upload after the refused dump");
        let mut t = s.into_transport();
        read_until(&mut t, "</data>");
        assert_eq!(unit.programmer_runs(), 1);
        assert_eq!(unit.finish(), RunOutcome::PoweredOff);
        drop(t);

        // upload on a crash-dump unit: refused, and the dump that follows still works.
        let profile = Profile::by_name("ec25-crash").unwrap();
        let (host, unit) = Unit::start(unit_cfg(profile.clone(), &[], 16), Framing::Stream);
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let e = s
            .upload(
                &Profile::by_name("ec25").unwrap().programmer(16),
                &mut |_| {},
            )
            .expect_err("a crash-dump unit takes no programmer");
        assert_eq!(e.kind, ErrorKind::Failure);
        let m = lower(&e);
        assert!(m.contains("crash-dump mode"), "{e}");
        assert!(m.contains("ramdump"), "{e}");
        let out = root.path().join("dump2");
        let rep = s
            .ramdump(&out, &mut |_| {})
            .expect("dump after the refused upload");
        assert_eq!(rep.regions.len(), profile.regions.len());
        assert!(rep.regions.iter().all(|r| r.status == "ok"));
        assert_eq!(unit.programmer_runs(), 0);
        assert_eq!(unit.outcome(), RunOutcome::Rebooted);
    });
}

#[test]
fn read_info_twice_then_upload() {
    bounded(|| {
        let profile = Profile::by_name("ec25").unwrap().for_unit(17);
        let prog = profile.programmer(17);
        let (host, unit) = Unit::start(unit_cfg(profile.clone(), &[], 17), PACKET_512);
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let a = s.read_info().expect("first info");
        let b = s.read_info().expect("second info from the re-sent HELLO");
        assert_eq!(a.serial, Some(profile.identity.serial));
        assert_eq!(b.serial, a.serial);
        assert_eq!(b.pk_hash, a.pk_hash);
        assert_eq!(b.hw_id, a.hw_id);
        s.upload(&prog, &mut |_| {})
            .expect("upload after two info passes");
        let mut t = s.into_transport();
        read_until(&mut t, "</data>");
        assert_eq!(unit.finish(), RunOutcome::PoweredOff);
        drop(t);
    });
}

/// A port where a Firehose programmer already runs: its first bytes are a log document.
fn firehose_port() -> (PipeEnd, PipeEnd) {
    let (mut dev, host) = pipe::pair(Framing::Stream);
    dev.write(FIREHOSE_LOG.as_bytes(), WAIT).unwrap();
    (dev, host)
}

#[test]
fn firehose_already_running_upload_reports_it_and_keeps_the_xml() {
    bounded(|| {
        let (dev, host) = firehose_port();
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let rep = s
            .upload(&[0x55; 4096], &mut |_| {})
            .expect("already running is Ok");
        assert!(rep.already_running);
        assert_eq!((rep.bytes_sent, rep.requests), (0, 0));
        // Nothing was sent to the programmer and none of its XML was lost.
        assert_eq!(dev.available(), 0);
        let log = read_until(&mut s.into_transport(), "</data>");
        assert_eq!(log, FIREHOSE_LOG);
    });
}

#[test]
fn firehose_already_running_read_info_says_so() {
    bounded(|| {
        let (_dev, host) = firehose_port();
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let e = s.read_info().expect_err("no boot ROM to ask");
        assert_eq!(e.kind, ErrorKind::Failure);
        let m = lower(&e);
        assert!(m.contains("programmer is already running"), "{e}");
        assert!(
            m.contains("power-cycle") || m.contains("flash directly"),
            "{e}"
        );
    });
}
