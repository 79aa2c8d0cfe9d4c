//! What kind of firmware package this is, where its XMLs and programmer are, and which choices
//! the person has to make (PROTOCOLS.md §7.1–7.3). Pure logic over [`PackageFiles`]: a folder and
//! a zip are discovered the same way, and the result never depends on the filesystem's order.
//!
//! Layouts:
//! - [`LayoutKind::QuectelFirehose`]: `md5.txt`, `contents.xml`, `update/` with the images and
//!   `update/firehose/` with the programmer and the XMLs (images referenced as `..\name`);
//! - [`LayoutKind::SmartModule`]: the same files flat in one folder;
//! - [`LayoutKind::OldPartitionNand`]: QFlash-era `update/partition_nand.xml` + images, without
//!   Firehose XMLs — described, but qrescue cannot plan it;
//! - [`LayoutKind::EmmcUfs`]: ptool sets `rawprogram0..N.xml` / `patch0..N.xml` (one per LUN).
//!
//! The package root may sit inside one top folder (a zip of `EC25EFAR06A08M4G_01.001.01.001/`);
//! every path in a [`Discovery`] is relative to the [`PackageFiles`] root and can be opened as is.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::package::rawprogram::{nand_geometry_from_name, PackagePath};
use crate::package::source::{join_relative, parent_dir, PackageFile, PackageFiles};
use crate::{Error, ErrorKind};

/// Programmer file patterns in QFirehose's order of preference (PROTOCOLS.md §7.1).
pub const PROGRAMMER_PATTERNS: &[&str] = &[
    "prog_nand_firehose_*.mbn",
    "prog_emmc_firehose_*.mbn",
    "prog_firehose_*.mbn",
    "prog_firehose_*.elf",
    "firehose-prog*.mbn",
    "prog_*.mbn",
    "xbl_s_devprg_ns_SA52X*.melf",
];

/// Largest contents.xml read for revision hints.
const MAX_CONTENTS_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayoutKind {
    QuectelFirehose,
    SmartModule,
    OldPartitionNand,
    EmmcUfs,
}

impl LayoutKind {
    /// A sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            LayoutKind::QuectelFirehose => {
                "Quectel Firehose package: update/firehose/ holds the programmer and XMLs, the images sit in update/"
            }
            LayoutKind::SmartModule => {
                "Quectel smart-module package: programmer, XMLs and images in one folder"
            }
            LayoutKind::OldPartitionNand => {
                "older QFlash-era package: update/partition_nand.xml and images, but no Firehose rawprogram/patch XML"
            }
            LayoutKind::EmmcUfs => {
                "eMMC/UFS package: rawprogram0..N.xml and patch0..N.xml, one pair per LUN"
            }
        }
    }
}

/// A file that matches a programmer pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgrammerCandidate {
    pub path: String,
    /// The best (first) pattern it matches.
    pub pattern: String,
    /// Index of that pattern in [`PROGRAMMER_PATTERNS`] (0 is preferred).
    pub rank: usize,
    pub size: u64,
}

/// Which programmer qrescue would upload, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProgrammerChoice {
    Chosen {
        path: String,
        pattern: String,
        reason: String,
    },
    /// Several files match the best pattern: the person must name one.
    Ambiguous {
        pattern: String,
        paths: Vec<String>,
        reason: String,
    },
    NotFound {
        reason: String,
    },
}

impl ProgrammerChoice {
    pub fn path(&self) -> Option<&str> {
        match self {
            ProgrammerChoice::Chosen { path, .. } => Some(path),
            _ => None,
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            ProgrammerChoice::Chosen { reason, .. }
            | ProgrammerChoice::Ambiguous { reason, .. }
            | ProgrammerChoice::NotFound { reason } => reason,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    /// `_update`: leaves device-unique areas alone.
    Update,
    /// `_factory`: rewrites everything, EFS/NV included.
    Factory,
    /// Neither word in the name.
    Plain,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Update => "update",
            Flavour::Factory => "factory",
            Flavour::Plain => "plain",
        }
    }
}

/// NAND geometry read from an XML name (`p2K_b128K`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GeometryHint {
    pub token: String,
    pub page_size: u32,
    pub block_size: u32,
    pub pages_per_block: u32,
}

/// One rawprogram file and the patch file that goes with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XmlPart {
    /// The LUN / physical partition number from the name (`rawprogram4.xml` → 4).
    pub lun: Option<u32>,
    pub rawprogram: String,
    pub patch: Option<String>,
}

/// One complete set of flashing instructions (one flavour / geometry / variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct XmlSet {
    /// Stable identifier: the rawprogram name without `.xml`, LUN digits written `{N}`
    /// (`rawprogram_nand_p2K_b128K_update`, `rawprogram{N}`, `rawprogram{N}_secboot`).
    pub id: String,
    pub flavour: Flavour,
    pub geometry: Option<GeometryHint>,
    /// Sorted by LUN.
    pub parts: Vec<XmlPart>,
    /// A `_factory` set rewrites device-unique data (EFS/NV, calibration, IMEI).
    pub overwrites_device_data: bool,
    pub warnings: Vec<String>,
}

impl XmlSet {
    /// Every XML file of the set (rawprogram then patch, per LUN).
    pub fn files(&self) -> Vec<&str> {
        let mut v = Vec::new();
        for p in &self.parts {
            v.push(p.rawprogram.as_str());
            if let Some(x) = &p.patch {
                v.push(x.as_str());
            }
        }
        v
    }

    /// One line for people: `rawprogram_nand_p2K_b128K_update (update, p2K_b128K): 1 rawprogram, 1 patch`.
    pub fn summary(&self) -> String {
        let patches = self.parts.iter().filter(|p| p.patch.is_some()).count();
        let mut s = format!("{} ({}", self.id, self.flavour.as_str());
        if let Some(g) = &self.geometry {
            s.push_str(", ");
            s.push_str(&g.token);
        }
        s.push_str(&format!(
            "): {} rawprogram, {} patch",
            self.parts.len(),
            patches
        ));
        if self.overwrites_device_data {
            s.push_str(" — overwrites device-unique data");
        }
        s
    }
}

/// A string that may name the package's firmware revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionHint {
    pub text: String,
    /// Where it was found: `zip name`, `folder name`, `package root folder`,
    /// `contents.xml product_name`, …
    pub source: String,
}

/// Everything discovery found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    /// The package as [`PackageFiles::describe`] says.
    pub source: String,
    /// The package root inside the source (`""`, or the top folder of a zip).
    pub root: String,
    pub kind: LayoutKind,
    pub kind_description: String,
    /// The folder holding the XMLs and the programmer.
    pub xml_dir: String,
    /// qrescue can plan a flash from this package (it has rawprogram XML).
    pub plannable: bool,
    pub md5_txt: Option<String>,
    pub contents_xml: Option<String>,
    pub partition_nand_xml: Option<String>,
    /// Every file that matches a programmer pattern, best first.
    pub programmers: Vec<ProgrammerCandidate>,
    pub programmer: ProgrammerChoice,
    /// Sorted by id.
    pub sets: Vec<XmlSet>,
    /// More than one set: the person must choose with [`choose`].
    pub needs_choice: bool,
    pub revision_hints: Vec<RevisionHint>,
    /// Things worth telling people (ignored folders, unmatched patch files, …).
    pub notes: Vec<String>,
}

impl Discovery {
    /// Resolve a file name from an XML of this package (`..\sbl1.mbn` in
    /// `update/firehose/rawprogram_….xml`) to a package-relative path, refusing anything that
    /// leaves the package root.
    pub fn resolve(&self, xml_path: &str, name: &PackagePath) -> crate::Result<String> {
        let full = join_relative(parent_dir(xml_path), name)?;
        if self.root.is_empty() || full.starts_with(&format!("{}/", self.root)) {
            Ok(full)
        } else {
            Err(Error::failure(
                format!(
                    "{xml_path} names {name}, which lies outside the package folder {}",
                    self.root
                ),
                "a package may only use its own files",
                "Refusing this package. Check where it came from and use the vendor's original",
            ))
        }
    }

    /// The only set, when there is no choice to make.
    pub fn only_set(&self) -> Option<&XmlSet> {
        match self.sets.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------------------------ names

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `*` glob, ASCII case-insensitive.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p = lower(pattern);
    let n = lower(name);
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == n;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !n.starts_with(first) || n.len() < first.len() + last.len() || !n.ends_with(last) {
        return false;
    }
    let mut rest = &n[first.len()..n.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XmlRole {
    Raw,
    Patch,
}

#[derive(Debug, Clone)]
struct XmlName {
    role: XmlRole,
    /// Name without `.xml`, LUN digits as `{N}`.
    key: String,
    lun: Option<u32>,
    /// Lower-case words of the name after the prefix, without the LUN.
    tokens: Vec<String>,
}

/// Recognise `rawprogram*.xml`, `firehose-rawprogram*.xml` and `patch*.xml` names.
fn classify_xml(name: &str) -> Option<XmlName> {
    let l = lower(name);
    let stem_len = l.strip_suffix(".xml")?.len();
    let (role, prefix_len) = if l.starts_with("firehose-rawprogram") {
        (XmlRole::Raw, "firehose-rawprogram".len())
    } else if l.starts_with("rawprogram") {
        (XmlRole::Raw, "rawprogram".len())
    } else if l.starts_with("patch") {
        (XmlRole::Patch, "patch".len())
    } else {
        return None;
    };
    let rest = &name[prefix_len..stem_len];
    let firehose_prefix = l.starts_with("firehose-");
    let ok_start = rest.is_empty() && firehose_prefix
        || rest.starts_with(['_', '-'])
        || rest.starts_with(|c: char| c.is_ascii_digit());
    if !ok_start {
        return None;
    }
    let lead = rest.bytes().take_while(u8::is_ascii_digit).count();
    let trail = rest.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (lun, templ) = if lead > 0 {
        (
            rest[..lead].parse::<u32>().ok(),
            format!("{{N}}{}", &rest[lead..]),
        )
    } else if trail > 0 && trail < rest.len() {
        let at = rest.len() - trail;
        (
            rest[at..].parse::<u32>().ok(),
            format!("{}{{N}}", &rest[..at]),
        )
    } else {
        (None, rest.to_string())
    };
    // A LUN too long to parse is not a LUN.
    let (lun, templ) = if (lead > 0 || trail > 0) && lun.is_none() {
        (None, rest.to_string())
    } else {
        (lun, templ)
    };
    let tokens = templ
        .replace("{N}", "")
        .split(['_', '-', '.'])
        .filter(|t| !t.is_empty())
        .map(lower)
        .collect();
    Some(XmlName {
        role,
        key: format!("{}{}", &name[..prefix_len], templ),
        lun,
        tokens,
    })
}

fn flavour_of(tokens: &[String]) -> Flavour {
    if tokens.iter().any(|t| t == "factory") {
        Flavour::Factory
    } else if tokens.iter().any(|t| t == "update") {
        Flavour::Update
    } else {
        Flavour::Plain
    }
}

fn geometry_of(name: &str) -> Option<GeometryHint> {
    let (page, block) = nand_geometry_from_name(name)?;
    Some(GeometryHint {
        token: format!("p{}K_b{}K", page / 1024, block / 1024),
        page_size: page,
        block_size: block,
        pages_per_block: block / page,
    })
}

/// Substrings of `s` that look like a Quectel revision (`…R07A08…`), e.g.
/// `EG25GGBR07A08M2G_30.006.30.006` from `quectel-EG25GGBR07A08M2G_30.006.30.006`.
pub fn revision_candidates(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        let word = word.trim_matches(['.', '_']);
        let b = word.as_bytes();
        let has_marker = b.windows(6).any(|w| {
            w[0] == b'R'
                && w[1].is_ascii_digit()
                && w[2].is_ascii_digit()
                && w[3] == b'A'
                && w[4].is_ascii_digit()
                && w[5].is_ascii_digit()
        });
        if has_marker && word.len() <= 80 && !out.iter().any(|o| o == word) {
            out.push(word.to_string());
        }
    }
    out
}

fn contents_hints(bytes: &[u8]) -> Result<Vec<RevisionHint>, String> {
    use quick_xml::events::Event;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = quick_xml::Reader::from_reader(bytes);
    let mut buf = Vec::new();
    let mut current = String::new();
    let mut out: Vec<RevisionHint> = Vec::new();
    for _ in 0..200_000 {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("contents.xml is not readable XML: {e}"))?;
        match ev {
            Event::Start(ref e) => {
                current = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
            }
            Event::End(_) => current.clear(),
            Event::Text(ref t) => {
                let text = String::from_utf8_lossy(t.as_ref()).trim().to_string();
                if text.is_empty() || text.len() > 200 {
                    continue;
                }
                if matches!(current.as_str(), "product_name" | "build_id") {
                    out.push(RevisionHint {
                        text: text.clone(),
                        source: format!("contents.xml {current}"),
                    });
                }
                for c in revision_candidates(&text) {
                    out.push(RevisionHint {
                        text: c,
                        source: "contents.xml".into(),
                    });
                }
            }
            Event::Eof => return Ok(out),
            _ => {}
        }
        buf.clear();
        if out.len() > 50 {
            break;
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------------------------ discovery

fn depth(dir: &str) -> usize {
    if dir.is_empty() {
        0
    } else {
        dir.split('/').count()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Strip `suffix` (lower case, `/`-separated folder names) from the end of `dir`, ignoring case.
fn strip_dir_suffix<'a>(dir: &'a str, suffix: &str) -> Option<&'a str> {
    let l = lower(dir);
    if l == suffix {
        return Some("");
    }
    if l.ends_with(&format!("/{suffix}")) {
        return Some(&dir[..dir.len() - suffix.len() - 1]);
    }
    None
}

fn ignored(path: &str) -> bool {
    path.split('/').any(|c| c == "__MACOSX")
}

/// The folder that holds the package: the shallowest folder with md5.txt, contents.xml,
/// update/firehose/, update/partition_nand.xml or rawprogram XML.
fn find_root(files: &[PackageFile], describe: &str) -> crate::Result<(String, Vec<String>)> {
    let mut hints: BTreeSet<String> = BTreeSet::new();
    for f in files.iter().filter(|f| !ignored(&f.path)) {
        let dir = parent_dir(&f.path);
        let name = lower(file_name(&f.path));
        if let Some(r) = strip_dir_suffix(dir, "update/firehose") {
            hints.insert(r.to_string());
        } else if name == "partition_nand.xml" && strip_dir_suffix(dir, "update").is_some() {
            hints.insert(strip_dir_suffix(dir, "update").unwrap_or("").to_string());
        } else if name == "md5.txt"
            || name == "contents.xml"
            || classify_xml(file_name(&f.path)).is_some_and(|x| x.role == XmlRole::Raw)
        {
            hints.insert(dir.to_string());
        }
    }
    let Some(min) = hints.iter().map(|h| depth(h)).min() else {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("no firmware package found in {describe}"),
            "a package has md5.txt and update/firehose/ (Quectel), rawprogram*.xml files (eMMC/UFS, smart modules) or update/partition_nand.xml (older packages); none of these is there",
            "Give the package's top folder (or its .zip), the one holding md5.txt and update/",
        ));
    };
    let roots: Vec<&String> = hints.iter().filter(|h| depth(h) == min).collect();
    if roots.len() > 1 {
        return Err(Error::new(
            ErrorKind::Usage,
            format!(
                "{describe} holds several packages: {}",
                roots
                    .iter()
                    .map(|r| if r.is_empty() { "." } else { r.as_str() })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "qrescue flashes one package at a time and will not guess which",
            "Give the folder of the one package you mean",
        ));
    }
    let root = roots[0].clone();
    let deeper: Vec<String> = hints.iter().filter(|h| depth(h) > min).cloned().collect();
    Ok((root, deeper))
}

/// Direct children of `dir` (case-insensitive folder match), as (path, size).
fn children<'a>(files: &'a [PackageFile], dir: &str) -> Vec<&'a PackageFile> {
    let ld = lower(dir);
    files
        .iter()
        .filter(|f| lower(parent_dir(&f.path)) == ld)
        .collect()
}

fn raw_names(files: &[&PackageFile]) -> Vec<(String, XmlName)> {
    files
        .iter()
        .filter_map(|f| classify_xml(file_name(&f.path)).map(|x| (f.path.clone(), x)))
        .collect()
}

fn pick_patch(
    raw: &XmlName,
    raw_path: &str,
    patches: &[(String, XmlName)],
) -> (Option<String>, Option<String>) {
    let strip = |t: &[String]| -> BTreeSet<String> {
        t.iter()
            .filter(|t| !matches!(t.as_str(), "update" | "factory" | "nand"))
            .cloned()
            .collect()
    };
    let raw_geo = geometry_of(raw_path);
    let raw_flav = flavour_of(&raw.tokens);
    let raw_tokens = strip(&raw.tokens);
    let mut best: Vec<(usize, &String)> = Vec::new();
    for (path, p) in patches {
        if p.lun.is_some() != raw.lun.is_some() || (p.lun.is_some() && p.lun != raw.lun) {
            continue;
        }
        let pg = geometry_of(path);
        if pg.is_some() && raw_geo.is_some() && pg != raw_geo {
            continue;
        }
        let pf = flavour_of(&p.tokens);
        if pf != Flavour::Plain && pf != raw_flav {
            continue;
        }
        let score = 1
            + strip(&p.tokens).intersection(&raw_tokens).count()
            + usize::from(pf == raw_flav && pf != Flavour::Plain);
        match best.first() {
            Some((s, _)) if *s > score => {}
            Some((s, _)) if *s == score => best.push((score, path)),
            _ => best = vec![(score, path)],
        }
    }
    match best.as_slice() {
        [] => (None, None),
        [(_, one)] => (Some((*one).clone()), None),
        many => (
            None,
            Some(format!(
                "several patch files could go with {}: {}; none was picked",
                file_name(raw_path),
                many.iter()
                    .map(|(_, p)| file_name(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        ),
    }
}

fn build_sets(xmls: &[(String, XmlName)], notes: &mut Vec<String>) -> Vec<XmlSet> {
    let patches: Vec<(String, XmlName)> = xmls
        .iter()
        .filter(|(_, x)| x.role == XmlRole::Patch)
        .cloned()
        .collect();
    let mut groups: BTreeMap<String, Vec<(&String, &XmlName)>> = BTreeMap::new();
    for (path, x) in xmls.iter().filter(|(_, x)| x.role == XmlRole::Raw) {
        groups.entry(x.key.clone()).or_default().push((path, x));
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut sets = Vec::new();
    for (key, mut members) in groups {
        members.sort_by(|a, b| (a.1.lun, a.0).cmp(&(b.1.lun, b.0)));
        let mut warnings = Vec::new();
        let mut parts = Vec::new();
        for (path, x) in &members {
            let (patch, warn) = pick_patch(x, path, &patches);
            if let Some(w) = warn {
                warnings.push(w);
            }
            if let Some(p) = &patch {
                used.insert(p.clone());
            }
            parts.push(XmlPart {
                lun: x.lun,
                rawprogram: (*path).clone(),
                patch,
            });
        }
        let first = members[0];
        let flavour = flavour_of(&first.1.tokens);
        if flavour == Flavour::Factory {
            warnings.push(
                "a _factory set erases and rewrites the whole flash, including the EFS/NV area that holds this modem's own calibration and IMEI; back it up first, and prefer the _update set".into(),
            );
        }
        let mut lun_seen = BTreeSet::new();
        for p in &parts {
            if let Some(l) = p.lun {
                if !lun_seen.insert(l) {
                    warnings.push(format!("LUN {l} appears in more than one file of this set"));
                }
            }
        }
        sets.push(XmlSet {
            id: key.clone(),
            flavour,
            geometry: geometry_of(first.0),
            parts,
            overwrites_device_data: flavour == Flavour::Factory,
            warnings,
        });
    }
    for (p, _) in &patches {
        if !used.contains(p) {
            notes.push(format!("{p} goes with no rawprogram file"));
        }
    }
    sets
}

fn programmers(files: &[&PackageFile]) -> (Vec<ProgrammerCandidate>, ProgrammerChoice) {
    let mut cands: Vec<ProgrammerCandidate> = files
        .iter()
        .filter_map(|f| {
            let name = file_name(&f.path);
            PROGRAMMER_PATTERNS
                .iter()
                .position(|p| glob_match(p, name))
                .map(|rank| ProgrammerCandidate {
                    path: f.path.clone(),
                    pattern: PROGRAMMER_PATTERNS[rank].to_string(),
                    rank,
                    size: f.size,
                })
        })
        .collect();
    cands.sort_by(|a, b| (a.rank, &a.path).cmp(&(b.rank, &b.path)));
    let Some(best) = cands.first() else {
        return (
            cands,
            ProgrammerChoice::NotFound {
                reason: format!(
                    "no file matches a programmer pattern ({})",
                    PROGRAMMER_PATTERNS.join(", ")
                ),
            },
        );
    };
    let top: Vec<&ProgrammerCandidate> = cands.iter().filter(|c| c.rank == best.rank).collect();
    let choice = if top.len() == 1 {
        let others: Vec<&str> = cands[1..].iter().map(|c| file_name(&c.path)).collect();
        let mut reason = format!(
            "{}: matches {}, the first of qrescue's programmer patterns that any file matches",
            file_name(&best.path),
            best.pattern
        );
        if !others.is_empty() {
            reason.push_str(&format!(" (also seen: {})", others.join(", ")));
        }
        ProgrammerChoice::Chosen {
            path: best.path.clone(),
            pattern: best.pattern.clone(),
            reason,
        }
    } else {
        ProgrammerChoice::Ambiguous {
            pattern: best.pattern.clone(),
            paths: top.iter().map(|c| c.path.clone()).collect(),
            reason: format!(
                "{} files match {}: {}; name the one for this modem's chip",
                top.len(),
                best.pattern,
                top.iter()
                    .map(|c| file_name(&c.path))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    };
    (cands, choice)
}

fn find_named(files: &[&PackageFile], name: &str) -> Option<String> {
    files
        .iter()
        .find(|f| file_name(&f.path).eq_ignore_ascii_case(name))
        .map(|f| f.path.clone())
}

/// Discover the package held by `files`.
pub fn discover(files: &dyn PackageFiles) -> crate::Result<Discovery> {
    let describe = files.describe();
    let all = files.list()?;
    let (root, deeper) = find_root(&all, &describe)?;
    let mut notes = Vec::new();
    for d in deeper {
        notes.push(format!(
            "{d} also looks like part of a package and is not used"
        ));
    }
    let in_root = children(&all, &root);
    let update_dir = join(&root, "update");
    let in_update = children(&all, &update_dir);
    let fw_dir = join(&root, "update/firehose");
    let in_fw = children(&all, &fw_dir);

    let fw_xml = raw_names(&in_fw);
    let root_xml = raw_names(&in_root);
    let has_raw = |x: &[(String, XmlName)]| x.iter().any(|(_, n)| n.role == XmlRole::Raw);
    let partition_nand_xml = find_named(&in_update, "partition_nand.xml")
        .or_else(|| find_named(&in_root, "partition_nand.xml"));

    if has_raw(&fw_xml) && has_raw(&root_xml) {
        notes.push(format!(
            "the rawprogram files in {} are not used: update/firehose/ has its own",
            if root.is_empty() {
                "the package folder"
            } else {
                root.as_str()
            }
        ));
    }
    let (kind, xml_dir, xmls, prog_files) = if has_raw(&fw_xml) {
        let actual = in_fw
            .first()
            .map(|f| parent_dir(&f.path).to_string())
            .unwrap_or(fw_dir);
        (LayoutKind::QuectelFirehose, actual, fw_xml, in_fw)
    } else if has_raw(&root_xml) {
        let numbered = root_xml
            .iter()
            .any(|(_, x)| x.role == XmlRole::Raw && x.lun.is_some());
        let kind = if numbered {
            LayoutKind::EmmcUfs
        } else {
            LayoutKind::SmartModule
        };
        (kind, root.clone(), root_xml, in_root)
    } else if partition_nand_xml.is_some() {
        let dir = if in_update.is_empty() {
            root.clone()
        } else {
            parent_dir(&in_update[0].path).to_string()
        };
        let progs = if in_update.is_empty() {
            in_root
        } else {
            in_update
        };
        (LayoutKind::OldPartitionNand, dir, Vec::new(), progs)
    } else {
        return Err(Error::new(
            ErrorKind::Failure,
            format!(
                "the package in {describe}{} has no flashing instructions",
                if root.is_empty() {
                    String::new()
                } else {
                    format!(" (folder {root})")
                }
            ),
            "qrescue flashes what a package's rawprogram*.xml and patch*.xml files describe; it found none (not in update/firehose/, not in the package folder) and no update/partition_nand.xml",
            "Check that the package was unpacked completely, or get the full Firehose package for this module",
        ));
    };

    let mut sets = build_sets(&xmls, &mut notes);
    sets.sort_by(|a, b| a.id.cmp(&b.id));
    let plannable = !sets.is_empty();
    if kind == LayoutKind::OldPartitionNand {
        notes.push(
            "this package has no rawprogram/patch XML, so qrescue cannot plan a flash from it; get the Firehose package for this module (one with update/firehose/)".into(),
        );
    }
    let (programmers, programmer) = programmers(&prog_files);

    let md5_txt = find_named(&children(&all, &root), "md5.txt");
    let contents_xml = find_named(&children(&all, &root), "contents.xml");

    let mut revision_hints: Vec<RevisionHint> = Vec::new();
    let mut add_hint = |h: RevisionHint| {
        if !revision_hints.iter().any(|o| o.text == h.text) && revision_hints.len() < 20 {
            revision_hints.push(h);
        }
    };
    if let Some(origin) = files.origin_name() {
        let source = if describe.starts_with("zip ") {
            "zip name"
        } else {
            "folder name"
        };
        for c in revision_candidates(&origin) {
            add_hint(RevisionHint {
                text: c,
                source: source.into(),
            });
        }
    }
    if !root.is_empty() {
        for c in revision_candidates(file_name(&root)) {
            add_hint(RevisionHint {
                text: c,
                source: "package root folder".into(),
            });
        }
    }
    if let Some(c) = &contents_xml {
        match files
            .read_all(c, MAX_CONTENTS_BYTES)
            .map_err(|e| e.what)
            .and_then(|b| contents_hints(&b))
        {
            Ok(hints) => hints.into_iter().for_each(&mut add_hint),
            Err(e) => notes.push(format!("{c} was not read for revision hints: {e}")),
        }
    }

    Ok(Discovery {
        source: describe,
        root,
        kind,
        kind_description: kind.describe().to_string(),
        xml_dir,
        plannable,
        md5_txt,
        contents_xml,
        partition_nand_xml,
        programmers,
        programmer,
        needs_choice: sets.len() > 1,
        sets,
        revision_hints,
        notes,
    })
}

/// Pick one XML set by the person's words: a set id, a flavour (`update`, `factory`, `plain`),
/// a geometry (`p2K_b128K`) or any word of the id — all words must fit exactly one set.
pub fn choose<'a>(d: &'a Discovery, which: &str) -> crate::Result<&'a XmlSet> {
    let words: Vec<String> = which
        .split([' ', ',', '+'])
        .filter(|w| !w.is_empty())
        .map(lower)
        .collect();
    let list = || {
        d.sets
            .iter()
            .map(|s| s.summary())
            .collect::<Vec<_>>()
            .join("; ")
    };
    if d.sets.is_empty() {
        return Err(Error::failure(
            format!("{} has no rawprogram XML to choose from", d.source),
            "qrescue flashes what a rawprogram XML describes",
            "Use a Firehose package for this module",
        ));
    }
    if let Some(s) = d.sets.iter().find(|s| lower(&s.id) == lower(which.trim())) {
        return Ok(s);
    }
    let fits = |s: &XmlSet, w: &str| -> bool {
        let id_words: Vec<String> = lower(&s.id)
            .replace("{n}", "")
            .split(['_', '-'])
            .map(str::to_string)
            .collect();
        s.flavour.as_str() == w
            || (w == "none" && s.flavour == Flavour::Plain)
            || s.geometry.as_ref().is_some_and(|g| lower(&g.token) == w)
            || id_words.iter().any(|i| i == w)
    };
    let hits: Vec<&XmlSet> = d
        .sets
        .iter()
        .filter(|s| !words.is_empty() && words.iter().all(|w| fits(s, w)))
        .collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::usage(
            format!("no XML set of the package fits {which:?}"),
            format!("Choose one of: {}", list()),
        )),
        many => Err(Error::usage(
            format!(
                "{} XML sets fit {which:?}: {}",
                many.len(),
                many.iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!("Be more specific; the sets are: {}", list()),
        )),
    }
}

#[cfg(test)]
mod tests;
