//! The emulated modem in normal mode, driven by what its storage holds:
//!
//! - in-process: a factory unit answers `+CFUN: 1`; after a real Firehose flash (the engine over a
//!   pipe, ending with `<power value="reset"/>`) with the EFS intact it boots to `+CFUN: 1`; with
//!   its calibration erased through the emulated storage `+CFUN: 5` / `+CSQ: 99,99`; after a flash
//!   of another variant's firmware `+CFUN: 7`.
//! - `qrescue sim --mode normal` from a separate process: AT and DM ptys answer, the DIAG EDL
//!   command ends the normal appearance and 05c6:9008 follows on a new pty.
//!
//! Every body runs under [`bounded`]: a hang fails the test instead of stalling the suite. No
//! assertion depends on timing.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::Duration;

use qrescue::cli::args::{SimMode, StorageArg};
use qrescue::cli::sim_cmd;
use qrescue::engine::flash::{self, FlashJob, FlashPlan};
use qrescue::sim::device::{self, DeviceConfig, RunOutcome};
use qrescue::sim::firehose::storage::Storage;
use qrescue::sim::firehose::{Programmer, ProgrammerOptions};
use qrescue::sim::normal::ports::{InProcessNormal, ServeOptions};
use qrescue::sim::normal::{self, state, unit};
use qrescue::sim::package_gen::{self, PackageOptions};
use qrescue::sim::profile::Profile;
use qrescue::transport::pipe::{self, PipeEnd};
use qrescue::transport::serial::SerialTransport;
use qrescue::transport::{read_exact, Framing, Transport};

const T: Duration = Duration::from_secs(20);

fn bounded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(()) => h.join().expect("body finished"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!(),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the test body hangs"),
    }
}

fn read_until(link: &mut dyn Transport, needle: &[u8]) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(needle.len()).any(|w| w == needle) {
        let n = link.read(&mut buf, T).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

/// What the unit's AT port says to `AT+CFUN?;+CSQ;+QGMR` and `AT+CFUN=1` after it booted from
/// `storage`.
fn at_answers(unit: &Profile, storage: &Storage) -> (String, String) {
    let boot = normal::boot(storage, unit)
        .normal()
        .cloned()
        .expect("boots to normal mode");
    let opts = ServeOptions {
        boot_urcs: false,
        ..ServeOptions::default()
    };
    let (modem, mut host) = InProcessNormal::start(unit, boot, 0, opts);
    host.at.write(b"ATE0\r", T).unwrap();
    read_until(&mut host.at, b"OK\r\n");
    host.at.write(b"AT+CFUN?;+CSQ;+QGMR\r", T).unwrap();
    let state = read_until(&mut host.at, b"OK\r\n");
    host.at.write(b"AT+CFUN=1;+CGSN\r", T).unwrap();
    let mut buf = [0u8; 256];
    let n = host.at.read(&mut buf, T).unwrap();
    let full = String::from_utf8_lossy(&buf[..n]).into_owned();
    modem.finish();
    (state, full)
}

/// Flash `package` (its rawprogram and patch) into the unit whose programmer is `prog`, ending
/// with a reset; the unit boots from storage. Returns the run's end and the programmer.
fn flash(
    unit: &Profile,
    prog: Programmer,
    package: &package_gen::PackageSummary,
) -> (RunOutcome, Programmer) {
    let (host, mut dev): (PipeEnd, PipeEnd) = pipe::pair(Framing::Stream);
    let mut cfg = DeviceConfig::new(unit.clone());
    cfg.boot_from_storage = true;
    let device = std::thread::spawn(move || {
        let mut prog = prog;
        let stop = AtomicBool::new(false);
        let outcome = device::run(&mut dev, &mut cfg, &mut prog, &stop);
        (outcome, prog)
    });
    let plan = FlashPlan::from_xml(
        &package.rawprogram[0],
        package.patch.first().map(|p| p.as_path()),
        None,
    )
    .unwrap();
    let job = FlashJob {
        programmer: Some(std::fs::read(&package.programmer).unwrap()),
        ..FlashJob::default()
    };
    let cancel = AtomicBool::new(false);
    flash::run(host, &plan, &job, &mut |_| {}, &cancel).unwrap();
    device.join().unwrap()
}

#[test]
fn cfun_follows_the_storage_through_flashes_and_an_erased_calibration() {
    bounded(|| {
        let unit = sim_cmd::unit_profile("ec25", SimMode::Edl, 3).unwrap();
        let layout = sim_cmd::storage_profile(&unit, None::<StorageArg>, None).unwrap();
        let mut storage = Storage::new(&layout);
        state::seed_factory(&mut storage, &unit).unwrap();
        let prog = Programmer::with_storage(storage, ProgrammerOptions::default());

        let (s, full) = at_answers(&unit, prog.storage());
        assert_eq!(
            s,
            "\r\n+CFUN: 1\r\n\r\n+CSQ: 21,99\r\n\r\nEC25EFAR06A17M4G_20.200.20.200\r\n\r\nOK\r\n"
        );
        assert_eq!(
            full,
            format!("\r\n{}\r\n\r\nOK\r\n", unit::unit_imei(&unit))
        );

        // An update package leaves the EFS alone: after the flash and reset, still +CFUN: 1.
        let dir = tempfile::tempdir().unwrap();
        let opts = PackageOptions {
            image_bytes: 1 << 20,
            seed: 1,
        };
        let own = package_gen::emit(&dir.path().join("own"), &unit, &layout, opts).unwrap();
        let (outcome, prog) = flash(&unit, prog, &own);
        assert_eq!(
            outcome,
            RunOutcome::Rebooted,
            "the reset boots to normal mode"
        );
        let (s, _) = at_answers(&unit, prog.storage());
        assert!(
            s.starts_with("\r\n+CFUN: 1\r\n\r\n+CSQ: 21,99\r\n"),
            "{s:?}"
        );

        // Calibration erased (the whole EFS2 back to 0xFF through the emulated storage).
        let mut prog = prog;
        let efs2 = state::find_region(prog.storage(), "EFS2").unwrap();
        state::erase_region(prog.storage_mut(), &efs2).unwrap();
        let (s, full) = at_answers(&unit, prog.storage());
        assert!(
            s.starts_with("\r\n+CFUN: 5\r\n\r\n+CSQ: 99,99\r\n"),
            "{s:?}"
        );
        assert_eq!(full, "\r\n+CME ERROR: 3\r\n");
        // Restored from the factory image (what a verified backup restores): +CFUN: 1 again.
        let image = state::factory_efs(&unit).encode();
        state::write_region(prog.storage_mut(), &efs2, &image).unwrap();
        assert_eq!(
            normal::boot(prog.storage(), &unit).normal().unwrap().cfun,
            1
        );

        // Another variant's firmware (EC25-AF on an EC25-E): +CFUN: 7 and phone failure.
        let other = "EC25AFFAR07A08M4G_01.001.01.001";
        let wrong =
            package_gen::emit_firmware(&dir.path().join("wrong"), &unit, &layout, opts, other)
                .unwrap();
        let (outcome, prog) = flash(&unit, prog, &wrong);
        assert_eq!(outcome, RunOutcome::Rebooted);
        let (s, full) = at_answers(&unit, prog.storage());
        assert_eq!(
            s,
            format!("\r\n+CFUN: 7\r\n\r\n+CSQ: 99,99\r\n\r\n{other}\r\n\r\nOK\r\n")
        );
        assert_eq!(full, "\r\n+CME ERROR: 0\r\n");
    });
}

#[test]
fn a_flash_that_restores_the_modem_image_makes_an_unbootable_unit_boot() {
    bounded(|| {
        let unit = sim_cmd::unit_profile("ec25", SimMode::Edl, 4).unwrap();
        let layout = sim_cmd::storage_profile(&unit, None::<StorageArg>, None).unwrap();
        // Factory boot chain, but the modem partition erased: the unit cannot boot, so it sits in
        // its boot ROM (what a 9008 rescue starts from).
        let mut storage = Storage::new(&layout);
        state::seed_factory(&mut storage, &unit).unwrap();
        let modem = state::find_region(&storage, "modem").unwrap();
        state::erase_region(&mut storage, &modem).unwrap();
        assert!(!normal::boot(&storage, &unit).is_normal());
        let dir = tempfile::tempdir().unwrap();
        let opts = PackageOptions {
            image_bytes: 1 << 20,
            seed: 1,
        };
        // The package programs the modem partition again: after it, the unit boots.
        let pkg = package_gen::emit(&dir.path().join("p"), &unit, &layout, opts).unwrap();
        let prog = Programmer::with_storage(storage, ProgrammerOptions::default());
        let (outcome, prog) = flash(&unit, prog, &pkg);
        assert_eq!(outcome, RunOutcome::Rebooted);
        assert_eq!(
            normal::boot(prog.storage(), &unit).normal().unwrap().cfun,
            1
        );
    });
}

#[test]
fn sim_mode_normal_serves_at_and_dm_ptys_and_the_edl_command_brings_9008() {
    bounded(|| {
        let dir = common::tempdir();
        let socket = dir.path().join("sim.sock");
        let (mut child, rx) = common::spawn_lines(
            Command::new(common::bin())
                .args(["sim", "--pty", "--profile", "ec25", "--mode", "normal"])
                .args(["--socket", common::s(&socket)]),
        );
        let next = || common::next_json(&rx, T);
        let ready = next();
        assert_eq!(
            (ready["event"].as_str(), ready["mode"].as_str()),
            (Some("ready"), Some("normal"))
        );
        let appear = next();
        assert_eq!(appear["event"], "appear", "{appear}");
        assert_eq!(appear["usb_id"], "2c7c:0125");
        assert_eq!(appear["ports_served"], true);
        let at = appear["ports"]["at"].as_str().unwrap().to_string();
        let dm = appear["ports"]["dm"].as_str().unwrap().to_string();

        let mut at = SerialTransport::open(Path::new(&at)).unwrap();
        let urcs = read_until(&mut at, b"+QIND: PB DONE\r\n");
        assert!(urcs.starts_with("\r\nRDY\r\n\r\n+CFUN: 1\r\n"), "{urcs:?}");
        at.write(b"ATE0\r", T).unwrap();
        read_until(&mut at, b"OK\r\n");
        at.write(b"AT+CGSN\r", T).unwrap();
        let imei = read_until(&mut at, b"OK\r\n");
        let imei = imei.trim().lines().next().unwrap().to_string();
        assert!(unit::is_valid_imei(&imei), "{imei:?}");
        assert_eq!(
            imei,
            unit::unit_imei(&Profile::by_name("ec25").unwrap().for_unit(1))
        );

        let mut dm = SerialTransport::open(Path::new(&dm)).unwrap();
        let edl = [0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E];
        dm.write(&edl, T).unwrap();
        let mut echo = [0u8; 7];
        read_exact(&mut dm, &mut echo, T).unwrap();
        assert_eq!(echo, edl);

        let ended = next();
        assert_eq!(ended["event"], "normal_exit", "{ended}");
        assert_eq!(ended["reason"], "switch_to_edl");
        let gone = next();
        assert_eq!(
            (gone["event"].as_str(), gone["switching_to"].as_str()),
            (Some("vanish"), Some("edl"))
        );
        let edl_appear = next();
        assert_eq!(edl_appear["usb_id"], "05c6:9008", "{edl_appear}");
        let pty = edl_appear["pty"].as_str().unwrap().to_string();
        let out = common::qrescue(&["info", "--port", &pty], T);
        assert_eq!(common::code(&out), 0, "{}", common::describe(&out));

        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let mut last = serde_json::Value::Null;
        while last["event"] != "exit" {
            last = next();
        }
        assert_eq!(last["outcome"], "stopped");
        child.wait().unwrap();
    });
}

#[test]
fn sim_mode_normal_refuses_a_layout_without_a_modem_partition() {
    let out = common::qrescue(
        &[
            "sim",
            "--pty",
            "--profile",
            "rm520n",
            "--mode",
            "normal",
            "--storage-profile",
            "ufs-qcs6490",
        ],
        T,
    );
    assert_eq!(common::code(&out), 2, "{}", common::describe(&out));
    assert!(
        common::stderr(&out).contains("cannot hold a normal-mode unit"),
        "{}",
        common::describe(&out)
    );
}
