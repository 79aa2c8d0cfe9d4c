//! `qrescue flash`, `qrescue read`, `qrescue storage-info`: Firehose over a port, uploading the
//! programmer first when the modem is still in Sahara.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cli::args::{FirehoseArgs, FlashArgs, ReadArgs, StorageArg, StorageInfoArgs};
use crate::cli::output::{self, Output};
use crate::cli::{package_cmds, port, sahara_cmds, signals};
use crate::engine::connect::{attach_or_upload, Attach};
use crate::engine::events::EngineEvent;
use crate::engine::firehose::{FirehoseOptions, FirehoseSession, Read, StorageKind};
use crate::engine::flash::{self, FlashJob, FlashPlan};
use crate::engine::partitions;
use crate::engine::sahara::SaharaConfig;
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

/// A connected Firehose session on a serial port or USB.
pub type Session = FirehoseSession<Pushback<Box<dyn Transport>>>;

/// Open the port and get a ready Firehose session: upload `programmer` if the modem is in the
/// boot ROM, or attach to a running programmer ([`attach_or_upload`]).
fn connect(fh: &FirehoseArgs, programmer: Option<&Path>, out: &Output) -> crate::Result<Session> {
    let t = port::open(&fh.port)?;
    start_programmer(t, programmer, out)
}

/// Get a ready Firehose session over an open link: upload `programmer` if the modem is in the
/// boot ROM, or attach to a running programmer ([`attach_or_upload`]); say which happened.
pub(crate) fn start_programmer<T: Transport>(
    t: T,
    programmer: Option<&Path>,
    out: &Output,
) -> crate::Result<FirehoseSession<Pushback<T>>> {
    let image = programmer.map(sahara_cmds::read_programmer).transpose()?;
    let (s, attach) = attach_or_upload(
        t,
        image.as_deref(),
        &SaharaConfig::default(),
        FirehoseOptions::default(),
        &mut |_| {},
    )?;
    match (&attach, programmer) {
        (Attach::Uploaded(r), Some(p)) => out.line(format!(
            "Uploaded programmer {} ({}) in {:.2} s.",
            p.display(),
            output::bytes(r.bytes_sent),
            r.elapsed_ms as f64 / 1000.0
        )),
        _ => out.line("A programmer is already running; attached to it."),
    }
    if let Some(d) = s.welcome().and_then(|w| w.build_date.as_ref()) {
        out.line(format!("Programmer ready (built {d})."));
    }
    Ok(s)
}

fn configure(s: &mut Session, kind: StorageKind, out: &Output) -> crate::Result<()> {
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
        crate::cli::recording::engine_event(e);
        if self.out.json {
            self.out.json_line(&crate::explain::event_json(e));
            return;
        }
        let explained = crate::explain::explain_event(e);
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
            EngineEvent::Log { message } => {
                self.out.line(format!("        {message}"));
                if let Some(x) = &explained {
                    self.out.line(format!("          → {}", x.one_line()));
                }
            }
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
    let rawprogram = match (&args.package, &args.rawprogram) {
        (Some(package), _) => return package_cmds::flash_package(args, package, out),
        (None, Some(raw)) => raw,
        (None, None) => {
            return Err(Error::usage(
                "Say what to flash: a PACKAGE (folder or .zip), or --rawprogram XML",
                "e.g. qrescue flash EC25EFAR06A08M4G_01.001.01.001 --port /dev/ttyUSB0",
            ))
        }
    };
    package_cmds::refuse_package_options(args)?;
    let plan = FlashPlan::from_xml(
        rawprogram,
        args.patch.as_deref(),
        args.fh.storage.map(Into::into),
    )?;
    let programmer = match &args.fh.programmer {
        Some(p) => Some(p.clone()),
        None => rawprogram
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
    let t = port::open(&args.fh.port)?;
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

/// Sector size of physical partition `lun` as the programmer describes it (NAND: the page),
/// else the default of the storage kind.
fn sector_size_of(s: &mut Session, kind: StorageKind, lun: u32) -> crate::Result<u32> {
    let fallback = s
        .negotiated()
        .map(|n| n.storage.default_sector_size())
        .unwrap_or(kind.default_sector_size());
    let info = match s.storage_info(lun) {
        Ok(i) => i,
        Err(e) if matches!(e.kind, ErrorKind::DeviceLost | ErrorKind::Interrupted) => {
            return Err(e)
        }
        Err(_) => return Ok(fallback),
    };
    let size = if kind == StorageKind::Nand {
        info.page_size
    } else {
        info.block_size.or(info.sector_size)
    };
    Ok(size
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| v.is_power_of_two() && (512..=65536).contains(v))
        .unwrap_or(fallback))
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
    let explicit = match (&args.label, args.start, args.count) {
        (Some(_), _, _) => None,
        (None, Some(s), Some(c)) => Some((s, c)),
        _ => {
            return Err(Error::usage(
                "Say what to read: --label NAME, or --start SECTOR --count SECTORS",
                "e.g. qrescue read --port /dev/ttyUSB0 --label modem --out modem.bin",
            ))
        }
    };
    let mut s = connect(&args.fh, args.fh.programmer.as_deref(), out)?;
    configure(&mut s, kind, out)?;
    let (cmd, label) = match (explicit, &args.label) {
        (Some((start, count)), _) => {
            let sector = s
                .negotiated()
                .map(|n| n.storage.default_sector_size())
                .unwrap_or(kind.default_sector_size());
            (Read::new(sector, count, args.lun, start.to_string()), None)
        }
        (None, Some(label)) => {
            // --lun defaults to 0, so on UFS (where a label may live on any LUN) LUN 0 means
            // "search every LUN"; eMMC and NAND have their table on LUN 0 anyway.
            let lun = if kind == StorageKind::Ufs && args.lun == 0 {
                None
            } else {
                Some(args.lun)
            };
            let part = partitions::find_partition(&mut s, kind, lun, label)?;
            if part.num_sectors == 0 {
                return Err(Error::failure(
                    format!("The partition '{}' has no sectors", part.name),
                    "its entry in the partition table is empty, so there is nothing to read",
                    "Check the name, or give the sectors with --start/--count",
                ));
            }
            let sector = sector_size_of(&mut s, kind, part.lun)?;
            let mut cmd = Read::new(
                sector,
                part.num_sectors,
                part.lun,
                part.start_sector.to_string(),
            )
            .label(part.name.clone());
            if kind == StorageKind::Nand {
                // The partition's last page bounds the programmer's bad-block mapping, as in
                // the package XML: the read returns what a program of this partition wrote.
                cmd = cmd.last_sector(part.end_sector() - 1);
            }
            out.line(format!(
                "Partition {} on LUN {}: sectors {}..{} ({} sectors of {}).",
                part.name,
                part.lun,
                part.start_sector,
                part.end_sector(),
                part.num_sectors,
                output::bytes(u64::from(sector))
            ));
            (cmd, Some(part.name))
        }
        (None, None) => unreachable!("checked above"),
    };
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
    let bytes = cmd.byte_len().unwrap_or(0);
    let secs = started.elapsed().as_secs_f64();
    out.json_line(&serde_json::json!({
        "event": "read", "file": args.out, "bytes": bytes, "label": label,
        "start_sector": cmd.start_sector.parse::<u64>().ok(), "sectors": cmd.num_sectors,
        "sector_size": cmd.sector_size, "last_sector": cmd.last_sector,
        "lun": cmd.physical_partition, "elapsed_ms": (secs * 1000.0) as u64,
    }));
    let what = match &label {
        Some(l) => format!("{l} (LUN {}, ", cmd.physical_partition),
        None => format!("LUN {} (", cmd.physical_partition),
    };
    out.line(format!(
        "Read {} from {what}{} sectors from {}) to {} in {:.2} s ({}).",
        output::bytes(bytes),
        cmd.num_sectors,
        cmd.start_sector,
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
