//! Reading a systemd unit as systemd would, for the few settings `install --front-door` checks:
//! the unit's file (the first directory given that has it: /etc/systemd/system before
//! /lib/systemd/system), then its drop-ins (`<unit>.d/*.conf` of every directory, ordered by
//! file name, a higher directory's replacing a lower one's of the same name); list settings
//! that an empty assignment resets; and a command line's words with `$VAR` and `${VAR}` taken
//! from `Environment=` and `EnvironmentFile=`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One file of a unit, and its text.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where it is.
    pub path: PathBuf,
    /// What it says.
    pub text: String,
}

/// A unit's files in the order systemd reads them: the unit file, then its drop-ins.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The unit file, then the drop-ins.
    pub sources: Vec<Source>,
}

/// A setting's value and the file that gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    /// The value as written (continuation lines joined).
    pub text: String,
    /// The file.
    pub file: PathBuf,
}

/// A word of a command line, and the variable it came from, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word.
    pub text: String,
    /// The variable and the file that set it, when the word came from `$VAR`.
    pub from: Option<(String, PathBuf)>,
}

fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::failed(format!("cannot read {}: {e}", path.display()))),
    }
}

impl Unit {
    /// Loads `name` from `dirs`, the one systemd prefers first; None when none has its file.
    pub fn load(name: &str, dirs: &[&Path]) -> Result<Option<Unit>> {
        let mut main = None;
        for d in dirs {
            let p = d.join(name);
            if let Some(text) = read(&p)? {
                main = Some(Source { path: p, text });
                break;
            }
        }
        let Some(main) = main else { return Ok(None) };
        let mut drop_ins: BTreeMap<String, PathBuf> = BTreeMap::new();
        for d in dirs.iter().rev() {
            let dir = d.join(format!("{name}.d"));
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                if file.ends_with(".conf") {
                    drop_ins.insert(file, e.path());
                }
            }
        }
        let mut sources = vec![main];
        for path in drop_ins.into_values() {
            if let Some(text) = read(&path)? {
                sources.push(Source { path, text });
            }
        }
        Ok(Some(Unit { sources }))
    }

    /// The unit as it would be with `drop_in` (a `<unit>.d/<file>.conf` path) holding `text`:
    /// put in systemd's order, in place of a drop-in of the same file name.
    pub fn with_drop_in(mut self, drop_in: &Path, text: &str) -> Unit {
        let name = drop_in.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        let mut drop_ins = self.sources.split_off(1.min(self.sources.len()));
        drop_ins.retain(|s| s.path.file_name() != Some(name.as_os_str()));
        drop_ins.push(Source { path: drop_in.to_path_buf(), text: text.to_owned() });
        drop_ins.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
        self.sources.extend(drop_ins);
        self
    }

    /// Every `key=` of `[section]`, in the order systemd reads them.
    pub fn values(&self, section: &str, key: &str) -> Vec<Value> {
        self.sources
            .iter()
            .flat_map(|s| {
                parse(&s.text)
                    .into_iter()
                    .filter(|(sec, k, _)| sec == section && k == key)
                    .map(|(_, _, v)| Value { text: v, file: s.path.clone() })
            })
            .collect()
    }

    /// A list setting: its values after the last empty assignment (which resets the list).
    pub fn list(&self, section: &str, key: &str) -> Vec<Value> {
        let all = self.values(section, key);
        let start = all.iter().rposition(|v| v.text.is_empty()).map_or(0, |i| i + 1);
        all[start..].to_vec()
    }

    /// A single setting: its last value.
    pub fn last(&self, section: &str, key: &str) -> Option<Value> {
        self.values(section, key).pop()
    }

    /// The variables a service's commands see from the unit: `Environment=` and the files of
    /// `EnvironmentFile=` (a leading `-`: the file may be missing), each with where it was set.
    pub fn environment(&self) -> Result<BTreeMap<String, (String, PathBuf)>> {
        let mut env = BTreeMap::new();
        for v in self.values("Service", "Environment") {
            if v.text.is_empty() {
                env.clear();
                continue;
            }
            for assignment in split_words(&v.text) {
                if let Some((k, val)) = assignment.split_once('=') {
                    env.insert(k.to_owned(), (val.to_owned(), v.file.clone()));
                }
            }
        }
        for v in self.list("Service", "EnvironmentFile") {
            let (optional, file) = match v.text.strip_prefix('-') {
                Some(f) => (true, f),
                None => (false, v.text.as_str()),
            };
            let path = PathBuf::from(file);
            match read(&path)? {
                Some(text) => {
                    for (k, val) in env_file(&text) {
                        env.insert(k, (val, path.clone()));
                    }
                }
                None if optional => {}
                None => {
                    return Err(Error::failed(format!(
                        "{}: EnvironmentFile {} does not exist",
                        v.file.display(),
                        path.display()
                    )))
                }
            }
        }
        Ok(env)
    }
}

/// `(section, key, value)` of every assignment of a unit file: comments (`#`, `;`) skipped,
/// lines ending in `\` joined with the next.
pub fn parse(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let whole = std::mem::take(&mut pending) + line;
        let whole = whole.trim();
        if let Some(name) = whole.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((k, v)) = whole.split_once('=') {
            out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// Words split at whitespace outside double or single quotes (quotes removed, `\` escaping
/// the next character inside double quotes).
pub fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut started = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                started = true;
                while let Some(q) = chars.next() {
                    if q == c {
                        break;
                    }
                    if q == '\\' && c == '"' {
                        cur.extend(chars.next());
                    } else {
                        cur.push(q);
                    }
                }
            }
            c if c.is_whitespace() => {
                if started {
                    words.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            c => {
                started = true;
                cur.push(c);
            }
        }
    }
    if started {
        words.push(cur);
    }
    words
}

/// `KEY=VALUE` lines of an environment file (comments skipped, one pair of quotes removed).
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("export ").unwrap_or(l).split_once('=')?;
            let v = v.trim();
            let v = crate::naming::unquote(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// The words of an `ExecStart=` line as the program gets them: its prefix characters (`-`,
/// `@`, `:`, `+`, `!`) dropped, `$VAR` alone a word made into the variable's words, `${VAR}`
/// replaced in place; an unset variable is empty.
pub fn command_words(line: &str, env: &BTreeMap<String, (String, PathBuf)>) -> Vec<Word> {
    let mut out = Vec::new();
    for (i, w) in split_words(line).into_iter().enumerate() {
        let w = if i == 0 { w.trim_start_matches(['-', '@', ':', '+', '!']).to_owned() } else { w };
        let var = w.strip_prefix('$').filter(|n| !n.starts_with('{') && !n.is_empty());
        if let Some(name) = var {
            if let Some((value, file)) = env.get(name) {
                out.extend(
                    split_words(value)
                        .into_iter()
                        .map(|text| Word { text, from: Some((name.to_owned(), file.clone())) }),
                );
            }
            continue;
        }
        let mut text = w;
        let mut from = None;
        while let Some(start) = text.find("${") {
            let Some(len) = text[start..].find('}') else { break };
            let name = text[start + 2..start + len].to_owned();
            let value = env.get(&name).map(|(v, f)| {
                from = Some((name.clone(), f.clone()));
                v.clone()
            });
            text.replace_range(start..start + len + 1, &value.unwrap_or_default());
        }
        out.push(Word { text, from });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_sections_comments_and_continuations() {
        let t =
            "[Unit]\n# c\nDescription=x = y\n\n[Service]\n; c\nExecStart=/usr/sbin/dockerd \\\n  -H fd://\n";
        assert_eq!(
            parse(t),
            [
                ("Unit".into(), "Description".into(), "x = y".into()),
                ("Service".into(), "ExecStart".into(), "/usr/sbin/dockerd  -H fd://".into()),
            ]
        );
    }

    #[test]
    fn words_keep_quoted_spaces_and_expand_variables() {
        assert_eq!(split_words(r#"a "b c" 'd e' f\x "g\"h""#), ["a", "b c", "d e", r"f\x", "g\"h"]);
        let mut env = BTreeMap::new();
        env.insert(
            "OPTS".to_owned(),
            ("-H unix:///x.sock --debug".to_owned(), PathBuf::from("/etc/default/docker")),
        );
        env.insert("SOCK".to_owned(), ("/y.sock".to_owned(), PathBuf::from("/u")));
        let w = command_words("-/usr/sbin/dockerd -H fd:// $OPTS --host=unix://${SOCK} $UNSET", &env);
        let text: Vec<&str> = w.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(
            text,
            ["/usr/sbin/dockerd", "-H", "fd://", "-H", "unix:///x.sock", "--debug", "--host=unix:///y.sock"]
        );
        assert_eq!(w[4].from, Some(("OPTS".into(), PathBuf::from("/etc/default/docker"))));
        assert_eq!(w[6].from, Some(("SOCK".into(), PathBuf::from("/u"))));
        assert_eq!(w[2].from, None);
    }

    #[test]
    fn drop_ins_follow_the_unit_in_name_order_and_reset_lists() {
        let d = std::env::temp_dir().join(format!("ds01-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let (etc, lib) = (d.join("etc"), d.join("lib"));
        std::fs::create_dir_all(etc.join("docker.socket.d")).unwrap();
        std::fs::create_dir_all(lib.join("docker.socket.d")).unwrap();
        std::fs::write(
            lib.join("docker.socket"),
            "[Socket]\nListenStream=/run/docker.sock\nSocketMode=0660\n",
        )
        .unwrap();
        std::fs::write(lib.join("docker.socket.d/10-a.conf"), "[Socket]\nListenStream=/lib-a\n").unwrap();
        std::fs::write(etc.join("docker.socket.d/10-a.conf"), "[Socket]\nListenStream=/etc-a\n").unwrap();
        std::fs::write(etc.join("docker.socket.d/20-b.conf"), "[Socket]\nListenStream=\nListenStream=/b\n")
            .unwrap();
        std::fs::write(etc.join("docker.socket.d/ignored.txt"), "[Socket]\nListenStream=/no\n").unwrap();
        let u = Unit::load("docker.socket", &[&etc, &lib]).unwrap().unwrap();
        let list =
            |u: &Unit| u.list("Socket", "ListenStream").into_iter().map(|v| v.text).collect::<Vec<_>>();
        assert_eq!(list(&u), ["/b"]);
        assert_eq!(
            u.values("Socket", "ListenStream").len(),
            4,
            "the unit, /etc's 10-a (not /lib's), 20-b's two"
        );
        assert_eq!(u.last("Socket", "SocketMode").unwrap().file, lib.join("docker.socket"));
        // A drop-in put in before 20-b is undone by it; one after it decides.
        let before = u.clone().with_drop_in(
            &etc.join("docker.socket.d/15-x.conf"),
            "[Socket]\nListenStream=\nListenStream=/x\n",
        );
        assert_eq!(list(&before), ["/b"]);
        let after = u.with_drop_in(
            &etc.join("docker.socket.d/30-x.conf"),
            "[Socket]\nListenStream=\nListenStream=/x\n",
        );
        assert_eq!(list(&after), ["/x"]);
        // /etc's unit file replaces /lib's.
        std::fs::write(etc.join("docker.socket"), "[Socket]\nSocketMode=0600\n").unwrap();
        let u = Unit::load("docker.socket", &[&etc, &lib]).unwrap().unwrap();
        assert_eq!(u.last("Socket", "SocketMode").unwrap().text, "0600");
        assert!(Unit::load("nothing.socket", &[&etc, &lib]).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn environment_from_assignments_and_files() {
        let d = std::env::temp_dir().join(format!("ds01-unit-env-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("default"), "# comment\nDOCKER_OPTS=\"-H unix:///x\"\nexport B='1 2'\n")
            .unwrap();
        let unit = format!(
            "[Service]\nEnvironment=\"A=a b\" C=c\nEnvironmentFile=-{}\nEnvironmentFile=-/nonexistent/file\n",
            d.join("default").display()
        );
        std::fs::write(d.join("x.service"), unit).unwrap();
        let u = Unit::load("x.service", &[&d]).unwrap().unwrap();
        let env = u.environment().unwrap();
        assert_eq!(env["A"].0, "a b");
        assert_eq!(env["C"].0, "c");
        assert_eq!(env["DOCKER_OPTS"], ("-H unix:///x".into(), d.join("default")));
        assert_eq!(env["B"].0, "1 2");
        std::fs::write(d.join("y.service"), "[Service]\nEnvironmentFile=/nonexistent/file\n").unwrap();
        let e = Unit::load("y.service", &[&d]).unwrap().unwrap().environment().unwrap_err().to_string();
        assert!(e.contains("EnvironmentFile /nonexistent/file does not exist"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
