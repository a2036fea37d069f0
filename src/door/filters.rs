//! The `filters` query parameter of a list or prune, narrowed to one owner's containers by the
//! label the front door gives every container it creates.

use serde_json::{Map, Value};

use super::route::{query_param, set_param};
use crate::owner::identity::USER_KEY;

/// The query with `label=ds01.user=<login>` added to its filters (both of Docker's forms: a map
/// of values to `true`, or a list). The error is the caller's one line.
pub fn owned_by(query: &str, login: &str) -> Result<String, String> {
    let wanted = format!("{USER_KEY}={login}");
    let mut filters = match query_param(query, "filters").filter(|f| !f.trim().is_empty()) {
        Some(text) => serde_json::from_str::<Value>(&text)
            .map_err(|e| format!("ds01: the filters are not JSON: {e}"))?,
        None => Value::Object(Map::new()),
    };
    let Some(obj) = filters.as_object_mut() else {
        return Err("ds01: the filters are not a JSON object".to_owned());
    };
    match obj.entry("label").or_insert_with(|| Value::Object(Map::new())) {
        Value::Object(m) => {
            m.insert(wanted, Value::Bool(true));
        }
        Value::Array(a) => a.push(Value::String(wanted)),
        _ => return Err("ds01: the label filter is neither a map nor a list".to_owned()),
    }
    Ok(set_param(query, "filters", &filters.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::door::route::query_param;

    fn filters(q: &str) -> Value {
        serde_json::from_str(&query_param(q, "filters").unwrap()).unwrap()
    }

    #[test]
    fn an_owner_label_is_added_to_either_form() {
        let q = owned_by("all=1", "alice").unwrap();
        assert_eq!(filters(&q), serde_json::json!({"label": {"ds01.user=alice": true}}));
        assert!(q.starts_with("all=1&"));
        let q = owned_by("filters=%7B%22label%22%3A%5B%22x%3D1%22%5D%7D", "alice").unwrap();
        assert_eq!(filters(&q), serde_json::json!({"label": ["x=1", "ds01.user=alice"]}));
        let q = owned_by("filters=%7B%22until%22%3A%7B%2210m%22%3Atrue%7D%7D", "alice").unwrap();
        assert_eq!(filters(&q)["until"], serde_json::json!({"10m": true}));
        assert!(owned_by("filters=nope", "alice").unwrap_err().starts_with("ds01: the filters"));
        assert!(owned_by("filters=%7B%22label%22%3A1%7D", "alice").is_err());
    }
}
