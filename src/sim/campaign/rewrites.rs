//! The resume invariant, exact from the unit's write log ([`StorageWrite`]): what each
//! connection (one engine attempt) wrote, against what the unit's journal said before it.
//!
//! - a step the journal had as done (completed by an earlier attempt) is never erased,
//!   programmed or patched again — unless the write lies wholly inside what a step not yet done
//!   may write (a DISK patch inside a finished GPT program; on NAND the re-erase of the cut
//!   partition, which may cover the partition's earlier erase step);
//! - NAND: a program that was started but not finished (cut off) is erased again before it is
//!   programmed again (a half-written NAND partition is never trusted);
//! - eMMC/UFS: the sectors of a program the programmer confirmed before the drop (the journal's
//!   last chunk) are not written again.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::flash::{FlashPlan, FlashStep};
use crate::engine::journal::JournalState;
use crate::package::expr;
use crate::package::rawprogram::parse_number;
use crate::sim::firehose::programmer::{StorageWrite, WriteKind};
use crate::sim::firehose::Storage;

/// Where one plan step writes on this unit: sectors `[start, end)` of LUN `lun`; a later
/// attempt may write `[start, may_end)` for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Span {
    pub name: String,
    pub program: bool,
    pub lun: u32,
    pub start: u64,
    pub end: u64,
    pub may_end: u64,
}

impl Span {
    fn touched_by(&self, w: &StorageWrite, end: u64) -> bool {
        let w_end = w.start_sector.saturating_add(w.num_sectors.max(1));
        w.lun == self.lun && w.start_sector < end && w_end > self.start
    }

    fn holds(&self, w: &StorageWrite) -> bool {
        let w_end = w.start_sector.saturating_add(w.num_sectors.max(1));
        w.lun == self.lun && w.start_sector >= self.start && w_end <= self.may_end
    }
}

/// The span of every step of `plan` on `storage` (`None`: the step writes nothing, or its
/// position does not evaluate).
pub(super) fn step_spans(plan: &FlashPlan, storage: &Storage) -> Vec<Option<Span>> {
    let nand = storage.is_nand();
    let ppb = u64::from(storage.pages_per_block().unwrap_or(1).max(1));
    let ss = u64::from(storage.sector_size().max(1));
    let eval = |lun: u32, s: &str| {
        storage
            .expr_env(lun)
            .and_then(|env| expr::eval(s, &env).ok())
    };
    plan.steps
        .iter()
        .map(|step| match step {
            FlashStep::Program { name, cmd, .. } => {
                let lun = cmd.physical_partition;
                let start = eval(lun, &cmd.start_sector)?;
                let end = start.saturating_add(cmd.num_sectors);
                let mut may_end = end;
                if nand {
                    // What the engine erases again before rewriting a cut NAND program: the
                    // plan's erase at the same start, else the program in whole blocks.
                    let literal = parse_number(&cmd.start_sector).ok();
                    let erase_end = plan.steps.iter().find_map(|s| match s {
                        FlashStep::Erase { cmd: e, .. }
                            if e.physical_partition == lun
                                && literal.is_some()
                                && e.start_sector.as_deref().and_then(|x| parse_number(x).ok())
                                    == literal =>
                        {
                            e.num_sectors.map(|n| start.saturating_add(n))
                        }
                        _ => None,
                    });
                    may_end = erase_end
                        .unwrap_or(start.saturating_add(cmd.num_sectors.div_ceil(ppb) * ppb))
                        .max(end);
                }
                Some(Span {
                    name: name.clone(),
                    program: true,
                    lun,
                    start,
                    end,
                    may_end,
                })
            }
            FlashStep::Erase { name, cmd } => {
                let lun = cmd.physical_partition;
                let start = match cmd.start_sector.as_deref() {
                    Some(s) => eval(lun, s)?,
                    None => 0,
                };
                let end = match cmd.num_sectors {
                    Some(n) => start.saturating_add(n),
                    None => storage.num_sectors(lun)?,
                };
                Some(Span {
                    name: name.clone(),
                    program: false,
                    lun,
                    start,
                    end,
                    may_end: end,
                })
            }
            FlashStep::Patch { name, cmd } if cmd.filename == "DISK" => {
                let lun = cmd.physical_partition;
                let start = eval(lun, &cmd.start_sector)?.saturating_add(cmd.byte_offset / ss);
                Some(Span {
                    name: name.clone(),
                    program: false,
                    lun,
                    start,
                    end: start + 1,
                    may_end: start + 1,
                })
            }
            _ => None,
        })
        .collect()
}

/// One connection to the unit (one engine attempt) as the harness saw it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Connection<'a> {
    /// 1-based over the run.
    pub attempt: u32,
    /// The flash (qrescue run) it belonged to, 1-based.
    pub flash: u32,
    /// The unit's storage writes while it lasted.
    pub writes: &'a [StorageWrite],
    /// The unit's journal for this package after it (`None`: none yet).
    pub journal_after: Option<&'a JournalState>,
}

/// A broken resume rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finding {
    pub attempt: u32,
    pub flash: u32,
    pub step: String,
    /// The step was completed (journaled done) before and written again.
    pub rewrote_completed: bool,
    pub what: String,
}

fn kind_word(k: WriteKind) -> &'static str {
    match k {
        WriteKind::Program => "programmed",
        WriteKind::Erase => "erased",
        WriteKind::Patch => "patched",
    }
}

/// Check every connection against the journal as the connections before it left it.
pub(super) fn check(spans: &[Option<Span>], nand: bool, conns: &[Connection<'_>]) -> Vec<Finding> {
    let mut out: Vec<Finding> = Vec::new();
    // Step → the attempt that completed it.
    let mut done: BTreeMap<usize, u32> = BTreeMap::new();
    let mut chunks: BTreeMap<usize, u64> = BTreeMap::new();
    let mut started: BTreeSet<usize> = BTreeSet::new();
    // One finding per connection, step name (a NAND partition's erase and program steps share
    // it) and rule.
    let mut seen: BTreeSet<(u32, String, u8)> = BTreeSet::new();
    for c in conns {
        let mut found = |step: usize, rule: u8, what: String| {
            let name = spans
                .get(step)
                .and_then(|s| s.as_ref())
                .map_or_else(|| format!("step {step}"), |s| s.name.clone());
            if seen.insert((c.attempt, name.clone(), rule)) {
                out.push(Finding {
                    attempt: c.attempt,
                    flash: c.flash,
                    step: name,
                    rewrote_completed: rule == 0,
                    what,
                });
            }
        };
        let open: Vec<&Span> = spans
            .iter()
            .enumerate()
            .filter(|(i, _)| !done.contains_key(i))
            .filter_map(|(_, s)| s.as_ref())
            .collect();
        for w in c.writes {
            for (&i, &by) in &done {
                let Some(s) = spans.get(i).and_then(|s| s.as_ref()) else {
                    continue;
                };
                if s.touched_by(w, s.end) && !open.iter().any(|o| o.holds(w)) {
                    found(
                        i,
                        0,
                        format!(
                            "{} sectors {}..{} of LUN {} although attempt {by} had completed it",
                            kind_word(w.kind),
                            w.start_sector,
                            w.start_sector + w.num_sectors,
                            w.lun
                        ),
                    );
                }
            }
            if w.kind == WriteKind::Patch {
                continue;
            }
            for (&i, &k) in &chunks {
                let Some(s) = spans.get(i).and_then(|s| s.as_ref()) else {
                    continue;
                };
                if k > 0 && !done.contains_key(&i) && s.touched_by(w, s.start.saturating_add(k)) {
                    found(
                        i,
                        1,
                        format!(
                            "{} sectors {}..{} of LUN {} although the programmer had confirmed its first {k} sectors before the drop",
                            kind_word(w.kind),
                            w.start_sector,
                            w.start_sector + w.num_sectors,
                            w.lun
                        ),
                    );
                }
            }
        }
        if nand {
            for &i in started.iter().filter(|i| !done.contains_key(i)) {
                let Some(s) = spans.get(i).and_then(|s| s.as_ref()).filter(|s| s.program) else {
                    continue;
                };
                let Some(p) = c
                    .writes
                    .iter()
                    .position(|w| w.kind == WriteKind::Program && s.touched_by(w, s.end))
                else {
                    continue;
                };
                let erased = c.writes[..p]
                    .iter()
                    .any(|w| w.kind == WriteKind::Erase && s.touched_by(w, s.end));
                if !erased {
                    found(
                        i,
                        2,
                        "was cut off before and programmed again without being erased first (a half-written NAND partition must not be trusted)".into(),
                    );
                }
            }
        }
        if let Some(j) = c.journal_after {
            done = j
                .done
                .keys()
                .map(|i| (*i, done.get(i).copied().unwrap_or(c.attempt)))
                .collect();
            chunks = j.chunks.clone();
            started = j.started.clone();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::firehose::StorageKind;
    use crate::engine::journal::{DoneStep, PackageIdentity, PlanRecord, UnitKey};

    fn span(name: &str, program: bool, start: u64, end: u64, may_end: u64) -> Option<Span> {
        Some(Span {
            name: name.into(),
            program,
            lun: 0,
            start,
            end,
            may_end,
        })
    }

    fn journal(done: &[usize], started: &[usize], chunks: &[(usize, u64)]) -> JournalState {
        JournalState {
            plan: PlanRecord {
                version: 1,
                unit: UnitKey::from_serial(1),
                package: "p".into(),
                storage: StorageKind::Emmc,
                identity: PackageIdentity {
                    files: Default::default(),
                    steps_sha256: String::new(),
                    steps: 4,
                },
                step_names: vec!["a".into(); 4],
                bytes_total: 0,
                created_unix_ms: 0,
            },
            done: done
                .iter()
                .map(|i| {
                    (
                        *i,
                        DoneStep {
                            bytes: 0,
                            sha256: None,
                            unix_ms: 0,
                        },
                    )
                })
                .collect(),
            started: started.iter().copied().collect(),
            chunks: chunks.iter().copied().collect(),
            attempts: 1,
            finished: false,
            updated_unix_ms: 0,
            valid_len: 0,
            ignored_tail: false,
        }
    }

    fn w(kind: WriteKind, start: u64, n: u64) -> StorageWrite {
        StorageWrite {
            session: 1,
            kind,
            lun: 0,
            start_sector: start,
            num_sectors: n,
            bytes: 0,
        }
    }

    fn conn<'a>(
        attempt: u32,
        writes: &'a [StorageWrite],
        j: Option<&'a JournalState>,
    ) -> Connection<'a> {
        Connection {
            attempt,
            flash: 1,
            writes,
            journal_after: j,
        }
    }

    #[test]
    fn completed_steps_are_not_written_again_but_open_steps_inside_them_may_be() {
        // Steps: erase 0..64, program "boot" 0..40 (NAND: may erase 0..64 again), program
        // "gpt" 100..134, a DISK patch at 101.
        let spans = vec![
            span("erase boot", false, 0, 64, 64),
            span("boot", true, 0, 40, 64),
            span("gpt", true, 100, 134, 134),
            span("patch", false, 101, 102, 102),
        ];
        let first = [w(WriteKind::Erase, 0, 64), w(WriteKind::Program, 0, 40)];
        let j1 = journal(&[0, 1], &[0, 1], &[]);
        // The patch inside the completed "gpt" program is the patch step's own work.
        let second = [w(WriteKind::Program, 100, 34), w(WriteKind::Patch, 101, 1)];
        let j2 = journal(&[0, 1, 2, 3], &[0, 1, 2, 3], &[]);
        let ok = [conn(1, &first, Some(&j1)), conn(2, &second, Some(&j2))];
        assert!(check(&spans, true, &ok).is_empty());
        // A later connection programs "boot" again and erases its partition.
        let again = [w(WriteKind::Erase, 0, 64), w(WriteKind::Program, 0, 40)];
        let bad = [conn(1, &first, Some(&j1)), conn(2, &again, Some(&j2))];
        let f = check(&spans, true, &bad);
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f.iter().all(|f| f.attempt == 2 && f.rewrote_completed));
        assert!(f[0].what.contains("attempt 1"), "{f:?}");
        let names: Vec<&str> = f.iter().map(|f| f.step.as_str()).collect();
        assert_eq!(names, ["erase boot", "boot"]);
    }

    #[test]
    fn a_cut_nand_program_is_erased_again_before_it_is_rewritten() {
        let spans = vec![
            span("erase boot", false, 0, 64, 64),
            span("boot", true, 0, 40, 64),
        ];
        // Connection 1 erased and started "boot", then dropped.
        let first = [w(WriteKind::Erase, 0, 64), w(WriteKind::Program, 0, 40)];
        let j1 = journal(&[0], &[0, 1], &[]);
        let j2 = journal(&[0, 1], &[0, 1], &[]);
        let erased = [w(WriteKind::Erase, 0, 64), w(WriteKind::Program, 0, 40)];
        let ok = [conn(1, &first, Some(&j1)), conn(2, &erased, Some(&j2))];
        assert!(check(&spans, true, &ok).is_empty());
        let unerased = [w(WriteKind::Program, 0, 40)];
        let bad = [conn(1, &first, Some(&j1)), conn(2, &unerased, Some(&j2))];
        let f = check(&spans, true, &bad);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(!f[0].rewrote_completed && f[0].what.contains("without being erased"));
        // eMMC has no such rule.
        assert!(check(&spans, false, &bad).is_empty());
    }

    #[test]
    fn confirmed_emmc_sectors_are_not_written_again() {
        let spans = vec![span("modem", true, 1000, 1512, 1512)];
        let first = [
            w(WriteKind::Program, 1000, 128),
            w(WriteKind::Program, 1128, 128),
        ];
        // The programmer confirmed 128 sectors before the drop.
        let j1 = journal(&[], &[0], &[(0, 128)]);
        let j2 = journal(&[0], &[0], &[]);
        let cont = [
            w(WriteKind::Program, 1128, 128),
            w(WriteKind::Program, 1256, 256),
        ];
        assert!(check(
            &spans,
            false,
            &[conn(1, &first, Some(&j1)), conn(2, &cont, Some(&j2))]
        )
        .is_empty());
        let overlap = [w(WriteKind::Program, 1120, 392)];
        let f = check(
            &spans,
            false,
            &[conn(1, &first, Some(&j1)), conn(2, &overlap, Some(&j2))],
        );
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].what.contains("first 128 sectors"), "{f:?}");
        // No journal after the first connection: nothing was known to be done.
        assert!(check(
            &spans,
            false,
            &[conn(1, &first, None), conn(2, &overlap, Some(&j2))]
        )
        .is_empty());
    }
}
