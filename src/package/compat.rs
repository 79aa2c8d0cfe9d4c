//! Whether a firmware package may go onto a modem, judged from the two revision strings.
//!
//! The rules, checked in this order; the first that fails refuses the package and names itself,
//! both versions, why, and what to do:
//!
//! 1. **Model** ([`Rule::ModelMismatch`]): the model must be the same. RM550V flashed with
//!    RM551E firmware sat in CFUN 7 (USERS.md §1.4).
//! 2. **Variant** ([`Rule::VariantMismatch`]): the variant after the model must be the same.
//!    "Accidentally flashed RM502Q-EA firmware … bricking the RM502Q-AE" (USERS.md §1.4,
//!    wirelessjoint.com t=3806); the strings spell the variant right after the model
//!    (`RM502QAEAAR13A02M4G`, PROTOCOLS.md §7.5).
//! 3. **Baseline** ([`Rule::BaselineChange`]): the number after `R` must not change. Quectel:
//!    "Normally it is not allowed to flash … in any direction" and an EC25-E that went from
//!    `R06A17…_20.200.20.200` to `R08A01…_01.001.01.001` stayed in 9008 for good; an EC20 flashed
//!    across baselines sat in `+CFUN: 7` (USERS.md §1.3).
//! 4. **Downgrade** ([`Rule::Downgrade`]): the number after `A` must not go down, nor the
//!    sub-version within the same `A`. "the latest firmware cannot be downgraded" (USERS.md §1.3,
//!    forum.gl-inet.com …/29630/6); an RM520N downgrade to `…_01.200.01.200` was a "bad idea".
//! 5. **Anti-rollback family** ([`Rule::RollbackFamily`]): a modem on a `NN.2xx` sub-version may
//!    only move to `NN.2xx` with the same `NN` ("EC25EFAR06A17M4G_20.200.20.200 can only upgrade
//!    to version like EC25EFAR06AxxM4G_20.2xx.20.2xx", forums.quectel.com thread 44652).
//! 6. **Build tags** ([`Rule::BuildTag`]): beta, customer, project and OEM builds (`_BETA_…`,
//!    `_ACY`, `_OCPU`, `_LNV`) only go onto a modem carrying the same tags; a Lenovo RM520N build
//!    left a module "unusable outside of Windows" (USERS.md §1.4). `_factory` is a property of
//!    the package (it rewrites EFS, PROTOCOLS.md §7.3) and is left to the backup guard
//!    (`crate::engine::guards`).
//! 7. **Anything else qrescue does not understand** ([`Rule::Unknown`]): a different build
//!    suffix (its meaning is unverified, PROTOCOLS.md §7.5), a modem revision without the
//!    sub-version needed to check rule 5, sub-versions of different shapes. Refused with
//!    "qrescue cannot tell whether this is safe".
//!
//! The same revision is allowed (a reflash). An [`Override`] turns a refusal into an allowed
//! flash; it can only be built from the exact typed phrase and a [`VerifiedBackupRef`] from the
//! backup ledger, and never for a model mismatch (see [`Rule::overridable`]).

use std::cmp::Ordering;
use std::fmt;

use super::revision::Revision;
use crate::engine::guards::VerifiedBackupRef;

/// The rule that refused a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    ModelMismatch,
    VariantMismatch,
    BaselineChange,
    Downgrade,
    RollbackFamily,
    BuildTag,
    Unknown,
}

impl Rule {
    /// Short stable name (`--json`, logs).
    pub fn name(self) -> &'static str {
        match self {
            Rule::ModelMismatch => "model-mismatch",
            Rule::VariantMismatch => "variant-mismatch",
            Rule::BaselineChange => "baseline-change",
            Rule::Downgrade => "downgrade",
            Rule::RollbackFamily => "rollback-family",
            Rule::BuildTag => "build-tag",
            Rule::Unknown => "unknown",
        }
    }

    /// The rule in words, for a heading.
    pub fn title(self) -> &'static str {
        match self {
            Rule::ModelMismatch => "firmware for another model",
            Rule::VariantMismatch => "firmware for another variant of this model",
            Rule::BaselineChange => "a change of firmware baseline",
            Rule::Downgrade => "older firmware than the modem runs",
            Rule::RollbackFamily => "leaving the anti-rollback family",
            Rule::BuildTag => "a different beta, customer or OEM build",
            Rule::Unknown => "a case qrescue does not understand",
        }
    }

    /// Whether a typed confirmation plus a verified backup may override this rule.
    ///
    /// Everything but a model mismatch may be overridden. Quectel itself moves units between
    /// baselines, variants and older releases on request, and the ways those go wrong (RF
    /// configuration, EFS layout, anti-rollback) are ones a verified backup of this unit's EFS
    /// plus EDL recovery can undo, so an informed person may take the risk. A *model* mismatch
    /// is different in kind: the image is built for another chip or board (another boot chain,
    /// memory map, RF front end, partition layout). There is no version of events in which it
    /// is the right image — nothing a backup restores makes it run — and the only people with a
    /// real reason (a relabelled or misreported module) are better served by fixing the
    /// identity qrescue read than by a switch that would also let a slip of the finger through.
    /// A model mismatch therefore stays refused; an unknown model whose whole prefix differs is
    /// treated the same way because qrescue cannot tell model from variant there.
    pub fn overridable(self) -> bool {
        !matches!(self, Rule::ModelMismatch)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a package is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Allow {
    /// The package carries the revision the modem already runs.
    SameRevision,
    /// A later release on the same baseline.
    Upgrade,
    /// The same release with a later sub-version.
    NewerSubVersion,
    /// A refusal overridden with a typed confirmation and a verified backup.
    Overridden { rule: Rule },
}

/// A refusal: the rule, both versions, why, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    /// What the modem runs.
    pub current: Revision,
    /// What the package holds.
    pub target: Revision,
    pub why: String,
    pub next: String,
}

impl Refusal {
    /// One line: `refused (baseline-change): package X onto modem Y`.
    pub fn summary(&self) -> String {
        format!(
            "qrescue refuses this package ({}: {}): package {} onto a modem running {}",
            self.rule.name(),
            self.rule.title(),
            self.target,
            self.current
        )
    }

    /// The exact phrase a person must type to override this refusal.
    pub fn override_phrase(&self) -> String {
        override_phrase(&self.current, &self.target)
    }

    /// As a [`crate::Error`] (kind Failure).
    pub fn to_error(&self) -> crate::Error {
        let mut next = self.next.clone();
        if self.rule.overridable() {
            next.push_str(&format!(
                " To flash it anyway, back up this modem first, then type exactly: {}",
                self.override_phrase()
            ));
        }
        crate::Error::failure(self.summary(), self.why.clone(), next)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n  why:  {}\n  next: {}",
            self.summary(),
            self.why,
            self.next
        )
    }
}

/// The verdict on one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        rule: Allow,
        note: String,
    },
    /// Boxed: a refusal carries both revisions and its texts.
    Refused(Box<Refusal>),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }

    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            Decision::Refused(r) => Some(r.as_ref()),
            Decision::Allowed { .. } => None,
        }
    }
}

fn override_phrase(current: &Revision, target: &Revision) -> String {
    format!("I understand {target} may brick {current}")
}

/// Why an override could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverrideError {
    #[error(
        "the rule '{0}' cannot be overridden: firmware for another model never fits this modem"
    )]
    NotOverridable(Rule),
    #[error("the confirmation does not match; type exactly: {expected}")]
    WrongPhrase { expected: String },
}

/// Permission to flash a refused package anyway. Made only from the exact typed phrase for this
/// pair of revisions and a verified backup from the ledger; bound to that pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    current: Revision,
    target: Revision,
    backup: VerifiedBackupRef,
}

impl Override {
    /// `typed` must equal [`Refusal::override_phrase`] (surrounding whitespace aside, same
    /// case). `backup` should be the verified backup of this unit's device-unique partitions
    /// (see `crate::engine::guards`); it is kept so the flash record can name it.
    pub fn new(
        refusal: &Refusal,
        typed: &str,
        backup: VerifiedBackupRef,
    ) -> Result<Override, OverrideError> {
        if !refusal.rule.overridable() {
            return Err(OverrideError::NotOverridable(refusal.rule));
        }
        let expected = refusal.override_phrase();
        if typed.trim() != expected {
            return Err(OverrideError::WrongPhrase { expected });
        }
        Ok(Override {
            current: refusal.current.clone(),
            target: refusal.target.clone(),
            backup,
        })
    }

    pub fn backup(&self) -> &VerifiedBackupRef {
        &self.backup
    }
}

/// Decide `target` (the package) against `current` (the modem). See the module notes.
pub fn decide(current: &Revision, target: &Revision) -> Decision {
    match check(current, target) {
        Ok((rule, note)) => Decision::Allowed { rule, note },
        Err((rule, why, next)) => Decision::Refused(Box::new(Refusal {
            rule,
            current: current.clone(),
            target: target.clone(),
            why,
            next,
        })),
    }
}

/// [`decide`], with an override for this exact pair turning an overridable refusal into
/// [`Allow::Overridden`]. An override made for another pair changes nothing.
pub fn decide_with_override(
    current: &Revision,
    target: &Revision,
    ov: Option<&Override>,
) -> Decision {
    let decision = decide(current, target);
    match (decision, ov) {
        (Decision::Refused(r), Some(ov))
            if r.rule.overridable() && ov.current == *current && ov.target == *target =>
        {
            Decision::Allowed {
                rule: Allow::Overridden { rule: r.rule },
                note: format!(
                    "overridden by typed confirmation: {} ({}); {}",
                    r.rule.title(),
                    r.why,
                    ov.backup
                ),
            }
        }
        (d, _) => d,
    }
}

type Refused = (Rule, String, String);

const CANNOT_TELL: &str = "qrescue cannot tell whether this is safe";

fn check(c: &Revision, t: &Revision) -> Result<(Allow, String), Refused> {
    // 1. Model.
    if c.model != t.model || c.known_model != t.known_model {
        let how = if c.known_model && t.known_model {
            format!(
                "This package is for the {}, the modem is an {}. Firmware for another model \
                 drives other hardware; flashed anyway it leaves the modem dead or in \
                 +CFUN: 7 (an RM550V flashed with RM551E firmware ended that way).",
                t.model, c.model
            )
        } else {
            format!(
                "This package is for {}, the modem is {}. qrescue does not know one of these \
                 models, so the whole model and variant part must match, and it does not.",
                t.prefix(),
                c.prefix()
            )
        };
        return Err((
            Rule::ModelMismatch,
            how,
            format!(
                "Get the firmware made for this modem: its name starts with {}R{:02}.",
                c.prefix(),
                c.baseline
            ),
        ));
    }
    // 2. Variant.
    if c.variant != t.variant {
        return Err((
            Rule::VariantMismatch,
            format!(
                "This package is for {}, the modem is {}: the same model built for another \
                 region or project, with other RF settings. RM502Q-EA firmware flashed onto \
                 an RM502Q-AE bricked it.",
                t.product_name(),
                c.product_name()
            ),
            format!(
                "Use a package whose name starts with {} (the modem's own variant).",
                c.prefix()
            ),
        ));
    }
    // 3. Baseline.
    if c.baseline != t.baseline {
        return Err((
            Rule::BaselineChange,
            format!(
                "The package is on baseline R{:02}, the modem on R{:02}. Quectel does not allow \
                 flashing across baselines in either direction: an EC25-E moved from R06 to R08 \
                 stayed in download mode (9008) for good, and an EC20 flashed across baselines \
                 lost its RF (+CFUN: 7).",
                t.baseline, c.baseline
            ),
            format!(
                "Choose a package on the modem's baseline ({}R{:02}A…); for another baseline ask \
                 Quectel support for this unit's upgrade path.",
                c.prefix(),
                c.baseline
            ),
        ));
    }
    let (cs, ts) = (c.sub_version(), t.sub_version());
    // 4. Downgrade (release, then sub-version within the same release).
    if t.release < c.release {
        return Err((
            Rule::Downgrade,
            format!(
                "The package is release A{:02}, older than the modem's A{:02}. Newer Quectel \
                 firmware often cannot be downgraded; modules went dead after trying.",
                t.release, c.release
            ),
            format!(
                "Use a package at release A{:02} or later on baseline R{:02}.",
                c.release, c.baseline
            ),
        ));
    }
    if t.release == c.release {
        if let (Some(cs), Some(ts)) = (cs, ts) {
            if cs.compare(ts) == Some(Ordering::Greater) {
                return Err((
                    Rule::Downgrade,
                    format!(
                        "Both are release A{:02}, but the package's sub-version {ts} is older \
                         than the modem's {cs}. Newer Quectel firmware often cannot be \
                         downgraded.",
                        c.release
                    ),
                    format!("Use a package with sub-version {cs} or later."),
                ));
            }
        }
    }
    // 5. Anti-rollback family.
    if let Some(cs) = cs {
        if let Some(family) = cs.family_text() {
            let stays = ts.is_some_and(|ts| cs.keeps_families_of(ts));
            if !stays {
                let pkg = match ts {
                    Some(ts) => format!("the package's sub-version {ts} is outside it"),
                    None => "the package names no sub-version, so it cannot be shown to stay \
                             inside it"
                        .to_string(),
                };
                return Err((
                    Rule::RollbackFamily,
                    format!(
                        "The modem runs sub-version {cs}, which belongs to the {family} \
                         anti-rollback family: Quectel says such a build may only move to \
                         another {family} build. {}.",
                        capitalize_first(&pkg)
                    ),
                    format!(
                        "Choose a package on R{:02} whose name ends in _{family} (for example \
                         {}R{:02}Axx{}_{family}).",
                        c.baseline,
                        c.prefix(),
                        c.baseline,
                        c.suffix
                    ),
                ));
            }
        }
    }
    // 6. Build tags.
    let (ct, tt) = (c.build_tags(), t.build_tags());
    if ct != tt {
        let show = |v: &[String]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join("_")
            }
        };
        return Err((
            Rule::BuildTag,
            format!(
                "The package's build tags ({}) differ from the modem's ({}). Beta, customer \
                 and OEM builds are made for one project; a Lenovo RM520N build left a module \
                 unusable outside Windows.",
                show(&tt),
                show(&ct)
            ),
            format!(
                "Use a package with the same build tags as the modem ({}).",
                show(&ct)
            ),
        ));
    }
    // 7. What qrescue cannot judge.
    if c.suffix != t.suffix {
        return Err((
            Rule::Unknown,
            format!(
                "The build suffix differs ({} in the package, {} on the modem). No public \
                 source says what it encodes, so {CANNOT_TELL}.",
                or_none(&t.suffix),
                or_none(&c.suffix)
            ),
            format!(
                "Use a package whose release part ends in {} like the modem's.",
                or_none(&c.suffix)
            ),
        ));
    }
    if cs.is_none() && ts.is_some() {
        return Err((
            Rule::Unknown,
            format!(
                "The modem's revision names no sub-version, so qrescue cannot check the \
                 anti-rollback family of {t}; {CANNOT_TELL}."
            ),
            "Read the full revision with AT+QGMR (it prints the _NN.NNN.NN.NNN part), then \
             check again."
                .to_string(),
        ));
    }
    if let (Some(cs), Some(ts)) = (cs, ts) {
        if t.release == c.release && cs.compare(ts).is_none() {
            return Err((
                Rule::Unknown,
                format!(
                    "The sub-versions {ts} and {cs} have different shapes and cannot be \
                     compared; {CANNOT_TELL}."
                ),
                "Use a package whose sub-version has the same form as the modem's.".to_string(),
            ));
        }
    }

    // Allowed.
    let mut notes = Vec::new();
    let rule = if t.release > c.release {
        notes.push(format!(
            "upgrade from release A{:02} to A{:02} on baseline R{:02}",
            c.release, t.release, c.baseline
        ));
        Allow::Upgrade
    } else {
        match (cs, ts) {
            (Some(cs), Some(ts)) if cs.compare(ts) == Some(Ordering::Less) => {
                notes.push(format!("newer sub-version {ts} (the modem has {cs})"));
                Allow::NewerSubVersion
            }
            _ => {
                notes.push(
                    "the package holds the firmware the modem already runs (a reflash)".into(),
                );
                Allow::SameRevision
            }
        }
    };
    if ts.is_none() && cs.is_some() {
        notes.push("the package names no sub-version".into());
    }
    if let Some(ts) = ts {
        let entering = ts
            .family_text()
            .filter(|_| cs.and_then(|c| c.family_text()).is_none());
        if let Some(family) = entering {
            notes.push(format!(
                "after this the modem can only move to other {family} builds (anti-rollback)"
            ));
        }
    }
    if t.is_factory() {
        notes.push(
            "this is a factory package: it rewrites EFS, so the backup guard must pass too".into(),
        );
    }
    Ok((rule, notes.join("; ")))
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "nothing"
    } else {
        s
    }
}

fn capitalize_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::guards::{BackupLedger, MemoryLedger, Region};

    fn r(s: &str) -> Revision {
        Revision::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    enum Want {
        Pass(Allow),
        Refuse(Rule),
    }
    use Want::*;

    /// (modem, package, expected). The USERS.md cases come first.
    const CASES: &[(&str, &str, Want)] = &[
        // USERS.md §1.3: EC25-E in permanent 9008 after this move.
        (
            "EC25EFAR06A17M4G_20.200.20.200",
            "EC25EFAR08A01M4G_01.001.01.001",
            Refuse(Rule::BaselineChange),
        ),
        // USERS.md §1.4: RM502Q-EA package on an RM502Q-AE.
        (
            "RM502QAEAAR13A02M4G",
            "RM502QEAAAR13A02M4G",
            Refuse(Rule::VariantMismatch),
        ),
        // A02 → A03 on the same baseline.
        (
            "RM502QAEAAR13A02M4G",
            "RM502QAEAAR13A03M4G",
            Pass(Allow::Upgrade),
        ),
        // USERS.md §1.3: EC20CEFA flashed with EC20CEFAG firmware.
        (
            "EC20CEFAR02A10M4G",
            "EC20CEFAGR06A15M4G",
            Refuse(Rule::VariantMismatch),
        ),
        // USERS.md §1.4: RM550V flashed with RM551E firmware.
        (
            "RM550VGL00AAR01A02M8G_01.001.01.001",
            "RM551EGL00AAR01A02M8G_01.001.01.001",
            Refuse(Rule::ModelMismatch),
        ),
        // The quoted anti-rollback rule, both ways.
        (
            "EC25EFAR06A17M4G_20.200.20.200",
            "EC25EFAR06A18M4G_20.201.20.201",
            Pass(Allow::Upgrade),
        ),
        (
            "EC25EFAR06A17M4G_20.200.20.200",
            "EC25EFAR06A18M4G_01.001.01.001",
            Refuse(Rule::RollbackFamily),
        ),
        (
            "EC25EFAR06A17M4G_20.200.20.200",
            "EC25EFAR06A18M4G_21.200.21.200",
            Refuse(Rule::RollbackFamily),
        ),
        (
            "EC25EFAR06A17M4G_20.200.20.200",
            "EC25EFAR06A18M4G",
            Refuse(Rule::RollbackFamily),
        ),
        // RM520N downgrade inside 01.200 (USERS.md §1.3, …/38341).
        (
            "RM520NGLAAR03A03M4G_01.200.01.200",
            "RM520NGLAAR03A02M4G_01.200.01.200",
            Refuse(Rule::Downgrade),
        ),
        (
            "RM502QGLAAR11A02M4G_01.200.01.200",
            "RM502QGLAAR11A02M4G_01.100.01.100",
            Refuse(Rule::Downgrade),
        ),
        (
            "RM502QGLAAR11A02M4G_01.200.01.200",
            "RM502QGLAAR11A02M4G_01.201.01.201",
            Pass(Allow::NewerSubVersion),
        ),
        (
            "RM502QGLAAR11A02M4G_01.200.01.200",
            "RM502QGLAAR11A02M4G_01.200.01.200",
            Pass(Allow::SameRevision),
        ),
        // Every string of PROTOCOLS.md §7.5 as the modem.
        (
            "RM500QGLAAR01A01M4G_BETA_20200428F",
            "RM500QGLAAR01A01M4G_BETA_20200428F",
            Pass(Allow::SameRevision),
        ),
        (
            "RM500QGLAAR01A01M4G_BETA_20200428F",
            "RM500QGLAAR01A02M4G",
            Refuse(Rule::BuildTag),
        ),
        (
            "RM500QGLAAR01A01M4G_BETA_20200428F",
            "RM500QGLAAR01A02M4G_BETA_20200601F",
            Refuse(Rule::BuildTag),
        ),
        (
            "RM500QGLAAR01A01M4G",
            "RM500QGLAAR01A01M4G_BETA_20200428F",
            Refuse(Rule::BuildTag),
        ),
        (
            "EM20GRAR01A04V01M4G",
            "EM20GRAR01A04V01M4G_factory",
            Pass(Allow::SameRevision),
        ),
        (
            "EM20GRAR01A04V01M4G",
            "EM20GRAR01A05V01M4G_factory",
            Pass(Allow::Upgrade),
        ),
        (
            "EM20GRAR01A04V01M4G",
            "EM20GRAR01A04M4G",
            Refuse(Rule::Unknown),
        ),
        (
            "RG520NEUDCR01A01M4G_01.001.01.001",
            "RG520NEUDCR01A02M4G_01.001.01.001",
            Pass(Allow::Upgrade),
        ),
        (
            "RG520NEUDCR01A01M4G_01.001.01.001",
            "RG520NGLDCR01A02M4G_01.001.01.001",
            Refuse(Rule::VariantMismatch),
        ),
        (
            "AG590ECNABR01A01M8G_OCPU_01.001.01",
            "AG590ECNABR01A01M8G_OCPU_01.001.02",
            Pass(Allow::NewerSubVersion),
        ),
        (
            "AG590ECNABR01A01M8G_OCPU_01.001.01",
            "AG590ECNABR01A01M8G_01.001.02",
            Refuse(Rule::BuildTag),
        ),
        (
            "AG590ECNABR01A01M8G_OCPU_01.001.01",
            "AG590ECNABR01A01M8G_OCPU_01.001.01.001",
            Refuse(Rule::Unknown),
        ),
        (
            "RM551EGL00AAR01A02M8G_01.001.01.001",
            "RM551EGL00AAR01A01M8G_01.001.01.001",
            Refuse(Rule::Downgrade),
        ),
        (
            "RM502QAEAAR13A02M4G",
            "RM502QAEAAR12A05M4G",
            Refuse(Rule::BaselineChange),
        ),
        (
            "RM502QAEAAR13A02M4G",
            "RM502QAEAAR13A02M4G",
            Pass(Allow::SameRevision),
        ),
        ("EC20EQAR02A04E2G", "EC20EQAR02A05E2G", Pass(Allow::Upgrade)),
        (
            "EC20EQAR02A04E2G",
            "EC20EQAR02A05M4G",
            Refuse(Rule::Unknown),
        ),
        (
            "EG25GGBR07A08M2G_30.006.30.006",
            "EG25GGBR07A08M2G_30.006.30.006",
            Pass(Allow::SameRevision),
        ),
        (
            "EG25GGBR07A08M2G_30.006.30.006",
            "EG25GGCR07A08M2G_30.006.30.006",
            Refuse(Rule::VariantMismatch),
        ),
        (
            "EG25GGBR07A08M2G_30.006.30.006",
            "EG25GGBR07A08M2G",
            Pass(Allow::SameRevision),
        ),
        (
            "RG500QEAAAR11A07M4G_ACY",
            "RG500QEAAAR11A08M4G",
            Refuse(Rule::BuildTag),
        ),
        (
            "RG500QEAAAR11A07M4G_ACY",
            "RG500QEAAAR11A08M4G_ACY",
            Pass(Allow::Upgrade),
        ),
        (
            "RG500QEAAAR11A07M4G_ACY",
            "RG500QEAAAR11A06M4G_ACY",
            Refuse(Rule::Downgrade),
        ),
        // A modem read with ATI (no sub-version) cannot be checked against a sub-versioned
        // package.
        (
            "EC25EFAR06A08M4G",
            "EC25EFAR06A09M4G_01.001.01.001",
            Refuse(Rule::Unknown),
        ),
        ("EC25EFAR06A08M4G", "EC25EFAR06A09M4G", Pass(Allow::Upgrade)),
        // Entering a family is allowed (with a note).
        (
            "EC25EFAR06A08M4G_01.001.01.001",
            "EC25EFAR06A09M4G_01.200.01.200",
            Pass(Allow::Upgrade),
        ),
        // Unknown models must match whole.
        (
            "XY99ABCR01A01M4G",
            "XY99ABDR01A01M4G",
            Refuse(Rule::ModelMismatch),
        ),
        ("XY99ABCR01A01M4G", "XY99ABCR01A02M4G", Pass(Allow::Upgrade)),
        (
            "EC25EFAR06A08M4G",
            "EG25GGBR07A08M2G_30.006.30.006",
            Refuse(Rule::ModelMismatch),
        ),
    ];

    #[test]
    fn compatibility_table() {
        for (modem, package, want) in CASES {
            let (c, t) = (r(modem), r(package));
            let d = decide(&c, &t);
            match (want, &d) {
                (Pass(a), Decision::Allowed { rule, note }) => {
                    assert_eq!(rule, a, "{modem} <- {package}: {note}");
                    assert!(!note.is_empty());
                }
                (Refuse(rule), Decision::Refused(refusal)) => {
                    assert_eq!(refusal.rule, *rule, "{modem} <- {package}: {refusal}");
                    // Every refusal names the rule and both versions.
                    let text = refusal.to_string();
                    assert!(text.contains(rule.name()), "{text}");
                    assert!(text.contains(&c.to_string()), "{text}");
                    assert!(text.contains(&t.to_string()), "{text}");
                    assert!(!refusal.why.is_empty() && !refusal.next.is_empty());
                    let e = refusal.to_error();
                    assert_eq!(e.kind, crate::error::ErrorKind::Failure);
                    assert_eq!(
                        e.next.contains(&refusal.override_phrase()),
                        rule.overridable()
                    );
                }
                _ => panic!("{modem} <- {package}: unexpected {d:?}"),
            }
        }
    }

    #[test]
    fn messages_say_it_in_plain_words() {
        let d = decide(&r("RM502QAEAAR13A02M4G"), &r("RM502QEAAAR13A02M4G"));
        let why = &d.refusal().unwrap().why;
        assert!(
            why.contains("This package is for RM502Q-EAAA, the modem is RM502Q-AEAA"),
            "{why}"
        );
        let d = decide(
            &r("EC25EFAR06A17M4G_20.200.20.200"),
            &r("EC25EFAR06A18M4G_01.001.01.001"),
        );
        let refusal = d.refusal().unwrap();
        assert!(refusal.why.contains("20.2xx.20.2xx"), "{}", refusal.why);
        assert!(
            refusal.next.contains("EC25EFAR06AxxM4G_20.2xx.20.2xx"),
            "{}",
            refusal.next
        );
        let d = decide(&r("EC20EQAR02A04E2G"), &r("EC20EQAR02A05M4G"));
        assert!(d.refusal().unwrap().why.contains(CANNOT_TELL));
        let d = decide(
            &r("EC25EFAR06A08M4G_01.001.01.001"),
            &r("EC25EFAR06A09M4G_01.200.01.200"),
        );
        match d {
            Decision::Allowed { note, .. } => assert!(note.contains("01.2xx.01.2xx"), "{note}"),
            other => panic!("{other:?}"),
        }
        match decide(&r("EM20GRAR01A04V01M4G"), &r("EM20GRAR01A04V01M4G_factory")) {
            Decision::Allowed { note, .. } => assert!(note.contains("factory"), "{note}"),
            other => panic!("{other:?}"),
        }
    }

    fn backup() -> VerifiedBackupRef {
        let region = Region {
            lun: 0,
            start_sector: 1280,
            num_sectors: 5632,
            sector_size: 4096,
        };
        let mut l = MemoryLedger::new();
        l.record("0cf94c64", "efs2", region.clone(), &"ab".repeat(32), true);
        l.verified_backup("0cf94c64", &region).unwrap()
    }

    #[test]
    fn override_needs_the_exact_phrase_and_never_covers_a_model_mismatch() {
        let (c, t) = (
            r("EC25EFAR06A17M4G_20.200.20.200"),
            r("EC25EFAR08A01M4G_01.001.01.001"),
        );
        let refusal = decide(&c, &t).refusal().unwrap().clone();
        let phrase = refusal.override_phrase();
        assert_eq!(
            phrase,
            "I understand EC25EFAR08A01M4G_01.001.01.001 may brick EC25EFAR06A17M4G_20.200.20.200"
        );
        for wrong in [
            "yes",
            "",
            &phrase.to_lowercase(),
            &phrase.replace("08A01", "08A02"),
        ] {
            assert!(matches!(
                Override::new(&refusal, wrong, backup()),
                Err(OverrideError::WrongPhrase { .. })
            ));
        }
        let ov = Override::new(&refusal, &format!("  {phrase}\n"), backup()).unwrap();
        assert_eq!(ov.backup().label(), "efs2");
        match decide_with_override(&c, &t, Some(&ov)) {
            Decision::Allowed { rule, note } => {
                assert_eq!(
                    rule,
                    Allow::Overridden {
                        rule: Rule::BaselineChange
                    }
                );
                assert!(note.contains("efs2"), "{note}");
            }
            other => panic!("{other:?}"),
        }
        // The override is bound to its pair.
        let other = r("EC25EFAR08A02M4G_01.001.01.001");
        assert!(!decide_with_override(&c, &other, Some(&ov)).is_allowed());
        // Without one, nothing changes.
        assert_eq!(decide_with_override(&c, &t, None), decide(&c, &t));
        // An allowed pair stays as it is.
        let ok = r("EC25EFAR06A18M4G_20.201.20.201");
        assert!(decide_with_override(&c, &ok, Some(&ov)).is_allowed());

        // Model mismatch: no override, whatever is typed.
        let (c, t) = (r("RM550VGL00AAR01A02M8G"), r("RM551EGL00AAR01A02M8G"));
        let refusal = decide(&c, &t).refusal().unwrap().clone();
        assert_eq!(
            Override::new(&refusal, &refusal.override_phrase(), backup()),
            Err(OverrideError::NotOverridable(Rule::ModelMismatch))
        );
        assert!(!refusal.to_error().next.contains("I understand"));
    }

    fn small_revision() -> impl proptest::strategy::Strategy<Value = Revision> {
        use proptest::prelude::*;
        (
            proptest::sample::select(vec!["EC25EFA", "EC25EUX", "RM502QAEAA", "XY99AB"]),
            1u8..4,
            1u8..5,
            proptest::sample::select(vec!["M4G", "M2G", ""]),
            proptest::option::of(proptest::sample::select(vec![
                "01.001.01.001",
                "01.002.01.002",
                "20.200.20.200",
                "20.201.20.201",
                "21.200.21.200",
                "01.001.01",
            ])),
            proptest::sample::select(vec!["", "_BETA_20200428F", "_ACY", "_factory"]),
        )
            .prop_map(|(prefix, r, a, suffix, sub, tag)| {
                let sub = sub.map(|s| format!("_{s}")).unwrap_or_default();
                Revision::parse(&format!("{prefix}R{r:02}A{a:02}{suffix}{tag}{sub}")).unwrap()
            })
    }

    proptest::proptest! {
        #[test]
        fn every_decision_is_explained(c in small_revision(), t in small_revision()) {
            match decide(&c, &t) {
                Decision::Allowed { note, .. } => proptest::prop_assert!(!note.is_empty()),
                Decision::Refused(r) => {
                    let text = r.to_string();
                    proptest::prop_assert!(text.contains(r.rule.name()));
                    proptest::prop_assert!(text.contains(&c.to_string()));
                    proptest::prop_assert!(text.contains(&t.to_string()));
                }
            }
            // The same revision is always a reflash.
            let same = decide(&c, &c);
            let reflash = matches!(same, Decision::Allowed { rule: Allow::SameRevision, .. });
            proptest::prop_assert!(reflash);
            // Nothing is allowed across models, variants or baselines.
            if c.prefix() != t.prefix() || c.baseline != t.baseline {
                proptest::prop_assert!(!decide(&c, &t).is_allowed());
            }
        }
    }
}
