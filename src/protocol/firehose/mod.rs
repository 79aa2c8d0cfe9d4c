//! Firehose, the XML flashing protocol spoken by the uploaded programmer (PROTOCOLS.md §2). Sans-IO.

pub mod xml;
