//! A raw HTTP/1.1 client over a Unix socket, for timing the front door without the docker CLI.
//!
//! It runs as its own process (this bench binary started with `--door-client SOCKET`), so that
//! the uid the kernel gives the front door is the one it was started with: a real user through
//! the front door, root on dockerd's own socket. The bench drives two of them, one an arm, and
//! alternates between them; each times its own request, so the pipe between them is not in the
//! figure. One command a line on stdin, one answer a line on stdout (`ns status bytes`):
//!
//! - `fresh METHOD PATH`: connect, one request, the whole answer read, close (as a CLI
//!   invocation does; the connect is in the time);
//! - `keep METHOD PATH`: one request on a connection kept open between commands;
//! - `put PATH FILE`: connect, `PUT` the file as an `application/x-tar` body, read the answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

/// The flag that makes this binary the client.
pub const FLAG: &str = "--door-client";

/// The read buffer: large, so that a 1 GiB stream costs few system calls on this side.
const BUF: usize = 1 << 20;

/// The client process's main loop.
pub fn main(sock: &str) {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut keep: Option<BufReader<UnixStream>> = None;
    for line in stdin.lock().lines() {
        let line = line.expect("a command");
        let f: Vec<&str> = line.split(' ').collect();
        let t = Instant::now();
        let r = match f.as_slice() {
            ["fresh", method, path] => connect(sock).and_then(|mut c| exchange(&mut c, method, path, None)),
            ["keep", method, path] => {
                let r = match keep.as_mut() {
                    Some(c) => exchange(c, method, path, None),
                    None => connect(sock).and_then(|mut c| {
                        let r = exchange(&mut c, method, path, None);
                        keep = Some(c);
                        r
                    }),
                };
                if r.is_err() {
                    keep = None;
                }
                r
            }
            ["put", path, file] => connect(sock).and_then(|mut c| exchange(&mut c, "PUT", path, Some(file))),
            _ => panic!("unknown command {line:?}"),
        };
        let ns = t.elapsed().as_nanos();
        match r {
            Ok((status, bytes)) => writeln!(out, "{ns} {status} {bytes}").unwrap(),
            Err(e) => writeln!(out, "{ns} 0 0 {e}").unwrap(),
        }
        out.flush().unwrap();
    }
}

fn connect(sock: &str) -> std::io::Result<BufReader<UnixStream>> {
    Ok(BufReader::with_capacity(BUF, UnixStream::connect(sock)?))
}

/// One request and its whole answer (the body read and dropped): the status and the body's
/// length.
fn exchange(
    c: &mut BufReader<UnixStream>,
    method: &str,
    path: &str,
    file: Option<&str>,
) -> std::io::Result<(u16, u64)> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: ds01-bench\r\n");
    let mut body = None;
    if let Some(file) = file {
        let f = std::fs::File::open(file)?;
        head += &format!("Content-Type: application/x-tar\r\nContent-Length: {}\r\n", f.metadata()?.len());
        body = Some(f);
    }
    head += "\r\n";
    c.get_mut().write_all(head.as_bytes())?;
    if let Some(mut f) = body {
        let mut buf = vec![0u8; BUF];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            c.get_mut().write_all(&buf[..n])?;
        }
    }
    read_answer(c, method == "HEAD")
}

fn bad(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

fn read_line(c: &mut BufReader<UnixStream>) -> std::io::Result<String> {
    let mut l = String::new();
    if c.read_line(&mut l)? == 0 {
        return Err(bad("the connection closed mid-answer".into()));
    }
    Ok(l.trim_end().to_owned())
}

fn read_answer(c: &mut BufReader<UnixStream>, head_only: bool) -> std::io::Result<(u16, u64)> {
    let status_line = read_line(c)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("status line {status_line:?}")))?;
    let (mut length, mut chunked) = (None, false);
    loop {
        let l = read_line(c)?;
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap_or((&l, ""));
        if k.eq_ignore_ascii_case("content-length") {
            length = v.trim().parse::<u64>().ok();
        } else if k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
            chunked = true;
        }
    }
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok((status, 0));
    }
    if chunked {
        let mut total = 0;
        loop {
            let l = read_line(c)?;
            let size = u64::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(format!("chunk size {l:?}")))?;
            if size == 0 {
                while !read_line(c)?.is_empty() {}
                return Ok((status, total));
            }
            discard(c, size)?;
            total += size;
            read_line(c)?;
        }
    }
    match length {
        Some(n) => discard(c, n).map(|_| (status, n)),
        // Neither: the body runs to the end of the connection.
        None => {
            let mut total = 0;
            loop {
                let n = c.fill_buf()?.len();
                if n == 0 {
                    return Ok((status, total));
                }
                c.consume(n);
                total += n as u64;
            }
        }
    }
}

fn discard(c: &mut BufReader<UnixStream>, mut n: u64) -> std::io::Result<()> {
    while n > 0 {
        let got = c.fill_buf()?.len();
        if got == 0 {
            return Err(bad("the connection closed mid-body".into()));
        }
        let k = (got as u64).min(n) as usize;
        c.consume(k);
        n -= k as u64;
    }
    Ok(())
}

/// One answer of the client.
pub struct Reply {
    pub ms: f64,
    pub status: u16,
    pub bytes: u64,
    pub error: String,
}

/// The bench's end of a client process.
pub struct Client {
    child: Child,
    tx: Option<ChildStdin>,
    rx: BufReader<ChildStdout>,
}

impl Client {
    /// Starts `cmd` (this binary, with the caller's uid set) as the client of `sock`.
    pub fn spawn(mut cmd: Command, sock: &std::path::Path) -> Client {
        cmd.arg(FLAG).arg(sock).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the HTTP client");
        let tx = child.stdin.take();
        let rx = BufReader::new(child.stdout.take().unwrap());
        Client { child, tx, rx }
    }

    /// Runs one command (see the module's comment).
    pub fn call(&mut self, line: &str) -> Reply {
        let tx = self.tx.as_mut().unwrap();
        writeln!(tx, "{line}").unwrap();
        tx.flush().unwrap();
        let mut answer = String::new();
        self.rx.read_line(&mut answer).unwrap();
        let mut f = answer.trim_end().splitn(4, ' ');
        let mut num = || f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let (ns, status, bytes) = (num(), num() as u16, num());
        Reply { ms: ns as f64 / 1e6, status, bytes, error: f.next().unwrap_or("").to_owned() }
    }

    /// Like `call`, asserting a 2xx answer; the time in ms.
    pub fn ok(&mut self, line: &str) -> f64 {
        let r = self.call(line);
        assert!((200..300).contains(&r.status), "{line}: status {} {}", r.status, r.error);
        r.ms
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        drop(self.tx.take());
        let _ = self.child.wait();
    }
}
