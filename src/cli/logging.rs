//! Logging setup: tracing to stderr or to a file, never to stdout (stdout is for output and
//! `--json` lines).

use std::io::IsTerminal;
use std::path::Path;

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

/// Colour on stderr only for a person at a terminal: never into a pipe or a file, and never when
/// NO_COLOR is set (to anything non-empty, https://no-color.org).
fn stderr_wants_color() -> bool {
    color_allowed(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    )
}

fn color_allowed(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
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
