//! `qrescue flash PACKAGE --all | --devices SEL…`: the package is checked once, then every
//! matching modem is flashed in parallel by [`crate::engine::station`] (one job per modem,
//! followed by its identity), each verified after its reset. People get a compact line per
//! modem and state; `--json` gets every station event as one line with its `device` key. The
//! run's summary (one row per modem) goes to the run folder as JSON and CSV, and to every
//! `--summary FILE`. Exit code 0 only when every modem was flashed and verified.
//!
//! Each modem's flash is journaled by its EDL serial in the same store as `qrescue flash`
//! ([`JournalStore::default_location`]): a modem whose link drops continues where it stopped
//! when it comes back, and a run cut short continues on the next run (`--fresh` starts every
//! modem over).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::cli::args::FlashArgs;
use crate::cli::flash_resume::notice_line;
use crate::cli::output::{self, Output};
use crate::cli::package_cmds::{print_before_flash, request, store_ledger, verdict};
use crate::cli::{recording, signals};
use crate::device::enumerate::Sysfs;
use crate::device::sim_source::SimSource;
use crate::device::watch::usb_source;
use crate::engine::events::EngineEvent;
use crate::engine::journal::{JournalStore, Opening};
use crate::engine::outcome::{data_dir, unix_ms_now, utc_compact, RunStore};
use crate::engine::prepare::prepare;
use crate::engine::resume::ResumeNotice;
use crate::engine::station::{
    self, Bus, Note, Outcome, Selection, StationConfig, StationEvent, Summary,
};
use crate::{Error, ErrorKind};

/// Added to refusals a per-modem backup would lift: a station checks the package once.
const STATION_NOTE: &str = "(A station run checks the package once for every modem, so it \
    cannot match one modem's backup: flash a package that touches device-unique data one modem \
    at a time with `qrescue flash PACKAGE --port PORT`.)";

/// The default run folder: `<data dir>/station/<time>-<pid>`.
fn default_run_dir() -> crate::Result<PathBuf> {
    let base = data_dir().ok_or_else(|| {
        Error::usage(
            "No folder for the station's logs: HOME, XDG_DATA_HOME and QRESCUE_DATA_DIR are all unset",
            "Give one with --logs DIR",
        )
    })?;
    Ok(base.join("station").join(format!(
        "{}-{}",
        utc_compact(unix_ms_now()),
        std::process::id()
    )))
}

fn buses(args: &FlashArgs) -> crate::Result<Vec<Bus>> {
    let st = &args.station;
    let mut buses = Vec::new();
    if !st.no_usb {
        let s = usb_source(Sysfs::host());
        buses.push(Bus {
            name: "USB".into(),
            source: recording::wrap_source(s),
            sim: false,
        });
    }
    for path in &args.sim {
        let s = SimSource::connect(path)?;
        buses.push(Bus {
            name: format!("emulator at {}", path.display()),
            source: recording::wrap_source(s),
            sim: true,
        });
    }
    if buses.is_empty() {
        return Err(Error::usage(
            "Nothing to look at: --no-usb without --sim",
            "Drop --no-usb to flash this host's modems, or add --sim SOCKET (printed by `qrescue sim`)",
        ));
    }
    Ok(buses)
}

fn seconds(what: &str, v: f64) -> crate::Result<Duration> {
    if !v.is_finite() || v <= 0.0 || v > 86_400.0 {
        return Err(Error::usage(
            format!("{what} must be a number of seconds above 0 and at most a day, not {v}"),
            format!("e.g. {what} 120"),
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// One line per modem and change; progress in quarters (also the station demo's line mode).
pub(crate) struct Lines {
    out: Output,
    width: usize,
    indent: &'static str,
    quarter: HashMap<String, u8>,
}

impl Lines {
    /// Lines to `out`, the device key padded to `width`, each line after `indent`.
    pub(crate) fn new(out: Output, width: usize, indent: &'static str) -> Lines {
        Lines {
            out,
            width,
            indent,
            quarter: HashMap::new(),
        }
    }

    fn line(&self, t_ms: u64, device: &str, state: &str, text: &str) {
        let w = self.width;
        self.out.line(format!(
            "{}[{:6.1} s] {device:<w$} {state:<12} {text}",
            self.indent,
            t_ms as f64 / 1000.0
        ));
    }

    /// Print (and with --json, emit) one station event.
    pub(crate) fn event(&mut self, e: &StationEvent) {
        self.out.json_line(e);
        let (t, d) = (e.t_ms, e.device.as_str());
        match &e.note {
            Note::Selected {
                bus,
                location,
                usb_id,
                mode,
                ..
            } => self.line(
                t,
                d,
                "found",
                &format!("{usb_id} ({mode}) at {location} on {bus}"),
            ),
            Note::State { state, detail } => self.line(t, d, state.word(), detail),
            Note::Engine { engine } => match engine {
                EngineEvent::Plan { total_bytes, .. } => {
                    self.quarter.insert(d.to_string(), 0);
                    self.line(
                        t,
                        d,
                        "flashing",
                        &format!("  0% of {}", output::bytes(*total_bytes)),
                    );
                }
                EngineEvent::Progress {
                    overall,
                    bytes_per_s,
                    ..
                } => {
                    let q = (overall * 4.0).floor().clamp(0.0, 4.0) as u8;
                    let last = self.quarter.entry(d.to_string()).or_insert(0);
                    if q > *last && q < 4 {
                        *last = q;
                        self.line(
                            t,
                            d,
                            "flashing",
                            &format!(
                                "{:>3.0}% at {}",
                                overall * 100.0,
                                output::rate(*bytes_per_s)
                            ),
                        );
                    }
                }
                EngineEvent::StepFailed { what, .. } => self.line(t, d, "step failed", what),
                EngineEvent::Done {
                    ok: true,
                    bytes,
                    elapsed_ms,
                } => self.line(
                    t,
                    d,
                    "written",
                    &format!(
                        "100%: {} in {:.1} s",
                        output::bytes(*bytes),
                        *elapsed_ms as f64 / 1000.0
                    ),
                ),
                _ => {}
            },
            // Attempts and waits are told by the state lines; a new journal is the usual case.
            Note::Resume {
                notice:
                    ResumeNotice::Waiting { .. }
                    | ResumeNotice::Connected { .. }
                    | ResumeNotice::Journal {
                        opening: Opening::New { .. },
                        ..
                    },
            } => {}
            Note::Resume { notice } => {
                if let Some(l) = notice_line(notice) {
                    self.line(t, d, "journal", &l);
                }
            }
            Note::Finished { row } => self.line(
                t,
                d,
                crate::tui::station::outcome_word(row.outcome),
                &row.detail,
            ),
        }
    }
}

/// One line per modem of a finished run (with its attempts and next step when it has them).
pub(crate) fn print_rows(s: &Summary, out: &Output) {
    let w = s.rows.iter().map(|r| r.device.len()).max().unwrap_or(6);
    for r in &s.rows {
        out.line(format!(
            "  {:<w$} {:<12} {:>10} {:>7.1} s  {}",
            r.device,
            r.outcome.word(),
            output::bytes(r.bytes),
            r.duration_ms as f64 / 1000.0,
            r.detail
        ));
        if r.resumed || r.attempts > 1 {
            out.line(format!(
                "  {:<w$} {:<12} {} attempt(s), {}; {} sent again",
                "",
                "",
                r.attempts,
                if r.resumed {
                    "continued from its journal"
                } else {
                    "started over"
                },
                output::bytes(r.bytes_resent)
            ));
        }
        if let Some(n) = &r.next {
            out.line(format!("  {:<w$} {:<12} next: {n}", "", ""));
        }
    }
}

/// The error for a run in which not every modem was flashed and verified (`None` when all
/// were): interrupted when any modem was stopped, else a failure. `what` names the modems
/// (e.g. "emulated modem(s)").
pub(crate) fn unverified_error(
    summary: &Summary,
    what: &str,
    why: &str,
    next: String,
) -> Option<Error> {
    let left = summary.devices - summary.verified;
    if left == 0 {
        return None;
    }
    let interrupted = summary
        .rows
        .iter()
        .any(|r| r.outcome == Outcome::Interrupted);
    Some(Error::new(
        if interrupted {
            ErrorKind::Interrupted
        } else {
            ErrorKind::Failure
        },
        format!(
            "{left} of {} {what} are not flashed and verified",
            summary.devices
        ),
        why,
        next,
    ))
}

fn print_summary(s: &Summary, dir: &Path, extra: &[PathBuf], out: &Output) {
    out.json_line(&json!({"event": "station_summary", "summary": s}));
    out.line("");
    out.line(format!(
        "Station: {} of {} modem(s) flashed and verified ({} written, {:.1} s); run folder {}",
        s.verified,
        s.devices,
        output::bytes(s.bytes),
        s.duration_ms as f64 / 1000.0,
        dir.display()
    ));
    print_rows(s, out);
    let mut files = vec![dir.join("summary.json"), dir.join("summary.csv")];
    files.extend(extra.iter().cloned());
    out.line(format!(
        "Summary: {}",
        files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
}

/// `qrescue flash PACKAGE --all | --devices SEL…`.
pub fn flash_station(args: &FlashArgs, package: &Path, out: &Output) -> crate::Result<()> {
    let st = &args.station;
    let return_wait = seconds("--return-wait", st.return_wait)?;
    let req = request(
        package,
        &args.choice,
        args.fh.programmer.as_deref(),
        args.fh.storage,
    );
    // One check for all modems: no modem identity, so no backup can be matched (the guard
    // then refuses anything that would need one — the safe side).
    let (ledger, _) = store_ledger();
    let p = prepare(&req, &ledger, None)?;
    let v = verdict(&p, STATION_NOTE);
    out.json_line(&json!({ "event": "package", "package": &p, "verdict": &v }));
    print_before_flash(&p, &v, out);
    if let Some(e) = v.to_error() {
        recording::mark("package refused before anything was sent");
        return Err(e);
    }
    let plan = p.plan.clone().expect("a flashable package has a plan");
    p.reverify()?;
    let dir = match &st.logs {
        Some(d) => d.clone(),
        None => default_run_dir()?,
    };
    let mut cfg = StationConfig::new(
        package.display().to_string(),
        plan,
        p.programmer_image()?,
        dir.clone(),
    );
    cfg.revision = p.revision.as_ref().map(|r| r.text.clone());
    cfg.record = st.record_each;
    cfg.waits.normal_return = return_wait;
    cfg.runs = RunStore::default_location().ok();
    cfg.journals = Some(JournalStore::default_location()?);
    cfg.fresh = args.fresh;
    let selection = if st.all {
        Selection::All
    } else {
        Selection::Only(st.devices.clone())
    };
    let buses = buses(args)?;
    out.line("");
    out.line(format!(
        "Looking for modems on {} …",
        buses
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut lines = Lines::new(*out, 12, "");
    let summary = station::run(
        buses,
        &selection,
        &cfg,
        &mut |e| lines.event(e),
        signals::flag(),
    )?;
    for path in &st.summary {
        summary.write(path)?;
    }
    print_summary(&summary, &dir, &st.summary, out);
    match unverified_error(
        &summary,
        "modem(s)",
        "each modem's row in the summary says what happened to it and what it needs",
        format!(
            "See {} and each modem's log there; run again with --devices usb:serial=SN for those modems",
            dir.join("summary.csv").display()
        ),
    ) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("qrescue").chain(args.iter().copied()))
    }

    #[test]
    fn station_flags_parse_and_exclude_the_single_modem_ones() {
        let c = parse(&[
            "flash",
            "pkg",
            "--devices",
            "usb:3-1.2",
            "usb:serial=AB",
            "sim:2",
            "--sim",
            "/tmp/a.sock",
            "--summary",
            "s.csv",
        ])
        .unwrap();
        let Some(Command::Flash(f)) = c.command else {
            panic!()
        };
        assert_eq!(f.station.devices.len(), 3);
        assert_eq!(f.sim.len(), 1);
        assert!(parse(&["flash", "pkg", "--all"]).is_ok());
        // One modem's flags and the station's exclude each other.
        assert!(parse(&["flash", "pkg", "--all", "--port", "/dev/x"]).is_err());
        assert!(parse(&["flash", "pkg", "--all", "--dry-run"]).is_err());
        assert!(parse(&["flash", "pkg", "--all", "--no-reset"]).is_err());
        assert!(parse(&["flash", "pkg", "--all", "--devices", "sim"]).is_err());
        // With --rawprogram, the station is refused before anything opens.
        let Some(Command::Flash(f)) = parse(&["flash", "--rawprogram", "x.xml", "--all"])
            .unwrap()
            .command
        else {
            panic!()
        };
        let e = crate::cli::package_cmds::refuse_package_options(&f).unwrap_err();
        assert!(e.what.contains("--all/--devices"), "{e}");
        assert!(parse(&["flash", "pkg", "--devices", "/dev/ttyUSB0"]).is_err());
        // Station options need a station run.
        assert!(parse(&["flash", "pkg", "--port", "/dev/x", "--sim", "/tmp/a.sock"]).is_err());
        assert!(parse(&["flash", "pkg", "--port", "/dev/x", "--summary", "s.json"]).is_err());
        // The single-modem form is unchanged.
        assert!(parse(&["flash", "pkg", "--port", "/dev/x"]).is_ok());
        assert!(parse(&["flash", "pkg"]).is_err());
    }
}
