//! The guided workflows as pure state machines that the console and the CLI both drive:
//! what to do next given what has been seen. No I/O here: the drivers run the actions
//! (identify, back up, switch to EDL, flash, wait) and feed the results back.
//!
//! - [`verdict`]: what a flash proved — "flashed and verified", "flashed, NOT verified" (and
//!   what failed) or "failed" — from what the modem said about itself before and after.

pub mod verdict;
