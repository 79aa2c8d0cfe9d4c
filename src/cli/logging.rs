//! Logging setup: tracing to stderr or to a file, never to stdout (stdout is for output and
//! `--json` lines).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use tracing_subscriber::EnvFilter;

use crate::{Error, ErrorKind};

/// Install the global subscriber. `verbose` counts `-v` flags; `RUST_LOG` overrides.
pub fn init(verbose: u8, log_file: Option<&Path>) -> crate::Result<()> {
    let default = match verbose {
        0 => "warn",
        1 => "info,qrescue=info",
        2 => "info,qrescue=debug",
        _ => "debug,qrescue=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match log_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Usage,
                        format!("cannot open the log file {}", path.display()),
                        "the log must go to a file qrescue can write",
                        "choose another --log-file path or fix the folder's permissions",
                    )
                    .with_source(e)
                })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
        }
        None => builder
            .with_ansi(stderr_wants_color())
            .with_writer(std::io::stderr)
            .try_init(),
    };
    // A second init (tests calling run() twice) is harmless.
    let _ = result;
    Ok(())
}

/// The console's log file, once [`init_console`] chose it.
static CONSOLE_LOG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Logging while the console's full screen runs: never to the terminal, but into the log pane
/// (tui-logger) and a file — `log_file`, or `console-<time>.log` in qrescue's data folder
/// (`$XDG_DATA_HOME/qrescue/logs`, else `~/.local/share/qrescue/logs`). The file is the record
/// of a flash that ran on after the terminal went away. Returns the file's path.
pub fn init_console(verbose: u8, log_file: Option<&Path>) -> crate::Result<PathBuf> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let path = match log_file {
        Some(p) => p.to_path_buf(),
        None => {
            let dir = crate::engine::outcome::data_dir()
                .map(|d| d.join("logs"))
                .ok_or_else(|| {
                    Error::usage(
                        "No folder for the console's log: HOME, XDG_DATA_HOME and QRESCUE_DATA_DIR are all unset",
                        "Give one with --log-file FILE",
                    )
                })?;
            let stamp = crate::engine::outcome::utc_compact(crate::engine::outcome::unix_ms_now());
            dir.join(format!("console-{stamp}.log"))
        }
    };
    let open_error = |e: std::io::Error| {
        Error::new(
            ErrorKind::Usage,
            format!("cannot open the log file {}", path.display()),
            "while the console runs, its log goes to a file (and the log pane), never to the terminal",
            "choose another --log-file path or fix the folder's permissions",
        )
        .with_source(e)
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(open_error)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(open_error)?;
    let default = match verbose {
        0 => "info",
        1 => "info,qrescue=debug",
        _ => "debug,qrescue=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let to_file = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::sync::Mutex::new(file));
    // A second init (tests) is harmless.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(to_file)
        .with(tui_logger::TuiTracingSubscriberLayer)
        .with(crate::tui::runtime::LogWakeLayer)
        .try_init();
    let _ = tui_logger::init_logger(tui_logger::LevelFilter::Trace);
    tui_logger::set_default_level(tui_logger::LevelFilter::Trace);
    let _ = CONSOLE_LOG.set(path.clone());
    Ok(path)
}

/// The console's log file, when [`init_console`] ran.
pub fn console_log_file() -> Option<&'static Path> {
    CONSOLE_LOG.get().map(PathBuf::as_path)
}

/// Colour on stderr only for a person at a terminal: never into a pipe or a file, and never when
/// NO_COLOR is set (to anything non-empty, https://no-color.org).
fn stderr_wants_color() -> bool {
    color_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

pub fn color_allowed(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::color_allowed;
    use std::ffi::OsStr;

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(color_allowed(true, None));
        assert!(color_allowed(true, Some(OsStr::new(""))));
        assert!(!color_allowed(true, Some(OsStr::new("1"))));
        assert!(!color_allowed(false, None));
    }
}
