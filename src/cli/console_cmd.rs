//! `qrescue` without a subcommand: the console. Full screen at a terminal; plain lines (or
//! `--json` events) like `qrescue watch` when stdout is not a terminal or with `--no-tui`, so
//! cron jobs and scripts get something they can read.

use std::sync::Arc;

use std::io::IsTerminal;

use crate::cli::args::{Cli, ColorArg, WatchArgs};
use crate::cli::demo_station::StationBench;
use crate::cli::output::Output;
use crate::cli::{logging, watch_cmd};
use crate::device::enumerate::Sysfs;
use crate::device::sim_source::SimSource;
use crate::device::watch::usb_source;
use crate::device::DeviceSource;
use crate::engine::outcome::{data_dir, unix_ms_now, utc_compact};
use crate::engine::station::{Bus, Waits};
use crate::tui::exec::StationSetup;
use crate::tui::model::Config;
use crate::tui::runtime::{self, ConsoleOptions, EndReason, Sources};
use crate::{Error, ErrorKind};

/// The full screen, or lines: lines when asked (`--no-tui`), for `--json`, or when stdout is not
/// a terminal.
pub fn wants_tui(cli: &Cli) -> bool {
    !cli.no_tui && !cli.json && std::io::stdout().is_terminal()
}

/// Logging for the console: into the log pane and a file while the screen is up, else as for
/// every other command.
pub fn init_logging(cli: &Cli) -> crate::Result<()> {
    if wants_tui(cli) {
        logging::init_console(cli.verbose, cli.log_file.as_deref()).map(|_| ())
    } else {
        logging::init(cli.verbose, cli.log_file.as_deref())
    }
}

/// Colours on or off: `--color`, and with `auto` a terminal without NO_COLOR.
pub fn color(choice: ColorArg, is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    match choice {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => logging::color_allowed(is_terminal, no_color),
    }
}

pub fn run(cli: &Cli, out: &Output) -> crate::Result<()> {
    let a = &cli.console;
    if let Some(p) = &a.package {
        if let Err(e) = std::fs::metadata(p) {
            return Err(Error::usage(
                format!("--package {}: {e}", p.display()),
                "Give the package's folder (the one with md5.txt and update/) or its .zip",
            ));
        }
    }
    if a.no_usb && a.sim.is_empty() {
        return Err(Error::usage(
            "Nothing to watch: --no-usb without --sim",
            "Drop --no-usb to watch this host's USB, or add --sim SOCKET (printed by `qrescue sim`)",
        ));
    }
    if !wants_tui(cli) {
        if a.package.is_some() || a.modem_revision.is_some() {
            tracing::info!(
                "--package and --modem-revision are used by the full-screen console only; printing device lines"
            );
        }
        let watch = WatchArgs {
            sim: a.sim.clone(),
            no_usb: a.no_usb,
            bell: false,
            all: false,
            for_secs: None,
        };
        return watch_cmd::run(&watch, out);
    }

    let mut devices: Vec<Box<dyn DeviceSource>> = Vec::new();
    if !a.no_usb {
        devices.push(Box::new(usb_source(Sysfs::host())));
    }
    for path in &a.sim {
        devices.push(Box::new(SimSource::connect(path)?));
    }
    let names: Vec<String> = devices.iter().map(|s| s.describe()).collect();
    let log_file = logging::console_log_file().map(|p| p.to_path_buf());
    let config = Config {
        package: a.package.clone(),
        modem_revision: a.modem_revision.clone(),
        color: color(cli.color, true, std::env::var_os("NO_COLOR").as_deref()),
        bell: !cli.no_bell,
        source: names.join(" + "),
        log_file: log_file.clone(),
        ..Config::default()
    };
    let (ledger, _) = crate::cli::package_cmds::store_ledger();
    let opts = ConsoleOptions {
        ledger: Some(Arc::new(ledger)),
        ..ConsoleOptions::default()
    };
    let station = station_setup(a.no_usb, a.sim.clone());
    let summary = runtime::run(
        config,
        Sources {
            devices,
            station: Some(station),
            ..Sources::default()
        },
        opts,
    )?;
    finish(summary, log_file.as_deref(), out)
}

/// Station runs from the console (`A`): fresh buses like `qrescue flash --all` follows (host
/// USB unless `--no-usb`, every `--sim` socket), and a run folder under the data folder.
fn station_setup(no_usb: bool, sims: Vec<std::path::PathBuf>) -> StationSetup {
    StationSetup {
        buses: Box::new(move || {
            let mut buses = Vec::new();
            if !no_usb {
                buses.push(Bus {
                    name: "USB".into(),
                    source: Box::new(usb_source(Sysfs::host())),
                    sim: false,
                });
            }
            for path in &sims {
                buses.push(Bus {
                    name: format!("emulator at {}", path.display()),
                    source: Box::new(SimSource::connect(path)?),
                    sim: true,
                });
            }
            Ok(buses)
        }),
        folder: Box::new(|| {
            let base = data_dir().ok_or_else(|| {
                Error::usage(
                    "No folder for the station's logs: HOME, XDG_DATA_HOME and QRESCUE_DATA_DIR are all unset",
                    "Set QRESCUE_DATA_DIR, or use `qrescue flash PACKAGE --all --logs DIR`",
                )
            })?;
            Ok(base.join("station").join(format!(
                "{}-{}",
                utc_compact(unix_ms_now()),
                std::process::id()
            )))
        }),
        waits: Waits::default(),
    }
}

/// `qrescue demo` on a terminal: the console on the demo's emulated modem. The world (its unit,
/// bus and package) lives until the console ends; demo flashes are not recorded in the run store
/// and no real backup is consulted.
pub fn run_demo(cli: &Cli, args: &crate::cli::args::DemoArgs, out: &Output) -> crate::Result<()> {
    if args.scenario == crate::cli::args::DemoScenario::Station {
        return run_station_demo(cli, args, out);
    }
    let world = crate::cli::demo::start_world(args)?;
    let bench = world.bench_handle();
    let log_file = logging::console_log_file().map(|p| p.to_path_buf());
    let config = world.console_config(Config {
        color: color(cli.color, true, std::env::var_os("NO_COLOR").as_deref()),
        bell: !cli.no_bell,
        log_file: log_file.clone(),
        ..Config::default()
    });
    let opts = ConsoleOptions {
        runs: None,
        tool: "demo".into(),
        ..ConsoleOptions::default()
    };
    let summary = runtime::run(
        config,
        Sources {
            devices: vec![world.source()],
            bench: Some(Box::new(move |a| bench.act(a))),
            keep_alive: vec![Box::new(world)],
            station: None,
        },
        opts,
    )?;
    finish(summary, log_file.as_deref(), out)
}

/// `qrescue demo --scenario station` on a terminal: the console on an emulated bench of
/// `--units` modems in 9008 with a package; `A` flashes them all at once.
fn run_station_demo(
    cli: &Cli,
    args: &crate::cli::args::DemoArgs,
    out: &Output,
) -> crate::Result<()> {
    let bench = StationBench::start(args)?;
    let log_file = logging::console_log_file().map(|p| p.to_path_buf());
    let config = Config {
        package: Some(bench.package().to_path_buf()),
        source: bench.source_name(),
        demo: Some(bench.demo_info()),
        color: color(cli.color, true, std::env::var_os("NO_COLOR").as_deref()),
        bell: !cli.no_bell,
        log_file: log_file.clone(),
        ..Config::default()
    };
    let opts = ConsoleOptions {
        runs: None,
        tool: "demo".into(),
        ..ConsoleOptions::default()
    };
    let kept = bench.kept();
    let summary = runtime::run(
        config,
        Sources {
            devices: bench.sources(),
            station: Some(bench.setup()),
            keep_alive: vec![Box::new(bench)],
            ..Sources::default()
        },
        opts,
    )?;
    if let (Some(_), false) = (&summary.station, kept) {
        out.line(
            "qrescue: the demo's run folder was temporary and is removed now; keep it with --out DIR",
        );
    }
    finish(summary, log_file.as_deref(), out)
}

fn finish(
    summary: runtime::RunSummary,
    log_file: Option<&std::path::Path>,
    out: &Output,
) -> crate::Result<()> {
    // The terminal is back: say where the record is.
    if let Some(l) = log_file {
        out.line(format!(
            "qrescue: the log of this session is {}",
            l.display()
        ));
    }
    tracing::info!(
        "the console drew {} frames for {} messages ({} ticks)",
        summary.frames,
        summary.messages,
        summary.ticks
    );
    if let Some(st) = &summary.station {
        let [json, csv] = st.files();
        out.line(format!(
            "qrescue: station run: {} of {} modem(s) flashed and verified; summary {} and {}",
            st.summary.verified,
            st.summary.devices,
            json.display(),
            csv.display()
        ));
    }
    if !summary.jobs.is_empty() {
        out.line(format!(
            "qrescue: {} flash(es) ran; `qrescue status` shows how each ended",
            summary.jobs.len()
        ));
    }
    match summary.end {
        EndReason::Terminated => Err(Error::new(
            ErrorKind::Interrupted,
            "The console was stopped by a signal (SIGTERM or SIGINT)",
            "qrescue ends on SIGTERM/SIGINT; a flash that was running stopped at its next safe point, never in the middle of a partition",
            "`qrescue status` shows how the last flash ended; run the console again to continue",
        )),
        EndReason::Quit | EndReason::HungUp | EndReason::Closed => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colour_follows_the_flag_then_no_color_and_the_terminal() {
        assert!(color(ColorArg::Always, false, Some(OsStr::new("1"))));
        assert!(!color(ColorArg::Never, true, None));
        assert!(color(ColorArg::Auto, true, None));
        assert!(color(ColorArg::Auto, true, Some(OsStr::new(""))));
        assert!(!color(ColorArg::Auto, true, Some(OsStr::new("1"))));
        assert!(!color(ColorArg::Auto, false, None));
    }

    #[test]
    fn no_subcommand_is_the_console_with_its_options() {
        use clap::Parser;
        let c = Cli::try_parse_from([
            "qrescue",
            "--package",
            "pkg",
            "--sim",
            "a.sock",
            "--sim",
            "b.sock",
            "--no-usb",
            "--no-tui",
            "--no-bell",
            "--color",
            "never",
        ])
        .unwrap();
        assert!(c.command.is_none());
        assert_eq!(c.console.sim.len(), 2);
        assert!(c.no_tui && c.no_bell && c.console.no_usb);
        assert_eq!(c.color, ColorArg::Never);
        assert!(!wants_tui(&c));
        // The global flags work after a subcommand too.
        let c = Cli::try_parse_from(["qrescue", "status", "--color", "always", "--limit", "3"])
            .unwrap();
        assert!(matches!(c.command, Some(crate::cli::Command::Status(_))));
    }
}
