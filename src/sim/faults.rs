//! Seeded, reproducible fault injection for the emulated modem.
//!
//! Faults are given on the command line as `--fault SPEC` (repeatable) and in tests as
//! [`Fault`] values. Where a fault needs a number that was not given (e.g. `drop-after` without a
//! byte count), it is drawn from the plan's seeded RNG, so the same `--seed` reproduces the run.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One fault to inject.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    // --- boot ROM (Sahara) ---
    /// Drop the link after this many bytes have crossed it (both directions counted).
    DropAfter(Option<u64>),
    /// Refuse any programmer with this END_OF_IMAGE status (default 0x25, image auth failure).
    RefuseProgrammer(Option<u32>),
    /// The HELLO was consumed before the host connected (as the Windows QUD driver does): nothing
    /// is queued, but the device still answers a HELLO_RESP.
    ConsumeHello,
    /// The device is mid-session: after `delay_ms` of silence it sends END_OF_IMAGE (command 4)
    /// instead of HELLO, and never offers a HELLO.
    MidSession(Option<u64>),
    /// Delay every response by this many milliseconds.
    Delay(u64),
    /// DONE_RESP reports status 0 ("more images pending") although the upload is complete.
    DonePending,
    // --- programmer (Firehose) ---
    /// NAK the Nth Firehose command (1-based, counted from the first command after the welcome).
    Nak(Option<u64>),
    /// NAK `configure` with a smaller payload and "Host's payload to target size is too large".
    PayloadTooLarge,
    /// Send garbled XML as the answer to the Nth command.
    GarbledXml(Option<u64>),
    /// Drop the link after this many raw data bytes of a program/read.
    DropInRaw(Option<u64>),
    /// Stop answering from the Nth command on (the programmer hangs).
    Hang(Option<u64>),
    /// NAND: the Nth program fails with a write error.
    NandWriteFail(Option<u64>),
}

impl Fault {
    /// Every fault spelling accepted by `--fault`, for help texts.
    pub const SPELLINGS: &'static [&'static str] = &[
        "drop-after[:BYTES]",
        "refuse-programmer[:STATUS]",
        "consume-hello",
        "mid-session[:DELAY_MS]",
        "delay:MS",
        "done-pending",
        "nak[:N]",
        "payload-too-large",
        "garbled-xml[:N]",
        "drop-in-raw[:BYTES]",
        "hang[:N]",
        "nand-write-fail[:N]",
    ];
}

/// Parse error for a fault spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFault(pub String);

impl fmt::Display for BadFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}; known faults: {}",
            self.0,
            Fault::SPELLINGS.join(", ")
        )
    }
}

impl std::error::Error for BadFault {}

fn parse_num(s: &str) -> Result<u64, BadFault> {
    let s = s.trim();
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else {
        s.parse()
    };
    r.map_err(|_| BadFault(format!("'{s}' is not a number")))
}

impl FromStr for Fault {
    type Err = BadFault;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (name, arg) = match spec.split_once(':') {
            Some((n, a)) => (n.trim(), Some(a)),
            None => (spec.trim(), None),
        };
        let opt = |a: Option<&str>| a.map(parse_num).transpose();
        let none = |a: Option<&str>, f: Fault| match a {
            None => Ok(f),
            Some(_) => Err(BadFault(format!("fault '{name}' takes no argument"))),
        };
        match name {
            "drop-after" => Ok(Fault::DropAfter(opt(arg)?)),
            "refuse-programmer" => Ok(Fault::RefuseProgrammer(
                opt(arg)?
                    .map(|v| u32::try_from(v).map_err(|_| BadFault("status too large".into())))
                    .transpose()?,
            )),
            "consume-hello" => none(arg, Fault::ConsumeHello),
            "mid-session" => Ok(Fault::MidSession(opt(arg)?)),
            "delay" => Ok(Fault::Delay(opt(arg)?.ok_or_else(|| {
                BadFault("delay needs milliseconds: delay:MS".into())
            })?)),
            "done-pending" => none(arg, Fault::DonePending),
            "nak" => Ok(Fault::Nak(opt(arg)?)),
            "payload-too-large" => none(arg, Fault::PayloadTooLarge),
            "garbled-xml" => Ok(Fault::GarbledXml(opt(arg)?)),
            "drop-in-raw" => Ok(Fault::DropInRaw(opt(arg)?)),
            "hang" => Ok(Fault::Hang(opt(arg)?)),
            "nand-write-fail" => Ok(Fault::NandWriteFail(opt(arg)?)),
            other => Err(BadFault(format!("unknown fault '{other}'"))),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with = |f: &mut fmt::Formatter<'_>, n: &str, v: &Option<u64>| match v {
            Some(v) => write!(f, "{n}:{v}"),
            None => write!(f, "{n}"),
        };
        match self {
            Fault::DropAfter(v) => with(f, "drop-after", v),
            Fault::RefuseProgrammer(v) => with(f, "refuse-programmer", &v.map(u64::from)),
            Fault::ConsumeHello => write!(f, "consume-hello"),
            Fault::MidSession(v) => with(f, "mid-session", v),
            Fault::Delay(ms) => write!(f, "delay:{ms}"),
            Fault::DonePending => write!(f, "done-pending"),
            Fault::Nak(v) => with(f, "nak", v),
            Fault::PayloadTooLarge => write!(f, "payload-too-large"),
            Fault::GarbledXml(v) => with(f, "garbled-xml", v),
            Fault::DropInRaw(v) => with(f, "drop-in-raw", v),
            Fault::Hang(v) => with(f, "hang", v),
            Fault::NandWriteFail(v) => with(f, "nand-write-fail", v),
        }
    }
}

/// The faults of one emulated unit plus the seeded RNG that fills in unspecified numbers.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    pub faults: Vec<Fault>,
    pub seed: u64,
    rng: ChaCha8Rng,
}

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan::new(Vec::new(), 0)
    }
}

impl FaultPlan {
    pub fn new(faults: Vec<Fault>, seed: u64) -> Self {
        FaultPlan {
            faults,
            seed,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn none() -> Self {
        Self::default()
    }

    pub fn has(&self, pred: impl Fn(&Fault) -> bool) -> bool {
        self.faults.iter().any(pred)
    }

    /// Find the first fault matching `pick` (which maps a fault to its optional number) and
    /// resolve the number: the given one, or a seeded draw from `range` when none was given.
    pub fn number(
        &mut self,
        pick: impl Fn(&Fault) -> Option<Option<u64>>,
        range: std::ops::Range<u64>,
    ) -> Option<u64> {
        let found = self.faults.iter().find_map(&pick)?;
        Some(match found {
            Some(v) => v,
            None if range.is_empty() => range.start,
            None => self.rng.gen_range(range),
        })
    }

    /// `drop-after[:N]`: the byte count, drawn from `range` when not given.
    pub fn drop_after(&mut self, range: std::ops::Range<u64>) -> Option<u64> {
        self.number(
            |f| match f {
                Fault::DropAfter(v) => Some(*v),
                _ => None,
            },
            range,
        )
    }

    /// `refuse-programmer[:STATUS]`: the END_OF_IMAGE status (default 0x25, image auth failure).
    pub fn refuse_programmer(&self) -> Option<u32> {
        self.faults.iter().find_map(|f| match f {
            Fault::RefuseProgrammer(v) => Some(v.unwrap_or(0x25)),
            _ => None,
        })
    }

    /// `consume-hello` is set.
    pub fn consume_hello(&self) -> bool {
        self.has(|f| matches!(f, Fault::ConsumeHello))
    }

    /// `mid-session[:DELAY_MS]`: the silence before END_OF_IMAGE, `default_ms` when not given.
    pub fn mid_session_ms(&self, default_ms: u64) -> Option<u64> {
        self.faults.iter().find_map(|f| match f {
            Fault::MidSession(v) => Some(v.unwrap_or(default_ms)),
            _ => None,
        })
    }

    /// `delay:MS`: the response delay (the sum if given more than once), 0 when absent.
    pub fn delay_ms(&self) -> u64 {
        self.faults
            .iter()
            .map(|f| match f {
                Fault::Delay(ms) => *ms,
                _ => 0,
            })
            .sum()
    }

    /// `done-pending` is set.
    pub fn done_pending(&self) -> bool {
        self.has(|f| matches!(f, Fault::DonePending))
    }

    /// A seeded random number in `range`, for faults that need more randomness.
    pub fn draw(&mut self, range: std::ops::Range<u64>) -> u64 {
        if range.is_empty() {
            range.start
        } else {
            self.rng.gen_range(range)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip() {
        for s in [
            "drop-after:4096",
            "drop-after",
            "refuse-programmer",
            "refuse-programmer:34",
            "consume-hello",
            "mid-session:5000",
            "delay:50",
            "done-pending",
            "nak:3",
            "payload-too-large",
            "garbled-xml:2",
            "drop-in-raw:100000",
            "hang:4",
            "nand-write-fail",
        ] {
            let f: Fault = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
    }

    #[test]
    fn bad_specs_are_explained() {
        let e = "explode".parse::<Fault>().unwrap_err();
        assert!(e.to_string().contains("unknown fault 'explode'"));
        assert!(e.to_string().contains("drop-after"));
        assert!("delay".parse::<Fault>().is_err());
        assert!("consume-hello:3".parse::<Fault>().is_err());
        assert!("nak:x".parse::<Fault>().is_err());
    }

    #[test]
    fn boot_rom_fault_accessors() {
        let faults: Vec<Fault> = [
            "refuse-programmer",
            "consume-hello",
            "mid-session",
            "delay:30",
            "done-pending",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let p = FaultPlan::new(faults, 3);
        assert_eq!(p.refuse_programmer(), Some(0x25));
        assert!(p.consume_hello());
        assert_eq!(p.mid_session_ms(5000), Some(5000));
        assert_eq!(p.delay_ms(), 30);
        assert!(p.done_pending());
        let mut none = FaultPlan::none();
        assert_eq!(none.refuse_programmer(), None);
        assert!(!none.consume_hello() && !none.done_pending());
        assert_eq!(none.mid_session_ms(5000), None);
        assert_eq!(none.delay_ms(), 0);
        assert_eq!(none.drop_after(1..10), None);
        let mut q = FaultPlan::new(
            vec![
                "refuse-programmer:34".parse().unwrap(),
                Fault::DropAfter(None),
            ],
            9,
        );
        assert_eq!(q.refuse_programmer(), Some(34));
        let n = q.drop_after(100..200).unwrap();
        assert!((100..200).contains(&n));
    }

    #[test]
    fn unspecified_numbers_are_seeded() {
        let draw = |seed| {
            let mut p = FaultPlan::new(vec![Fault::DropAfter(None)], seed);
            p.number(
                |f| match f {
                    Fault::DropAfter(v) => Some(*v),
                    _ => None,
                },
                1..1_000_000,
            )
        };
        assert_eq!(draw(7), draw(7));
        assert!(draw(7).is_some());
        let mut p = FaultPlan::new(vec![Fault::DropAfter(Some(10))], 1);
        assert_eq!(
            p.number(
                |f| match f {
                    Fault::DropAfter(v) => Some(*v),
                    _ => None,
                },
                1..5
            ),
            Some(10)
        );
    }
}
