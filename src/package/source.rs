//! Where a package's files come from: a folder on disk ([`DirPackage`]) or a `.zip` read in place
//! (see `package::zip`). Everything above this seam — discovery, integrity, the plan and the flash
//! engine — names files by their *package-relative* path (`update/sbl1.mbn`, `/` separators) and
//! opens them through [`PackageFiles`], so a zip is streamed and never unpacked to disk.
//!
//! Confinement is enforced here: a relative path is resolved lexically ([`join_relative`]) and may
//! not leave the package root, and the folder implementation also refuses symlinks whose target
//! lies outside the root.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::package::rawprogram::PackagePath;
use crate::{Error, ErrorKind};

/// One regular file of a package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageFile {
    /// Package-relative path with `/` separators, e.g. `update/firehose/patch_p2K_b128K.xml`.
    pub path: String,
    pub size: u64,
}

/// Read access to a package's files. Implementations must refuse any path that leaves the root.
pub trait PackageFiles: Send + Sync + std::fmt::Debug {
    /// One line for people: `folder /home/x/EC25EFAR06A08M4G` or `zip /tmp/x.zip`.
    fn describe(&self) -> String;

    /// The package's own name as the person saw it (the folder or zip file name without `.zip`),
    /// e.g. `EG25GGBR07A08M2G_30.006.30.006`; discovery reads revision hints from it.
    fn origin_name(&self) -> Option<String> {
        None
    }

    /// Every regular file in the package, sorted by path.
    fn list(&self) -> crate::Result<Vec<PackageFile>>;

    /// The size of one file.
    fn size(&self, path: &str) -> crate::Result<u64>;

    /// Open one file for streaming, positioned at byte `offset`.
    fn open(&self, path: &str, offset: u64) -> crate::Result<Box<dyn Read + Send + '_>>;

    /// Read a whole (small) file, refusing anything above `limit` bytes.
    fn read_all(&self, path: &str, limit: u64) -> crate::Result<Vec<u8>> {
        let size = self.size(path)?;
        if size > limit {
            return Err(Error::failure(
                format!("{path} in {} is {size} bytes", self.describe()),
                format!("qrescue reads this kind of file whole and refuses anything above {limit} bytes"),
                "Check that this is the right package file",
            ));
        }
        let mut out = Vec::with_capacity(size as usize);
        self.open(path, 0)?
            .take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| read_error(self, path, e))?;
        Ok(out)
    }
}

fn read_error(p: &(impl PackageFiles + ?Sized), path: &str, e: std::io::Error) -> Error {
    Error::failure(
        format!("cannot read {path} in {}", p.describe()),
        "the package file could not be read",
        "Check the package (permissions, a complete download)",
    )
    .with_source(e)
}

/// Resolve `path` (as written in an XML that sits in the package folder `dir`, e.g.
/// `update/firehose`) to a package-relative path, lexically. `..` may climb back towards the root
/// but never above it: `update/firehose` + `..\sbl1.mbn` → `update/sbl1.mbn`;
/// `update` + `../../etc/passwd` → refused.
pub fn join_relative(dir: &str, path: &PackagePath) -> crate::Result<String> {
    let mut parts: Vec<&str> = dir
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    for c in path.components() {
        match c {
            "." | "" => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(escape_error(dir, path.as_str()));
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(escape_error(dir, path.as_str()));
    }
    Ok(parts.join("/"))
}

fn escape_error(dir: &str, path: &str) -> Error {
    Error::new(
        ErrorKind::Failure,
        format!(
            "the package names the file {path} (from the folder '{}'), which lies outside the package",
            if dir.is_empty() { "." } else { dir }
        ),
        "a package may only use its own files; a path that climbs out of it could read or overwrite anything on this computer",
        "Refusing this package. Check where it came from and use the vendor's original",
    )
}

/// The folder of a package-relative path (`update/firehose/x.xml` → `update/firehose`).
pub fn parent_dir(path: &str) -> &str {
    path.rfind('/').map(|i| &path[..i]).unwrap_or("")
}

/// A package unpacked in a folder.
#[derive(Debug, Clone)]
pub struct DirPackage {
    root: PathBuf,
    /// The canonical root, for confinement checks.
    real_root: PathBuf,
}

/// Upper bound on files listed in one package folder (real packages hold a few dozen).
pub const MAX_FILES: usize = 100_000;
/// Upper bound on folder depth while listing.
const MAX_DEPTH: usize = 16;

impl DirPackage {
    pub fn open(root: &Path) -> crate::Result<DirPackage> {
        let real_root = root.canonicalize().map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!("cannot open the package folder {}", root.display()),
                "the firmware package is read from this folder",
                "Check the path and its permissions",
            )
            .with_source(e)
        })?;
        if !real_root.is_dir() {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("{} is not a folder", root.display()),
                "a package is a folder (or a .zip)",
                "Give the package's top folder (the one with md5.txt and update/)",
            ));
        }
        Ok(DirPackage {
            root: root.to_path_buf(),
            real_root,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The real (symlinks followed) file for a package-relative path, confined to the root.
    pub fn real_path(&self, path: &str) -> crate::Result<PathBuf> {
        let pp = PackagePath::parse(path)
            .map_err(|p| {
                Error::failure(
                    format!("the package path {path:?} {p}"),
                    "package files are named by plain relative paths",
                    "Check the package XML",
                )
            })?
            .ok_or_else(|| {
                Error::failure(
                    "an empty package path",
                    "a file was expected",
                    "Check the package XML",
                )
            })?;
        let rel = join_relative("", &pp)?;
        let candidate = self.real_root.join(&rel);
        let real = candidate.canonicalize().map_err(|e| {
            Error::failure(
                format!("the package has no file {rel} ({})", candidate.display()),
                "the plan needs this file",
                "Use the complete firmware package (check that it was fully extracted)",
            )
            .with_source(e)
        })?;
        if !real.starts_with(&self.real_root) {
            return Err(Error::failure(
                format!(
                    "{rel} resolves to {} outside the package folder {}",
                    real.display(),
                    self.real_root.display()
                ),
                "a package may only use its own files; a symlink that leaves it could read anything on this computer",
                "Refusing this package. Check where it came from",
            ));
        }
        if !real.is_file() {
            return Err(Error::failure(
                format!("{rel} in the package is not a regular file"),
                "the plan needs a file here",
                "Use the complete firmware package",
            ));
        }
        Ok(real)
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        depth: usize,
        out: &mut Vec<PackageFile>,
    ) -> crate::Result<()> {
        if depth > MAX_DEPTH {
            return Err(Error::failure(
                format!("the package folder nests deeper than {MAX_DEPTH} levels at {rel}"),
                "real packages are two or three levels deep",
                "Check that this is a firmware package folder",
            ));
        }
        let rd = std::fs::read_dir(dir).map_err(|e| {
            Error::failure(
                format!("cannot list {}", dir.display()),
                "the package folder must be readable",
                "Check permissions",
            )
            .with_source(e)
        })?;
        for entry in rd {
            let entry = entry.map_err(|e| {
                Error::failure(
                    format!("cannot list {}", dir.display()),
                    "the package folder must be readable",
                    "Check permissions",
                )
                .with_source(e)
            })?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue; // not UTF-8: no XML can name it
            };
            let child_rel = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            // Symlinks are listed only when they stay inside the root.
            let path = entry.path();
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if !real.starts_with(&self.real_root) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&real) else {
                continue;
            };
            if meta.is_dir() {
                if entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
                    continue; // never follow directory links (loops)
                }
                self.walk(&path, &child_rel, depth + 1, out)?;
            } else if meta.is_file() {
                out.push(PackageFile {
                    path: child_rel,
                    size: meta.len(),
                });
            }
            if out.len() > MAX_FILES {
                return Err(Error::failure(
                    format!(
                        "the package folder {} holds more than {MAX_FILES} files",
                        self.root.display()
                    ),
                    "real packages hold a few dozen files",
                    "Point qrescue at the package folder itself, not a parent folder",
                ));
            }
        }
        Ok(())
    }
}

impl PackageFiles for DirPackage {
    fn describe(&self) -> String {
        format!("folder {}", self.root.display())
    }

    fn origin_name(&self) -> Option<String> {
        self.real_root
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_string)
    }

    fn list(&self) -> crate::Result<Vec<PackageFile>> {
        let mut out = Vec::new();
        self.walk(&self.real_root, "", 0, &mut out)?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn size(&self, path: &str) -> crate::Result<u64> {
        let real = self.real_path(path)?;
        std::fs::metadata(&real)
            .map(|m| m.len())
            .map_err(|e| read_error(self, path, e))
    }

    fn open(&self, path: &str, offset: u64) -> crate::Result<Box<dyn Read + Send + '_>> {
        let real = self.real_path(path)?;
        let mut f = File::open(&real).map_err(|e| read_error(self, path, e))?;
        if offset > 0 {
            f.seek(SeekFrom::Start(offset))
                .map_err(|e| read_error(self, path, e))?;
        }
        Ok(Box::new(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pp(s: &str) -> PackagePath {
        PackagePath::parse(s).unwrap().unwrap()
    }

    #[test]
    fn dotdot_from_firehose_reaches_update() {
        assert_eq!(
            join_relative("update/firehose", &pp("..\\sbl1.mbn")).unwrap(),
            "update/sbl1.mbn"
        );
        assert_eq!(
            join_relative("", &pp("rawprogram0.xml")).unwrap(),
            "rawprogram0.xml"
        );
        assert!(join_relative("update", &pp("../../etc/passwd")).is_err());
        assert!(join_relative("", &pp("../x")).is_err());
    }

    #[test]
    fn folder_lists_reads_and_confines() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("pkg/update/firehose")).unwrap();
        std::fs::write(d.path().join("pkg/update/sbl1.mbn"), b"0123456789").unwrap();
        std::fs::write(d.path().join("pkg/md5.txt"), b"x").unwrap();
        std::fs::write(d.path().join("secret"), b"s").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), d.path().join("pkg/update/link"))
            .unwrap();
        let p = DirPackage::open(&d.path().join("pkg")).unwrap();
        let files: Vec<String> = p.list().unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(files, vec!["md5.txt", "update/sbl1.mbn"]);
        assert_eq!(p.size("update/sbl1.mbn").unwrap(), 10);
        let mut s = String::new();
        p.open("update/sbl1.mbn", 4)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "456789");
        let e = p.open("update/link", 0).err().unwrap();
        assert!(e.what.contains("outside the package folder"), "{e}");
        assert!(p.size("update/missing").is_err());
        assert!(p.read_all("update/sbl1.mbn", 5).is_err());
    }
}
