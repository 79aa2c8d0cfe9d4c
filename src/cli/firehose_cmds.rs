//! `qrescue flash`, `qrescue read`, `qrescue storage-info`: Firehose over a port, uploading the
//! programmer first when the modem is still in Sahara.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::args::{FirehoseArgs, FlashArgs, ReadArgs, StorageArg, StorageInfoArgs};
use crate::cli::output::{self, Output};
use crate::cli::{port, sahara_cmds, signals};
use crate::engine::events::EngineEvent;
use crate::engine::firehose::{FirehoseOptions, FirehoseSession, Read, StorageKind};
use crate::engine::flash::{self, FlashJob, FlashPlan};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::protocol::sahara::Packet;
use crate::transport::serial::SerialTransport;
use crate::transport::{Pushback, Transport};
use crate::{Error, ErrorKind};

impl From<StorageArg> for StorageKind {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::Nand => StorageKind::Nand,
            StorageArg::Emmc => StorageKind::Emmc,
            StorageArg::Ufs => StorageKind::Ufs,
        }
    }
}

/// Programmer file names in the order QFirehose searches them (PROTOCOLS.md §7.1).
const PROGRAMMER_PATTERNS: &[(&str, &str)] = &[
    ("prog_nand_firehose_", ".mbn"),
    ("prog_emmc_firehose_", ".mbn"),
    ("prog_firehose_", ".mbn"),
    ("prog_firehose_", ".elf"),
    ("firehose-prog", ".mbn"),
    ("prog_", ".mbn"),
];

/// Find the programmer in `dir` by name pattern; the first pattern with matches wins and, within
/// it, the alphabetically first name (never the filesystem's order).
pub fn find_programmer(dir: &Path) -> Option<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    PROGRAMMER_PATTERNS.iter().find_map(|(prefix, suffix)| {
        names
            .iter()
            .find(|n| n.starts_with(prefix) && n.ends_with(suffix))
            .map(|n| dir.join(n))
    })
}

/// A connected Firehose session on a serial port.
pub type Session = FirehoseSession<Pushback<SerialTransport>>;

/// Open the port and get a Firehose session: upload `programmer` if the modem is in Sahara, or
/// attach to a running programmer.
fn connect(fh: &FirehoseArgs, programmer: Option<&Path>, out: &Output) -> crate::Result<Session> {
    let t = port::open(&fh.port.port)?;
    let mut opts = FirehoseOptions::default();
    match programmer {
        Some(p) => {
            let image = sahara_cmds::read_programmer(p)?;
            let mut s = SaharaSession::new(t, SaharaConfig::default());
            let r = s.upload(&image, &mut |_| {})?;
            if r.already_running {
                out.line("A programmer is already running; attaching to it.");
            } else {
                out.line(format!(
                    "Uploaded programmer {} ({}) in {:.2} s.",
                    p.display(),
                    output::bytes(r.bytes_sent),
                    r.elapsed_ms as f64 / 1000.0
                ));
            }
            Ok(FirehoseSession::new(s.into_transport(), Vec::new(), opts))
        }
        None => {
            // Peek: a boot ROM greets with HELLO; a running programmer sends XML or nothing.
            let mut t = Pushback::new(t);
            let mut buf = vec![0u8; 4096];
            let mut first = Vec::new();
            if let Ok(n) = t.read(&mut buf, Duration::from_millis(1500)) {
                first.extend_from_slice(&buf[..n]);
            }
            if let Ok((Packet::Hello { .. }, _)) = Packet::parse(&first) {
                return Err(Error::new(
                    ErrorKind::Usage,
                    "The modem is in download mode and waiting for a programmer",
                    "Firehose commands need the programmer running first",
                    "Pass --programmer FILE (prog_*.mbn from the modem's firmware package)",
                ));
            }
            if first.is_empty() {
                // Silent through the whole peek: a programmer that sent its welcome to an earlier
                // session. Waiting the full welcome time again would only add seconds to every
                // command; go straight to the nop probe, which any running programmer answers.
                opts.timeouts.welcome_first = Duration::from_millis(100);
            }
            Ok(FirehoseSession::new(t, first, opts))
        }
    }
}

fn configure(s: &mut Session, kind: StorageKind, out: &Output) -> crate::Result<()> {
    let w = s.wait_ready()?;
    if let Some(d) = &w.build_date {
        out.line(format!("Programmer ready (built {d})."));
    }
    let n = s.configure(kind)?;
    out.line(format!(
        "Configured {}: {} bytes per transfer.",
        kind.memory_name(),
        n.max_payload_to_target
    ));
    Ok(())
}

/// Consumes engine events: one JSON object per line with `--json`, otherwise readable lines with
/// progress at most once per second per step.
pub struct EventPrinter {
    out: Output,
    names: Vec<String>,
    last_progress: Option<Instant>,
}

impl EventPrinter {
    pub fn new(out: Output) -> Self {
        EventPrinter {
            out,
            names: Vec::new(),
            last_progress: None,
        }
    }

    pub fn event(&mut self, e: &EngineEvent) {
        self.out.json_line(e);
        if self.out.json {
            return;
        }
        match e {
            EngineEvent::Plan { steps, total_bytes } => {
                self.names = steps.iter().map(|s| s.name.clone()).collect();
                self.out.line(format!(
                    "Plan: {} steps, {} to write.",
                    steps.len(),
                    output::bytes(*total_bytes)
                ));
            }
            EngineEvent::StepStarted {
                index, kind, bytes, ..
            } => {
                self.last_progress = Some(Instant::now());
                let size = if *bytes > 0 {
                    format!(" ({})", output::bytes(*bytes))
                } else {
                    String::new()
                };
                self.out.line(format!(
                    "[{:>2}/{}] {} {}{size}",
                    index + 1,
                    self.names.len(),
                    serde_json::to_value(kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    self.names.get(*index).cloned().unwrap_or_default(),
                ));
            }
            EngineEvent::Progress {
                done,
                total,
                bytes_per_s,
                eta_s,
                ..
            } => {
                let due = self
                    .last_progress
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
                if due && done < total {
                    self.last_progress = Some(Instant::now());
                    self.out.line(format!(
                        "        {:>3}%  {} of {}  {}  ETA {:.0} s",
                        done * 100 / (*total).max(1),
                        output::bytes(*done),
                        output::bytes(*total),
                        output::rate(*bytes_per_s),
                        eta_s.unwrap_or(0.0)
                    ));
                }
            }
            EngineEvent::StepFinished {
                bytes,
                elapsed_ms,
                bytes_per_s,
                ..
            } => {
                if *bytes > 0 {
                    self.out.line(format!(
                        "        done: {} in {:.2} s, {}",
                        output::bytes(*bytes),
                        *elapsed_ms as f64 / 1000.0,
                        output::rate(*bytes_per_s)
                    ));
                }
            }
            EngineEvent::StepFailed { what, .. } => {
                self.out.line(format!("        FAILED: {what}"));
            }
            EngineEvent::Log { message } => self.out.line(format!("        {message}")),
            EngineEvent::Done {
                ok,
                bytes,
                elapsed_ms,
            } => {
                let secs = *elapsed_ms as f64 / 1000.0;
                if *ok {
                    self.out.line(format!(
                        "Write finished: {} in {:.1} s. (Not yet verified that the modem boots: that check comes with `qrescue update`.)",
                        output::bytes(*bytes),
                        secs
                    ));
                } else {
                    self.out.line(format!(
                        "Flash stopped after {} in {:.1} s.",
                        output::bytes(*bytes),
                        secs
                    ));
                }
            }
        }
    }
}

pub fn flash(args: &FlashArgs, out: &Output) -> crate::Result<()> {
    let plan = FlashPlan::from_xml(
        &args.rawprogram,
        args.patch.as_deref(),
        args.fh.storage.map(Into::into),
    )?;
    let programmer = match &args.fh.programmer {
        Some(p) => Some(p.clone()),
        None => args
            .rawprogram
            .parent()
            .map(|d| {
                if d.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    d
                }
            })
            .and_then(find_programmer),
    };
    if let Some(p) = &programmer {
        out.line(format!("Programmer: {}", p.display()));
    }
    let job = FlashJob {
        programmer: programmer
            .as_deref()
            .map(sahara_cmds::read_programmer)
            .transpose()?,
        reset: if args.no_reset {
            None
        } else {
            Some(crate::engine::firehose::PowerMode::Reset)
        },
        ..FlashJob::default()
    };
    let t = port::open(&args.fh.port.port)?;
    let mut printer = EventPrinter::new(*out);
    let report = flash::run(t, &plan, &job, &mut |e| printer.event(&e), signals::flag())?;
    out.json_line(&serde_json::json!({ "event": "flashed", "report": report }));
    Ok(())
}

pub fn storage_info(args: &StorageInfoArgs, out: &Output) -> crate::Result<()> {
    let kind = args.fh.storage.map(Into::into).unwrap_or(StorageKind::Nand);
    let mut s = connect(&args.fh, args.fh.programmer.as_deref(), out)?;
    configure(&mut s, kind, out)?;
    let info = s.storage_info(args.lun)?;
    out.json_line(&serde_json::json!({ "event": "storage_info", "lun": args.lun, "info": info }));
    if let Some(t) = &info.mem_type {
        out.line(format!("  type          {t}"));
    }
    if let Some(p) = &info.prod_name {
        out.line(format!("  product       {p}"));
    }
    if let (Some(b), Some(bs)) = (info.total_blocks, info.block_size) {
        out.line(format!(
            "  size          {} blocks of {} = {}",
            b,
            output::bytes(bs),
            output::bytes(b.saturating_mul(bs))
        ));
    }
    if let Some(p) = info.page_size {
        out.line(format!("  page          {}", output::bytes(p)));
    }
    if let Some(n) = info.num_physical {
        out.line(format!("  physical      {n} partition(s)"));
    }
    Ok(())
}

pub fn read(args: &ReadArgs, out: &Output) -> crate::Result<()> {
    let kind: StorageKind = args.fh.storage.map(Into::into).unwrap_or(StorageKind::Nand);
    if args.out.exists() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("{} already exists", args.out.display()),
            "qrescue never overwrites a file with a read-back",
            "Choose a new --out file name",
        ));
    }
    let (start, count) = match (args.start, args.count) {
        (Some(s), Some(c)) => (s, c),
        _ => {
            return Err(Error::usage(
                "Say what to read: --start SECTOR --count SECTORS",
                "e.g. qrescue read --port /dev/ttyUSB0 --start 0 --count 64 --out first.bin",
            ))
        }
    };
    let mut s = connect(&args.fh, args.fh.programmer.as_deref(), out)?;
    configure(&mut s, kind, out)?;
    let sector = s
        .negotiated()
        .map(|n| n.storage.default_sector_size())
        .unwrap_or(kind.default_sector_size());
    let cmd = Read::new(sector, count, args.lun, start.to_string());
    let tmp = args.out.with_extension("qrescue-partial");
    let file = std::fs::File::create(&tmp).map_err(|e| {
        Error::failure(
            format!("Cannot create {}", tmp.display()),
            "the data read back is written there first",
            "Choose another --out folder or fix its permissions",
        )
        .with_source(e)
    })?;
    let mut w = std::io::BufWriter::new(file);
    let started = Instant::now();
    let result = s.read(&cmd, &mut w, &mut |_| {});
    let flushed = w.flush().and_then(|_| {
        w.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    flushed.map_err(|e| {
        Error::failure(
            format!("Cannot write {}", tmp.display()),
            "the disk may be full",
            "Free space and read again",
        )
        .with_source(e)
    })?;
    std::fs::rename(&tmp, &args.out).map_err(|e| {
        Error::failure(
            format!("Cannot rename {} to {}", tmp.display(), args.out.display()),
            "the read-back is complete in the temporary file",
            "Rename it by hand",
        )
        .with_source(e)
    })?;
    let bytes = u64::from(sector) * count;
    let secs = started.elapsed().as_secs_f64();
    out.json_line(&serde_json::json!({
        "event": "read", "file": args.out, "bytes": bytes, "start_sector": start,
        "sectors": count, "sector_size": sector, "lun": args.lun, "elapsed_ms": (secs * 1000.0) as u64,
    }));
    out.line(format!(
        "Read {} ({} sectors from {}) to {} in {:.2} s ({}).",
        output::bytes(bytes),
        count,
        start,
        args.out.display(),
        secs,
        output::rate(bytes as f64 / secs.max(1e-6))
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programmer_choice_follows_the_pattern_order_not_the_directory_order() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "prog_zzz.mbn",
            "prog_firehose_sdx55.mbn",
            "prog_nand_firehose_9x07.mbn",
            "readme.txt",
        ] {
            std::fs::write(d.path().join(n), b"x").unwrap();
        }
        assert_eq!(
            find_programmer(d.path()).unwrap().file_name().unwrap(),
            "prog_nand_firehose_9x07.mbn"
        );
        let e = tempfile::tempdir().unwrap();
        assert_eq!(find_programmer(e.path()), None);
    }
}
