//! `qrescue backup` (make one), `qrescue backup list`, `qrescue backup verify BACKUP` and
//! `qrescue restore BACKUP`: the front end of [`crate::backup`].
//!
//! A backup starts with the boot ROM's identity (Sahara command mode), then uploads the
//! programmer like `flash` does and saves the device-unique partitions (or, with `--full`,
//! everything). A restore shows its plan first and writes only after a typed confirmation (or
//! `--yes`), only to the same unit.
//!
//! Without `--port` (or with `--diag`) the modem is found as `qrescue info` finds it; in normal
//! mode the backup is an NV/EFS backup over DIAG ([`crate::backup::diag`]) with the normal-mode
//! identity (AT identity, DIAG revision, USB composition). Such a backup is listed and verified
//! like any other; `restore` refuses it with plain words.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::backup::diag::{take_diag_backup, DiagBackupOptions, DiagProgress, EFS_ROOTS};
use crate::backup::run::{self, BackupOptions, RestorePlan};
use crate::backup::store::{self, BackupKind, ItemOrigin, Store, StoredBackup};
use crate::backup::Identity;
use crate::cli::args::{
    BackupArgs, BackupCommand, BackupStoreArgs, BackupVerifyArgs, PortArgs, RestoreArgs,
};
use crate::cli::info_cmd::{self, Found, NormalPorts};
use crate::cli::output::{self, Output};
use crate::cli::port::PortSpec;
use crate::cli::{firehose_cmds, port, recording, sahara_cmds, signals};
use crate::device::classify::{Mode, PortRole};
use crate::engine::diag::DiagSession;
use crate::engine::events::{EngineEvent, StepKind};
use crate::engine::firehose::{FirehoseSession, PowerMode, StorageKind};
use crate::engine::identify::NormalInfoOptions;
use crate::engine::sahara::SaharaConfig;
use crate::transport::usb::UsbSelector;
use crate::transport::{Pushback, Transport};
use crate::{Error, ErrorKind};

pub fn run(a: &BackupArgs, out: &Output) -> crate::Result<()> {
    match &a.command {
        Some(BackupCommand::List(l)) => list(l, out),
        Some(BackupCommand::Verify(v)) => verify(v, out),
        None => make(a, out),
    }
}

/// The store at `dir`, or the default one.
pub fn store_at(dir: Option<&Path>) -> crate::Result<Store> {
    match dir {
        Some(d) => Ok(Store::new(d)),
        None => Store::open_default(),
    }
}

fn kind_word(k: StepKind) -> &'static str {
    match k {
        StepKind::Read => "read",
        StepKind::Verify => "verify",
        StepKind::Erase => "erase",
        StepKind::Program => "write",
        StepKind::SaharaUpload => "upload",
        StepKind::Configure => "configure",
        StepKind::Patch => "patch",
        StepKind::SetBootable => "boot",
        StepKind::Reset => "reset",
    }
}

/// Engine events of a backup or restore for people (progress at most once a second per step)
/// or as JSON lines.
struct Printer {
    out: Output,
    steps: Vec<(StepKind, String)>,
    last: Option<Instant>,
}

impl Printer {
    fn new(out: Output) -> Self {
        Printer {
            out,
            steps: Vec::new(),
            last: None,
        }
    }

    fn event(&mut self, e: &EngineEvent) {
        recording::engine_event(e);
        self.out.json_line(e);
        match e {
            EngineEvent::Plan { steps, total_bytes } => {
                self.steps = steps.iter().map(|s| (s.kind, s.name.clone())).collect();
                self.out.line(format!(
                    "Plan: {} steps, {} through the link.",
                    steps.len(),
                    output::bytes(*total_bytes)
                ));
            }
            EngineEvent::StepStarted { index, bytes, .. } => {
                self.last = Some(Instant::now());
                let (kind, name) = self
                    .steps
                    .get(*index)
                    .cloned()
                    .unwrap_or((StepKind::Read, String::new()));
                let size = if *bytes > 0 {
                    format!(" ({})", output::bytes(*bytes))
                } else {
                    String::new()
                };
                self.out.line(format!(
                    "[{:>2}/{}] {} {name}{size}",
                    index + 1,
                    self.steps.len(),
                    kind_word(kind)
                ));
            }
            EngineEvent::Progress {
                done,
                total,
                bytes_per_s,
                ..
            } => {
                if self
                    .last
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                    && done < total
                {
                    self.last = Some(Instant::now());
                    self.out.line(format!(
                        "        {:>3}%  {} of {}  {}",
                        done * 100 / (*total).max(1),
                        output::bytes(*done),
                        output::bytes(*total),
                        output::rate(*bytes_per_s)
                    ));
                }
            }
            EngineEvent::StepFinished { .. } => {}
            EngineEvent::StepFailed { what, .. } => {
                self.out.line(format!("        FAILED: {what}"))
            }
            EngineEvent::Log { message } => self.out.line(format!("        {message}")),
            EngineEvent::Done { .. } => {}
        }
    }
}

/// The opened port, bytes already read pushed back.
type Link = Pushback<Box<dyn Transport>>;

/// Open the port and read the boot ROM's identity (nothing is uploaded yet).
fn open_identified(
    port_args: &crate::cli::args::PortArgs,
) -> crate::Result<(Link, Option<Identity>)> {
    let t = port::open(port_args)?;
    let (t, info) = run::identify(t, &SaharaConfig::default())?;
    let identity = info
        .as_ref()
        .map(Identity::from_device_info)
        .filter(|i| i.unit_key().is_some());
    Ok((t, identity))
}

/// Upload the programmer (or attach to a running one) on an identified link.
fn print_identity(id: &Identity, out: &Output) {
    for l in id.describe() {
        out.line(format!("  {l}"));
    }
}

fn make(a: &BackupArgs, out: &Output) -> crate::Result<()> {
    if info_cmd::port_given(&a.fh.port) {
        return make_firehose(a, &a.fh.port, out);
    }
    let (found, at, dm) = if a.find.at.is_some() || a.find.dm.is_some() {
        (None, a.find.at.clone(), a.find.dm.clone())
    } else {
        let found = info_cmd::find_modem(&a.find)?;
        match &found.class.mode {
            Mode::QuectelNormal { .. } => {
                let (at, dm) = info_cmd::normal_ttys(&found);
                (Some(found), at, dm)
            }
            m if m.speaks_sahara() && !a.diag => {
                // Download mode: partitions, as with --port.
                out.line(format!("Modem: {}", found.headline()));
                let port = match found.tty(PortRole::Sahara) {
                    Some(p) => PortSpec::Path(p),
                    None => PortSpec::Usb(UsbSelector::Location(found.snap.location())),
                };
                let args = PortArgs {
                    port,
                    no_zlp: a.fh.port.no_zlp,
                    usb_chunk: a.fh.port.usb_chunk,
                };
                return make_firehose(a, &args, out);
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::NoDevice,
                    format!(
                        "The modem is not in normal mode ({}), so there is no DIAG port to back up over",
                        found.class.label
                    ),
                    "an NV/EFS backup is read over the DM port of a modem running its firmware",
                    "Without --diag, a modem in download mode is backed up by partitions (qrescue backup); otherwise let it boot to normal mode first",
                ))
            }
        }
    };
    make_diag(a, found.as_ref(), at, dm, out)
}

/// An NV/EFS backup over DIAG of a modem in normal mode.
fn make_diag(
    a: &BackupArgs,
    found: Option<&Found>,
    at: Option<std::path::PathBuf>,
    dm: Option<std::path::PathBuf>,
    out: &Output,
) -> crate::Result<()> {
    if dm.is_none() {
        return Err(Error::new(
            ErrorKind::NoDevice,
            "The modem's DM (DIAG) port is not known, so no NV/EFS backup can be read",
            "NV items and EFS files are read over the DM port (interface 0 on most Quectel modules)",
            "Name it with --dm /dev/ttyUSB0 (qrescue list shows the ports by interface), or back up the partitions in download mode (qrescue backup --port …)",
        ));
    }
    let store = store_at(a.out.as_deref())?;
    match store.cleanup_incomplete() {
        Ok(gone) if !gone.is_empty() => out.line(format!(
            "Removed {} folder(s) left by interrupted backups in {}.",
            gone.len(),
            store.root().display()
        )),
        Ok(_) => {}
        Err(e) => tracing::warn!("{}: {}", e.what, e.why),
    }
    let mut ports = NormalPorts::open(at.as_deref(), dm.as_deref())?;
    let info = ports.identify(&NormalInfoOptions::default());
    let identity = info.identity(found.map(Found::composition));
    match found {
        Some(f) => out.line(format!("Modem: {}", f.headline())),
        None => out.line("Modem in normal mode:"),
    }
    print_identity(&identity, out);
    for n in info.advice() {
        out.line(format!("  note: {n}"));
    }
    let Some(dm_link) = ports.dm.as_mut() else {
        return Err(Error::new(
            ErrorKind::NoDevice,
            "The modem's DM (DIAG) port could not be opened, so no NV/EFS backup can be read",
            ports.problems.join("; "),
            "Free the port (qrescue preflight shows who holds it) and run the backup again",
        ));
    };
    out.line(format!(
        "Backing up NV items and the EFS files of {} over DIAG into {}.",
        EFS_ROOTS.join(" and "),
        store.root().display()
    ));
    let mut diag = DiagSession::new(dm_link);
    let mut show = |p: DiagProgress| {
        out.json_line(&json!({ "event": "diag_backup_progress", "step": p }));
        match p {
            DiagProgress::NvItem { item, what } => out.line(format!("  NV {item:<5} {what}")),
            DiagProgress::EfsFile { path, bytes } => {
                out.line(format!("  EFS   {path} ({})", output::bytes(bytes)))
            }
            DiagProgress::Skipped { what } => out.line(format!("  skipped: {what}")),
            DiagProgress::Writing { files, bytes } => out.line(format!(
                "Writing {files} file(s), {}, and reading each back.",
                output::bytes(bytes)
            )),
            DiagProgress::Listing { .. } => {}
        }
    };
    let b = take_diag_backup(
        &mut diag,
        &identity,
        &store,
        &DiagBackupOptions::default(),
        &mut show,
        signals::flag(),
    )?;
    out.json_line(&json!({
        "event": "backup", "name": b.name, "path": b.path, "manifest": b.manifest,
    }));
    let m = &b.manifest;
    out.line(format!(
        "Backup {} saved: {} file(s), {}, {}.",
        b.name,
        m.items.len(),
        output::bytes(m.total_bytes()),
        b.path.display()
    ));
    out.line(format!("  holds: {}", holds(m)));
    out.line("  verified: every NV item and EFS file read twice with the same bytes, every file read back from disk.");
    out.line("  This backup is for reference and manual recovery: `qrescue restore` does not write NV items or EFS files back. For a copy qrescue can restore, back up the EFS partitions in download mode (qrescue backup --port …).");
    Ok(())
}

/// What a backup holds, in a few words: its partitions, or its NV items and EFS file count.
fn holds(m: &crate::backup::Manifest) -> String {
    if m.kind == BackupKind::NvEfs {
        let nv: Vec<String> = m
            .items
            .iter()
            .filter_map(|i| match &i.origin {
                ItemOrigin::NvItem { item, .. } => Some(item.to_string()),
                ItemOrigin::EfsFile { .. } => None,
            })
            .collect();
        let efs = m
            .items
            .iter()
            .filter(|i| matches!(i.origin, ItemOrigin::EfsFile { .. }))
            .count();
        format!(
            "NV items {}; {efs} EFS file(s)",
            if nv.is_empty() {
                "none".to_string()
            } else {
                nv.join(", ")
            }
        )
    } else {
        m.files
            .iter()
            .filter_map(|f| f.partition.as_deref())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A partition backup over Firehose through `port`.
fn make_firehose(a: &BackupArgs, port: &PortArgs, out: &Output) -> crate::Result<()> {
    if a.diag {
        return Err(Error::usage(
            "--diag reads NV items over a modem's DM port in normal mode; --port names a download-mode port",
            "Drop --port (qrescue finds the modem) or give --dm TTY",
        ));
    }
    let store = store_at(a.out.as_deref())?;
    match store.cleanup_incomplete() {
        Ok(gone) if !gone.is_empty() => out.line(format!(
            "Removed {} folder(s) left by interrupted backups in {}.",
            gone.len(),
            store.root().display()
        )),
        Ok(_) => {}
        Err(e) => tracing::warn!("{}: {}", e.what, e.why),
    }
    let storage: StorageKind = a.fh.storage.map(Into::into).unwrap_or(StorageKind::Nand);
    let kind = if a.full {
        BackupKind::Full
    } else {
        BackupKind::DeviceUnique
    };
    if let Some(p) = &a.fh.programmer {
        // A missing or wrong file is a usage error before the port is opened.
        sahara_cmds::read_programmer(p)?;
    }
    let (t, identity) = open_identified(port)?;
    let identity = identity.ok_or_else(|| run::unknown_identity("make a backup"))?;
    out.line("Modem:");
    print_identity(&identity, out);
    let mut fh = firehose_cmds::start_programmer(t, a.fh.programmer.as_deref(), out)?;
    out.line(format!(
        "Backing up {} of the {} into {}.",
        if a.full {
            "every partition"
        } else {
            "the partitions that hold this modem's own data"
        },
        storage.memory_name(),
        store.root().display()
    ));
    let mut printer = Printer::new(*out);
    let b = run::take_backup(
        &mut fh,
        &identity,
        &store,
        &BackupOptions { kind, storage },
        &mut |e| printer.event(&e),
        signals::flag(),
    )?;
    out.json_line(&json!({
        "event": "backup", "name": b.name, "path": b.path, "manifest": b.manifest,
    }));
    let parts: Vec<&str> = b
        .manifest
        .files
        .iter()
        .filter_map(|f| f.partition.as_deref())
        .collect();
    out.line(format!(
        "Backup {} saved: {} file(s), {}, {}.",
        b.name,
        b.manifest.files.len(),
        output::bytes(b.manifest.total_bytes()),
        b.path.display()
    ));
    out.line(format!("  partitions: {}", parts.join(", ")));
    out.line("  verified: every partition read twice with the same sha256, every file read back from disk.");
    finish(&mut fh, a.no_reset, out)
}

fn list(a: &BackupStoreArgs, out: &Output) -> crate::Result<()> {
    let store = store_at(a.store.as_deref())?;
    let l = store.list()?;
    out.json_line(&json!({
        "event": "backup_list",
        "store": store.root(),
        "backups": l.backups.iter().map(|b| json!({
            "name": b.name, "path": b.path, "unit": b.manifest.unit(),
            "created": b.manifest.created_utc, "kind": b.manifest.kind,
            "storage": b.manifest.storage, "bytes": b.manifest.total_bytes(),
            "partitions": b.manifest.files.iter().filter_map(|f| f.partition.clone()).collect::<Vec<_>>(),
            "items": b.manifest.items.iter().map(|i| i.origin.describe()).collect::<Vec<_>>(),
            "identity": b.manifest.identity,
        })).collect::<Vec<_>>(),
        "damaged": l.damaged,
        "incomplete": l.incomplete.len(),
    }));
    out.line(format!("Backups in {}:", store.root().display()));
    if l.backups.is_empty() {
        out.line("  none");
    }
    for b in &l.backups {
        let m = &b.manifest;
        out.line(format!(
            "  {}  unit {}  {}  {}, {} file(s), {}",
            b.name,
            m.unit(),
            m.created_utc,
            m.kind.as_str(),
            m.files.len() + m.items.len(),
            output::bytes(m.total_bytes())
        ));
        out.line(format!("      {}", holds(m)));
    }
    for d in &l.damaged {
        out.line(format!("  NOT A BACKUP: {} ({})", d.name, d.why));
    }
    if !l.incomplete.is_empty() {
        out.line(format!(
            "  {} interrupted backup folder(s) (hidden, never used; the next `qrescue backup` removes them)",
            l.incomplete.len()
        ));
    }
    Ok(())
}

fn verify(a: &BackupVerifyArgs, out: &Output) -> crate::Result<()> {
    let store = store_at(a.store.store.as_deref())?;
    let b = store.get(&a.backup)?;
    let r = b.verify()?;
    out.json_line(&json!({ "event": "backup_verified", "report": r, "path": b.path }));
    out.line(format!(
        "Backup {} is intact: {} file(s), {}, each matches the sha256 in its manifest.",
        r.backup,
        r.files,
        output::bytes(r.bytes)
    ));
    Ok(())
}

/// Reset the modem (or say that it stays in the programmer).
fn finish<T: Transport>(
    fh: &mut FirehoseSession<T>,
    no_reset: bool,
    out: &Output,
) -> crate::Result<()> {
    if no_reset {
        out.line("The modem stays in download mode with the programmer running (--no-reset).");
        return Ok(());
    }
    fh.power(PowerMode::Reset, 1)?;
    out.line("The modem was reset.");
    Ok(())
}

// ----------------------------------------------------------------------------------- restore

fn print_plan(b: &StoredBackup, plan: &RestorePlan, out: &Output) {
    let m = &b.manifest;
    out.line(format!(
        "Restore backup {} ({} backup of unit {}, taken {}) to the modem:",
        b.name,
        m.kind.as_str(),
        plan.unit,
        m.created_utc
    ));
    for s in &plan.steps {
        let f = &s.file;
        let name = f.partition.clone().unwrap_or_else(|| "(table area)".into());
        out.line(format!(
            "  {:<7} {:<14} LUN {} sectors {}..{}  {:>10}  sha256 {}…",
            if s.erase { "erase+w" } else { "write" },
            name,
            f.lun,
            f.start_sector,
            f.start_sector + f.sectors,
            output::bytes(f.bytes),
            &f.sha256[..12]
        ));
    }
    out.line(format!(
        "  then every region is read back and compared; {} in all.",
        output::bytes(plan.bytes)
    ));
    out.line("  Nothing is written unless the modem is this very unit and its partitions lie where they did.");
}

/// Ask for the typed phrase on the terminal; refuse without one.
fn confirm(phrase: &str) -> crate::Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::usage(
            "qrescue restore writes to the modem and asks for a typed confirmation, but there is no terminal to ask on",
            "Run it in a terminal, or add --yes if a script really means it",
        ));
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "Type `{phrase}` to write this backup to the modem: ");
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(|e| {
        Error::usage(
            "Could not read the confirmation",
            "Run it again in a terminal",
        )
        .with_source(e)
    })?;
    if line.trim() != phrase {
        return Err(Error::new(
            ErrorKind::Failure,
            "Not confirmed: nothing was written",
            format!("the answer was not `{phrase}`"),
            "Run the restore again and type the phrase exactly",
        ));
    }
    Ok(())
}

pub fn restore(a: &RestoreArgs, out: &Output) -> crate::Result<()> {
    let store = store_at(a.store.store.as_deref())?;
    let b = store.get(&a.backup)?;
    let plan = run::plan_restore(&b, &a.only)?;
    out.json_line(&json!({ "event": "restore_plan", "plan": plan }));
    print_plan(&b, &plan, out);
    if !a.yes {
        confirm(&format!("restore {}", plan.unit))?;
    }
    // Every file is checked before the port is opened.
    b.verify()?;
    if let Some(p) = &a.programmer {
        sahara_cmds::read_programmer(p)?;
    }
    let (t, identity) = open_identified(&a.port)?;
    let identity = identity.ok_or_else(|| run::unknown_identity("restore a backup"))?;
    out.line("Modem:");
    print_identity(&identity, out);
    // The unit is checked before the programmer goes up (run::restore checks again).
    if let Err(why) = b.manifest.identity.same_unit(&identity) {
        return Err(Error::failure(
            format!("Backup {} is not from this modem; nothing was written", b.name),
            format!("{why}; calibration and IMEI belong to one unit, and another unit's data would leave this one without signal"),
            "Restore a backup of this very modem (see `qrescue backup list`), or make a new backup",
        ));
    }
    let mut fh = firehose_cmds::start_programmer(t, a.programmer.as_deref(), out)?;
    let mut printer = Printer::new(*out);
    let report = run::restore(
        &mut fh,
        &b,
        &plan,
        &identity,
        &mut |e| printer.event(&e),
        signals::flag(),
    )?;
    out.json_line(&json!({ "event": "restored", "report": report }));
    out.line(format!(
        "Restored {} region(s) ({}) from {} and read each back: all match the backup.",
        report.regions,
        output::bytes(report.bytes),
        b.name
    ));
    out.line(
        "The modem stays in download mode; power-cycle it (or reset) to boot with its own data.",
    );
    Ok(())
}

/// The store the guard consults when flashing (`qrescue flash PACKAGE`).
pub fn default_store() -> Option<Store> {
    match store::default_root() {
        Ok(root) => Some(Store::new(root)),
        Err(e) => {
            tracing::info!("no backup store: {}", e.what);
            None
        }
    }
}
