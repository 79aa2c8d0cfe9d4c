//! `qrescue preflight`: who holds the modem's ports and is there room for the backup, with a
//! plain-words way to fix each problem. Exits 1 when something is in the way.

use crate::cli::args::PreflightArgs;
use crate::cli::output::Output;
use crate::device::classify::classify;
use crate::device::enumerate::{self, Sysfs};
use crate::explain::Severity;
use crate::preflight::{check_holders, check_space, modem_nodes, Finding, Node, Roots};
use crate::Error;

pub fn run(args: &PreflightArgs, out: &Output) -> crate::Result<()> {
    let (roots, sysfs) = match &args.root {
        Some(r) => (Roots::under(r), Sysfs::new(r)),
        None => (Roots::host(), Sysfs::host()),
    };
    let mut findings: Vec<Finding> = Vec::new();
    if args.port.is_empty() {
        let devices = match &args.root {
            Some(_) => sysfs.devices(),
            None => match enumerate::list_devices(&sysfs) {
                Ok(d) => d,
                Err(e) => {
                    let mut f = Finding::new("modems", Severity::Warning, e.what.clone());
                    f.detail = format!("{}; no modem's ports could be checked", e.why);
                    f.fixes = vec![
                        "Name the modem's port instead: qrescue preflight --port /dev/ttyUSB2"
                            .into(),
                    ];
                    findings.push(f);
                    Vec::new()
                }
            },
        };
        let listed = !findings.iter().any(|f| f.check == "modems");
        let mut modems = 0;
        for d in devices {
            let class = classify(&d);
            if !class.mode.is_relevant() {
                continue;
            }
            modems += 1;
            let subject = format!("{} at {} ({})", d.id(), d.location(), class.label);
            let nodes = modem_nodes(&d, &roots);
            if nodes.is_empty() {
                let mut f = Finding::new(
                    "modems",
                    Severity::Info,
                    format!("{subject}: no tty or USB node to check"),
                );
                f.detail = "The kernel made no port for it yet".into();
                findings.push(f);
            } else {
                findings.extend(check_holders(&roots, &subject, &nodes));
            }
        }
        if modems == 0 && listed {
            let mut f = Finding::new(
                "modems",
                Severity::Info,
                "No modem plugged in: only the backup space was checked",
            );
            f.fixes =
                vec!["Plug the modem in and run again, or name its port with --port PATH".into()];
            findings.push(f);
        }
    } else {
        let nodes: Vec<Node> = args
            .port
            .iter()
            .map(|p| Node {
                path: p.clone(),
                what: "the port you named".into(),
                matters: true,
            })
            .collect();
        let subject = args
            .port
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        findings.extend(check_holders(&roots, &subject, &nodes));
    }
    findings.push(check_space(&args.backup_dir, args.need));

    for f in &findings {
        out.json_line(f);
        for line in human(f) {
            out.line(line);
        }
    }
    let problems = findings
        .iter()
        .filter(|f| f.severity >= Severity::Error)
        .count();
    let warnings = findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .count();
    if problems > 0 {
        return Err(Error::failure(
            format!("preflight found {problems} problem(s) to fix before flashing"),
            "a program holding the modem's ports can break a flash midway, and a backup without room cannot complete",
            "fix each one as listed above, then run qrescue preflight again",
        ));
    }
    out.line(if warnings > 0 {
        format!("Preflight: nothing in the way ({warnings} warning(s) above).")
    } else {
        "Preflight: nothing in the way.".to_string()
    });
    Ok(())
}

/// A finding as lines for people.
fn human(f: &Finding) -> Vec<String> {
    let tag = match f.severity {
        Severity::Info | Severity::Benign => "ok",
        Severity::Warning => "warning",
        Severity::Error | Severity::Fatal => "PROBLEM",
    };
    let mut lines = vec![format!("{tag:<8}{}", f.title)];
    if !f.detail.is_empty() {
        lines.push(format!("        {}", f.detail));
    }
    for (i, fix) in f.fixes.iter().enumerate() {
        let lead = if i == 0 { "fix:" } else { "or: " };
        lines.push(format!("        {lead} {fix}"));
    }
    lines
}
