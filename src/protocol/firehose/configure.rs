//! `<configure>` negotiation as a pure state machine (PROTOCOLS.md §2.4, §9.7).
//!
//! Rules:
//! 1. Send the wanted MaxPayloadSizeToTargetInBytes (8192 for NAND, 1 MiB otherwise by default).
//! 2. On NAK carrying a different MaxPayloadSizeToTargetInBytes, adopt it and configure again
//!    (the programmer logs "Host's payload to target size is too large"; this is silent).
//! 3. On ACK, if MaxPayloadSizeToTargetInBytesSupported is larger than what was granted, move up
//!    to it with one more configure (once).
//! 4. A NAK after an upward move falls back to the last ACKed size with one more configure.
//! 5. MinVersionSupported > 1 is refused: this host speaks version 1.
//! 6. At most `max_attempts` configure documents in total (3 by default; fwupd uses 2).

use super::commands::{Configure, StorageKind};
use super::response::Response;

/// The default XML size limit when the device does not say (every real programmer says 4096).
pub const DEFAULT_MAX_XML: u32 = 4096;

/// Payload sizes outside this range are treated as nonsense and not adopted.
const MIN_PAYLOAD: u64 = 512;
const MAX_PAYLOAD: u64 = 64 * 1024 * 1024;

/// What was agreed with the programmer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Negotiated {
    /// Bytes per raw write the host may send (MaxPayloadSizeToTargetInBytes of the final ACK).
    pub max_payload_to_target: u32,
    /// What the device could accept at most (…Supported), if it said.
    pub max_payload_supported: Option<u32>,
    /// MaxPayloadSizeFromTargetInBytes, if the device said (NAND 9x55: 2048).
    pub max_payload_from_target: Option<u32>,
    /// MaxXMLSizeInBytes (4096 if absent).
    pub max_xml_size: u32,
    /// MemoryName as the device spelled it (`eMMC`, `UFS`, `nand`).
    pub memory_name: Option<String>,
    /// What was asked for.
    pub storage: StorageKind,
    pub version: Option<u32>,
    pub min_version_supported: Option<u32>,
    pub target_name: Option<String>,
    pub date_time: Option<String>,
    /// Whether ZlpAwareHost=1 was sent.
    pub zlp_aware: bool,
    /// Configure documents sent.
    pub attempts: u32,
}

/// Why negotiation stopped without agreement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigureError {
    /// The programmer requires a newer protocol version than 1.
    UnsupportedVersion { min_version: u32 },
    /// NAK with nothing to adopt, or out of attempts.
    Refused {
        attempts: u32,
        device_payload: Option<u64>,
    },
    /// The device granted a payload size that cannot be used.
    BadPayload { value: u64 },
}

impl std::fmt::Display for ConfigureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigureError::UnsupportedVersion { min_version } => write!(
                f,
                "the programmer requires Firehose protocol version {min_version} or newer; this host speaks version 1"
            ),
            ConfigureError::Refused { attempts, .. } => {
                write!(f, "the programmer refused configure ({attempts} attempt(s))")
            }
            ConfigureError::BadPayload { value } => {
                write!(f, "the programmer offered an unusable payload size of {value} bytes")
            }
        }
    }
}

impl std::error::Error for ConfigureError {}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigureStep {
    /// Send this configure (again).
    Send(Configure),
    Done(Negotiated),
    Failed(ConfigureError),
}

/// The negotiation state.
#[derive(Debug, Clone)]
pub struct Negotiation {
    request: Configure,
    attempts: u32,
    max_attempts: u32,
    last_acked: Option<(u32, Negotiated)>,
    moved_up: bool,
}

fn payload_ok(v: u64) -> bool {
    (MIN_PAYLOAD..=MAX_PAYLOAD).contains(&v)
}

impl Negotiation {
    /// Start with `request` (its max_payload_to_target is the wanted size). `max_attempts` is
    /// clamped to 1..=3.
    pub fn new(request: Configure, max_attempts: u32) -> Self {
        Negotiation {
            request,
            attempts: 0,
            max_attempts: max_attempts.clamp(1, 3),
            last_acked: None,
            moved_up: false,
        }
    }

    /// The first configure to send.
    pub fn start(&mut self) -> Configure {
        self.attempts = 1;
        self.request.clone()
    }

    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The configure most recently handed out.
    pub fn current(&self) -> &Configure {
        &self.request
    }

    fn resend(&mut self, payload: u32) -> ConfigureStep {
        self.request.max_payload_to_target = payload;
        self.attempts += 1;
        ConfigureStep::Send(self.request.clone())
    }

    fn negotiated(&self, r: &Response, granted: u32) -> Negotiated {
        let num = |k: &str| r.get_u64(k).and_then(|v| u32::try_from(v).ok());
        Negotiated {
            max_payload_to_target: granted,
            max_payload_supported: num("MaxPayloadSizeToTargetInBytesSupported"),
            max_payload_from_target: num("MaxPayloadSizeFromTargetInBytes"),
            max_xml_size: num("MaxXMLSizeInBytes")
                .filter(|v| *v >= 256)
                .unwrap_or(DEFAULT_MAX_XML),
            memory_name: r.get("MemoryName").map(str::to_string),
            storage: self.request.memory,
            version: num("Version"),
            min_version_supported: num("MinVersionSupported"),
            target_name: r.get("TargetName").map(str::to_string),
            date_time: r.get("DateTime").map(str::to_string),
            zlp_aware: self.request.zlp_aware,
            attempts: self.attempts,
        }
    }

    /// Feed the device's response to the configure just sent.
    pub fn on_response(&mut self, r: &Response) -> ConfigureStep {
        if let Some(min) = r.get_u64("MinVersionSupported") {
            if min > 1 {
                return ConfigureStep::Failed(ConfigureError::UnsupportedVersion {
                    min_version: min.min(u32::MAX as u64) as u32,
                });
            }
        }
        let sent = self.request.max_payload_to_target;
        let device = r.get_u64("MaxPayloadSizeToTargetInBytes");
        let can_retry = self.attempts < self.max_attempts;

        if !r.ack {
            if let Some(d) = device {
                if d != u64::from(sent) && payload_ok(d) && can_retry {
                    return self.resend(d as u32);
                }
            }
            if let Some((payload, _)) = &self.last_acked {
                let payload = *payload;
                if can_retry {
                    return self.resend(payload);
                }
            }
            return ConfigureStep::Failed(ConfigureError::Refused {
                attempts: self.attempts,
                device_payload: device,
            });
        }

        let granted = match device {
            Some(d) if payload_ok(d) => d as u32,
            Some(d) => return ConfigureStep::Failed(ConfigureError::BadPayload { value: d }),
            None => sent,
        };
        let result = self.negotiated(r, granted);
        self.last_acked = Some((granted, result.clone()));
        if let Some(sup) = r.get_u64("MaxPayloadSizeToTargetInBytesSupported") {
            if sup > u64::from(granted) && payload_ok(sup) && !self.moved_up && can_retry {
                self.moved_up = true;
                return self.resend(sup as u32);
            }
        }
        ConfigureStep::Done(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(ack: bool, attrs: &[(&str, &str)]) -> Response {
        Response {
            ack,
            rawmode: None,
            attrs: attrs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn nand_ack_first_time() {
        let mut n = Negotiation::new(Configure::new(StorageKind::Nand), 3);
        assert_eq!(n.start().max_payload_to_target, 8192);
        let r = resp(
            true,
            &[
                ("value", "ACK"),
                ("MemoryName", "nand"),
                ("MinVersionSupported", "1"),
                ("Version", "1"),
                ("MaxPayloadSizeToTargetInBytes", "8192"),
                ("MaxPayloadSizeToTargetInBytesSupported", "8192"),
                ("MaxXMLSizeInBytes", "4096"),
            ],
        );
        let ConfigureStep::Done(d) = n.on_response(&r) else {
            panic!()
        };
        assert_eq!(d.max_payload_to_target, 8192);
        assert_eq!(d.max_xml_size, 4096);
        assert_eq!(d.memory_name.as_deref(), Some("nand"));
        assert_eq!(d.version, Some(1));
        assert_eq!(d.attempts, 1);
        assert!(d.zlp_aware);
    }

    #[test]
    fn nak_adopts_device_size_then_ack() {
        let mut n = Negotiation::new(Configure::new(StorageKind::Emmc), 3);
        n.start();
        let step = n.on_response(&resp(false, &[("MaxPayloadSizeToTargetInBytes", "16384")]));
        let ConfigureStep::Send(c) = step else {
            panic!("{step:?}")
        };
        assert_eq!(c.max_payload_to_target, 16384);
        let ConfigureStep::Done(d) =
            n.on_response(&resp(true, &[("MaxPayloadSizeToTargetInBytes", "16384")]))
        else {
            panic!()
        };
        assert_eq!(d.max_payload_to_target, 16384);
        assert_eq!(d.attempts, 2);
    }

    #[test]
    fn ack_moves_up_to_supported_once() {
        let mut n = Negotiation::new(Configure::new(StorageKind::Nand), 3);
        n.start();
        let r = resp(
            true,
            &[
                ("MaxPayloadSizeToTargetInBytes", "8192"),
                ("MaxPayloadSizeToTargetInBytesSupported", "1048576"),
            ],
        );
        let ConfigureStep::Send(c) = n.on_response(&r) else {
            panic!()
        };
        assert_eq!(c.max_payload_to_target, 1048576);
        // Device grants less again: done with that, no loop.
        let ConfigureStep::Done(d) = n.on_response(&r) else {
            panic!()
        };
        assert_eq!(d.max_payload_to_target, 8192);
    }

    #[test]
    fn nak_after_move_up_falls_back() {
        let mut n = Negotiation::new(Configure::new(StorageKind::Nand), 3);
        n.start();
        let up = resp(
            true,
            &[
                ("MaxPayloadSizeToTargetInBytes", "8192"),
                ("MaxPayloadSizeToTargetInBytesSupported", "65536"),
            ],
        );
        assert!(matches!(n.on_response(&up), ConfigureStep::Send(_)));
        let ConfigureStep::Send(c) = n.on_response(&resp(false, &[])) else {
            panic!()
        };
        assert_eq!(c.max_payload_to_target, 8192);
        assert!(matches!(
            n.on_response(&resp(true, &[("MaxPayloadSizeToTargetInBytes", "8192")])),
            ConfigureStep::Done(_)
        ));
        assert_eq!(n.attempts(), 3);
    }

    #[test]
    fn bounded_attempts_and_plain_nak() {
        let mut n = Negotiation::new(Configure::new(StorageKind::Ufs), 2);
        n.start();
        let ConfigureStep::Send(_) =
            n.on_response(&resp(false, &[("MaxPayloadSizeToTargetInBytes", "4096")]))
        else {
            panic!()
        };
        // A device that keeps NAKing with yet another size: stop at the attempt limit.
        assert!(matches!(
            n.on_response(&resp(false, &[("MaxPayloadSizeToTargetInBytes", "2048")])),
            ConfigureStep::Failed(ConfigureError::Refused { attempts: 2, .. })
        ));
        let mut m = Negotiation::new(Configure::new(StorageKind::Ufs), 3);
        m.start();
        assert!(matches!(
            m.on_response(&resp(false, &[])),
            ConfigureStep::Failed(_)
        ));
    }

    #[test]
    fn min_version_two_is_refused() {
        let mut n = Negotiation::new(Configure::new(StorageKind::Ufs), 3);
        n.start();
        assert_eq!(
            n.on_response(&resp(true, &[("MinVersionSupported", "2")])),
            ConfigureStep::Failed(ConfigureError::UnsupportedVersion { min_version: 2 })
        );
    }

    #[test]
    fn absurd_sizes_are_not_adopted() {
        let mut n = Negotiation::new(Configure::new(StorageKind::Ufs), 3);
        n.start();
        assert!(matches!(
            n.on_response(&resp(true, &[("MaxPayloadSizeToTargetInBytes", "0")])),
            ConfigureStep::Failed(ConfigureError::BadPayload { value: 0 })
        ));
        let mut n = Negotiation::new(Configure::new(StorageKind::Ufs), 3);
        n.start();
        assert!(matches!(
            n.on_response(&resp(false, &[("MaxPayloadSizeToTargetInBytes", "1")])),
            ConfigureStep::Failed(_)
        ));
        let mut n = Negotiation::new(Configure::new(StorageKind::Ufs), 3);
        n.start();
        let ConfigureStep::Done(d) = n.on_response(&resp(true, &[("MaxXMLSizeInBytes", "7")]))
        else {
            panic!()
        };
        assert_eq!(d.max_xml_size, DEFAULT_MAX_XML);
        assert_eq!(d.max_payload_to_target, 1048576);
    }
}
