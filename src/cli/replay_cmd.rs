//! `qrescue replay FILE [--speed X]`: validate a recording and play it back for people — the
//! header, the device timeline at the chosen pace, then what each transport stream carried and
//! the phase labels.

use std::time::Duration;

use serde_json::json;

use crate::cli::args::ReplayArgs;
use crate::cli::output::{self, Output};
use crate::cli::signals;
use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot, DeviceSource};
use crate::record::format::FramingRecord;
use crate::record::{Recording, ReplaySource};
use crate::Error;

fn secs(t_ms: u64) -> String {
    format!("{:>9.3} s", t_ms as f64 / 1000.0)
}

fn device_words(d: &DeviceSnapshot) -> String {
    let mut s = d.id();
    if let Some(p) = &d.product {
        s.push_str(&format!("  {p}"));
    }
    if let Some(sn) = &d.serial {
        s.push_str(&format!("  serial {sn}"));
    }
    s
}

fn timeline_line(e: &DeviceEvent) -> String {
    match &e.change {
        DeviceChange::Appear { device } => format!(
            "{}  appear  {:<8} {}",
            secs(e.t_ms),
            device.location(),
            device_words(device)
        ),
        DeviceChange::Vanish { location, last } => format!(
            "{}  vanish  {:<8} {}",
            secs(e.t_ms),
            location,
            last.as_ref().map(device_words).unwrap_or_default()
        ),
    }
}

pub fn run(args: &ReplayArgs, out: &Output) -> crate::Result<()> {
    if !(args.speed.is_finite() && args.speed >= 0.0) {
        return Err(Error::usage(
            format!("--speed {} is not a playback speed", args.speed),
            "Give 1 for real time, a larger number to go faster, or 0 to print everything at once",
        ));
    }
    let rec = Recording::open(&args.file)?;
    let h = &rec.header;
    out.json_line(&json!({"event": "recording", "file": args.file, "header": h}));
    out.line(format!(
        "Recording {}: format {} v{}, made by qrescue {} at {}",
        args.file.display(),
        h.format,
        h.version,
        h.tool_version,
        h.created
    ));
    if !h.note.is_empty() {
        out.line(format!("  note: {}", h.note));
    }
    out.line(if h.redaction.enabled {
        "  serial numbers and IMEIs replaced by pseudonyms".to_string()
    } else {
        "  NOT redacted: may hold serial numbers and IMEIs".to_string()
    });

    let mut source = ReplaySource::new(&rec, args.speed);
    out.line("");
    if source.is_empty() {
        out.line("Device timeline: no hotplug events in this recording.");
    } else {
        out.line(format!(
            "Device timeline ({} events{}):",
            source.len(),
            if args.speed == 0.0 {
                String::new()
            } else {
                format!(", at {}x speed", args.speed)
            }
        ));
    }
    let mut shown = 0usize;
    while !source.finished() {
        if signals::interrupted() {
            return Err(Error::new(
                crate::ErrorKind::Interrupted,
                "Replay interrupted",
                "you stopped it",
                "Run it again with --speed 0 to see everything at once",
            ));
        }
        if let Some(e) = source.next_event(Duration::from_millis(100))? {
            out.json_line(&json!({"event": "hotplug", "t_ms": e.t_ms, "change": e.change}));
            out.line(timeline_line(&e));
            shown += 1;
        }
    }

    let streams = rec.streams();
    if !streams.is_empty() {
        out.line("");
        out.line("Transport streams:");
    }
    for s in &streams {
        out.json_line(&json!({"event": "stream", "stream": s}));
        let framing = match s.framing {
            FramingRecord::Stream => "stream".to_string(),
            FramingRecord::Packet { max_packet_size } => format!("packets of {max_packet_size}"),
        };
        out.line(format!(
            "  #{} {} ({framing}), {} to {}",
            s.stream,
            s.describe,
            secs(s.opened_ms).trim(),
            secs(s.last_ms).trim()
        ));
        out.line(format!(
            "     out {} in {} writes; in {} in {} reads; {} timeouts, {} other errors; {} payloads kept as sha256 only{}",
            output::bytes(s.bytes_out),
            s.writes,
            output::bytes(s.bytes_in),
            s.reads,
            s.timeouts,
            s.other_errors,
            s.hashed,
            if s.closed { "" } else { "; not closed (cut short?)" }
        ));
    }
    let marks = rec.marks();
    if !marks.is_empty() {
        out.line("");
        out.line("Phases:");
    }
    for (t, label) in &marks {
        out.json_line(&json!({"event": "mark", "t_ms": t, "label": label}));
        out.line(format!("{}  {label}", secs(*t)));
    }
    out.json_line(&json!({"event": "replayed", "hotplug": shown, "streams": streams.len(), "marks": marks.len()}));
    Ok(())
}
