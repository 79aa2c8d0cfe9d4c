//! Firehose XML at the byte level, shared by the host session, the emulated programmer and the
//! rawprogram/patch parser: split a stream into documents at `</data>`, parse a document into a
//! flat list of elements with attributes (bounded: element count, attribute count, depth), and
//! build documents (never an exact multiple of 512 bytes, PROTOCOLS.md §2.1).

use std::fmt;

use quick_xml::events::Event;
use quick_xml::Reader;

/// Limits that keep hostile input from costing unbounded memory or time.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_elements: usize,
    pub max_attrs: usize,
    pub max_depth: usize,
    pub max_bytes: usize,
}

impl Limits {
    /// For one Firehose document on the wire.
    pub const WIRE: Limits = Limits {
        max_elements: 64,
        max_attrs: 64,
        max_depth: 8,
        max_bytes: 64 * 1024,
    };
    /// For rawprogram/patch/contents files in a package.
    pub const FILE: Limits = Limits {
        max_elements: 100_000,
        max_attrs: 64,
        max_depth: 32,
        max_bytes: 16 * 1024 * 1024,
    };
}

/// One element (start or empty tag) with its attributes in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    /// Nesting depth: 0 for the root (`<data>`), 1 for a command inside it.
    pub depth: usize,
}

impl Element {
    pub fn new(name: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            attrs: Vec::new(),
            depth: 1,
        }
    }

    /// Builder: add an attribute.
    pub fn attr(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.attrs.push((key.into(), value.to_string()));
        self
    }

    /// The value of attribute `key` (exact case).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of attribute `key`, ignoring ASCII case (tools spell `ZlpAwareHost` and
    /// `ZLPAwareHost`).
    pub fn get_ci(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Why XML could not be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmlError {
    /// Not well-formed XML (the parser's message).
    Malformed(String),
    /// A limit was exceeded (what, limit).
    TooLarge(&'static str, usize),
    /// Attribute values or names that are not UTF-8.
    Encoding,
}

impl fmt::Display for XmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmlError::Malformed(m) => write!(f, "malformed XML: {m}"),
            XmlError::TooLarge(what, limit) => write!(f, "XML has too many {what} (limit {limit})"),
            XmlError::Encoding => write!(f, "XML is not valid UTF-8"),
        }
    }
}

impl std::error::Error for XmlError {}

/// Parse a whole XML document into its elements (start and empty tags, in order). Comments,
/// declarations, text and processing instructions are skipped; a UTF-8 BOM is accepted.
pub fn parse_elements(doc: &[u8], limits: Limits) -> Result<Vec<Element>, XmlError> {
    if doc.len() > limits.max_bytes {
        return Err(XmlError::TooLarge("bytes", limits.max_bytes));
    }
    let doc = doc.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(doc);
    let mut reader = Reader::from_reader(doc);
    reader.config_mut().trim_text(true);
    reader.config_mut().check_end_names = true;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut depth = 0usize;
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let is_start = matches!(ev, Event::Start(_));
                if out.len() >= limits.max_elements {
                    return Err(XmlError::TooLarge("elements", limits.max_elements));
                }
                if depth >= limits.max_depth {
                    return Err(XmlError::TooLarge("nesting levels", limits.max_depth));
                }
                let name = std::str::from_utf8(e.name().as_ref())
                    .map_err(|_| XmlError::Encoding)?
                    .to_string();
                let mut attrs = Vec::new();
                for a in e.attributes().with_checks(true) {
                    let a = a.map_err(|e| XmlError::Malformed(e.to_string()))?;
                    if attrs.len() >= limits.max_attrs {
                        return Err(XmlError::TooLarge("attributes", limits.max_attrs));
                    }
                    let key = std::str::from_utf8(a.key.as_ref())
                        .map_err(|_| XmlError::Encoding)?
                        .to_string();
                    let value = a
                        .unescape_value()
                        .map_err(|e| XmlError::Malformed(e.to_string()))?
                        .into_owned();
                    attrs.push((key, value));
                }
                out.push(Element { name, attrs, depth });
                if is_start {
                    depth += 1;
                }
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if depth != 0 {
        return Err(XmlError::Malformed(
            "document ends inside an element".into(),
        ));
    }
    Ok(out)
}

fn escape_attr(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
}

fn element_text(e: &Element, out: &mut String) {
    out.push('<');
    out.push_str(&e.name);
    for (k, v) in &e.attrs {
        out.push(' ');
        out.push_str(k);
        out.push_str("=\"");
        escape_attr(v, out);
        out.push('"');
    }
    out.push_str(" />");
}

/// A host command document: `<?xml …?><data><cmd …/></data>`, padded with a newline when its
/// length would be an exact multiple of 512 (a ZLP-sized write the programmer may not see end).
pub fn host_document(cmd: &Element) -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\" ?><data>");
    element_text(cmd, &mut s);
    s.push_str("</data>");
    if s.len() % 512 == 0 {
        s.push('\n');
    }
    s.into_bytes()
}

/// A device document the way real programmers format it: declaration, newline, `<data>`, the
/// element on its own line, `</data>` (PROTOCOLS.md §9 captures).
pub fn device_document(e: &Element) -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n");
    element_text(e, &mut s);
    s.push_str("\n</data>");
    s.into_bytes()
}

/// Splits a byte stream into Firehose documents at `</data>`. Bytes after a document (e.g. raw
/// data right after an `ACK rawmode="true"`) stay in the buffer and can be taken with
/// [`DocumentSplitter::take_rest`].
#[derive(Debug, Default)]
pub struct DocumentSplitter {
    buf: Vec<u8>,
    max_doc: usize,
}

const END_TAG: &[u8] = b"</data>";

impl DocumentSplitter {
    pub fn new(max_doc: usize) -> Self {
        DocumentSplitter {
            buf: Vec::new(),
            max_doc,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes held that are not yet a complete document.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete document, if one is buffered. Leading whitespace (e.g. the "\n" a host
    /// appends after `</data>`) is dropped. An over-long run of bytes without `</data>` is an
    /// error, so a peer cannot make us buffer forever.
    pub fn next_document(&mut self) -> Result<Option<Vec<u8>>, XmlError> {
        let start = self
            .buf
            .iter()
            .position(|b| !b.is_ascii_whitespace() && *b != 0)
            .unwrap_or(self.buf.len());
        if start > 0 {
            self.buf.drain(..start);
        }
        match find(&self.buf, END_TAG) {
            Some(pos) => {
                let end = pos + END_TAG.len();
                let doc: Vec<u8> = self.buf.drain(..end).collect();
                Ok(Some(doc))
            }
            None if self.buf.len() > self.max_doc => {
                Err(XmlError::TooLarge("bytes without </data>", self.max_doc))
            }
            None => Ok(None),
        }
    }

    /// Take every buffered byte (raw data that followed a document).
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn host_documents_are_never_multiples_of_512() {
        for n in 0..1200 {
            let e = Element::new("nop").attr("value", "x".repeat(n));
            let d = host_document(&e);
            assert_ne!(d.len() % 512, 0, "n={n}");
            let els = parse_elements(&d, Limits::WIRE).unwrap();
            assert_eq!(els[1].get("value").unwrap().len(), n);
        }
    }

    #[test]
    fn device_document_matches_real_layout() {
        let d = device_document(&Element::new("log").attr("value", "INFO: Binary build date"));
        assert_eq!(
            String::from_utf8(d).unwrap(),
            "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<data>\n<log value=\"INFO: Binary build date\" />\n</data>"
        );
    }

    #[test]
    fn escaping_round_trips() {
        let v = "a<b>&\"c\"\nd";
        let d = host_document(&Element::new("x").attr("v", v));
        let els = parse_elements(&d, Limits::WIRE).unwrap();
        assert_eq!(els[1].get("v"), Some(v));
    }

    #[test]
    fn splitter_handles_merged_and_split_documents_and_raw_tail() {
        let a = device_document(&Element::new("log").attr("value", "one"));
        let b = device_document(
            &Element::new("response")
                .attr("value", "ACK")
                .attr("rawmode", "true"),
        );
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        stream.extend_from_slice(&[0xAA; 10]);
        let mut s = DocumentSplitter::new(4096);
        s.push(&stream[..7]);
        assert_eq!(s.next_document().unwrap(), None);
        s.push(&stream[7..]);
        assert_eq!(s.next_document().unwrap().unwrap(), a);
        assert_eq!(s.next_document().unwrap().unwrap(), b);
        assert_eq!(s.take_rest(), vec![0xAA; 10]);
    }

    #[test]
    fn splitter_drops_whitespace_between_documents() {
        let mut s = DocumentSplitter::new(4096);
        s.push(b"\n\r\n<?xml version=\"1.0\" ?><data><nop /></data>\n");
        let d = s.next_document().unwrap().unwrap();
        assert!(d.starts_with(b"<?xml"));
        assert_eq!(s.next_document().unwrap(), None);
    }

    #[test]
    fn splitter_bounds_a_document_without_end() {
        let mut s = DocumentSplitter::new(100);
        s.push(&[b'a'; 101]);
        assert!(matches!(s.next_document(), Err(XmlError::TooLarge(..))));
    }

    #[test]
    fn parses_bom_comments_crlf_and_nesting() {
        let doc = "\u{feff}<?xml version=\"1.0\" ?>\r\n<data>\r\n  <!--c-->\r\n  <program a=\"1\" b=\"..\\x.bin\"/>\r\n  <erase a=\"2\"/>\r\n</data>\r\n";
        let els = parse_elements(doc.as_bytes(), Limits::FILE).unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(els[0].name, "data");
        assert_eq!(els[0].depth, 0);
        assert_eq!(els[1].get("b"), Some("..\\x.bin"));
        assert_eq!(els[2].depth, 1);
    }

    #[test]
    fn limits_are_enforced() {
        let mut attrs = String::new();
        for i in 0..70 {
            attrs.push_str(&format!(" a{i}=\"1\""));
        }
        let doc = format!("<data><x{attrs}/></data>");
        assert_eq!(
            parse_elements(doc.as_bytes(), Limits::WIRE),
            Err(XmlError::TooLarge("attributes", 64))
        );
        let deep = "<a>".repeat(40) + &"</a>".repeat(40);
        assert!(matches!(
            parse_elements(deep.as_bytes(), Limits::FILE),
            Err(XmlError::TooLarge("nesting levels", _))
        ));
        assert!(matches!(
            parse_elements(b"<data><x a=\"1\" a=\"2\"/></data>", Limits::WIRE),
            Err(XmlError::Malformed(_))
        ));
        assert!(parse_elements(b"<data><x></data>", Limits::WIRE).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_elements(&bytes, Limits::WIRE);
        }

        #[test]
        fn parse_never_panics_on_xmlish_text(s in "[<>/?=\" a-z0-9!\\-\\[\\]&;]{0,200}") {
            let _ = parse_elements(s.as_bytes(), Limits::WIRE);
        }

        #[test]
        fn splitter_never_panics(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
            let mut s = DocumentSplitter::new(256);
            for c in chunks {
                s.push(&c);
                while let Ok(Some(_)) = s.next_document() {}
            }
        }
    }
}
