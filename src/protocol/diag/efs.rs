//! EFS2 over DIAG: the subset needed to stat and read a file and list a directory. Sans-IO.
//!
//! PROTOCOLS.md §6 only says that bkerler/edl reads and lists EFS over DIAG; the command numbers
//! and packet layouts here come from public open-source tools (facts, no code):
//!
//! - op numbers: bkerler/edl `edlclient/Tools/qc_diag.py` (`efs_cmds`: HELLO 0, QUERY 1, OPEN 2,
//!   CLOSE 3, READ 4, OPENDIR 11, READDIR 12, CLOSEDIR 13, STAT 15) and iamromulan/qfenix
//!   `diag.h` (same numbers; subsystem 0x13, alternate 0x3E; 1024-byte read requests);
//! - layouts: iamromulan/qfenix `diag.c` (`efs_open`, `efs_read`, `efs_close`, `efs_opendir`,
//!   `efs_readdir`, `efs_closedir`, `efs_stat`, `diag_efs_detect`).
//!
//! Every packet starts with the subsystem header `4B <subsys> <op u16 LE>`; all fields are
//! little-endian 32-bit. Paths are NUL-terminated. Replies carry an `errno` (0 = success; POSIX
//! numbering, e.g. 17 = EEXIST, which qfenix relies on).
//!
//! | op | request after the header | reply after the header |
//! |---|---|---|
//! | HELLO 0 | 10 × u32 window/version parameters | the same 10 words |
//! | OPEN 2 | oflag i32, mode i32, path | fd i32, errno i32 |
//! | CLOSE 3 | fd i32 | errno i32 |
//! | READ 4 | fd i32, nbytes u32, offset u32 | fd i32, offset u32, bytes_read i32, errno i32, data |
//! | OPENDIR 11 | path | dirp i32, errno i32 |
//! | READDIR 12 | dirp i32, seqno i32 (from 1) | dirp, seqno, errno, entry_type, mode, size, atime, mtime, ctime (i32 each), name |
//! | CLOSEDIR 13 | dirp i32 | errno i32 |
//! | STAT 15 | path | errno, mode, size, nlink, atime, mtime, ctime (i32 each) |
//!
//! The end of a directory listing is an entry with an empty name (qfenix stops at entry type
//! 0; an emulated modem should send both).

use serde::Serialize;

use super::packet::{clean_text, cmd, subsys, DiagError, Rejection};

/// EFS2 operation numbers.
pub mod op {
    pub const HELLO: u16 = 0;
    pub const QUERY: u16 = 1;
    pub const OPEN: u16 = 2;
    pub const CLOSE: u16 = 3;
    pub const READ: u16 = 4;
    pub const OPENDIR: u16 = 11;
    pub const READDIR: u16 = 12;
    pub const CLOSEDIR: u16 = 13;
    pub const STAT: u16 = 15;

    /// A name for messages.
    pub fn name(op: u16) -> &'static str {
        match op {
            HELLO => "hello",
            QUERY => "query",
            OPEN => "open",
            CLOSE => "close",
            READ => "read",
            OPENDIR => "opendir",
            READDIR => "readdir",
            CLOSEDIR => "closedir",
            STAT => "stat",
            _ => "operation",
        }
    }
}

/// Largest read request (bytes), as qfenix and edl use.
pub const MAX_READ_REQ: u32 = 1024;
/// Longest path qrescue sends, in bytes without the NUL (qfenix's limit: 252 with the NUL).
pub const MAX_PATH_LEN: usize = 251;
/// Open for reading.
pub const O_RDONLY: i32 = 0;
/// Longest entry name kept from a READDIR reply (characters).
pub const MAX_NAME: usize = 255;

/// File-type bits of `mode` (POSIX values).
pub mod mode {
    pub const S_IFMT: i32 = 0o170000;
    pub const S_IFDIR: i32 = 0o040000;
    pub const S_IFREG: i32 = 0o100000;
    pub const S_IFLNK: i32 = 0o120000;
    /// EFS item files (qfenix: "EFS item files (mode 0160xxx)").
    pub const S_IFITM: i32 = 0o160000;
}

/// A name for an EFS errno (POSIX numbering).
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        0 => "success",
        1 => "EPERM (not permitted)",
        2 => "ENOENT (no such file or directory)",
        5 => "EIO (I/O error)",
        9 => "EBADF (bad file handle)",
        12 => "ENOMEM (out of memory)",
        13 => "EACCES (permission denied)",
        16 => "EBUSY (busy)",
        17 => "EEXIST (already exists)",
        20 => "ENOTDIR (not a directory)",
        21 => "EISDIR (is a directory)",
        22 => "EINVAL (invalid argument)",
        24 => "EMFILE (too many open files)",
        28 => "ENOSPC (no space left)",
        36 => "ENAMETOOLONG (name too long)",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

/// Check a path before sending it: absolute, no NUL, at most [`MAX_PATH_LEN`] bytes.
pub fn check_path(path: &str) -> Result<(), DiagError> {
    let reason = if !path.starts_with('/') {
        "EFS paths start with '/'"
    } else if path.contains('\0') {
        "it contains a NUL byte"
    } else if path.len() > MAX_PATH_LEN {
        "it is longer than 251 bytes"
    } else {
        return Ok(());
    };
    Err(DiagError::BadPath {
        path: path.chars().take(80).collect(),
        reason,
    })
}

/// Join a directory and an entry name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// HELLO parameters (window sizes and protocol versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct HelloParams {
    pub targ_pkt_window: u32,
    pub targ_byte_window: u32,
    pub host_pkt_window: u32,
    pub host_byte_window: u32,
    pub iter_pkt_window: u32,
    pub iter_byte_window: u32,
    pub version: u32,
    pub min_version: u32,
    pub max_version: u32,
    pub feature_bits: u32,
}

const HELLO_WORDS: usize = 10;

impl HelloParams {
    /// What qrescue sends: 1 MiB windows, protocol version 1 (the defaults of OpenPST's
    /// `dm_efs.h`: window 0x100000, version 1).
    pub fn host_default() -> Self {
        HelloParams {
            targ_pkt_window: 0x10_0000,
            targ_byte_window: 0x10_0000,
            host_pkt_window: 0x10_0000,
            host_byte_window: 0x10_0000,
            iter_pkt_window: 0x10_0000,
            iter_byte_window: 0x10_0000,
            version: 1,
            min_version: 1,
            max_version: 1,
            feature_bits: 0,
        }
    }

    fn words(&self) -> [u32; HELLO_WORDS] {
        [
            self.targ_pkt_window,
            self.targ_byte_window,
            self.host_pkt_window,
            self.host_byte_window,
            self.iter_pkt_window,
            self.iter_byte_window,
            self.version,
            self.min_version,
            self.max_version,
            self.feature_bits,
        ]
    }

    fn from_words(w: [u32; HELLO_WORDS]) -> Self {
        HelloParams {
            targ_pkt_window: w[0],
            targ_byte_window: w[1],
            host_pkt_window: w[2],
            host_byte_window: w[3],
            iter_pkt_window: w[4],
            iter_byte_window: w[5],
            version: w[6],
            min_version: w[7],
            max_version: w[8],
            feature_bits: w[9],
        }
    }
}

/// An EFS2 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EfsRequest {
    Hello(HelloParams),
    Open {
        flags: i32,
        mode: i32,
        path: String,
    },
    Close {
        fd: i32,
    },
    Read {
        fd: i32,
        len: u32,
        offset: u32,
    },
    OpenDir {
        path: String,
    },
    ReadDir {
        dir: i32,
        seq: i32,
    },
    CloseDir {
        dir: i32,
    },
    Stat {
        path: String,
    },
    /// An op qrescue does not model (a modem answers "bad command").
    Other {
        op: u16,
    },
}

fn header(subsys: u8, op: u16) -> Vec<u8> {
    let o = op.to_le_bytes();
    vec![cmd::SUBSYS, subsys, o[0], o[1]]
}

fn push_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn push_path(out: &mut Vec<u8>, path: &str) {
    out.extend(path.bytes().take_while(|&b| b != 0));
    out.push(0);
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The NUL-terminated string at the start of `b` (all of `b` without a NUL), lossy UTF-8.
fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn need(frame: &[u8], n: usize, what: &'static str) -> Result<(), DiagError> {
    if frame.len() < n {
        Err(DiagError::Truncated {
            what,
            len: frame.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

/// Check the subsystem header; returns (subsys, op).
fn efs_header(frame: &[u8], what: &'static str) -> Result<(u8, u16), DiagError> {
    if frame.first() != Some(&cmd::SUBSYS) {
        if let Some(rej) = Rejection::parse(frame) {
            return Err(DiagError::Rejected(rej));
        }
    }
    if frame.len() >= 2
        && (frame[0] != cmd::SUBSYS || (frame[1] != subsys::EFS2 && frame[1] != subsys::EFS2_ALT))
    {
        return Err(DiagError::WrongReply {
            expected: cmd::SUBSYS,
            found: super::packet::describe_frame(frame),
        });
    }
    need(frame, 4, what)?;
    Ok((frame[1], u16::from_le_bytes([frame[2], frame[3]])))
}

impl EfsRequest {
    /// The op number.
    pub fn op(&self) -> u16 {
        match self {
            EfsRequest::Hello(_) => op::HELLO,
            EfsRequest::Open { .. } => op::OPEN,
            EfsRequest::Close { .. } => op::CLOSE,
            EfsRequest::Read { .. } => op::READ,
            EfsRequest::OpenDir { .. } => op::OPENDIR,
            EfsRequest::ReadDir { .. } => op::READDIR,
            EfsRequest::CloseDir { .. } => op::CLOSEDIR,
            EfsRequest::Stat { .. } => op::STAT,
            EfsRequest::Other { op } => *op,
        }
    }

    /// The request payload on subsystem `subsys`. Paths are cut at a NUL; check them with
    /// [`check_path`] first.
    pub fn encode(&self, subsys: u8) -> Vec<u8> {
        let mut out = header(subsys, self.op());
        match self {
            EfsRequest::Hello(p) => {
                for w in p.words() {
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
            EfsRequest::Open { flags, mode, path } => {
                push_i32(&mut out, *flags);
                push_i32(&mut out, *mode);
                push_path(&mut out, path);
            }
            EfsRequest::Close { fd } => push_i32(&mut out, *fd),
            EfsRequest::Read { fd, len, offset } => {
                push_i32(&mut out, *fd);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
            EfsRequest::OpenDir { path } | EfsRequest::Stat { path } => push_path(&mut out, path),
            EfsRequest::ReadDir { dir, seq } => {
                push_i32(&mut out, *dir);
                push_i32(&mut out, *seq);
            }
            EfsRequest::CloseDir { dir } => push_i32(&mut out, *dir),
            EfsRequest::Other { .. } => {}
        }
        out
    }

    /// Parse a request payload (the emulated modem's side); returns the subsystem and request.
    pub fn parse(payload: &[u8]) -> Result<(u8, EfsRequest), DiagError> {
        let (sub, o) = efs_header(payload, "EFS2 request")?;
        let b = payload;
        let r = match o {
            op::HELLO => {
                need(b, 4 + 4 * HELLO_WORDS, "EFS2 hello request")?;
                let mut w = [0u32; HELLO_WORDS];
                for (i, x) in w.iter_mut().enumerate() {
                    *x = u32_at(b, 4 + 4 * i);
                }
                EfsRequest::Hello(HelloParams::from_words(w))
            }
            op::OPEN => {
                need(b, 13, "EFS2 open request")?;
                EfsRequest::Open {
                    flags: i32_at(b, 4),
                    mode: i32_at(b, 8),
                    path: c_string(&b[12..]),
                }
            }
            op::CLOSE => {
                need(b, 8, "EFS2 close request")?;
                EfsRequest::Close { fd: i32_at(b, 4) }
            }
            op::READ => {
                need(b, 16, "EFS2 read request")?;
                EfsRequest::Read {
                    fd: i32_at(b, 4),
                    len: u32_at(b, 8),
                    offset: u32_at(b, 12),
                }
            }
            op::OPENDIR => {
                need(b, 5, "EFS2 opendir request")?;
                EfsRequest::OpenDir {
                    path: c_string(&b[4..]),
                }
            }
            op::READDIR => {
                need(b, 12, "EFS2 readdir request")?;
                EfsRequest::ReadDir {
                    dir: i32_at(b, 4),
                    seq: i32_at(b, 8),
                }
            }
            op::CLOSEDIR => {
                need(b, 8, "EFS2 closedir request")?;
                EfsRequest::CloseDir { dir: i32_at(b, 4) }
            }
            op::STAT => {
                need(b, 5, "EFS2 stat request")?;
                EfsRequest::Stat {
                    path: c_string(&b[4..]),
                }
            }
            other => EfsRequest::Other { op: other },
        };
        Ok((sub, r))
    }
}

/// What STAT returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct EfsStat {
    pub mode: i32,
    pub size: i32,
    pub nlink: i32,
    pub atime: i32,
    pub mtime: i32,
    pub ctime: i32,
}

fn kind_of(m: i32) -> i32 {
    m & mode::S_IFMT
}

impl EfsStat {
    pub fn is_dir(&self) -> bool {
        kind_of(self.mode) == mode::S_IFDIR
    }
    pub fn is_file(&self) -> bool {
        kind_of(self.mode) == mode::S_IFREG
    }
    pub fn is_link(&self) -> bool {
        kind_of(self.mode) == mode::S_IFLNK
    }
    pub fn is_item(&self) -> bool {
        kind_of(self.mode) == mode::S_IFITM
    }
}

/// One READDIR entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EfsDirEntry {
    /// The sequence number it was read with.
    pub seq: i32,
    /// The raw entry type word.
    pub entry_type: i32,
    pub mode: i32,
    pub size: i32,
    pub atime: i32,
    pub mtime: i32,
    pub ctime: i32,
    /// The name, control characters removed, at most [`MAX_NAME`] characters; empty at the end
    /// of the listing.
    pub name: String,
}

impl EfsDirEntry {
    /// The listing's end marker.
    pub fn is_end(&self) -> bool {
        self.name.is_empty()
    }
    pub fn is_dir(&self) -> bool {
        kind_of(self.mode) == mode::S_IFDIR
    }
    /// The end marker a modem sends for sequence number `seq`.
    pub fn end(seq: i32) -> Self {
        EfsDirEntry {
            seq,
            entry_type: 0,
            mode: 0,
            size: 0,
            atime: 0,
            mtime: 0,
            ctime: 0,
            name: String::new(),
        }
    }
}

/// An EFS2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EfsResponse {
    Hello(HelloParams),
    Open {
        fd: i32,
        errno: i32,
    },
    Close {
        errno: i32,
    },
    Read {
        fd: i32,
        offset: u32,
        bytes_read: i32,
        errno: i32,
        data: Vec<u8>,
    },
    OpenDir {
        dir: i32,
        errno: i32,
    },
    ReadDir {
        dir: i32,
        errno: i32,
        entry: EfsDirEntry,
    },
    CloseDir {
        errno: i32,
    },
    Stat {
        errno: i32,
        stat: EfsStat,
    },
}

impl EfsResponse {
    pub fn op(&self) -> u16 {
        match self {
            EfsResponse::Hello(_) => op::HELLO,
            EfsResponse::Open { .. } => op::OPEN,
            EfsResponse::Close { .. } => op::CLOSE,
            EfsResponse::Read { .. } => op::READ,
            EfsResponse::OpenDir { .. } => op::OPENDIR,
            EfsResponse::ReadDir { .. } => op::READDIR,
            EfsResponse::CloseDir { .. } => op::CLOSEDIR,
            EfsResponse::Stat { .. } => op::STAT,
        }
    }

    /// The errno the reply carries (0 for HELLO).
    pub fn errno(&self) -> i32 {
        match self {
            EfsResponse::Hello(_) => 0,
            EfsResponse::Open { errno, .. }
            | EfsResponse::Close { errno }
            | EfsResponse::Read { errno, .. }
            | EfsResponse::OpenDir { errno, .. }
            | EfsResponse::ReadDir { errno, .. }
            | EfsResponse::CloseDir { errno }
            | EfsResponse::Stat { errno, .. } => *errno,
        }
    }

    /// `Err(DiagError::Efs)` when the errno is not 0.
    pub fn check(self) -> Result<EfsResponse, DiagError> {
        match self.errno() {
            0 => Ok(self),
            errno => Err(DiagError::Efs {
                op: op::name(self.op()),
                errno,
            }),
        }
    }

    /// The reply payload a modem sends on `subsys`.
    pub fn encode(&self, subsys: u8) -> Vec<u8> {
        let mut out = header(subsys, self.op());
        match self {
            EfsResponse::Hello(p) => {
                for w in p.words() {
                    out.extend_from_slice(&w.to_le_bytes());
                }
            }
            EfsResponse::Open { fd, errno } | EfsResponse::OpenDir { dir: fd, errno } => {
                push_i32(&mut out, *fd);
                push_i32(&mut out, *errno);
            }
            EfsResponse::Close { errno } | EfsResponse::CloseDir { errno } => {
                push_i32(&mut out, *errno)
            }
            EfsResponse::Read {
                fd,
                offset,
                bytes_read,
                errno,
                data,
            } => {
                push_i32(&mut out, *fd);
                out.extend_from_slice(&offset.to_le_bytes());
                push_i32(&mut out, *bytes_read);
                push_i32(&mut out, *errno);
                out.extend_from_slice(data);
            }
            EfsResponse::ReadDir { dir, errno, entry } => {
                for v in [
                    *dir,
                    entry.seq,
                    *errno,
                    entry.entry_type,
                    entry.mode,
                    entry.size,
                    entry.atime,
                    entry.mtime,
                    entry.ctime,
                ] {
                    push_i32(&mut out, v);
                }
                push_path(&mut out, &entry.name);
            }
            EfsResponse::Stat { errno, stat } => {
                for v in [
                    *errno, stat.mode, stat.size, stat.nlink, stat.atime, stat.mtime, stat.ctime,
                ] {
                    push_i32(&mut out, v);
                }
            }
        }
        out
    }

    /// Parse a reply (or the error response to an EFS2 request); returns the subsystem and the
    /// reply. A nonzero errno is returned as data; use [`EfsResponse::check`] to turn it into an
    /// error.
    pub fn parse(frame: &[u8]) -> Result<(u8, EfsResponse), DiagError> {
        let (sub, o) = efs_header(frame, "EFS2")?;
        let b = frame;
        let r = match o {
            op::HELLO => {
                need(b, 4 + 4 * HELLO_WORDS, "EFS2 hello")?;
                let mut w = [0u32; HELLO_WORDS];
                for (i, x) in w.iter_mut().enumerate() {
                    *x = u32_at(b, 4 + 4 * i);
                }
                EfsResponse::Hello(HelloParams::from_words(w))
            }
            op::OPEN => {
                need(b, 12, "EFS2 open")?;
                EfsResponse::Open {
                    fd: i32_at(b, 4),
                    errno: i32_at(b, 8),
                }
            }
            op::CLOSE => {
                need(b, 8, "EFS2 close")?;
                EfsResponse::Close {
                    errno: i32_at(b, 4),
                }
            }
            op::READ => {
                need(b, 20, "EFS2 read")?;
                EfsResponse::Read {
                    fd: i32_at(b, 4),
                    offset: u32_at(b, 8),
                    bytes_read: i32_at(b, 12),
                    errno: i32_at(b, 16),
                    data: b[20..].to_vec(),
                }
            }
            op::OPENDIR => {
                need(b, 12, "EFS2 opendir")?;
                EfsResponse::OpenDir {
                    dir: i32_at(b, 4),
                    errno: i32_at(b, 8),
                }
            }
            op::READDIR => {
                need(b, 40, "EFS2 readdir")?;
                let name = c_string(&b[40..]);
                EfsResponse::ReadDir {
                    dir: i32_at(b, 4),
                    errno: i32_at(b, 12),
                    entry: EfsDirEntry {
                        seq: i32_at(b, 8),
                        entry_type: i32_at(b, 16),
                        mode: i32_at(b, 20),
                        size: i32_at(b, 24),
                        atime: i32_at(b, 28),
                        mtime: i32_at(b, 32),
                        ctime: i32_at(b, 36),
                        name: clean_text(name.as_bytes()).chars().take(MAX_NAME).collect(),
                    },
                }
            }
            op::CLOSEDIR => {
                need(b, 8, "EFS2 closedir")?;
                EfsResponse::CloseDir {
                    errno: i32_at(b, 4),
                }
            }
            op::STAT => {
                need(b, 32, "EFS2 stat")?;
                EfsResponse::Stat {
                    errno: i32_at(b, 4),
                    stat: EfsStat {
                        mode: i32_at(b, 8),
                        size: i32_at(b, 12),
                        nlink: i32_at(b, 16),
                        atime: i32_at(b, 20),
                        mtime: i32_at(b, 24),
                        ctime: i32_at(b, 28),
                    },
                }
            }
            other => {
                return Err(DiagError::Malformed {
                    what: "EFS2",
                    detail: format!("reply for unknown op {other}"),
                })
            }
        };
        Ok((sub, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::diag::packet::{match_reply, Reply, Request};
    use proptest::prelude::*;

    #[test]
    fn request_layouts() {
        let open = EfsRequest::Open {
            flags: O_RDONLY,
            mode: 0,
            path: "/nv/item_files/x".into(),
        };
        let b = open.encode(subsys::EFS2);
        assert_eq!(&b[..4], &[0x4B, 0x13, 0x02, 0x00]);
        assert_eq!(&b[4..12], &[0; 8]);
        assert_eq!(&b[12..], b"/nv/item_files/x\0");
        let read = EfsRequest::Read {
            fd: 3,
            len: 1024,
            offset: 2048,
        };
        assert_eq!(
            read.encode(subsys::EFS2_ALT),
            [0x4B, 0x3E, 4, 0, 3, 0, 0, 0, 0, 4, 0, 0, 0, 8, 0, 0]
        );
        assert_eq!(
            EfsRequest::ReadDir { dir: 1, seq: 2 }.encode(0x13),
            [0x4B, 0x13, 12, 0, 1, 0, 0, 0, 2, 0, 0, 0]
        );
        assert_eq!(
            EfsRequest::Hello(HelloParams::host_default())
                .encode(0x13)
                .len(),
            44
        );
        for r in [
            open,
            read,
            EfsRequest::Hello(HelloParams::host_default()),
            EfsRequest::Close { fd: 7 },
            EfsRequest::OpenDir { path: "/".into() },
            EfsRequest::ReadDir { dir: 1, seq: 9 },
            EfsRequest::CloseDir { dir: 1 },
            EfsRequest::Stat {
                path: "/policyman".into(),
            },
            EfsRequest::Other { op: 39 },
        ] {
            let enc = r.encode(0x13);
            assert_eq!(EfsRequest::parse(&enc), Ok((0x13, r.clone())));
            assert_eq!(
                Request::parse(&enc),
                Ok(Request::Efs {
                    subsys: 0x13,
                    request: r
                })
            );
        }
    }

    #[test]
    fn replies_round_trip_and_match() {
        let replies = [
            EfsResponse::Hello(HelloParams::host_default()),
            EfsResponse::Open { fd: 4, errno: 0 },
            EfsResponse::Close { errno: 0 },
            EfsResponse::Read {
                fd: 4,
                offset: 0,
                bytes_read: 3,
                errno: 0,
                data: vec![1, 2, 3],
            },
            EfsResponse::OpenDir { dir: 1, errno: 0 },
            EfsResponse::ReadDir {
                dir: 1,
                errno: 0,
                entry: EfsDirEntry {
                    seq: 1,
                    entry_type: 1,
                    mode: mode::S_IFDIR | 0o755,
                    size: 0,
                    atime: 1,
                    mtime: 2,
                    ctime: 3,
                    name: "nv".into(),
                },
            },
            EfsResponse::CloseDir { errno: 0 },
            EfsResponse::Stat {
                errno: 0,
                stat: EfsStat {
                    mode: mode::S_IFREG | 0o644,
                    size: 99,
                    nlink: 1,
                    ..Default::default()
                },
            },
        ];
        for r in replies {
            let enc = r.encode(0x13);
            assert_eq!(EfsResponse::parse(&enc), Ok((0x13, r.clone())));
            let req = header(0x13, r.op());
            assert!(matches!(match_reply(&req, &enc), Reply::Response(_)));
        }
    }

    #[test]
    fn errno_and_rejection() {
        let r = EfsResponse::Open { fd: -1, errno: 2 };
        let e = r.check().unwrap_err();
        assert_eq!(
            e,
            DiagError::Efs {
                op: "open",
                errno: 2
            }
        );
        assert!(e.to_string().contains("ENOENT"));
        let rej = Rejection::encode(
            crate::protocol::diag::packet::RejectKind::BadCommand,
            &header(0x13, op::HELLO),
        );
        assert!(matches!(
            EfsResponse::parse(&rej),
            Err(DiagError::Rejected(_))
        ));
        assert!(matches!(
            EfsResponse::parse(&[0x4B, 0x13, 15, 0, 0]),
            Err(DiagError::Truncated { need: 32, .. })
        ));
        assert!(matches!(
            EfsResponse::parse(&[0x4B, 0x65, 1, 0]),
            Err(DiagError::WrongReply { .. })
        ));
    }

    #[test]
    fn paths() {
        assert!(check_path("/nv/item_files/modem/mmode/lte_bandpref").is_ok());
        assert!(check_path("nv").is_err());
        assert!(check_path("/a\0b").is_err());
        assert!(check_path(&format!("/{}", "a".repeat(251))).is_err());
        assert!(check_path(&format!("/{}", "a".repeat(250))).is_ok());
        assert_eq!(join("/", "nv"), "/nv");
        assert_eq!(join("/nv", "item_files"), "/nv/item_files");
    }

    proptest! {
        #[test]
        fn parsers_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..120), o in 0u16..20, sub in prop_oneof![Just(0x13u8), Just(0x3Eu8)]) {
            let _ = EfsResponse::parse(&frame);
            let _ = EfsRequest::parse(&frame);
            let mut f = header(sub, o);
            f.extend_from_slice(&frame);
            if let Ok((s, r)) = EfsResponse::parse(&f) {
                prop_assert_eq!(s, sub);
                prop_assert_eq!(r.op(), o);
                if let EfsResponse::ReadDir { entry, .. } = &r {
                    prop_assert!(entry.name.chars().count() <= MAX_NAME);
                }
            }
            let _ = EfsRequest::parse(&f);
        }

        #[test]
        fn read_reply_round_trip(fd in any::<i32>(), off in any::<u32>(), n in any::<i32>(), errno in any::<i32>(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let r = EfsResponse::Read { fd, offset: off, bytes_read: n, errno, data };
            prop_assert_eq!(EfsResponse::parse(&r.encode(0x3E)), Ok((0x3E, r)));
        }

        #[test]
        fn path_requests_round_trip(path in "/[a-z_/]{0,60}") {
            for r in [EfsRequest::Stat { path: path.clone() }, EfsRequest::OpenDir { path: path.clone() }, EfsRequest::Open { flags: 0, mode: 0, path: path.clone() }] {
                prop_assert_eq!(EfsRequest::parse(&r.encode(0x13)), Ok((0x13, r)));
            }
        }
    }
}
