//! Recordings end to end: record sessions of the real engine against the in-process emulator,
//! replay them ([`ReplayTransport`] as the device) against a fresh engine run, and require the
//! same events and bytes; a changed byte gives a clear expected-vs-actual error; no serial
//! number of the emulated unit reaches the file; every committed recording in `recordings/`
//! parses, and the committed flash recording replays.
//!
//! Every test body runs under [`bounded`]: a hang fails the test instead of stalling the suite.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use qrescue::cli::args::{SimMode, StorageArg};
use qrescue::cli::sim_cmd;
use qrescue::engine::events::EngineEvent;
use qrescue::engine::firehose::PowerMode;
use qrescue::engine::flash::{self, FlashJob, FlashPlan};
use qrescue::engine::sahara::{SaharaConfig, SaharaSession};
use qrescue::record::writer::lock;
use qrescue::record::{Body, Payload, RecordOptions, Recorder, Recording, SharedRecorder};
use qrescue::sim::device::DeviceConfig;
use qrescue::sim::firehose::{Programmer, ProgrammerOptions, StorageProfile};
use qrescue::sim::inproc::InProcessModem;
use qrescue::sim::package_gen::{self, PackageOptions, PackageSummary};
use qrescue::sim::profile::Profile;
use qrescue::transport::pipe;
use qrescue::transport::record::RecordingTransport;
use qrescue::transport::replay::ReplayTransport;
use qrescue::transport::{Framing, Transport};
use qrescue::ErrorKind;

const BODY_LIMIT: Duration = Duration::from_secs(60);

/// Run `body` on its own thread; fail if it panics or takes longer than [`BODY_LIMIT`].
fn bounded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(BODY_LIMIT) {
        Ok(()) => h.join().expect("body finished"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body ends by sending or by panicking"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test body did not finish within {BODY_LIMIT:?}: something hangs")
        }
    }
}

/// A unit, its storage and a generated package with the plan and job to flash it.
struct Setup {
    unit: Profile,
    storage: StorageProfile,
    summary: PackageSummary,
    plan: FlashPlan,
    job: FlashJob,
    _dir: tempfile::TempDir,
}

/// The unit and package `qrescue sim --profile P --seed 1 --emit-package DIR --package-mib M`
/// makes, and the plan and job `qrescue flash --rawprogram … --patch …` runs.
fn setup(profile: &str, mib: u64) -> Setup {
    let unit = sim_cmd::unit_profile(profile, SimMode::Edl, 1).unwrap();
    let storage = sim_cmd::storage_profile(&unit, None::<StorageArg>, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = package_gen::emit(
        &dir.path().join("package"),
        &unit,
        &storage,
        PackageOptions {
            image_bytes: mib << 20,
            seed: 1,
        },
    )
    .unwrap();
    let plan = FlashPlan::from_xml(
        &summary.rawprogram[0],
        summary.patch.first().map(|p| p.as_path()),
        None,
    )
    .unwrap();
    let job = FlashJob {
        programmer: Some(std::fs::read(&summary.programmer).unwrap()),
        reset: Some(PowerMode::Reset),
        ..FlashJob::default()
    };
    Setup {
        unit,
        storage,
        summary,
        plan,
        job,
        _dir: dir,
    }
}

fn start_modem(s: &Setup) -> (pipe::PipeEnd, InProcessModem) {
    let (host, dev) = pipe::pair_named(Framing::Stream, "emulated modem (in-process)", "device");
    let modem = InProcessModem::start(
        dev,
        DeviceConfig::new(s.unit.clone()),
        Programmer::new(&s.storage, ProgrammerOptions::default()),
    );
    (host, modem)
}

fn new_recorder(path: &Path, opts: RecordOptions) -> SharedRecorder {
    Recorder::create(path, opts).unwrap().shared()
}

/// Events without what depends on time (progress, rates, durations).
fn timeless(events: &[EngineEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            EngineEvent::Progress { .. } => None,
            EngineEvent::StepFinished { index, bytes, .. } => {
                Some(format!("finished {index} {bytes}"))
            }
            EngineEvent::Done { ok, bytes, .. } => Some(format!("done {ok} {bytes}")),
            other => Some(serde_json::to_string(other).unwrap()),
        })
        .collect()
}

fn flash_events(t: impl Transport, s: &Setup) -> (qrescue::Result<()>, Vec<EngineEvent>) {
    let mut events = Vec::new();
    let cancel = AtomicBool::new(false);
    let r = flash::run(t, &s.plan, &s.job, &mut |e| events.push(e), &cancel).map(|_| ());
    (r, events)
}

/// Record `flash::run` against the emulator into `path`; returns the engine's events.
fn record_flash(s: &Setup, path: &Path, opts: RecordOptions) -> Vec<EngineEvent> {
    let rec = new_recorder(path, opts);
    let (host, modem) = start_modem(s);
    let mut link = RecordingTransport::new(host, &rec);
    let (r, events) = flash_events(&mut link, s);
    r.unwrap();
    drop(link);
    drop(modem);
    lock(&rec).finish().unwrap();
    events
}

#[test]
fn a_recorded_flash_replays_with_the_same_events_and_bytes() {
    bounded(|| {
        let s = setup("ec25", 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.jsonl");
        let recorded = record_flash(&s, &path, RecordOptions::default());

        let recording = Recording::open(&path).unwrap();
        let streams = recording.streams();
        assert_eq!(streams.len(), 1);
        // Images went out as digests: the file holds no firmware.
        assert!(streams[0].hashed > 0);
        assert!(streams[0].bytes_out > s.summary.image_bytes);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 200_000, "{size} bytes");

        let mut replay = ReplayTransport::first(&recording).unwrap();
        let (r, replayed) = flash_events(&mut replay, &s);
        r.unwrap();
        replay.finish().unwrap();
        assert_eq!(timeless(&replayed), timeless(&recorded));
    });
}

#[test]
fn one_changed_byte_gives_expected_versus_actual_with_the_line() {
    bounded(|| {
        let s = setup("ec25", 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flash.jsonl");
        record_flash(&s, &path, RecordOptions::default());

        // Change one byte of the first programmed image.
        let image = s
            .summary
            .files
            .iter()
            .find(|f| f.partition.is_some() && f.bytes > 0)
            .map(|f| s.summary.root.join(&f.path))
            .expect("an image file");
        let mut bytes = std::fs::read(&image).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&image, &bytes).unwrap();

        let recording = Recording::open(&path).unwrap();
        let mut replay = ReplayTransport::first(&recording).unwrap();
        let (r, _) = flash_events(&mut replay, &s);
        assert!(r.is_err(), "the flash must stop at the changed byte");
        let e = replay.finish().unwrap_err();
        assert_eq!(e.kind, ErrorKind::VerifyMismatch);
        let m = replay.mismatch().unwrap();
        assert!(m.line > 2);
        assert!(e.what.contains(&format!("line {}", m.line)), "{e}");
        assert!(m.expected.contains("sha256"), "{e}");
        assert!(m.actual.contains("sha256"), "{e}");
        assert_ne!(m.expected, m.actual);
        // The named line is the recorded write.
        let line = recording.events.iter().find(|l| l.line == m.line).unwrap();
        assert!(matches!(
            line.event.body,
            Body::Out {
                data: Payload::Digest { .. },
                ..
            }
        ));
    });
}

/// All the ways the serial of `unit` could be written.
fn serial_forms(serial: u32) -> Vec<String> {
    vec![
        format!("{serial:08x}"),
        format!("{serial:08X}"),
        format!("{serial:x}"),
        format!("{serial}"),
        hex::encode(serial.to_le_bytes()),
    ]
}

#[test]
fn identify_and_flash_records_no_serial_and_still_replays() {
    bounded(|| {
        let s = setup("rm502q", 1);
        let serial = s.unit.identity.serial;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.jsonl");
        let rec = new_recorder(&path, RecordOptions::default());
        let (host, modem) = start_modem(&s);
        let link = RecordingTransport::new(host, &rec);
        let mut sahara = SaharaSession::new(link, SaharaConfig::default());
        let info = sahara.read_info().unwrap();
        assert_eq!(info.serial, Some(serial));
        let link = sahara.into_transport();
        let (r, recorded) = flash_events(link, &s);
        r.unwrap();
        drop(modem);
        lock(&rec).finish().unwrap();
        drop(rec);

        let text = std::fs::read_to_string(&path).unwrap();
        for form in serial_forms(serial) {
            assert!(
                !text.contains(&form),
                "the serial appears in the recording as {form}"
            );
        }
        // The programmer's log line is there, with the pseudonym.
        assert!(text.contains("Chip serial num: "), "no serial log seen");

        let recording = Recording::open(&path).unwrap();
        let replay = ReplayTransport::first(&recording).unwrap();
        let mut sahara = SaharaSession::new(replay, SaharaConfig::default());
        let info = sahara.read_info().unwrap();
        assert_eq!(info.serial, Some(1), "the first pseudonym");
        let mut replay = sahara.into_transport();
        let (r, replayed) = flash_events(&mut replay, &s);
        r.unwrap();
        replay.inner().finish().unwrap();
        assert_eq!(timeless(&replayed), timeless(&recorded));
    });
}

#[test]
fn imeis_in_at_text_are_redacted() {
    bounded(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("at.jsonl");
        let rec = new_recorder(&path, RecordOptions::default());
        let (host, mut dev) = pipe::pair(Framing::Stream);
        let mut host = RecordingTransport::new(host, &rec);
        let t = Duration::from_secs(2);
        host.write(b"AT+GSN\r", t).unwrap();
        let mut buf = [0u8; 64];
        dev.read(&mut buf, t).unwrap();
        // The answer arrives in two pieces that split the IMEI.
        dev.write(b"\r\n8635080", t).unwrap();
        let n = host.read(&mut buf, t).unwrap();
        assert_eq!(&buf[..n], b"\r\n8635080");
        dev.write(b"41234567\r\n\r\nOK\r\n", t).unwrap();
        let n = host.read(&mut buf, t).unwrap();
        assert_eq!(&buf[..n], b"41234567\r\n\r\nOK\r\n");
        drop(host);
        lock(&rec).finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("8635080"), "{text}");
        assert!(!text.contains("41234567"), "{text}");
        assert!(text.contains(r#""text":"\r\n0000000""#), "{text}");
        assert!(
            text.contains(r#""text":"00000001\r\n\r\nOK\r\n""#),
            "{text}"
        );
    });
}

/// A crash-dump unit with a small DDR region, so a test recording stays small.
fn crash_setup() -> Setup {
    let mut s = setup("ec25", 1);
    let mut unit = sim_cmd::unit_profile("ec25", SimMode::Crash, 1).unwrap();
    for r in &mut unit.regions {
        r.len = r.len.min(256 << 10);
    }
    s.unit = unit;
    s
}

fn ramdump_shas(t: impl Transport, out: &Path) -> qrescue::Result<Vec<Option<String>>> {
    let mut sahara = SaharaSession::new(t, SaharaConfig::default());
    let report = sahara.ramdump(out, &mut |_| {})?;
    Ok(report.regions.into_iter().map(|r| r.sha256).collect())
}

#[test]
fn a_ramdump_replays_when_recorded_with_all_bytes_and_says_why_not_otherwise() {
    bounded(|| {
        let s = crash_setup();
        let dir = tempfile::tempdir().unwrap();
        for (name, opts) in [
            ("all.jsonl", RecordOptions::default().store_all()),
            ("default.jsonl", RecordOptions::default()),
        ] {
            let path = dir.path().join(name);
            let rec = new_recorder(&path, opts);
            let (host, modem) = start_modem(&s);
            let link = RecordingTransport::new(host, &rec);
            let out = dir.path().join(format!("{name}.live"));
            let recorded = ramdump_shas(link, &out).unwrap();
            drop(modem);
            lock(&rec).finish().unwrap();
            drop(rec);
            assert!(recorded.iter().all(|s| s.is_some()));

            let recording = Recording::open(&path).unwrap();
            let replay_out = dir.path().join(format!("{name}.replayed"));
            let mut replay = ReplayTransport::first(&recording).unwrap();
            let replayed = ramdump_shas(&mut replay, &replay_out);
            if name == "all.jsonl" {
                assert_eq!(replayed.unwrap(), recorded);
                replay.finish().unwrap();
            } else {
                assert!(replayed.is_err());
                let e = replay.finish().unwrap_err();
                assert!(e.what.contains("length + sha256"), "{e}");
                assert!(e.what.contains("line "), "{e}");
            }
        }
    });
}

fn recordings_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recordings")
}

#[test]
fn every_committed_recording_parses_and_the_flash_one_replays() {
    bounded(|| {
        let mut seen = 0;
        let mut flashes = 0;
        for entry in std::fs::read_dir(recordings_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("jsonl") {
                continue;
            }
            seen += 1;
            let recording = Recording::open(&path).unwrap();
            assert!(recording.header.redaction.enabled, "{}", path.display());
            let size = std::fs::metadata(&path).unwrap().len();
            assert!(size < 200_000, "{} is {size} bytes", path.display());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // emulated-flash-<profile>.jsonl: made by recordings/make.sh from
            // `qrescue sim --profile <profile> --emit-package DIR --package-mib 1`.
            if let Some(profile) = name
                .strip_prefix("emulated-flash-")
                .and_then(|n| n.strip_suffix(".jsonl"))
            {
                flashes += 1;
                let s = setup(profile, 1);
                let mut replay = ReplayTransport::first(&recording).unwrap();
                let (r, events) = flash_events(&mut replay, &s);
                if let Err(e) = r {
                    panic!(
                        "{name} does not replay: {e}\n{:?}",
                        replay.finish().err().map(|e| e.to_string())
                    );
                }
                replay.finish().unwrap();
                assert!(events
                    .iter()
                    .any(|e| matches!(e, EngineEvent::Done { ok: true, .. })));
            }
        }
        assert!(seen >= 2, "recordings/ holds {seen} recordings");
        assert!(flashes >= 1, "no emulated-flash-*.jsonl in recordings/");
    });
}
