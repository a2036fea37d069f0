//! What a request to the Docker API is, as far as the front door cares: read from the method
//! and the path, the way dockerd's router reads them (version prefix dropped, the path
//! percent-decoded, a container's reference being everything between `/containers/` and the
//! action, as its `{name:.*}` patterns match). Pure: no I/O.

/// What the request does to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /containers/create`.
    Create,
    /// `POST /build`.
    Build,
    /// `POST /containers/prune`.
    PruneContainers,
    /// `GET /containers/json`.
    ListContainers,
    /// An operation on one container.
    Container {
        /// The reference the caller gave (id, short id or name).
        reference: String,
        /// What is done to it.
        act: Act,
    },
    /// An operation on one exec instance.
    Exec {
        /// The exec id.
        id: String,
        /// What is done to it.
        act: Act,
    },
    /// `POST /commit?container=…` (the container is in the query).
    Commit,
    /// Plugins and swarm, changed: admins only.
    AdminOnly(&'static str),
    /// BuildKit's gRPC endpoint (`/grpc`, used by buildx).
    BuildKitGrpc,
    /// `POST /networks/{id}/connect` or `disconnect`: the container is in the JSON body.
    Network,
    /// A path that does not decode (a bad escape, not UTF-8): dockerd's reading of it is not
    /// known, so only root's passes.
    Unreadable,
    /// Everything else: passed as it is.
    Pass,
}

/// What a request does to a container or an exec instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    /// Inspect (`/json`): open when `front_door.open_reads`.
    Inspect,
    /// Reads every caller may make (`wait`, `top`, `changes`, `stats`).
    Read,
    /// Anything that changes, enters or reads out of the container: the owner's only; the
    /// words are the refusal's verb ("stop", "exec into").
    Touch(&'static str),
}

/// Strips the `/v1.41` prefix dockerd accepts before any route.
pub fn strip_version(path: &str) -> &str {
    if let Some(rest) = path.strip_prefix("/v") {
        let end = rest.find('/').unwrap_or(rest.len());
        let v = &rest[..end];
        let numeric = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        if numeric {
            return &rest[end..];
        }
    }
    path
}

/// Percent-decodes a path as Go's URL parser does for routing; None for a malformed escape
/// (dockerd refuses such a request itself).
pub fn decode(path: &str) -> Option<String> {
    if !path.contains('%') {
        return Some(path.to_owned());
    }
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hi = b.get(i + 1).and_then(|c| (*c as char).to_digit(16))?;
            let lo = b.get(i + 2).and_then(|c| (*c as char).to_digit(16))?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The route of a request. `path` is the request's path, still encoded, without the query.
pub fn classify(method: &str, path: &str) -> Route {
    let Some(decoded) = decode(path) else { return Route::Unreadable };
    let p = strip_version(&decoded);
    let read = matches!(method, "GET" | "HEAD");
    let first = p.trim_start_matches('/').split('/').next().unwrap_or("");
    match (method, p) {
        ("POST", "/containers/create") => return Route::Create,
        ("POST", "/build") => return Route::Build,
        ("POST", "/containers/prune") => return Route::PruneContainers,
        ("GET", "/containers/json") => return Route::ListContainers,
        ("POST", "/commit") => return Route::Commit,
        (_, "/grpc") => return Route::BuildKitGrpc,
        _ => {}
    }
    if method == "POST" && first == "networks" && (p.ends_with("/connect") || p.ends_with("/disconnect")) {
        return Route::Network;
    }
    if !read && matches!(first, "plugins" | "swarm" | "nodes" | "services" | "tasks" | "secrets" | "configs")
    {
        return Route::AdminOnly(if first == "plugins" {
            "install, enable or change plugins"
        } else {
            "change the swarm"
        });
    }
    if let Some(rest) = p.strip_prefix("/containers/") {
        return container(method, rest);
    }
    if let Some(rest) = p.strip_prefix("/exec/") {
        let (id, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
        let act = match (method, action) {
            ("GET", "json") => Act::Read,
            (_, "start") => Act::Touch("exec into"),
            (_, "resize") => Act::Touch("resize a terminal of"),
            _ => Act::Touch("use an exec instance of"),
        };
        return Route::Exec { id: id.to_owned(), act };
    }
    Route::Pass
}

fn container(method: &str, rest: &str) -> Route {
    let (reference, action) = if let Some(r) = rest.strip_suffix("/attach/ws") {
        (r, "attach")
    } else {
        match rest.rsplit_once('/') {
            Some((r, a)) => (r, a),
            None => (rest, ""),
        }
    };
    let act = match (method, action) {
        ("DELETE", "") => Act::Touch("remove"),
        ("GET" | "HEAD", "json") => Act::Inspect,
        ("GET" | "HEAD", "top" | "changes" | "stats") | ("POST", "wait") => Act::Read,
        ("POST", "exec") => Act::Touch("exec into"),
        ("GET" | "HEAD", "logs") => Act::Touch("read the logs of"),
        ("GET", "archive") => Act::Touch("copy out of"),
        ("HEAD", "archive") => Act::Touch("copy files to or from"),
        ("PUT", "archive") => Act::Touch("copy into"),
        ("GET" | "HEAD", "export") => Act::Touch("export"),
        (_, "attach") => Act::Touch("attach to"),
        (_, "start") => Act::Touch("start"),
        (_, "stop") => Act::Touch("stop"),
        (_, "restart") => Act::Touch("restart"),
        (_, "kill") => Act::Touch("kill"),
        (_, "pause") => Act::Touch("pause"),
        (_, "unpause") => Act::Touch("unpause"),
        (_, "rename") => Act::Touch("rename"),
        (_, "update") => Act::Touch("update"),
        (_, "resize") => Act::Touch("resize the terminal of"),
        _ => Act::Touch("change"),
    };
    Route::Container { reference: reference.to_owned(), act }
}

/// One query parameter's decoded value (`+` is a space, as Go reads forms).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let k = decode(&k.replace('+', " "))?;
        (k == key).then(|| decode(&v.replace('+', " ")).unwrap_or_default())
    })
}

/// The query with `key` set to `value` (every earlier `key` dropped, both encoded, so that
/// [`query_param`] reads `value` back whatever the two hold).
pub fn set_param(query: &str, key: &str, value: &str) -> String {
    let mut parts: Vec<String> = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .filter(|kv| {
            let k = kv.split_once('=').map_or(*kv, |(k, _)| k);
            decode(&k.replace('+', " ")).as_deref() != Some(key)
        })
        .map(str::to_owned)
        .collect();
    parts.push(format!("{}={}", encode(key), encode(value)));
    parts.join("&")
}

/// The request's path with the container reference replaced by the id it was resolved to, so
/// that dockerd acts on the container that was judged, whatever is renamed meanwhile. None
/// when the path is not `[/vX.Y]/containers/<reference><rest>`.
pub fn with_id(path: &str, reference: &str, id: &str) -> Option<String> {
    let decoded = decode(path)?;
    let rest = strip_version(&decoded);
    let version = &decoded[..decoded.len() - rest.len()];
    let after = rest.strip_prefix("/containers/")?.strip_prefix(reference)?;
    let tail: Vec<String> = after.split('/').map(encode).collect();
    Some(format!("{version}/containers/{}{}", encode(id), tail.join("/")))
}

/// Percent-encodes everything but unreserved characters.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(reference: &str, act: Act) -> Route {
        Route::Container { reference: reference.into(), act }
    }

    #[test]
    fn routes_as_dockerd_reads_them() {
        assert_eq!(classify("POST", "/v1.41/containers/create"), Route::Create);
        assert_eq!(classify("POST", "/containers/create"), Route::Create);
        assert_eq!(classify("POST", "/v1.41/build"), Route::Build);
        assert_eq!(classify("GET", "/v1.41/containers/json"), Route::ListContainers);
        assert_eq!(classify("POST", "/v1.41/containers/abc/stop"), c("abc", Act::Touch("stop")));
        assert_eq!(classify("DELETE", "/v1.41/containers/abc"), c("abc", Act::Touch("remove")));
        assert_eq!(classify("GET", "/v1.41/containers/abc/json"), c("abc", Act::Inspect));
        assert_eq!(classify("GET", "/v1.41/containers/abc/logs"), c("abc", Act::Touch("read the logs of")));
        assert_eq!(classify("PUT", "/v1.41/containers/abc/archive"), c("abc", Act::Touch("copy into")));
        assert_eq!(
            classify("HEAD", "/v1.41/containers/abc/archive"),
            c("abc", Act::Touch("copy files to or from"))
        );
        assert_eq!(classify("GET", "/v1.41/containers/abc/attach/ws"), c("abc", Act::Touch("attach to")));
        assert_eq!(classify("POST", "/v1.41/containers/abc/exec"), c("abc", Act::Touch("exec into")));
        assert_eq!(classify("POST", "/v1.41/networks/n1/connect"), Route::Network);
        assert_eq!(classify("POST", "/v1.41/containers/bad%zz/stop"), Route::Unreadable);
        assert_eq!(classify("POST", "/v1.41/containers/abc/wait"), c("abc", Act::Read));
        assert_eq!(
            classify("POST", "/v1.41/exec/e1/start"),
            Route::Exec { id: "e1".into(), act: Act::Touch("exec into") }
        );
        assert_eq!(classify("POST", "/v1.41/commit"), Route::Commit);
        assert_eq!(
            classify("POST", "/v1.41/plugins/pull"),
            Route::AdminOnly("install, enable or change plugins")
        );
        assert_eq!(classify("GET", "/v1.41/plugins"), Route::Pass);
        assert_eq!(classify("POST", "/swarm/init"), Route::AdminOnly("change the swarm"));
        assert_eq!(classify("GET", "/v1.41/images/json"), Route::Pass);
        assert_eq!(classify("HEAD", "/_ping"), Route::Pass);
        assert_eq!(classify("POST", "/grpc"), Route::BuildKitGrpc);
    }

    #[test]
    fn the_reference_is_what_dockerds_greedy_pattern_takes() {
        // Go decodes the path before routing: an escaped slash is a slash.
        assert_eq!(classify("POST", "/containers/x%2Fy/stop"), c("x/y", Act::Touch("stop")));
        assert_eq!(classify("POST", "/containers/%61bc/kill"), c("abc", Act::Touch("kill")));
        assert_eq!(classify("POST", "/containers/a/b/unknown"), c("a/b", Act::Touch("change")));
        assert_eq!(classify("POST", "/containers/bad%zz/stop"), Route::Unreadable);
    }

    #[test]
    fn the_judged_id_replaces_the_reference() {
        assert_eq!(
            with_id("/v1.41/containers/web/stop", "web", "abc").as_deref(),
            Some("/v1.41/containers/abc/stop")
        );
        assert_eq!(with_id("/containers/web", "web", "abc").as_deref(), Some("/containers/abc"));
        assert_eq!(
            with_id("/containers/w%65b/attach/ws", "web", "abc").as_deref(),
            Some("/containers/abc/attach/ws")
        );
        assert_eq!(with_id("/images/web/json", "web", "abc"), None);
    }

    #[test]
    fn version_prefixes_are_only_versions() {
        assert_eq!(strip_version("/v1.41/info"), "/info");
        assert_eq!(strip_version("/v1/info"), "/info");
        assert_eq!(strip_version("/volumes"), "/volumes");
        assert_eq!(strip_version("/v"), "/v");
    }

    #[test]
    fn query_parameters() {
        assert_eq!(query_param("a=1&name=x%2E_.bob&b", "name").as_deref(), Some("x._.bob"));
        assert_eq!(query_param("b", "b").as_deref(), Some(""));
        assert_eq!(query_param("a=1", "name"), None);
        assert_eq!(
            set_param("t=x&cgroupparent=evil&q=1", "cgroupparent", "ds01-door-1.slice"),
            "t=x&q=1&cgroupparent=ds01-door-1.slice"
        );
        assert_eq!(set_param("", "k", "a b"), "k=a%20b");
    }

    #[test]
    fn set_param_then_query_param_gives_the_value_back() {
        // Found by the `route` fuzz target: a key holding an escape (or `+`, `&`, `=`) was
        // written as it is, so it was read back decoded, as another key.
        for key in ["cgers/x%2Fy/json", "a+b", "k&x=y", "=", "%", "filters"] {
            let q = set_param("all=1&filters=%7B%7D", key, "all=1&filtere");
            assert_eq!(query_param(&q, key).as_deref(), Some("all=1&filtere"), "{key:?}: {q}");
        }
        assert_eq!(set_param("a=1", "cgers/x%2Fy", "v"), "a=1&cgers%2Fx%252Fy=v");
    }
}
