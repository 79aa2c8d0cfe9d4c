//! `--record FILE`: one recorder for the whole command, which the runners reach through
//! [`wrap`] (every transport they open: the port in `port.rs`, the in-process link of `demo`),
//! [`wrap_source`] (device sources) and [`mark`] / [`engine_event`] (phase labels).

use std::path::PathBuf;
use std::sync::Mutex;

use crate::cli::args::{Cli, Command};
use crate::device::DeviceSource;
use crate::engine::events::EngineEvent;
use crate::record::writer::lock;
use crate::record::{RecordOptions, Recorder, RecordingSource, SharedRecorder};
use crate::transport::record::RecordingTransport;
use crate::transport::Transport;
use crate::Error;

/// The recorder of the running command, if `--record` was given.
static ACTIVE: Mutex<Option<SharedRecorder>> = Mutex::new(None);

fn active() -> Option<SharedRecorder> {
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A recording in progress (from [`start`] to [`finish`]).
pub struct Active {
    path: PathBuf,
    recorder: SharedRecorder,
}

/// Start recording when `--record` was given.
pub fn start(cli: &Cli) -> crate::Result<Option<Active>> {
    let Some(path) = &cli.record else {
        return Ok(None);
    };
    let name = match &cli.command {
        None => {
            return Err(Error::usage(
                "The console does not record sessions yet",
                "Use --record with a command that talks to a modem (info, ramdump, flash, read, storage-info, demo)",
            ))
        }
        Some(Command::Sim(_)) => Some("sim"),
        Some(Command::Bench(_)) => Some("bench"),
        Some(Command::Replay(_)) => Some("replay"),
        _ => None,
    };
    if let Some(name) = name {
        return Err(Error::usage(
            format!("`qrescue {name}` has no session with a modem to record"),
            "Use --record with a command that talks to a modem (info, ramdump, flash, read, storage-info, demo)",
        ));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = RecordOptions {
        note: format!("qrescue {}", args.join(" ")),
        ..RecordOptions::default()
    };
    let recorder = Recorder::create(path, opts)?.shared();
    *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(recorder.clone());
    Ok(Some(Active {
        path: path.clone(),
        recorder,
    }))
}

/// End the recording: note how the command ended, write everything out, and report a
/// recording that could not be written (after the command's own error, which comes first).
pub fn finish(active: Option<Active>, result: crate::Result<()>) -> crate::Result<()> {
    let Some(a) = active else {
        return result;
    };
    ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).take();
    let written = {
        let mut r = lock(&a.recorder);
        match &result {
            Ok(()) => r.mark("command finished", None),
            Err(e) => r.mark(&format!("command failed: {}", e.what), None),
        }
        r.finish()
    };
    tracing::info!("recording written to {}", a.path.display());
    match (result, written) {
        (Err(e), _) => Err(e),
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(e)) => Err(Error::failure(
            format!("The recording {} is incomplete", a.path.display()),
            "writing it failed during the session",
            "Check the disk space of that folder and record again",
        )
        .with_source(e)),
    }
}

/// Record `t` as a stream of the running recording (unchanged without `--record`).
pub fn wrap<T: Transport>(t: T) -> RecordingTransport<T> {
    match active() {
        Some(r) => RecordingTransport::new(t, &r),
        None => RecordingTransport::passthrough(t),
    }
}

/// Record the events of `source` (unchanged without `--record`).
pub fn wrap_source<S: DeviceSource + 'static>(source: S) -> Box<dyn DeviceSource> {
    match active() {
        Some(r) => Box::new(RecordingSource::new(source, r)),
        None => Box::new(source),
    }
}

/// A phase label in the running recording.
pub fn mark(label: &str) {
    if let Some(r) = active() {
        lock(&r).mark(label, None);
    }
}

/// Phase labels from the engine's events: each step's start, a failure, the end.
pub fn engine_event(e: &EngineEvent) {
    if active().is_none() {
        return;
    }
    let label = match e {
        EngineEvent::StepStarted {
            index, kind, name, ..
        } => {
            let kind = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            format!("step {index} {kind} {name}")
        }
        EngineEvent::StepFailed { index, what, .. } => format!("step {index} failed: {what}"),
        EngineEvent::Done { ok, .. } => {
            if *ok {
                "flash done".to_string()
            } else {
                "flash stopped".to_string()
            }
        }
        _ => return,
    };
    mark(&label);
}
