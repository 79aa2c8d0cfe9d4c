//! `qrescue update PACKAGE` — the guided workflow to a verdict, picked by the modem's mode
//! (normal → update, 9008 → unbrick, 900e → crash) — and `qrescue edl`, the software switch to
//! download mode. Both run [`crate::engine::workflow`]'s driver over the devices this host sees
//! (USB, `--sim SOCKET`); this file only prints (what/why/next per step, or one JSON object per
//! line with `--json`) and answers the workflow's questions (`--yes`, or on a terminal). The
//! update's flash is journaled in the same store as `qrescue flash` and leaves run records for
//! `qrescue status`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use crate::backup::store;
use crate::cli::args::{EdlArgs, UpdateArgs};
use crate::cli::firehose_cmds::EventPrinter;
use crate::cli::flash_resume::notice_line;
use crate::cli::output::Output;
use crate::cli::{backup_cmds, recording, signals};
use crate::device::classify::{classify, PortRole};
use crate::device::enumerate::Sysfs;
use crate::device::sim_source::SimSource;
use crate::device::watch::{usb_source, MergedSource};
use crate::device::DeviceSource;
use crate::engine::events::EngineEvent;
use crate::engine::journal::JournalStore;
use crate::engine::outcome::RunStore;
use crate::engine::prepare::PrepareRequest;
use crate::engine::workflow::{Driver, Finished, Kind, Link, Setup, Timings, WorkflowEvent};
use crate::workflow::{Action, Mode, Observation, Question, Want};
use crate::{Error, ErrorKind};

/// The device sources of `--sim` and (unless `--no-usb`) this host's USB.
fn sources(sim: &[PathBuf], no_usb: bool) -> crate::Result<Box<dyn DeviceSource>> {
    let mut sources: Vec<Box<dyn DeviceSource>> = Vec::new();
    if !no_usb {
        sources.push(Box::new(usb_source(Sysfs::host())));
    }
    for path in sim {
        sources.push(Box::new(SimSource::connect(path)?));
    }
    if sources.is_empty() {
        return Err(Error::usage(
            "No modem to look at: --no-usb without --sim",
            "Drop --no-usb to use this host's USB, or add --sim SOCKET (printed by `qrescue sim`)",
        ));
    }
    Ok(recording::wrap_source(MergedSource::new(sources)))
}

/// Every port the workflow opens goes into the `--record` session.
fn record(t: Link) -> Link {
    Box::new(recording::wrap(t))
}

fn seconds(what: &str, v: f64) -> crate::Result<Duration> {
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
        return Err(Error::usage(
            format!("{what} must be a positive number of seconds up to a day, not {v}"),
            format!("e.g. {what} 30"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Prints workflow events: JSON lines, or steps for people.
struct Printer {
    out: Output,
    engine: EventPrinter,
}

impl Printer {
    fn new(out: Output) -> Printer {
        Printer {
            out,
            engine: EventPrinter::new(out),
        }
    }

    fn event(&mut self, e: &WorkflowEvent) {
        if let WorkflowEvent::StepStarted { step, what, .. } = e {
            recording::mark(&format!("workflow step {step}: {what}"));
        }
        if self.out.json {
            self.out
                .json_line(&json!({"event": "workflow", "workflow": e}));
            return;
        }
        let out = &self.out;
        match e {
            WorkflowEvent::Started { workflow, found } => {
                out.line(format!(
                    "Modem {} at {} in {}{} — the {workflow} workflow.",
                    found.usb_id,
                    found.location,
                    found.mode.words(),
                    found
                        .port
                        .as_deref()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default()
                ));
            }
            WorkflowEvent::Device {
                change,
                usb_id,
                mode,
                tty,
                this_unit: true,
                ..
            } => out.line(format!(
                "   {} {}{}{}",
                usb_id.as_deref().unwrap_or("?"),
                if change == "vanish" {
                    "left the bus"
                } else {
                    "appeared"
                },
                mode.as_deref()
                    .filter(|_| change != "vanish")
                    .map(|m| format!(" in {m}"))
                    .unwrap_or_default(),
                tty.as_deref()
                    .filter(|_| change != "vanish")
                    .map(|t| format!(" on {t}"))
                    .unwrap_or_default()
            )),
            WorkflowEvent::Device { .. } => {}
            WorkflowEvent::StepStarted {
                step, what, why, ..
            } => {
                out.line("");
                out.line(format!("── Step {step}: {what}"));
                out.line(format!("   {why}"));
            }
            // The step's own summary follows; the engine's closing line would repeat it.
            WorkflowEvent::Engine {
                engine: EngineEvent::Done { .. },
                ..
            } => {}
            WorkflowEvent::Engine { engine, .. } => self.engine.event(engine),
            WorkflowEvent::StepFinished {
                ok,
                lines,
                observed,
                ..
            } => {
                for l in lines {
                    out.line(format!("   {l}"));
                }
                if let Observation::Failed { said, .. } = observed {
                    out.line(format!("   FAILED: {}", said.what));
                    out.line(format!("   why: {}", said.why));
                    out.line(format!("   next: {}", said.next));
                } else if !ok {
                    out.line("   FAILED");
                }
            }
            WorkflowEvent::Resume { notice, .. } => {
                if let Some(l) = notice_line(notice) {
                    out.line(format!("   {l}"));
                }
            }
            WorkflowEvent::Asked { yes, .. } => {
                out.line(format!("   answer: {}", if *yes { "yes" } else { "no" }))
            }
            WorkflowEvent::Finished { finished } => print_end(finished, out),
        }
    }
}

fn print_end(f: &Finished, out: &Output) {
    out.line("");
    match &f.end {
        Action::Done { verdict } => {
            out.line(format!("Verdict: {}", verdict.headline()));
            if let crate::workflow::Verdict::NotVerified { next, .. } = verdict {
                for n in next {
                    out.line(format!("  next: {n}"));
                }
            }
        }
        Action::Stop { stop } => {
            out.line(format!("Stopped: {}", stop.what));
            if !stop.why.is_empty() {
                out.line(format!("  why: {}", stop.why));
            }
            out.line(format!("  next: {}", stop.next));
            out.line(if stop.device_changed {
                "  The modem was changed before the stop (see the steps above)."
            } else {
                "  Nothing was changed on the modem."
            });
        }
        _ => {}
    }
    if let Some(b) = &f.backup {
        out.line(format!("Backup taken on the way: {b}"));
    }
    for d in &f.dumps {
        out.line(format!("RAM dump saved in {d}"));
    }
}

/// Ask on the terminal (y/N); `None` without one.
fn ask_terminal(text: &str) -> Option<bool> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "{text} [y/N] ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).ok()?;
    let a = line.trim().to_ascii_lowercase();
    Some(a == "y" || a == "yes")
}

/// The answer to a workflow's question: `--yes`, else the terminal, else no.
fn answer(q: &Question, yes: bool, out: &Output) -> bool {
    if yes {
        if let Question::BridgePins { .. } = q {
            out.line(format!("   {}", q.text()));
        }
        return true;
    }
    match ask_terminal(&q.text()) {
        Some(a) => a,
        None => {
            out.line(format!(
                "   {} — no terminal to ask on; add --yes if you mean it.",
                q.text()
            ));
            false
        }
    }
}

pub fn update(a: &UpdateArgs, out: &Output) -> crate::Result<()> {
    if !a.package.exists() {
        return Err(Error::usage(
            format!("The package {} does not exist", a.package.display()),
            "Give the package folder or .zip: qrescue update PACKAGE",
        ));
    }
    let find = seconds("--find", a.find)?;
    let store = backup_cmds::store_at(a.backup_dir.as_deref())?;
    let dump_dir = match &a.dump_dir {
        Some(d) => d.clone(),
        None => store::data_dir()
            .map(|d| d.join("ramdumps"))
            .ok_or_else(|| {
                Error::usage(
                    "qrescue cannot tell where to keep RAM dumps: neither QRESCUE_DATA_DIR, XDG_DATA_HOME nor HOME is set",
                    "Give a folder with --dump-dir DIR",
                )
            })?,
    };
    let mut setup = Setup::new(store, dump_dir);
    setup.request = Some(PrepareRequest {
        package: a.package.clone(),
        set: a.set.clone(),
        programmer: a.programmer.clone(),
        ..PrepareRequest::default()
    });
    setup.find_within = find;
    setup.wrap = Some(record);
    // Journaled and recorded as `qrescue flash` is: an update cut short continues on the next
    // run, and `qrescue status` lists it.
    setup.journals = Some(JournalStore::default_location()?);
    setup.runs = RunStore::default_location()
        .map_err(|e| tracing::info!("this update is not recorded: {e}"))
        .ok();
    let mut src = sources(&a.sim, a.no_usb)?;
    let mut printer = Printer::new(*out);
    let mut emit = |e: &WorkflowEvent| printer.event(e);
    let yes = a.yes;
    let o = *out;
    let mut ask = |q: &Question| answer(q, yes, &o);
    let finished = {
        let mut d = Driver::new(&mut *src, &setup, &mut emit, &mut ask, signals::flag());
        d.run_kind(&Kind::Auto, &Timings::default())?
    };
    match finished.to_error() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

pub fn edl(a: &EdlArgs, out: &Output) -> crate::Result<()> {
    let wait = seconds("--wait", a.wait)?;
    out.json_line(&json!({
        "event": "edl_warning",
        "text": "switching the modem to emergency download mode (EDL, 05c6:9008) with DIAG 4B 65 01 00",
    }));
    out.line("qrescue edl switches the modem to emergency download mode (EDL, 05c6:9008) with the DIAG command 4B 65 01 00.");
    out.line("It leaves normal mode: no network, other ports, until it is flashed and reset or power-cycled.");
    let mut src = sources(&a.sim, a.no_usb)?;
    let mut setup = Setup::new(
        store::Store::new(std::env::temp_dir()),
        std::env::temp_dir(),
    );
    setup.wrap = Some(record);
    let mut printer = Printer::new(*out);
    let mut emit = |e: &WorkflowEvent| printer.event(e);
    let mut ask = |_: &Question| false;
    let mut d = Driver::new(&mut *src, &setup, &mut emit, &mut ask, signals::flag());
    let found = d.find(Some(Mode::Normal))?;
    out.json_line(&json!({"event": "edl_modem", "found": &found}));
    out.line(format!(
        "Modem {} at {} in normal mode{}.",
        found.usb_id,
        found.location,
        if found.dm_port {
            ""
        } else {
            " — it shows no DM (DIAG) port"
        }
    ));
    if let Observation::Failed { said, .. } = d.perform(&Action::SwitchToEdl) {
        return Err(Error::failure(said.what, said.why, said.next));
    }
    out.line("Switch sent; waiting for 05c6:9008.");
    match d.perform(&Action::WaitFor {
        want: Want::Mode(Mode::Edl),
        within_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
    }) {
        Observation::Seen { .. } => {
            let snap = d.current().cloned();
            let port = snap.as_ref().and_then(|s| {
                classify(s)
                    .port(PortRole::Sahara)
                    .and_then(|p| p.tty.clone())
            });
            let location = snap.as_ref().map(|s| s.location()).unwrap_or_default();
            out.json_line(&json!({
                "event": "edl", "usb_id": "05c6:9008", "location": location, "port": port,
            }));
            out.line(format!(
                "The modem is in EDL (05c6:9008) at {location}{}.",
                port.as_deref()
                    .map(|p| format!(", port {p}"))
                    .unwrap_or_else(|| " (no tty: use --port usb:LOCATION)".into())
            ));
            out.line(format!(
                "Next: `qrescue info --port {}` or `qrescue flash PACKAGE --port {}`.",
                port.as_deref().unwrap_or("PORT"),
                port.as_deref().unwrap_or("PORT")
            ));
            Ok(())
        }
        Observation::WaitExpired { waited_ms, .. } => Err(Error::new(
            ErrorKind::DeviceLost,
            format!(
                "The modem did not appear in EDL (05c6:9008) within {:.0} s",
                waited_ms as f64 / 1000.0
            ),
            "the switch was sent; some firmware ignores it, or a driver holds the new port",
            "Run `qrescue watch`; if it stays in normal mode, use the test-point method (USB_BOOT to 1.8 V, power-cycle)",
        )),
        Observation::Failed { said, .. } => Err(Error::failure(said.what, said.why, said.next)),
        other => Err(Error::failure(
            "The wait for EDL ended unexpectedly",
            format!("{other:?}"),
            "Run `qrescue watch`",
        )),
    }
}
