//! `qrescue demo`: a guided rescue of a built-in emulated modem, in this process, with the same
//! engine, checks and protocols a real modem gets — only the device is emulated. It prints each
//! step with what it does and why. (The full-screen console replaces this line-mode walk-through
//! later; the steps stay the same.)

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::cli::args::{DemoArgs, DemoScenario};
use crate::cli::firehose_cmds::EventPrinter;
use crate::cli::output::{self, Output};
use crate::cli::{recording, sahara_cmds, signals, sim_cmd};
use crate::engine::firehose::{FirehoseOptions, FirehoseSession, PowerMode, Read};
use crate::engine::flash::{self, FlashJob, FlashPlan, FlashStep};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::sim::device::DeviceConfig;
use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
use crate::sim::firehose::storage::StorageProfile;
use crate::sim::inproc::InProcessModem;
use crate::sim::package_gen::{self, PackageOptions};
use crate::sim::profile::Profile;
use crate::transport::pipe::PipeEnd;
use crate::transport::record::RecordingTransport;
use crate::transport::{pipe, Framing};
use crate::{Error, ErrorKind};

fn heading(out: &Output, n: usize, total: usize, title: &str, why: &str) {
    recording::mark(&format!("demo step {n}/{total}: {title}"));
    out.line("");
    out.line(format!("── Step {n}/{total}: {title}"));
    out.line(format!("   {why}"));
}

fn pause(args: &DemoArgs) {
    if !args.fast {
        std::thread::sleep(Duration::from_millis(600));
    }
}

pub fn run(args: &DemoArgs, out: &Output) -> crate::Result<()> {
    match args.scenario {
        DemoScenario::Unbrick => unbrick(args, out),
        DemoScenario::Crash => crash(args, out),
    }
}

fn start_modem(
    args: &DemoArgs,
    unit: &Profile,
    storage: &StorageProfile,
) -> (RecordingTransport<PipeEnd>, InProcessModem) {
    let (host, dev) = pipe::pair_named(Framing::Stream, "emulated modem (in-process)", "device");
    let programmer = Programmer::new(
        storage,
        ProgrammerOptions {
            // Real Quectel NAND writes at about 4 MB/s (PROTOCOLS.md §10).
            throughput_limit: if args.fast { None } else { Some(4_000_000) },
            ..ProgrammerOptions::default()
        },
    );
    let modem = InProcessModem::start(dev, DeviceConfig::new(unit.clone()), programmer);
    (recording::wrap(host), modem)
}

fn unbrick(args: &DemoArgs, out: &Output) -> crate::Result<()> {
    let total = 6;
    let unit = sim_cmd::unit_profile(&args.profile, crate::cli::args::SimMode::Edl, 1)?;
    let storage = sim_cmd::storage_profile(&unit, Some(args.storage), None)?;
    out.line(format!(
        "qrescue demo — rescuing an emulated {} ({}) that is stuck in emergency download mode.",
        unit.name, unit.description
    ));
    out.line("Everything below is the real qrescue engine; only the modem is emulated.");
    let (mut link, modem) = start_modem(args, &unit, &storage);

    heading(
        out,
        1,
        total,
        "Identify the modem",
        "Before touching anything, read who it is: the boot ROM answers over Sahara with its serial, chip and signing key.",
    );
    let mut sahara = SaharaSession::new(&mut link, SaharaConfig::default());
    let info = sahara.read_info()?;
    for l in sahara_cmds::describe_info(&info) {
        out.line(format!("   {l}"));
    }
    pause(args);

    heading(
        out,
        2,
        total,
        "Check the firmware package",
        "A package built for this exact model and flash; qrescue validates the whole plan before sending a byte.",
    );
    let dir = tempfile::tempdir().map_err(|e| {
        Error::failure(
            "Cannot create a temporary folder for the demo package",
            "the demo writes a small fake firmware package",
            "Check that /tmp is writable",
        )
        .with_source(e)
    })?;
    let summary = package_gen::emit(
        &dir.path().join("package"),
        &unit,
        &storage,
        PackageOptions {
            image_bytes: 8 << 20,
            seed: 1,
        },
    )?;
    let plan = FlashPlan::from_xml(
        &summary.rawprogram[0],
        summary.patch.first().map(|p| p.as_path()),
        None,
    )?;
    let programs: Vec<&FlashStep> = plan
        .steps
        .iter()
        .filter(|s| matches!(s, FlashStep::Program { .. }))
        .collect();
    out.line(format!(
        "   Package for {} on {}: {} steps, {} partitions to program, {} to write.",
        unit.name,
        summary.storage,
        plan.steps.len(),
        programs.len(),
        output::bytes(plan.total_bytes())
    ));
    out.line("   Left alone: the partitions that hold this unit's own calibration, IMEI and NV data (EFS) — an update package never writes them.");
    pause(args);

    heading(
        out,
        3,
        total,
        "Upload the programmer and flash",
        "The programmer from the package goes to the boot ROM over Sahara; then Firehose writes each partition (erase first, the bootloader last).",
    );
    let programmer = std::fs::read(&summary.programmer).map_err(|e| {
        Error::failure(
            "Cannot read the demo programmer",
            "it was just written",
            "Run the demo again",
        )
        .with_source(e)
    })?;
    let job = FlashJob {
        programmer: Some(programmer),
        reset: None,
        ..FlashJob::default()
    };
    let mut printer = EventPrinter::new(*out);
    // The identify step's session kept the HELLO the boot ROM re-sent after command mode; its
    // transport hands that back, so the upload starts at once.
    let mut link = sahara.into_transport();
    flash::run(
        &mut link,
        &plan,
        &job,
        &mut |e| printer.event(&e),
        signals::flag(),
    )?;

    heading(
        out,
        4,
        total,
        "Verify by reading back",
        "\"Written\" is not \"working\": every partition is read back from the modem and compared with the package.",
    );
    let mut fh = FirehoseSession::new(&mut link, Vec::new(), FirehoseOptions::default());
    fh.configure(plan.storage)?;
    // The bytes to compare are the ones the flash streamed: host-side patches (the MIBIB's
    // size) computed from the geometry the modem reports, as the flash engine did.
    let mut geo = std::collections::BTreeMap::new();
    if let Ok(info) = fh.storage_info(0) {
        if !info.is_empty() {
            geo.insert(0, info);
        }
    }
    let ready = plan.for_device(&geo)?;
    let mut mismatches = 0;
    for step in ready
        .steps
        .iter()
        .filter(|s| matches!(s, FlashStep::Program { .. }))
    {
        let FlashStep::Program { name, cmd, source } = step else {
            continue;
        };
        let mut read = Read::new(
            cmd.sector_size,
            cmd.num_sectors,
            cmd.physical_partition,
            cmd.start_sector.clone(),
        );
        read.last_sector = cmd.last_sector;
        let mut back = Vec::new();
        fh.read(&read, &mut back, &mut |_| {})?;
        // The bytes the flash streamed (host patches applied), read through the package.
        let mut image = ready.source_bytes(source, 1 << 30).map_err(|e| {
            Error::failure(
                "Cannot read a package image",
                format!("it was just written ({})", e.what),
                "Run the demo again",
            )
        })?;
        image.resize(back.len(), 0);
        let ok = Sha256::digest(&image) == Sha256::digest(&back);
        if !ok {
            mismatches += 1;
        }
        out.line(format!(
            "   {:<14} {:>10}  {}",
            name,
            output::bytes(source.len()),
            if ok {
                "read back, sha256 matches"
            } else {
                "MISMATCH"
            }
        ));
    }
    if mismatches > 0 {
        return Err(Error::new(
            ErrorKind::VerifyMismatch,
            format!("{mismatches} partitions read back differently from the package"),
            "the modem would not boot reliably from this flash",
            "Run the flash again; if it repeats, the flash memory is failing",
        ));
    }

    heading(
        out,
        5,
        total,
        "Restart the modem",
        "Tell the programmer to reset; a real modem now boots its new firmware.",
    );
    fh.power(PowerMode::Reset, 1)?;
    drop(fh);
    out.line("   Reset sent; the emulated modem went back to its boot ROM.");
    pause(args);

    heading(
        out,
        6,
        total,
        "Verdict",
        "Only a modem that boots and keeps its identity counts as rescued.",
    );
    out.line(format!(
        "   Flashed and verified by read-back ({} partitions). On a real modem qrescue next waits for normal mode and checks the IMEI and calibration are unchanged (`qrescue update`, coming next).",
        programs.len()
    ));
    let started = Instant::now();
    drop(link);
    let _ = modem.finish();
    tracing::debug!("emulated modem stopped in {:?}", started.elapsed());
    out.line("");
    out.line("Try it from two terminals: `qrescue sim --pty` and then `qrescue info --port <pty>`; see README.md.");
    Ok(())
}

fn crash(args: &DemoArgs, out: &Output) -> crate::Result<()> {
    let unit = sim_cmd::unit_profile(&args.profile, crate::cli::args::SimMode::Crash, 1)?;
    let storage = sim_cmd::storage_profile(&unit, Some(args.storage), None)?;
    out.line(format!(
        "qrescue demo — an emulated {} crashed and shows up as 05c6:900e (crash-dump mode).",
        unit.name
    ));
    let (mut link, modem) = start_modem(args, &unit, &storage);
    heading(
        out,
        1,
        2,
        "Save the RAM dump",
        "The crash left its memory readable over Sahara; the dump is what a developer needs to find the cause.",
    );
    let dir = tempfile::tempdir().map_err(|e| {
        Error::failure(
            "Cannot create a temporary folder",
            "the dump goes there",
            "Check /tmp",
        )
        .with_source(e)
    })?;
    let mut s = SaharaSession::new(&mut link, SaharaConfig::default());
    let report = s.ramdump(dir.path(), &mut |_| {})?;
    for r in &report.regions {
        out.line(format!(
            "   {:<12} {:>10}  sha256 {}",
            r.name,
            output::bytes(r.length),
            r.sha256.as_deref().map(|h| &h[..16]).unwrap_or("-")
        ));
    }
    out.line(format!(
        "   {} saved with a manifest in {:.1} s.",
        output::bytes(report.bytes_written),
        report.elapsed_ms as f64 / 1000.0
    ));
    heading(
        out,
        2,
        2,
        "Next",
        "After the dump the modem resets; to reflash it, bring it to 9008 (download mode) and run the unbrick flow.",
    );
    drop(s);
    drop(link);
    let _ = modem.finish();
    let _ = args;
    Ok(())
}
