//! `qrescue watch`: live lines for every modem that appears or vanishes — on this host's USB and
//! on emulators (`--sim SOCKET`) — with its mode, identity across mode switches, and boot-loop
//! status: period, how long the window stays open, and when the next window opens.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cli::args::WatchArgs;
use crate::cli::output::Output;
use crate::cli::{recording, signals};
use crate::device::bootloop::LoopStatus;
use crate::device::classify::{Mode, PortRole};
use crate::device::enumerate::Sysfs;
use crate::device::monitor::{Monitor, Update};
use crate::device::sim_source::SimSource;
use crate::device::watch::{usb_source, MergedSource};
use crate::device::DeviceSource;
use crate::Error;

/// Appearances received this soon after watching began describe devices that were already
/// there (their start time is unknown, so they do not count towards a loop period).
const INITIAL_MS: u64 = 300;

pub fn run(args: &WatchArgs, out: &Output) -> crate::Result<()> {
    let start = Instant::now();
    let now_ms = || start.elapsed().as_millis() as u64;
    let mut monitor = Monitor::default();
    let mut sources: Vec<Box<dyn DeviceSource>> = Vec::new();
    let mut printer = Printer {
        out: *out,
        all: args.all,
        bell: args.bell,
    };
    if !args.no_usb {
        // Opens the hotplug watch before its first listing, so nothing is missed in between.
        sources.push(Box::new(usb_source(Sysfs::host())));
    }
    for path in &args.sim {
        sources.push(Box::new(SimSource::connect(path)?));
    }
    if sources.is_empty() {
        return Err(Error::usage(
            "Nothing to watch: --no-usb without --sim",
            "Drop --no-usb to watch this host's USB, or add --sim SOCKET (printed by `qrescue sim`)",
        ));
    }
    let names: Vec<String> = sources.iter().map(|s| s.describe()).collect();
    printer.header(&names);
    // With --record, the events go into the recording as the sources delivered them.
    let mut merged = recording::wrap_source(MergedSource::new(sources));
    let until = args.for_secs.map(Duration::from_secs_f64);
    loop {
        if signals::interrupted() {
            break;
        }
        let wait = match until {
            Some(u) => match u.checked_sub(start.elapsed()) {
                Some(left) if !left.is_zero() => left.min(Duration::from_millis(500)),
                _ => break,
            },
            None => Duration::from_millis(500),
        };
        match merged.next_event(wait)? {
            Some(mut ev) => {
                // One clock for every source: the time the event reached us.
                ev.t_ms = now_ms();
                let u = if ev.t_ms < INITIAL_MS {
                    monitor.observe_initial(&ev)
                } else {
                    monitor.observe(&ev)
                };
                printer.update(&u, &monitor);
            }
            None if merged.finished() => break,
            None => {}
        }
    }
    printer.summary(&monitor, now_ms());
    Ok(())
}

struct Printer {
    out: Output,
    all: bool,
    bell: bool,
}

/// Break `text` into lines of at most `width` characters at spaces (80-column terminals).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

fn secs(ms: u64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

impl Printer {
    fn header(&self, names: &[String]) {
        self.out
            .line(format!("watching {} (Ctrl-C to stop)", names.join(" + ")));
        self.out
            .json_line(&json!({"event": "watching", "sources": names}));
    }

    fn update(&mut self, u: &Update, monitor: &Monitor) {
        if !self.all && !u.relevant() {
            return;
        }
        let class = u.class.as_ref();
        let dev = u.device.as_ref();
        let id = u.id.map(|i| i.to_string()).unwrap_or_else(|| "?".into());
        let usb_id = dev.map(|d| d.id()).unwrap_or_default();
        let serial = match (class, dev) {
            (Some(c), Some(d)) => c.serial(d).map(str::to_string),
            _ => None,
        };
        let tty = class.and_then(|c| {
            c.port(PortRole::Sahara)
                .or_else(|| c.port(PortRole::At))
                .and_then(|p| p.tty.clone())
        });
        if self.bell && u.event == "appear" && class.map(|c| c.mode == Mode::Edl).unwrap_or(false) {
            // The terminal bell: someone holding a wire on test pads hears the 9008 arrive.
            let mut err = std::io::stderr();
            let _ = err.write_all(b"\x07");
            let _ = err.flush();
        }
        let mut line = format!(
            "{:>9}s  {:<7} {:<4} {:<9}  {}",
            secs(u.t_ms),
            u.event,
            id,
            usb_id,
            class.map(|c| c.label.as_str()).unwrap_or("unknown device"),
        );
        if let Some(s) = &serial {
            line.push_str(&format!("  SN {s}"));
        }
        line.push_str(&format!("  at {}", u.location));
        if let Some(t) = &tty {
            line.push_str(&format!("  {t}"));
        }
        self.out.line(line);
        if !matches!(u.matched.rule, crate::device::identity::MatchRule::New) && u.event != "vanish"
        {
            self.out.line(format!("{:>11}  {}", "", u.matched.why));
        }
        self.out.json_line(&json!({
            "event": u.event,
            "t_ms": u.t_ms,
            "device": u.id,
            "usb_id": usb_id,
            "location": u.location,
            "mode": class.map(|c| c.tag()),
            "label": class.map(|c| c.label.clone()),
            "model": class.and_then(|c| c.model().map(str::to_string)),
            "serial": serial,
            "tty": tty,
            "match": u.matched,
            "loop": u.loop_status,
        }));
        self.loop_lines(u, monitor);
    }

    fn loop_lines(&self, u: &Update, _monitor: &Monitor) {
        let LoopStatus::Looping(r) = &u.loop_status else {
            return;
        };
        let id = u.id.map(|i| i.to_string()).unwrap_or_default();
        if u.loop_detected {
            self.out.line(format!(
                "{:>11}  BOOT LOOP {id}: {} (jitter ±{} s)",
                "",
                r.summary(),
                secs(r.jitter_ms)
            ));
            self.out
                .line(format!("{:>11}  {}", "", r.triage.headline()));
            for l in wrap(r.triage.advice(), 80 - 13) {
                self.out.line(format!("{:>11}  {l}", ""));
            }
            self.out.json_line(&json!({
                "event": "loop",
                "t_ms": u.t_ms,
                "device": u.id,
                "period_ms": r.period_ms,
                "jitter_ms": r.jitter_ms,
                "window_ms": r.window_ms,
                "cycles": r.cycles,
                "next_appear_ms": r.next_appear_ms,
                "next_window_closes_ms": r.next_window_closes_ms,
                "triage": r.triage,
                "headline": r.triage.headline(),
                "advice": r.triage.advice(),
            }));
        }
        match u.event {
            "vanish" => self.out.line(format!(
                "{:>11}  next window for {id} in {} s (at {} s), open about {} s",
                "",
                secs(r.ms_until_next(u.t_ms)),
                secs(r.next_appear_ms),
                secs(r.window_ms)
            )),
            _ => {
                if let Some(close) = r.open_window_closes_ms {
                    self.out.line(format!(
                        "{:>11}  window for {id} open now; expected to close in {} s",
                        "",
                        secs(close.saturating_sub(u.t_ms))
                    ));
                }
            }
        }
    }

    fn summary(&self, monitor: &Monitor, now: u64) {
        let views = monitor.devices(now);
        let relevant: Vec<_> = views
            .iter()
            .filter(|v| self.all || v.class.mode.is_relevant())
            .collect();
        self.out.line(format!(
            "stopped after {} s: {} device(s) seen",
            secs(now),
            relevant.len()
        ));
        for v in &relevant {
            let status = match &v.loop_status {
                LoopStatus::Looping(r) => format!("boot loop: {}", r.summary()),
                LoopStatus::Stopped { last, .. } => format!("loop ended (was {})", last.summary()),
                LoopStatus::Suspected { cycles, .. } => {
                    format!("came back {cycles} time(s), no steady rhythm yet")
                }
                LoopStatus::None => "no loop".into(),
            };
            self.out.line(format!(
                "  {} {} {} ({}): {status}",
                v.id,
                v.device.id(),
                v.class.label,
                if v.present { "present" } else { "gone" }
            ));
        }
        self.out.json_line(&json!({
            "event": "summary",
            "t_ms": now,
            "devices": relevant.iter().map(|v| json!({
                "device": v.id,
                "usb_id": v.device.id(),
                "mode": v.class.tag(),
                "present": v.present,
                "loop": v.loop_status,
            })).collect::<Vec<_>>(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_wraps_at_spaces_within_the_width() {
        let lines = wrap("one two three four five six seven", 10);
        assert_eq!(lines, ["one two", "three four", "five six", "seven"]);
        assert!(wrap("", 10).is_empty());
        assert_eq!(
            wrap("averyveryverylongword x", 5),
            ["averyveryverylongword", "x"]
        );
    }
}
