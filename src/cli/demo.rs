//! `qrescue demo` in line mode: a rescue of an emulated modem ([`crate::sim::world`]) in this
//! process, with the same engine, checks and protocols a real modem gets — only the device is
//! emulated. The modem lives on its own emulated USB bus and is found there the way the console
//! finds real ones (a device source and [`Monitor`]); its ptys are opened like qcserial ttys.
//! Each step says what it does and why; the verdict comes from the modem itself: after the
//! flash and its reset, qrescue waits for it to come back in normal mode.
//!
//! The full-screen console runs on the same world ([`start_world`]); this walk-through is what
//! runs without a terminal (and with `--json`).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::cli::args::{DemoArgs, DemoScenario, StorageArg};
use crate::cli::firehose_cmds::EventPrinter;
use crate::cli::output::{self, Output};
use crate::cli::package_cmds;
use crate::cli::{recording, sahara_cmds, signals};
use crate::device::classify::Mode;
use crate::device::identity::DeviceId;
use crate::device::monitor::{Monitor, Update};
use crate::device::{DeviceSnapshot, DeviceSource};
use crate::engine::firehose::{FirehoseOptions, FirehoseSession, PowerMode, Read};
use crate::engine::flash::{self, FlashJob, FlashStep};
use crate::engine::guards::MemoryLedger;
use crate::engine::prepare::{prepare, CompatReport, PrepareRequest, Prepared};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::sim::profile;
use crate::sim::world::{DemoWorld, Scenario, Timing, WorldOptions};
use crate::transport::Transport;
use crate::tui::msg::BenchAction;
use crate::{Error, ErrorKind};

/// The world scenario of `--scenario`.
pub fn scenario(args: &DemoArgs) -> Scenario {
    match args.scenario {
        DemoScenario::Unbrick => Scenario::Unbrick,
        DemoScenario::Update => Scenario::Update,
        DemoScenario::Crash => Scenario::Crash,
        DemoScenario::WrongVariant => Scenario::WrongVariant,
        DemoScenario::Factory => Scenario::Factory,
    }
}

/// The world options of the command line: `--fast` drops the 4 MB/s flash limit and makes
/// reboots ten times quicker (the boot loop keeps its real 14 s / 10 s).
pub fn world_options(args: &DemoArgs) -> WorldOptions {
    WorldOptions {
        profile: args.profile.clone(),
        storage: Some(match args.storage {
            StorageArg::Nand => profile::Storage::Nand,
            StorageArg::Emmc => profile::Storage::Emmc,
            StorageArg::Ufs => profile::Storage::Ufs,
        }),
        throttle: if args.fast { None } else { Some(4_000_000) },
        timing: if args.fast {
            Timing::quick()
        } else {
            Timing::real()
        },
        ..WorldOptions::default()
    }
}

/// The demo world of the command line (for the console and for [`run`]).
pub fn start_world(args: &DemoArgs) -> crate::Result<DemoWorld> {
    DemoWorld::start(scenario(args), world_options(args))
}

/// Step headings.
struct Steps {
    out: Output,
    n: usize,
    total: usize,
}

impl Steps {
    fn next(&mut self, title: &str, why: &str) {
        self.n += 1;
        recording::mark(&format!("demo step {}/{}: {title}", self.n, self.total));
        self.out.json_line(
            &json!({"event": "demo_step", "step": self.n, "of": self.total, "title": title}),
        );
        self.out.line("");
        self.out
            .line(format!("── Step {}/{}: {title}", self.n, self.total));
        self.out.line(format!("   {why}"));
    }
}

/// Where a verified backup would lift a refusal in the demo.
const DEMO_BACKUP_NOTE: &str = "(In the demo there is no backup of the emulated modem; with a real modem, `qrescue backup` makes one.)";

fn pause(args: &DemoArgs) {
    if !args.fast {
        std::thread::sleep(Duration::from_millis(600));
    }
}

/// The world's bus as the console sees it: events through the monitor, one line each.
struct Watch {
    src: Box<dyn DeviceSource>,
    monitor: Monitor,
    started: Instant,
    out: Output,
}

fn mode_words(mode: &Mode) -> String {
    match mode {
        Mode::Edl => "download mode (EDL, Sahara)".into(),
        Mode::CrashDump => "crash-dump mode (Sahara memory debug)".into(),
        Mode::QuectelNormal { model } => format!("normal mode ({model})"),
        other => other.tag().into(),
    }
}

fn tty(d: &DeviceSnapshot) -> Option<String> {
    d.interfaces.iter().find_map(|i| i.tty.clone())
}

impl Watch {
    fn new(world: &DemoWorld, out: Output) -> Watch {
        Watch {
            src: recording::wrap_source(WorldSource(world.source())),
            monitor: Monitor::default(),
            started: Instant::now(),
            out,
        }
    }

    /// The next update that `want` accepts, printing every update on the way; `None` when
    /// nothing was accepted within `within`.
    fn wait(
        &mut self,
        within: Duration,
        want: &mut dyn FnMut(&Update) -> bool,
    ) -> crate::Result<Option<Update>> {
        let end = Instant::now() + within;
        loop {
            if signals::interrupted() {
                return Err(Error::new(
                    ErrorKind::Interrupted,
                    "The demo was stopped",
                    "Ctrl-C",
                    "Run `qrescue demo` again",
                ));
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let Some(e) = self.src.next_event(left.min(Duration::from_millis(200)))? else {
                continue;
            };
            let u = self.monitor.observe(&e);
            self.print(&u);
            if want(&u) {
                return Ok(Some(u));
            }
        }
    }

    fn print(&self, u: &Update) {
        self.out.json_line(&json!({"event": "device", "update": u}));
        let t = self.started.elapsed().as_secs_f64();
        let (Some(d), Some(c)) = (&u.device, &u.class) else {
            return;
        };
        let line = match u.event {
            "vanish" => format!("{} left the bus", d.id()),
            _ => format!(
                "{} appeared in {}{}",
                d.id(),
                mode_words(&c.mode),
                tty(d)
                    .map(|p| format!(" on {p}"))
                    .unwrap_or_else(|| " (no port served: enumeration only)".into())
            ),
        };
        self.out.line(format!("   [{t:6.1} s] {line}"));
    }
}

/// The world's source under a name that says what it is.
struct WorldSource(Box<dyn DeviceSource>);

impl DeviceSource for WorldSource {
    fn next_event(
        &mut self,
        timeout: Duration,
    ) -> crate::Result<Option<crate::device::DeviceEvent>> {
        self.0.next_event(timeout)
    }
    fn describe(&self) -> String {
        "the demo's emulated USB bus".into()
    }
    fn finished(&self) -> bool {
        self.0.finished()
    }
}

fn appeared_in(u: &Update, mode: &str) -> bool {
    u.event == "appear" && u.class.as_ref().is_some_and(|c| c.mode.tag() == mode)
}

fn gone(what: &str, within: Duration) -> Error {
    Error::failure(
        format!(
            "The emulated modem did not {what} within {:.0} s",
            within.as_secs_f64()
        ),
        "the demo's modem runs in this process and should have",
        "Run the demo again; if it repeats, report it with `--log-file`",
    )
}

pub fn run(args: &DemoArgs, out: &Output) -> crate::Result<()> {
    let world = start_world(args)?;
    let unit = world.unit().clone();
    out.json_line(&json!({
        "event": "demo", "scenario": world.scenario().name(), "profile": unit.name,
        "serial": format!("0x{:08x}", unit.identity.serial), "storage": world.storage_name(),
        "package": world.package(), "package_revision": world.package_revision(),
        "modem_revision": world.modem_revision(),
    }));
    out.line(format!(
        "qrescue demo ({}) — {}",
        world.scenario().name(),
        world.about()
    ));
    out.line("Everything below is the real qrescue engine; only the modem is emulated.");
    let mut watch = Watch::new(&world, *out);
    match world.scenario() {
        Scenario::Crash => crash(args, &world, &mut watch, out),
        _ => rescue(args, &world, &mut watch, out),
    }
}

/// Find the modem, check the package, (pins), identify, flash, read back, restart, verdict.
fn rescue(
    args: &DemoArgs,
    world: &DemoWorld,
    watch: &mut Watch,
    out: &Output,
) -> crate::Result<()> {
    let update = world.scenario() == Scenario::Update;
    let timing = world.timing();
    let mut steps = Steps {
        out: *out,
        n: 0,
        total: if update { 7 } else { 6 },
    };
    let wait_first = timing.boot_loop.period + timing.normal_boot + Duration::from_secs(10);

    steps.next(
        "Find the modem",
        if update {
            "qrescue watches USB and recognises each modem by its IDs and interfaces."
        } else {
            "qrescue watches USB. A modem in a boot loop is only there for a few seconds at a time, so everything below must fit in one window."
        },
    );
    let want = if update { "normal" } else { "edl" };
    let found = watch
        .wait(wait_first, &mut |u| appeared_in(u, want))?
        .ok_or_else(|| gone("appear", wait_first))?;
    let id = found.id;
    if !update {
        out.line(format!(
            "   It stays {:.0} s, then the watchdog cuts it off and it comes back {:.0} s after it appeared: a boot loop in download mode (its boot chain is broken).",
            timing.boot_loop.window.as_secs_f64(),
            timing.boot_loop.period.as_secs_f64()
        ));
    } else {
        out.line(format!(
            "   It runs firmware {} (what AT+QGMR prints).",
            world.modem_revision()
        ));
    }

    steps.next(
        "Check the firmware package",
        "Before a byte is sent: the package's checksums, its plan, its revision against the modem's, and whether it would overwrite the modem's own calibration and IMEI.",
    );
    let serial = format!("{:08X}", world.unit().identity.serial);
    let p = prepare(
        &PrepareRequest {
            package: world.package(),
            modem_revision: Some(world.modem_revision().into()),
            ..PrepareRequest::default()
        },
        // The emulated unit has no backups: the demo never reads or fills the person's real
        // backup store.
        &MemoryLedger::new(),
        Some(&serial),
    )?;
    let verdict = package_cmds::verdict(&p, DEMO_BACKUP_NOTE);
    out.json_line(&json!({"event": "package", "package": &p, "verdict": &verdict}));
    print_check(&p, out);
    if let Some(e) = verdict.to_error() {
        out.line("   Refused: nothing was sent to the modem.");
        for r in &verdict.reasons {
            out.line(format!("   - {}", r.what));
        }
        recording::mark("demo: package refused before anything was sent");
        return Err(e);
    }
    let plan = p.plan.as_ref().expect("a flashable package has a plan");
    p.reverify()?;
    let programmer = p.programmer_image()?;

    let mut edl = found;
    if update {
        steps.next(
            "Get it into download mode",
            "qrescue cannot switch a modem to download mode over its DIAG port yet, so the demo does what a person does at the bench: hold USB_BOOT to 1.8 V and power-cycle the modem.",
        );
        pause(args);
        world.bench(BenchAction::BridgePinsAndPowerCycle);
        let within = timing.edl_boot + Duration::from_secs(20);
        edl = watch
            .wait(within, &mut |u| appeared_in(u, "edl"))?
            .ok_or_else(|| gone("come back in download mode", within))?;
        world.bench(BenchAction::ReleasePins);
        out.line("   9008 is there: the pins are released (the boot ROM waits in 9008 until it is reset).");
    }

    // Identify, flash and read back inside the window; a window that closes first is waited
    // out and tried again, as a person would.
    let mut attempt = 0;
    let (mismatches, programs) = loop {
        attempt += 1;
        let port = edl
            .device
            .as_ref()
            .and_then(tty)
            .ok_or_else(|| gone("name its port", Duration::ZERO))?;
        match flash_in_window(&mut steps, &port, plan, &programmer, out) {
            Ok(r) => break r,
            Err(e) if e.kind == ErrorKind::DeviceLost && attempt < 3 && !update => {
                out.line(format!(
                    "   The window closed before the flash finished ({}). qrescue waits for the next window and starts again.",
                    e.what
                ));
                steps.n = 2;
                let within = timing.boot_loop.period * 2 + Duration::from_secs(10);
                let next = watch
                    .wait(within, &mut |u| u.event == "appear" && u.id == id)?
                    .ok_or_else(|| gone("come back", within))?;
                if !appeared_in(&next, "edl") {
                    return Err(Error::failure(
                        "The modem came back, but not in download mode",
                        "the cut-off flash left its boot chain written and its modem image half-written, so it now crashes at boot",
                        "Bridge the test pins and power-cycle it to get it into 9008, then flash again (`qrescue demo --scenario crash` shows that case)",
                    ));
                }
                edl = next;
            }
            Err(e) => return Err(e),
        }
    };

    steps.next(
        "Restart the modem and wait for it",
        "\"Written\" is not \"working\": only a modem that boots its new firmware and comes back as the same unit counts as rescued.",
    );
    let within = world.verify_timeout();
    let back = watch.wait(within, &mut |u| {
        u.event == "appear" && (u.id == id || u.id == edl.id)
    })?;
    let verified = back
        .as_ref()
        .is_some_and(|u| appeared_in(u, "normal") && u.id == id);
    out.json_line(&json!({
        "event": "verdict", "verified": verified, "read_back_mismatches": mismatches,
        "back_as": back.as_ref().and_then(|u| u.device.as_ref().map(|d| d.id())),
    }));
    if verified {
        let u = back.expect("verified");
        let d = u.device.as_ref().expect("an appearance has a device");
        out.line(format!(
            "   Flashed and verified: came back as {} in {} — the same unit ({}). {programs} partitions read back identical before the reset; its calibration and IMEI partitions were not touched.",
            d.id(),
            u.class.as_ref().map(|c| mode_words(&c.mode)).unwrap_or_default(),
            u.matched.why
        ));
        out.line("   (The normal-mode ports are not emulated yet, so the IMEI and signal checks a real modem gets after a flash are not run here.)");
        return Ok(());
    }
    let what = match &back {
        Some(u) => format!(
            "it came back as {} in {}",
            u.device.as_ref().map(|d| d.id()).unwrap_or_default(),
            u.class
                .as_ref()
                .map(|c| mode_words(&c.mode))
                .unwrap_or_default()
        ),
        None => format!(
            "it did not come back in normal mode within {:.0} s",
            within.as_secs_f64()
        ),
    };
    out.line(format!("   Flashed, NOT verified: {what}."));
    Err(Error::failure(
        format!("Flashed, NOT verified: {what}"),
        "a modem that does not come back in normal mode is not rescued, whatever the flash reported",
        "Watch it with `qrescue watch`; if it loops in 9008 again, flash again in one window",
    ))
}

/// Identify, flash (no reset), read every partition back, reset. Returns the read-back
/// mismatches and the number of partitions compared.
fn flash_in_window(
    steps: &mut Steps,
    port: &str,
    plan: &flash::FlashPlan,
    programmer: &[u8],
    out: &Output,
) -> crate::Result<(usize, usize)> {
    let out = *out;
    steps.next(
        "Identify the modem",
        "Before touching anything, read who it is: the boot ROM answers over Sahara with its serial, chip and signing key.",
    );
    let link = recording::wrap(crate::cli::port::open_serial(Path::new(port))?);
    let mut sahara = SaharaSession::new(link, SaharaConfig::default());
    let info = sahara.read_info()?;
    out.json_line(&json!({"event": "identified", "info": &info}));
    for l in sahara_cmds::describe_info(&info) {
        out.line(format!("   {l}"));
    }

    steps.next(
        "Upload the programmer and flash",
        "The programmer from the package goes to the boot ROM over Sahara; then Firehose writes each partition, erasing it first.",
    );
    let job = FlashJob {
        programmer: Some(programmer.to_vec()),
        reset: None,
        ..FlashJob::default()
    };
    let mut printer = EventPrinter::new(out);
    // The identify step's session kept the HELLO the boot ROM re-sent after command mode; its
    // transport hands that back, so the upload starts at once.
    let mut link = sahara.into_transport();
    flash::run(
        &mut link,
        plan,
        &job,
        &mut |e| printer.event(&e),
        signals::flag(),
    )?;

    steps.next(
        "Verify by reading back",
        "Every partition is read back from the modem and compared with the package before it restarts.",
    );
    let (mismatches, programs) = read_back(&mut link, plan, &out)?;
    if mismatches > 0 {
        return Err(Error::new(
            ErrorKind::VerifyMismatch,
            format!("{mismatches} partitions read back differently from the package"),
            "the modem would not boot reliably from this flash",
            "Run the flash again; if it repeats, the flash memory is failing",
        ));
    }
    let mut fh = FirehoseSession::new(&mut link, Vec::new(), FirehoseOptions::default());
    fh.power(PowerMode::Reset, 1)?;
    out.line("   Reset sent.");
    Ok((mismatches, programs))
}

fn read_back<T: Transport>(
    link: &mut T,
    plan: &flash::FlashPlan,
    out: &Output,
) -> crate::Result<(usize, usize)> {
    let mut fh = FirehoseSession::new(link, Vec::new(), FirehoseOptions::default());
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
    let mut programs = 0;
    for step in &ready.steps {
        let FlashStep::Program { name, cmd, source } = step else {
            continue;
        };
        programs += 1;
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
                format!("it was just checked ({})", e.what),
                "Run the demo again",
            )
        })?;
        image.resize(back.len(), 0);
        let ok = Sha256::digest(&image) == Sha256::digest(&back);
        if !ok {
            mismatches += 1;
        }
        out.json_line(
            &json!({"event": "read_back", "partition": name, "bytes": source.len(), "matches": ok}),
        );
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
    Ok((mismatches, programs))
}

/// The package check in a few lines.
fn print_check(p: &Prepared, out: &Output) {
    if let Some(r) = &p.revision {
        out.line(format!("   Package     {} ({})", r.text, r.source));
    }
    if let Some(s) = &p.summary {
        out.line(format!(
            "   Plan        {} steps on {}, {} to write",
            s.steps.len(),
            s.storage.memory_name(),
            output::bytes(s.total_bytes)
        ));
    }
    match &p.compat {
        CompatReport::Allowed { modem, note, .. } => {
            out.line(format!("   Revision    allowed for {modem}: {note}"))
        }
        CompatReport::Refused {
            modem, title, why, ..
        } => out.line(format!(
            "   Revision    REFUSED for {modem}: {title} — {why}"
        )),
        CompatReport::NotChecked { reason, .. } => {
            out.line(format!("   Revision    not checked: {reason}"))
        }
    }
    if let Some(g) = &p.guard {
        if g.allowed {
            let kept = g.untouched();
            if !kept.is_empty() {
                out.line(format!(
                    "   Left alone  {} (the modem's own calibration, IMEI and unit data: an update never writes them)",
                    kept.join(", ")
                ));
            }
        } else {
            for t in &g.touched {
                out.line(format!(
                    "   BLOCKED     step {} writes {} — {}{}",
                    t.step,
                    t.partition,
                    t.holds,
                    if t.covered {
                        ""
                    } else {
                        "; no verified backup of it exists"
                    }
                ));
            }
        }
    }
}

/// A crashed modem: find it, save its RAM dump, see it crash again.
fn crash(args: &DemoArgs, world: &DemoWorld, watch: &mut Watch, out: &Output) -> crate::Result<()> {
    let timing = world.timing();
    let mut steps = Steps {
        out: *out,
        n: 0,
        total: 3,
    };
    steps.next(
        "Find the modem",
        "05c6:900e is a modem that crashed: its boot ROM holds the RAM contents for a host to read over Sahara (memory debug), instead of booting.",
    );
    let within = Duration::from_secs(20);
    let found = watch
        .wait(within, &mut |u| appeared_in(u, "crashdump"))?
        .ok_or_else(|| gone("appear", within))?;
    let port = found
        .device
        .as_ref()
        .and_then(tty)
        .ok_or_else(|| gone("name its port", Duration::ZERO))?;

    steps.next(
        "Save the RAM dump",
        "The crash left its memory readable; the dump is what a developer needs to find the cause.",
    );
    let temp;
    let dir = match &args.out {
        Some(d) => d.as_path(),
        None => {
            temp = tempfile::tempdir().map_err(|e| {
                Error::failure(
                    "Cannot create a temporary folder",
                    "the dump goes there",
                    "Give a folder with --out",
                )
                .with_source(e)
            })?;
            temp.path()
        }
    };
    let link = recording::wrap(crate::cli::port::open_serial(Path::new(&port))?);
    let mut s = SaharaSession::new(link, SaharaConfig::default());
    let report = s.ramdump(dir, &mut |_| {})?;
    drop(s);
    out.json_line(&json!({"event": "ramdump", "report": &report, "kept": args.out.is_some()}));
    for r in &report.regions {
        out.line(format!(
            "   {:<12} {:>10}  sha256 {}",
            r.name,
            output::bytes(r.length),
            r.sha256.as_deref().map(|h| &h[..16]).unwrap_or("-")
        ));
    }
    out.line(format!(
        "   {} saved with a manifest in {:.1} s{}.",
        output::bytes(report.bytes_written),
        report.elapsed_ms as f64 / 1000.0,
        match &args.out {
            Some(d) => format!(" to {}", d.display()),
            None => " (to a temporary folder; keep it with --out DIR)".into(),
        }
    ));
    pause(args);

    steps.next(
        "What it does next",
        "After the dump qrescue resets it. A crash that comes from damaged firmware happens again at every boot.",
    );
    let id: Option<DeviceId> = found.id;
    let within = timing.crash_boot + Duration::from_secs(20);
    let again = watch
        .wait(within, &mut |u| u.event == "appear" && u.id == id)?
        .ok_or_else(|| gone("come back", within))?;
    let check = world.boot_check();
    out.json_line(&json!({"event": "crash_again", "mode": again.class.as_ref().map(|c| c.mode.tag()), "damaged": check.firmware_bad}));
    out.line(format!(
        "   It crashed again: its {} image is damaged (the demo's modem checks its images at boot, like a signed boot chain).",
        check.firmware_bad.join(", ")
    ));
    out.line("   To reflash it, it has to be in download mode: bridge its test pins (USB_BOOT to 1.8 V) and power-cycle it, then flash an update package — `qrescue demo --scenario update` shows the pin rescue.");
    Ok(())
}
