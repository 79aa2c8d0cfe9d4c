//! AT commands on the modem's AT port in normal mode. Sans-IO.
//!
//! - [`command`]: a validated command line, its default wait, and whether it changes the USB
//!   composition or restarts the modem;
//! - [`reply`]: lines, final result codes and URCs, collected into one [`Reply`] per command;
//! - [`cme`]: `+CME ERROR` / `+CMS ERROR` codes;
//! - [`info`]: typed parsers (ATI, AT+QGMR/CGMR, AT+CGSN, AT+QCCID, AT+CFUN?, AT+CSQ,
//!   AT+QCFG="usbnet", AT+QSECBOOT).
//!
//! The session that drives these over a transport is `crate::engine::at`.

pub mod cme;
pub mod command;
pub mod info;
pub mod reply;

pub use cme::{CmeError, CmsError};
pub use command::{Command, UsbImpact};
pub use info::{
    parse_ati, parse_cfun, parse_csq, parse_iccid, parse_imei, parse_qsecboot, parse_revision,
    parse_usbnet, AtError, Ati, Cfun, CfunState, Csq, FirmwareRevision, Iccid, Imei, QSecBoot,
    UsbNet,
};
pub use reply::{FinalResult, LineSplitter, Reply, ReplyCollector};
