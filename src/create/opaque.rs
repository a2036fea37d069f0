//! The parts of config.json that nothing in the create pipeline reads, carried through as raw
//! bytes instead of being parsed into a tree and written back out. Docker's seccomp profile
//! alone is more than half of its 10 kB spec, and parsing it, copying it and writing it again
//! was about a third of a create's work. The document the pipeline sees holds `null` where a
//! carried part was; [`Spliced`] writes the original bytes back in its place.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

/// The paths carried verbatim: no modifier, identity source or audit field reads them. A part
/// of the pipeline that comes to need one takes it off this list.
pub const CARRIED: &[&[&str]] = &[
    &["linux", "seccomp"],
    &["linux", "maskedPaths"],
    &["linux", "readonlyPaths"],
    &["process", "capabilities"],
];

/// A carried part: its path (an entry of [`CARRIED`]) and its original bytes.
pub type Part = (&'static [&'static str], Box<RawValue>);

/// Parses a JSON document, cutting out the [`CARRIED`] parts (left as `null` in the tree).
pub fn parse(bytes: &[u8]) -> serde_json::Result<(Value, Vec<Part>)> {
    if let Some(key) = reserved_key(bytes) {
        return Err(de::Error::custom(format_args!(
            "key {key:?} is refused: serde_json (this runtime's JSON reader) would read that object as something else"
        )));
    }
    let mut parts = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Node { depth: 0, paths: CARRIED.to_vec(), parts: &mut parts }.deserialize(&mut de)?;
    de.end()?;
    Ok((value, parts))
}

/// The keys serde_json reads as its own markers (`arbitrary_precision`, `raw_value`): an object
/// whose first key is one of them is read as a number or as the JSON in its string, so a
/// creator's annotation named so would make this runtime see, and write, another document.
const RESERVED: &str = "$serde_json::private::";

/// The first object key in `b` (escapes decoded) that starts with [`RESERVED`], if any. Scans
/// the strings of the document: a string followed by `:` is a key.
fn reserved_key(b: &[u8]) -> Option<String> {
    let mut at = 0;
    while let Some(q) = memchr::memchr(b'"', &b[at..]) {
        let open = at + q;
        let (mut end, mut escaped) = (open + 1, false);
        loop {
            end += memchr::memchr2(b'"', b'\\', b.get(end..)?)?;
            match b[end] {
                b'"' => break,
                _ => (end, escaped) = (end + 2, true),
            }
        }
        at = end + 1;
        let next = b[at..].iter().find(|c| !c.is_ascii_whitespace());
        if next != Some(&b':') || !(escaped || b[open + 1..end].starts_with(b"$")) {
            continue;
        }
        let key: String = serde_json::from_slice(&b[open..=end]).unwrap_or_default();
        if key.starts_with(RESERVED) {
            return Some(key);
        }
    }
    None
}

/// `value` written with the carried `parts` back where they were, when their place still
/// holds the `null` [`parse`] left there.
pub struct Spliced<'a> {
    /// The document.
    pub value: &'a Value,
    /// The parts cut out of it.
    pub parts: &'a [Part],
}

impl Serialize for Spliced<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let parts: Vec<&Part> = self.parts.iter().collect();
        Level { value: self.value, parts, depth: 0 }.serialize(s)
    }
}

/// One level of [`Spliced`]: the parts whose path runs through `value`.
struct Level<'a> {
    value: &'a Value,
    parts: Vec<&'a Part>,
    depth: usize,
}

impl Serialize for Level<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Value::Object(map) = self.value else { return self.value.serialize(s) };
        if self.parts.is_empty() {
            return self.value.serialize(s);
        }
        let mut m = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            m.serialize_key(k)?;
            let below: Vec<&Part> = self.parts.iter().copied().filter(|(p, _)| p[self.depth] == k).collect();
            match below.iter().find(|(p, _)| p.len() == self.depth + 1) {
                Some((_, raw)) if v.is_null() => m.serialize_value(&**raw)?,
                Some(_) => m.serialize_value(v)?,
                None => m.serialize_value(&Level { value: v, parts: below, depth: self.depth + 1 })?,
            }
        }
        m.end()
    }
}

/// Deserializes one node whose path is a prefix of each of `paths`.
struct Node<'p> {
    depth: usize,
    paths: Vec<&'static [&'static str]>,
    parts: &'p mut Vec<Part>,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// serde_json's private map key for a number under `arbitrary_precision`.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == NUMBER_TOKEN && out.is_empty() {
                let digits: String = map.next_value()?;
                return digits.parse::<Number>().map(Value::Number).map_err(de::Error::custom);
            }
            let below: Vec<_> = self.paths.iter().copied().filter(|p| p[self.depth] == key).collect();
            let value = if let Some(path) = below.iter().copied().find(|p| p.len() == self.depth + 1) {
                let raw: Box<RawValue> = map.next_value()?;
                // A later duplicate key wins, as it does in a parsed tree.
                self.parts.retain(|(p, _)| *p != path);
                self.parts.push((path, raw));
                Value::Null
            } else if below.is_empty() {
                map.next_value::<Value>()?
            } else {
                map.next_value_seed(Node { depth: self.depth + 1, paths: below, parts: &mut *self.parts })?
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(text: &str) -> String {
        let (value, parts) = parse(text.as_bytes()).unwrap();
        serde_json::to_string(&Spliced { value: &value, parts: &parts }).unwrap()
    }

    #[test]
    fn carried_parts_come_back_byte_for_byte_in_place() {
        let text = r#"{"ociVersion":"1.0.2","process":{"capabilities":{"bounding":["CAP_KILL"]},"cwd":"/"},"linux":{"cgroupsPath":"x","seccomp":{"defaultAction": "SCMP_ACT_ERRNO","syscalls":[{"names":["accept"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":18446744073709551615,"op":"SCMP_CMP_EQ"}]}]},"maskedPaths":["/proc/kcore"]}}"#;
        assert_eq!(roundtrip(text), text);
        let (value, parts) = parse(text.as_bytes()).unwrap();
        assert_eq!(value["linux"]["seccomp"], Value::Null);
        assert_eq!(value["linux"]["cgroupsPath"], "x");
        assert_eq!(value["process"]["cwd"], "/");
        assert_eq!(parts.len(), 3);
    }

    #[test]
    fn the_rest_parses_as_serde_json_does() {
        let text = r#"{"a":1.5e300,"b":[1,-2,18446744073709551616],"linux":{"resources":{"memory":{"limit":1}},"n":12345678901234567890123},"linux2":{"seccomp":1},"x":null,"t":true,"s":"\u00e9"}"#;
        let (value, parts) = parse(text.as_bytes()).unwrap();
        assert!(parts.is_empty());
        assert_eq!(value, serde_json::from_str::<Value>(text).unwrap());
        assert_eq!(roundtrip(text), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn a_changed_place_is_written_as_changed() {
        let text = r#"{"linux":{"seccomp":{"defaultAction":"SCMP_ACT_ERRNO"},"cgroupsPath":"a"}}"#;
        let (mut value, parts) = parse(text.as_bytes()).unwrap();
        value["linux"]["seccomp"] = Value::String("replaced".into());
        value["linux"]["cgroupsPath"] = Value::String("b".into());
        let out = serde_json::to_string(&Spliced { value: &value, parts: &parts }).unwrap();
        assert_eq!(out, r#"{"linux":{"seccomp":"replaced","cgroupsPath":"b"}}"#);
        value.as_object_mut().unwrap().remove("linux");
        assert_eq!(serde_json::to_string(&Spliced { value: &value, parts: &parts }).unwrap(), "{}");
    }

    #[test]
    fn odd_shapes_and_duplicates_stay_lossless() {
        for text in [
            r#"{"linux":7}"#,
            r#"{"linux":[1,{"seccomp":2}]}"#,
            r#"{"linux":"x","process":null}"#,
            r#"{"linux":{"seccomp":null}}"#,
            r#"{"linux":{"seccomp":{"a":1},"seccomp":{"b":2}}}"#,
        ] {
            let parsed: Value = serde_json::from_str(text).unwrap();
            let (value, parts) = parse(text.as_bytes()).unwrap();
            let out = serde_json::to_string(&Spliced { value: &value, parts: &parts }).unwrap();
            assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), parsed, "{text}");
        }
        assert!(parse(br#"{"linux":{"seccomp":{"a":}}}"#).is_err());
        for hidden in [
            r#"{"annotations":{"$serde_json::private::RawValue":"{\"ds01.user\":\"alice\"}"}}"#,
            r#"{"linux":{"resources":{"$serde_json::private::Number" : "1"}}}"#,
            r#"{"a":{"\u0024serde_json::private::RawValue":"{}"}}"#,
        ] {
            let e = parse(hidden.as_bytes()).unwrap_err().to_string();
            assert!(e.contains("serde_json::private::") && e.contains("refused"), "{hidden}: {e}");
        }
        let text = r#"{"process":{"env":["X=$serde_json::private::Number"],"args":["\"$serde_json::private::RawValue\":"]}}"#;
        assert!(parse(text.as_bytes()).is_ok(), "values and escaped quotes are not keys");
        assert!(parse(br#"{"a":1} trailing"#).is_err());
    }
}
