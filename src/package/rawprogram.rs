//! Typed parsing of rawprogram and patch XML (PROTOCOLS.md §3, §2.5–2.8).
//!
//! [`parse_rawprogram`] turns a rawprogram file into [`RawEntry`] values in file order: Quectel NAND
//! files interleave `<erase>` and `<program>` and repeat erases at the end, and that order is part
//! of the flash recipe (§8), so it is kept exactly. [`parse_patch`] turns a patch file into
//! [`PatchEntry`] values.
//!
//! Decisions:
//! - **Nothing is dropped silently.** Elements inside `<data>` other than `<program>` and `<erase>`
//!   (a `<read>`, a Quectel `<vendor>` tag, a `<Program>` spelt in another case) are kept as
//!   [`RawEntry::Other`] with all their attributes, so the safety plan sees them and decides
//!   (refuse, or pass a `vendor="quectel"` command verbatim). Comments are not elements and are
//!   skipped. A patch file may only hold `<patch>` elements: anything else there is an error,
//!   because no tool defines another patch operation.
//! - **Entries are flat.** An element nested inside an entry is an error.
//! - **Attributes are matched ignoring ASCII case**, and an attribute given twice in different
//!   case (`start_sector` and `START_SECTOR`) is an error: the device might read the other one.
//!   Attributes qrescue does not interpret are kept in `extra`, in document order.
//! - **No control characters** in any attribute name or value: labels, file names and `what`
//!   texts end up on a terminal, and an escape sequence there could repaint the screen.
//! - **Numbers** are decimal, decimal with a trailing dot (`640.`, the Trace32 "this is decimal"
//!   mark) or `0x` hexadecimal. Negative numbers, overflow and anything else are errors that name
//!   the attribute and the entry.
//! - **Symbolic start sectors** (`NUM_DISK_SECTORS-33.`) are kept verbatim as
//!   [`SectorExpr::Symbolic`]; they must mention `NUM_DISK_SECTORS` or `NUM_DISK_BLOCKS` and use
//!   only expression characters. Evaluation belongs to `package::expr` and the programmer.
//! - **File names** are kept raw and also as a [`PackagePath`]: `\` becomes `/`, `.` and empty
//!   components are dropped, `..` stays visible, and absolute paths, drive letters, colons, NUL
//!   and control characters are rejected. Nothing here touches the filesystem; the package layer
//!   resolves and confines paths.
//! - **Display names**: the label if there is one; otherwise the file name without its extension
//!   (`..\sbl1.mbn` → `sbl1`); otherwise, for an unlabelled erase, the name of a program entry
//!   of the same file at the same place (the EG25-G erase of sector 0 is shown as `sbl1`);
//!   otherwise the location (`p0 sector 13952`). Display names are for people only.
//! - Entry indexes are 0-based in the structs and shown 1-based in messages ("entry 3").

use std::fmt;

use crate::protocol::firehose::xml::{parse_elements, Element, Limits, XmlError};

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// A sector address: a literal number or a symbolic expression kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SectorExpr {
    /// A plain number (written as `640`, `640.` or `0x280` in the file).
    Literal(u64),
    /// An expression such as `NUM_DISK_SECTORS-33.`, exactly as written.
    Symbolic(String),
}

impl SectorExpr {
    /// The number, if this is a literal.
    pub fn literal(&self) -> Option<u64> {
        match self {
            SectorExpr::Literal(n) => Some(*n),
            SectorExpr::Symbolic(_) => None,
        }
    }

    pub fn is_symbolic(&self) -> bool {
        matches!(self, SectorExpr::Symbolic(_))
    }
}

impl fmt::Display for SectorExpr {
    /// A literal prints in decimal (what hosts send); a symbolic expression prints verbatim.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SectorExpr::Literal(n) => write!(f, "{n}"),
            SectorExpr::Symbolic(s) => f.write_str(s),
        }
    }
}

/// A relative path inside a firmware package, normalised but not resolved.
///
/// Components are separated by `/` in [`PackagePath::as_str`]. `..` components are kept so the
/// package layer can decide how far above the XML's folder a file may live (Quectel packages
/// use exactly one level: `..\sbl1.mbn`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackagePath {
    text: String,
}

/// Why a file name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// Contains a NUL byte.
    Nul,
    /// Contains another control character.
    Control,
    /// Starts at the root of a filesystem (`/x`, `\x`, `\\server\x`).
    Absolute,
    /// Contains a colon (a Windows drive `C:` or a stream name).
    Colon,
    /// Names a folder (`x/`, `..`, `.`) or nothing at all.
    NotAFile,
    /// Longer than 4096 bytes or a component longer than 255 bytes.
    TooLong,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::Nul => "contains a NUL character",
            PathProblem::Control => "contains control characters",
            PathProblem::Absolute => {
                "is an absolute path; package files must be relative to the XML's folder"
            }
            PathProblem::Colon => "contains a colon (a drive letter or stream name)",
            PathProblem::NotAFile => "does not name a file",
            PathProblem::TooLong => "is too long",
        })
    }
}

const MAX_PATH_BYTES: usize = 4096;
const MAX_COMPONENT_BYTES: usize = 255;

impl PackagePath {
    /// Normalise a file name from an XML attribute. `Ok(None)` for an empty name (ptool writes
    /// `filename=""` for partitions that have no image).
    pub fn parse(raw: &str) -> Result<Option<PackagePath>, PathProblem> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathProblem::TooLong);
        }
        if raw.contains('\0') {
            return Err(PathProblem::Nul);
        }
        if raw.chars().any(char::is_control) {
            return Err(PathProblem::Control);
        }
        if raw.contains(':') {
            return Err(PathProblem::Colon);
        }
        let unified = raw.replace('\\', "/");
        if unified.starts_with('/') {
            return Err(PathProblem::Absolute);
        }
        if unified.ends_with('/') {
            return Err(PathProblem::NotAFile);
        }
        let mut parts: Vec<&str> = Vec::new();
        for c in unified.split('/') {
            if c.is_empty() || c == "." {
                continue;
            }
            if c.len() > MAX_COMPONENT_BYTES {
                return Err(PathProblem::TooLong);
            }
            parts.push(c);
        }
        match parts.last() {
            None => return Err(PathProblem::NotAFile),
            Some(last) if *last == ".." || last.trim().is_empty() => {
                return Err(PathProblem::NotAFile)
            }
            Some(_) => {}
        }
        Ok(Some(PackagePath {
            text: parts.join("/"),
        }))
    }

    /// The normalised path with `/` separators, e.g. `../sbl1.mbn`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The components in order (`..` included).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.text.split('/')
    }

    /// The last component, e.g. `sbl1.mbn`.
    pub fn file_name(&self) -> &str {
        self.text.rsplit('/').next().unwrap_or(&self.text)
    }

    /// The file name without its last extension, e.g. `sbl1` for `../sbl1.mbn`.
    pub fn stem(&self) -> &str {
        let name = self.file_name();
        match name.rfind('.') {
            Some(0) | None => name,
            Some(i) => &name[..i],
        }
    }

    /// How many folders above the XML's folder this path reaches at its highest point, read
    /// lexically: `sbl1.mbn` → 0, `../sbl1.mbn` → 1, `a/../../x` → 1.
    pub fn levels_above_base(&self) -> usize {
        let mut depth: isize = 0;
        let mut min: isize = 0;
        for c in self.components() {
            if c == ".." {
                depth -= 1;
                min = min.min(depth);
            } else {
                depth += 1;
            }
        }
        min.unsigned_abs()
    }

    /// The path as a relative `PathBuf` (for the package layer to join onto a folder and then
    /// confine).
    pub fn to_path_buf(&self) -> std::path::PathBuf {
        self.components().collect()
    }
}

impl fmt::Display for PackagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One `<program>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramEntry {
    /// Position among the file's entries (0-based, all kinds counted).
    pub index: usize,
    /// Line of the element in the file, when known.
    pub line: Option<u32>,
    /// SECTOR_SIZE_IN_BYTES (a power of two, 512..=65536).
    pub sector_size: u32,
    /// num_partition_sectors; 0 means "size from the file" (ptool's grow entry).
    pub num_partition_sectors: u64,
    pub physical_partition_number: u32,
    pub start_sector: SectorExpr,
    /// start_byte_hex exactly as written (informational; may be an expression).
    pub start_byte_hex: Option<String>,
    /// file_sector_offset (0 when absent).
    pub file_sector_offset: u64,
    /// The filename attribute exactly as written (possibly empty).
    pub filename: String,
    /// The normalised file name; `None` when the entry names no file.
    pub path: Option<PackagePath>,
    /// The label attribute, if present (Quectel EG25-G files have none).
    pub label: Option<String>,
    /// A name to show people (see the module notes).
    pub display_name: String,
    /// sparse="true".
    pub sparse: bool,
    /// PAGES_PER_BLOCK (NAND).
    pub pages_per_block: Option<u32>,
    /// last_sector (NAND).
    pub last_sector: Option<u64>,
    pub readbackverify: Option<bool>,
    pub partofsingleimage: Option<bool>,
    /// size_in_KB exactly as written (ptool writes a decimal fraction such as `16.5`).
    pub size_in_kb: Option<String>,
    /// Every other attribute, in document order.
    pub extra: Vec<(String, String)>,
}

impl ProgramEntry {
    /// Whether this entry names an image file.
    pub fn has_file(&self) -> bool {
        self.path.is_some()
    }

    /// The declared size in bytes (num_partition_sectors × sector size); `None` for a grow entry
    /// (num_partition_sectors = 0).
    pub fn declared_bytes(&self) -> Option<u64> {
        if self.num_partition_sectors == 0 {
            return None;
        }
        self.num_partition_sectors
            .checked_mul(u64::from(self.sector_size))
    }

    /// Whether this is a NAND entry (it carries PAGES_PER_BLOCK).
    pub fn is_nand(&self) -> bool {
        self.pages_per_block.is_some()
    }

    /// size_in_KB converted to bytes, when it is a plain decimal that gives whole bytes.
    pub fn size_in_kb_bytes(&self) -> Option<u64> {
        self.size_in_kb.as_deref().and_then(kb_to_bytes)
    }

    /// Whether last_sector (when present) agrees with start_sector + num_partition_sectors − 1.
    /// `true` when there is nothing to compare.
    pub fn last_sector_consistent(&self) -> bool {
        range_consistent(
            Some(&self.start_sector),
            Some(self.num_partition_sectors),
            self.last_sector,
        )
    }
}

/// One `<erase>` entry. Every field is optional because real files differ: an erase without
/// num_partition_sectors or start_sector erases the whole physical partition (qdl), and an erase
/// without SECTOR_SIZE_IN_BYTES is skipped by QFirehose as a "whole disk" guard; such entries
/// are kept and flagged ([`EraseEntry::missing_sector_size`], [`EraseEntry::is_whole_partition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EraseEntry {
    pub index: usize,
    pub line: Option<u32>,
    pub sector_size: Option<u32>,
    pub num_partition_sectors: Option<u64>,
    pub physical_partition_number: Option<u32>,
    pub start_sector: Option<SectorExpr>,
    pub label: Option<String>,
    pub display_name: String,
    pub pages_per_block: Option<u32>,
    pub last_sector: Option<u64>,
    /// Every other attribute (Quectel's a_rawdata_start_sector, vendor, …), in document order.
    pub extra: Vec<(String, String)>,
}

impl EraseEntry {
    /// QFirehose skips erases without SECTOR_SIZE_IN_BYTES (its "erase whole disk" guard).
    pub fn missing_sector_size(&self) -> bool {
        self.sector_size.is_none()
    }

    /// Without a start or a length an erase covers the whole physical partition.
    pub fn is_whole_partition(&self) -> bool {
        self.start_sector.is_none() || self.num_partition_sectors.is_none()
    }

    pub fn is_nand(&self) -> bool {
        self.pages_per_block.is_some()
    }

    /// See [`ProgramEntry::last_sector_consistent`].
    pub fn last_sector_consistent(&self) -> bool {
        range_consistent(
            self.start_sector.as_ref(),
            self.num_partition_sectors,
            self.last_sector,
        )
    }
}

/// An element inside `<data>` that is neither `<program>` nor `<erase>`, kept whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherEntry {
    pub index: usize,
    pub line: Option<u32>,
    pub name: String,
    pub attrs: Vec<(String, String)>,
}

/// One entry of a rawprogram file, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawEntry {
    Program(ProgramEntry),
    Erase(EraseEntry),
    /// Kept so the safety plan sees it (see the module notes).
    Other(OtherEntry),
}

impl RawEntry {
    pub fn index(&self) -> usize {
        match self {
            RawEntry::Program(p) => p.index,
            RawEntry::Erase(e) => e.index,
            RawEntry::Other(o) => o.index,
        }
    }

    pub fn line(&self) -> Option<u32> {
        match self {
            RawEntry::Program(p) => p.line,
            RawEntry::Erase(e) => e.line,
            RawEntry::Other(o) => o.line,
        }
    }

    /// The element name: `program`, `erase` or the other element's name.
    pub fn element_name(&self) -> &str {
        match self {
            RawEntry::Program(_) => "program",
            RawEntry::Erase(_) => "erase",
            RawEntry::Other(o) => &o.name,
        }
    }

    /// A name to show people.
    pub fn display_name(&self) -> &str {
        match self {
            RawEntry::Program(p) => &p.display_name,
            RawEntry::Erase(e) => &e.display_name,
            RawEntry::Other(o) => &o.name,
        }
    }

    pub fn label(&self) -> Option<&str> {
        match self {
            RawEntry::Program(p) => p.label.as_deref(),
            RawEntry::Erase(e) => e.label.as_deref(),
            RawEntry::Other(_) => None,
        }
    }

    pub fn as_program(&self) -> Option<&ProgramEntry> {
        match self {
            RawEntry::Program(p) => Some(p),
            _ => None,
        }
    }

    pub fn as_erase(&self) -> Option<&EraseEntry> {
        match self {
            RawEntry::Erase(e) => Some(e),
            _ => None,
        }
    }
}

/// One `<patch>` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchEntry {
    pub index: usize,
    pub line: Option<u32>,
    pub sector_size: u32,
    pub byte_offset: u64,
    /// `DISK` (patch the device) or a host-side file such as `gpt_main0.bin`, exactly as written.
    pub filename: String,
    /// The normalised host file name; `None` for `DISK`.
    pub path: Option<PackagePath>,
    pub physical_partition_number: u32,
    /// How many bytes the value occupies (1..=8, little-endian).
    pub size_in_bytes: u32,
    pub start_sector: SectorExpr,
    /// The value verbatim: `0`, `NUM_DISK_SECTORS-34.`, `CRC32(2,4096)`, …
    pub value: String,
    /// The human description, if present.
    pub what: Option<String>,
    /// Every other attribute, in document order.
    pub extra: Vec<(String, String)>,
}

impl PatchEntry {
    /// Only `filename="DISK"` patches touch the device; other names patch a host-side file that
    /// every tool skips (PROTOCOLS.md §2.8).
    pub fn targets_disk(&self) -> bool {
        self.filename == "DISK"
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Which kind of package XML an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XmlFileKind {
    Rawprogram,
    Patch,
}

impl fmt::Display for XmlFileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XmlFileKind::Rawprogram => "rawprogram",
            XmlFileKind::Patch => "patch",
        })
    }
}

/// Where in a file a problem is: the entry (0-based index, shown 1-based), its element name and
/// its line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub index: usize,
    pub element: String,
    pub line: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {} (<{}>", self.index + 1, short(&self.element))?;
        if let Some(line) = self.line {
            write!(f, " on line {line}")?;
        }
        f.write_str(")")
    }
}

/// What is wrong with a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberProblem {
    Empty,
    Negative,
    Overflow,
    NotANumber,
    OutOfRange,
}

impl fmt::Display for NumberProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NumberProblem::Empty => "is empty",
            NumberProblem::Negative => "is negative",
            NumberProblem::Overflow => "is too large",
            NumberProblem::NotANumber => "is not a number",
            NumberProblem::OutOfRange => "is out of range",
        })
    }
}

/// The problem found in a rawprogram or patch file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("it is not readable XML: {0}")]
    Xml(XmlError),
    #[error("it has no <{expected}> element")]
    NoRoot { expected: &'static str },
    #[error("its top element is <{found}>, expected <{expected}>")]
    WrongRoot {
        expected: &'static str,
        found: String,
    },
    #[error("it has a second top element <{found}>; expected a single <{expected}>")]
    SecondRoot {
        expected: &'static str,
        found: String,
    },
    #[error("{at}: <{name}> is nested inside another entry; entries must sit directly inside the top element")]
    Nested { at: Location, name: String },
    #[error("{at}: unknown element; a patch file may only hold <patch> entries")]
    UnknownElement { at: Location },
    #[error("{at}: attribute {attr} is missing; expected {expected}")]
    MissingAttr {
        at: Location,
        attr: &'static str,
        expected: &'static str,
    },
    #[error("{at}: attribute {attr}=\"{value}\" {problem}; expected {expected}")]
    BadNumber {
        at: Location,
        attr: &'static str,
        value: String,
        problem: NumberProblem,
        expected: &'static str,
    },
    #[error("{at}: attribute {attr}=\"{value}\" is not valid; expected {expected}")]
    BadValue {
        at: Location,
        attr: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("{at}: filename \"{value}\" {problem}")]
    BadPath {
        at: Location,
        value: String,
        problem: PathProblem,
    },
    #[error("{at}: attribute {attr} is given twice (as {first} and {second})")]
    DuplicateAttr {
        at: Location,
        attr: &'static str,
        first: String,
        second: String,
    },
    #[error("{at}: attribute {attr} contains control characters")]
    ControlChars { at: Location, attr: String },
}

/// An error in a rawprogram or patch file, written for people: which file, which entry, which
/// attribute, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageError {
    pub kind: XmlFileKind,
    /// The file's name, once the caller knows it ([`PackageError::in_file`]).
    pub file: Option<String>,
    /// Boxed so results stay small on the success path.
    pub problem: Box<Problem>,
}

impl PackageError {
    fn new(kind: XmlFileKind, problem: Problem) -> Self {
        PackageError {
            kind,
            file: None,
            problem: Box::new(problem),
        }
    }

    /// Name the file the error is about (the parsers only see bytes).
    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// The next step for a person.
    pub fn next_step(&self) -> &'static str {
        match *self.problem {
            Problem::Xml(_) | Problem::NoRoot { .. } | Problem::WrongRoot { .. } => {
                "the file may be truncated, damaged or not a package XML: extract the firmware \
                 package again and check it against its md5.txt"
            }
            Problem::BadPath { .. } => {
                "package XML must name image files relative to its own folder; use the unmodified \
                 XML from the firmware package"
            }
            _ => {
                "use the unmodified XML from the firmware package (check it against md5.txt); if \
                 it is unmodified, report this with the file attached"
            }
        }
    }
}

impl fmt::Display for PackageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{} file {}: {}", self.kind, file, self.problem),
            None => write!(f, "{} file: {}", self.kind, self.problem),
        }
    }
}

impl std::error::Error for PackageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.problem {
            Problem::Xml(e) => Some(e),
            _ => None,
        }
    }
}

impl From<PackageError> for crate::Error {
    fn from(e: PackageError) -> Self {
        crate::Error::failure(
            e.to_string(),
            "qrescue will not flash a package it cannot fully understand",
            e.next_step(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parse a rawprogram file. Entries come back in file order (see the module notes).
pub fn parse_rawprogram(bytes: &[u8]) -> Result<Vec<RawEntry>, PackageError> {
    let kind = XmlFileKind::Rawprogram;
    let doc = Document::parse(bytes, kind, &["data"])?;
    let mut out = Vec::with_capacity(doc.entries.len());
    for (index, (el, line)) in doc.entries.iter().enumerate() {
        let at = Location {
            index,
            element: el.name.clone(),
            line: *line,
        };
        let entry = match el.name.as_str() {
            "program" => RawEntry::Program(program_entry(el, at)?),
            "erase" => RawEntry::Erase(erase_entry(el, at)?),
            _ => {
                check_control_chars(el, &at).map_err(|p| PackageError::new(kind, p))?;
                RawEntry::Other(OtherEntry {
                    index,
                    line: *line,
                    name: el.name.clone(),
                    attrs: el.attrs.clone(),
                })
            }
        };
        out.push(entry);
    }
    name_unlabelled_erases(&mut out);
    Ok(out)
}

/// Parse a patch file (top element `<patches>`, or `<data>` as some tools write it).
pub fn parse_patch(bytes: &[u8]) -> Result<Vec<PatchEntry>, PackageError> {
    let kind = XmlFileKind::Patch;
    let doc = Document::parse(bytes, kind, &["patches", "data"])?;
    let mut out = Vec::with_capacity(doc.entries.len());
    for (index, (el, line)) in doc.entries.iter().enumerate() {
        let at = Location {
            index,
            element: el.name.clone(),
            line: *line,
        };
        if el.name != "patch" {
            return Err(PackageError::new(kind, Problem::UnknownElement { at }));
        }
        out.push(patch_entry(el, at)?);
    }
    Ok(out)
}

/// The total bytes of program entries whose size is known (num_partition_sectors > 0),
/// saturating at `u64::MAX`. Grow entries (size from the file) are not counted.
pub fn total_bytes(entries: &[RawEntry]) -> u64 {
    entries
        .iter()
        .filter_map(RawEntry::as_program)
        .filter_map(ProgramEntry::declared_bytes)
        .fold(0u64, u64::saturating_add)
}

/// Page and block size in bytes from a Quectel XML name such as
/// `rawprogram_nand_p4K_b256K_update.xml` → `(4096, 262144)`. PAGES_PER_BLOCK is
/// `block / page` (64 here). `None` when the name carries no such pair or it makes no sense
/// (block not a multiple of the page, sizes outside 512 B..64 KiB pages and up to 64 MiB blocks).
pub fn nand_geometry_from_name(name: &str) -> Option<(u32, u32)> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let tokens: Vec<&str> = base.split(['_', '.', '-']).collect();
    for pair in tokens.windows(2) {
        let page = kib_token(pair[0], 'p');
        let block = kib_token(pair[1], 'b');
        if let (Some(page), Some(block)) = (page, block) {
            let ok = (512..=65536).contains(&page)
                && block > page
                && block <= 64 * 1024 * 1024
                && block % page == 0;
            if ok {
                return Some((page, block));
            }
        }
    }
    None
}

fn kib_token(tok: &str, prefix: char) -> Option<u32> {
    let rest = tok
        .strip_prefix(prefix)
        .or_else(|| tok.strip_prefix(prefix.to_ascii_uppercase()))?;
    let digits = rest.strip_suffix(['K', 'k'])?;
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u32>().ok()?.checked_mul(1024)
}

/// A parsed document: its entries (depth-1 elements) with their lines.
struct Document {
    entries: Vec<(Element, Option<u32>)>,
}

impl Document {
    fn parse(
        bytes: &[u8],
        kind: XmlFileKind,
        roots: &[&'static str],
    ) -> Result<Document, PackageError> {
        let err = |p| PackageError::new(kind, p);
        let elements = parse_elements(bytes, Limits::FILE).map_err(|e| err(Problem::Xml(e)))?;
        let lines = start_tag_lines(bytes);
        let lines_ok = lines.len() == elements.len();
        let expected = roots[0];
        let mut it = elements.into_iter().enumerate();
        let root = match it.next() {
            None => return Err(err(Problem::NoRoot { expected })),
            Some((_, r)) => r,
        };
        if !roots.contains(&root.name.as_str()) {
            return Err(err(Problem::WrongRoot {
                expected,
                found: short(&root.name),
            }));
        }
        let mut entries: Vec<(Element, Option<u32>)> = Vec::new();
        for (i, el) in it {
            let line = if lines_ok { Some(lines[i]) } else { None };
            match el.depth {
                0 => {
                    return Err(err(Problem::SecondRoot {
                        expected,
                        found: short(&el.name),
                    }))
                }
                1 => entries.push((el, line)),
                _ => {
                    let (parent_index, parent_name) = match entries.last() {
                        Some((p, _)) => (entries.len() - 1, p.name.clone()),
                        None => (0, root.name.clone()),
                    };
                    return Err(err(Problem::Nested {
                        at: Location {
                            index: parent_index,
                            element: parent_name,
                            line,
                        },
                        name: short(&el.name),
                    }));
                }
            }
        }
        Ok(Document { entries })
    }
}

/// Lines (1-based) of every start or empty tag, in order, for a document that parsed. Comments,
/// processing instructions, CDATA, declarations and end tags are skipped. If this disagrees with
/// the parser's element count the caller simply reports no lines.
fn start_tag_lines(doc: &[u8]) -> Vec<u32> {
    let doc = doc.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(doc);
    let mut out = Vec::new();
    let mut line: u32 = 1;
    let mut i = 0usize;
    // Advance past `pat`, counting newlines; returns the index after it (or the end).
    fn skip_to(doc: &[u8], mut i: usize, pat: &[u8], line: &mut u32) -> usize {
        while i < doc.len() {
            if doc[i..].starts_with(pat) {
                return i + pat.len();
            }
            if doc[i] == b'\n' {
                *line = line.saturating_add(1);
            }
            i += 1;
        }
        i
    }
    while i < doc.len() {
        let b = doc[i];
        if b == b'\n' {
            line = line.saturating_add(1);
            i += 1;
            continue;
        }
        if b != b'<' {
            i += 1;
            continue;
        }
        let rest = &doc[i..];
        if rest.starts_with(b"<!--") {
            i = skip_to(doc, i + 4, b"-->", &mut line);
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_to(doc, i + 9, b"]]>", &mut line);
        } else if rest.starts_with(b"<?") {
            i = skip_to(doc, i + 2, b"?>", &mut line);
        } else if rest.starts_with(b"<!") || rest.starts_with(b"</") {
            i = skip_to(doc, i + 2, b">", &mut line);
        } else {
            if out.len() > Limits::FILE.max_elements {
                return Vec::new();
            }
            out.push(line);
            // Skip to the closing '>' outside quotes.
            i += 1;
            let mut quote: Option<u8> = None;
            while i < doc.len() {
                let c = doc[i];
                if c == b'\n' {
                    line = line.saturating_add(1);
                }
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => quote = Some(c),
                    None if c == b'>' => {
                        i += 1;
                        break;
                    }
                    None => {}
                }
                i += 1;
            }
        }
    }
    out
}

/// Attribute access for one element: case-insensitive lookup, duplicates refused, and the
/// attributes not looked up collected as `extra`.
struct Attrs<'a> {
    el: &'a Element,
    at: Location,
    used: Vec<bool>,
}

impl<'a> Attrs<'a> {
    fn new(el: &'a Element, at: Location) -> Result<Self, Problem> {
        check_control_chars(el, &at)?;
        Ok(Attrs {
            el,
            at,
            used: vec![false; el.attrs.len()],
        })
    }

    fn get(&mut self, key: &'static str) -> Result<Option<&'a str>, Problem> {
        let mut found: Option<usize> = None;
        for (i, (k, _)) in self.el.attrs.iter().enumerate() {
            if k.eq_ignore_ascii_case(key) {
                if let Some(first) = found {
                    return Err(Problem::DuplicateAttr {
                        at: self.at.clone(),
                        attr: key,
                        first: self.el.attrs[first].0.clone(),
                        second: short(k),
                    });
                }
                found = Some(i);
            }
        }
        Ok(found.map(|i| {
            self.used[i] = true;
            self.el.attrs[i].1.as_str()
        }))
    }

    fn require(&mut self, key: &'static str, expected: &'static str) -> Result<&'a str, Problem> {
        self.get(key)?.ok_or_else(|| Problem::MissingAttr {
            at: self.at.clone(),
            attr: key,
            expected,
        })
    }

    fn number(&self, key: &'static str, value: &str, expected: &'static str) -> Problem {
        match parse_number(value) {
            Err(problem) => self.bad_number(key, value, problem, expected),
            Ok(_) => self.bad_number(key, value, NumberProblem::OutOfRange, expected),
        }
    }

    fn bad_number(
        &self,
        attr: &'static str,
        value: &str,
        problem: NumberProblem,
        expected: &'static str,
    ) -> Problem {
        Problem::BadNumber {
            at: self.at.clone(),
            attr,
            value: short(value),
            problem,
            expected,
        }
    }

    fn opt_u64(&mut self, key: &'static str) -> Result<Option<u64>, Problem> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => parse_number(v)
                .map(Some)
                .map_err(|p| self.bad_number(key, v, p, "a whole number of sectors")),
        }
    }

    fn opt_u32_in(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
        expected: &'static str,
    ) -> Result<Option<u32>, Problem> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => match parse_number(v) {
                Ok(n) if range.contains(&n) => Ok(Some(n as u32)),
                _ => Err(self.number(key, v, expected)),
            },
        }
    }

    fn sector_size(&mut self, required: bool) -> Result<Option<u32>, Problem> {
        const EXPECTED: &str = "a power of two from 512 to 65536";
        let v = match self.get("SECTOR_SIZE_IN_BYTES")? {
            Some(v) => v,
            None if required => {
                return Err(Problem::MissingAttr {
                    at: self.at.clone(),
                    attr: "SECTOR_SIZE_IN_BYTES",
                    expected: EXPECTED,
                })
            }
            None => return Ok(None),
        };
        match parse_number(v) {
            Ok(n) if (512..=65536).contains(&n) && n.is_power_of_two() => Ok(Some(n as u32)),
            _ => Err(self.number("SECTOR_SIZE_IN_BYTES", v, EXPECTED)),
        }
    }

    fn partition_number(&mut self) -> Result<Option<u32>, Problem> {
        self.opt_u32_in(
            "physical_partition_number",
            0..=u64::from(u32::MAX),
            "a physical partition (LUN) number",
        )
    }

    fn sector_expr(&mut self, key: &'static str) -> Result<Option<SectorExpr>, Problem> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => parse_sector_expr(v).map(Some).map_err(|p| match p {
                Some(problem) => self.bad_number(
                    key,
                    v,
                    problem,
                    "a sector number or a NUM_DISK_SECTORS expression",
                ),
                None => Problem::BadValue {
                    at: self.at.clone(),
                    attr: key,
                    value: short(v),
                    expected: "a sector number or a NUM_DISK_SECTORS expression",
                },
            }),
        }
    }

    fn boolean(&mut self, key: &'static str) -> Result<Option<bool>, Problem> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(Problem::BadValue {
                    at: self.at.clone(),
                    attr: key,
                    value: short(v),
                    expected: "true or false",
                }),
            },
        }
    }

    fn text(&mut self, key: &'static str) -> Result<Option<String>, Problem> {
        Ok(self.get(key)?.map(str::to_string))
    }

    fn path(&self, raw: &str) -> Result<Option<PackagePath>, Problem> {
        PackagePath::parse(raw).map_err(|problem| Problem::BadPath {
            at: self.at.clone(),
            value: short(raw),
            problem,
        })
    }

    fn extra(self) -> Vec<(String, String)> {
        self.el
            .attrs
            .iter()
            .zip(self.used)
            .filter(|(_, used)| !used)
            .map(|(kv, _)| kv.clone())
            .collect()
    }
}

fn check_control_chars(el: &Element, at: &Location) -> Result<(), Problem> {
    for (k, v) in &el.attrs {
        if k.chars().any(char::is_control) || v.chars().any(char::is_control) {
            return Err(Problem::ControlChars {
                at: at.clone(),
                attr: short(&k.replace(char::is_control, "?")),
            });
        }
    }
    Ok(())
}

fn program_entry(el: &Element, at: Location) -> Result<ProgramEntry, PackageError> {
    let kind = XmlFileKind::Rawprogram;
    program_entry_inner(el, at).map_err(|p| PackageError::new(kind, p))
}

fn program_entry_inner(el: &Element, at: Location) -> Result<ProgramEntry, Problem> {
    let index = at.index;
    let line = at.line;
    let mut a = Attrs::new(el, at)?;
    let sector_size = a.sector_size(true)?.unwrap_or(512);
    let nps = a.require("num_partition_sectors", "the partition size in sectors")?;
    let num_partition_sectors = parse_number(nps)
        .map_err(|p| a.bad_number("num_partition_sectors", nps, p, "a whole number of sectors"))?;
    let physical_partition_number = match a.partition_number()? {
        Some(n) => n,
        None => {
            return Err(Problem::MissingAttr {
                at: a.at.clone(),
                attr: "physical_partition_number",
                expected: "a physical partition (LUN) number",
            })
        }
    };
    let start_sector = match a.sector_expr("start_sector")? {
        Some(s) => s,
        None => {
            return Err(Problem::MissingAttr {
                at: a.at.clone(),
                attr: "start_sector",
                expected: "a sector number or a NUM_DISK_SECTORS expression",
            })
        }
    };
    check_extent(
        &a,
        sector_size,
        Some(num_partition_sectors),
        Some(&start_sector),
    )?;
    let start_byte_hex = match a.get("start_byte_hex")? {
        None => None,
        Some(v) if is_expression_text(v) => Some(v.to_string()),
        Some(v) => {
            return Err(Problem::BadValue {
                at: a.at.clone(),
                attr: "start_byte_hex",
                value: short(v),
                expected: "a hexadecimal byte address or a NUM_DISK_SECTORS expression",
            })
        }
    };
    let file_sector_offset = a.opt_u64("file_sector_offset")?.unwrap_or(0);
    if file_sector_offset
        .checked_mul(u64::from(sector_size))
        .is_none()
    {
        return Err(a.bad_number(
            "file_sector_offset",
            &file_sector_offset.to_string(),
            NumberProblem::Overflow,
            "an offset in sectors that fits in a file",
        ));
    }
    let filename = a.get("filename")?.unwrap_or("").to_string();
    let path = a.path(&filename)?;
    let label = a.text("label")?;
    let sparse = a.boolean("sparse")?.unwrap_or(false);
    let pages_per_block = a.opt_u32_in("PAGES_PER_BLOCK", 1..=65536, "pages per NAND block")?;
    let last_sector = a.opt_u64("last_sector")?;
    let readbackverify = a.boolean("readbackverify")?;
    let partofsingleimage = a.boolean("partofsingleimage")?;
    let size_in_kb = a.text("size_in_KB")?;
    let display_name = match (&label, &path) {
        (Some(l), _) if !l.trim().is_empty() => l.clone(),
        (_, Some(p)) => p.stem().to_string(),
        _ => location_name(Some(physical_partition_number), Some(&start_sector)),
    };
    Ok(ProgramEntry {
        index,
        line,
        sector_size,
        num_partition_sectors,
        physical_partition_number,
        start_sector,
        start_byte_hex,
        file_sector_offset,
        filename,
        path,
        label,
        display_name,
        sparse,
        pages_per_block,
        last_sector,
        readbackverify,
        partofsingleimage,
        size_in_kb,
        extra: a.extra(),
    })
}

fn erase_entry(el: &Element, at: Location) -> Result<EraseEntry, PackageError> {
    erase_entry_inner(el, at).map_err(|p| PackageError::new(XmlFileKind::Rawprogram, p))
}

fn erase_entry_inner(el: &Element, at: Location) -> Result<EraseEntry, Problem> {
    let index = at.index;
    let line = at.line;
    let mut a = Attrs::new(el, at)?;
    let sector_size = a.sector_size(false)?;
    let num_partition_sectors = a.opt_u64("num_partition_sectors")?;
    let physical_partition_number = a.partition_number()?;
    let start_sector = a.sector_expr("start_sector")?;
    if let Some(ss) = sector_size {
        check_extent(&a, ss, num_partition_sectors, start_sector.as_ref())?;
    }
    let label = a.text("label")?;
    let pages_per_block = a.opt_u32_in("PAGES_PER_BLOCK", 1..=65536, "pages per NAND block")?;
    let last_sector = a.opt_u64("last_sector")?;
    let display_name = match &label {
        Some(l) if !l.trim().is_empty() => l.clone(),
        _ => location_name(physical_partition_number, start_sector.as_ref()),
    };
    Ok(EraseEntry {
        index,
        line,
        sector_size,
        num_partition_sectors,
        physical_partition_number,
        start_sector,
        label,
        display_name,
        pages_per_block,
        last_sector,
        extra: a.extra(),
    })
}

fn patch_entry(el: &Element, at: Location) -> Result<PatchEntry, PackageError> {
    patch_entry_inner(el, at).map_err(|p| PackageError::new(XmlFileKind::Patch, p))
}

fn patch_entry_inner(el: &Element, at: Location) -> Result<PatchEntry, Problem> {
    let index = at.index;
    let line = at.line;
    let mut a = Attrs::new(el, at)?;
    let sector_size = a.sector_size(true)?.unwrap_or(512);
    let bo = a.require("byte_offset", "a byte offset inside the sector")?;
    let byte_offset =
        parse_number(bo).map_err(|p| a.bad_number("byte_offset", bo, p, "a byte offset"))?;
    let filename = a
        .require("filename", "DISK or the name of a host file")?
        .to_string();
    if filename.is_empty() {
        return Err(Problem::BadValue {
            at: a.at.clone(),
            attr: "filename",
            value: String::new(),
            expected: "DISK or the name of a host file",
        });
    }
    let path = if filename == "DISK" {
        None
    } else {
        a.path(&filename)?
    };
    let physical_partition_number = match a.partition_number()? {
        Some(n) => n,
        None => {
            return Err(Problem::MissingAttr {
                at: a.at.clone(),
                attr: "physical_partition_number",
                expected: "a physical partition (LUN) number",
            })
        }
    };
    let sib = a.require("size_in_bytes", "1 to 8")?;
    let size_in_bytes = match parse_number(sib) {
        Ok(n) if (1..=8).contains(&n) => n as u32,
        _ => return Err(a.number("size_in_bytes", sib, "1 to 8")),
    };
    let start_sector = match a.sector_expr("start_sector")? {
        Some(s) => s,
        None => {
            return Err(Problem::MissingAttr {
                at: a.at.clone(),
                attr: "start_sector",
                expected: "a sector number or a NUM_DISK_SECTORS expression",
            })
        }
    };
    let value = a.require(
        "value",
        "a number, a NUM_DISK_SECTORS expression or CRC32(…)",
    )?;
    if value.trim().is_empty() || !is_expression_text(value) {
        return Err(Problem::BadValue {
            at: a.at.clone(),
            attr: "value",
            value: short(value),
            expected: "a number, a NUM_DISK_SECTORS expression or CRC32(…)",
        });
    }
    let value = value.to_string();
    let what = a.text("what")?;
    Ok(PatchEntry {
        index,
        line,
        sector_size,
        byte_offset,
        filename,
        path,
        physical_partition_number,
        size_in_bytes,
        start_sector,
        value,
        what,
        extra: a.extra(),
    })
}

/// The byte extent of an entry must fit in u64: num × size, and for a literal start,
/// (start + num) × size.
fn check_extent(
    a: &Attrs<'_>,
    sector_size: u32,
    num: Option<u64>,
    start: Option<&SectorExpr>,
) -> Result<(), Problem> {
    let ss = u64::from(sector_size);
    if let Some(n) = num {
        if n.checked_mul(ss).is_none() {
            return Err(a.bad_number(
                "num_partition_sectors",
                &n.to_string(),
                NumberProblem::Overflow,
                "a partition size that fits in 64-bit bytes",
            ));
        }
    }
    if let Some(s) = start.and_then(SectorExpr::literal) {
        let end = s
            .checked_add(num.unwrap_or(0))
            .and_then(|e| e.checked_mul(ss));
        if end.is_none() {
            return Err(a.bad_number(
                "start_sector",
                &s.to_string(),
                NumberProblem::Overflow,
                "a sector whose byte address fits in 64 bits",
            ));
        }
    }
    Ok(())
}

fn range_consistent(start: Option<&SectorExpr>, num: Option<u64>, last: Option<u64>) -> bool {
    match (start.and_then(SectorExpr::literal), num, last) {
        (Some(s), Some(n), Some(l)) if n > 0 => s.checked_add(n - 1) == Some(l),
        _ => true,
    }
}

/// Give unlabelled, unnamed erases the name of a program entry at the same place.
fn name_unlabelled_erases(entries: &mut [RawEntry]) {
    let programs: Vec<(u32, SectorExpr, String)> = entries
        .iter()
        .filter_map(RawEntry::as_program)
        .filter(|p| p.label.is_some() || p.path.is_some())
        .map(|p| {
            (
                p.physical_partition_number,
                p.start_sector.clone(),
                p.display_name.clone(),
            )
        })
        .collect();
    for e in entries.iter_mut() {
        if let RawEntry::Erase(erase) = e {
            if erase.label.as_deref().is_some_and(|l| !l.trim().is_empty()) {
                continue;
            }
            let (Some(ppn), Some(start)) = (erase.physical_partition_number, &erase.start_sector)
            else {
                continue;
            };
            if let Some((_, _, name)) = programs.iter().find(|(p, s, _)| *p == ppn && s == start) {
                erase.display_name = name.clone();
            }
        }
    }
}

fn location_name(ppn: Option<u32>, start: Option<&SectorExpr>) -> String {
    match (ppn, start) {
        (Some(p), Some(s)) => format!("p{p} sector {}", short(&s.to_string())),
        (None, Some(s)) => format!("sector {}", short(&s.to_string())),
        (Some(p), None) => format!("p{p} whole partition"),
        (None, None) => "whole partition".to_string(),
    }
}

/// Parse a number: decimal, decimal with one trailing dot, or `0x` hexadecimal; surrounding ASCII
/// whitespace is allowed.
pub fn parse_number(text: &str) -> Result<u64, NumberProblem> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if t.is_empty() {
        return Err(NumberProblem::Empty);
    }
    if t.starts_with('-') {
        return Err(NumberProblem::Negative);
    }
    let (digits, radix) = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        (h, 16)
    } else {
        (t.strip_suffix('.').unwrap_or(t), 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(NumberProblem::NotANumber);
    }
    u64::from_str_radix(digits, radix).map_err(|_| NumberProblem::Overflow)
}

const MAX_EXPR_LEN: usize = 256;

/// Characters an expression may use (numbers, the NUM_DISK_* names, CRC32(…), arithmetic).
fn is_expression_text(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_EXPR_LEN
        && v.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(c, '_' | '+' | '-' | '*' | '/' | '(' | ')' | '.' | ',' | ' ')
        })
        && balanced(v)
}

fn balanced(v: &str) -> bool {
    let mut depth = 0i32;
    for c in v.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

/// A sector attribute: a literal number, or an expression mentioning NUM_DISK_SECTORS or
/// NUM_DISK_BLOCKS. `Err(Some(p))` for a bad number, `Err(None)` for a bad expression.
fn parse_sector_expr(v: &str) -> Result<SectorExpr, Option<NumberProblem>> {
    match parse_number(v) {
        Ok(n) => Ok(SectorExpr::Literal(n)),
        Err(p) => {
            let symbolic = v.contains("NUM_DISK_SECTORS") || v.contains("NUM_DISK_BLOCKS");
            if symbolic && is_expression_text(v) {
                Ok(SectorExpr::Symbolic(v.to_string()))
            } else if symbolic {
                Err(None)
            } else {
                Err(Some(p))
            }
        }
    }
}

/// "65536.0" KiB → 67108864 bytes, "16.5" → 16896; `None` when not a plain decimal or not whole
/// bytes.
fn kb_to_bytes(v: &str) -> Option<u64> {
    let v = v.trim();
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let whole = int.parse::<u64>().ok()?.checked_mul(1024)?;
    if frac.is_empty() {
        return Some(whole);
    }
    let scale = 10u64.pow(frac.len() as u32);
    let num = frac.parse::<u64>().ok()? * 1024;
    if num % scale != 0 {
        return None;
    }
    whole.checked_add(num / scale)
}

/// Shorten a value for a message (hostile files can hold megabyte-long attributes).
fn short(v: &str) -> String {
    const MAX: usize = 80;
    if v.len() <= MAX {
        return v.to_string();
    }
    let mut end = MAX;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &v[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    macro_rules! real {
        ($name:literal) => {
            include_bytes!(concat!("../../tests/data/realxml/", $name)).as_slice()
        };
    }

    const EG25_RAW: &[u8] = real!("quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml");
    const EG25_PATCH: &[u8] = real!("quectel_eg25g_mdm9607__patch_p2K_b128K.xml");
    const EM12_RAW: &[u8] = real!("quectel_em12g_sdx20__rawprogram_nand_p4K_b256K_update.xml");
    const EM12_PATCH: &[u8] = real!("quectel_em12g_sdx20__patch_p4K_b256K.xml");
    const PTOOL_RAW: &[u8] = real!("qcom_emmc_msm8916_ptool__rawprogram0.xml");
    const PTOOL_PATCH: &[u8] = real!("qcom_emmc_msm8916_ptool__patch0.xml");
    const UFS_RAW0: &[u8] = real!("qcom_ufs_qcs6490_rubikpi3__rawprogram0.xml");
    const UFS_RAW4: &[u8] = real!("qcom_ufs_qcs6490_rubikpi3__rawprogram4.xml");
    const UFS_PATCH4: &[u8] = real!("qcom_ufs_qcs6490_rubikpi3__patch4.xml");
    const UZ801_RAW: &[u8] = real!("uz801_msm8916_emmc_edlbackup__rawprogram0.xml");
    const UZ801_PATCH: &[u8] = real!("uz801_msm8916_emmc_edlbackup__patch0.xml");

    fn programs(entries: &[RawEntry]) -> Vec<&ProgramEntry> {
        entries.iter().filter_map(RawEntry::as_program).collect()
    }

    fn wrap(inner: &str) -> String {
        format!("<?xml version=\"1.0\" ?>\n<data>\n{inner}\n</data>\n")
    }

    fn prog(attrs: &str) -> String {
        wrap(&format!("<program {attrs}/>"))
    }

    const OK_ATTRS: &str = "SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"8\" physical_partition_number=\"0\" start_sector=\"34\" filename=\"a.bin\"";

    #[test]
    fn every_real_rawprogram_and_patch_file_parses() {
        for (name, bytes, n) in [
            ("eg25", EG25_RAW, 22),
            ("em12", EM12_RAW, 24),
            ("ptool", PTOOL_RAW, 31),
            ("ufs0", UFS_RAW0, 1),
            ("ufs4", UFS_RAW4, 54),
            ("uz801", UZ801_RAW, 29),
        ] {
            let entries = parse_rawprogram(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(entries.len(), n, "{name}");
            for (i, e) in entries.iter().enumerate() {
                assert_eq!(e.index(), i, "{name}");
                assert!(e.line().is_some(), "{name}: lines are known");
                assert!(!matches!(e, RawEntry::Other(_)), "{name}");
            }
        }
        for (name, bytes, n, disk) in [
            ("eg25", EG25_PATCH, 2, 0),
            ("em12", EM12_PATCH, 2, 0),
            ("ptool", PTOOL_PATCH, 26, 13),
            ("ufs4", UFS_PATCH4, 26, 13),
            ("uz801", UZ801_PATCH, 0, 0),
        ] {
            let entries = parse_patch(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(entries.len(), n, "{name}");
            assert_eq!(
                entries.iter().filter(|p| p.targets_disk()).count(),
                disk,
                "{name}"
            );
        }
    }

    #[test]
    fn eg25g_nand_file_without_labels() {
        let entries = parse_rawprogram(EG25_RAW).unwrap();
        assert_eq!(entries.len(), 22);
        assert!(entries.iter().all(|e| e.label().is_none()));
        assert_eq!(programs(&entries).len(), 11);
        let first = entries[0].as_program().expect("first entry is a program");
        assert_eq!(first.filename, "..\\sbl1.mbn");
        let path = first.path.as_ref().unwrap();
        assert_eq!(path.as_str(), "../sbl1.mbn");
        assert_eq!(path.levels_above_base(), 1);
        assert_eq!(path.file_name(), "sbl1.mbn");
        assert_eq!(path.to_path_buf(), std::path::PathBuf::from("../sbl1.mbn"));
        assert_eq!(first.display_name, "sbl1");
        assert_eq!(first.sector_size, 2048);
        assert_eq!(first.pages_per_block, Some(64));
        assert_eq!(first.start_sector, SectorExpr::Literal(0));
        assert_eq!(first.num_partition_sectors, 640);
        assert_eq!(first.line, Some(7));
        assert!(first.is_nand());
        // The MIBIB image sits beside the XML (no `..`).
        let mibib = entries[1].as_program().unwrap();
        assert_eq!(mibib.path.as_ref().unwrap().levels_above_base(), 0);
        // Interleaving and the re-erases at the end are preserved in file order.
        let kinds: String = entries
            .iter()
            .map(|e| match e {
                RawEntry::Program(_) => 'P',
                RawEntry::Erase(_) => 'E',
                RawEntry::Other(_) => 'O',
            })
            .collect();
        assert_eq!(kinds, "PPPEEPEPEPEPEPEPEPEEEP");
        let last = entries[21].as_program().unwrap();
        assert_eq!(last.display_name, "rpm");
        // Unlabelled erases take the name of the program at the same place.
        let e0 = entries[20].as_erase().unwrap();
        assert_eq!(e0.start_sector, Some(SectorExpr::Literal(0)));
        assert_eq!(e0.display_name, "sbl1");
        assert_eq!(entries[3].display_name(), "rpm");
        assert!(entries
            .iter()
            .filter_map(RawEntry::as_erase)
            .all(|e| !e.missing_sector_size()
                && !e.is_whole_partition()
                && !e.display_name.starts_with("p0 sector")));
        assert_eq!(
            total_bytes(&entries),
            programs(&entries)
                .iter()
                .map(|p| p.num_partition_sectors * 2048)
                .sum::<u64>()
        );
    }

    #[test]
    fn em12g_starts_with_an_erase_of_sbl() {
        let entries = parse_rawprogram(EM12_RAW).unwrap();
        let e = entries[0].as_erase().expect("first entry is an erase");
        assert_eq!(e.label.as_deref(), Some("SBL"));
        assert_eq!(e.pages_per_block, Some(64));
        assert_eq!(e.last_sector, Some(639));
        assert_eq!(e.sector_size, Some(4096));
        assert_eq!(e.num_partition_sectors, Some(640));
        assert_eq!(e.start_sector, Some(SectorExpr::Literal(0)));
        assert!(e.last_sector_consistent());
        assert!(e.extra.is_empty());
        // The SBL image is programmed last.
        let last = entries.last().unwrap().as_program().unwrap();
        assert_eq!(last.label.as_deref(), Some("SBL"));
        assert_eq!(last.path.as_ref().unwrap().as_str(), "../sbl1.mbn");
        for p in programs(&entries) {
            assert!(p.last_sector_consistent(), "{}", p.display_name);
        }
    }

    #[test]
    fn ptool_file_has_grow_entry_and_symbolic_backup_gpt() {
        let entries = parse_rawprogram(PTOOL_RAW).unwrap();
        let ps = programs(&entries);
        let userdata = ps
            .iter()
            .find(|p| p.label.as_deref() == Some("userdata"))
            .unwrap();
        assert_eq!(userdata.num_partition_sectors, 0);
        assert_eq!(userdata.declared_bytes(), None);
        assert!(userdata.sparse);
        assert_eq!(userdata.start_byte_hex.as_deref(), Some("0x76200000"));
        let backup = ps
            .iter()
            .find(|p| p.label.as_deref() == Some("BackupGPT"))
            .unwrap();
        assert_eq!(
            backup.start_sector,
            SectorExpr::Symbolic("NUM_DISK_SECTORS-33.".into())
        );
        assert_eq!(backup.start_sector.to_string(), "NUM_DISK_SECTORS-33.");
        assert_eq!(
            backup.start_byte_hex.as_deref(),
            Some("(512*NUM_DISK_SECTORS)-16896.")
        );
        assert_eq!(backup.size_in_kb_bytes(), Some(16896));
        // Empty file names are kept, with no path.
        let fsc = ps
            .iter()
            .find(|p| p.label.as_deref() == Some("fsc"))
            .unwrap();
        assert_eq!(fsc.filename, "");
        assert!(!fsc.has_file());
        assert_eq!(ps.iter().filter(|p| p.sparse).count(), 5);
        assert_eq!(ps[0].size_in_kb_bytes(), Some(65536 * 1024));
    }

    #[test]
    fn ufs_lun4_with_4096_byte_sectors_and_other_attribute_order() {
        let entries = parse_rawprogram(UFS_RAW4).unwrap();
        for p in programs(&entries) {
            assert_eq!(p.physical_partition_number, 4);
            assert_eq!(p.sector_size, 4096);
            assert_eq!(p.readbackverify, Some(false));
        }
        let first = entries[0].as_program().unwrap();
        assert_eq!(first.label.as_deref(), Some("aop_a"));
        assert_eq!(first.start_sector, SectorExpr::Literal(6));
        assert!(first.extra.is_empty());
        let backup = programs(&entries)
            .into_iter()
            .find(|p| p.filename == "gpt_backup4.bin")
            .unwrap();
        assert_eq!(backup.partofsingleimage, Some(true));
        assert!(backup.start_sector.is_symbolic());

        let whole = parse_rawprogram(UFS_RAW0).unwrap();
        let disk = whole[0].as_program().unwrap();
        assert_eq!(disk.num_partition_sectors, 33_554_432);
        assert_eq!(disk.declared_bytes(), Some(33_554_432 * 4096));
    }

    #[test]
    fn ptool_patch_has_disk_and_host_file_twins() {
        let patches = parse_patch(PTOOL_PATCH).unwrap();
        let disk: Vec<_> = patches.iter().filter(|p| p.targets_disk()).collect();
        let host: Vec<_> = patches.iter().filter(|p| !p.targets_disk()).collect();
        assert_eq!(disk.len(), 13);
        assert!(host.iter().any(|p| p.filename == "gpt_main0.bin"));
        assert!(host.iter().all(|p| p.path.is_some()));
        assert!(disk.iter().all(|p| p.path.is_none()));
        let first = &patches[0];
        assert_eq!(first.filename, "gpt_main0.bin");
        assert_eq!(first.byte_offset, 40);
        assert_eq!(first.size_in_bytes, 8);
        assert_eq!(first.start_sector, SectorExpr::Literal(9));
        assert_eq!(first.value, "NUM_DISK_SECTORS-34.");
        assert!(first.what.as_deref().unwrap().contains("userdata"));
        assert!(patches
            .iter()
            .any(|p| p.value == "CRC32(NUM_DISK_SECTORS-33.,4096)"));
        assert!(patches.iter().any(|p| p.value == "0"));
        // The undotted form real ptool files contain.
        assert!(patches
            .iter()
            .any(|p| p.start_sector == SectorExpr::Symbolic("NUM_DISK_SECTORS-1".into())));
    }

    #[test]
    fn nand_patch_targets_the_mibib_file() {
        let patches = parse_patch(EM12_PATCH).unwrap();
        assert!(patches.iter().all(|p| !p.targets_disk()));
        assert_eq!(patches[0].value, "NUM_DISK_BLOCKS-1904.");
        assert_eq!(patches[1].value, "CRC32(0,8192)");
        assert_eq!(patches[0].line, Some(5));
        let ufs = parse_patch(UFS_PATCH4).unwrap();
        assert!(ufs
            .iter()
            .all(|p| p.physical_partition_number == 4 && p.sector_size == 4096));
    }

    #[test]
    fn empty_patch_file_has_no_entries() {
        assert!(parse_patch(UZ801_PATCH).unwrap().is_empty());
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("640"), Ok(640));
        assert_eq!(parse_number("640."), Ok(640));
        assert_eq!(parse_number(" 0x280 "), Ok(640));
        assert_eq!(parse_number("0XfF"), Ok(255));
        assert_eq!(parse_number("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_number("18446744073709551616"),
            Err(NumberProblem::Overflow)
        );
        assert_eq!(parse_number("-1"), Err(NumberProblem::Negative));
        assert_eq!(parse_number(""), Err(NumberProblem::Empty));
        for bad in ["0x", "1.5", "1..", "+1", "0x10.", "1e3", "١٢"] {
            assert_eq!(parse_number(bad), Err(NumberProblem::NotANumber), "{bad}");
        }
    }

    #[test]
    fn nand_geometry_names() {
        assert_eq!(
            nand_geometry_from_name("rawprogram_nand_p4K_b256K_update.xml"),
            Some((4096, 262144))
        );
        let (p, b) = nand_geometry_from_name("update/firehose/patch_p2K_b128K.xml").unwrap();
        assert_eq!((p, b, b / p), (2048, 131072, 64));
        assert_eq!(
            nand_geometry_from_name("partition_complete_p4K_b256K.mbn"),
            Some((4096, 262144))
        );
        assert_eq!(nand_geometry_from_name("rawprogram0.xml"), None);
        assert_eq!(nand_geometry_from_name("rawprogram_p4K_b2K.xml"), None);
        assert_eq!(nand_geometry_from_name("rawprogram_p3K_b256K.xml"), None);
        assert_eq!(nand_geometry_from_name("p99999999K_b1K"), None);
    }

    #[test]
    fn paths() {
        let p = |s: &str| PackagePath::parse(s);
        assert_eq!(p("").unwrap(), None);
        assert_eq!(p(".\\a\\\\b.img").unwrap().unwrap().as_str(), "a/b.img");
        assert_eq!(p("a/../../x").unwrap().unwrap().levels_above_base(), 1);
        assert_eq!(p("../../x").unwrap().unwrap().levels_above_base(), 2);
        assert_eq!(p("/etc/passwd"), Err(PathProblem::Absolute));
        assert_eq!(p("\\\\server\\share\\x"), Err(PathProblem::Absolute));
        assert_eq!(p("C:\\x.bin"), Err(PathProblem::Colon));
        assert_eq!(p("a\0b"), Err(PathProblem::Nul));
        assert_eq!(p("a\x1b[2Jb"), Err(PathProblem::Control));
        assert_eq!(p("dir/"), Err(PathProblem::NotAFile));
        assert_eq!(p(".."), Err(PathProblem::NotAFile));
        assert_eq!(p("."), Err(PathProblem::NotAFile));
        assert_eq!(p(&"a".repeat(300)), Err(PathProblem::TooLong));
        assert_eq!(p("x/.hidden").unwrap().unwrap().stem(), ".hidden");
    }

    fn err_of(doc: &str) -> PackageError {
        parse_rawprogram(doc.as_bytes()).expect_err("must be refused")
    }

    #[test]
    fn hostile_numbers_are_refused_with_the_attribute_named() {
        let huge = prog(&OK_ATTRS.replace("\"34\"", "\"99999999999999999999999\""));
        let e = err_of(&huge);
        assert!(matches!(
            *e.problem,
            Problem::BadNumber {
                attr: "start_sector",
                problem: NumberProblem::Overflow,
                ..
            }
        ));
        let msg = e.to_string();
        assert!(msg.contains("entry 1 (<program> on line 3)"), "{msg}");
        assert!(msg.contains("start_sector"), "{msg}");

        let neg = err_of(&prog(&OK_ATTRS.replace("\"34\"", "\"-1\"")));
        assert!(matches!(
            *neg.problem,
            Problem::BadNumber {
                attr: "start_sector",
                problem: NumberProblem::Negative,
                ..
            }
        ));
        let neg = err_of(&prog(&OK_ATTRS.replace("\"8\"", "\"-8\"")));
        assert!(matches!(
            *neg.problem,
            Problem::BadNumber {
                attr: "num_partition_sectors",
                problem: NumberProblem::Negative,
                ..
            }
        ));
        // Fits in u64 but the byte extent does not.
        let e = err_of(&prog(&OK_ATTRS.replace("\"8\"", "\"0x100000000000000\"")));
        assert!(matches!(
            *e.problem,
            Problem::BadNumber {
                attr: "num_partition_sectors",
                problem: NumberProblem::Overflow,
                ..
            }
        ));
        let e = err_of(&prog(
            &OK_ATTRS.replace("\"34\"", "\"18446744073709551615\""),
        ));
        assert!(matches!(
            *e.problem,
            Problem::BadNumber {
                attr: "start_sector",
                ..
            }
        ));
        let e = err_of(&prog(&OK_ATTRS.replace("\"512\"", "\"500\"")));
        assert!(matches!(
            *e.problem,
            Problem::BadNumber {
                attr: "SECTOR_SIZE_IN_BYTES",
                problem: NumberProblem::OutOfRange,
                ..
            }
        ));
        let e = err_of(&prog(&OK_ATTRS.replace(
            "physical_partition_number=\"0\"",
            "physical_partition_number=\"4294967296\"",
        )));
        assert!(matches!(
            *e.problem,
            Problem::BadNumber {
                attr: "physical_partition_number",
                ..
            }
        ));
        let e = err_of(&prog(&format!("{OK_ATTRS} sparse=\"maybe\"")));
        assert!(matches!(
            *e.problem,
            Problem::BadValue { attr: "sparse", .. }
        ));
        let e = err_of(&prog(&OK_ATTRS.replace("\"34\"", "\"FOO+1\"")));
        assert!(matches!(
            *e.problem,
            Problem::BadNumber {
                attr: "start_sector",
                ..
            }
        ));
        let e = err_of(&prog(
            &OK_ATTRS.replace("\"34\"", "\"NUM_DISK_SECTORS-(1\""),
        ));
        assert!(matches!(
            *e.problem,
            Problem::BadValue {
                attr: "start_sector",
                ..
            }
        ));
    }

    #[test]
    fn hostile_paths_and_text_are_refused() {
        let e = err_of(&prog(&OK_ATTRS.replace("a.bin", "/dev/sda")));
        assert!(matches!(
            *e.problem,
            Problem::BadPath {
                problem: PathProblem::Absolute,
                ..
            }
        ));
        assert!(e.to_string().contains("absolute"));
        let e = err_of(&prog(&OK_ATTRS.replace("a.bin", "a&#0;b")));
        // quick-xml may refuse the character reference itself; either way it is refused.
        assert!(matches!(
            *e.problem,
            Problem::BadPath {
                problem: PathProblem::Nul,
                ..
            } | Problem::Xml(_)
                | Problem::ControlChars { .. }
        ));
        let e = err_of(&prog(&format!("{OK_ATTRS} label=\"x&#27;[2J\"")));
        assert!(matches!(
            *e.problem,
            Problem::ControlChars { .. } | Problem::Xml(_)
        ));
        let e = err_of(&prog(&format!("{OK_ATTRS} START_SECTOR=\"5\"")));
        assert!(matches!(
            *e.problem,
            Problem::DuplicateAttr {
                attr: "start_sector",
                ..
            }
        ));
        let e = err_of(&prog(
            "SECTOR_SIZE_IN_BYTES=\"512\" physical_partition_number=\"0\" start_sector=\"0\"",
        ));
        assert!(matches!(
            *e.problem,
            Problem::MissingAttr {
                attr: "num_partition_sectors",
                ..
            }
        ));
        assert!(e.to_string().contains("missing"));
    }

    #[test]
    fn raw_nul_and_escape_bytes_in_attributes_are_refused() {
        let doc = prog(OK_ATTRS).replace("a.bin", "a\0b.bin");
        let e = parse_rawprogram(doc.as_bytes()).unwrap_err();
        assert!(
            matches!(&*e.problem, Problem::ControlChars { attr, .. } if attr == "filename"),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "rawprogram file: entry 1 (<program> on line 3): attribute filename contains control \
             characters"
        );
        let doc = prog(&format!("{OK_ATTRS} label=\"x\u{1b}[2J\""));
        let e = parse_rawprogram(doc.as_bytes()).unwrap_err();
        assert!(
            matches!(&*e.problem, Problem::ControlChars { attr, .. } if attr == "label"),
            "{e}"
        );
    }

    #[test]
    fn a_file_at_the_element_limit_still_parses() {
        let doc = wrap(&"<erase/>".repeat(Limits::FILE.max_elements - 1));
        let entries = parse_rawprogram(doc.as_bytes()).unwrap();
        assert_eq!(entries.len(), Limits::FILE.max_elements - 1);
        assert!(entries[0].as_erase().unwrap().missing_sector_size());
    }

    #[test]
    fn structure_errors() {
        assert!(matches!(*err_of("").problem, Problem::NoRoot { .. }));
        assert!(matches!(
            *err_of("<patches/>").problem,
            Problem::WrongRoot { .. }
        ));
        assert!(matches!(
            *err_of("<data/><data/>").problem,
            Problem::SecondRoot { .. } | Problem::Xml(_)
        ));
        let nested = wrap(&format!(
            "<program {OK_ATTRS}><program {OK_ATTRS}/></program>"
        ));
        assert!(matches!(*err_of(&nested).problem, Problem::Nested { .. }));
        let deep = "<data>".to_string() + &"<x>".repeat(50) + &"</x>".repeat(50) + "</data>";
        assert!(matches!(
            *err_of(&deep).problem,
            Problem::Xml(XmlError::TooLarge(..))
        ));
        let many = wrap(&"<nop/>".repeat(100_001));
        assert!(matches!(
            *err_of(&many).problem,
            Problem::Xml(XmlError::TooLarge("elements", _))
        ));
        assert!(matches!(*err_of("<data><program").problem, Problem::Xml(_)));
        // A patch file holds only <patch>.
        let e = parse_patch(b"<patches><program a=\"1\"/></patches>").unwrap_err();
        assert!(matches!(*e.problem, Problem::UnknownElement { .. }));
        assert_eq!(e.kind, XmlFileKind::Patch);
    }

    #[test]
    fn unknown_elements_and_attributes_are_kept() {
        let doc = wrap(&format!(
            "<!-- c --><vendor vendor=\"quectel\" cmd=\"x\"/>\n<program {OK_ATTRS} slot=\"0\" UNSPARSE_FILE_SIZE=\"9\"/>\n<read a=\"1\"/>\n<erase c_project_name=\"EM12\"/>"
        ));
        let entries = parse_rawprogram(doc.as_bytes()).unwrap();
        assert_eq!(entries.len(), 4);
        match &entries[0] {
            RawEntry::Other(o) => {
                assert_eq!(o.name, "vendor");
                assert_eq!(o.attrs.len(), 2);
                assert_eq!(o.line, Some(3));
            }
            other => panic!("{other:?}"),
        }
        let p = entries[1].as_program().unwrap();
        assert_eq!(
            p.extra,
            vec![
                ("slot".to_string(), "0".to_string()),
                ("UNSPARSE_FILE_SIZE".to_string(), "9".to_string())
            ]
        );
        assert_eq!(p.display_name, "a");
        assert_eq!(entries[2].element_name(), "read");
        let e = entries[3].as_erase().unwrap();
        assert!(e.missing_sector_size());
        assert!(e.is_whole_partition());
        assert_eq!(e.extra.len(), 1);
        assert_eq!(e.display_name, "whole partition");
        // 0x, trailing dots and an unnamed entry.
        let doc = prog("SECTOR_SIZE_IN_BYTES=\"0x1000\" num_partition_sectors=\"640.\" physical_partition_number=\"0\" start_sector=\"0x10\" filename=\"\"");
        let p = parse_rawprogram(doc.as_bytes()).unwrap()[0]
            .as_program()
            .unwrap()
            .clone();
        assert_eq!((p.sector_size, p.num_partition_sectors), (4096, 640));
        assert_eq!(p.display_name, "p0 sector 16");
        // <patch> may also sit in <data>.
        let doc = "<data><patch SECTOR_SIZE_IN_BYTES=\"512\" byte_offset=\"0\" filename=\"DISK\" physical_partition_number=\"0\" size_in_bytes=\"9\" start_sector=\"1\" value=\"0\"/></data>";
        let e = parse_patch(doc.as_bytes()).unwrap_err();
        assert!(matches!(
            *e.problem,
            Problem::BadNumber {
                attr: "size_in_bytes",
                ..
            }
        ));
    }

    #[test]
    fn error_converts_to_a_crate_error_for_people() {
        let e = err_of(&prog(&OK_ATTRS.replace("a.bin", "/etc/shadow"))).in_file("rawprogram0.xml");
        let msg = e.to_string();
        assert!(
            msg.starts_with("rawprogram file rawprogram0.xml: entry 1"),
            "{msg}"
        );
        let ce: crate::Error = e.into();
        assert_eq!(ce.kind, crate::ErrorKind::Failure);
        assert!(ce.what.contains("rawprogram0.xml"));
        assert_eq!(
            ce.why,
            "qrescue will not flash a package it cannot fully understand"
        );
        assert!(!ce.next.is_empty());
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let v = "9".repeat(10_000);
        let e = err_of(&prog(&OK_ATTRS.replace("\"34\"", &format!("\"{v}\""))));
        assert!(e.to_string().len() < 400);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_rawprogram(&bytes);
            let _ = parse_patch(&bytes);
        }

        #[test]
        fn xmlish_text_never_panics(s in "(<data>|<patches>|<program |<erase |<patch |/>|</data>|</patches>|[a-zA-Z_]{1,20}=\"[-0-9A-Za-z_.()*+\\\\/:]{0,24}\" |<!--|-->|\n){0,40}") {
            let _ = parse_rawprogram(s.as_bytes());
            let _ = parse_patch(s.as_bytes());
        }

        #[test]
        fn any_attribute_value_is_parsed_or_refused(v in "[-0-9a-zA-Z_.()*+ x/\\\\:]{0,30}") {
            for key in ["start_sector", "num_partition_sectors", "SECTOR_SIZE_IN_BYTES", "filename", "file_sector_offset", "PAGES_PER_BLOCK", "last_sector", "sparse"] {
                let attrs = format!("{} {key}=\"{v}\"", OK_ATTRS.replace(&format!("{key}="), "x_="));
                let _ = parse_rawprogram(prog(&attrs).as_bytes());
            }
        }

        #[test]
        fn numbers_round_trip(n in any::<u64>()) {
            prop_assert_eq!(parse_number(&n.to_string()), Ok(n));
            prop_assert_eq!(parse_number(&format!("{n}.")), Ok(n));
            prop_assert_eq!(parse_number(&format!("0x{n:x}")), Ok(n));
        }
    }
}
