//! `qrescue demo --scenario station`: a production bench of emulated modems
//! ([`crate::sim::fleet`]: `--units` modems of one model in their boot ROM, 05c6:9008, on
//! emulated hubs) and a package generated for them, flashed all at once by the same station
//! engine `qrescue flash PACKAGE --all` runs ([`crate::engine::station::run`]): one job per
//! modem, each found again as itself after its reset and verified over AT, one summary (JSON and
//! CSV) for the run.
//!
//! At a terminal the console shows the bench ([`StationBench::sources`]); `A` and `y` start the
//! run and the station view follows it to the summary. Without one, [`run`] runs the same
//! station and prints a line per modem and change, then the summary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::cli::args::{DemoArgs, StorageArg};
use crate::cli::output::{self, Output};
use crate::cli::signals;
use crate::device::DeviceSource;
use crate::engine::guards::MemoryLedger;
use crate::engine::prepare::{prepare, PrepareRequest};
use crate::engine::station::{self, Bus, Selection, StationConfig, Summary, Waits};
use crate::sim::fleet::{Fleet, FleetOptions};
use crate::sim::hub::UsbHub;
use crate::sim::package_gen::PackageOptions;
use crate::tui::exec::StationSetup;
use crate::tui::model::DemoInfo;
use crate::Error;

/// Each emulated modem writes at about real NAND speed unless `--fast`.
const THROTTLE: u64 = 4_000_000;

/// The emulated bench: the modems, their package, and where runs leave their files.
pub struct StationBench {
    fleet: Option<Fleet>,
    hubs: Vec<UsbHub>,
    package: PathBuf,
    revision: String,
    runs_base: PathBuf,
    /// Runs write into the temporary folder unless `--out` keeps them.
    kept: bool,
    next_run: Arc<AtomicU32>,
    model: String,
    units: usize,
    image_bytes: u64,
    _temp: tempfile::TempDir,
}

fn temp_error(e: std::io::Error) -> Error {
    Error::failure(
        "Cannot create a temporary folder",
        "the demo's package goes there (never into your own folders)",
        "Check the temp folder ($TMPDIR) and free space",
    )
    .with_source(e)
}

impl StationBench {
    /// Start `--units` modems of `--profile` in 9008 and generate their package.
    pub fn start(args: &DemoArgs) -> crate::Result<StationBench> {
        if args.storage != StorageArg::Nand {
            return Err(Error::usage(
                "The station bench emulates NAND modems only",
                "Drop --storage (every profile it offers, ec25, rm502q and rm520n, stores on NAND)",
            ));
        }
        let units = usize::from(args.units);
        let temp = tempfile::Builder::new()
            .prefix("qrescue-station-")
            .tempdir()
            .map_err(temp_error)?;
        let fleet = Fleet::start(&FleetOptions {
            model: args.profile.clone(),
            units,
            per_hub: 8,
            throttle: (!args.fast).then_some(THROTTLE),
            ..FleetOptions::default()
        })?;
        let image_bytes = if args.fast { 2 << 20 } else { 16 << 20 };
        let pkg = fleet.emit_package(
            &temp.path().join(format!(
                "{}-bench-package",
                args.profile.to_ascii_lowercase()
            )),
            PackageOptions {
                image_bytes,
                seed: 8,
            },
        )?;
        let revision = pkg
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (runs_base, kept) = match &args.out {
            Some(d) => (d.clone(), true),
            None => (temp.path().join("runs"), false),
        };
        Ok(StationBench {
            hubs: fleet.hubs().to_vec(),
            fleet: Some(fleet),
            package: pkg.root,
            revision,
            runs_base,
            kept,
            next_run: Arc::new(AtomicU32::new(1)),
            model: args.profile.clone(),
            units,
            image_bytes,
            _temp: temp,
        })
    }

    pub fn package(&self) -> &Path {
        &self.package
    }

    pub fn units(&self) -> usize {
        self.units
    }

    /// Runs are kept (`--out`), or removed with the demo's temporary folder.
    pub fn kept(&self) -> bool {
        self.kept
    }

    /// Where the bench's devices come from, one line.
    pub fn source_name(&self) -> String {
        format!(
            "emulated bench ({} modems, {} hub{})",
            self.units,
            self.hubs.len(),
            if self.hubs.len() == 1 { "" } else { "s" }
        )
    }

    /// The scenario for the console's header and workflow pane.
    pub fn demo_info(&self) -> DemoInfo {
        DemoInfo {
            scenario: "station".into(),
            about: self.about(),
        }
    }

    pub fn about(&self) -> String {
        format!(
            "A production bench: {} emulated {} modems in download mode (9008) on {} emulated hub(s), and a package for them ({}, {} of images). Flash them all at once: each is found again as itself after its reset and verified over AT; one summary records every modem.",
            self.units,
            self.model.to_ascii_uppercase(),
            self.hubs.len(),
            self.revision,
            output::bytes(self.image_bytes)
        )
    }

    /// One device source per hub, for the console's device list. The console follows every
    /// hub in one list, so each hub's modems show behind a port of their own (`99-2.6`: hub 2,
    /// port 6), as modems behind two real external hubs do; the station follows each hub as
    /// its own bus and takes every modem by its serial.
    pub fn sources(&self) -> Vec<Box<dyn DeviceSource>> {
        let many = self.hubs.len() > 1;
        self.hubs
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let inner = Box::new(h.source()) as Box<dyn DeviceSource>;
                if many {
                    Box::new(BehindHub {
                        inner,
                        port: (i + 1) as u8,
                    }) as Box<dyn DeviceSource>
                } else {
                    inner
                }
            })
            .collect()
    }

    /// Fresh buses for a run: one per hub, each followed by its own monitor.
    pub fn buses(&self) -> Vec<Bus> {
        hub_buses(&self.hubs)
    }

    /// The folder of the next run.
    pub fn next_folder(&self) -> PathBuf {
        next_folder(&self.runs_base, &self.next_run)
    }

    /// What the console's executor needs to start a run on this bench.
    pub fn setup(&self) -> StationSetup {
        let hubs = self.hubs.clone();
        let base = self.runs_base.clone();
        let counter = self.next_run.clone();
        StationSetup {
            buses: Box::new(move || Ok(hub_buses(&hubs))),
            folder: Box::new(move || Ok(next_folder(&base, &counter))),
            waits: Waits::default(),
        }
    }
}

impl Drop for StationBench {
    fn drop(&mut self) {
        if let Some(f) = self.fleet.take() {
            f.stop();
        }
    }
}

/// A hub's devices as seen behind port `port` of an outer hub.
struct BehindHub {
    inner: Box<dyn DeviceSource>,
    port: u8,
}

impl BehindHub {
    fn snapshot(&self, d: &mut crate::device::DeviceSnapshot) {
        d.ports.insert(0, self.port);
    }

    /// `99-6` → `99-2.6`; `99-0` (the root) → `99-2`.
    fn location(&self, l: &str) -> String {
        match l.split_once('-') {
            Some((bus, "0")) => format!("{bus}-{}", self.port),
            Some((bus, rest)) => format!("{bus}-{}.{rest}", self.port),
            None => l.to_string(),
        }
    }
}

impl DeviceSource for BehindHub {
    fn next_event(
        &mut self,
        timeout: std::time::Duration,
    ) -> crate::Result<Option<crate::device::DeviceEvent>> {
        use crate::device::DeviceChange;
        let Some(mut e) = self.inner.next_event(timeout)? else {
            return Ok(None);
        };
        match &mut e.change {
            DeviceChange::Appear { device } => self.snapshot(device),
            DeviceChange::Vanish { location, last } => {
                *location = self.location(location);
                if let Some(d) = last {
                    self.snapshot(d);
                }
            }
        }
        Ok(Some(e))
    }

    fn describe(&self) -> String {
        format!("{} (behind hub port {})", self.inner.describe(), self.port)
    }

    fn finished(&self) -> bool {
        self.inner.finished()
    }
}

fn hub_buses(hubs: &[UsbHub]) -> Vec<Bus> {
    hubs.iter()
        .enumerate()
        .map(|(i, h)| Bus {
            name: format!("emulated hub {}", i + 1),
            source: Box::new(h.source()) as Box<dyn DeviceSource>,
            sim: true,
        })
        .collect()
}

fn next_folder(base: &Path, counter: &AtomicU32) -> PathBuf {
    base.join(format!(
        "station-{}",
        counter.fetch_add(1, Ordering::SeqCst)
    ))
}

fn print_summary(s: &Summary, folder: &Path, kept: bool, out: &Output) {
    out.json_line(&json!({"event": "station_summary", "summary": s, "folder": folder}));
    out.line("");
    out.line(format!(
        "Station: {} of {} modem(s) flashed and verified ({} written, {:.1} s)",
        s.verified,
        s.devices,
        output::bytes(s.bytes),
        s.duration_ms as f64 / 1000.0,
    ));
    crate::cli::station_cmd::print_rows(s, out);
    out.line(format!(
        "Summary: {}, {}{}",
        folder.join("summary.json").display(),
        folder.join("summary.csv").display(),
        if kept {
            ""
        } else {
            " (a temporary folder, removed when the demo ends; keep it with --out DIR)"
        }
    ));
}

/// The station demo without a terminal: check the package once, flash every modem of the bench
/// at once, print a line per modem and change, then the summary.
pub fn run(args: &DemoArgs, out: &Output) -> crate::Result<()> {
    let bench = StationBench::start(args)?;
    out.json_line(&json!({
        "event": "demo", "scenario": "station", "profile": &bench.model,
        "units": bench.units, "package": bench.package(),
    }));
    out.line(format!("qrescue demo (station) — {}", bench.about()));
    out.line("Everything below is the real qrescue engine; only the modems are emulated.");
    let p = prepare(
        &PrepareRequest {
            package: bench.package().to_path_buf(),
            ..PrepareRequest::default()
        },
        &MemoryLedger::new(),
        None,
    )?;
    let verdict = p.verdict();
    out.json_line(&json!({"event": "package", "verdict": &verdict}));
    if let Some(e) = verdict.to_error() {
        return Err(e);
    }
    let plan = p.plan.clone().ok_or_else(|| {
        Error::failure(
            "The demo package has no plan",
            "it was generated for these modems and should have one",
            "Run the demo again; if it repeats, report it with --log-file",
        )
    })?;
    p.reverify()?;
    out.line("");
    out.line(format!(
        "Package {} checked once for every modem: {} steps, {} to write per modem.",
        bench.revision,
        plan.steps.len(),
        output::bytes(plan.total_bytes())
    ));
    out.line(format!(
        "Flashing all {} modems at once (each its own job, found again as itself after its reset, verified over AT):",
        bench.units
    ));
    let folder = bench.next_folder();
    let mut cfg = StationConfig::new(
        bench.package().display().to_string(),
        plan,
        p.programmer_image()?,
        folder.clone(),
    );
    cfg.revision = p.revision.as_ref().map(|r| r.text.clone());
    let mut lines = crate::cli::station_cmd::Lines::new(*out, 12, "   ");
    let summary = station::run(
        bench.buses(),
        &Selection::All,
        &cfg,
        &mut |e| lines.event(e),
        signals::flag(),
    )?;
    print_summary(&summary, &folder, bench.kept(), out);
    match crate::cli::station_cmd::unverified_error(
        &summary,
        "emulated modem(s)",
        "each modem's row above says what happened to it",
        "Run the demo again with --out DIR to keep each modem's log, and report it if it repeats"
            .into(),
    ) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
