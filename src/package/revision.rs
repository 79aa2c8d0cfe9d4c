//! Quectel firmware revision strings: what `ATI` / `AT+QGMR` print, what DIAG's extended build
//! ID returns, and what package folders are named after. Pure parsing, no I/O.
//!
//! # Shape
//!
//! `<model+variant>R<nn>A<nn><suffix>[_<part>]*` where each `_part` is either a sub-version of
//! two to four dot-separated numbers (`_01.200.01.200`, `_30.006.30.006`, `_01.001.01`) or a
//! tag (`_BETA`, `_20200428F`, `_factory`, `_ACY`, `_OCPU`, `_LNV`, `_MSFT`).
//!
//! QFirehose cuts the string at the first `R\d\dA\d\d` to get the model ("hardware") prefix
//! (qfirehose.c `detect_and_judge_module_version`, PROTOCOLS.md §7.5); so does
//! [`Revision::parse`]. The prefix is split into a model (`RM502Q`) and a variant (`AEAA`) with
//! a table of known Quectel model names ([`KNOWN_MODELS`]); an unknown model is kept whole as
//! the model with an empty variant, so comparisons stay exact.
//!
//! What the parts *mean* is partly unverified (PROTOCOLS.md §7.5): no public source says what R,
//! A and the `M4G`/`E2G` suffix stand for. qrescue calls R the *baseline* and A the *release*
//! because Quectel's own support treats a change of R as a different baseline ("flashing a
//! different baseline can cause corruption … especially to module's RF", USERS.md §1.3) and
//! moves along A as upgrades within it. The sub-version's `NN.2xx` anti-rollback family is
//! Quectel's statement in forums.quectel.com thread 44652 (USERS.md §1.3).
//!
//! Examples (every string of PROTOCOLS.md §7.5 is in the tests):
//!
//! | string | model | variant | R | A | suffix | tail |
//! |---|---|---|---|---|---|---|
//! | `RM502QGLAAR11A02M4G_01.200.01.200` | RM502Q | GLAA | 11 | 2 | M4G | sub 01.200.01.200 |
//! | `EC25EFAR06A08M4G` | EC25 | EFA | 6 | 8 | M4G | – |
//! | `EM20GRAR01A04V01M4G_factory` | EM20 | GRA | 1 | 4 | V01M4G | tag factory |
//! | `RM500QGLAAR01A01M4G_BETA_20200428F` | RM500Q | GLAA | 1 | 1 | M4G | tags BETA, 20200428F |

use std::fmt;

/// Longest input accepted (after trimming); real strings are under 50 characters.
pub const MAX_REVISION_LEN: usize = 128;
/// Longest model+variant prefix accepted.
pub const MAX_PREFIX_LEN: usize = 32;
/// Longest tag accepted.
pub const MAX_TAG_LEN: usize = 24;
/// Most digits in one sub-version number.
const MAX_SUB_DIGITS: usize = 6;

/// Quectel model names qrescue can split from a variant. Matching takes the longest name that
/// prefixes the model+variant string and is followed by a letter (or nothing), so `EM12` does
/// not swallow `EM120R…`. Sources: the strings in PROTOCOLS.md §7.5 and the models named in
/// USERS.md and PROTOCOLS.md §5.1 (VID:PID table).
pub const KNOWN_MODELS: &[&str] = &[
    "EC20", "EC21", "EC25", "EG21", "EG25", "EG91", "EG95", "BG95", "BG96", "EP06", "EM06", "EG06",
    "EM12", "EG12", "EG18", "EM20", "EM05", "AG35", "AG215S", "AG550Q", "AG590E", "EM060K",
    "EM061K", "EM120K", "EM120R", "EM121R", "EM160R", "RM500Q", "RM500U", "RM502Q", "RM505Q",
    "RM510Q", "RG500Q", "RG502Q", "RM520N", "RG520N", "RM521F", "RM530N", "RM550V", "RM551E",
];

/// One revision string, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revision {
    /// The model (`RM502Q`), upper case; for an unknown model the whole prefix.
    pub model: String,
    /// The variant after the model (`AEAA`, `EFA`, `GGB`), upper case; empty for an unknown
    /// model.
    pub variant: String,
    /// Whether `model` came from [`KNOWN_MODELS`].
    pub known_model: bool,
    /// The number after `R` (the baseline; meaning unverified, see the module notes).
    pub baseline: u8,
    /// The number after `A` (the release within the baseline).
    pub release: u8,
    /// What follows `A<nn>` up to the first `_` (`M4G`, `E2G`, `V01M4G`), upper case.
    pub suffix: String,
    /// The `_`-separated parts after the suffix, in order.
    tail: Vec<TailPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TailPart {
    Sub(SubVersion),
    Tag(String),
}

/// The dotted sub-version (`01.200.01.200`): two to four numbers, leading zeros kept for
/// display.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubVersion {
    text: String,
    parts: Vec<u32>,
}

/// Why a string is not a revision. Plain words; the caller adds what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    #[error("the revision is empty")]
    Empty,
    #[error("the revision is {len} characters long (at most {MAX_REVISION_LEN} are accepted)")]
    TooLong { len: usize },
    #[error("'{text}' has no R<nn>A<nn> part (such as R06A17), which every Quectel revision has")]
    NoBaseline { text: String },
    #[error("'{text}' has nothing before its R<nn>A<nn> part, so it names no model")]
    NoModel { text: String },
    #[error("the model part '{prefix}' is longer than {MAX_PREFIX_LEN} characters")]
    PrefixTooLong { prefix: String },
    #[error("'{text}' contains {found:?} at position {at}; a revision holds only letters, digits, '_' and '.'")]
    BadChar {
        text: String,
        found: char,
        at: usize,
    },
    #[error("'{text}' has an empty part between underscores")]
    EmptyPart { text: String },
    #[error("'{part}' is not a sub-version: {why}")]
    BadSubVersion { part: String, why: &'static str },
    #[error("'{text}' has two sub-versions ('{first}' and '{second}')")]
    TwoSubVersions {
        text: String,
        first: String,
        second: String,
    },
    #[error("the tag '{tag}' is longer than {MAX_TAG_LEN} characters")]
    TagTooLong { tag: String },
}

impl SubVersion {
    /// Parse `01.200.01.200`: 2..=4 groups of 1..=6 digits.
    pub fn parse(text: &str) -> Result<SubVersion, RevisionError> {
        let bad = |why| RevisionError::BadSubVersion {
            part: text.to_string(),
            why,
        };
        let groups: Vec<&str> = text.split('.').collect();
        if !(2..=4).contains(&groups.len()) {
            return Err(bad("it must have two to four numbers separated by dots"));
        }
        let mut parts = Vec::with_capacity(groups.len());
        for g in groups {
            if g.is_empty() {
                return Err(bad("it has an empty number between dots"));
            }
            if g.len() > MAX_SUB_DIGITS {
                return Err(bad("one of its numbers has more than six digits"));
            }
            if !g.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("it holds something other than digits and dots"));
            }
            // At most six digits: always fits.
            parts.push(g.parse::<u32>().map_err(|_| bad("a number does not fit"))?);
        }
        Ok(SubVersion {
            text: text.to_string(),
            parts,
        })
    }

    /// The numbers (`[1, 200, 1, 200]`).
    pub fn parts(&self) -> &[u32] {
        &self.parts
    }

    /// As written (`01.200.01.200`).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The anti-rollback families this sub-version is in: for each pair of numbers
    /// `(NN, 2xx)` — the first and second, and the third and fourth when present — whose second
    /// number lies in 200..=299, the pair's position and `NN`. Quectel: "EC25EFAR06A17M4G_
    /// 20.200.20.200 can only upgrade to version like EC25EFAR06AxxM4G_20.2xx.20.2xx"
    /// (forums.quectel.com thread 44652, USERS.md §1.3); nothing public says the third/fourth
    /// pair can differ from the first, so both are checked.
    pub fn rollback_families(&self) -> Vec<(usize, u32)> {
        self.parts
            .chunks(2)
            .enumerate()
            .filter_map(|(i, pair)| match pair {
                [nn, x] if (200..=299).contains(x) => Some((i * 2, *nn)),
                _ => None,
            })
            .collect()
    }

    /// The family written as people read it: `20.2xx.20.2xx` (pairs outside a family keep
    /// their numbers). `None` when the sub-version is in no family.
    pub fn family_text(&self) -> Option<String> {
        if self.rollback_families().is_empty() {
            return None;
        }
        let groups: Vec<&str> = self.text.split('.').collect();
        let mut out = Vec::with_capacity(groups.len());
        for (i, g) in groups.iter().enumerate() {
            let in_family = i % 2 == 1 && (200..=299).contains(&self.parts[i]);
            if in_family {
                out.push("2xx".to_string());
            } else {
                out.push((*g).to_string());
            }
        }
        Some(out.join("."))
    }

    /// Whether `other` stays inside every family this sub-version is in (same `NN`, second
    /// number still 2xx, at the same positions).
    pub fn keeps_families_of(&self, other: &SubVersion) -> bool {
        self.rollback_families().iter().all(|&(pos, nn)| {
            other.parts.get(pos) == Some(&nn)
                && other
                    .parts
                    .get(pos + 1)
                    .is_some_and(|x| (200..=299).contains(x))
        })
    }

    /// Numeric order, when both have the same number of parts.
    pub fn compare(&self, other: &SubVersion) -> Option<std::cmp::Ordering> {
        (self.parts.len() == other.parts.len()).then(|| self.parts.cmp(&other.parts))
    }
}

impl fmt::Display for SubVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// What a tag says about a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// `_factory`: the package's factory flavour, which rewrites EFS (PROTOCOLS.md §7.3). It is
    /// a property of the package, not of the firmware version the modem will report.
    Factory,
    /// `_BETA` and the build stamp that follows it (`_20200428F`).
    Beta,
    /// Anything else (`_ACY`, `_OCPU`, `_LNV`, `_MSFT` …): a customer, project or OEM build.
    Flavour,
}

/// Classify one tag.
pub fn tag_kind(tag: &str) -> TagKind {
    if tag.eq_ignore_ascii_case("factory") {
        TagKind::Factory
    } else if tag.eq_ignore_ascii_case("beta") {
        TagKind::Beta
    } else {
        TagKind::Flavour
    }
}

fn is_core_marker(b: &[u8], i: usize) -> bool {
    b.len() >= i + 6
        && b[i].eq_ignore_ascii_case(&b'R')
        && b[i + 1].is_ascii_digit()
        && b[i + 2].is_ascii_digit()
        && b[i + 3].eq_ignore_ascii_case(&b'A')
        && b[i + 4].is_ascii_digit()
        && b[i + 5].is_ascii_digit()
}

/// Split an upper-case model+variant prefix with [`KNOWN_MODELS`].
fn split_model(prefix: &str) -> (String, String, bool) {
    let best = KNOWN_MODELS
        .iter()
        .filter(|m| {
            prefix.starts_with(**m)
                && prefix[m.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c.is_ascii_alphabetic())
        })
        .max_by_key(|m| m.len());
    match best {
        Some(m) => (m.to_string(), prefix[m.len()..].to_string(), true),
        None => (prefix.to_string(), String::new(), false),
    }
}

impl Revision {
    /// Parse one revision. Surrounding whitespace, a `Revision:` label (as `ATI` prints it) and
    /// lower case are accepted; anything else that is not a revision is refused with the reason.
    pub fn parse(input: &str) -> Result<Revision, RevisionError> {
        let mut text = input.trim();
        if text.len() >= 9
            && text.is_char_boundary(9)
            && text[..9].eq_ignore_ascii_case("revision:")
        {
            text = text[9..].trim();
        }
        if text.is_empty() {
            return Err(RevisionError::Empty);
        }
        if text.len() > MAX_REVISION_LEN {
            return Err(RevisionError::TooLong { len: text.len() });
        }
        if let Some((at, found)) = text
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '.'))
        {
            return Err(RevisionError::BadChar {
                text: text.to_string(),
                found,
                at,
            });
        }
        // Only ASCII from here on, so byte indices are char indices.
        let b = text.as_bytes();
        let core_end = text.find('_').unwrap_or(text.len());
        let marker = (0..core_end)
            .find(|&i| is_core_marker(&b[..core_end], i))
            .ok_or_else(|| RevisionError::NoBaseline {
                text: text.to_string(),
            })?;
        if marker == 0 {
            return Err(RevisionError::NoModel {
                text: text.to_string(),
            });
        }
        let prefix = text[..marker].to_ascii_uppercase();
        if prefix.len() > MAX_PREFIX_LEN {
            return Err(RevisionError::PrefixTooLong { prefix });
        }
        if let Some((at, found)) = text[..core_end].char_indices().find(|(_, c)| *c == '.') {
            return Err(RevisionError::BadChar {
                text: text.to_string(),
                found,
                at,
            });
        }
        let num = |i: usize| (b[i] - b'0') * 10 + (b[i + 1] - b'0');
        let baseline = num(marker + 1);
        let release = num(marker + 4);
        let suffix = text[marker + 6..core_end].to_ascii_uppercase();
        let (model, variant, known_model) = split_model(&prefix);

        let mut tail = Vec::new();
        let mut first_sub: Option<String> = None;
        if core_end < text.len() {
            for part in text[core_end + 1..].split('_') {
                if part.is_empty() {
                    return Err(RevisionError::EmptyPart {
                        text: text.to_string(),
                    });
                }
                if part.contains('.') {
                    let sub = SubVersion::parse(part)?;
                    if let Some(first) = &first_sub {
                        return Err(RevisionError::TwoSubVersions {
                            text: text.to_string(),
                            first: first.clone(),
                            second: part.to_string(),
                        });
                    }
                    first_sub = Some(part.to_string());
                    tail.push(TailPart::Sub(sub));
                } else {
                    if part.len() > MAX_TAG_LEN {
                        return Err(RevisionError::TagTooLong {
                            tag: part.to_string(),
                        });
                    }
                    tail.push(TailPart::Tag(part.to_string()));
                }
            }
        }
        Ok(Revision {
            model,
            variant,
            known_model,
            baseline,
            release,
            suffix,
            tail,
        })
    }

    /// Find the revision in a whole AT reply: `ATI` (`Quectel`, `EC25`, `Revision: …`, `OK`)
    /// or `AT+QGMR` (the bare string, then `OK`). A `Revision:` line wins; otherwise the first
    /// line that parses. `None` when no line is a revision.
    pub fn from_at_reply(reply: &str) -> Option<Revision> {
        let lines = || reply.lines().map(str::trim).filter(|l| !l.is_empty());
        let labelled = lines().find(|l| {
            l.len() >= 9 && l.is_char_boundary(9) && l[..9].eq_ignore_ascii_case("revision:")
        });
        if let Some(line) = labelled {
            if let Ok(r) = Revision::parse(line) {
                return Some(r);
            }
        }
        lines().find_map(|l| Revision::parse(l).ok())
    }

    /// Model and variant as they appear in the string (`RM502QAEAA`).
    pub fn prefix(&self) -> String {
        format!("{}{}", self.model, self.variant)
    }

    /// The model and variant for people: `RM502Q-AEAA`, or the whole prefix for an unknown
    /// model.
    pub fn product_name(&self) -> String {
        if self.variant.is_empty() {
            self.model.clone()
        } else {
            format!("{}-{}", self.model, self.variant)
        }
    }

    /// The sub-version, if the string carries one.
    pub fn sub_version(&self) -> Option<&SubVersion> {
        self.tail.iter().find_map(|p| match p {
            TailPart::Sub(s) => Some(s),
            TailPart::Tag(_) => None,
        })
    }

    /// The tags in order, as written (`BETA`, `20200428F`, `factory`).
    pub fn tags(&self) -> impl Iterator<Item = &str> {
        self.tail.iter().filter_map(|p| match p {
            TailPart::Tag(t) => Some(t.as_str()),
            TailPart::Sub(_) => None,
        })
    }

    /// Whether the string carries `_factory`.
    pub fn is_factory(&self) -> bool {
        self.tags().any(|t| tag_kind(t) == TagKind::Factory)
    }

    /// Whether the string carries `_BETA`.
    pub fn is_beta(&self) -> bool {
        self.tags().any(|t| tag_kind(t) == TagKind::Beta)
    }

    /// The tags that describe the build (everything but `factory`), upper case, in order.
    pub fn build_tags(&self) -> Vec<String> {
        self.tags()
            .filter(|t| tag_kind(t) != TagKind::Factory)
            .map(str::to_ascii_uppercase)
            .collect()
    }

    /// `R06A17` — the part that names baseline and release.
    pub fn baseline_release(&self) -> String {
        format!("R{:02}A{:02}", self.baseline, self.release)
    }
}

impl std::str::FromStr for Revision {
    type Err = RevisionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Revision::parse(s)
    }
}

impl fmt::Display for Revision {
    /// The canonical form: model, variant and suffix upper case, tags as written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}R{:02}A{:02}{}",
            self.model, self.variant, self.baseline, self.release, self.suffix
        )?;
        for part in &self.tail {
            match part {
                TailPart::Sub(s) => write!(f, "_{s}")?,
                TailPart::Tag(t) => write!(f, "_{t}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> Revision {
        Revision::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    struct Row {
        text: &'static str,
        model: &'static str,
        variant: &'static str,
        r: u8,
        a: u8,
        suffix: &'static str,
        sub: Option<&'static str>,
        tags: &'static [&'static str],
    }

    /// Every string of PROTOCOLS.md §7.5 plus the examples.
    const ROWS: &[Row] = &[
        Row {
            text: "RM500QGLAAR01A01M4G_BETA_20200428F",
            model: "RM500Q",
            variant: "GLAA",
            r: 1,
            a: 1,
            suffix: "M4G",
            sub: None,
            tags: &["BETA", "20200428F"],
        },
        Row {
            text: "EM20GRAR01A04V01M4G_factory",
            model: "EM20",
            variant: "GRA",
            r: 1,
            a: 4,
            suffix: "V01M4G",
            sub: None,
            tags: &["factory"],
        },
        Row {
            text: "RG520NEUDCR01A01M4G_01.001.01.001",
            model: "RG520N",
            variant: "EUDC",
            r: 1,
            a: 1,
            suffix: "M4G",
            sub: Some("01.001.01.001"),
            tags: &[],
        },
        Row {
            text: "AG590ECNABR01A01M8G_OCPU_01.001.01",
            model: "AG590E",
            variant: "CNAB",
            r: 1,
            a: 1,
            suffix: "M8G",
            sub: Some("01.001.01"),
            tags: &["OCPU"],
        },
        Row {
            text: "RM551EGL00AAR01A02M8G_01.001.01.001",
            model: "RM551E",
            variant: "GL00AA",
            r: 1,
            a: 2,
            suffix: "M8G",
            sub: Some("01.001.01.001"),
            tags: &[],
        },
        Row {
            text: "RM502QAEAAR13A02M4G",
            model: "RM502Q",
            variant: "AEAA",
            r: 13,
            a: 2,
            suffix: "M4G",
            sub: None,
            tags: &[],
        },
        Row {
            text: "EC20EQAR02A04E2G",
            model: "EC20",
            variant: "EQA",
            r: 2,
            a: 4,
            suffix: "E2G",
            sub: None,
            tags: &[],
        },
        Row {
            text: "EG25GGBR07A08M2G_30.006.30.006",
            model: "EG25",
            variant: "GGB",
            r: 7,
            a: 8,
            suffix: "M2G",
            sub: Some("30.006.30.006"),
            tags: &[],
        },
        Row {
            text: "RG500QEAAAR11A07M4G_ACY",
            model: "RG500Q",
            variant: "EAAA",
            r: 11,
            a: 7,
            suffix: "M4G",
            sub: None,
            tags: &["ACY"],
        },
        Row {
            text: "EC25EFAR06A17M4G_20.200.20.200",
            model: "EC25",
            variant: "EFA",
            r: 6,
            a: 17,
            suffix: "M4G",
            sub: Some("20.200.20.200"),
            tags: &[],
        },
        Row {
            text: "EC25EFAR08A01M4G_01.001.01.001",
            model: "EC25",
            variant: "EFA",
            r: 8,
            a: 1,
            suffix: "M4G",
            sub: Some("01.001.01.001"),
            tags: &[],
        },
        Row {
            text: "RM502QGLAAR11A02M4G_01.200.01.200",
            model: "RM502Q",
            variant: "GLAA",
            r: 11,
            a: 2,
            suffix: "M4G",
            sub: Some("01.200.01.200"),
            tags: &[],
        },
        Row {
            text: "EC25EFAR06A08M4G",
            model: "EC25",
            variant: "EFA",
            r: 6,
            a: 8,
            suffix: "M4G",
            sub: None,
            tags: &[],
        },
        Row {
            text: "EC20CEFAGR06A15M4G",
            model: "EC20",
            variant: "CEFAG",
            r: 6,
            a: 15,
            suffix: "M4G",
            sub: None,
            tags: &[],
        },
        Row {
            text: "EM160RGLAPR02A07M4G",
            model: "EM160R",
            variant: "GLAP",
            r: 2,
            a: 7,
            suffix: "M4G",
            sub: None,
            tags: &[],
        },
        Row {
            text: "EM12GPAR01A21M4G_MSFT",
            model: "EM12",
            variant: "GPA",
            r: 1,
            a: 21,
            suffix: "M4G",
            sub: None,
            tags: &["MSFT"],
        },
    ];

    #[test]
    fn table_of_real_strings() {
        for row in ROWS {
            let r = p(row.text);
            assert_eq!(r.model, row.model, "{}", row.text);
            assert_eq!(r.variant, row.variant, "{}", row.text);
            assert!(r.known_model, "{}", row.text);
            assert_eq!((r.baseline, r.release), (row.r, row.a), "{}", row.text);
            assert_eq!(r.suffix, row.suffix, "{}", row.text);
            assert_eq!(r.sub_version().map(|s| s.as_str()), row.sub, "{}", row.text);
            assert_eq!(r.tags().collect::<Vec<_>>(), row.tags, "{}", row.text);
            assert_eq!(r.to_string(), row.text, "display round-trips {}", row.text);
        }
    }

    #[test]
    fn at_labels_whitespace_and_lower_case() {
        let r = p("  Revision: EC25EFAR06A08M4G\r\n");
        assert_eq!(r.to_string(), "EC25EFAR06A08M4G");
        let r = p("revision:eg25ggbr07a08m2g_30.006.30.006");
        assert_eq!(r.to_string(), "EG25GGBR07A08M2G_30.006.30.006");
        assert_eq!(r.product_name(), "EG25-GGB");
        let ati = "ATI\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A17M4G\r\n\r\nOK\r\n";
        assert_eq!(
            Revision::from_at_reply(ati).unwrap().to_string(),
            "EC25EFAR06A17M4G"
        );
        let qgmr = "AT+QGMR\r\nEC25EFAR06A17M4G_20.200.20.200\r\n\r\nOK\r\n";
        assert_eq!(
            Revision::from_at_reply(qgmr)
                .unwrap()
                .sub_version()
                .unwrap()
                .as_str(),
            "20.200.20.200"
        );
        assert_eq!(Revision::from_at_reply("ERROR\r\n"), None);
    }

    #[test]
    fn unknown_model_kept_whole() {
        let r = p("XY99ABCR03A05M4G");
        assert_eq!(
            (r.model.as_str(), r.variant.as_str(), r.known_model),
            ("XY99ABC", "", false)
        );
        assert_eq!(r.product_name(), "XY99ABC");
        // A known name followed by a digit is a different model (EM12 vs EM120K-like names).
        let r = p("EM125GLR01A01M4G");
        assert!(!r.known_model);
        assert_eq!(r.model, "EM125GL");
    }

    #[test]
    fn sub_version_families() {
        let s = SubVersion::parse("20.200.20.200").unwrap();
        assert_eq!(s.rollback_families(), vec![(0, 20), (2, 20)]);
        assert_eq!(s.family_text().as_deref(), Some("20.2xx.20.2xx"));
        assert!(s.keeps_families_of(&SubVersion::parse("20.215.20.215").unwrap()));
        assert!(!s.keeps_families_of(&SubVersion::parse("01.001.01.001").unwrap()));
        assert!(!s.keeps_families_of(&SubVersion::parse("21.200.21.200").unwrap()));
        assert!(!s.keeps_families_of(&SubVersion::parse("20.200").unwrap()));
        let plain = SubVersion::parse("30.006.30.006").unwrap();
        assert!(plain.rollback_families().is_empty());
        assert_eq!(plain.family_text(), None);
        assert_eq!(
            SubVersion::parse("01.001.01")
                .unwrap()
                .compare(&SubVersion::parse("01.002.01").unwrap()),
            Some(std::cmp::Ordering::Less)
        );
        assert_eq!(
            SubVersion::parse("01.001.01")
                .unwrap()
                .compare(&SubVersion::parse("01.001.01.001").unwrap()),
            None
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        type Check = fn(&RevisionError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, RevisionError::Empty)),
            ("Revision:   ", |e| matches!(e, RevisionError::Empty)),
            ("OK", |e| matches!(e, RevisionError::NoBaseline { .. })),
            ("EC25EFAM4G", |e| {
                matches!(e, RevisionError::NoBaseline { .. })
            }),
            ("R06A17M4G", |e| matches!(e, RevisionError::NoModel { .. })),
            ("EC25 EFAR06A17M4G", |e| {
                matches!(e, RevisionError::BadChar { found: ' ', .. })
            }),
            ("EC25-EFAR06A17M4G", |e| {
                matches!(e, RevisionError::BadChar { found: '-', .. })
            }),
            ("EC25EFAR06A17M4G__01.001", |e| {
                matches!(e, RevisionError::EmptyPart { .. })
            }),
            ("EC25EFAR06A17M4G_", |e| {
                matches!(e, RevisionError::EmptyPart { .. })
            }),
            ("EC25EFAR06A17M4G_01..001", |e| {
                matches!(e, RevisionError::BadSubVersion { .. })
            }),
            ("EC25EFAR06A17M4G_1.2.3.4.5", |e| {
                matches!(e, RevisionError::BadSubVersion { .. })
            }),
            ("EC25EFAR06A17M4G_1.2a", |e| {
                matches!(e, RevisionError::BadSubVersion { .. })
            }),
            ("EC25EFAR06A17M4G_01.001_02.002", |e| {
                matches!(e, RevisionError::TwoSubVersions { .. })
            }),
            ("EC25EF.AR06A17M4G", |e| {
                matches!(e, RevisionError::BadChar { found: '.', .. })
            }),
            ("ÉC25EFAR06A17M4G", |e| {
                matches!(e, RevisionError::BadChar { .. })
            }),
        ];
        for (text, ok) in cases {
            let e = Revision::parse(text).expect_err(text);
            assert!(ok(&e), "{text}: {e:?}");
            assert!(!e.to_string().is_empty());
        }
        let long = format!("EC25EFAR06A17M4G_{}", "X".repeat(200));
        assert!(matches!(
            Revision::parse(&long),
            Err(RevisionError::TooLong { .. })
        ));
        let long_tag = format!("EC25EFAR06A17M4G_{}", "X".repeat(30));
        assert!(matches!(
            Revision::parse(&long_tag),
            Err(RevisionError::TagTooLong { .. })
        ));
        let long_prefix = format!("{}R06A17M4G", "X".repeat(40));
        assert!(matches!(
            Revision::parse(&long_prefix),
            Err(RevisionError::PrefixTooLong { .. })
        ));
    }

    #[test]
    fn tag_kinds() {
        let r = p("EM20GRAR01A04V01M4G_factory");
        assert!(r.is_factory() && !r.is_beta());
        assert!(r.build_tags().is_empty());
        let r = p("RM500QGLAAR01A01M4G_BETA_20200428F");
        assert!(r.is_beta());
        assert_eq!(r.build_tags(), ["BETA", "20200428F"]);
        assert_eq!(tag_kind("LNV"), TagKind::Flavour);
    }

    fn valid_revision() -> impl Strategy<Value = String> {
        let prefix = prop_oneof![
            (proptest::sample::select(KNOWN_MODELS), "[A-Z]{0,6}")
                .prop_map(|(m, v)| format!("{m}{v}")),
            "[A-Z][A-Z0-9]{0,12}",
        ];
        let sub = prop_oneof![
            (0u32..100, 0u32..1000).prop_map(|(a, b)| format!("{a:02}.{b:03}")),
            (0u32..100, 0u32..1000, 0u32..100)
                .prop_map(|(a, b, c)| format!("{a:02}.{b:03}.{c:02}")),
            (0u32..100, 0u32..1000).prop_map(|(a, b)| format!("{a:02}.{b:03}.{a:02}.{b:03}")),
        ];
        let tags = proptest::collection::vec("[A-Za-z0-9]{1,10}", 0..3);
        (
            prefix,
            0u8..100,
            0u8..100,
            "[A-Z0-9]{0,6}",
            proptest::option::of(sub),
            tags,
            any::<bool>(),
        )
            .prop_map(|(prefix, r, a, suffix, sub, tags, sub_first)| {
                let mut s = format!("{prefix}R{r:02}A{a:02}{suffix}");
                let mut parts: Vec<String> = tags;
                if let Some(sub) = sub {
                    if sub_first {
                        parts.insert(0, sub);
                    } else {
                        parts.push(sub);
                    }
                }
                for part in parts {
                    s.push('_');
                    s.push_str(&part);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = Revision::parse(&s);
            let _ = Revision::from_at_reply(&s);
        }

        #[test]
        fn parse_never_panics_on_revision_like(s in "[A-Za-z0-9_.:R A]{0,60}") {
            let _ = Revision::parse(&s);
        }

        #[test]
        fn display_round_trips(s in valid_revision()) {
            let r = Revision::parse(&s);
            // A generated prefix may itself contain an R<nn>A<nn>; such strings are still
            // parsed, only differently split.
            if let Ok(r) = r {
                let again = Revision::parse(&r.to_string()).unwrap();
                prop_assert_eq!(&again, &r);
                prop_assert_eq!(again.to_string(), r.to_string());
            }
        }

        #[test]
        fn generated_revisions_parse_to_their_parts(
            model in proptest::sample::select(KNOWN_MODELS),
            variant in "[A-Z]{1,5}",
            r in 0u8..100, a in 0u8..100,
            sub in proptest::option::of((0u32..100, 0u32..1000)),
        ) {
            let mut s = format!("{model}{variant}R{r:02}A{a:02}M4G");
            if let Some((x, y)) = sub { s.push_str(&format!("_{x:02}.{y:03}.{x:02}.{y:03}")); }
            let parsed = Revision::parse(&s).unwrap();
            prop_assert_eq!((parsed.baseline, parsed.release), (r, a));
            prop_assert_eq!(parsed.prefix(), format!("{model}{variant}"));
            prop_assert_eq!(parsed.to_string(), s.clone());
            // Lower case parses to the same core.
            let lower = Revision::parse(&s.to_lowercase()).unwrap();
            prop_assert_eq!(lower, parsed);
        }
    }
}
