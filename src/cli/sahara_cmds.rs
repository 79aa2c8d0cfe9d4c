//! `qrescue info`, `qrescue ramdump`, `qrescue sahara-upload`: Sahara over a port.

use crate::cli::args::{PortArgs, RamdumpArgs, UploadArgs};
use crate::cli::output::{self, Output};
use crate::cli::port;
use crate::engine::sahara::{DeviceInfo, SaharaConfig, SaharaSession};
use crate::{Error, ErrorKind};

/// Known MSM IDs (HW ID bits 63..32), from public sources (PROTOCOLS.md §1.4).
fn msm_name(msm_id: u32) -> Option<&'static str> {
    match msm_id {
        0x0004_80e1 => Some("MDM9207 (EC25/EG25-class)"),
        0x0070_50e1 => Some("MSM8916"),
        _ => None,
    }
}

/// Human lines for an identity.
pub fn describe_info(info: &DeviceInfo) -> Vec<String> {
    let mut lines = Vec::new();
    let mode = info.mode_name.clone().unwrap_or_else(|| "unknown".into());
    match info.sahara_version {
        Some(v) => lines.push(format!(
            "Modem speaks Sahara v{v} (compatible down to v{}), mode: {mode}",
            info.sahara_version_supported.unwrap_or(0)
        )),
        None => lines.push(format!("Modem mode: {mode}")),
    }
    if let (Some(s), Some(h)) = (info.serial, &info.serial_hex) {
        lines.push(format!("  serial     {h} ({s})"));
    }
    if let Some(hw) = &info.hw_id {
        let name = msm_name(hw.msm_id)
            .map(|n| format!(" — {n}"))
            .unwrap_or_default();
        lines.push(format!(
            "  HW ID      0x{}  (MSM 0x{}{name}, OEM 0x{:04x}, model 0x{:04x})",
            hw.hex, hw.msm_id_hex, hw.oem_id, hw.model_id
        ));
    }
    if let Some(c) = &info.chip_id_v3 {
        let name = msm_name(c.msm_id)
            .map(|n| format!(" — {n}"))
            .unwrap_or_default();
        lines.push(format!(
            "  chip ID v3 MSM 0x{}{name}, OEM {}, model {}",
            c.msm_id_hex,
            c.oem_id.map(|o| format!("0x{o:04x}")).unwrap_or("?".into()),
            c.model_id
                .map(|o| format!("0x{o:04x}"))
                .unwrap_or("?".into()),
        ));
    }
    if let Some(pk) = &info.pk_hash {
        lines.push(format!("  PK hash    {pk}"));
    }
    if let Some(v) = &info.sbl_version_hex {
        lines.push(format!("  SBL        {v}"));
    }
    for n in &info.notes {
        lines.push(format!("  note: {n}"));
    }
    lines
}

pub fn info(args: &PortArgs, out: &Output) -> crate::Result<()> {
    let t = port::open(args)?;
    let mut s = SaharaSession::new(t, SaharaConfig::default());
    let info = s.read_info()?;
    out.json_line(&serde_json::json!({ "event": "info", "port": args.port, "info": info }));
    for l in describe_info(&info) {
        out.line(l);
    }
    Ok(())
}

pub fn ramdump(args: &RamdumpArgs, out: &Output) -> crate::Result<()> {
    std::fs::create_dir_all(&args.out).map_err(|e| {
        Error::new(
            ErrorKind::Failure,
            format!("Cannot create the output folder {}", args.out.display()),
            "the RAM regions are saved there",
            "Choose another --out folder or fix its permissions",
        )
        .with_source(e)
    })?;
    let t = port::open(&args.port)?;
    let mut s = SaharaSession::new(t, SaharaConfig::default());
    // Progress comes after every memory read (never with 0 bytes done): announce each region
    // on its first report.
    let mut last_region: Option<usize> = None;
    let report = s.ramdump(&args.out, &mut |p| {
        if last_region != Some(p.region_index) {
            last_region = Some(p.region_index);
            out.line(format!(
                "  region {}/{}: {} ({})",
                p.region_index + 1,
                p.region_count,
                p.file,
                output::bytes(p.region_len)
            ));
        }
    })?;
    out.json_line(&serde_json::json!({ "event": "ramdump", "report": report }));
    out.line(format!(
        "Saved {} regions ({}) to {} in {:.1} s; manifest: {}",
        report.regions.iter().filter(|r| r.status == "ok").count(),
        output::bytes(report.bytes_written),
        report.out_dir.display(),
        report.elapsed_ms as f64 / 1000.0,
        report.manifest.display()
    ));
    for r in report.regions.iter().filter(|r| r.status != "ok") {
        out.line(format!("  {}: {}", r.name, r.status));
    }
    for n in &report.notes {
        out.line(format!("  note: {n}"));
    }
    Ok(())
}

/// Read a programmer file with a size bound and a clear error.
pub fn read_programmer(path: &std::path::Path) -> crate::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("Cannot open the programmer {}", path.display()),
            "the Firehose programmer is uploaded to the modem's boot ROM",
            "Use prog_*.mbn / prog_firehose_*.elf from update/firehose/ of this modem's firmware package",
        )
        .with_source(e)
    })?;
    if meta.len() > 64 * 1024 * 1024 || meta.len() < 64 {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{} is {} bytes, which is not the size of a Firehose programmer",
                path.display(),
                meta.len()
            ),
            "programmers are ELF files of a few hundred kilobytes to a few megabytes",
            "Use prog_*.mbn / prog_firehose_*.elf from update/firehose/ of this modem's firmware package",
        ));
    }
    std::fs::read(path).map_err(|e| {
        Error::failure(
            format!("Cannot read {}", path.display()),
            "the programmer must be read before the upload",
            "Check the file's permissions",
        )
        .with_source(e)
    })
}

pub fn upload(args: &UploadArgs, out: &Output) -> crate::Result<()> {
    let image = read_programmer(&args.programmer)?;
    let t = port::open(&args.port)?;
    let mut s = SaharaSession::new(t, SaharaConfig::default());
    let report = s.upload(&image, &mut |_| {})?;
    out.json_line(&serde_json::json!({ "event": "uploaded", "report": report }));
    if report.already_running {
        out.line("A Firehose programmer is already running on this port; nothing was uploaded.");
    } else {
        let secs = report.elapsed_ms as f64 / 1000.0;
        out.line(format!(
            "Programmer uploaded: {} in {} requests, {:.2} s ({}). The modem is now in Firehose.",
            output::bytes(report.bytes_sent),
            report.requests,
            secs,
            output::rate(report.bytes_sent as f64 / secs.max(1e-6))
        ));
    }
    for n in &report.notes {
        out.line(format!("  note: {n}"));
    }
    Ok(())
}
