//! The front door's inputs, as the fuzz targets in `fuzz/` drive them, but deterministic and on
//! stable Rust: a few thousand inputs from a seeded xorshift generator plus hand-written nasty
//! ones, through the request readers (`route`, `filters`), the create rewrite (`create_body`)
//! and whole connections (`server::serve_io` over an in-memory duplex, dockerd's socket
//! missing). Nothing may panic; a refusal is one line starting with `ds01: `; every connection
//! answers or closes within a second of its client closing; a connection that stalls or
//! vanishes costs only itself.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ds01::door::create_body::{rewrite, Creator};
use ds01::door::filters::owned_by;
use ds01::door::route::{classify, decode, encode, query_param, set_param, strip_version, Route};
use ds01::door::server::{serve_io, Shared};
use ds01::policy::settings::FrontDoorSettings;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// A small seeded generator (xorshift64): no dependencies, the same inputs on every run.

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Text built from pieces that matter to the front door, and some noise.
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "alice",
            "bob",
            "ada",
            "1001",
            " ",
            "\n",
            "\r",
            "\t",
            "\0",
            "%",
            "%2F",
            "%2f",
            "%zz",
            "%C3%A9",
            "%FF",
            "+",
            "&",
            "=",
            "/",
            "?",
            "._.",
            ".slice",
            "ds01-",
            "ds01.user",
            "DS01_USER",
            "filters",
            "label",
            "containers",
            "v1.41",
            "\u{17f}",
            "\u{212a}",
            "é",
            "{",
            "\"",
            "\\",
            "-",
        ];
        let mut s = String::new();
        for _ in 0..self.below(6) {
            if self.chance(80) {
                s.push_str(self.pick(PIECES));
            } else {
                s.push(char::from_u32(self.below(0x1_0000) as u32).unwrap_or('?'));
            }
        }
        s
    }

    /// A JSON value as text, with keys the rewrite reads (and their other spellings), odd
    /// numbers, and duplicate keys now and then.
    fn json(&mut self, depth: usize) -> String {
        const KEYS: &[&str] = &[
            "Labels",
            "labels",
            "LABELS",
            "Label\u{17f}",
            "HostConfig",
            "hostConfig",
            "Annotations",
            "annotations",
            "CgroupParent",
            "cgroupparent",
            "ds01.user",
            "DS01_USER",
            "aime.mlc.USER",
            "Image",
            "Cmd",
            "x",
        ];
        const ATOMS: &[&str] = &[
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1.0",
            "1e400",
            "-1.5e-7",
            "18446744073709551616",
            "1073741824.0",
        ];
        match self.below(if depth == 0 { 3 } else { 6 }) {
            0 => self.pick(ATOMS).to_string(),
            1 | 2 => Value::String(self.text()).to_string(),
            3 => {
                let items: Vec<String> = (0..self.below(4)).map(|_| self.json(depth - 1)).collect();
                format!("[{}]", items.join(","))
            }
            _ => {
                let fields: Vec<String> = (0..self.below(5))
                    .map(|_| {
                        let key = if self.chance(85) { self.pick(KEYS).to_string() } else { self.text() };
                        format!("{}:{}", Value::String(key), self.json(depth - 1))
                    })
                    .collect();
                format!("{{{}}}", fields.join(","))
            }
        }
    }

    /// A create body: mostly a JSON object, sometimes damaged.
    fn create_body(&mut self) -> Vec<u8> {
        let mut body = if self.chance(90) {
            let mut doc = self.json(4);
            if !doc.starts_with('{') {
                doc = format!("{{\"Labels\":{doc}}}");
            }
            doc.into_bytes()
        } else {
            let n = self.below(64);
            self.bytes(n)
        };
        self.damage(&mut body, 10);
        body
    }

    /// Now and then: cut short, a byte changed, or bytes put in (true when it did).
    fn damage(&mut self, b: &mut Vec<u8>, percent: u64) -> bool {
        if !self.chance(percent) || b.is_empty() {
            return false;
        }
        let at = self.below(b.len());
        match self.below(3) {
            0 => b.truncate(at),
            1 => b[at] = self.next() as u8,
            _ => {
                let n = self.below(8);
                let junk = self.bytes(n);
                b.splice(at..at, junk);
            }
        }
        true
    }

    /// One HTTP/1 request (or something like one), and whether it is well formed (so it
    /// must get exactly one answer from a client that keeps its side open).
    fn request(&mut self) -> (Vec<u8>, bool) {
        const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "G\0T", ""];
        const PATHS: &[&str] = &[
            "/_ping",
            "/v1.41/containers/create",
            "/containers/create",
            "/v1.41/containers/json",
            "/v1.41/containers/prune",
            "/v1.41/containers/abc/stop",
            "/v1.41/containers/abc/json",
            "/v1.41/containers/a%2Fb/exec",
            "/v1.41/containers/abc/attach/ws",
            "/v1.41/exec/e1/start",
            "/v1.41/exec/e1/json",
            "/v1.41/build",
            "/v1.41/commit",
            "/v1.41/plugins/pull",
            "/swarm/init",
            "/grpc",
            "/session",
            "http://docker/containers/create",
            "*",
            "",
        ];
        const VERSIONS: &[&str] =
            &["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 x", ""];
        // Most requests are well formed, so that they reach the front door's judging; the rest
        // are odd in their line, lengths or headers.
        let sane = self.chance(70);
        let method = if sane { self.pick(&METHODS[..6]) } else { self.pick(METHODS) };
        let mut path = if sane { self.pick(&PATHS[..PATHS.len() - 2]) } else { self.pick(PATHS) }.to_string();
        if self.chance(20) {
            path.push_str(&encode(&self.text()).replace("%2F", "/"));
        }
        if self.chance(40) {
            let k = self.pick(&["name", "filters", "container", "cgroupparent", "version", "x"]);
            let v = if k == "filters" && self.chance(50) { self.json(2) } else { self.text() };
            path.push_str(&format!("?{k}={}", encode(&v)));
            if !sane && self.chance(30) {
                let more = self.text().replace(|c: char| c.is_control() || c == ' ', "");
                path.push_str(&format!("&{more}"));
            }
        }
        let version = if sane { self.pick(&VERSIONS[..4]) } else { self.pick(VERSIONS) };
        let body = match self.below(3) {
            0 => Vec::new(),
            1 => self.create_body(),
            _ => {
                let n = self.below(200);
                self.bytes(n)
            }
        };
        let mut head = format!("{method} {path} {version}\r\nHost: docker\r\n");
        let chunked = self.chance(25);
        if chunked {
            head.push_str("Transfer-Encoding: chunked\r\n");
        }
        match if sane && chunked {
            0
        } else if sane {
            5
        } else {
            self.below(6)
        } {
            0 => {}
            1 => head.push_str(&format!("Content-Length: {}\r\n", body.len() + self.below(3))),
            2 => head.push_str(&format!("Content-Length: {}\r\nContent-Length: 1\r\n", body.len())),
            3 => head.push_str(self.pick(&[
                "Content-Length: -1\r\n",
                "Content-Length: 99999999999999999999\r\n",
                "Content-Length: 0x10\r\n",
            ])),
            _ => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
        }
        // (An answer to HEAD has a Content-Length but no body: not one `ask` can wait for.)
        let mut clean = sane && method != "HEAD";
        for _ in 0..self.below(3) {
            const HEADERS: &[&str] = &[
                "Connection: Upgrade\r\nUpgrade: tcp\r\n",
                "Expect: 100-continue\r\n",
                "Connection: close\r\n",
                "Content-Type: application/json\r\n",
                "X-\0: \0\r\n",
                " folded\r\n",
                "Transfer-Encoding: gzip, chunked\r\n",
                "Bad Header\r\n",
            ];
            let header = if sane { self.pick(&HEADERS[..4]) } else { self.pick(HEADERS) };
            clean &= !header.starts_with("Expect");
            head.push_str(header);
        }
        head.push_str("\r\n");
        let mut req = head.into_bytes();
        if chunked && (sane || self.chance(80)) {
            for part in body.chunks(self.below(40) + 1) {
                req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                req.extend_from_slice(part);
                req.extend_from_slice(b"\r\n");
            }
            req.extend_from_slice(b"0\r\n\r\n");
        } else {
            req.extend_from_slice(&body);
        }
        let damaged = self.damage(&mut req, if sane { 3 } else { 30 });
        (req, clean && !damaged)
    }
}

// ---------------------------------------------------------------------------------------------
// The invariants (the same the fuzz targets assert).

fn one_line_refusal(e: &str) {
    assert!(e.starts_with("ds01: "), "{e:?}");
    assert!(!e.contains(['\n', '\r']), "{e:?}");
}

fn check_rewrite(body: &[u8], name: Option<&str>, who: Creator) {
    match rewrite(body, name, who) {
        Ok(out) => {
            let doc: Value = serde_json::from_slice(&out.body).expect("the rewritten body is not JSON");
            let label = doc.get("Labels").and_then(|l| l.get("ds01.user")).and_then(Value::as_str);
            assert_eq!(label, Some(out.owner.as_str()), "{}", String::from_utf8_lossy(body));
            if !who.admin {
                assert_eq!(out.owner, who.login, "{}", String::from_utf8_lossy(body));
            }
            let again = rewrite(&out.body, name, who).expect("the rewritten body is refused");
            assert_eq!((again.owner, again.body), (out.owner, out.body));
        }
        Err(e) => one_line_refusal(&e),
    }
}

fn check_route(method: &str, path: &str, query: &str, key: &str, value: &str, login: &str) {
    if let Route::Container { reference, .. } | Route::Exec { id: reference, .. } = classify(method, path) {
        assert!(decode(path).unwrap().contains(reference.as_str()), "{path:?}");
    }
    assert!(path.ends_with(strip_version(path)));
    assert_eq!(decode(&encode(value)).as_deref(), Some(value));
    let set = set_param(query, key, value);
    assert_eq!(query_param(&set, key).as_deref(), Some(value), "set_param({query:?}, {key:?}) = {set:?}");
    match owned_by(query, login) {
        Ok(q) => {
            let f: Value = serde_json::from_str(&query_param(&q, "filters").unwrap()).unwrap();
            let wanted = format!("ds01.user={login}");
            let found = match &f["label"] {
                Value::Object(m) => m.get(&wanted) == Some(&Value::Bool(true)),
                Value::Array(a) => a.iter().any(|v| v.as_str() == Some(wanted.as_str())),
                _ => false,
            };
            assert!(found, "{q:?}");
        }
        Err(e) => one_line_refusal(&e),
    }
}

const CREATORS: [Creator; 4] = [
    Creator { login: "alice", uid: 1001, admin: false },
    Creator { login: "bob", uid: 1002, admin: false },
    Creator { login: "ada", uid: 1005, admin: true },
    Creator { login: "1001", uid: 1001, admin: false },
];

#[test]
fn generated_create_bodies() {
    let mut rng = Rng::new(1);
    for _ in 0..5000 {
        let body = rng.create_body();
        let name = rng.chance(30).then(|| rng.text());
        let who = rng.pick(&CREATORS);
        check_rewrite(&body, name.as_deref(), who);
    }
}

#[test]
fn nasty_create_bodies() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!("{{\"Labels\":{}1{}}}", "{\"a\":".repeat(5000), "}".repeat(5000));
    let bodies: Vec<Vec<u8>> = vec![
        br#"{"Labels":{"ds01.user":" alice "}}"#.to_vec(),
        br#"{"Labels":{"ds01.user":"bo\nb"}}"#.to_vec(),
        br#"{"Labels":{"DS01_USER":"x\r\ny"}}"#.to_vec(),
        br#"{"HostConfig":{"CgroupParent":"ds01-a-b\nc.slice"}}"#.to_vec(),
        br#"{"HostConfig":{"CgroupParent":"/x\n"}}"#.to_vec(),
        br#"{"Labels":{"ds01.user":"bob"},"Labels":{"x":"1"}}"#.to_vec(),
        br#"{"labels":{"ds01.user":"bob"}}"#.to_vec(),
        br#"{"Labels":{"ds01.user":"\ud800"}}"#.to_vec(),
        b"{\"Labels\":{\"ds01.user\":\"a\0b\"}}".to_vec(),
        b"\0".to_vec(),
        b"{\"Image\":\"\xff\"}".to_vec(),
        deep.into_bytes(),
        deep_obj.into_bytes(),
        vec![b' '; 10_000],
    ];
    for body in &bodies {
        for who in CREATORS {
            for name in [None, Some("x._.bob"), Some("x._.bo\nb"), Some("._.")] {
                check_rewrite(body, name, who);
            }
        }
    }
}

#[test]
fn generated_routes_and_queries() {
    let mut rng = Rng::new(2);
    for _ in 0..5000 {
        let method = rng.pick(&["GET", "POST", "HEAD", "DELETE", "PUT", "X"]);
        let mut path =
            rng.pick(&["/v1.41/containers/", "/containers/", "/exec/", "/v1.41/", "/v", ""]).to_string();
        path.push_str(&rng.text());
        path.push_str(rng.pick(&["", "/json", "/stop", "/attach/ws", "/exec", "/start"]));
        let query = (0..rng.below(4))
            .map(|_| {
                let k = if rng.chance(40) { "filters".to_string() } else { rng.text() };
                let v = if rng.chance(50) { encode(&rng.json(2)) } else { rng.text() };
                format!("{k}={v}")
            })
            .collect::<Vec<_>>()
            .join("&");
        let key = if rng.chance(50) {
            rng.pick(&["filters", "cgroupparent", "name"]).to_string()
        } else {
            rng.text()
        };
        let (value, login) = (rng.text(), rng.text());
        check_route(method, &path, &query, &key, &value, &login);
    }
    for (q, k) in [("a+b=1", "a+b"), ("%=1&x=2", "%"), ("k=1&k=2", "k&x=y"), ("", ""), ("&&=&", "=")] {
        check_route("GET", "/containers/%", q, k, "v a+l&u=e%", "alice");
    }
}

// ---------------------------------------------------------------------------------------------
// Whole connections.

/// A non-root user with a login (so a create reaches the body rewrite).
fn some_user() -> (u32, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.get(2)?.parse().ok()?, f.first()?.to_string()))
        })
        .find(|(uid, _)| *uid != 0)
        .expect("a non-root user in /etc/passwd")
}

struct Door {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    user: u32,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn door(tag: &str) -> Door {
    let dir = std::env::temp_dir().join(format!("ds01-door-inputs-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let settings = FrontDoorSettings {
        upstream: dir.join("no-dockerd.sock"),
        verified_dir: dir.join("verified"),
        ..Default::default()
    };
    let shared = Arc::new(Shared::new(settings, dir.join("no-policy.yaml"), None));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    Door { rt, shared, user: some_user().0, _dir: TempDir(dir) }
}

/// Writes `data`, closes the client's side, reads until the server closes: within a second.
async fn exchange(shared: Arc<Shared>, uid: u32, data: &[u8]) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(8 << 10);
    let task = tokio::spawn(serve_io(server, uid, shared));
    let (mut rd, mut wr) = tokio::io::split(client);
    let talk = async {
        let write = async {
            let _ = wr.write_all(data).await;
            let _ = wr.shutdown().await;
        };
        let mut answer = Vec::new();
        let (_, read) = tokio::join!(write, rd.read_to_end(&mut answer));
        read.expect("reading the answer");
        task.await.expect("the connection's task");
        answer
    };
    match tokio::time::timeout(Duration::from_secs(1), talk).await {
        Ok(a) => a,
        Err(_) => panic!(
            "no answer or close within a second for {:?}",
            String::from_utf8_lossy(&data[..data.len().min(300)])
        ),
    }
}

/// Writes `data` and keeps the connection open (as the docker CLI does) until `n` answers came
/// or the server closed: within a second.
async fn ask(shared: Arc<Shared>, uid: u32, data: &[u8], n: usize) -> Vec<u8> {
    let (client, server) = tokio::io::duplex(8 << 10);
    let task = tokio::spawn(serve_io(server, uid, shared));
    let (mut rd, mut wr) = tokio::io::split(client);
    let talk = async {
        let write = async {
            let _ = wr.write_all(data).await;
        };
        let read = async {
            let mut raw = Vec::new();
            let mut buf = [0u8; 8192];
            while answers(&raw).len() < n || !complete(&raw) {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => raw.extend_from_slice(&buf[..k]),
                }
            }
            raw
        };
        let (_, raw) = tokio::join!(write, read);
        raw
    };
    let Ok(raw) = tokio::time::timeout(Duration::from_secs(1), talk).await else {
        panic!("no answer within a second for {:?}", String::from_utf8_lossy(&data[..data.len().min(400)]))
    };
    drop((rd, wr));
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the connection did not end")
        .expect("no panic");
    raw
}

/// The last answer in `raw` has all of its body.
fn complete(raw: &[u8]) -> bool {
    let Some(end) = raw.windows(4).rposition(|w| w == b"\r\n\r\n") else { return false };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    raw.len() >= end + 4 + len
}

impl Door {
    fn exchange(&self, uid: u32, data: &[u8]) -> Vec<u8> {
        self.rt.block_on(exchange(self.shared.clone(), uid, data))
    }

    fn ask(&self, uid: u32, data: &[u8], n: usize) -> Vec<u8> {
        self.rt.block_on(ask(self.shared.clone(), uid, data, n))
    }
}

/// The answers in `raw`: (status, body) each, bodies by Content-Length.
fn answers(raw: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = raw;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let len = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))
            })
            .unwrap_or(0);
        let body_end = (end + 4 + len).min(rest.len());
        out.push((status, rest[end + 4..body_end].to_vec()));
        rest = &rest[body_end..];
    }
    out
}

fn message(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("a JSON answer");
    v["message"].as_str().expect("a message").to_owned()
}

#[test]
fn generated_connections() {
    let d = door("generated");
    let mut rng = Rng::new(3);
    let mut answered = [0usize; 2];
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..1500 {
        let (mut data, mut clean) = rng.request();
        if rng.chance(20) {
            data.extend_from_slice(&rng.request().0);
            clean = false;
        }
        if i % 10 == 0 {
            let n = rng.below(300);
            data = rng.bytes(n);
            clean = false;
        }
        for (n, uid) in answered.iter_mut().zip([0, d.user]) {
            // A client that closes its side after writing: answered or closed within a second.
            let raw = d.exchange(uid, &data);
            assert!(raw.is_empty() || raw.starts_with(b"HTTP/1."), "{:?}", String::from_utf8_lossy(&raw));
            *n += usize::from(!raw.is_empty());
            // A well-formed request from a client that waits: one answer within a second.
            if clean {
                let a = answers(&d.ask(uid, &data, 1));
                assert_eq!(a.len(), 1, "{:?}", String::from_utf8_lossy(&data));
                *statuses.entry(a[0].0).or_default() += 1;
            }
        }
    }
    eprintln!("answered (root, user) after closing: {answered:?} of 1500; waiting, by status: {statuses:?}");
    // The generator reaches past the parser: the front door judges what it is sent.
    assert!(answered.iter().all(|&n| n > 300), "{answered:?}");
    assert!(statuses.keys().filter(|&&s| s != 400).count() >= 2, "{statuses:?}");
}

#[test]
fn nasty_connections() {
    let d = door("nasty");
    let user = d.user;
    let ping = b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";

    // Headers over max_header_bytes: refused (431) or closed, never read on.
    let mut huge = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200 << 10));
    huge.extend_from_slice(b"\r\n\r\n");
    for uid in [0, user] {
        let a = answers(&d.exchange(uid, &huge));
        assert!(a.iter().all(|(s, _)| *s == 431 || *s == 400), "{a:?}");
    }
    let mut many = b"GET /_ping HTTP/1.1\r\n".to_vec();
    for i in 0..2000 {
        many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    for uid in [0, user] {
        let a = answers(&d.exchange(uid, &many));
        assert!(a.iter().all(|(s, _)| *s >= 400), "{a:?}");
    }

    let cases: &[&[u8]] = &[
        // A chunked create with a bad chunk size.
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n{}\r\n",
        // A request line with no version, or nothing but a method.
        b"GET /_ping\r\nHost: docker\r\n\r\n",
        b"GET\r\n\r\n",
        b"\r\n\r\n\r\n",
        // A body cut short.
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 100\r\n\r\n{\"Image\":",
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"Im",
        // NUL bytes in the line, a header and the body.
        b"GET /_p\0ing HTTP/1.1\r\nHost: docker\r\n\r\n",
        b"GET /_ping HTTP/1.1\r\nHost: dock\0er\r\nX\0: 1\r\n\r\n",
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 4\r\n\r\n{\0}\0",
        // Transfer-Encoding together with Content-Length.
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\nPOST /containers/create HTTP/1.1\r\n\r\n",
        // An upgrade nobody answers, an expectation, HTTP/1.0 and junk.
        b"POST /containers/abc/attach?stream=1 HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n",
        b"POST /containers/create HTTP/1.1\r\nHost: docker\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /build HTTP/1.0\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"",
    ];
    for case in cases {
        for uid in [0, user] {
            let raw = d.exchange(uid, case);
            assert!(raw.is_empty() || raw.starts_with(b"HTTP/1."), "{:?}", String::from_utf8_lossy(&raw));
        }
    }

    // A pipelined second request is answered too (the client keeps its side open: one that
    // closes it after writing has the connection closed after the answer in progress, hyper's
    // `half_close(false)`).
    let mut two = ping.to_vec();
    two.extend_from_slice(
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: 2\r\n\r\n{}",
    );
    two.extend_from_slice(b"GET /v1.41/containers/abc/json HTTP/1.1\r\nHost: docker\r\n\r\n");
    for uid in [0, user] {
        let a = answers(&d.ask(uid, &two, 3));
        assert_eq!(a.len(), 3, "{a:?}");
        assert!(a.iter().all(|(s, _)| *s == 502), "{a:?}");
    }
}

#[test]
fn an_oversized_create_gets_413_naming_the_limit() {
    let d = door("oversized");
    let max = FrontDoorSettings::default().max_create_body;
    let mut body = br#"{"Image":"busybox","Labels":{"x":""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', max + 1000));
    body.extend_from_slice(br#""}}"#);
    let mut req = format!(
        "POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let a = answers(&d.ask(d.user, &req, 1));
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].0, 413);
    let m = message(&a[0].1);
    assert!(m.contains(&max.to_string()) && m.contains("max_create_body"), "{m}");

    // Chunked, the same.
    let mut req =
        b"POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for part in body.chunks(64 << 10) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let a = answers(&d.ask(d.user, &req, 1));
    assert_eq!(a.first().map(|x| x.0), Some(413), "{a:?}");
    assert!(message(&a[0].1).contains(&max.to_string()));
}

#[test]
fn a_create_refused_by_the_rewrite_is_a_403_in_one_line() {
    let d = door("refused");
    let (uid, login) = some_user();
    for (body, said) in [
        (
            &br#"{"Image":"busybox","labels":{"ds01.user":"bob"}}"#[..],
            "the create request spells Labels as \"labels\"",
        ),
        (br#"{"Image":"busybox","Labels":{"ds01.user":"bo\nb"}}"#, "may not create a container for bo\\nb"),
        (b"{\"Image\":\0}", "the create request is not JSON"),
    ] {
        let mut req = format!(
            "POST /v1.41/containers/create HTTP/1.1\r\nHost: docker\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let a = answers(&d.ask(uid, &req, 1));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].0, 403);
        let m = message(&a[0].1);
        assert!(m.starts_with("ds01: ") && m.contains(said) && !m.contains('\n'), "{login}: {m}");
    }
}

#[test]
fn a_stalled_or_vanished_client_costs_only_its_connection() {
    let d = door("stalled");
    d.rt.block_on(async {
        // A client that sends half a head and then nothing, another that sends half a body.
        let mut held = Vec::new();
        for part in [
            &b"GET /_ping HTTP/1.1\r\nHost: d"[..],
            b"POST /containers/create HTTP/1.1\r\nContent-Length: 10\r\n\r\n{",
        ] {
            for uid in [0, d.user] {
                let (mut client, server) = tokio::io::duplex(8 << 10);
                let task = tokio::spawn(serve_io(server, uid, d.shared.clone()));
                client.write_all(part).await.unwrap();
                held.push((client, task));
            }
        }
        tokio::task::yield_now().await;
        // Others are answered meanwhile.
        for uid in [0, d.user] {
            let a =
                answers(&ask(d.shared.clone(), uid, b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n", 1).await);
            assert_eq!(a.len(), 1, "{a:?}");
        }
        // The stalled clients vanish: their connections end.
        for (client, task) in held {
            drop(client);
            tokio::time::timeout(Duration::from_secs(1), task).await.expect("ended").expect("no panic");
        }
    });
}
