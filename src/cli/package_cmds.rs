//! `qrescue package inspect PATH` and `qrescue flash PACKAGE` (with `--dry-run`): a firmware
//! package checked in full by [`crate::engine::prepare`] — identity, programmer, md5.txt, the
//! plan, compatibility, the device-unique-data guard — printed for people or as JSON, and, for a
//! flash, refused before the port is even opened when anything is wrong.
//!
//! The guard asks the backup store ([`StoreLedger`] over the default store): a step that would
//! destroy device-unique data passes only when a verified backup of exactly that partition of
//! this modem is on file. Backups are matched by the modem's Sahara serial, which only the boot
//! ROM tells: so `flash PACKAGE`, when backups are on file, first asks the modem who it is over
//! Sahara command mode (nothing is uploaded or written) and then prepares with that identity.
//! `package inspect` and `--dry-run` have no modem, so nothing can be matched there.

use std::path::Path;

use serde_json::json;

use crate::backup::run::identify;
use crate::backup::store::StoreLedger;
use crate::backup::Identity;
use crate::cli::args::{FlashArgs, InspectArgs, PackageChoiceArgs, PackageCommand, StorageArg};
use crate::cli::firehose_cmds::EventPrinter;
use crate::cli::output::{self, Output};
use crate::cli::{backup_cmds, recording, signals};
use crate::engine::events::StepKind;
use crate::engine::firehose::{PowerMode, StorageKind};
use crate::engine::flash::{self, FlashJob, FlashPlan};
use crate::engine::prepare::{
    prepare, CompatReport, PrepareRequest, Prepared, ProgrammerUse, Reason, Stage, Verdict,
};
use crate::engine::sahara::SaharaConfig;
use crate::sim::device::DeviceConfig;
use crate::sim::dryrun;
use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
use crate::sim::inproc::InProcessModem;
use crate::sim::profile::Profile;
use crate::transport::{pipe, Framing, Transport};
use crate::Error;

/// The guard's ledger over the default backup store. A store that cannot be read counts as
/// empty (logged): the guard then refuses what needs a backup, which is the safe side.
pub fn store_ledger() -> (StoreLedger, String) {
    let Some(store) = backup_cmds::default_store() else {
        return (StoreLedger::empty(), "(no backup folder)".into());
    };
    let root = store.root().display().to_string();
    match StoreLedger::new(&store) {
        Ok(l) => (l, root),
        Err(e) => {
            tracing::warn!("the backup store cannot be read: {}: {}", e.what, e.why);
            (StoreLedger::empty(), root)
        }
    }
}

/// Added to refusals a verified backup would lift, when no backup can be matched: `package
/// inspect` and dry runs have no modem to ask.
const NO_MODEM: &str = "(There is no modem here to match a backup to: `qrescue flash PACKAGE \
    --port PORT` reads the modem's serial and looks for a verified backup of it made with \
    `qrescue backup`.)";

pub fn run(cmd: &PackageCommand, out: &Output) -> crate::Result<()> {
    match cmd {
        PackageCommand::Inspect(a) => inspect(a, out),
    }
}

pub(crate) fn request(
    package: &Path,
    choice: &PackageChoiceArgs,
    programmer: Option<&Path>,
    storage: Option<StorageArg>,
) -> PrepareRequest {
    PrepareRequest {
        package: package.to_path_buf(),
        set: choice.set.clone(),
        programmer: programmer.map(Path::to_path_buf),
        modem_revision: choice.modem_revision.clone(),
        skip_md5: choice.skip_md5,
        override_phrase: choice.override_phrase.clone(),
        storage: storage.map(StorageKind::from),
    }
}

/// The verdict, each reason's advice said once, and `note` added (once, at the end of the last
/// reason it applies to) where a verified backup would lift a refusal (also used by `qrescue
/// demo`).
pub(crate) fn verdict(p: &Prepared, note: &str) -> Verdict {
    let mut v = p.verdict();
    tidy_reasons(&mut v.reasons, note);
    v
}

/// Say each reason's advice once (the guard words its advice per blocked step, so "Back up EFS2
/// …" and "Or back up EFS2 …" arrive together), and add `note` to the last reason a backup
/// would lift, so the combined error says it once.
fn tidy_reasons(reasons: &mut [Reason], note: &str) {
    for r in reasons.iter_mut() {
        r.next = dedupe_sentences(&r.next);
    }
    if note.is_empty() {
        return;
    }
    let backup_helps = |r: &Reason| {
        r.stage == Stage::Guard || (r.stage == Stage::Compatibility && r.next.contains("back up"))
    };
    if let Some(r) = reasons.iter_mut().rev().find(|r| backup_helps(r)) {
        if !r.next.contains(note) {
            r.next = format!("{} {note}", r.next);
        }
    }
}

/// Split advice into sentences (at `. `, `: ` is not a break) without breaking inside
/// parentheses.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth = (depth - 1).max(0),
            b'.' | b'!' | b'?' if depth == 0 && bytes.get(i + 1) == Some(&b' ') => {
                out.push(text[start..=i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// `text` with every sentence that says what an earlier one said dropped ("Or back up X …"
/// repeats "Back up X …").
fn dedupe_sentences(text: &str) -> String {
    let key = |s: &str| {
        let t = s.trim();
        let t = t
            .strip_prefix("Or ")
            .or_else(|| t.strip_prefix("or "))
            .unwrap_or(t);
        t.trim_end_matches('.').to_lowercase()
    };
    let mut seen: Vec<String> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for s in sentences(text) {
        let k = key(s);
        if seen.contains(&k) {
            continue;
        }
        seen.push(k);
        kept.push(s.to_string());
    }
    // A sentence that began "Or …" and now comes first reads as the first choice.
    if let Some(first) = kept.first_mut() {
        if let Some(rest) = first.strip_prefix("Or ") {
            let mut c = rest.chars();
            if let Some(f) = c.next() {
                *first = f.to_uppercase().chain(c).collect();
            }
        }
    }
    kept.join(" ")
}

fn inspect(a: &InspectArgs, out: &Output) -> crate::Result<()> {
    let req = request(&a.path, &a.choice, a.programmer.as_deref(), a.storage);
    let (ledger, _) = store_ledger();
    let p = prepare(&req, &ledger, None)?;
    let v = verdict(&p, NO_MODEM);
    out.json_line(&json!({ "event": "package_inspect", "package": &p, "verdict": &v }));
    print_report(&p, &v, out);
    match v.to_error() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ------------------------------------------------------------------------------ human output

const LABEL: usize = 12;

fn field(out: &Output, label: &str, text: impl AsRef<str>) {
    out.line(format!("{label:<LABEL$}{}", text.as_ref()));
}

fn more(out: &Output, text: impl AsRef<str>) {
    out.line(format!("{:<LABEL$}{}", "", text.as_ref()));
}

/// At most `width` characters, an ellipsis marking a cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `NUM_DISK_SECTORS-33.` → `END-33` (a place the device computes, counted from the end).
fn short_start(s: &str) -> String {
    let t = s.trim();
    for sym in ["NUM_DISK_SECTORS", "NUM_DISK_BLOCKS"] {
        if let Some(rest) = t.strip_prefix(sym) {
            return format!("END{}", rest.trim_end_matches('.'));
        }
    }
    t.to_string()
}

fn kind_word(k: StepKind) -> &'static str {
    match k {
        StepKind::Erase => "erase",
        StepKind::Program => "program",
        StepKind::Patch => "patch",
        StepKind::SetBootable => "boot",
        StepKind::SaharaUpload => "upload",
        StepKind::Configure => "config",
        StepKind::Reset => "reset",
        StepKind::Read => "read",
        StepKind::Verify => "verify",
    }
}

/// The package's identity lines (also printed before a flash).
fn print_identity(p: &Prepared, out: &Output) {
    let d = &p.discovery;
    field(out, "Package", &d.source);
    if !d.root.is_empty() {
        more(out, format!("package folder inside: {}", d.root));
    }
    field(out, "Layout", &d.kind_description);
    match &p.revision {
        Some(r) => {
            let mut parts = vec![r.product.clone(), r.baseline_release.clone()];
            if let Some(s) = &r.sub_version {
                parts.push(format!("sub-version {s}"));
            }
            if !r.tags.is_empty() {
                parts.push(format!("tags {}", r.tags.join(", ")));
            }
            field(
                out,
                "Revision",
                format!("{} (from the {}): {}", r.text, r.source, parts.join(", ")),
            );
            for other in p.revisions.iter().skip(1) {
                more(
                    out,
                    format!("also {} (from the {})", other.text, other.source),
                );
            }
        }
        None => field(
            out,
            "Revision",
            "unknown: no name in the package reads as a Quectel revision",
        ),
    }
    match &p.programmer {
        ProgrammerUse::Package { path, reason, .. } => {
            field(out, "Programmer", path);
            more(out, format!("why: {reason}"));
        }
        ProgrammerUse::Override { path } => field(
            out,
            "Programmer",
            format!("{} (given with --programmer)", path.display()),
        ),
        ProgrammerUse::Missing { reason, candidates } => {
            field(out, "Programmer", format!("none chosen: {reason}"));
            if !candidates.is_empty() {
                more(out, format!("candidates: {}", candidates.join(", ")));
            }
        }
    }
    match &p.md5 {
        Some(m) => {
            field(out, "Integrity", m.summary());
            for f in m.mismatches() {
                if let crate::package::integrity::Md5Status::Mismatch { actual } = &f.status {
                    more(
                        out,
                        format!("WRONG {}: expected {}, found {actual}", f.path, f.expected),
                    );
                }
            }
            if !m.unlisted.is_empty() {
                more(
                    out,
                    format!("not listed in md5.txt: {}", m.unlisted.join(", ")),
                );
            }
        }
        None => field(out, "Integrity", "md5.txt not checked (see the notes)"),
    }
    if !p.manifest.is_empty() {
        more(
            out,
            format!(
                "sha256 recorded for the {} file(s) the flash uses; they are checked again while sent",
                p.manifest.len()
            ),
        );
    }
}

fn print_sets(p: &Prepared, out: &Output) {
    let chosen = p.set.as_ref().map(|s| s.id.as_str());
    for (i, s) in p.discovery.sets.iter().enumerate() {
        let mark = if Some(s.id.as_str()) == chosen {
            "  <- the plan uses this set"
        } else {
            ""
        };
        let label = if i == 0 { "XML sets" } else { "" };
        field(out, label, format!("{}{mark}", s.summary()));
    }
    if p.discovery.sets.is_empty() {
        field(out, "XML sets", "none");
    }
}

fn print_plan(p: &Prepared, out: &Output) {
    let (Some(s), Some(plan)) = (&p.summary, &p.plan) else {
        field(out, "Plan", "none (see the reasons below)");
        return;
    };
    field(
        out,
        "Plan",
        format!(
            "{}, {} steps, {} to write",
            s.storage.memory_name(),
            s.steps.len(),
            output::bytes(s.total_bytes)
        ),
    );
    let extents = plan.extents();
    let blocked: Vec<usize> = p
        .guard
        .as_ref()
        .map(|g| g.touched.iter().map(|t| t.step).collect())
        .unwrap_or_default();
    out.line(format!(
        "{:>4} {:<7} {:<14} {:>3} {:>9} {:>10} {:<24}{}",
        "step", "kind", "name", "LUN", "start", "size", "file", "  "
    ));
    for st in &s.steps {
        let size = match st.kind {
            StepKind::Program => output::bytes(st.bytes),
            StepKind::Erase => extents
                .iter()
                .find(|e| e.index == st.index)
                .and_then(|e| Some(e.sectors? * u64::from(e.sector_size)))
                .map(output::bytes)
                .unwrap_or_else(|| "-".into()),
            _ => "-".into(),
        };
        let file = st.files.first().map(|f| base(f)).unwrap_or("-");
        let mark = format!(
            "{}{}",
            if blocked.contains(&st.index) {
                '!'
            } else {
                ' '
            },
            if st.destructive { '*' } else { ' ' }
        );
        out.line(format!(
            "{:>4} {:<7} {:<14} {:>3} {:>9} {:>10} {:<24}{mark}",
            st.index,
            kind_word(st.kind),
            fit(&st.name, 14),
            st.lun.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            fit(
                &st.start_sector
                    .as_deref()
                    .map(short_start)
                    .unwrap_or_default(),
                9
            ),
            size,
            fit(file, 24),
        ));
    }
    out.line("     * changes the modem's flash   ! destroys data unique to this modem");
    if !s.host_patches.is_empty() {
        let mut files: Vec<&str> = s.host_patches.iter().map(|h| base(&h.file)).collect();
        files.dedup();
        more(
            out,
            format!(
                "host-side patches ({}) edit {} before it is sent{}",
                s.host_patches.len(),
                files.join(", "),
                if s.needs_device_geometry {
                    ", with the flash size the modem reports"
                } else {
                    ""
                }
            ),
        );
    }
    if !s.skipped.is_empty() {
        more(
            out,
            format!(
                "left alone (no image in the package): {}",
                s.skipped.join(", ")
            ),
        );
    }
}

fn print_guard(p: &Prepared, out: &Output) {
    let Some(g) = &p.guard else {
        return;
    };
    match &g.table_source {
        Some(src) => field(out, "Unique data", format!("partition table from {src}")),
        None => field(
            out,
            "Unique data",
            "no partition table in the package: matched by names",
        ),
    }
    if !g.device_unique.is_empty() {
        more(
            out,
            format!(
                "holding this modem's own data: {}",
                g.device_unique.join(", ")
            ),
        );
    }
    let untouched = g.untouched();
    if !untouched.is_empty() && g.touched.is_empty() {
        more(
            out,
            format!("left alone by this plan: {}", untouched.join(", ")),
        );
    }
    for t in &g.touched {
        more(
            out,
            format!(
                "step {} touches {} ({}): {}",
                t.step,
                t.partition,
                t.holds,
                if t.covered {
                    format!(
                        "covered by {}",
                        t.backup.as_deref().unwrap_or("a verified backup")
                    )
                } else {
                    "no verified backup on file".to_string()
                }
            ),
        );
    }
    field(
        out,
        "Guard",
        if g.allowed {
            "allowed: no step destroys data unique to this modem without a verified backup"
        } else {
            "BLOCKED: this plan would destroy data unique to this modem (see the reasons below)"
        },
    );
}

fn print_compat(p: &Prepared, out: &Output) {
    match &p.compat {
        CompatReport::NotChecked { reason, next, .. } => {
            field(out, "Compatible", reason);
            more(out, next);
        }
        CompatReport::Allowed {
            modem,
            package,
            note,
            ..
        } => {
            field(
                out,
                "Compatible",
                format!("yes: {package} onto a modem running {modem}"),
            );
            if !note.is_empty() {
                more(out, note);
            }
        }
        CompatReport::Refused {
            modem,
            package,
            title,
            ..
        } => field(
            out,
            "Compatible",
            format!(
                "REFUSED ({title}): {} onto a modem running {modem}",
                package
                    .as_deref()
                    .unwrap_or("a package of unknown revision")
            ),
        ),
    }
}

fn print_verdict(v: &Verdict, out: &Output) {
    if v.flashable {
        field(out, "Verdict", format!("{} (exit code 0)", v.summary));
    } else {
        field(
            out,
            "Verdict",
            format!(
                "{}: nothing would be sent to the modem (exit code 1)",
                v.summary.to_uppercase()
            ),
        );
        for r in &v.reasons {
            more(out, format!("- {}", r.what));
        }
    }
}

/// The whole report, for people (nothing in `--json` mode).
pub fn print_report(p: &Prepared, v: &Verdict, out: &Output) {
    print_identity(p, out);
    print_sets(p, out);
    print_plan(p, out);
    print_guard(p, out);
    print_compat(p, out);
    let notes: Vec<&String> = p
        .warnings
        .iter()
        .chain(p.guard.iter().flat_map(|g| g.notes.iter()))
        .collect();
    for (i, n) in notes.iter().enumerate() {
        field(out, if i == 0 { "Notes" } else { "" }, format!("- {n}"));
    }
    print_verdict(v, out);
}

/// A shorter report before a flash: identity, the set, the plan line, guard, compatibility.
pub(crate) fn print_before_flash(p: &Prepared, v: &Verdict, out: &Output) {
    print_identity(p, out);
    if let Some(s) = &p.set {
        field(out, "XML set", s.summary());
    }
    if let Some(s) = &p.summary {
        field(
            out,
            "Plan",
            format!(
                "{}, {} steps, {} to write",
                s.storage.memory_name(),
                s.steps.len(),
                output::bytes(s.total_bytes)
            ),
        );
    }
    print_guard(p, out);
    print_compat(p, out);
    for (i, n) in p.warnings.iter().enumerate() {
        field(out, if i == 0 { "Notes" } else { "" }, format!("- {n}"));
    }
    print_verdict(v, out);
}

// ------------------------------------------------------------------------------------ flash

/// `qrescue flash PACKAGE …`: prepare; refuse before opening the port when refused; then flash
/// (or, with `--dry-run`, run the plan against an emulated modem of the same geometry).
pub fn flash_package(args: &FlashArgs, package: &Path, out: &Output) -> crate::Result<()> {
    if args.station.all || !args.station.devices.is_empty() {
        return crate::cli::station_cmd::flash_station(args, package, out);
    }
    let req = request(
        package,
        &args.choice,
        args.fh.programmer.as_deref(),
        args.fh.storage,
    );
    let (ledger, store_root) = store_ledger();
    // With backups on file, the modem is asked who it is first (Sahara command mode: nothing
    // is uploaded or written), so the guard can match a backup to it. Without any, there is
    // nothing to match and the port stays closed until the package passed.
    let mut link: Option<Box<dyn Transport>> = None;
    let mut identity: Option<Identity> = None;
    if !args.dry_run && !ledger.is_empty() {
        let (t, info) = identify(
            crate::cli::flash_resume::open_port(args)?,
            &SaharaConfig::default(),
        )?;
        identity = info
            .as_ref()
            .map(Identity::from_device_info)
            .filter(|i| i.unit_key().is_some());
        link = Some(Box::new(t));
    }
    let unit = identity.as_ref().and_then(Identity::unit_key);
    let note = match (&unit, args.dry_run) {
        (_, true) => NO_MODEM.to_string(),
        (Some(u), false) => {
            out.line(format!(
                "Modem: unit {u} ({} backup(s) of it on file in {store_root})",
                ledger.backups_of(u).len()
            ));
            String::new()
        }
        (None, false) if ledger.is_empty() => format!(
            "(No backup is on file in {store_root}: make one with `qrescue backup --port PORT \
             --programmer FILE`; a flash finds it by the modem's serial.)"
        ),
        (None, false) => "(qrescue could not read this modem's serial — only its boot ROM tells \
             it, and it did not greet: a programmer was already running, or the modem was still \
             starting — so no backup could be matched to it: power-cycle the modem into download \
             mode (9008) and run again.)"
            .to_string(),
    };
    let ledger = match &identity {
        Some(id) => ledger.for_device(id),
        None => ledger,
    };
    let p = prepare(&req, &ledger, unit.as_deref())?;
    let v = verdict(&p, &note);
    out.json_line(&json!({ "event": "package", "package": &p, "verdict": &v, "unit": unit }));
    print_before_flash(&p, &v, out);
    if let Some(e) = v.to_error() {
        recording::mark("package refused before anything was sent");
        return Err(e);
    }
    let plan = p.plan.as_ref().expect("a flashable package has a plan");
    let reset = if args.no_reset {
        None
    } else {
        Some(PowerMode::Reset)
    };
    // Files the flash reads in pieces are hashed again now; the others are checked as sent.
    p.reverify()?;
    if args.dry_run {
        return dry_run(&p, plan, reset, out);
    }
    let job = FlashJob {
        programmer: Some(p.programmer_image()?),
        reset,
        ..FlashJob::default()
    };
    out.line("");
    // Journaled: continues when the same unit comes back (and on the next run after a crash).
    let revision = p.revision.as_ref().map(|r| r.text.clone());
    crate::cli::flash_resume::flash(args, package, revision, plan, job, link, out)
}

/// Run `plan` against an emulated modem in this process whose flash has the plan's geometry,
/// with the emulator's own programmer (the package's is signed for a real chip).
fn dry_run(
    p: &Prepared,
    plan: &FlashPlan,
    reset: Option<PowerMode>,
    out: &Output,
) -> crate::Result<()> {
    let (storage, description) = dryrun::storage_for_plan(plan);
    let unit_name = if plan.storage == StorageKind::Nand {
        "ec25"
    } else {
        "rm520n"
    };
    let unit = Profile::by_name(unit_name)
        .map(|u| u.for_unit(1))
        .ok_or_else(|| {
            Error::failure(
                "the emulated modem for the dry run is missing",
                "qrescue ships it built in",
                "This is a bug in qrescue; please report it",
            )
        })?;
    out.line("");
    out.line(format!(
        "Dry run: an emulated modem in this process with {description}."
    ));
    let package_programmer = match &p.programmer {
        ProgrammerUse::Package { path, .. } => path.clone(),
        ProgrammerUse::Override { path } => path.display().to_string(),
        ProgrammerUse::Missing { .. } => "-".into(),
    };
    out.line(format!(
        "It runs the emulator's own programmer ({} bytes, signed for the emulated chip), not {package_programmer}: that one only runs on the real modem.",
        unit.programmer_size
    ));
    out.json_line(&json!({
        "event": "dry_run", "device": description, "storage": storage.name(),
        "programmer": "emulator", "package_programmer": package_programmer,
    }));
    let (host, dev) = pipe::pair_named(Framing::Stream, "emulated modem (dry run)", "device");
    let modem = InProcessModem::start(
        dev,
        DeviceConfig::new(unit.clone()),
        Programmer::new(&storage, ProgrammerOptions::default()),
    );
    let job = FlashJob {
        programmer: Some(unit.programmer(1)),
        reset,
        ..FlashJob::default()
    };
    let mut printer = EventPrinter::new(*out);
    let result = flash::run(
        recording::wrap(host),
        plan,
        &job,
        &mut |e| printer.event(&e),
        signals::flag(),
    );
    let _ = modem.finish();
    let report = result?;
    let steps = plan.steps.len();
    out.json_line(&json!({ "event": "dry_run_finished", "report": report, "plan_steps": steps }));
    out.line("");
    out.line(format!(
        "Dry run finished: all {steps} steps of the plan ran against the emulated modem ({}).",
        output::bytes(plan.total_bytes())
    ));
    out.line(format!(
        "A real flash (`qrescue flash {} --port PORT`) uploads {package_programmer}, checks the plan against the flash the modem reports, and sends these same steps{}.",
        p.discovery.source.split_once(' ').map_or(p.discovery.source.as_str(), |(_, path)| path),
        if reset.is_some() { ", then resets the modem" } else { "" }
    ));
    Ok(())
}

/// The package-only options given with `--rawprogram` are a usage error.
pub fn refuse_package_options(args: &FlashArgs) -> crate::Result<()> {
    let c = &args.choice;
    let given: Vec<&str> = [
        (c.set.is_some(), "--set"),
        (c.modem_revision.is_some(), "--modem-revision"),
        (c.skip_md5, "--skip-md5"),
        (c.override_phrase.is_some(), "--override"),
        (args.dry_run, "--dry-run"),
        (
            args.station.all || !args.station.devices.is_empty(),
            "--all/--devices",
        ),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    if given.is_empty() {
        return Ok(());
    }
    Err(Error::usage(
        format!("{} only work(s) with a PACKAGE, not with --rawprogram", given.join(", ")),
        "Give the package folder or .zip instead: qrescue flash PACKAGE --port PORT (see `qrescue package inspect PACKAGE`)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_fit_their_columns() {
        assert_eq!(fit("recoveryfs", 14), "recoveryfs");
        assert_eq!(fit("a_very_long_partition_name", 14).chars().count(), 14);
        assert!(fit("a_very_long_partition_name", 14).ends_with('…'));
        assert_eq!(short_start("NUM_DISK_SECTORS-33."), "END-33");
        assert_eq!(short_start("1280"), "1280");
        let row = format!(
            "{:>4} {:<7} {:<14} {:>3} {:>9} {:>10} {:<24}{}",
            9999,
            "program",
            fit("x".repeat(40).as_str(), 14),
            7,
            fit("123456789012", 9),
            "1023.9 KiB",
            fit("y".repeat(40).as_str(), 24),
            "!*"
        );
        assert!(
            row.chars().count() <= 80,
            "{} columns: {row}",
            row.chars().count()
        );
    }

    #[test]
    fn a_factory_refusal_gives_its_backup_advice_once() {
        // What the guard says for a factory set: one step erases EFS2, another writes cefs.mbn.
        let guard = Reason {
            stage: Stage::Guard,
            what: "qrescue stopped before sending anything".into(),
            why: "…".into(),
            next: "Back up EFS2 of this modem first (qrescue backup); once the copy is verified \
                   by read-back, run this again. Choose the package's _update XML instead of \
                   _factory (or of an erase-all): it leaves the EFS area alone. Or back up EFS2 \
                   of this modem first (qrescue backup); once the copy is verified by read-back, \
                   run this again."
                .into(),
        };
        let compat = Reason {
            stage: Stage::Compatibility,
            what: "another variant".into(),
            why: "…".into(),
            next: "back up the modem's own data first, then use --override".into(),
        };
        let mut reasons = vec![guard, compat];
        tidy_reasons(&mut reasons, "(NOTE.)");
        let g = &reasons[0].next;
        assert_eq!(
            g.matches("ack up EFS2 of this modem first").count(),
            1,
            "{g}"
        );
        assert!(g.starts_with("Back up EFS2"), "{g}");
        assert!(g.contains("_update XML"), "{g}");
        // The note goes once, to the last reason a backup lifts.
        assert!(!g.contains("(NOTE.)"), "{g}");
        assert!(reasons[1].next.ends_with("(NOTE.)"));
        let v = Verdict {
            flashable: false,
            summary: "refused".into(),
            reasons,
        };
        let next = v.to_error().unwrap().next;
        assert_eq!(next.matches("ack up EFS2").count(), 1, "{next}");
        assert_eq!(next.matches("(NOTE.)").count(), 1, "{next}");
        // Parentheses and other text are kept as they are; an "Or" left first is capitalised.
        assert_eq!(
            dedupe_sentences("Or use X (e.g. a. b). Or use X (e.g. a. b). Then Y."),
            "Use X (e.g. a. b). Then Y."
        );
        assert_eq!(dedupe_sentences("One. Two."), "One. Two.");
    }

    #[test]
    fn the_command_line_definitions_are_consistent() {
        use clap::{CommandFactory, Parser};
        crate::cli::Cli::command().debug_assert();
        // --dry-run needs no port; the port and --dry-run exclude each other.
        let c = crate::cli::Cli::try_parse_from(["qrescue", "flash", "pkg", "--dry-run"]).unwrap();
        let Some(crate::cli::Command::Flash(f)) = c.command else {
            panic!("flash")
        };
        assert!(f.dry_run && f.package.is_some() && f.rawprogram.is_none());
        assert!(crate::cli::Cli::try_parse_from([
            "qrescue",
            "flash",
            "pkg",
            "--dry-run",
            "--port",
            "/dev/x"
        ])
        .is_err());
        assert!(crate::cli::Cli::try_parse_from(["qrescue", "flash", "pkg"]).is_err());
        assert!(crate::cli::Cli::try_parse_from([
            "qrescue",
            "flash",
            "pkg",
            "--rawprogram",
            "x.xml",
            "--port",
            "/dev/x"
        ])
        .is_err());
        assert!(crate::cli::Cli::try_parse_from([
            "qrescue",
            "flash",
            "--rawprogram",
            "x.xml",
            "--patch",
            "p.xml",
            "--port",
            "/dev/x"
        ])
        .is_ok());
    }
}
