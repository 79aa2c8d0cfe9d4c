//! Package integrity: the vendor's md5.txt checked in full, and a sha256 manifest of every file
//! the plan uses, computed while streaming so each file is read once.
//!
//! - [`check_md5`] / [`check_md5_and_manifest`]: every file md5.txt lists is ok, mismatched
//!   (expected vs actual) or missing; files it does not list are reported as unlisted.
//! - [`HashingReader`]: wraps the reader the flash engine streams a file through and yields the
//!   sha256 (and optionally the MD5) of exactly the bytes that went to the device.
//! - [`Sha256Manifest`]: path → sha256 + size, serialisable, to record in a journal/backup and
//!   to compare the bytes sent with the bytes checked.
//!
//! Memory stays bounded: files are hashed in 1 MiB pieces.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::package::md5txt::{parse_md5txt, SkippedLine};
use crate::package::source::{parent_dir, PackageFile, PackageFiles};
use crate::{Error, ErrorKind};

/// Largest md5.txt read (real ones are about 1 KiB).
pub const MAX_MD5TXT_BYTES: u64 = 1 << 20;

/// The digests of one stream of bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digests {
    pub size: u64,
    /// 64 lower-case hex digits.
    pub sha256: String,
    /// 32 upper-case hex digits (as md5.txt writes them), when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub md5: Option<String>,
}

/// A reader that hashes everything read through it.
///
/// When the stream was opened at an offset (a resumed transfer), the digests cover only the
/// bytes read from that offset on.
pub struct HashingReader<R> {
    inner: R,
    sha: Sha256,
    md5: Option<Md5>,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    /// Hash with sha256 only.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            sha: Sha256::new(),
            md5: None,
            bytes: 0,
        }
    }

    /// Hash with sha256 and MD5 together.
    pub fn with_md5(inner: R) -> Self {
        HashingReader {
            md5: Some(Md5::new()),
            ..Self::new(inner)
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// The digests of everything read.
    pub fn finish(self) -> Digests {
        Digests {
            size: self.bytes,
            sha256: hex::encode(self.sha.finalize()),
            md5: self.md5.map(|m| hex::encode_upper(m.finalize())),
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        if let Some(m) = self.md5.as_mut() {
            m.update(&buf[..n]);
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

/// One file in a [`Sha256Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub sha256: String,
    pub size: u64,
}

/// Package-relative path → sha256 and size of every file a plan uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sha256Manifest {
    pub files: BTreeMap<String, ManifestEntry>,
}

impl Sha256Manifest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, path: impl Into<String>, d: &Digests) {
        self.files.insert(
            path.into(),
            ManifestEntry {
                sha256: d.sha256.clone(),
                size: d.size,
            },
        );
    }

    pub fn get(&self, path: &str) -> Option<&ManifestEntry> {
        self.files.get(path)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Check that a file streamed later (e.g. by the flash engine through a [`HashingReader`])
    /// holds the bytes that were checked: a changed file between check and flash is refused.
    pub fn verify(&self, path: &str, d: &Digests) -> crate::Result<()> {
        let Some(e) = self.files.get(path) else {
            return Err(Error::failure(
                format!("{path} is not in the package manifest"),
                "only files that were checked before flashing may be sent",
                "This is a bug in qrescue; please report it",
            ));
        };
        if e.size != d.size || e.sha256 != d.sha256 {
            return Err(Error::new(
                ErrorKind::VerifyMismatch,
                format!(
                    "{path} changed while in use: checked {} bytes sha256 {}, sent {} bytes sha256 {}",
                    e.size, e.sha256, d.size, d.sha256
                ),
                "the bytes sent to the modem are not the bytes that were checked",
                "Do not modify the package while flashing; check it and flash again",
            ));
        }
        Ok(())
    }
}

fn read_failed(files: &dyn PackageFiles, path: &str, e: std::io::Error) -> Error {
    Error::failure(
        format!("cannot read {path} in {}", files.describe()),
        "every file the plan uses is hashed before anything is written",
        "Check the package (permissions, a complete download)",
    )
    .with_source(e)
}

/// Hash one file in full: sha256 always, MD5 when `with_md5`.
pub fn digest_file(files: &dyn PackageFiles, path: &str, with_md5: bool) -> crate::Result<Digests> {
    let r = files.open(path, 0)?;
    let mut h = if with_md5 {
        HashingReader::with_md5(r)
    } else {
        HashingReader::new(r)
    };
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match h.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_failed(files, path, e)),
        }
    }
    Ok(h.finish())
}

/// The sha256 manifest of `paths` (each read once). A missing file is an error.
pub fn manifest_for(files: &dyn PackageFiles, paths: &[String]) -> crate::Result<Sha256Manifest> {
    let mut m = Sha256Manifest::new();
    for p in paths.iter().collect::<BTreeSet<_>>() {
        let d = digest_file(files, p, false)?;
        m.insert(p.clone(), &d);
    }
    Ok(m)
}

/// What md5.txt said about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Md5Status {
    Ok,
    Mismatch { actual: String },
    Missing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Md5FileCheck {
    /// Package-relative path of the file (as found; may differ in letter case from md5.txt).
    pub path: String,
    /// The path as md5.txt writes it.
    pub listed_as: String,
    pub line: u32,
    pub expected: String,
    #[serde(flatten)]
    pub status: Md5Status,
}

/// The md5.txt check of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Md5Report {
    /// Package-relative path of md5.txt.
    pub md5_path: String,
    pub version: Option<String>,
    /// FILE:START and FILE:END were both present.
    pub complete: bool,
    pub files: Vec<Md5FileCheck>,
    /// Lines read but not checked (targetfiles.zip, repeats).
    pub skipped: Vec<SkippedLine>,
    /// Files beside md5.txt (and below it) that it does not list.
    pub unlisted: Vec<String>,
    pub ok: usize,
    pub mismatched: usize,
    pub missing: usize,
}

impl Md5Report {
    /// No mismatch and nothing missing.
    pub fn all_ok(&self) -> bool {
        self.mismatched == 0 && self.missing == 0
    }

    pub fn mismatches(&self) -> impl Iterator<Item = &Md5FileCheck> {
        self.files
            .iter()
            .filter(|f| matches!(f.status, Md5Status::Mismatch { .. }))
    }

    pub fn missing_files(&self) -> impl Iterator<Item = &Md5FileCheck> {
        self.files.iter().filter(|f| f.status == Md5Status::Missing)
    }

    /// One line for people: `md5.txt lists 18 files: 4 ok, 0 wrong, 14 missing; 1 line skipped; 0 unlisted`.
    pub fn summary(&self) -> String {
        format!(
            "{} lists {} files: {} ok, {} wrong, {} missing; {} line{} skipped; {} file{} not listed{}",
            self.md5_path,
            self.files.len(),
            self.ok,
            self.mismatched,
            self.missing,
            self.skipped.len(),
            if self.skipped.len() == 1 { "" } else { "s" },
            self.unlisted.len(),
            if self.unlisted.len() == 1 { "" } else { "s" },
            if self.complete {
                ""
            } else {
                " (md5.txt lacks FILE:START or FILE:END and may be cut short)"
            },
        )
    }
}

/// Find `want` in the listing: exactly, else by a unique case-insensitive match (packages are
/// made on Windows, where `\update\ENPRG9x07.mbn` and `enprg9x07.mbn` are the same file).
fn find_listed<'a>(listing: &'a BTreeMap<String, u64>, want: &str) -> Option<&'a str> {
    if let Some((k, _)) = listing.get_key_value(want) {
        return Some(k);
    }
    let mut hits = listing.keys().filter(|k| k.eq_ignore_ascii_case(want));
    match (hits.next(), hits.next()) {
        (Some(k), None) => Some(k),
        _ => None,
    }
}

/// Check md5.txt (at `md5_path`, package-relative): see [`check_md5_and_manifest`].
pub fn check_md5(files: &dyn PackageFiles, md5_path: &str) -> crate::Result<Md5Report> {
    Ok(check_md5_and_manifest(files, md5_path, &[])?.0)
}

/// Check md5.txt and build the sha256 manifest of `plan_files` in one pass: a file both listed
/// and used by the plan is read once, with MD5 and sha256 computed together. A listed file that
/// is absent is reported missing (not an error); a plan file that is absent is an error.
pub fn check_md5_and_manifest(
    files: &dyn PackageFiles,
    md5_path: &str,
    plan_files: &[String],
) -> crate::Result<(Md5Report, Sha256Manifest)> {
    let text = files.read_all(md5_path, MAX_MD5TXT_BYTES)?;
    let parsed = parse_md5txt(&text).map_err(|e| e.into_error(md5_path))?;
    let listing: BTreeMap<String, u64> = files
        .list()?
        .into_iter()
        .map(|PackageFile { path, size }| (path, size))
        .collect();
    let base = parent_dir(md5_path);
    let under_base = |p: &str| -> bool { base.is_empty() || p.starts_with(&format!("{base}/")) };
    let full = |rel: &str| -> String {
        if base.is_empty() {
            rel.to_string()
        } else {
            format!("{base}/{rel}")
        }
    };

    let plan: BTreeSet<&String> = plan_files.iter().collect();
    let mut manifest = Sha256Manifest::new();
    let mut checks = Vec::new();
    let mut listed_found: BTreeSet<String> = BTreeSet::new();
    let (mut ok, mut mismatched, mut missing) = (0, 0, 0);
    for e in &parsed.entries {
        let want = full(&e.path);
        let Some(found) = find_listed(&listing, &want) else {
            missing += 1;
            checks.push(Md5FileCheck {
                path: want,
                listed_as: e.listed_as.clone(),
                line: e.line,
                expected: e.md5.clone(),
                status: Md5Status::Missing,
            });
            continue;
        };
        let found = found.to_string();
        let d = digest_file(files, &found, true)?;
        if plan.contains(&found) {
            manifest.insert(found.clone(), &d);
        }
        let actual = d.md5.unwrap_or_default();
        let status = if actual == e.md5 {
            ok += 1;
            Md5Status::Ok
        } else {
            mismatched += 1;
            Md5Status::Mismatch { actual }
        };
        listed_found.insert(found.clone());
        checks.push(Md5FileCheck {
            path: found,
            listed_as: e.listed_as.clone(),
            line: e.line,
            expected: e.md5.clone(),
            status,
        });
    }
    for p in plan {
        if manifest.get(p).is_none() {
            let d = digest_file(files, p, false)?;
            manifest.insert(p.clone(), &d);
        }
    }
    let unlisted = listing
        .keys()
        .filter(|p| under_base(p) && p.as_str() != md5_path && !listed_found.contains(*p))
        .cloned()
        .collect();
    Ok((
        Md5Report {
            md5_path: md5_path.to_string(),
            version: parsed.version,
            complete: parsed.has_start && parsed.has_end,
            files: checks,
            skipped: parsed.skipped,
            unlisted,
            ok,
            mismatched,
            missing,
        },
        manifest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::source::DirPackage;
    use std::path::Path;

    fn real_pkg() -> DirPackage {
        DirPackage::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/realpkg/eg25g"))
            .unwrap()
    }

    const FOUR: [&str; 4] = [
        "contents.xml",
        "update/firehose/patch_p2K_b128K.xml",
        "update/firehose/rawprogram_nand_p2K_b128K_update.xml",
        "update/partition_nand.xml",
    ];

    #[test]
    fn the_real_eg25g_md5_txt_verifies_its_four_xml_files() {
        let r = check_md5(&real_pkg(), "md5.txt").unwrap();
        assert_eq!(r.files.len(), 18);
        assert_eq!(r.ok, 4);
        assert_eq!(r.mismatched, 0);
        assert_eq!(r.missing, 14);
        assert!(r.complete);
        let ok: Vec<&str> = r
            .files
            .iter()
            .filter(|f| f.status == Md5Status::Ok)
            .map(|f| f.path.as_str())
            .collect();
        let mut want = FOUR.to_vec();
        want.sort_by_key(|p| r.files.iter().position(|f| f.path == *p));
        assert_eq!(ok, want);
        assert!(r
            .missing_files()
            .any(|f| f.path == "update/firehose/prog_nand_firehose_9x07.mbn"));
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].text.contains("targetfiles.zip"));
        assert!(r.unlisted.is_empty(), "{:?}", r.unlisted);
        assert!(!r.all_ok());
        assert!(r
            .summary()
            .contains("4 ok, 0 wrong, 14 missing; 1 line skipped"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["files"][0]["status"], "ok");
    }

    #[test]
    fn mismatch_unlisted_case_and_one_pass_manifest() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("pkg");
        std::fs::create_dir_all(root.join("update")).unwrap();
        std::fs::write(root.join("update/a.bin"), b"hello").unwrap();
        std::fs::write(root.join("update/B.BIN"), b"world").unwrap();
        std::fs::write(root.join("notes.pdf"), b"pdf").unwrap();
        std::fs::write(root.join("plan_only.bin"), b"p").unwrap();
        let md5 = |b: &[u8]| hex::encode_upper(Md5::digest(b));
        let text = format!(
            "VERSION:1.0\r\nFILE:START\r\nFILE:\\update\\a.bin:{}\r\nFILE:\\update\\b.bin:{}\r\nFILE:\\update\\gone.bin:{}\r\nFILE:END\r\n",
            md5(b"hello"),
            md5(b"not world"),
            md5(b"x")
        );
        std::fs::write(root.join("md5.txt"), text).unwrap();
        let p = DirPackage::open(&root).unwrap();
        let plan = vec!["update/a.bin".to_string(), "plan_only.bin".to_string()];
        let (r, m) = check_md5_and_manifest(&p, "md5.txt", &plan).unwrap();
        assert_eq!((r.ok, r.mismatched, r.missing), (1, 1, 1));
        let bad = r.mismatches().next().unwrap();
        assert_eq!(bad.path, "update/B.BIN");
        assert_eq!(bad.listed_as, "\\update\\b.bin");
        assert_eq!(
            bad.status,
            Md5Status::Mismatch {
                actual: md5(b"world")
            }
        );
        assert_eq!(r.unlisted, ["notes.pdf", "plan_only.bin"]);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m.get("update/a.bin").unwrap().sha256,
            hex::encode(Sha256::digest(b"hello"))
        );
        assert_eq!(m.get("plan_only.bin").unwrap().size, 1);
        // A plan file that does not exist is an error.
        let e = check_md5_and_manifest(&p, "md5.txt", &["nope.bin".to_string()]).unwrap_err();
        assert!(e.what.contains("no file nope.bin"), "{e}");
        // The manifest round-trips through JSON.
        let back: Sha256Manifest =
            serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn md5_in_a_sub_folder_checks_paths_below_it() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("zipped");
        std::fs::create_dir_all(root.join("EC25/update")).unwrap();
        std::fs::write(root.join("EC25/update/x.bin"), b"x").unwrap();
        std::fs::write(root.join("outside.txt"), b"o").unwrap();
        std::fs::write(
            root.join("EC25/md5.txt"),
            format!("FILE:\\update\\x.bin:{}\n", hex::encode(Md5::digest(b"x"))),
        )
        .unwrap();
        let r = check_md5(&DirPackage::open(&root).unwrap(), "EC25/md5.txt").unwrap();
        assert_eq!(r.ok, 1);
        assert!(r.all_ok());
        assert!(r.unlisted.is_empty());
        assert!(!r.complete);
        assert!(r.summary().contains("may be cut short"));
    }

    #[test]
    fn a_malformed_md5_txt_is_an_error_naming_the_line() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("md5.txt"),
            "FILE:START\nFILE:\\a:0123456789ABCDEF\nFILE:END\n",
        )
        .unwrap();
        let e = check_md5(&DirPackage::open(d.path()).unwrap(), "md5.txt").unwrap_err();
        assert!(e.what.contains("line 2"), "{e}");
        assert!(e.what.contains("all 32"), "{e}");
    }

    #[test]
    fn hashing_reader_and_verify() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let mut h = HashingReader::with_md5(&data[..]);
        let mut sink = Vec::new();
        std::io::copy(&mut h, &mut sink).unwrap();
        assert_eq!(h.bytes_read(), 100_000);
        let d = h.finish();
        assert_eq!(d.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(d.md5.unwrap(), hex::encode_upper(Md5::digest(&data)));
        let mut m = Sha256Manifest::new();
        let d = {
            let mut h = HashingReader::new(&data[..]);
            std::io::copy(&mut h, &mut std::io::sink()).unwrap();
            h.finish()
        };
        assert!(d.md5.is_none());
        m.insert("update/x", &d);
        m.verify("update/x", &d).unwrap();
        let mut other = d.clone();
        other.size -= 1;
        let e = m.verify("update/x", &other).unwrap_err();
        assert_eq!(e.kind, ErrorKind::VerifyMismatch);
        assert!(m.verify("update/y", &d).is_err());
    }
}
