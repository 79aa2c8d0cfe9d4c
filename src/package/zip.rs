//! A `.zip` firmware package read in place: entries are listed from the central directory and
//! streamed on demand, never unpacked to disk.
//!
//! A zip from the internet is untrusted input. [`ZipPackage::open`] refuses, with an error that
//! says why, any archive holding:
//! - entry names that are absolute (`/etc/x`, `\x`), carry a drive letter or colon (`C:x`), climb
//!   with `..`, or contain NUL or control characters;
//! - symlinks or other special files, encrypted entries, or compression methods other than
//!   stored and deflate;
//! - two entries with the same (normalised) name, or entries whose data overlap (the
//!   overlapping-file zip bomb);
//! - more than [`ZipLimits::max_entries`] entries (checked from the end record before the
//!   directory is parsed), an entry declared larger than [`ZipLimits::max_entry_bytes`], more than
//!   [`ZipLimits::max_total_bytes`] in all, or a declared size more than
//!   [`ZipLimits::max_ratio`] times its compressed size.
//!
//! While streaming, an entry that inflates past its declared size is cut off with an error, and
//! the CRC-32 of a whole entry is checked at its end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use zip::CompressionMethod;

use crate::package::source::{DirPackage, PackageFile, PackageFiles};
use crate::{Error, ErrorKind};

/// Bounds applied to a zip before anything is read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZipLimits {
    /// Entries in the archive, folders included (real packages hold a few dozen).
    pub max_entries: u64,
    /// Declared uncompressed size of one entry.
    pub max_entry_bytes: u64,
    /// Declared uncompressed size of all entries together.
    pub max_total_bytes: u64,
    /// Declared size ÷ compressed size of a deflated entry. Deflate cannot exceed about 1032:1,
    /// so anything above the default is a size that lies.
    pub max_ratio: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        ZipLimits {
            max_entries: 10_000,
            max_entry_bytes: 16 << 30,
            max_total_bytes: 64 << 30,
            max_ratio: 1100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Stored,
    Deflated,
}

#[derive(Debug, Clone)]
struct Entry {
    header_start: u64,
    data_start: u64,
    compressed: u64,
    size: u64,
    crc32: u32,
    method: Method,
}

/// A `.zip` package, read in place.
#[derive(Debug)]
pub struct ZipPackage {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

/// A zip entry name, normalised to a package-relative path, or why it was refused.
/// `Ok(None)` for a folder entry.
pub fn normalise_entry_name(raw: &str) -> Result<Option<String>, &'static str> {
    if raw.is_empty() {
        return Err("has an empty name");
    }
    if raw.len() > 4096 {
        return Err("has a name longer than 4096 bytes");
    }
    if raw.contains('\0') {
        return Err("has a NUL character in its name");
    }
    if raw.chars().any(char::is_control) {
        return Err("has control characters in its name");
    }
    let unified = raw.replace('\\', "/");
    if unified.starts_with('/') {
        return Err("is an absolute path");
    }
    if unified.contains(':') {
        return Err("names a drive letter or contains a colon");
    }
    let is_dir = unified.ends_with('/');
    let mut parts = Vec::new();
    for c in unified.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("climbs out of the archive with '..'"),
            c if c.len() > 255 => return Err("has a path component longer than 255 bytes"),
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return if is_dir {
            Ok(None)
        } else {
            Err("does not name a file")
        };
    }
    if is_dir {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFDIR: u32 = 0o040000;
const S_IFLNK: u32 = 0o120000;

fn hostile(zip: &Path, what: String) -> Error {
    Error::new(
        ErrorKind::Failure,
        format!("refusing the zip {}: {what}", zip.display()),
        "a firmware package zip holds plain files under plain relative names; this one could make a tool read or write outside the package, or exhaust memory and disk",
        "Do not use this file. Get the package again from the vendor (or unpack it yourself, inspect it, and give qrescue the folder)",
    )
}

fn too_big(zip: &Path, what: String) -> Error {
    Error::new(
        ErrorKind::Failure,
        format!("refusing the zip {}: {what}", zip.display()),
        "qrescue bounds what it reads from an archive so a damaged or hostile zip (a zip bomb) cannot run it out of time or memory",
        "If this really is a firmware package, unpack it with `unzip` into a folder and give qrescue the folder",
    )
}

fn damaged(zip: &Path, detail: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Failure,
        format!("cannot read the zip {}: {}", zip.display(), detail.into()),
        "the firmware package must be read completely and exactly",
        "Download the package again (a cut-off download looks like this), or unpack it and give qrescue the folder",
    )
}

fn le16(b: &[u8], at: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The number of entries the archive's end record declares (zip64 aware), read with bounded
/// I/O before the directory itself is parsed.
fn declared_entries(f: &mut File, len: u64) -> Result<u64, String> {
    const EOCD: &[u8] = b"PK\x05\x06";
    const LOCATOR: &[u8] = b"PK\x06\x07";
    const ZIP64_EOCD: &[u8] = b"PK\x06\x06";
    if len < 22 {
        return Err("the file is too short to be a zip".into());
    }
    let tail_len = len.min(22 + 65535 + 20);
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(len - tail_len))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|e| format!("cannot read its end: {e}"))?;
    let mut found = None;
    let mut fallback = None;
    for i in (0..=tail.len() - 22).rev() {
        if &tail[i..i + 4] == EOCD {
            fallback.get_or_insert(i);
            if i + 22 + le16(&tail, i + 20) as usize == tail.len() {
                found = Some(i);
                break;
            }
        }
    }
    let i = found
        .or(fallback)
        .ok_or("it has no end-of-directory record (not a zip, or cut off)")?;
    let count16 = le16(&tail, i + 10);
    if i >= 20 && &tail[i - 20..i - 16] == LOCATOR {
        let rec = le64(&tail, i - 20 + 8);
        let mut buf = [0u8; 56];
        f.seek(SeekFrom::Start(rec))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| format!("cannot read its zip64 end record: {e}"))?;
        if &buf[..4] != ZIP64_EOCD {
            return Err("its zip64 end record is not where the locator says".into());
        }
        return Ok(le64(&buf, 32));
    }
    if count16 == 0xFFFF {
        return Err("it declares 65535 entries but has no zip64 record".into());
    }
    Ok(count16)
}

impl ZipPackage {
    /// Open a zip with the default [`ZipLimits`].
    pub fn open(path: &Path) -> crate::Result<ZipPackage> {
        Self::open_with_limits(path, ZipLimits::default())
    }

    pub fn open_with_limits(path: &Path, limits: ZipLimits) -> crate::Result<ZipPackage> {
        let mut file = File::open(path).map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!("cannot open the package zip {}", path.display()),
                "the firmware package is read from this file",
                "Check the path and its permissions",
            )
            .with_source(e)
        })?;
        let len = file
            .metadata()
            .map_err(|e| damaged(path, e.to_string()))?
            .len();
        let declared = declared_entries(&mut file, len).map_err(|d| damaged(path, d))?;
        if declared > limits.max_entries {
            return Err(too_big(
                path,
                format!(
                    "it declares {declared} entries, more than the {} qrescue accepts",
                    limits.max_entries
                ),
            ));
        }
        file.seek(SeekFrom::Start(0))
            .map_err(|e| damaged(path, e.to_string()))?;
        let mut archive =
            zip::ZipArchive::new(BufReader::new(file)).map_err(|e| damaged(path, e.to_string()))?;
        if archive.len() as u64 != declared {
            return Err(hostile(
                path,
                format!(
                    "its directory lists {declared} entries but only {} distinct names: several entries share a name, so which one is used would depend on the tool",
                    archive.len()
                ),
            ));
        }
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let mut total: u64 = 0;
        for i in 0..archive.len() {
            let f = archive
                .by_index_raw(i)
                .map_err(|e| damaged(path, format!("entry {i}: {e}")))?;
            let raw = f.name().to_string();
            let name = normalise_entry_name(&raw)
                .map_err(|why| hostile(path, format!("the entry {raw:?} {why}")))?;
            if let Some(mode) = f.unix_mode() {
                match mode & S_IFMT {
                    0 | S_IFREG | S_IFDIR => {}
                    S_IFLNK => {
                        return Err(hostile(
                            path,
                            format!("the entry {raw:?} is a symbolic link"),
                        ))
                    }
                    other => {
                        return Err(hostile(
                            path,
                            format!("the entry {raw:?} is a special file (mode {other:o})"),
                        ))
                    }
                }
            }
            let Some(name) = name else {
                continue; // a folder
            };
            if f.encrypted() {
                return Err(Error::failure(
                    format!("the zip {} is password-protected ({raw})", path.display()),
                    "qrescue cannot read encrypted entries",
                    "Unpack it with the password (`unzip FILE`) and give qrescue the folder",
                ));
            }
            let method = match f.compression() {
                CompressionMethod::Stored => Method::Stored,
                CompressionMethod::Deflated => Method::Deflated,
                other => {
                    return Err(Error::failure(
                        format!(
                            "the entry {raw} of the zip {} uses the compression method {other:?}",
                            path.display()
                        ),
                        "qrescue streams stored and deflate entries only",
                        "Unpack the zip with `unzip` or `7z x` and give qrescue the folder",
                    ))
                }
            };
            let size = f.size();
            let compressed = f.compressed_size();
            if size > limits.max_entry_bytes {
                return Err(too_big(
                    path,
                    format!(
                        "the entry {raw} declares {size} bytes, more than the {} qrescue accepts for one file",
                        limits.max_entry_bytes
                    ),
                ));
            }
            total = total.saturating_add(size);
            if total > limits.max_total_bytes {
                return Err(too_big(
                    path,
                    format!(
                        "its entries declare more than {} bytes in all",
                        limits.max_total_bytes
                    ),
                ));
            }
            match method {
                Method::Stored if size != compressed => {
                    return Err(damaged(
                        path,
                        format!("the stored entry {raw} declares {size} bytes but holds {compressed}"),
                    ))
                }
                Method::Deflated
                    if size > 0
                        && (compressed == 0 || size / compressed.max(1) > limits.max_ratio) =>
                {
                    return Err(too_big(
                        path,
                        format!(
                            "the entry {raw} claims {size} bytes from {compressed} compressed bytes, a ratio above {}:1 (a zip bomb or a lying header)",
                            limits.max_ratio
                        ),
                    ))
                }
                _ => {}
            }
            let data_start = f
                .data_start()
                .ok_or_else(|| damaged(path, format!("the entry {raw} has no data offset")))?;
            let entry = Entry {
                header_start: f.header_start(),
                data_start,
                compressed,
                size,
                crc32: f.crc32(),
                method,
            };
            if entries.insert(name.clone(), entry).is_some() {
                return Err(hostile(
                    path,
                    format!("two entries are both named {name} (after turning \\ into /)"),
                ));
            }
        }
        // Entries must not share bytes: overlapping entries are how the worst zip bombs
        // multiply a small file into terabytes.
        let mut spans: Vec<(&String, &Entry)> = entries.iter().collect();
        spans.sort_by_key(|(_, e)| e.header_start);
        for w in spans.windows(2) {
            let (a, ea) = w[0];
            let (b, eb) = w[1];
            let end = ea.data_start.saturating_add(ea.compressed);
            if end > eb.header_start {
                return Err(hostile(
                    path,
                    format!(
                        "the entries {a} and {b} overlap in the archive (a zip bomb construction)"
                    ),
                ));
            }
        }
        if let Some((name, e)) = spans.last() {
            if e.data_start.saturating_add(e.compressed) > len {
                return Err(damaged(
                    path,
                    format!("the entry {name} runs past the end of the file"),
                ));
            }
        }
        Ok(ZipPackage {
            path: path.to_path_buf(),
            entries,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn entry(&self, path: &str) -> crate::Result<&Entry> {
        let norm = normalise_entry_name(path).ok().flatten();
        norm.as_deref()
            .and_then(|n| self.entries.get(n))
            .ok_or_else(|| {
                Error::failure(
                    format!("the package has no file {path} ({})", self.describe()),
                    "the plan needs this file",
                    "Use the complete firmware package",
                )
            })
    }
}

/// Streams one entry, refusing more bytes than declared and checking the CRC-32 at the end.
struct EntryReader<R> {
    inner: R,
    name: String,
    declared: u64,
    seen: u64,
    crc: Option<crc32fast::Hasher>,
    expected_crc: u32,
}

impl<R: Read> Read for EntryReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            if self.seen != self.declared {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "zip entry {} ended after {} of its {} declared bytes (damaged zip)",
                        self.name, self.seen, self.declared
                    ),
                ));
            }
            if let Some(crc) = self.crc.take() {
                let got = crc.finalize();
                if got != self.expected_crc {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "zip entry {} has CRC-32 {got:08x}, the zip says {:08x} (damaged zip)",
                            self.name, self.expected_crc
                        ),
                    ));
                }
            }
            return Ok(0);
        }
        self.seen += n as u64;
        if self.seen > self.declared {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "zip entry {} inflates past its declared {} bytes (damaged or hostile zip)",
                    self.name, self.declared
                ),
            ));
        }
        if let Some(crc) = self.crc.as_mut() {
            crc.update(&buf[..n]);
        }
        Ok(n)
    }
}

impl PackageFiles for ZipPackage {
    fn describe(&self) -> String {
        format!("zip {}", self.path.display())
    }

    fn origin_name(&self) -> Option<String> {
        let name = self.path.file_name()?.to_str()?;
        let stem = name
            .strip_suffix(".zip")
            .or_else(|| name.strip_suffix(".ZIP"))
            .unwrap_or(name);
        Some(stem.to_string())
    }

    fn list(&self) -> crate::Result<Vec<PackageFile>> {
        Ok(self
            .entries
            .iter()
            .map(|(path, e)| PackageFile {
                path: path.clone(),
                size: e.size,
            })
            .collect())
    }

    fn size(&self, path: &str) -> crate::Result<u64> {
        Ok(self.entry(path)?.size)
    }

    fn open(&self, path: &str, offset: u64) -> crate::Result<Box<dyn Read + Send + '_>> {
        let e = self.entry(path)?.clone();
        let read_err = |err: std::io::Error| {
            Error::failure(
                format!("cannot read {path} in {}", self.describe()),
                "the package file could not be read",
                "Check the zip (a complete download) or unpack it and give qrescue the folder",
            )
            .with_source(err)
        };
        let mut f = File::open(&self.path).map_err(read_err)?;
        if e.method == Method::Stored && offset > 0 {
            // Stored bytes can be reached directly; the CRC covers the whole entry, so a
            // partial read is not checked.
            let skip = offset.min(e.size);
            f.seek(SeekFrom::Start(e.data_start + skip))
                .map_err(read_err)?;
            return Ok(Box::new(EntryReader {
                inner: f.take(e.size - skip),
                name: path.to_string(),
                declared: e.size - skip,
                seen: 0,
                crc: None,
                expected_crc: e.crc32,
            }));
        }
        f.seek(SeekFrom::Start(e.data_start)).map_err(read_err)?;
        let raw = BufReader::with_capacity(64 << 10, f.take(e.compressed));
        let inner: Box<dyn Read + Send> = match e.method {
            Method::Stored => Box::new(raw),
            Method::Deflated => Box::new(flate2::read::DeflateDecoder::new(raw)),
        };
        let mut reader = EntryReader {
            inner,
            name: path.to_string(),
            declared: e.size,
            seen: 0,
            crc: Some(crc32fast::Hasher::new()),
            expected_crc: e.crc32,
        };
        if offset > 0 {
            let skipped = std::io::copy(&mut (&mut reader).take(offset), &mut std::io::sink())
                .map_err(read_err)?;
            if skipped < offset {
                return Err(Error::failure(
                    format!(
                        "cannot start reading {path} at byte {offset}: it holds only {skipped} bytes"
                    ),
                    "the package file is shorter than expected",
                    "Use the complete firmware package",
                ));
            }
        }
        Ok(Box::new(reader))
    }
}

/// Open a package: a folder, or a `.zip` (recognised by its first bytes, not its name).
pub fn open_package(path: &Path) -> crate::Result<Box<dyn PackageFiles>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("cannot open the package {}", path.display()),
            "the firmware package is read from there",
            "Check the path: give the package folder (the one with md5.txt and update/) or its .zip",
        )
        .with_source(e)
    })?;
    if meta.is_dir() {
        return Ok(Box::new(DirPackage::open(path)?));
    }
    let mut head = [0u8; 8];
    let n = File::open(path)
        .and_then(|mut f| {
            let mut n = 0;
            while n < head.len() {
                let k = f.read(&mut head[n..])?;
                if k == 0 {
                    break;
                }
                n += k;
            }
            Ok(n)
        })
        .map_err(|e| {
            Error::new(
                ErrorKind::Usage,
                format!("cannot read the package {}", path.display()),
                "the firmware package is read from this file",
                "Check the path and its permissions",
            )
            .with_source(e)
        })?;
    let head = &head[..n];
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Box::new(ZipPackage::open(path)?));
    }
    let unpack = |kind: &str, how: &str| {
        Error::new(
            ErrorKind::Usage,
            format!("{} is a {kind} archive", path.display()),
            "qrescue reads firmware packages from a folder or a .zip in place; it does not unpack other archive formats",
            format!("Unpack it first ({how}) and give qrescue the folder that holds md5.txt and update/"),
        )
    };
    if head.starts_with(b"7z\xBC\xAF\x27\x1C") {
        return Err(unpack(".7z", "`7z x FILE`, from the p7zip package"));
    }
    if head.starts_with(b"Rar!\x1A\x07") {
        return Err(unpack(".rar", "`unrar x FILE` or `7z x FILE`"));
    }
    if head.starts_with(b"\x1F\x8B") {
        return Err(unpack("gzip (.tar.gz)", "`tar xzf FILE`"));
    }
    if head.starts_with(b"\xFD7zXZ\x00") {
        return Err(unpack("xz (.tar.xz)", "`tar xJf FILE`"));
    }
    let xml_hint = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("xml"));
    Err(Error::new(
        ErrorKind::Usage,
        format!("{} is neither a folder nor a .zip", path.display()),
        "a firmware package is a folder (md5.txt, contents.xml, update/…) or a .zip of one",
        if xml_hint {
            "Give the package folder that holds this XML, not the XML itself"
        } else {
            "Give the package folder or its .zip"
        },
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Cursor, Write};
    use zip::write::SimpleFileOptions;

    /// One entry of a zip built in a test.
    pub(crate) enum Item<'a> {
        File(&'a str, &'a [u8]),
        Stored(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
    }

    /// Build a zip in memory.
    pub(crate) fn zip_bytes(items: &[Item]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let deflated = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        for it in items {
            match it {
                Item::File(n, d) => {
                    w.start_file(*n, deflated).unwrap();
                    w.write_all(d).unwrap();
                }
                Item::Stored(n, d) => {
                    w.start_file(*n, stored).unwrap();
                    w.write_all(d).unwrap();
                }
                Item::Dir(n) => w.add_directory(*n, stored).unwrap(),
                Item::Symlink(n, t) => w.add_symlink(*n, *t, stored).unwrap(),
            }
        }
        w.finish().unwrap().into_inner()
    }

    /// Write `bytes` as `name` in a fresh temp dir.
    pub(crate) fn write_zip(bytes: &[u8], name: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        (d, p)
    }

    fn refused(bytes: &[u8], limits: ZipLimits) -> Error {
        let (d, p) = write_zip(bytes, "pkg.zip");
        let e = ZipPackage::open_with_limits(&p, limits).unwrap_err();
        // Nothing was unpacked next to the zip.
        let left: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the zip itself is in the folder");
        e
    }

    /// Offsets of every central directory header.
    fn central_headers(z: &[u8]) -> Vec<usize> {
        (0..z.len().saturating_sub(4))
            .filter(|&i| &z[i..i + 4] == b"PK\x01\x02")
            .collect()
    }

    fn read_all(p: &ZipPackage, path: &str, offset: u64) -> std::io::Result<Vec<u8>> {
        let mut v = Vec::new();
        p.open(path, offset).unwrap().read_to_end(&mut v)?;
        Ok(v)
    }

    fn sample_data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn lists_and_streams_stored_and_deflated_entries() {
        let big = sample_data(300_000);
        let z = zip_bytes(&[
            Item::Dir("PKG/"),
            Item::Dir("PKG/update/"),
            Item::File("PKG/update/sbl1.mbn", &big),
            Item::Stored("PKG/update/tz.mbn", &big),
            Item::File("PKG\\md5.txt", b"x"),
            Item::File("PKG/./update//empty.bin", b""),
        ]);
        let (_d, path) = write_zip(&z, "EG25GGBR07A08M2G_30.006.30.006.zip");
        let p = ZipPackage::open(&path).unwrap();
        let names: Vec<String> = p.list().unwrap().into_iter().map(|f| f.path).collect();
        assert_eq!(
            names,
            [
                "PKG/md5.txt",
                "PKG/update/empty.bin",
                "PKG/update/sbl1.mbn",
                "PKG/update/tz.mbn"
            ]
        );
        assert_eq!(p.origin_name().unwrap(), "EG25GGBR07A08M2G_30.006.30.006");
        assert!(p.describe().starts_with("zip "));
        assert_eq!(p.size("PKG/update/sbl1.mbn").unwrap(), 300_000);
        for name in ["PKG/update/sbl1.mbn", "PKG/update/tz.mbn"] {
            assert_eq!(read_all(&p, name, 0).unwrap(), big);
            assert_eq!(read_all(&p, name, 123_457).unwrap(), &big[123_457..]);
            assert_eq!(read_all(&p, name, 300_000).unwrap(), b"");
        }
        assert_eq!(read_all(&p, "PKG/update/empty.bin", 0).unwrap(), b"");
        assert_eq!(p.read_all("PKG/md5.txt", 10).unwrap(), b"x");
        assert!(p.read_all("PKG/update/sbl1.mbn", 10).is_err());
        let e = p.open("PKG/update/nope.bin", 0).err().unwrap();
        assert!(e.what.contains("has no file"), "{e}");
        assert!(p.open("PKG/update/../../x", 0).is_err());
        assert!(p.open("PKG/update/sbl1.mbn", 300_001).is_err());
    }

    #[test]
    fn hostile_names_are_refused_with_the_reason() {
        for (name, why) in [
            ("../../x", "climbs out"),
            ("PKG/../../etc/x", "climbs out"),
            ("/etc/x", "absolute path"),
            ("\\server\\x", "absolute path"),
            ("C:/Windows/x", "drive letter"),
            ("PKG/a\u{1}b", "control"),
        ] {
            let z = zip_bytes(&[Item::File("PKG/ok.bin", b"1"), Item::File(name, b"evil")]);
            let e = refused(&z, ZipLimits::default());
            assert!(e.what.contains(why), "{name}: {e}");
            assert!(e.what.contains("refusing the zip"), "{e}");
        }
    }

    #[test]
    fn symlink_entries_are_refused() {
        let z = zip_bytes(&[
            Item::File("PKG/ok.bin", b"1"),
            Item::Symlink("PKG/update/sbl1.mbn", "/etc/shadow"),
        ]);
        let e = refused(&z, ZipLimits::default());
        assert!(e.what.contains("symbolic link"), "{e}");
    }

    #[test]
    fn too_many_entries_are_refused_before_parsing() {
        let names: Vec<String> = (0..10_001).map(|i| format!("f{i}")).collect();
        let items: Vec<Item> = names.iter().map(|n| Item::Stored(n, b"")).collect();
        let e = refused(&zip_bytes(&items), ZipLimits::default());
        assert!(e.what.contains("10001 entries"), "{e}");
        assert!(e.next.contains("unzip"), "{e}");
    }

    #[test]
    fn a_high_ratio_entry_is_a_bomb() {
        let zeros = vec![0u8; 1 << 20];
        let z = zip_bytes(&[Item::File("PKG/zeros.bin", &zeros)]);
        // Accepted by default (a real deflate ratio)...
        let (_d, p) = write_zip(&z, "ok.zip");
        let pkg = ZipPackage::open(&p).unwrap();
        assert_eq!(read_all(&pkg, "PKG/zeros.bin", 0).unwrap().len(), 1 << 20);
        // ...and refused with a lower bound.
        let e = refused(
            &z,
            ZipLimits {
                max_ratio: 50,
                ..ZipLimits::default()
            },
        );
        assert!(e.what.contains("ratio above 50:1"), "{e}");
        assert!(e.why.contains("zip bomb"), "{e}");
    }

    #[test]
    fn a_lying_declared_size_is_refused() {
        let mut z = zip_bytes(&[Item::File("PKG/a.bin", &sample_data(1000))]);
        let cd = central_headers(&z)[0];
        z[cd + 24..cd + 28].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let e = refused(&z, ZipLimits::default());
        assert!(e.what.contains("zip bomb"), "{e}");
    }

    #[test]
    fn oversize_entries_and_totals_are_refused() {
        let data = sample_data(10_000);
        let z = zip_bytes(&[Item::Stored("a", &data), Item::Stored("b", &data)]);
        let e = refused(
            &z,
            ZipLimits {
                max_entry_bytes: 9_999,
                ..ZipLimits::default()
            },
        );
        assert!(e.what.contains("declares 10000 bytes"), "{e}");
        let e = refused(
            &z,
            ZipLimits {
                max_total_bytes: 15_000,
                ..ZipLimits::default()
            },
        );
        assert!(e.what.contains("in all"), "{e}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        // Exact duplicates (the writer refuses them, so rename in the bytes).
        let mut z = zip_bytes(&[
            Item::Stored("PKG/dupA", b"1"),
            Item::Stored("PKG/dupB", b"2"),
        ]);
        let positions: Vec<usize> = (0..z.len() - 8)
            .filter(|&i| &z[i..i + 8] == b"PKG/dupB")
            .collect();
        assert_eq!(positions.len(), 2);
        for i in positions {
            z[i + 7] = b'A';
        }
        let e = refused(&z, ZipLimits::default());
        assert!(e.what.contains("share a name"), "{e}");
        // Duplicates after normalisation.
        let z = zip_bytes(&[
            Item::Stored("PKG/a/b", b"1"),
            Item::Stored("PKG\\a\\b", b"2"),
        ]);
        let e = refused(&z, ZipLimits::default());
        assert!(e.what.contains("both named PKG/a/b"), "{e}");
    }

    #[test]
    fn overlapping_entries_are_refused() {
        let data = sample_data(2000);
        let mut z = zip_bytes(&[Item::File("PKG/a", &data), Item::File("PKG/b", &data)]);
        let cd = central_headers(&z);
        let first = z[cd[0] + 42..cd[0] + 46].to_vec();
        z[cd[1] + 42..cd[1] + 46].copy_from_slice(&first);
        let e = refused(&z, ZipLimits::default());
        assert!(e.what.contains("overlap"), "{e}");
    }

    #[test]
    fn inflating_past_the_declared_size_or_a_bad_crc_fails_the_read() {
        let data = sample_data(5000);
        let z = zip_bytes(&[Item::File("x", &data)]);
        let cd = central_headers(&z)[0];
        let mut short = z.clone();
        short[cd + 24..cd + 28].copy_from_slice(&4000u32.to_le_bytes());
        let (_d, p) = write_zip(&short, "short.zip");
        let e = read_all(&ZipPackage::open(&p).unwrap(), "x", 0).unwrap_err();
        assert!(
            e.to_string().contains("past its declared 4000 bytes"),
            "{e}"
        );
        let mut bad = z.clone();
        bad[cd + 16] ^= 0xFF;
        let (_d2, p) = write_zip(&bad, "bad.zip");
        let e = read_all(&ZipPackage::open(&p).unwrap(), "x", 0).unwrap_err();
        assert!(e.to_string().contains("CRC-32"), "{e}");
    }

    #[test]
    fn open_package_goes_by_magic_and_explains_other_archives() {
        let d = tempfile::tempdir().unwrap();
        let z = zip_bytes(&[Item::Stored("md5.txt", b"x")]);
        std::fs::write(d.path().join("pkg.bin"), &z).unwrap();
        let p = open_package(&d.path().join("pkg.bin")).unwrap();
        assert!(p.describe().starts_with("zip "));
        assert!(open_package(d.path())
            .unwrap()
            .describe()
            .starts_with("folder "));
        std::fs::write(d.path().join("fw.7z"), b"7z\xBC\xAF\x27\x1C\x00\x04rest").unwrap();
        let e = open_package(&d.path().join("fw.7z")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.what.contains(".7z archive"), "{e}");
        assert!(e.next.contains("7z x"), "{e}");
        std::fs::write(d.path().join("fw.zip"), b"\x1F\x8B\x08\x00").unwrap();
        let e = open_package(&d.path().join("fw.zip")).unwrap_err();
        assert!(e.next.contains("tar xzf"), "{e}");
        std::fs::write(d.path().join("rawprogram0.xml"), b"<data/>").unwrap();
        let e = open_package(&d.path().join("rawprogram0.xml")).unwrap_err();
        assert!(e.next.contains("not the XML itself"), "{e}");
        let e = open_package(&d.path().join("missing")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        // A cut-off zip is reported as damaged, not as something else.
        std::fs::write(d.path().join("cut.zip"), &z[..z.len() / 2]).unwrap();
        let e = open_package(&d.path().join("cut.zip")).unwrap_err();
        assert!(e.what.contains("cannot read the zip"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn entry_names_never_escape(raw in "[a-zA-Z0-9./\\\\:_ -]{0,40}") {
            if let Ok(Some(n)) = normalise_entry_name(&raw) {
                proptest::prop_assert!(!n.starts_with('/'));
                proptest::prop_assert!(!n.split('/').any(|c| c == ".." || c.is_empty() || c == "."));
                proptest::prop_assert!(!n.contains(':') && !n.contains('\\'));
            }
        }

        #[test]
        fn damaged_zips_never_panic(
            flips in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 0..12),
            cut in 0usize..4096,
        ) {
            let data = sample_data(3000);
            let mut z = zip_bytes(&[
                Item::File("PKG/a.bin", &data),
                Item::Stored("PKG/b.bin", &data[..100]),
            ]);
            for (at, v) in flips {
                let n = z.len();
                z[at % n] = v;
            }
            z.truncate(z.len() - cut % 64);
            let (_d, p) = write_zip(&z, "fuzz.zip");
            if let Ok(pkg) = ZipPackage::open(&p) {
                for f in pkg.list().unwrap() {
                    if let Ok(mut r) = pkg.open(&f.path, 0) {
                        let mut v = Vec::new();
                        if r.read_to_end(&mut v).is_ok() {
                            proptest::prop_assert_eq!(v.len() as u64, f.size);
                        }
                    }
                }
            }
        }
    }
}
