//! The pure request readers: `route::{classify, decode, strip_version, encode, query_param,
//! set_param}` and `filters::owned_by`.
//!
//! Input layout: fields separated by 0xFF bytes (never part of UTF-8): method, path, query,
//! key, value, login; each read as lossy UTF-8, missing ones empty.
#![no_main]

use ds01::door::filters::owned_by;
use ds01::door::route::{classify, decode, encode, query_param, set_param, strip_version, Route};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let mut fields = data.split(|&b| b == 0xff).map(|f| String::from_utf8_lossy(f).into_owned());
    let mut next = || fields.next().unwrap_or_default();
    let (method, path, query, key, value, login) = (next(), next(), next(), next(), next(), next());

    // classify: whatever the path, a route; a reference is part of the decoded path.
    let route = classify(&method, &path);
    match &route {
        Route::Container { reference, .. } | Route::Exec { id: reference, .. } => {
            let decoded = decode(&path).expect("a container route from an undecodable path");
            assert!(decoded.contains(reference.as_str()), "{reference:?} not in {decoded:?}");
        }
        Route::Create | Route::Build | Route::PruneContainers | Route::Commit => assert_eq!(method, "POST"),
        _ => {}
    }

    // strip_version drops a prefix only.
    assert!(path.ends_with(strip_version(&path)));
    // decode: the identity without escapes; the inverse of encode.
    if !path.contains('%') {
        assert_eq!(decode(&path).as_deref(), Some(path.as_str()));
    }
    let enc = encode(&value);
    assert!(enc.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)), "{enc:?}");
    assert_eq!(decode(&enc).as_deref(), Some(value.as_str()));

    // set_param then query_param gives the value back, and the other parameters are kept.
    let _ = query_param(&query, &key);
    let set = set_param(&query, &key, &value);
    assert_eq!(
        query_param(&set, &key).as_deref(),
        Some(value.as_str()),
        "set_param({query:?}, {key:?}) = {set:?}"
    );
    for kv in query.split('&') {
        let k = kv.split_once('=').map_or(kv, |(k, _)| k);
        if let Some(k) = decode(&k.replace('+', " ")).filter(|k| !k.is_empty() && *k != key) {
            assert_eq!(query_param(&set, &k), query_param(&query, &k), "{k:?} changed in {set:?}");
        }
    }

    // owned_by: the owner's label is in the filters, or a one-line refusal.
    match owned_by(&query, &login) {
        Ok(q) => {
            let text = query_param(&q, "filters").expect("no filters");
            let f: Value = serde_json::from_str(&text).expect("the filters are not JSON");
            let wanted = format!("ds01.user={login}");
            let ok = match &f["label"] {
                Value::Object(m) => m.get(&wanted) == Some(&Value::Bool(true)),
                Value::Array(a) => a.iter().any(|v| v.as_str() == Some(wanted.as_str())),
                _ => false,
            };
            assert!(ok, "{wanted:?} is not in {text:?}");
        }
        Err(e) => {
            assert!(e.starts_with("ds01: "), "{e:?}");
            assert!(!e.contains(['\n', '\r']), "{e:?}");
        }
    }
});
