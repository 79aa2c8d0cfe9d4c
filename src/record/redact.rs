//! Redaction of device-unique identifiers before they reach a recording: USB serial numbers,
//! the `_SN:` in a download-mode product string, the Sahara serial number (the data of the
//! command-mode EXECUTE for SERIAL_NUM and CHIP_ID_V3), serial numbers a programmer logs
//! (`Chip serial num: 217664612 (0xcf94c64)`), and IMEIs (any 15-digit number in a payload).
//!
//! Every identifier gets a stable pseudonym (the same value always gets the same pseudonym in
//! one recording, numbered in order of appearance) of the *same length*, so a serial number
//! pseudonymised in a hotplug snapshot, a Sahara reply and a programmer log stays one value and
//! a replay still matches itself. Serial numbers become `00000001`, `00000002`… (in the width
//! and letter case of the original), IMEIs `000000000000001`…
//!
//! Payloads are redacted per stream and direction. A token split across two consecutive reads
//! is still seen whole: the recorder holds its last event back, and [`Redactor::chunk`] may
//! rewrite the end of that held-back chunk. Pure code: no I/O.

use std::collections::HashMap;

use crate::device::DeviceSnapshot;
use crate::protocol::sahara::packet::{exec, CMD_EXECUTE_DATA};

/// Names of the rules, written into the recording's header.
pub const RULES: &[&str] = &[
    "usb-serial",
    "sn-in-product",
    "sahara-serial",
    "serial-in-text",
    "imei",
];

/// How pseudonyms look, for the header.
pub const PSEUDONYMS: &str = "serial numbers -> 00000001, 00000002 ... (same width and case); \
     IMEIs and other 15-digit numbers -> 000000000000001 ...; stable within one recording";

/// Bytes of context kept from the end of a chunk for the next one.
const TAIL: usize = 48;
/// Decimal serial numbers shorter than this are not searched for in text.
const MIN_DECIMAL_SERIAL: usize = 6;
/// Hex serial numbers shorter than this are not searched for in text (unless after `_SN:`).
const MIN_HEX_SERIAL: usize = 6;

/// Which way data went, from the host's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Host → device.
    Out,
    /// Device → host.
    In,
}

/// Bytes of an EXECUTE_DATA reply still to be captured (they hold the serial).
#[derive(Debug, Default, Clone)]
struct Capture {
    got: Vec<u8>,
    /// How many of `got` lie in the previous chunk (the last bytes of it).
    in_prev: usize,
}

#[derive(Debug, Default)]
struct Flow {
    /// Raw bytes at the end of the last chunks in this direction (context for the next one).
    tail: Vec<u8>,
    /// How many of the last bytes of `tail` belong to the last chunk.
    own: usize,
}

#[derive(Debug, Default)]
struct StreamState {
    out: Flow,
    inp: Flow,
    capture: Option<Capture>,
}

/// Pseudonymises identifiers consistently for one recording.
#[derive(Debug)]
pub struct Redactor {
    enabled: bool,
    /// Real serial number → pseudonym number.
    serials: HashMap<u64, u64>,
    /// Other identifier strings (upper-cased) → pseudonym number.
    strings: HashMap<String, u64>,
    /// IMEI → pseudonym number.
    imeis: HashMap<String, u64>,
    next_serial: u64,
    next_imei: u64,
    streams: HashMap<u32, StreamState>,
}

impl Redactor {
    /// A redactor; with `enabled == false` everything passes unchanged.
    pub fn new(enabled: bool) -> Self {
        Redactor {
            enabled,
            serials: HashMap::new(),
            strings: HashMap::new(),
            imeis: HashMap::new(),
            next_serial: 1,
            next_imei: 1,
            streams: HashMap::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn serial_pseudo(&mut self, value: u64) -> u64 {
        if let Some(p) = self.serials.get(&value) {
            return *p;
        }
        let p = self.next_serial;
        self.next_serial += 1;
        self.serials.insert(value, p);
        p
    }

    fn string_pseudo(&mut self, s: &str) -> u64 {
        let key = s.to_ascii_uppercase();
        if let Some(p) = self.strings.get(&key) {
            return *p;
        }
        let p = self.next_serial;
        self.next_serial += 1;
        self.strings.insert(key, p);
        p
    }

    fn imei_pseudo(&mut self, s: &str) -> u64 {
        if let Some(p) = self.imeis.get(s) {
            return *p;
        }
        let p = self.next_imei;
        self.next_imei += 1;
        self.imeis.insert(s.to_string(), p);
        p
    }

    /// Redact a device snapshot in place: the USB serial, and identifiers in the product and
    /// manufacturer strings.
    pub fn snapshot(&mut self, snap: &mut DeviceSnapshot) {
        if !self.enabled {
            return;
        }
        if let Some(serial) = snap.serial.take() {
            snap.serial = Some(self.usb_serial(&serial));
        }
        for s in [&mut snap.product, &mut snap.manufacturer]
            .into_iter()
            .flatten()
        {
            let mut bytes = s.clone().into_bytes();
            self.text(&mut bytes);
            // Replacements are ASCII for ASCII, so the string stays UTF-8.
            *s = String::from_utf8(bytes).unwrap_or_default();
        }
    }

    fn usb_serial(&mut self, serial: &str) -> String {
        let hexlike = !serial.is_empty()
            && serial.len() <= 16
            && serial.bytes().all(|b| b.is_ascii_hexdigit());
        if hexlike {
            if let Ok(v) = u64::from_str_radix(serial, 16) {
                let p = self.serial_pseudo(v);
                return hex_width(p, serial);
            }
        }
        if serial.bytes().all(|b| b.is_ascii_alphanumeric()) && !serial.is_empty() {
            let p = self.string_pseudo(serial);
            return dec_width(p, serial.len());
        }
        // Anything else (spaces, symbols, non-ASCII) gets a fixed-shape pseudonym.
        let p = self.string_pseudo(serial);
        format!("SN{p:08}")
    }

    /// Redact one chunk of `stream` going `dir`, returning the redacted bytes (same length).
    /// `prev` is the previous chunk of the same stream and direction when it has not been
    /// written yet (the recorder's held-back event): its end may be rewritten when a token
    /// continues into this chunk. With `prev == None` nothing is carried over.
    pub fn chunk(
        &mut self,
        stream: u32,
        dir: Direction,
        data: &[u8],
        mut prev: Option<&mut Vec<u8>>,
    ) -> Vec<u8> {
        if !self.enabled {
            return data.to_vec();
        }
        let mut state = self.streams.remove(&stream).unwrap_or_default();
        let flow = match dir {
            Direction::Out => &mut state.out,
            Direction::In => &mut state.inp,
        };
        // Context from the previous chunk, only while that chunk can still be rewritten.
        let (tail, own) = match prev.as_deref() {
            Some(p) => (std::mem::take(&mut flow.tail), flow.own.min(p.len())),
            None => (Vec::new(), 0),
        };
        let b = tail.len();
        let own = own.min(b);
        let mut window = tail;
        window.extend_from_slice(data);
        let mut out = window.clone();
        let crossing = self.text_window(&window, &mut out, b);
        if let (Some(p), Some((s, _))) = (prev.as_deref_mut(), crossing) {
            // The token that starts in the previous chunk: rewrite its part there.
            let x = s.max(b - own);
            let at = p.len() - (b - x);
            p[at..].copy_from_slice(&out[x..b]);
        }
        let mut result = out.split_off(b);
        let keep = window.len().min(TAIL);
        let flow = match dir {
            Direction::Out => &mut state.out,
            Direction::In => &mut state.inp,
        };
        flow.tail = window[window.len() - keep..].to_vec();
        flow.own = data.len().min(keep);

        match dir {
            Direction::Out => {
                if starts_serial_reply(data) {
                    state.capture = Some(Capture::default());
                }
            }
            Direction::In => {
                if let Some(mut cap) = state.capture.take() {
                    let take = (4 - cap.got.len()).min(data.len());
                    cap.got.extend_from_slice(&data[..take]);
                    // Never write the real bytes, even if the reply is cut short.
                    result[..take].fill(0);
                    if cap.got.len() == 4 {
                        let g = &cap.got;
                        let v = u32::from_le_bytes([g[0], g[1], g[2], g[3]]);
                        let p = (self.serial_pseudo(u64::from(v)) as u32).to_le_bytes();
                        let before = 4 - take;
                        result[..take].copy_from_slice(&p[before..]);
                        if let Some(prev) = prev {
                            let n = cap.in_prev.min(before).min(prev.len());
                            let at = prev.len() - n;
                            prev[at..].copy_from_slice(&p[before - n..before]);
                        }
                    } else {
                        cap.in_prev = take;
                        state.capture = Some(cap);
                    }
                }
            }
        }
        self.streams.insert(stream, state);
        result
    }

    /// Redact a standalone text (a product string, an error message) in place.
    pub fn text(&mut self, bytes: &mut [u8]) {
        let window = bytes.to_vec();
        self.text_window(&window, bytes, 0);
    }

    /// Apply the text rules to every token of `window` that does not lie entirely before `b`,
    /// writing replacements into `out`. Returns the token crossing `b`, if any.
    fn text_window(&mut self, window: &[u8], out: &mut [u8], b: usize) -> Option<(usize, usize)> {
        let mut crossing = None;
        for (s, e) in tokens(window) {
            if e <= b && b > 0 {
                continue;
            }
            if s < b {
                crossing = Some((s, e));
            }
            if let Some(rep) = self.replacement(window, s, e) {
                out[s..e].copy_from_slice(rep.as_bytes());
            }
        }
        crossing
    }

    /// The pseudonym for token `window[s..e]`, if it is an identifier.
    fn replacement(&mut self, window: &[u8], s: usize, e: usize) -> Option<String> {
        let tok = std::str::from_utf8(&window[s..e]).ok()?;
        let before = &window[s.saturating_sub(24)..s];
        let all_digits = tok.bytes().all(|c| c.is_ascii_digit());

        // `_SN:49CBD7EF` in a download-mode product string.
        let all_hex = tok.bytes().all(|c| c.is_ascii_hexdigit());
        if s >= 4 && window[s - 4..s].eq_ignore_ascii_case(b"_SN:") && all_hex && tok.len() <= 16 {
            let v = u64::from_str_radix(tok, 16).ok()?;
            let p = self.serial_pseudo(v);
            return Some(hex_width(p, tok));
        }
        // A decimal number right after the word "serial" (programmer logs).
        if all_digits && tok.len() >= MIN_DECIMAL_SERIAL && tok.len() <= 20 {
            let lower = String::from_utf8_lossy(before).to_ascii_lowercase();
            if lower.contains("serial") {
                if let Ok(v) = tok.parse::<u64>() {
                    let p = self.serial_pseudo(v);
                    return Some(dec_width(p, tok.len()));
                }
            }
        }
        // A serial number already known, in decimal or hex (`0x` allowed).
        if all_digits && tok.len() >= MIN_DECIMAL_SERIAL {
            if let Ok(v) = tok.parse::<u64>() {
                if let Some(p) = self.serials.get(&v) {
                    return Some(dec_width(*p, tok.len()));
                }
            }
        }
        let (prefix, hex_part) = match tok.get(..2) {
            Some(p) if p.eq_ignore_ascii_case("0x") => tok.split_at(2),
            _ => ("", tok),
        };
        if hex_part.len() >= MIN_HEX_SERIAL
            && hex_part.len() <= 16
            && hex_part.bytes().all(|c| c.is_ascii_hexdigit())
        {
            if let Ok(v) = u64::from_str_radix(hex_part, 16) {
                if let Some(p) = self.serials.get(&v) {
                    return Some(format!("{prefix}{}", hex_width(*p, hex_part)));
                }
            }
        }
        // A known non-hex identifier (a USB serial string).
        if let Some(p) = self.strings.get(&tok.to_ascii_uppercase()) {
            return Some(dec_width(*p, tok.len()));
        }
        // IMEI (and anything else with exactly 15 digits, e.g. an IMSI).
        if all_digits && tok.len() == 15 {
            let p = self.imei_pseudo(tok);
            return Some(dec_width(p, 15));
        }
        None
    }
}

/// Maximal runs of ASCII letters and digits: (start, end).
fn tokens(w: &[u8]) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    let mut i = 0;
    while i < w.len() {
        if w[i].is_ascii_alphanumeric() {
            let s = i;
            while i < w.len() && w[i].is_ascii_alphanumeric() {
                i += 1;
            }
            v.push((s, i));
        } else {
            i += 1;
        }
    }
    v
}

/// `n` in hex, zero-padded to the width of `like` (and cut to it), in its letter case.
fn hex_width(n: u64, like: &str) -> String {
    let w = like.len();
    let lower = like.bytes().any(|c| c.is_ascii_lowercase());
    let s = if lower {
        format!("{n:0w$x}")
    } else {
        format!("{n:0w$X}")
    };
    s[s.len() - w..].to_string()
}

/// `n` in decimal, zero-padded to `w` digits (and cut to them).
fn dec_width(n: u64, w: usize) -> String {
    let s = format!("{n:0w$}");
    s[s.len() - w..].to_string()
}

/// Whether `data` holds a host EXECUTE_DATA whose reply carries the serial number
/// (SERIAL_NUM, or CHIP_ID_V3 whose first four bytes are the serial).
fn starts_serial_reply(data: &[u8]) -> bool {
    if data.len() > 64 {
        return false;
    }
    data.windows(12).any(|w| {
        let word = |i: usize| u32::from_le_bytes([w[i], w[i + 1], w[i + 2], w[i + 3]]);
        word(0) == CMD_EXECUTE_DATA
            && word(4) == 12
            && matches!(word(8), exec::SERIAL_NUM | exec::CHIP_ID_V3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn exec_data(cmd: u32) -> Vec<u8> {
        [CMD_EXECUTE_DATA, 12, cmd]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    #[test]
    fn the_sahara_serial_and_its_log_and_product_forms_share_one_pseudonym() {
        let mut r = Redactor::new(true);
        let serial: u32 = 217_664_612; // 0x0cf94c64
        let out = r.chunk(1, Direction::Out, &exec_data(exec::SERIAL_NUM), None);
        assert_eq!(out, exec_data(exec::SERIAL_NUM));
        let got = r.chunk(1, Direction::In, &serial.to_le_bytes(), None);
        assert_eq!(got, 1u32.to_le_bytes());
        // The next reply is not a serial any more.
        assert_eq!(r.chunk(1, Direction::In, &[9, 9, 9, 9], None), [9, 9, 9, 9]);

        let log = b"<log value=\"INFO: Chip serial num: 217664612 (0xcf94c64)\" />";
        let red = r.chunk(2, Direction::In, log, None);
        assert_eq!(
            String::from_utf8(red).unwrap(),
            "<log value=\"INFO: Chip serial num: 000000001 (0x0000001)\" />"
        );

        let mut snap = crate::device::DeviceSnapshot {
            bus: 1,
            ports: vec![2],
            address: 3,
            vid: 0x05c6,
            pid: 0x9008,
            bcd_device: 0,
            manufacturer: Some("Qualcomm CDMA Technologies MSM".into()),
            product: Some("QUSB_BULK_CID:0410_SN:0CF94C64".into()),
            serial: Some("0cf94c64".into()),
            speed: None,
            interfaces: vec![],
            origin: None,
        };
        r.snapshot(&mut snap);
        assert_eq!(
            snap.product.as_deref(),
            Some("QUSB_BULK_CID:0410_SN:00000001")
        );
        assert_eq!(snap.serial.as_deref(), Some("00000001"));
        assert_eq!(
            snap.manufacturer.as_deref(),
            Some("Qualcomm CDMA Technologies MSM")
        );
    }

    #[test]
    fn a_serial_split_across_reads_is_still_replaced() {
        let mut r = Redactor::new(true);
        r.chunk(1, Direction::Out, &exec_data(exec::SERIAL_NUM), None);
        let serial = 0x1234_5678u32.to_le_bytes();
        let mut first = r.chunk(1, Direction::In, &serial[..1], None);
        assert_eq!(first, [0]);
        let second = r.chunk(1, Direction::In, &serial[1..], Some(&mut first));
        let mut all = first.clone();
        all.extend_from_slice(&second);
        assert_eq!(all, 1u32.to_le_bytes());
    }

    #[test]
    fn imeis_get_stable_pseudonyms_even_across_reads() {
        let mut r = Redactor::new(true);
        let a = r.chunk(1, Direction::In, b"\r\n861234567890123\r\nOK\r\n", None);
        assert_eq!(a, b"\r\n000000000000001\r\nOK\r\n");
        let mut first = r.chunk(1, Direction::In, b"+CGSN: 8612345", None);
        let second = r.chunk(1, Direction::In, b"67890123\r\n", Some(&mut first));
        assert_eq!(first, b"+CGSN: 0000000");
        assert_eq!(second, b"00000001\r\n");
        // 16 digits are not an IMEI: a 15-digit prefix replaced at first is restored.
        let mut first = r.chunk(1, Direction::In, b"x 123456789012345", None);
        assert_eq!(first, b"x 000000000000002");
        let second = r.chunk(1, Direction::In, b"6 y", Some(&mut first));
        assert_eq!(first, b"x 123456789012345");
        assert_eq!(second, b"6 y");
        // Other numbers stay.
        let plain = b"<program num_partition_sectors=\"1024\" start_sector=\"123456\"/>";
        assert_eq!(r.chunk(3, Direction::Out, plain, None), plain);
    }

    #[test]
    fn disabled_redaction_changes_nothing() {
        let mut r = Redactor::new(false);
        assert_eq!(
            r.chunk(1, Direction::In, b"861234567890123", None),
            b"861234567890123"
        );
    }

    #[test]
    fn non_hex_usb_serials_become_pseudonyms_also_in_text() {
        let mut r = Redactor::new(true);
        let mut snap = crate::device::DeviceSnapshot {
            bus: 1,
            ports: vec![2],
            address: 3,
            vid: 0x2c7c,
            pid: 0x0800,
            bcd_device: 0,
            manufacturer: None,
            product: None,
            serial: Some("QX7Z9K".into()),
            speed: None,
            interfaces: vec![],
            origin: None,
        };
        r.snapshot(&mut snap);
        assert_eq!(snap.serial.as_deref(), Some("000001"));
        assert_eq!(
            r.chunk(1, Direction::In, b"sn=QX7Z9K;", None),
            b"sn=000001;"
        );
    }

    proptest! {
        #[test]
        fn redaction_keeps_lengths_and_never_panics(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..12),
            dirs in proptest::collection::vec(any::<bool>(), 12),
            product in ".{0,40}",
        ) {
            let mut r = Redactor::new(true);
            let mut prev: Option<(Direction, Vec<u8>)> = None;
            for (i, c) in chunks.iter().enumerate() {
                let dir = if dirs[i] { Direction::In } else { Direction::Out };
                let p = match &mut prev {
                    Some((d, bytes)) if *d == dir => Some(bytes),
                    _ => None,
                };
                let before = p.as_ref().map(|b| b.len());
                let out = r.chunk(1, dir, c, p);
                prop_assert_eq!(out.len(), c.len());
                if let Some((d, bytes)) = &prev {
                    if *d == dir {
                        prop_assert_eq!(Some(bytes.len()), before);
                    }
                }
                prev = Some((dir, out));
            }
            let mut snap = crate::device::DeviceSnapshot {
                bus: 1, ports: vec![], address: 0, vid: 0, pid: 0, bcd_device: 0,
                manufacturer: None, product: Some(product.clone()), serial: Some(product.clone()),
                speed: None, interfaces: vec![], origin: None,
            };
            r.snapshot(&mut snap);
            prop_assert_eq!(snap.product.map(|p| p.len()), Some(product.len()));
        }
    }
}
