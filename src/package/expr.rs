//! The expression language of rawprogram/patch XML values (PROTOCOLS.md §3, §9.9), evaluated
//! without side effects.
//!
//! Grammar (whitespace allowed between tokens):
//!
//! ```text
//! value   := "CRC32" "(" expr "," expr ")" | expr          (CRC32 only as a whole patch value)
//! expr    := term (("+" | "-") term)*
//! term    := factor (("*" | "/") factor)*
//! factor  := number | variable | "(" expr ")"
//! number  := digits "." | digits | "0x" hexdigits
//! variable:= NUM_DISK_SECTORS | NUM_DISK_BLOCKS            (ASCII case ignored)
//! ```
//!
//! # Why undotted literals are decimal
//!
//! The ptool files carry a Trace32 note: "0x10-10=0, *but* 0x10-10.=6", i.e. in Trace32 an
//! undotted literal is hexadecimal and only a trailing dot makes it decimal. The same real files
//! contradict that reading for the values tools actually send: `CRC32(1,92)` computes the CRC of
//! the 92-byte GPT header (hexadecimal 0x92 = 146 would cover 54 bytes of the reserved area and
//! yield a header CRC no GPT reader accepts), and `CRC32(2,4096)` / `CRC32(2,8192)` cover 32 or 64
//! entries of 128 bytes (0x4096 would not be a whole number of entries). The programmers and
//! host tools that evaluate these values (qdl, edl, qdlrs, Qualcomm's own programmer, judging by
//! the devices that boot after such patches) read them as decimal. So here: `34.` and `34` are
//! both decimal 34, and hexadecimal needs an explicit `0x` prefix. For the single-digit undotted
//! values in real files (`NUM_DISK_SECTORS-1`, `0`) both readings agree anyway.
//!
//! Arithmetic is unsigned 64-bit and checked: overflow, a negative intermediate result and
//! division by zero are errors, never wrapped values or panics. Input length and nesting depth are
//! bounded.

use std::fmt;

/// What the expression's variables stand for on the target storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExprEnv {
    /// Sectors (NAND: pages) of the physical partition being addressed.
    pub num_disk_sectors: u64,
    /// Erase blocks of the physical partition; only known on NAND.
    pub num_disk_blocks: Option<u64>,
}

/// The evaluated `value` of a `<patch>`: a plain number, or a CRC32 the caller computes over its
/// own data (the disk, or a host-side file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchValue {
    Number(u64),
    Crc32 { start_sector: u64, len_bytes: u64 },
}

/// Longest expression accepted (real ones are under 40 characters).
pub const MAX_LEN: usize = 256;
/// Deepest parenthesis nesting accepted.
pub const MAX_DEPTH: usize = 32;

/// Why an expression could not be evaluated. Messages name the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("the expression is empty")]
    Empty,
    #[error("the expression is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("the expression nests parentheses deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("unexpected {found} at position {pos} of '{expr}'; expected {expected}")]
    Unexpected {
        expr: String,
        pos: usize,
        found: String,
        expected: &'static str,
    },
    #[error("'{text}' in '{expr}' is not a valid number ({why})")]
    BadNumber {
        expr: String,
        text: String,
        why: &'static str,
    },
    #[error("unknown variable '{0}'; only NUM_DISK_SECTORS and NUM_DISK_BLOCKS are defined")]
    UnknownVariable(String),
    #[error("NUM_DISK_BLOCKS is only defined on NAND storage")]
    BlocksUndefined,
    #[error("{lhs} {op} {rhs} does not fit in an unsigned 64-bit number")]
    Overflow { lhs: u64, op: char, rhs: u64 },
    #[error("{lhs} - {rhs} would be negative")]
    Underflow { lhs: u64, rhs: u64 },
    #[error("division by zero ({lhs} / 0)")]
    DivisionByZero { lhs: u64 },
    #[error("CRC32(start, length) must be the whole value (like CRC32(1,92)); it cannot be part of arithmetic")]
    Crc32Misplaced,
    #[error("CRC32(...) needs data to checksum; it is only allowed as a patch value")]
    Crc32NotANumber,
}

/// Evaluate a plain numeric expression (start_sector, num_partition_sectors, start_byte_hex …).
pub fn eval(expr: &str, env: &ExprEnv) -> Result<u64, ExprError> {
    match eval_patch_value(expr, env)? {
        PatchValue::Number(n) => Ok(n),
        PatchValue::Crc32 { .. } => Err(ExprError::Crc32NotANumber),
    }
}

/// Evaluate a `<patch value="…">`: a number or `CRC32(start_sector, byte_len)` with both
/// arguments evaluated.
pub fn eval_patch_value(expr: &str, env: &ExprEnv) -> Result<PatchValue, ExprError> {
    let ast = parse(expr)?;
    match ast {
        Value::Crc32(start, len) => Ok(PatchValue::Crc32 {
            start_sector: start.eval(env)?,
            len_bytes: len.eval(env)?,
        }),
        Value::Number(e) => Ok(PatchValue::Number(e.eval(env)?)),
    }
}

/// Parsed expression tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    Lit(u64),
    Sectors,
    Blocks,
    Bin(Box<Expr>, char, Box<Expr>),
}

impl Expr {
    fn eval(&self, env: &ExprEnv) -> Result<u64, ExprError> {
        match self {
            Expr::Lit(v) => Ok(*v),
            Expr::Sectors => Ok(env.num_disk_sectors),
            Expr::Blocks => env.num_disk_blocks.ok_or(ExprError::BlocksUndefined),
            Expr::Bin(l, op, r) => apply(l.eval(env)?, *op, r.eval(env)?),
        }
    }
}

fn apply(lhs: u64, op: char, rhs: u64) -> Result<u64, ExprError> {
    match op {
        '+' => lhs
            .checked_add(rhs)
            .ok_or(ExprError::Overflow { lhs, op, rhs }),
        '-' => lhs
            .checked_sub(rhs)
            .ok_or(ExprError::Underflow { lhs, rhs }),
        '*' => lhs
            .checked_mul(rhs)
            .ok_or(ExprError::Overflow { lhs, op, rhs }),
        _ => lhs
            .checked_div(rhs)
            .ok_or(ExprError::DivisionByZero { lhs }),
    }
}

enum Value {
    Number(Expr),
    Crc32(Expr, Expr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Num(u64),
    Ident(String),
    Op(char),
    LParen,
    RParen,
    Comma,
}

fn describe(t: Option<&(usize, Tok)>) -> String {
    match t {
        None => "end of expression".into(),
        Some((_, Tok::Num(n))) => format!("number {n}"),
        Some((_, Tok::Ident(s))) => format!("'{s}'"),
        Some((_, Tok::Op(c))) => format!("'{c}'"),
        Some((_, Tok::LParen)) => "'('".into(),
        Some((_, Tok::RParen)) => "')'".into(),
        Some((_, Tok::Comma)) => "','".into(),
    }
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'+' | b'-' | b'*' | b'/' => {
                out.push((start, Tok::Op(c as char)));
                i += 1;
            }
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1;
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1;
            }
            b',' => {
                out.push((start, Tok::Comma));
                i += 1;
            }
            b'0'..=b'9' => {
                let bad = |end: usize, why| ExprError::BadNumber {
                    expr: src.to_string(),
                    text: String::from_utf8_lossy(&b[start..end.min(b.len())]).into_owned(),
                    why,
                };
                if c == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X')) {
                    i += 2;
                    let digits = i;
                    while i < b.len() && b[i].is_ascii_hexdigit() {
                        i += 1;
                    }
                    if i == digits {
                        return Err(bad(i, "'0x' needs hexadecimal digits"));
                    }
                    if i < b.len() && (b[i] == b'.' || b[i].is_ascii_alphanumeric() || b[i] == b'_')
                    {
                        return Err(bad(
                            i + 1,
                            "a hexadecimal number cannot carry a decimal dot or letters",
                        ));
                    }
                    let v = u64::from_str_radix(&src[digits..i], 16)
                        .map_err(|_| bad(i, "larger than 64 bits"))?;
                    out.push((start, Tok::Num(v)));
                } else {
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                    let digits_end = i;
                    if i < b.len() && b[i] == b'.' {
                        i += 1;
                        if i < b.len() && b[i].is_ascii_digit() {
                            while i < b.len() && b[i].is_ascii_digit() {
                                i += 1;
                            }
                            return Err(bad(
                                i,
                                "fractions are not allowed; a trailing '.' only marks decimal",
                            ));
                        }
                    }
                    if i < b.len() && (b[i].is_ascii_alphabetic() || b[i] == b'_') {
                        return Err(bad(i + 1, "hexadecimal needs a 0x prefix"));
                    }
                    let v: u64 = src[start..digits_end]
                        .parse()
                        .map_err(|_| bad(digits_end, "larger than 64 bits"))?;
                    out.push((start, Tok::Num(v)));
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push((start, Tok::Ident(src[start..i].to_string())));
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                return Err(ExprError::Unexpected {
                    expr: src.to_string(),
                    pos: start,
                    found: format!("character '{}'", ch.escape_default()),
                    expected: "a number, a variable, an operator or a parenthesis",
                });
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&(usize, Tok)> {
        self.toks.get(self.pos)
    }

    fn unexpected(&self, expected: &'static str) -> ExprError {
        let t = self.peek();
        ExprError::Unexpected {
            expr: self.src.to_string(),
            pos: t.map(|t| t.0).unwrap_or(self.src.len()),
            found: describe(t),
            expected,
        }
    }

    fn expect(&mut self, want: Tok, expected: &'static str) -> Result<(), ExprError> {
        match self.peek() {
            Some((_, t)) if *t == want => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(self.unexpected(expected)),
        }
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        let mut lhs = self.term()?;
        while let Some((_, Tok::Op(op @ ('+' | '-')))) = self.peek() {
            let op = *op;
            self.pos += 1;
            let rhs = self.term()?;
            lhs = Expr::Bin(Box::new(lhs), op, Box::new(rhs));
        }
        Ok(lhs)
    }

    fn term(&mut self) -> Result<Expr, ExprError> {
        let mut lhs = self.factor()?;
        while let Some((_, Tok::Op(op @ ('*' | '/')))) = self.peek() {
            let op = *op;
            self.pos += 1;
            let rhs = self.factor()?;
            lhs = Expr::Bin(Box::new(lhs), op, Box::new(rhs));
        }
        Ok(lhs)
    }

    fn factor(&mut self) -> Result<Expr, ExprError> {
        let tok = self.peek().cloned();
        match tok {
            Some((_, Tok::Num(v))) => {
                self.pos += 1;
                Ok(Expr::Lit(v))
            }
            Some((_, Tok::Ident(name))) => {
                self.pos += 1;
                if name.eq_ignore_ascii_case("NUM_DISK_SECTORS") {
                    Ok(Expr::Sectors)
                } else if name.eq_ignore_ascii_case("NUM_DISK_BLOCKS") {
                    Ok(Expr::Blocks)
                } else if name.eq_ignore_ascii_case("CRC32") {
                    Err(ExprError::Crc32Misplaced)
                } else {
                    Err(ExprError::UnknownVariable(name))
                }
            }
            Some((_, Tok::LParen)) => {
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return Err(ExprError::TooDeep { max: MAX_DEPTH });
                }
                self.pos += 1;
                let e = self.expr()?;
                self.expect(Tok::RParen, "')'")?;
                self.depth -= 1;
                Ok(e)
            }
            _ => Err(self.unexpected("a number, a variable or '('")),
        }
    }

    fn value(&mut self) -> Result<Value, ExprError> {
        if let Some((_, Tok::Ident(name))) = self.peek() {
            if name.eq_ignore_ascii_case("CRC32") {
                self.pos += 1;
                self.expect(Tok::LParen, "'(' after CRC32")?;
                let start = self.expr()?;
                self.expect(Tok::Comma, "',' between CRC32's start sector and length")?;
                let len = self.expr()?;
                self.expect(Tok::RParen, "')' closing CRC32")?;
                return Ok(Value::Crc32(start, len));
            }
        }
        Ok(Value::Number(self.expr()?))
    }
}

fn parse(src: &str) -> Result<Value, ExprError> {
    if src.len() > MAX_LEN {
        return Err(ExprError::TooLong {
            len: src.len(),
            max: MAX_LEN,
        });
    }
    if src.trim().is_empty() {
        return Err(ExprError::Empty);
    }
    let toks = tokenize(src)?;
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
    };
    let v = p.value()?;
    if p.pos != p.toks.len() {
        return Err(p.unexpected("an operator or the end of the expression"));
    }
    Ok(v)
}

impl fmt::Display for PatchValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchValue::Number(n) => write!(f, "{n}"),
            PatchValue::Crc32 {
                start_sector,
                len_bytes,
            } => write!(f, "CRC32({start_sector},{len_bytes})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMMC: ExprEnv = ExprEnv {
        num_disk_sectors: 7_634_944,
        num_disk_blocks: None,
    };
    const NAND: ExprEnv = ExprEnv {
        num_disk_sectors: 131_072,
        num_disk_blocks: Some(2048),
    };

    fn n(e: &str, env: &ExprEnv) -> u64 {
        eval(e, env).unwrap_or_else(|err| panic!("{e}: {err}"))
    }

    #[test]
    fn literal_shapes() {
        assert_eq!(n("34.", &EMMC), 34);
        assert_eq!(n("34", &EMMC), 34);
        assert_eq!(n("0", &EMMC), 0);
        assert_eq!(n("0x10", &EMMC), 16);
        assert_eq!(n("0X1f", &EMMC), 31);
        assert_eq!(n("0x10-10.", &EMMC), 6);
        assert_eq!(n("  262162 ", &EMMC), 262_162);
        assert_eq!(n("18446744073709551615", &EMMC), u64::MAX);
    }

    /// Every value shape in ../realdata/xml/*patch*.xml and every symbolic start_sector /
    /// start_byte_hex in the rawprogram files.
    #[test]
    fn real_patch_and_rawprogram_shapes() {
        let s = EMMC.num_disk_sectors;
        // qcom_emmc_msm8916_ptool__patch0.xml
        assert_eq!(n("NUM_DISK_SECTORS-34.", &EMMC), s - 34);
        assert_eq!(n("NUM_DISK_SECTORS-26.", &EMMC), s - 26);
        assert_eq!(n("NUM_DISK_SECTORS-1.", &EMMC), s - 1);
        assert_eq!(n("NUM_DISK_SECTORS-1", &EMMC), s - 1);
        assert_eq!(n("NUM_DISK_SECTORS-33.", &EMMC), s - 33);
        assert_eq!(
            eval_patch_value("CRC32(2,4096)", &EMMC).unwrap(),
            PatchValue::Crc32 {
                start_sector: 2,
                len_bytes: 4096
            }
        );
        assert_eq!(
            eval_patch_value("CRC32(NUM_DISK_SECTORS-33.,4096)", &EMMC).unwrap(),
            PatchValue::Crc32 {
                start_sector: s - 33,
                len_bytes: 4096
            }
        );
        assert_eq!(
            eval_patch_value("CRC32(1,92)", &EMMC).unwrap(),
            PatchValue::Crc32 {
                start_sector: 1,
                len_bytes: 92
            }
        );
        assert_eq!(
            eval_patch_value("CRC32(NUM_DISK_SECTORS-1.,92)", &EMMC).unwrap(),
            PatchValue::Crc32 {
                start_sector: s - 1,
                len_bytes: 92
            }
        );
        assert_eq!(
            eval_patch_value("CRC32(32,92)", &EMMC).unwrap(),
            PatchValue::Crc32 {
                start_sector: 32,
                len_bytes: 92
            }
        );
        assert_eq!(
            eval_patch_value("CRC32(0,4096)", &EMMC).unwrap(),
            PatchValue::Crc32 {
                start_sector: 0,
                len_bytes: 4096
            }
        );
        assert_eq!(eval_patch_value("0", &EMMC).unwrap(), PatchValue::Number(0));
        // qcom_ufs_qcs6490_rubikpi3__patch4.xml / rawprogram4.xml
        let ufs = ExprEnv {
            num_disk_sectors: 262_144,
            num_disk_blocks: None,
        };
        assert_eq!(n("NUM_DISK_SECTORS-6.", &ufs), 262_138);
        assert_eq!(n("NUM_DISK_SECTORS-4.", &ufs), 262_140);
        assert_eq!(n("NUM_DISK_SECTORS-5.", &ufs), 262_139);
        assert_eq!(
            eval_patch_value("CRC32(NUM_DISK_SECTORS-5.,8192)", &ufs).unwrap(),
            PatchValue::Crc32 {
                start_sector: 262_139,
                len_bytes: 8192
            }
        );
        assert_eq!(
            n("(4096*NUM_DISK_SECTORS)-20480.", &ufs),
            4096 * 262_144 - 20480
        );
        // qcom_emmc_msm8916_ptool__rawprogram0.xml
        assert_eq!(n("(512*NUM_DISK_SECTORS)-16896.", &EMMC), 512 * s - 16896);
        // Quectel NAND patch files (host-side MIBIB patches)
        assert_eq!(n("NUM_DISK_BLOCKS-1904.", &NAND), 144);
        assert_eq!(n("NUM_DISK_BLOCKS-1458.", &NAND), 590);
        assert_eq!(
            eval_patch_value("CRC32(0,8192)", &NAND).unwrap(),
            PatchValue::Crc32 {
                start_sector: 0,
                len_bytes: 8192
            }
        );
    }

    #[test]
    fn every_real_value_in_the_shared_xml_files_evaluates() {
        // Byte-identical copies of ../shared/realdata/xml, kept in the repository.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/realxml");
        let entries = std::fs::read_dir(&dir).expect("tests/data/realxml is in the repository");
        let mut seen = 0;
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("xml") {
                continue;
            }
            let text = std::fs::read(&p).unwrap();
            let Ok(els) = crate::protocol::firehose::xml::parse_elements(
                &text,
                crate::protocol::firehose::xml::Limits::FILE,
            ) else {
                continue;
            };
            for el in els {
                let env = if el.get("PAGES_PER_BLOCK").is_some()
                    || p.to_string_lossy().contains("quectel")
                {
                    NAND
                } else {
                    EMMC
                };
                for key in [
                    "start_sector",
                    "num_partition_sectors",
                    "byte_offset",
                    "size_in_bytes",
                ] {
                    if let Some(v) = el.get(key) {
                        eval(v, &env)
                            .unwrap_or_else(|err| panic!("{}: {key}={v}: {err}", p.display()));
                        seen += 1;
                    }
                }
                if el.name == "patch" {
                    let v = el.get("value").unwrap();
                    eval_patch_value(v, &env)
                        .unwrap_or_else(|err| panic!("{}: value={v}: {err}", p.display()));
                    seen += 1;
                }
            }
        }
        assert!(seen > 100, "only {seen} values found");
    }

    #[test]
    fn precedence_and_parentheses() {
        assert_eq!(n("2+3*4", &EMMC), 14);
        assert_eq!(n("(2+3)*4", &EMMC), 20);
        assert_eq!(n("100/7*7", &EMMC), 98);
        assert_eq!(n("10-3-2", &EMMC), 5);
        assert_eq!(n("((((1))))", &EMMC), 1);
        assert_eq!(n("num_disk_sectors - 1.", &EMMC), EMMC.num_disk_sectors - 1);
    }

    #[test]
    fn errors_are_clear() {
        let msg = |e: &str| eval(e, &EMMC).unwrap_err().to_string();
        assert_eq!(eval("", &EMMC), Err(ExprError::Empty));
        assert!(msg("FOO-1").contains("unknown variable 'FOO'"));
        assert_eq!(
            eval("NUM_DISK_BLOCKS-1", &EMMC),
            Err(ExprError::BlocksUndefined)
        );
        assert!(msg("1-2").contains("1 - 2 would be negative"));
        assert!(msg("18446744073709551615+1").contains("does not fit"));
        assert!(msg("4294967296*4294967296").contains("does not fit"));
        assert!(msg("5/0").contains("division by zero"));
        assert!(msg("99999999999999999999").contains("larger than 64 bits"));
        assert!(msg("12ab").contains("0x prefix"));
        assert!(msg("1.5").contains("fractions"));
        assert!(msg("0x").contains("hexadecimal digits"));
        assert!(msg("0x10.").contains("decimal dot"));
        assert!(msg("(1").contains("expected ')'"));
        assert!(msg("1)").contains("unexpected ')'"));
        assert!(msg("-1").contains("position 0"));
        assert!(msg("1 $ 2").contains("character '$'"));
        assert!(msg("1 2").contains("number 2"));
        assert_eq!(eval("CRC32(1,92)", &EMMC), Err(ExprError::Crc32NotANumber));
        assert_eq!(
            eval_patch_value("CRC32(1,92)+1", &EMMC).unwrap_err().to_string(),
            "unexpected '+' at position 11 of 'CRC32(1,92)+1'; expected an operator or the end of the expression"
        );
        assert_eq!(
            eval_patch_value("1+CRC32(1,92)", &EMMC),
            Err(ExprError::Crc32Misplaced)
        );
        assert!(eval_patch_value("CRC32(1)", &EMMC)
            .unwrap_err()
            .to_string()
            .contains("','"));
        let deep = "(".repeat(40) + "1" + &")".repeat(40);
        assert_eq!(
            eval(&deep, &EMMC),
            Err(ExprError::TooDeep { max: MAX_DEPTH })
        );
        let long = "1+".repeat(200) + "1";
        assert!(matches!(eval(&long, &EMMC), Err(ExprError::TooLong { .. })));
    }

    /// Reference tree for the round-trip property: rendered to text in several spellings, parsed
    /// back, and evaluated with the same checked arithmetic.
    #[derive(Debug, Clone)]
    enum Gen {
        Lit(u64, u8),
        Sectors,
        Blocks,
        Bin(Box<Gen>, char, Box<Gen>),
    }

    impl Gen {
        fn render(&self, out: &mut String, spaces: bool) {
            match self {
                Gen::Lit(v, style) => match style % 3 {
                    0 => out.push_str(&format!("{v}.")),
                    1 => out.push_str(&format!("{v}")),
                    _ => out.push_str(&format!("0x{v:x}")),
                },
                Gen::Sectors => out.push_str("NUM_DISK_SECTORS"),
                Gen::Blocks => out.push_str("NUM_DISK_BLOCKS"),
                Gen::Bin(l, op, r) => {
                    out.push('(');
                    l.render(out, spaces);
                    if spaces {
                        out.push(' ');
                    }
                    out.push(*op);
                    if spaces {
                        out.push(' ');
                    }
                    r.render(out, spaces);
                    out.push(')');
                }
            }
        }

        fn reference(&self, env: &ExprEnv) -> Option<u64> {
            match self {
                Gen::Lit(v, _) => Some(*v),
                Gen::Sectors => Some(env.num_disk_sectors),
                Gen::Blocks => env.num_disk_blocks,
                Gen::Bin(l, op, r) => {
                    let (a, b) = (l.reference(env)?, r.reference(env)?);
                    match op {
                        '+' => a.checked_add(b),
                        '-' => a.checked_sub(b),
                        '*' => a.checked_mul(b),
                        _ => a.checked_div(b),
                    }
                }
            }
        }
    }

    fn gen_strategy() -> impl Strategy<Value = Gen> {
        let leaf = prop_oneof![
            (
                prop_oneof![0u64..100, 0u64..10_000_000, any::<u64>()],
                any::<u8>()
            )
                .prop_map(|(v, s)| Gen::Lit(v, s)),
            Just(Gen::Sectors),
            Just(Gen::Blocks),
        ];
        leaf.prop_recursive(4, 16, 2, |inner| {
            (
                inner.clone(),
                prop_oneof![Just('+'), Just('-'), Just('*'), Just('/')],
                inner,
            )
                .prop_map(|(l, op, r)| Gen::Bin(Box::new(l), op, Box::new(r)))
        })
    }

    proptest! {
        #[test]
        fn random_strings_never_panic(s in "\\PC{0,300}") {
            let _ = eval_patch_value(&s, &NAND);
            let _ = eval(&s, &EMMC);
        }

        #[test]
        fn expression_like_strings_never_panic(s in "[0-9xX().,+*/ NUMDISKECTORSBLCR32_-]{0,120}") {
            let _ = eval_patch_value(&s, &NAND);
        }

        #[test]
        fn generated_expressions_round_trip(g in gen_strategy(), spaces in any::<bool>(),
                                            sectors in 0u64..u64::MAX, blocks in proptest::option::of(0u64..100_000)) {
            let env = ExprEnv { num_disk_sectors: sectors, num_disk_blocks: blocks };
            let mut text = String::new();
            g.render(&mut text, spaces);
            prop_assume!(text.len() <= MAX_LEN);
            let got = eval(&text, &env);
            match g.reference(&env) {
                Some(v) => prop_assert_eq!(got, Ok(v), "{}", text),
                None => prop_assert!(got.is_err(), "{} gave {:?}", text, got),
            }
            let crc = format!("CRC32({text},{text})");
            if crc.len() <= MAX_LEN {
                match g.reference(&env) {
                    Some(v) => prop_assert_eq!(eval_patch_value(&crc, &env),
                        Ok(PatchValue::Crc32 { start_sector: v, len_bytes: v })),
                    None => prop_assert!(eval_patch_value(&crc, &env).is_err()),
                }
            }
        }
    }
}
