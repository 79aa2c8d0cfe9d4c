//! `qrescue replay FILE [--speed X]`: validate a recording and play it back for people — the
//! header, the device timeline at the chosen pace, then what each transport stream carried and
//! the phase labels. The timeline goes through the same [`Monitor`] as `qrescue watch`, so each
//! event shows the device it belongs to, its mode, and a boot loop once one is detected.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::cli::args::ReplayArgs;
use crate::cli::output::{self, Output};
use crate::cli::signals;
use crate::device::bootloop::LoopStatus;
use crate::device::identity::{DeviceId, MatchRule};
use crate::device::monitor::{Monitor, Update};
use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot, DeviceSource};
use crate::record::format::FramingRecord;
use crate::record::{Recording, ReplaySource};
use crate::Error;

/// Appearances this soon after a recording began describe devices that were already there (as
/// `qrescue watch` treats them: their start is unknown, so they do not count towards a loop).
const INITIAL_MS: u64 = 300;

/// What the monitor made of one event: the device, its mode, how it was matched, a loop.
fn monitor_lines(u: &Update) -> Vec<String> {
    let pad = " ".repeat(13);
    let id = u.id.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
    let label = u
        .class
        .as_ref()
        .map(|c| c.label.as_str())
        .unwrap_or("unknown device");
    let mut v = Vec::new();
    if u.event != "vanish" {
        v.push(format!("{pad}{id} {label}"));
        if !matches!(u.matched.rule, MatchRule::New) {
            v.push(format!("{pad}{}", u.matched.why));
        }
    }
    if let (true, LoopStatus::Looping(r)) = (u.loop_detected, &u.loop_status) {
        v.push(format!(
            "{pad}BOOT LOOP {id}: {}; next window at {}",
            r.summary(),
            secs(r.next_appear_ms).trim_start()
        ));
        v.push(format!("{pad}{}", r.triage.headline()));
    }
    v
}

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
    let mut monitor = Monitor::default();
    // Per device, the modes it appeared in (a repeat of the same mode counted once).
    let mut modes: BTreeMap<DeviceId, Vec<&'static str>> = BTreeMap::new();
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
            let u = if e.t_ms < INITIAL_MS {
                monitor.observe_initial(&e)
            } else {
                monitor.observe(&e)
            };
            out.json_line(
                &json!({"event": "hotplug", "t_ms": e.t_ms, "change": e.change,
                "device": u.id, "mode": u.class.as_ref().map(|c| c.tag()),
                "match": u.matched, "loop": u.loop_status}),
            );
            out.line(timeline_line(&e));
            for l in monitor_lines(&u) {
                out.line(l);
            }
            if let (Some(id), Some(c), true) = (u.id, &u.class, u.event != "vanish") {
                let seen = modes.entry(id).or_default();
                if seen.last() != Some(&c.tag()) {
                    seen.push(c.tag());
                }
            }
            shown += 1;
        }
    }
    let views = monitor.devices(monitor.last_t_ms());
    if !views.is_empty() {
        out.line("");
        out.line("Devices:");
    }
    for v in &views {
        let status = match &v.loop_status {
            LoopStatus::Looping(r) => format!(
                "boot loop: {}; next window at {}",
                r.summary(),
                secs(r.next_appear_ms).trim_start()
            ),
            LoopStatus::Stopped { last, .. } => format!("loop ended (was {})", last.summary()),
            LoopStatus::Suspected { cycles, .. } => {
                format!("came back {cycles} time(s), no steady rhythm yet")
            }
            LoopStatus::None => "no loop".into(),
        };
        let modes = modes.get(&v.id).cloned().unwrap_or_default();
        out.json_line(
            &json!({"event": "device", "device": v.id, "usb_id": v.device.id(),
            "mode": v.class.tag(), "modes": modes, "present": v.present, "loop": v.loop_status}),
        );
        out.line(format!(
            "  {} {} {} (modes seen: {}): {status}",
            v.id,
            v.device.id(),
            v.class.label,
            modes.join(" → ")
        ));
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
