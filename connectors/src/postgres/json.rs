//! Writing JSON straight into a byte buffer: Postgres values in text form
//! become JSON values by their type, with no intermediate tree.

use bytes::BufMut;

/// Type OIDs weir maps specially; every other type becomes a JSON string.
pub mod oid {
    /// `bool`
    pub const BOOL: u32 = 16;
    /// `bytea`
    pub const BYTEA: u32 = 17;
    /// `int8`
    pub const INT8: u32 = 20;
    /// `int2`
    pub const INT2: u32 = 21;
    /// `int4`
    pub const INT4: u32 = 23;
    /// `oid`
    pub const OID: u32 = 26;
    /// `json`
    pub const JSON: u32 = 114;
    /// `float4`
    pub const FLOAT4: u32 = 700;
    /// `float8`
    pub const FLOAT8: u32 = 701;
    /// `timestamp`
    pub const TIMESTAMP: u32 = 1114;
    /// `timestamptz`
    pub const TIMESTAMPTZ: u32 = 1184;
    /// `numeric`
    pub const NUMERIC: u32 = 1700;
    /// `jsonb`
    pub const JSONB: u32 = 3802;
}

/// The element type of a built-in array type, if `array` is one.
pub fn array_element(array: u32) -> Option<u32> {
    Some(match array {
        1000 => oid::BOOL,
        1001 => oid::BYTEA,
        1005 => oid::INT2,
        1007 => oid::INT4,
        1016 => oid::INT8,
        1028 => oid::OID,
        1021 => oid::FLOAT4,
        1022 => oid::FLOAT8,
        1231 => oid::NUMERIC,
        199 => oid::JSON,
        3807 => oid::JSONB,
        1115 => oid::TIMESTAMP,
        1185 => oid::TIMESTAMPTZ,
        // text-like and other scalar arrays: elements are strings
        1009 | 1015 | 1014 | 1002 | 1003 | 2951 | 1182 | 1183 | 1270 | 1187 | 1041 | 651 | 1040 => {
            25
        }
        _ => return None,
    })
}

/// Appends `s` as a JSON string (invalid UTF-8, which a `SQL_ASCII`
/// database may send, becomes U+FFFD).
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    crate::envelope::write_string(out, s);
}

/// Appends a Postgres value in text form as the JSON value its type maps to.
pub fn write_value(out: &mut Vec<u8>, type_oid: u32, text: &[u8]) {
    match type_oid {
        oid::BOOL => out.put_slice(if text == b"t" { b"true" } else { b"false" }),
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => out.put_slice(text),
        oid::FLOAT4 | oid::FLOAT8 => {
            // NaN and ±Infinity have no JSON number
            if text
                .iter()
                .any(|c| c.is_ascii_alphabetic() && *c != b'e' && *c != b'E')
            {
                write_str(out, text)
            } else {
                out.put_slice(text)
            }
        }
        oid::JSON | oid::JSONB => out.put_slice(text),
        oid::BYTEA => write_bytea(out, text),
        oid::TIMESTAMPTZ => write_timestamp(out, text, true),
        oid::TIMESTAMP => write_timestamp(out, text, false),
        other => match array_element(other) {
            Some(element) if text.first() == Some(&b'{') => {
                let mut p = ArrayParser { s: text, i: 0 };
                let start = out.len();
                if p.write(out, element).is_none() || p.i != text.len() {
                    out.truncate(start);
                    write_str(out, text);
                }
            }
            _ => write_str(out, text),
        },
    }
}

/// `bytea` in hex form (`\x0a1b`) becomes base64.
fn write_bytea(out: &mut Vec<u8>, text: &[u8]) {
    let Some(hex) = text.strip_prefix(b"\\x") else {
        return write_str(out, text);
    };
    let mut bytes = Vec::with_capacity(hex.len() / 2);
    for pair in hex.chunks(2) {
        let v = std::str::from_utf8(pair)
            .ok()
            .and_then(|p| u8::from_str_radix(p, 16).ok());
        match v {
            Some(v) => bytes.push(v),
            None => return write_str(out, text),
        }
    }
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.put_u8(b'"');
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        out.put_u8(B64[(n >> 18) as usize & 63]);
        out.put_u8(B64[(n >> 12) as usize & 63]);
        out.put_u8(if chunk.len() > 1 {
            B64[(n >> 6) as usize & 63]
        } else {
            b'='
        });
        out.put_u8(if chunk.len() > 2 {
            B64[n as usize & 63]
        } else {
            b'='
        });
    }
    out.put_u8(b'"');
}

/// `2024-01-02 03:04:05.5+00` (ISO style, UTC session) becomes
/// `2024-01-02T03:04:05.5Z`; a timestamp without zone keeps no offset.
/// `infinity` and BC dates stay as Postgres writes them.
fn write_timestamp(out: &mut Vec<u8>, text: &[u8], zoned: bool) {
    if text.len() < 19 || text[10] != b' ' || text.ends_with(b" BC") {
        return write_str(out, text);
    }
    out.put_u8(b'"');
    out.put_slice(&text[..10]);
    out.put_u8(b'T');
    if zoned {
        match text.iter().rposition(|c| *c == b'+' || *c == b'-') {
            Some(z) if z > 18 => {
                out.put_slice(&text[11..z]);
                match &text[z..] {
                    b"+00" => out.put_u8(b'Z'),
                    zone if zone.len() == 3 => {
                        out.put_slice(zone);
                        out.put_slice(b":00");
                    }
                    zone => out.put_slice(zone),
                }
            }
            _ => out.put_slice(&text[11..]),
        }
    } else {
        out.put_slice(&text[11..]);
    }
    out.put_u8(b'"');
}

/// Parses an array literal (`{1,2,"a b",NULL,{3}}`) into a JSON array.
struct ArrayParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl ArrayParser<'_> {
    fn write(&mut self, out: &mut Vec<u8>, element: u32) -> Option<()> {
        if self.s.get(self.i) != Some(&b'{') {
            return None;
        }
        self.i += 1;
        out.put_u8(b'[');
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            out.put_u8(b']');
            return Some(());
        }
        loop {
            match *self.s.get(self.i)? {
                b'{' => self.write(out, element)?,
                b'"' => {
                    self.i += 1;
                    let mut v = Vec::new();
                    loop {
                        match *self.s.get(self.i)? {
                            b'\\' => {
                                v.push(*self.s.get(self.i + 1)?);
                                self.i += 2;
                            }
                            b'"' => {
                                self.i += 1;
                                break;
                            }
                            c => {
                                v.push(c);
                                self.i += 1;
                            }
                        }
                    }
                    write_value(out, element, &v);
                }
                _ => {
                    let start = self.i;
                    while !matches!(*self.s.get(self.i)?, b',' | b'}') {
                        self.i += 1;
                    }
                    let v = &self.s[start..self.i];
                    if v == b"NULL" {
                        out.put_slice(b"null");
                    } else {
                        write_value(out, element, v);
                    }
                }
            }
            match *self.s.get(self.i)? {
                b',' => {
                    out.put_u8(b',');
                    self.i += 1;
                }
                b'}' => {
                    self.i += 1;
                    out.put_u8(b']');
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(oid: u32, text: &str) -> String {
        let mut out = Vec::new();
        write_value(&mut out, oid, text.as_bytes());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn scalars_map_by_type() {
        assert_eq!(v(oid::BOOL, "t"), "true");
        assert_eq!(v(oid::INT8, "-42"), "-42");
        assert_eq!(v(oid::FLOAT8, "1.5e+30"), "1.5e+30");
        assert_eq!(v(oid::FLOAT8, "NaN"), "\"NaN\"");
        assert_eq!(v(oid::FLOAT4, "-Infinity"), "\"-Infinity\"");
        assert_eq!(
            v(oid::NUMERIC, "12345678901234567890.5"),
            "\"12345678901234567890.5\""
        );
        assert_eq!(v(oid::JSONB, "{\"a\": [1]}"), "{\"a\": [1]}");
        assert_eq!(v(oid::BYTEA, "\\x00ff10"), "\"AP8Q\"");
        assert_eq!(v(oid::BYTEA, "\\x"), "\"\"");
        assert_eq!(v(25, "a \"q\"\n\u{1}"), "\"a \\\"q\\\"\\n\\u0001\"");
    }

    #[test]
    fn timestamps_become_rfc3339() {
        assert_eq!(
            v(oid::TIMESTAMPTZ, "2024-01-02 03:04:05.123+00"),
            "\"2024-01-02T03:04:05.123Z\""
        );
        assert_eq!(
            v(oid::TIMESTAMPTZ, "2024-01-02 03:04:05+05:30"),
            "\"2024-01-02T03:04:05+05:30\""
        );
        assert_eq!(
            v(oid::TIMESTAMPTZ, "2024-01-02 03:04:05-07"),
            "\"2024-01-02T03:04:05-07:00\""
        );
        assert_eq!(
            v(oid::TIMESTAMP, "2024-01-02 03:04:05.5"),
            "\"2024-01-02T03:04:05.5\""
        );
        assert_eq!(v(oid::TIMESTAMPTZ, "infinity"), "\"infinity\"");
    }

    #[test]
    fn arrays_nest_and_keep_nulls() {
        assert_eq!(v(1007, "{1,2,NULL}"), "[1,2,null]");
        assert_eq!(v(1007, "{{1,2},{3,4}}"), "[[1,2],[3,4]]");
        assert_eq!(
            v(1009, "{a,\"b c\",\"d\\\"e\",NULL,\"NULL\"}"),
            "[\"a\",\"b c\",\"d\\\"e\",null,\"NULL\"]"
        );
        assert_eq!(v(1009, "{}"), "[]");
        assert_eq!(v(1231, "{1.5}"), "[\"1.5\"]");
        // not an array literal: kept as a string rather than lost
        assert_eq!(v(1007, "[1:2]={1,2}"), "\"[1:2]={1,2}\"");
    }
}
