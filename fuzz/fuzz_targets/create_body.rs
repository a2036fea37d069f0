//! `create_body::rewrite` on arbitrary bytes.
//!
//! Input layout: byte 0 holds flags (bit 0: the creator is an admin; bit 1: a `name` query
//! parameter follows, up to the first newline; bits 2-3: which creator). The rest is the body.
//!
//! Invariants: on Ok the body is JSON whose `Labels["ds01.user"]` is the returned owner, a
//! non-admin's container is the caller's own, and rewriting the result again changes nothing;
//! on Err the message is one line starting with `ds01: `.
#![no_main]

use ds01::door::create_body::{rewrite, Creator};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const CREATORS: [(&str, u32); 4] = [("alice", 1001), ("bob", 1002), ("ada", 1005), ("1001", 1001)];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let admin = flags & 1 != 0;
    let (name, body) = if flags & 2 != 0 {
        let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        (Some(String::from_utf8_lossy(&rest[..end]).into_owned()), rest.get(end + 1..).unwrap_or(&[]))
    } else {
        (None, rest)
    };
    let (login, uid) = CREATORS[usize::from(flags >> 2) & 3];
    let who = Creator { login, uid, admin };
    match rewrite(body, name.as_deref(), who) {
        Ok(out) => {
            let doc: Value = serde_json::from_slice(&out.body).expect("the rewritten body is not JSON");
            let label = doc.get("Labels").and_then(|l| l.get("ds01.user")).and_then(Value::as_str);
            assert_eq!(label, Some(out.owner.as_str()), "Labels[ds01.user] is not the owner");
            if !admin {
                assert_eq!(out.owner, login, "a non-admin created for someone else");
            }
            let again = rewrite(&out.body, name.as_deref(), who).expect("the rewritten body is refused");
            assert_eq!(again.owner, out.owner, "a second rewrite names another owner");
            assert_eq!(again.body, out.body, "a second rewrite changes the body");
        }
        Err(e) => {
            assert!(e.starts_with("ds01: "), "{e:?}");
            assert!(!e.contains(['\n', '\r']), "{e:?}");
        }
    }
});
