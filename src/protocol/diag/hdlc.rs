//! The HDLC-like framing DIAG uses on the DM port (PROTOCOLS.md §6).
//!
//! A frame on the wire is `escape(payload ++ crc16_le(payload)) ++ [0x7E]`:
//!
//! - the CRC is CRC-16/X.25 (CRC-CCITT reflected: polynomial 0x8408, init 0xFFFF, result
//!   complemented), appended little-endian;
//! - 0x7E and 0x7D inside the frame are sent as `0x7D, b ^ 0x20` (7D 5E and 7D 5D);
//! - 0x7E ends the frame. Hosts may also send a leading 0x7E; empty frames between flags are
//!   ignored.
//!
//! [`encode`] builds a frame. [`Decoder`] is a streaming decoder for arbitrary byte chunks: it never
//! panics, bounds what it buffers ([`Decoder::with_max_frame`], default [`DEFAULT_MAX_FRAME`]),
//! reports frames with a bad CRC, frames that are too short or too long and broken escapes as
//! [`FrameError`]s, and resynchronises on the next 0x7E after any of them.
//!
//! Known answers (PROTOCOLS.md §6): the payload `4B 65 01 00` has CRC 0x0F54, so the Quectel
//! switch-to-EDL frame is exactly `4B 65 01 00 54 0F 7E`; `7C` has CRC 0x4993 and `3A` 0x6EA1.

/// Frame delimiter.
pub const FLAG: u8 = 0x7E;
/// Escape byte: the next byte is XOR-ed with [`ESCAPE_XOR`].
pub const ESCAPE: u8 = 0x7D;
/// What an escaped byte is XOR-ed with.
pub const ESCAPE_XOR: u8 = 0x20;
/// Default cap on one decoded frame (payload + CRC, unescaped): 64 KiB.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;
/// Length of the CRC trailer.
pub const CRC_LEN: usize = 2;

/// CRC-16/X.25 of `data` (reflected 0x8408, init 0xFFFF, final XOR 0xFFFF).
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &b in data {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x8408
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn push_escaped(out: &mut Vec<u8>, b: u8) {
    if b == FLAG || b == ESCAPE {
        out.push(ESCAPE);
        out.push(b ^ ESCAPE_XOR);
    } else {
        out.push(b);
    }
}

/// Append the frame for `payload` (escaped payload, escaped CRC, trailing 0x7E) to `out`.
pub fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + payload.len() / 8 + 5);
    for &b in payload {
        push_escaped(out, b);
    }
    for b in crc16(payload).to_le_bytes() {
        push_escaped(out, b);
    }
    out.push(FLAG);
}

/// The frame for `payload`: escaped payload and CRC, then 0x7E (no leading flag).
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(payload, &mut out);
    out
}

/// Why a frame was dropped. The decoder carries on with the next frame after each of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The CRC at the end of the frame does not match its contents (line noise, a torn frame, or
    /// bytes that were never DIAG).
    #[error("DIAG frame of {len} bytes has CRC {found:#06x}, expected {expected:#06x}")]
    BadCrc {
        /// Unescaped payload length (without the CRC).
        len: usize,
        expected: u16,
        found: u16,
    },
    /// The frame is shorter than a one-byte payload plus the CRC.
    #[error("DIAG frame of {len} bytes is too short to hold a command and a CRC")]
    TooShort { len: usize },
    /// The frame grew beyond the cap before its 0x7E arrived; everything up to the next 0x7E was
    /// dropped.
    #[error("DIAG frame longer than {max} bytes; dropped {dropped} bytes up to the next 0x7E")]
    Oversize { max: usize, dropped: usize },
    /// 0x7D was directly followed by the 0x7E flag.
    #[error("DIAG frame ends in the middle of an escape sequence")]
    BadEscape,
}

/// Decode one complete frame (optionally with a leading 0x7E, with or without the trailing one)
/// and return its payload without the CRC.
pub fn decode_frame(frame: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut d = Decoder::with_max_frame(frame.len().max(CRC_LEN + 1));
    let mut out = d.push(frame);
    if !frame.ends_with(&[FLAG]) || out.is_empty() {
        out.extend(d.push(&[FLAG]));
    }
    match out.into_iter().next() {
        Some(r) => r,
        None => Err(FrameError::TooShort { len: 0 }),
    }
}

/// A streaming DIAG frame decoder: push any chunks of received bytes, get complete frames
/// (payloads without CRC) or errors, in order.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Unescaped bytes of the frame being received.
    buf: Vec<u8>,
    /// The previous byte was 0x7D.
    escape: bool,
    /// The current frame overflowed; bytes are dropped until the next 0x7E.
    overflow: Option<usize>,
    max: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder with the default 64 KiB frame cap.
    pub fn new() -> Self {
        Self::with_max_frame(DEFAULT_MAX_FRAME)
    }

    /// A decoder whose frames (unescaped payload + CRC) may be at most `max` bytes; at least 3.
    pub fn with_max_frame(max: usize) -> Self {
        Decoder {
            buf: Vec::new(),
            escape: false,
            overflow: None,
            max: max.max(CRC_LEN + 1),
        }
    }

    /// The frame cap.
    pub fn max_frame(&self) -> usize {
        self.max
    }

    /// Bytes of an unfinished frame held so far (0 between frames).
    pub fn pending(&self) -> usize {
        self.overflow.unwrap_or(self.buf.len()) + usize::from(self.escape)
    }

    /// Forget any unfinished frame.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.escape = false;
        self.overflow = None;
    }

    /// Feed received bytes; return every frame (or frame error) they complete, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == FLAG {
                if let Some(r) = self.finish() {
                    out.push(r);
                }
                continue;
            }
            if let Some(dropped) = self.overflow.as_mut() {
                *dropped += 1;
                continue;
            }
            let v = if self.escape {
                self.escape = false;
                b ^ ESCAPE_XOR
            } else if b == ESCAPE {
                self.escape = true;
                continue;
            } else {
                b
            };
            if self.buf.len() >= self.max {
                self.overflow = Some(self.buf.len() + 1);
                self.buf = Vec::new();
            } else {
                self.buf.push(v);
            }
        }
        out
    }

    /// A flag arrived: close the current frame.
    fn finish(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        let escape = std::mem::take(&mut self.escape);
        if let Some(dropped) = self.overflow.take() {
            self.buf.clear();
            return Some(Err(FrameError::Oversize {
                max: self.max,
                dropped,
            }));
        }
        let mut frame = std::mem::take(&mut self.buf);
        if escape {
            return Some(Err(FrameError::BadEscape));
        }
        if frame.is_empty() {
            // Leading flag or back-to-back flags: nothing to report.
            return None;
        }
        if frame.len() < CRC_LEN + 1 {
            return Some(Err(FrameError::TooShort { len: frame.len() }));
        }
        let split = frame.len() - CRC_LEN;
        let found = u16::from_le_bytes([frame[split], frame[split + 1]]);
        frame.truncate(split);
        let expected = crc16(&frame);
        if found != expected {
            return Some(Err(FrameError::BadCrc {
                len: frame.len(),
                expected,
                found,
            }));
        }
        Some(Ok(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_crcs_from_protocols_md() {
        assert_eq!(crc16(&[0x4B, 0x65, 0x01, 0x00]), 0x0F54);
        assert_eq!(crc16(&[0x7C]), 0x4993);
        assert_eq!(crc16(&[0x3A]), 0x6EA1);
        // The CRC-16/X.25 catalogue check value.
        assert_eq!(crc16(b"123456789"), 0x906E);
    }

    #[test]
    fn edl_switch_frame_is_exactly_qfirehoses() {
        assert_eq!(
            encode(&[0x4B, 0x65, 0x01, 0x00]),
            vec![0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E]
        );
        assert_eq!(encode(&[0x7C]), vec![0x7C, 0x93, 0x49, 0x7E]);
        assert_eq!(encode(&[0x3A]), vec![0x3A, 0xA1, 0x6E, 0x7E]);
    }

    #[test]
    fn escapes_flag_and_escape_bytes() {
        let payload = [0x7E, 0x01, 0x7D];
        let f = encode(&payload);
        assert_eq!(&f[..5], &[0x7D, 0x5E, 0x01, 0x7D, 0x5D]);
        assert_eq!(*f.last().unwrap(), FLAG);
        assert_eq!(f.iter().filter(|&&b| b == FLAG).count(), 1);
        assert_eq!(decode_frame(&f).unwrap(), payload.to_vec());
    }

    #[test]
    fn decodes_leading_flag_and_split_chunks() {
        let mut d = Decoder::new();
        let mut wire = vec![FLAG];
        wire.extend(encode(&[0x7C]));
        wire.extend(encode(&[0x4B, 0x65, 0x01, 0x00]));
        let mut frames = Vec::new();
        for b in &wire {
            frames.extend(d.push(std::slice::from_ref(b)));
        }
        assert_eq!(
            frames,
            vec![Ok(vec![0x7C]), Ok(vec![0x4B, 0x65, 0x01, 0x00])]
        );
        assert_eq!(d.pending(), 0);
        assert_eq!(
            decode_frame(&[0x7E, 0x7C, 0x93, 0x49, 0x7E]),
            Ok(vec![0x7C])
        );
        assert_eq!(decode_frame(&[0x7C, 0x93, 0x49]), Ok(vec![0x7C]));
    }

    #[test]
    fn bad_crc_is_reported_and_decoder_resyncs() {
        let mut d = Decoder::new();
        let mut wire = vec![0x7C, 0x00, 0x00, FLAG];
        wire.extend(encode(&[0x26, 0x01]));
        let r = d.push(&wire);
        assert_eq!(
            r[0],
            Err(FrameError::BadCrc {
                len: 1,
                expected: 0x4993,
                found: 0
            })
        );
        assert_eq!(r[1], Ok(vec![0x26, 0x01]));
    }

    #[test]
    fn short_and_escape_errors() {
        let mut d = Decoder::new();
        assert_eq!(
            d.push(&[0x01, 0x02, FLAG]),
            vec![Err(FrameError::TooShort { len: 2 })]
        );
        assert_eq!(
            d.push(&[0x01, ESCAPE, FLAG]),
            vec![Err(FrameError::BadEscape)]
        );
        assert_eq!(d.push(&encode(&[9])), vec![Ok(vec![9])]);
    }

    #[test]
    fn oversize_frames_are_dropped_up_to_the_next_flag() {
        let mut d = Decoder::with_max_frame(8);
        let mut wire = vec![0xAA; 20];
        wire.push(FLAG);
        wire.extend(encode(&[1, 2, 3]));
        let r = d.push(&wire);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            Err(FrameError::Oversize {
                max: 8,
                dropped: 20
            })
        );
        assert_eq!(r[1], Ok(vec![1, 2, 3]));
        // Memory stays bounded while overflowing.
        let mut d = Decoder::with_max_frame(8);
        assert!(d.push(&[0x55; 10_000]).is_empty());
        assert!(d.buf.capacity() <= 16);
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(payload in proptest::collection::vec(any::<u8>(), 1..600)) {
            let f = encode(&payload);
            prop_assert_eq!(f.iter().filter(|&&b| b == FLAG).count(), 1);
            prop_assert_eq!(decode_frame(&f), Ok(payload.clone()));
            let mut d = Decoder::new();
            prop_assert_eq!(d.push(&f), vec![Ok(payload)]);
            prop_assert_eq!(d.pending(), 0);
        }

        #[test]
        fn round_trip_under_any_chunking(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..80), 1..6),
            cuts in proptest::collection::vec(1usize..40, 0..20),
        ) {
            let mut wire = Vec::new();
            for p in &payloads {
                encode_into(p, &mut wire);
            }
            let mut d = Decoder::new();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            for c in cuts {
                let n = c.min(rest.len());
                got.extend(d.push(&rest[..n]));
                rest = &rest[n..];
            }
            got.extend(d.push(rest));
            let want: Vec<_> = payloads.into_iter().map(Ok).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn decoder_never_panics_and_stays_bounded(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            max in 0usize..64,
        ) {
            let mut d = Decoder::with_max_frame(max);
            let frames = d.push(&bytes);
            for p in frames.iter().flatten() {
                prop_assert!(!p.is_empty());
                prop_assert!(p.len() + CRC_LEN <= d.max_frame());
            }
            prop_assert!(d.pending() <= bytes.len());
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn garbage_then_frame_still_decodes(
            garbage in proptest::collection::vec(any::<u8>(), 0..200),
            payload in proptest::collection::vec(any::<u8>(), 1..100),
        ) {
            let mut wire = garbage;
            wire.push(FLAG);
            wire.extend(encode(&payload));
            let mut d = Decoder::new();
            let got = d.push(&wire);
            prop_assert_eq!(got.last().cloned(), Some(Ok(payload)));
        }
    }
}
