//! `qrescue flash PACKAGE`, the part that talks to the modem: a journaled flash that continues
//! when the same unit comes back ([`crate::engine::resume::flash_resumable`]).
//!
//! - `--port usb[:WHICH]`: follows the USB bus (hotplug) and opens the unit the moment it
//!   appears in download mode, first and after every drop or boot-loop window.
//! - `--sim SOCKET`: the same over an emulator's announcement socket (`qrescue sim --pty`).
//! - `--port PATH` (a tty): the journaled flash on that port; after a drop the same path is
//!   opened again when it reappears (a bounded wait, there is no hotplug for a bare path).
//! - `--fresh`: ignore this unit's journal and start from the first step.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::args::FlashArgs;
use crate::cli::firehose_cmds::EventPrinter;
use crate::cli::output::{self, Output};
use crate::cli::port::{self, PortSpec};
use crate::cli::{recording, signals};
use crate::device::classify::classify;
use crate::device::DeviceSnapshot;
use crate::engine::flash::{FlashJob, FlashPlan};
use crate::engine::journal::{JournalStore, Opening};
use crate::engine::outcome::{RunDevice, RunStart, RunStore};
use crate::engine::resume::{
    flash_resumable, AttemptRecords, Link, Reconnect, ResumeNotice, ResumeOptions, SourceReconnect,
};
use crate::transport::open::{open_device, OpenOptions};
use crate::transport::usb::UsbSelector;
use crate::transport::Transport;

/// How long a tty path gets to come back after a drop.
const TTY_RETURN: Duration = Duration::from_secs(15);
/// How long a USB or emulated unit gets to (re)appear.
const BUS_RETURN: Duration = Duration::from_secs(120);

/// Whether `snap` is what `sel` names.
fn selected(sel: &UsbSelector, snap: &DeviceSnapshot) -> bool {
    match sel {
        UsbSelector::Only => true,
        UsbSelector::Location(l) => snap.location() == *l,
        UsbSelector::Serial(s) => classify(snap)
            .serial(snap)
            .is_some_and(|x| x.eq_ignore_ascii_case(s)),
        UsbSelector::BusAddress { bus, address } => snap.bus == *bus && snap.address == *address,
    }
}

fn opener(args: &FlashArgs) -> crate::engine::resume::Opener {
    let opts = OpenOptions {
        usb: port::usb_options(&args.fh.port),
        ..OpenOptions::default()
    };
    Box::new(move |snap| {
        let t = open_device(snap, &opts)?;
        Ok(Box::new(recording::wrap(t)) as Box<dyn Transport>)
    })
}

/// The one emulator of a single-modem flash (`--sim SOCKET`); several need --all / --devices.
fn one_sim(args: &FlashArgs) -> crate::Result<Option<&std::path::PathBuf>> {
    match args.sim.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(crate::Error::usage(
            "several --sim emulators were given for a flash of one modem",
            "Give one --sim SOCKET, or add --all (or --devices sim:N) to flash the modems of every emulator",
        )),
    }
}

/// The port to identify the modem on before the package check (`--sim`: the first unit in
/// download mode the emulator shows, waited for).
pub fn open_port(args: &FlashArgs) -> crate::Result<Box<dyn Transport>> {
    let Some(sock) = one_sim(args)? else {
        return port::open(&args.fh.port);
    };
    let source = crate::device::sim_source::SimSource::connect(sock)?;
    let mut r = SourceReconnect::new(Box::new(source), opener(args));
    match r.next_link(BUS_RETURN, signals::flag())? {
        Some(link) => Ok(link.transport),
        None => Err(crate::Error::new(
            crate::ErrorKind::NoDevice,
            format!(
                "No emulated modem in download mode appeared at {} within {:.0} s",
                sock.display(),
                BUS_RETURN.as_secs_f64()
            ),
            "the flash needs a unit in download mode (05c6:9008)",
            "Start `qrescue sim --pty` (without --normal) and pass its socket",
        )),
    }
}

/// Reopens a tty path: the first time at once (or the link already open), later when the path
/// is there again.
struct TtyReconnect {
    path: std::path::PathBuf,
    first: Option<Box<dyn Transport>>,
    args_port: crate::cli::args::PortArgs,
    opened: u32,
}

impl Reconnect for TtyReconnect {
    fn next_link(
        &mut self,
        wait: Duration,
        cancel: &std::sync::atomic::AtomicBool,
    ) -> crate::Result<Option<Link>> {
        let port = self.path.display().to_string();
        if let Some(t) = self.first.take() {
            self.opened += 1;
            return Ok(Some(Link {
                transport: t,
                appeared: Instant::now(),
                window: None,
                port,
            }));
        }
        let wait = if self.opened == 0 {
            wait
        } else {
            wait.min(TTY_RETURN)
        };
        let deadline = Instant::now() + wait;
        loop {
            if self.path.exists() {
                if let Ok(t) = port::open(&self.args_port) {
                    self.opened += 1;
                    return Ok(Some(Link {
                        transport: t,
                        appeared: Instant::now(),
                        window: None,
                        port,
                    }));
                }
            }
            if Instant::now() >= deadline || cancel.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn clone_port_args(a: &crate::cli::args::PortArgs) -> crate::cli::args::PortArgs {
    crate::cli::args::PortArgs {
        port: a.port.clone(),
        no_zlp: a.no_zlp,
        usb_chunk: a.usb_chunk,
    }
}

/// One line for people per notice (also the station's and the update workflow's).
pub(crate) fn notice_line(n: &ResumeNotice) -> Option<String> {
    Some(match n {
        ResumeNotice::Waiting { attempt: 1, .. } => return None,
        ResumeNotice::Waiting { after, wait_s, .. } => format!(
            "{}: waiting up to {wait_s:.0} s for the modem to come back…",
            after.as_deref().unwrap_or("The modem left")
        ),
        ResumeNotice::Connected { attempt: 1, .. } => return None,
        ResumeNotice::Connected {
            attempt,
            port,
            window_ms,
        } => {
            let w = window_ms
                .map(|w| format!(", in a {:.1} s boot-loop window", w as f64 / 1000.0))
                .unwrap_or_default();
            format!("The modem is back on {port}: attempt {attempt}{w}")
        }
        ResumeNotice::Journal {
            unit,
            path,
            opening,
        } => match opening {
            Opening::New { .. } => format!("Journal: {path} (unit {unit})"),
            Opening::Resume {
                steps_done,
                steps_total,
                ..
            } => format!(
                "Resuming the interrupted flash of unit {unit}: {steps_done} of {steps_total} steps were written earlier and are skipped (journal {path}; --fresh starts over)"
            ),
            Opening::Restarted { why } => format!(
                "Warning: unit {unit} has a journal, but {why}: starting over from the first step (journal {path})"
            ),
        },
        ResumeNotice::OtherUnit { found, expected } => format!(
            "Another modem (unit {found}) appeared; it is left alone, waiting for unit {expected}"
        ),
        ResumeNotice::Windows(f) => format!(
            "Boot loop: {:.1} s windows at {}/s ({:.1} s to get ready in each): this plan needs about {} windows ({} more)",
            f.window_ms as f64 / 1000.0,
            output::bytes(f.bytes_per_s as u64),
            f.setup_ms as f64 / 1000.0,
            f.windows_total,
            f.windows_left
        ),
        ResumeNotice::Unjournaled { why } => format!(
            "No journal for this flash: the modem's serial could not be read ({why}). It runs once; if it is cut, power-cycle the modem into 9008 and flash again"
        ),
    })
}

/// Flash `plan` with a journal, resuming across drops (see the module docs). `link` is the
/// port already opened to identify the modem, if any.
pub fn flash(
    args: &FlashArgs,
    package: &Path,
    revision: Option<String>,
    plan: &FlashPlan,
    job: FlashJob,
    link: Option<Box<dyn Transport>>,
    out: &Output,
) -> crate::Result<()> {
    let store = JournalStore::default_location()?;
    let mut reconnect: Box<dyn Reconnect> = match (one_sim(args)?, &args.fh.port.port) {
        (Some(sock), _) => {
            // The identify link (if any) is closed; the unit is opened again from the source.
            drop(link);
            let source = crate::device::sim_source::SimSource::connect(sock)?;
            Box::new(SourceReconnect::new(
                recording::wrap_source(source),
                opener(args),
            ))
        }
        (None, PortSpec::Usb(sel)) => {
            drop(link);
            let sel = sel.clone();
            let source = crate::device::watch::usb_source(crate::device::enumerate::Sysfs::host());
            Box::new(
                SourceReconnect::new(recording::wrap_source(source), opener(args))
                    .accept(move |s| selected(&sel, s)),
            )
        }
        (None, PortSpec::Path(path)) => Box::new(TtyReconnect {
            path: path.clone(),
            first: link,
            args_port: clone_port_args(&args.fh.port),
            opened: 0,
        }),
    };
    let opts = ResumeOptions {
        package: package.display().to_string(),
        fresh: args.fresh,
        return_wait: BUS_RETURN,
        ..ResumeOptions::default()
    };
    let mut printer = EventPrinter::new(*out);
    // One run record per attempt, for `qrescue status` (a record that cannot be written never
    // stops the flash).
    let runs = RunStore::default_location()
        .map_err(|e| tracing::info!("this flash is not recorded: {e}"))
        .ok();
    let records = std::cell::RefCell::new(AttemptRecords::new(
        runs,
        RunStart {
            tool: "flash".into(),
            device: RunDevice::default(),
            package: Some(package.display().to_string()),
            package_revision: revision,
            log_file: None,
        },
    ));
    let result = flash_resumable(
        &mut *reconnect,
        plan,
        &job,
        &store,
        &opts,
        &mut |e| {
            records.borrow_mut().on_event(&e);
            printer.event(&e);
        },
        &mut |n| {
            records.borrow_mut().on_notice(n);
            out.json_line(n);
            if let Some(l) = notice_line(n) {
                out.line(l);
            }
        },
        signals::flag(),
    );
    records.into_inner().end(result.as_ref());
    let result = result?;
    if result.attempts > 1 {
        out.line(format!(
            "Finished in {} attempts; {} of image data sent in all ({} in the plan)",
            result.attempts,
            output::bytes(result.bytes_sent),
            output::bytes(plan.total_bytes())
        ));
    }
    out.json_line(&json!({
        "event": "flashed",
        "report": result.last.report,
        "resume": {
            "unit": result.unit,
            "attempts": result.attempts,
            "bytes_sent": result.bytes_sent,
            "opening": result.opening,
            "windows": result.windows,
        },
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::resume::WindowForecast;

    #[test]
    fn notices_read_as_plain_lines() {
        let unit = crate::engine::journal::UnitKey::from_serial(0xabc);
        let l = notice_line(&ResumeNotice::Journal {
            unit: unit.clone(),
            path: "/d/j.jsonl".into(),
            opening: Opening::Restarted {
                why: "the unfinished flash in its journal was of another package or plan (changed files: a.img)".into(),
            },
        })
        .unwrap();
        assert!(
            l.starts_with("Warning: unit sn-0x00000abc has a journal"),
            "{l}"
        );
        assert!(l.contains("starting over"), "{l}");
        let l = notice_line(&ResumeNotice::Windows(WindowForecast {
            windows_total: 5,
            windows_left: 4,
            window_ms: 10_000,
            setup_ms: 1_500,
            bytes_per_s: 4e6,
        }))
        .unwrap();
        assert!(l.contains("needs about 5 windows (4 more)"), "{l}");
        assert!(notice_line(&ResumeNotice::Waiting {
            attempt: 1,
            wait_s: 1.0,
            after: None
        })
        .is_none());
    }
}
