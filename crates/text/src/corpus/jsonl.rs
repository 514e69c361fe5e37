//! JSON-lines files (`.jsonl`, `.json`): one object per line, the text in a named
//! string field. Only that field is decoded; the others are skipped without being
//! built, because web-scale dumps carry bulky metadata beside the text.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{read_line_limited, utf8_error_at, Document, Position, Source};
use crate::error::{Result, TextError};

/// Streams one document per non-blank line to `emit`; returns the number of
/// records whose field was `null`.
pub(super) fn read(
    path: &Arc<Path>,
    field: &str,
    emit: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<u64> {
    let file = File::open(path).map_err(|e| TextError::read(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut line_no = 0u64;
    let mut offset = 0u64;
    let mut nulls = 0u64;
    loop {
        let n = read_line_limited(&mut reader, &mut buf, u64::MAX)
            .map_err(|e| TextError::read(path, e))?;
        if n == 0 {
            return Ok(nulls);
        }
        line_no += 1;
        let start = offset;
        offset += n as u64;
        let bytes = if line_no == 1 {
            buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf)
        } else {
            &buf[..]
        };
        if let Some(at) = utf8_error_at(bytes) {
            return Err(TextError::NotUtf8 {
                path: path.to_path_buf(),
                line: line_no,
                offset: start + (n - bytes.len()) as u64 + at as u64,
            });
        }
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        match parse_line(path, line_no, bytes, field)? {
            Some(text) => emit(Document {
                text,
                source: Source {
                    path: path.clone(),
                    position: Position::Line(line_no),
                },
                file_bytes_read: offset,
            })?,
            None => nulls += 1,
        }
    }
}

/// The text field of one record: `Ok(None)` when it is `null`.
fn parse_line(path: &Path, line: u64, bytes: &[u8], field: &str) -> Result<Option<String>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let found = FieldSeed { name: field }
        .deserialize(&mut de)
        .and_then(|found| de.end().map(|()| found))
        .map_err(|e| {
            let mut message = e.to_string();
            if line == 1 && bytes.trim_ascii_start().starts_with(b"[") {
                message.push_str(
                    " (this looks like one JSON array; expected JSON lines, one object per line)",
                );
            }
            TextError::Json {
                path: path.to_path_buf(),
                line,
                message,
            }
        })?;
    match found {
        Found::Text(text) => Ok(Some(text)),
        Found::Null => Ok(None),
        Found::Other(kind) => Err(TextError::FieldNotString {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            found: kind,
        }),
        Found::NotObject(kind) => Err(TextError::Json {
            path: path.to_path_buf(),
            line,
            message: format!("the line holds {kind}, expected an object with a \"{field}\" field"),
        }),
        Found::Missing => Err(TextError::MissingField {
            path: path.to_path_buf(),
            line,
            field: field.to_string(),
            present: present_fields(bytes),
        }),
    }
}

/// The keys of a record, for the missing-field message (only on that error path,
/// so the full parse costs nothing in the common case).
fn present_fields(bytes: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(bytes) {
        Ok(map) if map.is_empty() => "none".to_string(),
        Ok(map) => map
            .keys()
            .map(|k| format!("\"{k}\""))
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => "unknown".to_string(),
    }
}

/// What the record held under the wanted name.
enum Found {
    Text(String),
    Null,
    Other(&'static str),
    Missing,
    NotObject(&'static str),
}

struct FieldSeed<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> std::result::Result<Found, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Found, A::Error> {
        let mut found = Found::Missing;
        while let Some(is_wanted) = map.next_key_seed(KeyIs { name: self.name })? {
            if is_wanted && matches!(found, Found::Missing) {
                found = map.next_value_seed(ValueSeed)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Found, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Found::NotObject("an array"))
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Found, E> {
        Ok(Found::NotObject("a string"))
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Found, E> {
        Ok(Found::NotObject("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Found, E> {
        Ok(Found::NotObject("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Found, E> {
        Ok(Found::NotObject("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Found, E> {
        Ok(Found::NotObject("a number"))
    }
    fn visit_unit<E>(self) -> std::result::Result<Found, E> {
        Ok(Found::NotObject("null"))
    }
}

/// Compares a key with the wanted name without allocating it.
struct KeyIs<'a> {
    name: &'a str,
}

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> std::result::Result<bool, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a field name")
    }
    fn visit_str<E>(self, key: &str) -> std::result::Result<bool, E> {
        Ok(key == self.name)
    }
}

/// Takes a string value, or names the kind of value found instead.
struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> std::result::Result<Found, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Found;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string")
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Found, E> {
        Ok(Found::Text(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Found, E> {
        Ok(Found::Text(v))
    }
    fn visit_unit<E>(self) -> std::result::Result<Found, E> {
        Ok(Found::Null)
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Found, E> {
        Ok(Found::Other("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Found, E> {
        Ok(Found::Other("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Found, E> {
        Ok(Found::Other("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Found, E> {
        Ok(Found::Other("a number"))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Found, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Found::Other("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Found, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Found::Other("an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Option<String>> {
        parse_line(Path::new("d.jsonl"), 7, line.as_bytes(), "text")
    }

    #[test]
    fn picks_the_field_and_skips_the_rest() -> Result<()> {
        let got = parse(r#"{"meta":{"a":[1,2,{"text":"no"}]},"text":"hi \u00e9\n","n":3}"#)?;
        assert_eq!(got.as_deref(), Some("hi é\n"));
        assert_eq!(parse(r#"{"text":null}"#)?, None);
        Ok(())
    }

    #[test]
    fn errors_name_the_problem() {
        let msg = |l: &str| parse(l).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(r#"{"body":"x","id":1}"#).contains("d.jsonl:7: no field \"text\""));
        assert!(msg(r#"{"body":"x","id":1}"#).contains("\"body\", \"id\""));
        assert!(msg(r#"{"text":5}"#).contains("field \"text\" is a number"));
        assert!(msg(r#"{"text":"x""#).contains("d.jsonl:7: malformed JSON"));
        assert!(msg(r#"{"text":"x"} trailing"#).contains("malformed JSON"));
        assert!(msg(r#""just a string""#).contains("holds a string"));
    }
}
