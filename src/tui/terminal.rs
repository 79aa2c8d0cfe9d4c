//! Terminal hygiene for the console: raw mode and the alternate screen while it runs, and the
//! person's terminal given back in every way the console can end — a normal exit (the guard's
//! `Drop`), a panic on the UI thread (a hook that restores first, then prints), SIGTERM/SIGINT
//! (turned into [`Msg::Terminate`] so the loop ends cleanly) — and SIGHUP (the SSH session
//! dropped) turned into [`Msg::Hangup`]: the console stops drawing but a running flash finishes.
//!
//! Signals arrive through a self-pipe: the handler only writes the signal number to a
//! non-blocking pipe (async-signal-safe); a thread reads it and sends the message.

use std::io::{self, Stdout, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Mutex, Once};
use std::thread::{JoinHandle, ThreadId};

use crossterm::cursor::{Hide, Show};
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use super::msg::Msg;
use crate::Error;

/// The terminal is in raw mode on the alternate screen (ours to give back).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The thread that draws (a panic there restores the terminal before printing).
static UI_THREAD: Mutex<Option<ThreadId>> = Mutex::new(None);
static HOOK: Once = Once::new();

fn term_error(what: &str, e: io::Error) -> Error {
    Error::failure(
        format!("Cannot {what}"),
        "the console needs a terminal it can switch to full-screen mode",
        "Run it in a terminal, or use --no-tui for plain lines",
    )
    .with_source(e)
}

/// Write what leaves the alternate screen and shows the cursor again.
pub fn write_leave(w: &mut impl Write) -> io::Result<()> {
    crossterm::queue!(w, LeaveAlternateScreen, Show)?;
    w.flush()
}

/// Give the terminal back if the console holds it (idempotent): raw mode off, main screen,
/// cursor shown. Errors are ignored: after a hangup there is no terminal to restore.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = crossterm::terminal::disable_raw_mode();
        let _ = write_leave(&mut io::stdout());
    }
}

/// What the panic hook does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PanicAction {
    /// The console is not on screen: the usual message.
    Print,
    /// The UI thread panicked: restore the terminal, then the usual message.
    RestoreThenPrint,
    /// Another thread panicked while the console is on screen: printing would scribble over
    /// it, so the message goes to the log (the executor reports the failed task).
    LogOnly,
}

/// Decide what to do with a panic.
pub fn panic_action(active: bool, on_ui_thread: bool) -> PanicAction {
    match (active, on_ui_thread) {
        (false, _) => PanicAction::Print,
        (true, true) => PanicAction::RestoreThenPrint,
        (true, false) => PanicAction::LogOnly,
    }
}

fn install_panic_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ui = UI_THREAD
                .lock()
                .map(|t| *t == Some(std::thread::current().id()))
                .unwrap_or(false);
            match panic_action(ACTIVE.load(Ordering::SeqCst), ui) {
                PanicAction::Print => previous(info),
                PanicAction::RestoreThenPrint => {
                    restore();
                    previous(info);
                }
                PanicAction::LogOnly => tracing::error!("panic: {info}"),
            }
        }));
    });
}

/// The console's hold on the terminal; dropping it gives the terminal back.
pub struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    /// Raw mode, the alternate screen, cursor hidden; the panic hook installed.
    pub fn enter() -> crate::Result<TerminalGuard> {
        install_panic_hook();
        if let Ok(mut t) = UI_THREAD.lock() {
            *t = Some(std::thread::current().id());
        }
        crossterm::terminal::enable_raw_mode().map_err(|e| term_error("switch to raw mode", e))?;
        ACTIVE.store(true, Ordering::SeqCst);
        let mut out = io::stdout();
        if let Err(e) = crossterm::execute!(out, EnterAlternateScreen, Hide) {
            restore();
            return Err(term_error("switch to the alternate screen", e));
        }
        let terminal = match Terminal::new(CrosstermBackend::new(io::stdout())) {
            Ok(t) => t,
            Err(e) => {
                restore();
                return Err(term_error("set up the screen", e));
            }
        };
        Ok(TerminalGuard { terminal })
    }

    pub fn terminal(&mut self) -> &mut Terminal<CrosstermBackend<Stdout>> {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        if let Ok(mut t) = UI_THREAD.lock() {
            *t = None;
        }
    }
}

// ------------------------------------------------------------------------------------ signals

/// Write end of the self-pipe (-1 when no watch is installed).
static PIPE_WR: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = PIPE_WR.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) on a non-blocking pipe is async-signal-safe; a full pipe drops it.
        unsafe {
            let _ = libc::write(fd, (&b as *const u8).cast(), 1);
        }
    }
}

/// The message a signal becomes.
pub fn signal_msg(sig: i32) -> Option<Msg> {
    match sig {
        libc::SIGHUP => Some(Msg::Hangup),
        libc::SIGINT | libc::SIGTERM => Some(Msg::Terminate),
        _ => None,
    }
}

/// SIGINT/SIGTERM/SIGHUP turned into messages while it lives; the previous handlers come back
/// when it is dropped. One at a time per process.
pub struct SignalWatch {
    old: Vec<(nix::sys::signal::Signal, nix::sys::signal::SigAction)>,
    wr: OwnedFd,
    thread: Option<JoinHandle<()>>,
}

impl SignalWatch {
    pub fn install(tx: Sender<Msg>) -> crate::Result<SignalWatch> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
        let io_err = |what: &str, e: nix::errno::Errno| {
            Error::failure(
                format!("Cannot {what} for the console's signal handling"),
                "the console turns SIGTERM and SIGHUP into a clean stop",
                "This is unusual; try again, or use --no-tui",
            )
            .with_source(io::Error::from(e))
        };
        let (rd, wr) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("create a pipe", e))?;
        let flags =
            fcntl(wr.as_raw_fd(), FcntlArg::F_GETFL).map_err(|e| io_err("read pipe flags", e))?;
        fcntl(
            wr.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .map_err(|e| io_err("set pipe flags", e))?;
        let thread = std::thread::Builder::new()
            .name("console-signals".into())
            .spawn(move || {
                let mut b = [0u8; 1];
                loop {
                    match nix::unistd::read(rd.as_fd().as_raw_fd(), &mut b) {
                        Ok(1) if b[0] != 0 => {
                            let sig = i32::from(b[0]);
                            tracing::info!("received signal {sig}");
                            if let Some(m) = signal_msg(sig) {
                                if tx.send(m).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(nix::errno::Errno::EINTR) => {}
                        // 0 means stop; end of file or an error: the watch is over.
                        _ => return,
                    }
                }
            })
            .map_err(|e| {
                Error::failure(
                    "Cannot start the console's signal thread",
                    "the console turns SIGTERM and SIGHUP into a clean stop",
                    "Close other programs and try again",
                )
                .with_source(e)
            })?;
        PIPE_WR.store(wr.as_raw_fd(), Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut old = Vec::new();
        for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
            // SAFETY: the handler only loads an atomic and calls write(2).
            if let Ok(prev) = unsafe { sigaction(sig, &action) } {
                old.push((sig, prev));
            }
        }
        Ok(SignalWatch {
            old,
            wr,
            thread: Some(thread),
        })
    }
}

impl Drop for SignalWatch {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: putting back the handlers that were installed before.
            unsafe {
                let _ = nix::sys::signal::sigaction(*sig, prev);
            }
        }
        PIPE_WR.store(-1, Ordering::SeqCst);
        let _ = nix::unistd::write(&self.wr, &[0u8]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaving_writes_the_main_screen_and_cursor_sequences() {
        let mut v = Vec::new();
        write_leave(&mut v).unwrap();
        let s = String::from_utf8(v).unwrap();
        assert!(s.contains("\x1b[?1049l"), "leave alternate screen: {s:?}");
        assert!(s.contains("\x1b[?25h"), "show cursor: {s:?}");
    }

    #[test]
    fn panics_restore_only_from_the_ui_thread_and_never_print_over_the_screen() {
        assert_eq!(panic_action(false, false), PanicAction::Print);
        assert_eq!(panic_action(false, true), PanicAction::Print);
        assert_eq!(panic_action(true, true), PanicAction::RestoreThenPrint);
        assert_eq!(panic_action(true, false), PanicAction::LogOnly);
    }

    #[test]
    fn restore_without_a_held_terminal_does_nothing() {
        assert!(!ACTIVE.load(Ordering::SeqCst));
        restore();
        assert!(!ACTIVE.load(Ordering::SeqCst));
    }

    #[test]
    fn signals_become_messages() {
        assert!(matches!(signal_msg(libc::SIGHUP), Some(Msg::Hangup)));
        assert!(matches!(signal_msg(libc::SIGTERM), Some(Msg::Terminate)));
        assert!(matches!(signal_msg(libc::SIGINT), Some(Msg::Terminate)));
        assert!(signal_msg(libc::SIGUSR1).is_none());
    }

    #[test]
    fn a_raised_sighup_arrives_as_a_hangup_and_the_old_handler_comes_back() {
        let (tx, rx) = std::sync::mpsc::channel();
        let watch = SignalWatch::install(tx).unwrap();
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGHUP).unwrap();
        let m = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the hangup message");
        assert!(matches!(m, Msg::Hangup));
        drop(watch);
        assert_eq!(PIPE_WR.load(Ordering::SeqCst), -1);
    }
}
