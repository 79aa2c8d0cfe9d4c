//! Our own serde description of a USB device as it was seen at one moment: enough to classify
//! its mode, find its ports by interface number, record it and replay it. Built from nusb + sysfs
//! on a real host, from the emulator's descriptors, or from a recording.

use serde::{Deserialize, Serialize};

/// Bus speed as the host negotiated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Speed {
    Low,
    Full,
    High,
    Super,
    SuperPlus,
}

impl Speed {
    /// The usual bulk wMaxPacketSize at this speed (64 / 512 / 1024).
    pub fn bulk_max_packet(self) -> usize {
        match self {
            Speed::Low | Speed::Full => 64,
            Speed::High => 512,
            Speed::Super | Speed::SuperPlus => 1024,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Speed::Low => "1.5M",
            Speed::Full => "12M",
            Speed::High => "480M",
            Speed::Super => "5G",
            Speed::SuperPlus => "10G",
        }
    }
}

/// Endpoint transfer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransferType {
    Control,
    Isochronous,
    Bulk,
    Interrupt,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointSnapshot {
    /// bEndpointAddress: bit 7 set = IN.
    pub address: u8,
    pub transfer: TransferType,
    pub max_packet_size: u16,
}

impl EndpointSnapshot {
    pub fn is_in(&self) -> bool {
        self.address & 0x80 != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InterfaceSnapshot {
    pub number: u8,
    #[serde(default)]
    pub alt: u8,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    #[serde(default)]
    pub endpoints: Vec<EndpointSnapshot>,
    /// The kernel driver bound to it, when known (`option`, `qcserial`, `qmi_wwan` …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The tty the kernel made for it (`/dev/ttyUSB2`), found via sysfs; the emulator puts its
    /// pty here. Ports are chosen by interface number; this is only where that interface lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<String>,
}

impl InterfaceSnapshot {
    /// The first bulk IN and bulk OUT endpoints.
    pub fn bulk_pair(&self) -> Option<(&EndpointSnapshot, &EndpointSnapshot)> {
        let find = |dir_in: bool| {
            self.endpoints
                .iter()
                .find(|e| e.transfer == TransferType::Bulk && e.is_in() == dir_in)
        };
        Some((find(true)?, find(false)?))
    }
}

/// One USB device at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeviceSnapshot {
    pub bus: u8,
    /// Port numbers from the root hub down (`[1, 2]` = sysfs `3-1.2` on bus 3).
    pub ports: Vec<u8>,
    /// Device address on the bus (changes at every enumeration).
    #[serde(default)]
    pub address: u8,
    pub vid: u16,
    pub pid: u16,
    /// bcdDevice, e.g. 0x0414 for "4.14". 0x0000 on some broken states.
    #[serde(default)]
    pub bcd_device: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed: Option<Speed>,
    #[serde(default)]
    pub interfaces: Vec<InterfaceSnapshot>,
    /// Where this came from when it is not a real host (`sim`, `replay`), for people reading logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl DeviceSnapshot {
    /// The sysfs-style location: `3-1.2` (bus 3, port 1, then port 2). Stable while the device
    /// stays on the same port *and speed*; a USB3 modem re-enumerates elsewhere in EDL.
    pub fn location(&self) -> String {
        if self.ports.is_empty() {
            return format!("{}-0", self.bus);
        }
        let chain: Vec<String> = self.ports.iter().map(u8::to_string).collect();
        format!("{}-{}", self.bus, chain.join("."))
    }

    /// `05c6:9008`.
    pub fn id(&self) -> String {
        format!("{:04x}:{:04x}", self.vid, self.pid)
    }

    /// bcdDevice as people read it: `4.14`.
    pub fn bcd_text(&self) -> String {
        format!("{:x}.{:02x}", self.bcd_device >> 8, self.bcd_device & 0xff)
    }

    pub fn interface(&self, number: u8) -> Option<&InterfaceSnapshot> {
        self.interfaces
            .iter()
            .find(|i| i.number == number && i.alt == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_and_ids_read_like_sysfs_and_lsusb() {
        let s = DeviceSnapshot {
            bus: 3,
            ports: vec![1, 2],
            address: 5,
            vid: 0x05c6,
            pid: 0x9008,
            bcd_device: 0x0414,
            manufacturer: None,
            product: Some("QUSB_BULK_CID:0410_SN:49CBD7EF".into()),
            serial: None,
            speed: Some(Speed::High),
            interfaces: vec![],
            origin: None,
        };
        assert_eq!(s.location(), "3-1.2");
        assert_eq!(s.id(), "05c6:9008");
        assert_eq!(s.bcd_text(), "4.14");
        let json = serde_json::to_string(&s).unwrap();
        let back: DeviceSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }
}
