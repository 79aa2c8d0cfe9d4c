//! The DM (DIAG/QCDM) side of an emulated unit in normal mode: a sans-IO responder on top of
//! [`crate::protocol::diag::hdlc`] (frames in, frames and an effect out). PROTOCOLS.md §6 has the
//! wire facts.
//!
//! Answered requests (payloads, before HDLC framing):
//!
//! - `4B 65 01 00` — Quectel's switch to emergency download: the request is echoed and the unit
//!   resets into its boot ROM ([`DiagEffect::SwitchToEdl`]); the runner ends the normal-mode
//!   appearance and the unit comes back as 05c6:9008 [`crate::sim::enumerate::SWITCH_GAP`] later
//!   (QFirehose and fwupd compare the echo with the request, PROTOCOLS.md §6).
//! - `7C` — extended build ID: `7C`, version (0 here), two reserved bytes, the MSM ID (u32 LE,
//!   from the unit's HW ID), the model ID (u32 LE), the full firmware revision NUL-terminated,
//!   then the model name NUL-terminated (QFirehose reads the revision at byte 12,
//!   `retrieve_soft_revision`).
//! - `26 <item u16>` — NV read: `26`, the item, 128 data bytes, status u16 LE. Items are the EFS
//!   files `/nvm/num/<item>` ([`super::efs`]), e.g. NV 550, the IMEI; an item the EFS lacks reads
//!   as zeros with status 5 (`NV_NOTACTIVE_S`; the status numbering is Qualcomm's
//!   `nv_stat_enum_type`: 0 done, 5 not active, 6 bad parameter).
//! - `4B 13 <cmd u16>` (EFS2, subsystem 19 `DIAG_SUBSYS_FS`; 62, the alternate id, is accepted
//!   too): HELLO (0, the host's parameters echoed), OPEN (2: flags i32, mode i32, NUL-terminated
//!   path → fd i32, errno i32), CLOSE (3: fd → errno), READ (4: fd, size u32, offset u32 → fd,
//!   offset, bytes read i32, errno, data), OPENDIR (11: path → dirp i32, errno), READDIR (12:
//!   dirp, seq i32 from 1 → dirp, seq, errno, entry type (0 file, 1 directory), mode, size,
//!   atime, mtime, ctime, NUL-terminated name; past the last entry an empty name with type 0),
//!   CLOSEDIR (13: dirp → errno) and STAT (15: path → errno, mode, size, link count, atime,
//!   mtime, ctime; directories are those the EFS file paths imply). Layouts as in Qualcomm's `fs_diag` packets (OpenPST's public
//!   `dm_efs.h` lists them). The EFS is read-only here: opening for writing gives errno 13
//!   (EACCES); a missing file 2 (ENOENT); a file opened as a directory 20 (ENOTDIR); an unknown
//!   fd or dirp 9 (EBADF); more than
//!   [`MAX_OPEN_FILES`] open 24 (EMFILE).
//!
//! Anything else gets `13` (`DIAG_BAD_CMD_F`) followed by the request, a request too short for
//! its command `15` (`DIAG_BAD_LEN_F`) followed by the request — including the legacy download
//! command `3A`, which the emulator does not model. Frames with a bad CRC are dropped silently.

use std::collections::BTreeMap;

use crate::protocol::diag::hdlc::{self, Decoder};

use super::at::ModemState;

/// Quectel's switch-to-EDL request (payload).
pub const EDL_SWITCH: [u8; 4] = [0x4B, 0x65, 0x01, 0x00];
/// DIAG_SUBSYS_CMD_F.
pub const SUBSYS_CMD: u8 = 0x4B;
/// DIAG_SUBSYS_FS (EFS2).
pub const SUBSYS_FS: u8 = 0x13;
/// The alternate EFS subsystem id some targets use.
pub const SUBSYS_FS_ALT: u8 = 0x3E;
/// DIAG_EXT_BUILD_ID_F.
pub const EXT_BUILD_ID: u8 = 0x7C;
/// DIAG_NV_READ_F.
pub const NV_READ: u8 = 0x26;
/// DIAG_BAD_CMD_F.
pub const BAD_CMD: u8 = 0x13;
/// DIAG_BAD_LEN_F.
pub const BAD_LEN: u8 = 0x15;
/// Bytes of NV item data in a request/response.
pub const NV_DATA: usize = 128;
/// Most EFS files open at once.
pub const MAX_OPEN_FILES: usize = 8;
/// Largest EFS read answered in one response.
pub const MAX_READ: u32 = 4096;
/// Most request bytes echoed after a bad-command code.
const ECHO_MAX: usize = 64;

const ENOENT: i32 = 2;
const EBADF: i32 = 9;
const EACCES: i32 = 13;
const ENOTDIR: i32 = 20;
const EMFILE: i32 = 24;

/// What a request made the unit do beyond answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiagEffect {
    /// Reset into the boot ROM (05c6:9008), once the echo is out.
    SwitchToEdl,
}

/// Bytes to send back (HDLC frames) and an effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiagReply {
    pub bytes: Vec<u8>,
    pub effect: Option<DiagEffect>,
}

/// One DM port: the frame decoder and the EFS2 session (open files and directories).
#[derive(Debug, Default)]
pub struct DiagPort {
    decoder: Decoder,
    open: BTreeMap<i32, String>,
    dirs: BTreeMap<i32, String>,
    next_fd: i32,
    done: bool,
}

/// A directory entry as READDIR reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    dir: bool,
    size: usize,
}

fn is_dir(files: &[(String, Vec<u8>)], path: &str) -> bool {
    let prefix = format!("{}/", path.trim_end_matches('/'));
    path == "/" || files.iter().any(|(p, _)| p.starts_with(&prefix))
}

/// The entries of directory `path` (sorted by name), from the file paths of the EFS.
fn list(files: &[(String, Vec<u8>)], path: &str) -> Vec<Entry> {
    let prefix = format!("{}/", path.trim_end_matches('/'));
    let mut out: Vec<Entry> = Vec::new();
    for (p, data) in files {
        let Some(rest) = p.strip_prefix(&prefix) else {
            continue;
        };
        let (name, dir) = match rest.split_once('/') {
            Some((first, _)) => (first, true),
            None => (rest, false),
        };
        if name.is_empty() || out.iter().any(|e| e.name == name) {
            continue;
        }
        out.push(Entry {
            name: name.to_string(),
            dir,
            size: if dir { 0 } else { data.len() },
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn with_request(code: u8, req: &[u8]) -> Vec<u8> {
    let mut v = vec![code];
    v.extend_from_slice(&req[..req.len().min(ECHO_MAX)]);
    v
}

/// A NUL-terminated path at `at`.
fn path_at(b: &[u8], at: usize) -> Option<String> {
    let rest = b.get(at..)?;
    let end = rest.iter().position(|c| *c == 0)?;
    let s = std::str::from_utf8(&rest[..end]).ok()?;
    (!s.is_empty()).then(|| s.to_string())
}

impl DiagPort {
    pub fn new() -> Self {
        DiagPort {
            next_fd: 1,
            ..Default::default()
        }
    }

    /// Feed bytes from the host. After an effect further input is ignored (the unit resets).
    pub fn feed(&mut self, input: &[u8], unit: &ModemState) -> DiagReply {
        let mut reply = DiagReply::default();
        if self.done {
            return reply;
        }
        for frame in self.decoder.push(input) {
            let Ok(req) = frame else {
                tracing::debug!("emulated DM port dropped a bad frame");
                continue;
            };
            let (payload, effect) = self.respond(&req, unit);
            hdlc::encode_into(&payload, &mut reply.bytes);
            if effect.is_some() {
                reply.effect = effect;
                self.done = true;
                break;
            }
        }
        reply
    }

    /// The response payload to one request payload.
    pub fn respond(&mut self, req: &[u8], unit: &ModemState) -> (Vec<u8>, Option<DiagEffect>) {
        let Some(&cmd) = req.first() else {
            return (vec![BAD_LEN], None);
        };
        match cmd {
            SUBSYS_CMD if req == EDL_SWITCH => (req.to_vec(), Some(DiagEffect::SwitchToEdl)),
            SUBSYS_CMD if req.len() >= 4 && matches!(req[1], SUBSYS_FS | SUBSYS_FS_ALT) => {
                (self.efs(req, unit), None)
            }
            SUBSYS_CMD if req.len() < 4 => (with_request(BAD_LEN, req), None),
            EXT_BUILD_ID => (build_id(unit), None),
            NV_READ => (nv_read(req, unit), None),
            _ => (with_request(BAD_CMD, req), None),
        }
    }

    fn efs(&mut self, req: &[u8], unit: &ModemState) -> Vec<u8> {
        let header = &req[..4];
        let sub = u16_at(req, 2).unwrap_or(u16::MAX);
        let mut out = header.to_vec();
        let push = |out: &mut Vec<u8>, v: i32| out.extend_from_slice(&v.to_le_bytes());
        let file = |path: &str| unit.boot.efs.as_ref().and_then(|e| e.file(path));
        let files: &[(String, Vec<u8>)] = unit.boot.efs.as_ref().map_or(&[], |e| &e.files);
        match sub {
            // HELLO: ten u32 parameters; the target answers with its own, here the host's.
            0 => {
                let Some(params) = req.get(4..44) else {
                    return with_request(BAD_LEN, req);
                };
                out.extend_from_slice(params);
            }
            // OPEN
            2 => {
                let (Some(flags), Some(_mode), Some(path)) =
                    (u32_at(req, 4), u32_at(req, 8), path_at(req, 12))
                else {
                    return with_request(BAD_LEN, req);
                };
                let (fd, errno) = if flags & 3 != 0 {
                    (-1, EACCES)
                } else if file(&path).is_none() {
                    (-1, ENOENT)
                } else if self.open.len() >= MAX_OPEN_FILES {
                    (-1, EMFILE)
                } else {
                    let fd = self.next_fd;
                    self.next_fd = self.next_fd.wrapping_add(1).max(1);
                    self.open.insert(fd, path);
                    (fd, 0)
                };
                push(&mut out, fd);
                push(&mut out, errno);
            }
            // CLOSE
            3 => {
                let Some(fd) = u32_at(req, 4) else {
                    return with_request(BAD_LEN, req);
                };
                let errno = if self.open.remove(&(fd as i32)).is_some() {
                    0
                } else {
                    EBADF
                };
                push(&mut out, errno);
            }
            // READ
            4 => {
                let (Some(fd), Some(size), Some(offset)) =
                    (u32_at(req, 4), u32_at(req, 8), u32_at(req, 12))
                else {
                    return with_request(BAD_LEN, req);
                };
                let fd = fd as i32;
                push(&mut out, fd);
                out.extend_from_slice(&offset.to_le_bytes());
                match self.open.get(&fd).and_then(|p| file(p)) {
                    Some(data) => {
                        let start = (offset as usize).min(data.len());
                        let end = start + (size.min(MAX_READ) as usize).min(data.len() - start);
                        push(&mut out, (end - start) as i32);
                        push(&mut out, 0);
                        out.extend_from_slice(&data[start..end]);
                    }
                    None => {
                        push(&mut out, -1);
                        push(&mut out, EBADF);
                    }
                }
            }
            // OPENDIR
            11 => {
                let Some(path) = path_at(req, 4) else {
                    return with_request(BAD_LEN, req);
                };
                let (dirp, errno) = if file(&path).is_some() {
                    (0, ENOTDIR)
                } else if unit.boot.efs.is_none() || !is_dir(files, &path) {
                    (0, ENOENT)
                } else if self.dirs.len() >= MAX_OPEN_FILES {
                    (0, EMFILE)
                } else {
                    let d = self.next_fd;
                    self.next_fd = self.next_fd.wrapping_add(1).max(1);
                    self.dirs.insert(d, path);
                    (d, 0)
                };
                push(&mut out, dirp);
                push(&mut out, errno);
            }
            // READDIR: entry `seq` (from 1); past the last, an entry with an empty name.
            12 => {
                let (Some(dirp), Some(seq)) = (u32_at(req, 4), u32_at(req, 8)) else {
                    return with_request(BAD_LEN, req);
                };
                let (dirp, seq) = (dirp as i32, seq as i32);
                push(&mut out, dirp);
                push(&mut out, seq);
                let entry = match self.dirs.get(&dirp) {
                    None => Err(EBADF),
                    Some(path) => Ok(usize::try_from(seq)
                        .ok()
                        .and_then(|k| k.checked_sub(1))
                        .and_then(|k| list(files, path).into_iter().nth(k))),
                };
                let (errno, entry) = match entry {
                    Err(e) => (e, None),
                    Ok(e) => (0, e),
                };
                push(&mut out, errno);
                match entry {
                    Some(e) => {
                        push(&mut out, i32::from(e.dir));
                        push(&mut out, if e.dir { 0o040755 } else { 0o100644 });
                        push(&mut out, e.size as i32);
                        for _ in 0..3 {
                            push(&mut out, 0);
                        }
                        out.extend_from_slice(e.name.as_bytes());
                    }
                    None => {
                        for _ in 0..6 {
                            push(&mut out, 0);
                        }
                    }
                }
                out.push(0);
            }
            // CLOSEDIR
            13 => {
                let Some(dirp) = u32_at(req, 4) else {
                    return with_request(BAD_LEN, req);
                };
                let errno = if self.dirs.remove(&(dirp as i32)).is_some() {
                    0
                } else {
                    EBADF
                };
                push(&mut out, errno);
            }
            // STAT
            15 => {
                let Some(path) = path_at(req, 4) else {
                    return with_request(BAD_LEN, req);
                };
                match file(&path) {
                    Some(data) => {
                        push(&mut out, 0);
                        push(&mut out, 0o100644);
                        push(&mut out, data.len() as i32);
                        push(&mut out, 1);
                        for _ in 0..3 {
                            push(&mut out, 0);
                        }
                    }
                    None if unit.boot.efs.is_some() && is_dir(files, &path) => {
                        push(&mut out, 0);
                        push(&mut out, 0o040755);
                        push(&mut out, 0);
                        push(&mut out, 1);
                        for _ in 0..3 {
                            push(&mut out, 0);
                        }
                    }
                    None => {
                        push(&mut out, ENOENT);
                        for _ in 0..6 {
                            push(&mut out, 0);
                        }
                    }
                }
            }
            _ => return with_request(BAD_CMD, req),
        }
        out
    }
}

fn build_id(unit: &ModemState) -> Vec<u8> {
    let mut v = vec![EXT_BUILD_ID, 0, 0, 0];
    v.extend_from_slice(&((unit.hw_id >> 32) as u32).to_le_bytes());
    v.extend_from_slice(&u32::from(unit.hw_id as u16).to_le_bytes());
    v.extend_from_slice(unit.boot.revision.as_bytes());
    v.push(0);
    v.extend_from_slice(unit.boot.model.as_bytes());
    v.push(0);
    v
}

fn nv_read(req: &[u8], unit: &ModemState) -> Vec<u8> {
    let Some(item) = u16_at(req, 1) else {
        return with_request(BAD_LEN, req);
    };
    let mut v = vec![NV_READ];
    v.extend_from_slice(&item.to_le_bytes());
    let mut data = [0u8; NV_DATA];
    let found = unit
        .boot
        .efs
        .as_ref()
        .and_then(|e| e.file(&super::efs::nv_path(item)));
    let status: u16 = match found {
        Some(d) => {
            let n = d.len().min(NV_DATA);
            data[..n].copy_from_slice(&d[..n]);
            0
        }
        None => 5,
    };
    v.extend_from_slice(&data);
    v.extend_from_slice(&status.to_le_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::firehose::storage::{Storage, StorageProfile};
    use crate::sim::normal::{efs, state, unit};
    use crate::sim::profile::Profile;
    use proptest::prelude::*;

    fn modem(calibrated: bool) -> (Profile, ModemState) {
        let p = Profile::by_name("rm502q").unwrap().for_unit(7);
        let mut s = Storage::new(&StorageProfile::by_name("nand-em12g").unwrap());
        state::seed_factory(&mut s, &p).unwrap();
        if !calibrated {
            let r = state::find_region(&s, "EFS2").unwrap();
            state::erase_region(&mut s, &r).unwrap();
        }
        let boot = state::boot(&s, &p).normal().cloned().unwrap();
        let m = ModemState::for_unit(&p, boot, 0);
        (p, m)
    }

    /// Send one request payload framed, get the one response payload back.
    fn ask(port: &mut DiagPort, unit: &ModemState, req: &[u8]) -> Vec<u8> {
        let mut wire = vec![hdlc::FLAG];
        wire.extend(hdlc::encode(req));
        let r = port.feed(&wire, unit);
        let mut d = Decoder::new();
        let mut frames: Vec<_> = d.push(&r.bytes).into_iter().map(|f| f.unwrap()).collect();
        assert_eq!(frames.len(), 1, "{:02x?}", r.bytes);
        frames.remove(0)
    }

    #[test]
    fn the_edl_switch_is_echoed_byte_for_byte_and_ends_the_session() {
        let (_, m) = modem(true);
        let mut port = DiagPort::new();
        let r = port.feed(&[0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E], &m);
        assert_eq!(r.bytes, [0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E]);
        assert_eq!(r.effect, Some(DiagEffect::SwitchToEdl));
        assert_eq!(
            port.feed(&[0x7C, 0x93, 0x49, 0x7E], &m),
            DiagReply::default()
        );
    }

    #[test]
    fn build_id_carries_the_revision_where_qfirehose_reads_it() {
        let (p, m) = modem(true);
        let mut port = DiagPort::new();
        // The exact request bytes QFirehose sends.
        let r = port.feed(&[0x7E, 0x7C, 0x93, 0x49, 0x7E], &m);
        assert_eq!(*r.bytes.last().unwrap(), 0x7E);
        let resp = Decoder::new().push(&r.bytes).remove(0).unwrap();
        assert_eq!(resp[0], 0x7C);
        assert_eq!(u32_at(&resp, 4), Some(p.identity.msm_id()));
        let rev_end = 12 + resp[12..].iter().position(|b| *b == 0).unwrap();
        assert_eq!(
            std::str::from_utf8(&resp[12..rev_end]).unwrap(),
            unit::model_firmware(&p).unwrap().revision
        );
        assert_eq!(&resp[rev_end + 1..], b"RM502Q-AE\0");
    }

    #[test]
    fn nv_550_is_the_bcd_imei_and_missing_items_are_not_active() {
        let (p, m) = modem(true);
        let mut port = DiagPort::new();
        let mut req = vec![NV_READ, 0x26, 0x02];
        req.extend([0u8; NV_DATA + 2]);
        let resp = ask(&mut port, &m, &req);
        assert_eq!(resp.len(), 3 + NV_DATA + 2);
        assert_eq!(&resp[..3], &[0x26, 0x26, 0x02]);
        assert_eq!(
            efs::decode_imei(&resp[3..12]),
            Some(unit::unit_imei(&p)),
            "{:02x?}",
            &resp[..12]
        );
        assert_eq!(u16_at(&resp, 3 + NV_DATA), Some(0));
        // Short form (item only) is accepted too; an unknown item is not active.
        let resp = ask(&mut port, &m, &[NV_READ, 0x01, 0x00]);
        assert_eq!(u16_at(&resp, 3 + NV_DATA), Some(5));
        assert!(resp[3..3 + NV_DATA].iter().all(|b| *b == 0));
        // With the EFS erased the IMEI is gone too.
        let (_, blank) = modem(false);
        let resp = ask(&mut port, &blank, &[NV_READ, 0x26, 0x02]);
        assert_eq!(u16_at(&resp, 3 + NV_DATA), Some(5));
    }

    fn efs_req(cmd: u16, body: &[u8]) -> Vec<u8> {
        let mut v = vec![SUBSYS_CMD, SUBSYS_FS];
        v.extend_from_slice(&cmd.to_le_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn efs2_hello_open_read_close_returns_the_calibration_file() {
        let (p, m) = modem(true);
        let mut port = DiagPort::new();
        let hello: Vec<u8> = (1u32..=10).flat_map(|v| v.to_le_bytes()).collect();
        let resp = ask(&mut port, &m, &efs_req(0, &hello));
        assert_eq!(&resp[4..], &hello[..]);
        let mut open = vec![0, 0, 0, 0, 0, 0, 0, 0];
        open.extend_from_slice(efs::CALIBRATION_PATH.as_bytes());
        open.push(0);
        let resp = ask(&mut port, &m, &efs_req(2, &open));
        let fd = u32_at(&resp, 4).unwrap();
        assert_eq!(u32_at(&resp, 8), Some(0));
        let mut got = Vec::new();
        loop {
            let mut rd = fd.to_le_bytes().to_vec();
            rd.extend(1000u32.to_le_bytes());
            rd.extend((got.len() as u32).to_le_bytes());
            let resp = ask(&mut port, &m, &efs_req(4, &rd));
            assert_eq!(u32_at(&resp, 16), Some(0));
            let n = u32_at(&resp, 12).unwrap() as usize;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&resp[20..20 + n]);
        }
        assert_eq!(got, unit::calibration_blob(&p));
        let mut stat = efs::CALIBRATION_PATH.as_bytes().to_vec();
        stat.push(0);
        let resp = ask(&mut port, &m, &efs_req(15, &stat));
        assert_eq!(
            (u32_at(&resp, 4), u32_at(&resp, 12)),
            (Some(0), Some(unit::CALIBRATION_LEN as u32))
        );
        let resp = ask(&mut port, &m, &efs_req(3, &fd.to_le_bytes()));
        assert_eq!(u32_at(&resp, 4), Some(0));
        let resp = ask(&mut port, &m, &efs_req(3, &fd.to_le_bytes()));
        assert_eq!(u32_at(&resp, 4), Some(EBADF as u32));
        // Erased EFS: the file is gone.
        let (_, blank) = modem(false);
        let resp = ask(&mut port, &blank, &efs_req(2, &open));
        assert_eq!(u32_at(&resp, 8), Some(ENOENT as u32));
        // Writing is refused.
        let mut w = open.clone();
        w[0] = 1;
        let resp = ask(&mut port, &m, &efs_req(2, &w));
        assert_eq!(u32_at(&resp, 8), Some(EACCES as u32));
    }

    #[test]
    fn efs2_directories_list_what_the_efs_holds() {
        let (_, m) = modem(true);
        let mut port = DiagPort::new();
        let path = |p: &str| {
            let mut v = p.as_bytes().to_vec();
            v.push(0);
            v
        };
        let names = |port: &mut DiagPort, dir: &str| {
            let resp = ask(port, &m, &efs_req(11, &path(dir)));
            assert_eq!(u32_at(&resp, 8), Some(0), "{dir}");
            let dirp = u32_at(&resp, 4).unwrap();
            let mut got = Vec::new();
            for seq in 1u32.. {
                let mut rd = dirp.to_le_bytes().to_vec();
                rd.extend(seq.to_le_bytes());
                let resp = ask(port, &m, &efs_req(12, &rd));
                assert_eq!(u32_at(&resp, 12), Some(0));
                let name = path_at(&resp, 40);
                let Some(name) = name else { break };
                got.push((name, u32_at(&resp, 16).unwrap(), u32_at(&resp, 24).unwrap()));
            }
            let resp = ask(port, &m, &efs_req(13, &dirp.to_le_bytes()));
            assert_eq!(u32_at(&resp, 4), Some(0));
            got
        };
        assert_eq!(
            names(&mut port, "/"),
            [("nv".to_string(), 1, 0), ("nvm".to_string(), 1, 0)]
        );
        assert_eq!(names(&mut port, "/nvm/num"), [("550".to_string(), 0, 9)]);
        assert_eq!(
            names(&mut port, "/nv/item_files/rfnv/"),
            [("00020000".to_string(), 0, unit::CALIBRATION_LEN as u32)]
        );
        let resp = ask(&mut port, &m, &efs_req(11, &path("/nope")));
        assert_eq!(u32_at(&resp, 8), Some(ENOENT as u32));
        let resp = ask(&mut port, &m, &efs_req(11, &path("/nvm/num/550")));
        assert_eq!(u32_at(&resp, 8), Some(ENOTDIR as u32));
        let resp = ask(&mut port, &m, &efs_req(15, &path("/nvm")));
        assert_eq!(u32_at(&resp, 8), Some(0o040755));
        let resp = ask(&mut port, &m, &efs_req(12, &[9, 0, 0, 0, 1, 0, 0, 0]));
        assert_eq!(u32_at(&resp, 12), Some(EBADF as u32));
    }

    #[test]
    fn unknown_and_short_requests_get_bad_command_and_bad_length() {
        let (_, m) = modem(true);
        let mut port = DiagPort::new();
        assert_eq!(ask(&mut port, &m, &[0x3A]), vec![BAD_CMD, 0x3A]);
        assert_eq!(ask(&mut port, &m, &[0xF0, 1, 2]), vec![BAD_CMD, 0xF0, 1, 2]);
        assert_eq!(ask(&mut port, &m, &[0x4B, 0x65]), vec![BAD_LEN, 0x4B, 0x65]);
        assert_eq!(ask(&mut port, &m, &[NV_READ, 1]), vec![BAD_LEN, NV_READ, 1]);
        assert_eq!(ask(&mut port, &m, &efs_req(2, &[0; 3]))[0], BAD_LEN);
        assert_eq!(ask(&mut port, &m, &efs_req(99, &[]))[0], BAD_CMD);
        // A frame with a bad CRC is dropped without an answer.
        assert!(port.feed(&[0x7C, 0x00, 0x00, 0x7E], &m).bytes.is_empty());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_and_frames_never_panic(
            raw in proptest::collection::vec(any::<u8>(), 0..300),
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..6),
            first in prop_oneof![Just(0x4Bu8), Just(0x26u8), Just(0x7Cu8), any::<u8>()],
            second in prop_oneof![Just(0x13u8), Just(0x3Eu8), any::<u8>()],
        ) {
            let (_, m) = modem(true);
            let mut port = DiagPort::new();
            port.feed(&raw, &m);
            for mut p in payloads {
                if !p.is_empty() { p[0] = first; }
                if p.len() > 1 { p[1] = second; }
                // A leading flag ends whatever partial frame the raw bytes left.
                let mut wire = vec![hdlc::FLAG];
                wire.extend(hdlc::encode(&p));
                let r = port.feed(&wire, &m);
                if r.effect.is_none() {
                    prop_assert!(!r.bytes.is_empty() || p.is_empty());
                }
            }
        }
    }
}
