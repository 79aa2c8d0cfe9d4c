//! `qrescue status`: the recent flashes from the run-outcome store (`engine::outcome`), newest
//! first — running, finished, failed, cancelled, or interrupted (the process ended without
//! recording an end). `--json`: one object per run.

use crate::cli::args::StatusArgs;
use crate::cli::output::{self, Output};
use crate::engine::journal::{JournalStore, JournalSummary};
use crate::engine::outcome::{RunRecord, RunState, RunStore};

pub fn run(a: &StatusArgs, out: &Output) -> crate::Result<()> {
    let store = RunStore::default_location()?;
    let runs = store.list(a.limit)?;
    for r in &runs {
        out.json_line(r);
    }
    if runs.is_empty() {
        out.line(format!(
            "No flashes recorded yet (records live in {}). Every flash from the console, `qrescue flash PACKAGE` (also with --all) and `qrescue update` is recorded there, one record per attempt.",
            store.dir().display()
        ));
    } else {
        out.line(format!(
            "Recent flashes, newest first (from {}):",
            store.dir().display()
        ));
        for r in &runs {
            for l in describe(r) {
                out.line(l);
            }
        }
    }
    journals(a, out)
}

/// The flash journals (one per unit): what an interrupted flash would continue from.
fn journals(a: &StatusArgs, out: &Output) -> crate::Result<()> {
    let store = JournalStore::default_location()?;
    let list = store.list()?;
    for j in list.iter().take(a.limit) {
        out.json_line(&serde_json::json!({ "journal": j }));
    }
    if list.is_empty() {
        return Ok(());
    }
    out.line("");
    out.line(format!(
        "Flash journals, latest first (from {}):",
        store.dir().display()
    ));
    for j in list.iter().take(a.limit) {
        out.line(describe_journal(j));
    }
    if list.iter().any(|j| !j.finished) {
        out.line(
            "    an unfinished journal continues when `qrescue flash` runs the same package on that unit (--fresh starts over)",
        );
    }
    Ok(())
}

/// A journal in one line.
pub fn describe_journal(j: &JournalSummary) -> String {
    let state = if j.finished { "FINISHED" } else { "UNFINISHED" };
    format!(
        "{}  {:<10}  unit {}  {}/{} steps, {} of {}, {} attempt(s)  {}",
        j.updated.replace('T', " "),
        state,
        j.unit,
        j.steps_done,
        j.steps_total,
        output::bytes(j.bytes_done),
        output::bytes(j.bytes_total),
        j.attempts,
        j.package
    )
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// A run for people: a headline, then what it was about.
pub fn describe(r: &RunRecord) -> Vec<String> {
    let took = match r.ended_unix_ms {
        Some(end) => format!(", {}", secs(end.saturating_sub(r.started_unix_ms))),
        None => String::new(),
    };
    let mut lines = vec![format!(
        "{}  {:<11} {:<7}  {}/{} steps, {} written{took}",
        r.started.replace('T', " "),
        r.state.word().to_uppercase(),
        r.tool,
        r.steps_done,
        r.steps_total,
        output::bytes(r.bytes_done),
    )];
    let d = &r.device;
    let mut dev: Vec<String> = Vec::new();
    for p in [&d.id, &d.usb_id].into_iter().flatten() {
        dev.push(p.clone());
    }
    if let Some(sn) = &d.serial {
        dev.push(format!("SN {sn}"));
    }
    if let Some(l) = &d.location {
        dev.push(format!("at {l}"));
    }
    if let Some(p) = &d.port {
        dev.push(format!("({p})"));
    }
    if !dev.is_empty() {
        lines.push(format!("    device   {}", dev.join(" ")));
    }
    if let Some(p) = &r.package {
        let rev = r
            .package_revision
            .as_deref()
            .map(|v| format!(" ({v})"))
            .unwrap_or_default();
        lines.push(format!("    package  {p}{rev}"));
    }
    if let Some(v) = &r.verdict {
        lines.push(format!("    result   {v}"));
    }
    if let Some(p) = &r.problem {
        lines.push(format!("    why      {}", p.why));
        lines.push(format!("    next     {}", p.next));
    }
    if let Some(v) = &r.verification {
        lines.push(format!("    check    {v}"));
    }
    if r.state == RunState::Interrupted {
        lines.push(
            "    next     the modem may hold a partly written firmware: run the same flash again"
                .into(),
        );
    }
    if let Some(l) = &r.log_file {
        lines.push(format!("    log      {}", l.display()));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::outcome::{RunDevice, RunProblem};

    #[test]
    fn a_run_reads_well_in_80_columns() {
        let r = RunRecord {
            version: 1,
            id: "20240501T123456Z-7-1".into(),
            tool: "console".into(),
            pid: 7,
            proc_start: None,
            state: RunState::Failed,
            started_unix_ms: 1_714_566_896_000,
            started: "2024-05-01T12:34:56Z".into(),
            updated_unix_ms: 1_714_566_900_000,
            ended_unix_ms: Some(1_714_566_900_200),
            ended: Some("2024-05-01T12:35:00Z".into()),
            device: RunDevice {
                id: Some("#1".into()),
                usb_id: Some("05c6:9008".into()),
                location: Some("3-1.2".into()),
                serial: Some("0x0a1b2c3d".into()),
                port: Some("serial /dev/ttyUSB0".into()),
            },
            package: Some("/srv/fw/RM502QAEAAR13A02M4G".into()),
            package_revision: Some("RM502QAEAAR13A02M4G".into()),
            steps_total: 14,
            steps_done: 5,
            bytes_total: 9 << 20,
            bytes_done: 3 << 20,
            verdict: Some("failed after 5 of 14 steps: the modem went away".into()),
            problem: Some(RunProblem {
                what: "the modem went away".into(),
                why: "it left the bus".into(),
                next: "check the cable".into(),
            }),
            verification: None,
            log_file: Some("/home/u/.local/share/qrescue/logs/console-x.log".into()),
        };
        let lines = describe(&r);
        assert!(
            lines[0].starts_with("2024-05-01 12:34:56Z  FAILED"),
            "{lines:?}"
        );
        assert!(lines[0].contains("console  5/14 steps, 3.00 MiB written, 4.2 s"));
        assert!(lines[0].chars().count() <= 80, "{}", lines[0]);
        assert!(lines.iter().any(|l| l.contains("SN 0x0a1b2c3d")));
        assert!(lines.iter().any(|l| l.contains("next     check the cable")));
    }
}
