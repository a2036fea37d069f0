//! Small helpers for editing config.json as a JSON document (never as a typed Spec, which would
//! drop unknown fields, reorder keys and inject defaults).

pub mod annotations;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The value at `path`, if every step is an object holding the next key.
pub fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, k| cur.as_object()?.get(*k))
}

/// The string at `path`, if any.
pub fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

/// The object at `path`, creating missing (or null) steps as empty objects at the end of their
/// parent. A step that holds something other than an object or null is an error.
pub fn object_mut<'a>(v: &'a mut Value, path: &[&str]) -> Result<&'a mut Map<String, Value>> {
    let mut cur = v;
    let mut walked = String::new();
    for k in path {
        let obj = cur
            .as_object_mut()
            .ok_or_else(|| Error::failed(format!("config.json: {} is not an object", shown(&walked))))?;
        walked.push('.');
        walked.push_str(k);
        let slot = obj.entry((*k).to_owned()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = Value::Object(Map::new());
        }
        cur = slot;
    }
    let path_shown = shown(&walked);
    cur.as_object_mut().ok_or_else(|| Error::failed(format!("config.json: {path_shown} is not an object")))
}

fn shown(walked: &str) -> &str {
    if walked.is_empty() {
        "the document"
    } else {
        &walked[1..]
    }
}

/// An OCI annotation of the spec.
pub fn annotation<'a>(spec: &'a Value, key: &str) -> Option<&'a str> {
    get_str(spec, &["annotations", key])
}

/// The value of `NAME=value` in process.env, the last one winning as in execve's users.
pub fn env_var<'a>(spec: &'a Value, name: &str) -> Option<&'a str> {
    get(spec, &["process", "env"])?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|e| e.strip_prefix(name)?.strip_prefix('='))
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn object_mut_creates_at_the_end_and_keeps_order() {
        let mut v = json!({"b": 1, "a": {"z": 1}, "n": null});
        object_mut(&mut v, &["a", "y"]).unwrap().insert("k".into(), json!(2));
        object_mut(&mut v, &["n"]).unwrap().insert("k".into(), json!(3));
        object_mut(&mut v, &["c"]).unwrap();
        assert_eq!(v.to_string(), r#"{"b":1,"a":{"z":1,"y":{"k":2}},"n":{"k":3},"c":{}}"#);
        let e = object_mut(&mut v, &["b", "x"]).unwrap_err();
        assert_eq!(e.to_string(), "config.json: b is not an object");
    }

    #[test]
    fn env_lookup_takes_last() {
        let v = json!({"process": {"env": ["A=1", "AB=2", "A=3", 7]}});
        assert_eq!(env_var(&v, "A"), Some("3"));
        assert_eq!(env_var(&v, "AB"), Some("2"));
        assert_eq!(env_var(&v, "B"), None);
    }
}
