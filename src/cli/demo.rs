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

use crate::backup::run::{self as backup_run, BackupOptions};
use crate::backup::{BackupKind, Identity, Store, StoreLedger, StoredBackup};
use crate::cli::args::{DemoArgs, DemoScenario, StorageArg};
use crate::cli::firehose_cmds::EventPrinter;
use crate::cli::output::{self, Output};
use crate::cli::package_cmds;
use crate::cli::{recording, sahara_cmds, signals};
use crate::device::classify::Mode;
use crate::device::classify::PortRole;
use crate::device::identity::DeviceId;
use crate::device::monitor::{Monitor, Update};
use crate::device::{DeviceSnapshot, DeviceSource};
use crate::engine::at::NormalIdentity;
use crate::engine::connect::attach_or_upload;
use crate::engine::diag::{DiagSession, EdlSwitch};
use crate::engine::events::EngineEvent;
use crate::engine::firehose::{FirehoseOptions, FirehoseSession, PowerMode, Read};
use crate::engine::flash::{self, FlashJob, FlashStep};
use crate::engine::guards::MemoryLedger;
use crate::engine::identify::{identify_over_at, open_port, AtTries};
use crate::engine::prepare::{prepare, CompatReport, PrepareRequest, Prepared};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::protocol::firehose::commands::StorageKind;
use crate::sim::profile;
use crate::sim::world::{DemoWorld, Scenario, Timing, WorldOptions};
use crate::transport::{Pushback, Transport};
use crate::workflow::verdict::{judge, Expectation, Return, Verdict};
use crate::{Error, ErrorKind};

/// The world scenario of `--scenario` (None for the station, whose bench has many modems:
/// [`crate::cli::demo_station`]).
pub fn scenario(args: &DemoArgs) -> Option<Scenario> {
    match args.scenario {
        DemoScenario::Unbrick => Some(Scenario::Unbrick),
        DemoScenario::Update => Some(Scenario::Update),
        DemoScenario::Crash => Some(Scenario::Crash),
        DemoScenario::WrongVariant => Some(Scenario::WrongVariant),
        DemoScenario::Factory => Some(Scenario::Factory),
        DemoScenario::Station => None,
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
    let scenario = scenario(args).ok_or_else(|| {
        Error::usage(
            "The station demo has many modems, not one demo world",
            "Run `qrescue demo --scenario station`; it starts its own bench",
        )
    })?;
    DemoWorld::start(scenario, world_options(args))
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
/// The same in the factory scenario, which makes the backup.
const FACTORY_BACKUP_NOTE: &str = "(The demo makes that backup next, in a folder of its own; with a real modem, `qrescue backup` makes one.)";

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
        let ports = |d: &DeviceSnapshot| {
            let named = |role: PortRole, what: &str| {
                c.port(role)
                    .and_then(|p| p.tty.clone())
                    .map(|t| format!("{what} {t}"))
            };
            let normal: Vec<String> = [named(PortRole::At, "AT"), named(PortRole::Dm, "DM")]
                .into_iter()
                .flatten()
                .collect();
            if !normal.is_empty() {
                return format!(" — {}", normal.join(", "));
            }
            tty(d)
                .map(|p| format!(" on {p}"))
                .unwrap_or_else(|| " (no port served: enumeration only)".into())
        };
        let line = match u.event {
            "vanish" => format!("{} left the bus", d.id()),
            _ => format!("{} appeared in {}{}", d.id(), mode_words(&c.mode), ports(d)),
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
    if args.scenario == DemoScenario::Station {
        return crate::cli::demo_station::run(args, out);
    }
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
        Scenario::Factory => factory(args, &world, &mut watch, out),
        _ => rescue(args, &world, &mut watch, out),
    }
}

/// Read who a normal-mode modem is over its AT port, and print it.
fn identify_and_print(d: &DeviceSnapshot, out: &Output) -> crate::Result<NormalIdentity> {
    let id = identify_over_at(
        d,
        AtTries::default(),
        &|t| Box::new(recording::wrap(t)),
        signals::flag(),
    )?;
    out.json_line(&json!({"event": "identity", "identity": &id}));
    for l in identity_lines(&id) {
        out.line(format!("   {l}"));
    }
    tracing::info!(target: "qrescue::demo", "identified over AT");
    Ok(id)
}

/// A normal-mode identity in a few lines.
fn identity_lines(id: &NormalIdentity) -> Vec<String> {
    let mut v = Vec::new();
    let model = [id.manufacturer.as_deref(), id.model.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    if !model.is_empty() {
        v.push(format!("Model       {model}"));
    }
    if let Some(r) = &id.revision {
        v.push(format!("Revision    {} (AT+QGMR)", r.text));
    }
    match &id.imei {
        Some(i) => v.push(format!(
            "IMEI        {}{}",
            i.digits,
            if i.luhn_ok {
                ""
            } else {
                " (fails its check digit)"
            }
        )),
        None => v.push("IMEI        none: AT+CGSN gave no IMEI".into()),
    }
    if let Some(c) = &id.iccid {
        v.push(format!("ICCID       {}", c.value));
    }
    match id.cfun {
        Some(c) => v.push(format!(
            "Function    +CFUN: {}{}",
            c.level,
            match c.level {
                1 => " (full function: calibrated, radio on)",
                5 => " (factory-test mode)",
                7 => " (the firmware disabled the radio)",
                _ => "",
            }
        )),
        None => v.push("Function    unknown: AT+CFUN? gave no answer".into()),
    }
    for a in id.advice() {
        v.push(format!("Note        {a}"));
    }
    v
}

/// Send the DIAG switch to download mode and wait for 9008.
fn switch_over_diag(
    world: &DemoWorld,
    watch: &mut Watch,
    d: &DeviceSnapshot,
    out: &Output,
) -> crate::Result<Update> {
    let port = open_port(d, PortRole::Dm)?;
    let mut diag = DiagSession::new(recording::wrap(port));
    let how = diag.switch_to_edl()?;
    drop(diag);
    out.json_line(&json!({"event": "edl_switch", "result": how}));
    out.line(match how {
        EdlSwitch::Echoed => {
            "   DIAG 4B 65 01 00 sent; the modem echoed it and resets into its boot ROM."
        }
        EdlSwitch::LinkDropped => {
            "   DIAG 4B 65 01 00 sent; the DM port dropped at once: the modem is resetting."
        }
    });
    let within = world.timing().edl_boot + Duration::from_secs(20);
    let edl = watch
        .wait(within, &mut |u| appeared_in(u, "edl"))?
        .ok_or_else(|| gone("come back in download mode", within))?;
    out.line("   It re-enumerated as 05c6:9008 and waits there for a programmer.");
    Ok(edl)
}

/// What the modem should look like after the flash.
fn expectation(
    world: &DemoWorld,
    before: Option<&NormalIdentity>,
    backup: Option<String>,
) -> Expectation {
    Expectation {
        imei: before.and_then(|b| b.imei.as_ref().map(|i| i.digits.clone())),
        revision: Some(world.package_revision().to_string()),
        calibrated_before: before.and_then(|b| b.cfun.map(|c| c.level == 1)),
        backup,
    }
}

/// Wait for the unit (`ids`) to come back in normal mode, ask it over AT, and judge.
fn return_and_judge(
    world: &DemoWorld,
    watch: &mut Watch,
    ids: &[Option<DeviceId>],
    expect: &Expectation,
    out: &Output,
) -> crate::Result<(Verdict, Option<Update>)> {
    let within = world.verify_timeout();
    let mut last_mode = None;
    let back = watch.wait(within, &mut |u| {
        if u.event != "appear" || !ids.contains(&u.id) {
            return false;
        }
        if appeared_in(u, "normal") {
            return true;
        }
        last_mode = u.class.as_ref().map(|c| mode_words(&c.mode));
        false
    })?;
    let ret = match &back {
        None => Return::NoReturn {
            waited_ms: within.as_millis() as u64,
            last_mode,
        },
        Some(u) => {
            let d = u.device.as_ref().expect("an appearance has a device");
            out.line(format!(
                "   Back as {} in {} — the same unit ({}). Asking it over AT:",
                d.id(),
                u.class
                    .as_ref()
                    .map(|c| mode_words(&c.mode))
                    .unwrap_or_default(),
                u.matched.why
            ));
            match identify_and_print(d, out) {
                Ok(id) => Return::Normal(Box::new(id)),
                Err(e) => Return::Unidentified { why: e.what },
            }
        }
    };
    let v = judge(expect, &ret);
    print_verdict(&v, out);
    Ok((v, back))
}

fn print_verdict(v: &Verdict, out: &Output) {
    match v {
        Verdict::Verified { checks } => {
            out.line("   Flashed and verified:");
            for c in checks {
                out.line(format!("   ✓ {c}"));
            }
        }
        Verdict::NotVerified { failures, next } => {
            out.line("   Flashed, NOT verified:");
            for f in failures {
                out.line(format!("   ✗ {}", f.what()));
            }
            for n in next {
                out.line(format!("   → {n}"));
            }
        }
    }
}

fn not_verified_error(v: &Verdict) -> Error {
    let next = match v {
        Verdict::NotVerified { next, .. } => next.join("; "),
        Verdict::Verified { .. } => String::new(),
    };
    Error::failure(
        v.headline(),
        "a modem that does not come back as the same, calibrated unit is not rescued, whatever the flash reported",
        next,
    )
}

/// Find the modem, (identify it over AT,) check the package, (switch it to EDL over DIAG,)
/// identify, flash, read back, restart, ask it over AT, verdict.
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
        total: if update { 8 } else { 6 },
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
    let mut before = None;
    let modem_revision = if update {
        steps.next(
            "Identify it over AT",
            "Before touching anything, read who it is: model, firmware, IMEI, and whether it is calibrated (+CFUN: 1). The firmware revision decides which packages fit; the IMEI is what must survive the flash.",
        );
        let d = found.device.as_ref().expect("an appearance has a device");
        let id = identify_and_print(d, out)?;
        let rev = id.revision.as_ref().map(|r| r.text.clone());
        before = Some(id);
        rev
    } else {
        out.line(format!(
            "   It stays {:.0} s, then the watchdog cuts it off and it comes back {:.0} s after it appeared: a boot loop in download mode (its boot chain is broken).",
            timing.boot_loop.window.as_secs_f64(),
            timing.boot_loop.period.as_secs_f64()
        ));
        out.line(format!(
            "   In 9008 it cannot be asked for its firmware; the demo knows it runs {}.",
            world.modem_revision()
        ));
        Some(world.modem_revision().to_string())
    };

    steps.next(
        "Check the firmware package",
        "Before a byte is sent: the package's checksums, its plan, its revision against the modem's, and whether it would overwrite the modem's own calibration and IMEI.",
    );
    let serial = format!("{:08X}", world.unit().identity.serial);
    let p = prepare(
        &PrepareRequest {
            package: world.package(),
            modem_revision,
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
            "Switch it to download mode over DIAG",
            "No test pins needed: the Quectel DIAG command 4B 65 01 00 on the DM port makes a running modem reset into its boot ROM. It leaves the bus and re-enumerates as 05c6:9008 about 2 s later.",
        );
        pause(args);
        let d = edl.device.clone().expect("an appearance has a device");
        edl = switch_over_diag(world, watch, &d, out)?;
    }

    // Identify, flash and read back inside the window; a window that closes first is waited
    // out and tried again, as a person would.
    let first_window_step = steps.n;
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
                steps.n = first_window_step;
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
        "Restart the modem and check it over AT",
        "\"Written\" is not \"working\": only a modem that boots its new firmware and comes back as the same, calibrated unit counts.",
    );
    let expect = expectation(world, before.as_ref(), None);
    let (v, back) = return_and_judge(world, watch, &[id, edl.id], &expect, out)?;
    out.json_line(&json!({
        "event": "verdict", "verified": v.is_verified(), "verdict": &v,
        "read_back_mismatches": mismatches,
        "back_as": back.as_ref().and_then(|u| u.device.as_ref().map(|d| d.id())),
    }));
    if v.is_verified() {
        out.line(format!(
            "   {programs} partitions read back identical before the reset; its calibration and IMEI partitions were not touched."
        ));
        return Ok(());
    }
    Err(not_verified_error(&v))
}

/// Engine events of a backup or restore: recorded, in `--json` as they are, and on screen only
/// what needs eyes (a failed step, a device log); the caller sums up.
fn quiet_events(out: Output) -> impl FnMut(EngineEvent) {
    move |e: EngineEvent| {
        recording::engine_event(&e);
        if out.json {
            out.json_line(&crate::explain::event_json(&e));
            return;
        }
        match e {
            EngineEvent::StepFailed { what, next, .. } => {
                out.line(format!("   Failed: {what} — {next}"))
            }
            EngineEvent::Log { message } => out.line(format!("   {message}")),
            _ => {}
        }
    }
}

/// Print what happened and keep the event line for `--json`.
fn print_backup(b: &StoredBackup, out: &Output) {
    out.json_line(&json!({
        "event": "backup", "name": b.name, "path": b.path, "manifest": b.manifest,
    }));
    let parts: Vec<&str> = b
        .manifest
        .files
        .iter()
        .filter_map(|f| f.partition.as_deref())
        .collect();
    out.line(format!(
        "   Backup {} saved: {} ({}), each partition read twice with the same sha256, every file read back from disk.",
        b.name,
        parts.join(", "),
        output::bytes(b.manifest.total_bytes()),
    ));
}

/// A Firehose session on a port opened by the demo.
type ProgrammerLink = FirehoseSession<Pushback<Pushback<Box<dyn Transport>>>>;

/// The Sahara identity of the unit in 9008 (with what AT told before) and a programmer
/// session on it.
fn programmer_session(
    edl: &Update,
    before: &NormalIdentity,
    programmer: &[u8],
    out: &Output,
) -> crate::Result<(Identity, ProgrammerLink)> {
    let port = edl
        .device
        .as_ref()
        .and_then(tty)
        .ok_or_else(|| gone("name its port", Duration::ZERO))?;
    let link: Box<dyn Transport> = Box::new(recording::wrap(crate::cli::port::open_serial(
        Path::new(&port),
    )?));
    let (link, info) = backup_run::identify(link, &SaharaConfig::default())?;
    let info = info.ok_or_else(|| backup_run::unknown_identity("make a backup"))?;
    for l in sahara_cmds::describe_info(&info) {
        out.line(format!("   {l}"));
    }
    let mut identity = Identity::from_device_info(&info);
    identity.imei = before.imei.as_ref().map(|i| i.digits.clone());
    identity.revision = before.revision.as_ref().map(|r| r.text.clone());
    identity.iccid = before.iccid.as_ref().map(|i| i.value.clone());
    let (fh, _) = attach_or_upload(
        link,
        Some(programmer),
        &SaharaConfig::default(),
        FirehoseOptions::default(),
        &mut |_| {},
    )?;
    out.line("   Programmer uploaded and running.");
    Ok((identity, fh))
}

/// The `_factory` package: refused without a backup; backup; flash; the loss shows; restore.
fn factory(
    args: &DemoArgs,
    world: &DemoWorld,
    watch: &mut Watch,
    out: &Output,
) -> crate::Result<()> {
    let timing = world.timing();
    let mut steps = Steps {
        out: *out,
        n: 0,
        total: 10,
    };
    steps.next(
        "Find the modem",
        "qrescue watches USB and recognises each modem by its IDs and interfaces.",
    );
    let within = timing.normal_boot + Duration::from_secs(20);
    let found = watch
        .wait(within, &mut |u| appeared_in(u, "normal"))?
        .ok_or_else(|| gone("appear", within))?;
    let id = found.id;
    let d = found.device.clone().expect("an appearance has a device");

    steps.next(
        "Identify it over AT",
        "Who it is and whether it is calibrated: the IMEI and +CFUN: 1 are what must survive.",
    );
    let before = identify_and_print(&d, out)?;
    let req = PrepareRequest {
        package: world.package(),
        modem_revision: before.revision.as_ref().map(|r| r.text.clone()),
        ..PrepareRequest::default()
    };

    steps.next(
        "Check the firmware package",
        "A _factory package programs the EFS partition, which holds this unit's RF calibration and IMEI: qrescue refuses it unless a verified backup of exactly that data exists.",
    );
    let p = prepare(&req, &MemoryLedger::new(), None)?;
    let verdict = package_cmds::verdict(&p, FACTORY_BACKUP_NOTE);
    out.json_line(&json!({"event": "package", "package": &p, "verdict": &verdict}));
    print_check(&p, out);
    if let Some(e) = verdict.to_error() {
        let only_guard = verdict
            .reasons
            .iter()
            .all(|r| r.stage == crate::engine::prepare::Stage::Guard);
        out.line("   Refused: nothing was sent to the modem.");
        for r in &verdict.reasons {
            out.line(format!("   - {}", r.what));
        }
        if !only_guard {
            return Err(e);
        }
        out.line("   A backup lifts this refusal, so the demo makes one.");
    }
    let programmer = p.programmer_image()?;

    steps.next(
        "Switch it to download mode over DIAG",
        "The backup reads the partitions through the programmer, in download mode.",
    );
    pause(args);
    let edl = switch_over_diag(world, watch, &d, out)?;

    steps.next(
        "Back up its own data",
        "Every partition that holds data of this unit alone (EFS: calibration, IMEI, NV) is read twice, compared, written to a folder with a sha256 manifest and read back.",
    );
    let temp;
    let dir = match &args.out {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::tempdir().map_err(|e| {
                Error::failure(
                    "Cannot create a temporary folder",
                    "the demo's backup goes there (never into your own backup store)",
                    "Give a folder with --out",
                )
                .with_source(e)
            })?;
            temp.path().to_path_buf()
        }
    };
    let store = Store::new(&dir);
    let (identity, mut fh) = programmer_session(&edl, &before, &programmer, out)?;
    let backup = backup_run::take_backup(
        &mut fh,
        &identity,
        &store,
        &BackupOptions {
            kind: BackupKind::DeviceUnique,
            storage: p
                .plan
                .as_ref()
                .map(|p| p.storage)
                .unwrap_or(StorageKind::Nand),
        },
        &mut quiet_events(*out),
        signals::flag(),
    )?;
    print_backup(&backup, out);

    steps.next(
        "Check the package again",
        "The same checks, now with the backup on file for this unit (its serial, HW ID and IMEI match).",
    );
    let unit = identity
        .unit_key()
        .ok_or_else(|| backup_run::unknown_identity("flash a factory package"))?;
    let ledger = StoreLedger::new(&store)?.for_device(&identity);
    let p = prepare(&req, &ledger, Some(&unit))?;
    let verdict = p.verdict();
    out.json_line(&json!({"event": "package", "package": &p, "verdict": &verdict}));
    print_check(&p, out);
    if let Some(e) = verdict.to_error() {
        return Err(e);
    }
    let plan = p.plan.as_ref().expect("a flashable package has a plan");
    p.reverify()?;

    steps.next(
        "Flash the factory package",
        "The programmer is still running: every step of the plan, its EFS erase and program too, then a reset.",
    );
    let (mut link, rest) = fh.into_parts();
    link.unread(&rest);
    let mut printer = EventPrinter::new(*out);
    flash::run(
        &mut link,
        plan,
        &FlashJob::default(),
        &mut |e| printer.event(&e),
        signals::flag(),
    )?;
    drop(link);

    steps.next(
        "Restart the modem and check it over AT",
        "\"Written\" is not \"working\": is it the same unit, with its calibration?",
    );
    let expect = expectation(world, Some(&before), Some(backup.name.clone()));
    let (v, back) = return_and_judge(world, watch, &[id, edl.id], &expect, out)?;
    out.json_line(&json!({"event": "verdict", "verified": v.is_verified(), "verdict": &v}));
    if v.is_verified() {
        out.line("   The factory image kept this unit's data: nothing to restore.");
        return Ok(());
    }
    let Some(back) = back else {
        return Err(not_verified_error(&v));
    };
    let back_dev = back.device.clone().expect("an appearance has a device");

    steps.next(
        "Restore the backup",
        "Its own EFS goes back where the backup found it, only onto this very unit (serial, HW ID and IMEI checked), and every region is read back.",
    );
    pause(args);
    let edl = switch_over_diag(world, watch, &back_dev, out)?;
    let (identity, mut fh) = programmer_session(&edl, &before, &programmer, out)?;
    let rplan = backup_run::plan_restore(&backup, &[])?;
    let report = backup_run::restore(
        &mut fh,
        &backup,
        &rplan,
        &identity,
        &mut quiet_events(*out),
        signals::flag(),
    )?;
    out.json_line(&json!({ "event": "restored", "report": report }));
    out.line(format!(
        "   Restored {} region(s) ({}) from {} and read each back: all match the backup.",
        report.regions,
        output::bytes(report.bytes),
        backup.name
    ));
    fh.power(PowerMode::Reset, 1)?;
    out.line("   Reset sent.");

    steps.next(
        "Check it over AT again",
        "With its own calibration and IMEI back, it should be at full function.",
    );
    let (v, _) = return_and_judge(world, watch, &[id, edl.id], &expect, out)?;
    out.json_line(&json!({"event": "verdict", "verified": v.is_verified(), "verdict": &v, "after_restore": true}));
    if v.is_verified() {
        out.line("   Restored and verified: the backup brought its calibration back.");
        return Ok(());
    }
    Err(not_verified_error(&v))
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
        for t in g.touched.iter().filter(|t| g.allowed && t.covered) {
            out.line(format!(
                "   Covered     step {} writes {} — {}; a verified backup of it is on file{}",
                t.step,
                t.partition,
                t.holds,
                t.backup
                    .as_deref()
                    .map(|b| format!(" ({b})"))
                    .unwrap_or_default()
            ));
        }
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
        "Catch it while it runs",
        "After the dump qrescue resets it. It boots and runs in normal mode for a moment before the damaged image takes it down again: long enough to switch it to download mode over DIAG.",
    );
    let id: Option<DeviceId> = found.id;
    let within = timing.crash_boot + Duration::from_secs(20);
    let running = watch
        .wait(within, &mut |u| appeared_in(u, "normal"))?
        .ok_or_else(|| gone("boot again", within))?;
    let d = running.device.clone().expect("an appearance has a device");
    let edl = switch_over_diag(world, watch, &d, out)?;
    let check = world.boot_check();
    out.json_line(&json!({"event": "reached_edl", "from": id.map(|i| i.to_string()), "as": edl.device.as_ref().map(|d| d.id()), "damaged": check.firmware_bad}));
    out.line(format!(
        "   It is in download mode and stays there. Its {} image is damaged (the demo's modem checks its images at boot, like a signed boot chain): flash an update package now — `qrescue demo --scenario update` shows the flash.",
        check.firmware_bad.join(", ")
    ));
    out.line("   Had it crashed too early for DIAG, bridging its test pins (USB_BOOT to 1.8 V) at power-on gets it into 9008 as well.");
    Ok(())
}
