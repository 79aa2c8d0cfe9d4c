//! clap definitions and one runner per subcommand. Runners print human lines or `--json`
//! objects on stdout; logs go to stderr or `--log-file`; errors map to exit codes.

pub mod args;
pub mod logging;
pub mod output;
pub mod signals;

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
    if let Err(e) = logging::init(cli.verbose, cli.log_file.as_deref()) {
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
    tracing::error!(kind = ?e.kind, "{}", e.what);
    if out.json {
        out.always_json(&e.to_json());
    }
    eprintln!("error: {e}");
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> crate::Result<()> {
    let _out = Output { json: cli.json };
    let name = format!("{:?}", cli.command);
    Err(crate::Error::usage(
        format!("this command is not available in this build: {name}"),
        "see README.md",
    ))
}
