//! DS01's `container_type`: which interface made a container, read from its labels and name as
//! DS01's container-owner-tracker.py reads them (`ds01.interface`, DS01-managed, AIME's
//! `name._.user`, Compose, VS Code dev containers, else `docker`).

use serde_json::{Map, Value};

/// The interface a container came from, DS01's way.
pub fn of(labels: &Map<String, Value>, name: Option<&str>) -> String {
    let label = |k: &str| labels.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
    let name = name.unwrap_or("").trim_start_matches('/');
    if let Some(i) = label("ds01.interface") {
        return i.to_owned();
    }
    let kind = if label("ds01.managed") == Some("true")
        || label("aime.mlc.DS01_MANAGED") == Some("true")
        || name.contains("._.")
    {
        "atomic"
    } else if label("com.docker.compose.project").is_some() {
        "compose"
    } else if labels.keys().any(|k| k.starts_with("devcontainer.")) || name.starts_with("vsc-") {
        "devcontainer"
    } else {
        "docker"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_interface_as_ds01_does() {
        let m = |v: Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(of(&m(json!({"ds01.interface": "api"})), Some("x")), "api");
        assert_eq!(of(&m(json!({"com.docker.compose.project": "p"})), None), "compose");
        assert_eq!(of(&m(json!({"devcontainer.local_folder": "/home/a/p"})), None), "devcontainer");
        assert_eq!(of(&m(json!({})), Some("/vsc-proj-123")), "devcontainer");
        assert_eq!(of(&m(json!({})), Some("train._.1001")), "atomic");
        assert_eq!(of(&m(json!({"ds01.managed": "true"})), None), "atomic");
        assert_eq!(of(&m(json!({})), Some("web")), "docker");
    }
}
