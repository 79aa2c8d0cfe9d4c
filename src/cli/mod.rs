//! clap definitions and one runner per subcommand. Runners print human lines or `--json`
//! objects on stdout; logs go to stderr or `--log-file`; errors map to exit codes.

pub mod args;
pub mod backup_cmds;
pub mod bench;
pub mod bench_console;
pub mod bench_resume;
pub mod bench_station;
pub mod console_cmd;
pub mod demo;
pub mod demo_station;
pub mod device_cmds;
pub mod firehose_cmds;
pub mod flash_resume;
pub mod info_cmd;
pub mod logging;
pub mod output;
pub mod package_cmds;
pub mod port;
pub mod preflight_cmd;
pub mod recording;
pub mod replay_cmd;
pub mod sahara_cmds;
pub mod signals;
pub mod sim_cmd;
pub mod station_cmd;
pub mod status_cmd;
pub mod update_cmd;
pub mod watch_cmd;

use clap::Parser;

pub use args::{Cli, Command};
use output::Output;

/// Parse `std::env::args`, run, print the error if any, and return the exit code.
pub fn main_entry() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and exit 0; real usage errors exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let out = Output { json: cli.json };
    let logs = match &cli.command {
        None | Some(Command::Demo(_)) => console_cmd::init_logging(&cli),
        Some(_) => logging::init(cli.verbose, cli.log_file.as_deref()),
    };
    if let Err(e) = logs {
        report_error(&out, &e);
        return e.exit_code();
    }
    signals::install();
    match run(cli) {
        Ok(()) if signals::interrupted() => 130,
        Ok(()) => 0,
        Err(e) => {
            report_error(&out, &e);
            e.exit_code()
        }
    }
}

fn report_error(out: &Output, e: &crate::Error) {
    // The `error:` block below is what people read; the log (at debug, e.g. with --log-file
    // and -vv) only records it, so stderr does not show the same error twice.
    tracing::debug!(kind = ?e.kind, "{}", e.what);
    let explained = crate::explain::explain_error(e);
    if out.json {
        let mut j = e.to_json();
        if let Some(x) = &explained {
            j["error"]["explanation"] = serde_json::json!(x);
        }
        out.always_json(&j);
    }
    eprintln!("error: {e}");
    if let Some(x) = explained {
        eprintln!("  → {}", x.one_line());
    }
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> crate::Result<()> {
    let out = Output { json: cli.json };
    let recording = recording::start(&cli)?;
    let Some(command) = &cli.command else {
        let result = console_cmd::run(&cli, &out);
        return recording::finish(recording, result);
    };
    let result = match command {
        Command::Info(a) => info_cmd::run(a, &out),
        Command::Ramdump(a) => sahara_cmds::ramdump(a, &out),
        Command::SaharaUpload(a) => sahara_cmds::upload(a, &out),
        Command::Flash(a) => firehose_cmds::flash(a, &out),
        Command::Read(a) => firehose_cmds::read(a, &out),
        Command::StorageInfo(a) => firehose_cmds::storage_info(a, &out),
        Command::Sim(a) => sim_cmd::run(a, &out),
        Command::Bench(a) => bench::run(a, &out),
        Command::Demo(a) if console_cmd::wants_tui(&cli) => console_cmd::run_demo(&cli, a, &out),
        Command::Demo(a) => demo::run(a, &out),
        Command::Replay(a) => replay_cmd::run(a, &out),
        Command::List(a) => device_cmds::list(a, &out),
        Command::UdevRules => device_cmds::udev_rules(&out),
        Command::Preflight(a) => preflight_cmd::run(a, &out),
        Command::Watch(a) => watch_cmd::run(a, &out),
        Command::Package(c) => package_cmds::run(c, &out),
        Command::Status(a) => status_cmd::run(a, &out),
        Command::Backup(a) => backup_cmds::run(a, &out),
        Command::Restore(a) => backup_cmds::restore(a, &out),
        Command::Update(a) => update_cmd::update(a, &out),
        Command::Edl(a) => update_cmd::edl(a, &out),
    };
    recording::finish(recording, result)
}
