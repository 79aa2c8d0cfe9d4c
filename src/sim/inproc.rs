//! An emulated modem running on a thread of this process, serving one end of a link (an
//! in-process pipe or a pty). Used by `qrescue demo`, `qrescue bench` and tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::sim::device::{self, DeviceConfig, RunOutcome};
use crate::sim::firehose::programmer::Programmer;
use crate::sim::stoplink::StopLink;
use crate::transport::Transport;

/// A running emulated unit. Dropping it stops the unit and waits for its thread.
pub struct InProcessModem {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(RunOutcome, Programmer)>>,
}

impl InProcessModem {
    /// Run `cfg`'s unit (boot ROM, then `programmer` after an upload) on `link` until stopped.
    pub fn start<L: Transport + 'static>(
        mut link: L,
        mut cfg: DeviceConfig,
        mut programmer: Programmer,
    ) -> InProcessModem {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("emulated-modem".into())
            .spawn(move || {
                let outcome = {
                    let mut link = StopLink::new(&mut link, &flag);
                    device::run(&mut link, &mut cfg, &mut programmer, &flag)
                };
                (outcome, programmer)
            })
            .expect("spawn the emulated modem's thread");
        InProcessModem {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop the unit and hand back how it ended and its programmer (storage, report).
    pub fn finish(mut self) -> Option<(RunOutcome, Programmer)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl Drop for InProcessModem {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::sahara::{SaharaConfig, SaharaSession};
    use crate::sim::firehose::programmer::ProgrammerOptions;
    use crate::sim::firehose::storage::StorageProfile;
    use crate::sim::profile::Profile;
    use crate::transport::{pipe, Framing};

    #[test]
    fn a_unit_on_a_thread_answers_and_stops_on_request() {
        let profile = Profile::by_name("ec25").unwrap();
        let storage = StorageProfile::by_name("nand-ec25e").unwrap();
        let (host, dev) = pipe::pair(Framing::Stream);
        let modem = InProcessModem::start(
            dev,
            DeviceConfig::new(profile.clone()),
            Programmer::new(&storage, ProgrammerOptions::default()),
        );
        let mut s = SaharaSession::new(host, SaharaConfig::default());
        let info = s.read_info().unwrap();
        assert_eq!(info.serial, Some(profile.identity.serial));
        let started = std::time::Instant::now();
        let (outcome, programmer) = modem.finish().unwrap();
        assert_eq!(outcome, RunOutcome::Stopped);
        assert_eq!(programmer.report().sessions, 0);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
