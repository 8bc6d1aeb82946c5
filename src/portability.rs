//! A static check that every declared target can compile the crate, for the
//! targets this machine cannot build (no Windows or macOS standard library
//! here): every use of an API that exists on Unix only (`std::os::unix`,
//! `std::os::fd`, `tokio::net::Unix*`, `tokio::signal::unix`, `libc`, the
//! crate's Unix-only modules) must sit inside an item whose `cfg` is false
//! on Windows, and every Windows-only API (`tokio::net::windows`,
//! `std::os::windows`, named pipes) inside one that is false on Linux and
//! macOS. A module declared under such a `cfg` (`#[cfg(unix)] pub mod
//! host;`) covers its whole file tree.
//!
//! Limits (it is a scan, not a compiler):
//! - it knows the APIs listed in [`UNIX_ONLY`] and [`WINDOWS_ONLY`] by
//!   name, not every OS-specific item (a Linux-only `libc` symbol used on
//!   macOS, or a method that exists on one OS only, is not seen);
//! - an item ends at the first `;` or `,` at its own depth, or at the close
//!   of its first brace: an `if … {} else {}` under one attribute counts
//!   as the `if` branch only (a false alarm at worst, never a miss);
//! - `cfg!(…)` is a run-time value, not a guard, and counts as none;
//!   `cfg_attr`, `#[path]` and macros that expand to OS code are not read.
//!
//! The release workflow compiles each target on its own runner; this check
//! catches the common mistake here, in `cargo test`, before a tag.

use std::path::{Path, PathBuf};

/// Unix-only API paths (matched as substrings of code, comments and strings
/// removed).
const UNIX_ONLY: &[&str] = &[
    "std::os::unix",
    "std::os::fd",
    "tokio::net::Unix",
    "tokio::signal::unix",
    "UnixStream",
    "UnixListener",
    "UnixDatagram",
    "libc::",
    "nix::",
];

/// Windows-only API paths.
const WINDOWS_ONLY: &[&str] = &[
    "std::os::windows",
    "tokio::net::windows",
    "tokio::signal::windows",
    "named_pipe",
    "NamedPipeClient",
    "NamedPipeServer",
    "windows_sys::",
];

/// The `cfg` facts of one target OS; everything else (features, `test`,
/// `debug_assertions`, …) is unknown.
#[derive(Clone, Copy)]
struct Target {
    os: &'static str,
    family: &'static str,
}

const WINDOWS: Target = Target {
    os: "windows",
    family: "windows",
};
const LINUX: Target = Target {
    os: "linux",
    family: "unix",
};
const MACOS: Target = Target {
    os: "macos",
    family: "unix",
};

/// Evaluates a `cfg` predicate for `t`: `Some(false)` when it is surely
/// false there, `Some(true)` surely true, `None` unknown.
fn eval(pred: &str, t: Target) -> Option<bool> {
    let p = pred.trim();
    let args = |name: &str| -> Option<Vec<&str>> {
        let inner = p.strip_prefix(name)?.trim_start().strip_prefix('(')?;
        let inner = inner.strip_suffix(')')?;
        Some(split_top(inner))
    };
    if let Some(list) = args("all") {
        let v: Vec<_> = list.iter().map(|a| eval(a, t)).collect();
        return if v.contains(&Some(false)) {
            Some(false)
        } else if v.iter().all(|x| *x == Some(true)) {
            Some(true)
        } else {
            None
        };
    }
    if let Some(list) = args("any") {
        let v: Vec<_> = list.iter().map(|a| eval(a, t)).collect();
        return if v.contains(&Some(true)) {
            Some(true)
        } else if v.iter().all(|x| *x == Some(false)) {
            Some(false)
        } else {
            None
        };
    }
    if let Some(list) = args("not") {
        return list.first().and_then(|a| eval(a, t)).map(|b| !b);
    }
    let (key, value) = match p.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
        None => (p, None),
    };
    match (key, value) {
        ("unix", None) => Some(t.family == "unix"),
        ("windows", None) => Some(t.family == "windows"),
        ("target_os", Some(v)) => Some(v == t.os),
        ("target_family", Some(v)) => Some(v == t.family),
        _ => None,
    }
}

/// Splits `a, b(c, d), e` at its top-level commas.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(&s[start..]);
    }
    out
}

/// `src` with comments, string and char literals blanked (same length, so
/// byte offsets and line numbers still match).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = b[i..]
                    .iter()
                    .position(|c| *c == b'\n')
                    .map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let (mut depth, mut j) = (0, i);
                while j < b.len() {
                    if b[j..].starts_with(b"/*") {
                        depth += 1;
                        j += 2;
                    } else if b[j..].starts_with(b"*/") {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                blank(&mut out, i, j);
                i = j;
            }
            b'r' if matches!(b.get(i + 1), Some(b'"') | Some(b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                let hashes = b[i + 1..].iter().take_while(|c| **c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let mut close = vec![b'"'];
                close.extend(std::iter::repeat_n(b'#', hashes));
                let body = i + 2 + hashes;
                let end = b[body..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |n| body + n + close.len());
                blank(&mut out, i + 1, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(b.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{1F600}'), not a lifetime.
                let end = if b.get(i + 1) == Some(&b'\\') {
                    b[i + 2..]
                        .iter()
                        .position(|c| *c == b'\'')
                        .map(|n| i + 3 + n)
                } else {
                    let ch = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                    (b.get(i + 1 + ch) == Some(&b'\'')).then_some(i + 2 + ch)
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

/// The byte ranges of `code` inside an item whose `cfg` is surely false on
/// every target of `targets`.
fn guarded_ranges(code: &str, targets: &[Target]) -> Vec<(usize, usize)> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(at) = code[i..].find("#[cfg(").map(|n| i + n) {
        let inner = &code[at + 6..];
        let Some(len) = matching(inner, b'(', b')') else {
            break;
        };
        let pred = &inner[..len];
        let after = at + 6 + len + 2; // `)]`
        i = after.min(code.len());
        if !targets.iter().all(|t| eval(pred, *t) == Some(false)) {
            continue;
        }
        // The item: to the first `;` (or `,`, unless it is a declaration
        // whose signature may hold generics) at its depth, the close of
        // its first brace, or the close of the enclosing one.
        let comma_ends = !starts_declaration(&code[i..]);
        let mut depth = 0i32;
        let mut end = b.len();
        let mut j = i;
        while j < b.len() {
            match b[j] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    if depth < 0 {
                        end = j;
                        break;
                    }
                    if depth == 0 && b[j] == b'}' {
                        end = j + 1;
                        break;
                    }
                }
                b',' if depth == 0 && comma_ends => {
                    end = j + 1;
                    break;
                }
                b';' if depth == 0 => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
            j += 1;
        }
        out.push((at, end));
    }
    out
}

/// Whether the item at the start of `s` (after more attributes) is a
/// declaration (`fn`, `impl`, `use`, …) rather than a field, a variant, a
/// match arm or an expression.
fn starts_declaration(s: &str) -> bool {
    let mut rest = s.trim_start();
    while let Some(attr) = rest.strip_prefix("#[") {
        let Some(len) = matching(attr, b'[', b']') else {
            return false;
        };
        rest = attr[len + 1..].trim_start();
    }
    if let Some(vis) = rest.strip_prefix("pub") {
        let vis = vis.trim_start();
        rest = match vis.strip_prefix('(') {
            Some(scope) => matching(scope, b'(', b')').map_or(vis, |n| &scope[n + 1..]),
            None => vis,
        }
        .trim_start();
    }
    let word: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    matches!(
        word.as_str(),
        "fn" | "struct"
            | "enum"
            | "union"
            | "impl"
            | "mod"
            | "use"
            | "let"
            | "const"
            | "static"
            | "type"
            | "trait"
            | "unsafe"
            | "async"
            | "extern"
            | "macro_rules"
    )
}

/// Length of the text up to the bracket closing an already open one.
fn matching(s: &str, open: u8, close: u8) -> Option<usize> {
    let mut depth = 1;
    for (i, c) in s.bytes().enumerate() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// `mod name;` declarations of `code`, with their byte offset.
fn mod_decls(code: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("mod ") {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[at + 4..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && rest[name.len()..].trim_start().starts_with(';') {
            out.push((name, at));
        }
    }
    out
}

/// One offending use: file, line, pattern.
#[derive(Debug, PartialEq)]
struct Finding {
    file: PathBuf,
    line: usize,
    pattern: &'static str,
}

/// The uses of `patterns` in `code` outside `ranges`.
fn unguarded(
    file: &Path,
    code: &str,
    patterns: &[&'static str],
    ranges: &[(usize, usize)],
) -> Vec<Finding> {
    let mut out = Vec::new();
    for p in patterns {
        for (at, _) in code.match_indices(p) {
            let joined = p.starts_with(|c: char| c.is_alphanumeric())
                && code[..at]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_');
            if !joined && !ranges.iter().any(|(s, e)| (*s..*e).contains(&at)) {
                out.push(Finding {
                    file: file.to_path_buf(),
                    line: code[..at].matches('\n').count() + 1,
                    pattern: p,
                });
            }
        }
    }
    out
}

/// The file of module `name` declared in `parent`.
fn child_file(parent: &Path, name: &str) -> Option<PathBuf> {
    let stem = parent.file_stem()?.to_str()?;
    let dir = parent.parent()?;
    let dir = if matches!(stem, "lib" | "mod" | "main") || dir.ends_with("src/bin") {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        dir.join(format!("{name}.rs")),
        dir.join(name).join("mod.rs"),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// One file of the module tree, and whether its module is compiled out on
/// Windows / on Linux and macOS as a whole.
#[derive(Debug)]
struct Walked {
    file: PathBuf,
    no_windows: bool,
    no_unix: bool,
}

/// Walks the module tree from `roots` (crate roots, by path) and returns
/// every finding, and the files walked.
fn check_tree(roots: &[PathBuf]) -> (Vec<Finding>, Vec<Walked>) {
    struct File {
        walked: Walked,
        code: String,
        win_guard: Vec<(usize, usize)>,
        unix_guard: Vec<(usize, usize)>,
    }
    // (file, module path, compiled out on Windows, on Linux+macOS)
    let mut queue: Vec<(PathBuf, String, bool, bool)> = roots
        .iter()
        .map(|r| (r.clone(), String::new(), false, false))
        .collect();
    // Unix-only modules, as paths other files name them.
    let mut unix_modules: Vec<String> = Vec::new();
    let mut files: Vec<File> = Vec::new();
    while let Some((file, module, no_windows, no_unix)) = queue.pop() {
        let src = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        let code = code_only(&src);
        let win_guard = guarded_ranges(&code, &[WINDOWS]);
        let unix_guard = guarded_ranges(&code, &[LINUX, MACOS]);
        let within = |ranges: &[(usize, usize)], at: usize| {
            ranges.iter().any(|(s, e)| (*s..*e).contains(&at))
        };
        for (name, at) in mod_decls(&code) {
            let Some(child) = child_file(&file, &name) else {
                continue;
            };
            let path = if module.is_empty() {
                name.clone()
            } else {
                format!("{module}::{name}")
            };
            let child_no_windows = no_windows || within(&win_guard, at);
            if child_no_windows && !no_windows {
                if module.is_empty() {
                    unix_modules.push(format!("crate::{name}::"));
                    unix_modules.push(format!("interactor::{name}::"));
                } else {
                    unix_modules.push(format!("{path}::"));
                }
            }
            queue.push((
                child,
                path,
                child_no_windows,
                no_unix || within(&unix_guard, at),
            ));
        }
        files.push(File {
            walked: Walked {
                file,
                no_windows,
                no_unix,
            },
            code,
            win_guard,
            unix_guard,
        });
    }
    let unix_modules: Vec<&'static str> = unix_modules
        .into_iter()
        .map(|s| &*Box::leak(s.into_boxed_str()))
        .collect();
    let mut findings = Vec::new();
    for f in &files {
        let w = &f.walked;
        if !w.no_windows {
            findings.extend(unguarded(&w.file, &f.code, UNIX_ONLY, &f.win_guard));
            findings.extend(unguarded(&w.file, &f.code, &unix_modules, &f.win_guard));
        }
        if !w.no_unix {
            findings.extend(unguarded(&w.file, &f.code, WINDOWS_ONLY, &f.unix_guard));
        }
    }
    (findings, files.into_iter().map(|f| f.walked).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_predicates() {
        let off_windows = |p| eval(p, WINDOWS);
        assert_eq!(off_windows("unix"), Some(false));
        assert_eq!(off_windows(r#"target_os = "linux""#), Some(false));
        assert_eq!(
            off_windows(r#"all(unix, not(target_os = "linux"))"#),
            Some(false)
        );
        assert_eq!(
            off_windows(r#"any(target_os = "linux", target_os = "macos")"#),
            Some(false)
        );
        assert_eq!(off_windows("not(windows)"), Some(false));
        assert_eq!(off_windows(r#"all(test, unix)"#), Some(false));
        assert_eq!(off_windows("test"), None);
        assert_eq!(off_windows(r#"any(test, unix)"#), None);
        assert_eq!(off_windows("not(unix)"), Some(true));
        assert_eq!(off_windows(r#"feature = "node""#), None);
        assert_eq!(eval("windows", LINUX), Some(false));
        assert_eq!(eval(r#"not(target_os = "linux")"#, MACOS), Some(true));
    }

    #[test]
    fn comments_strings_and_chars_are_blanked() {
        let src = "let a = \"libc::x\"; // libc::y\nlet b = r#\"std::os::unix\"#; /* libc:: */ let c = '{'; fn f<'a>() {}";
        let code = code_only(src);
        assert_eq!(code.len(), src.len());
        assert!(
            !code.contains("libc") && !code.contains("std::os"),
            "{code}"
        );
        assert!(code.contains("fn f<'a>() {}"), "{code}");
    }

    /// The scan finds what it must, and only that.
    #[test]
    fn finds_unguarded_uses_only() {
        let src = r#"
use std::io;
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
#[cfg(unix)]
fn a() { unsafe { libc::getpid(); } }
fn b() {
    #[cfg(target_os = "linux")]
    let x = libc::EPERM;
    let y = libc::EPERM;
    if cfg!(unix) { std::os::unix::fs::symlink("a", "b"); }
}
enum S {
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
    Tcp(T),
}
fn c(s: S) {
    match s {
        #[cfg(unix)]
        S::Unix(s) => { let _ = s as UnixStream; }
        S::Tcp(_) => {}
    }
}
#[cfg(windows)]
fn w() { tokio::net::windows::named_pipe::ServerOptions::new(); }
fn w2() { let _: NamedPipeServer; }
"#;
        let code = code_only(src);
        let f = Path::new("x.rs");
        let unix = unguarded(f, &code, UNIX_ONLY, &guarded_ranges(&code, &[WINDOWS]));
        let lines: Vec<_> = unix.iter().map(|f| (f.line, f.pattern)).collect();
        assert_eq!(lines, vec![(11, "std::os::unix"), (10, "libc::")]);
        let win = unguarded(
            f,
            &code,
            WINDOWS_ONLY,
            &guarded_ranges(&code, &[LINUX, MACOS]),
        );
        let lines: Vec<_> = win.iter().map(|f| (f.line, f.pattern)).collect();
        assert_eq!(lines, vec![(27, "NamedPipeServer")]);
    }

    /// The crate itself: no Unix-only API where Windows compiles, no
    /// Windows-only API where Linux and macOS compile.
    #[test]
    fn every_target_sees_only_its_own_apis() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let roots = ["src/lib.rs", "src/bin/keymetrics-agent-daemon.rs"].map(|r| dir.join(r));
        let (findings, walked) = check_tree(&roots);
        assert!(
            findings.is_empty(),
            "OS-specific APIs outside a cfg that excludes the other OSes \
             (see src/portability.rs):\n{}",
            findings
                .iter()
                .map(|f| {
                    let file = f.file.strip_prefix(dir).unwrap_or(&f.file);
                    format!("  {}:{}: {}", file.display(), f.line, f.pattern)
                })
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The walk reached the whole tree, and knows what is Unix-only.
        let find = |rel: &str| {
            walked
                .iter()
                .find(|w| w.file == dir.join(rel))
                .unwrap_or_else(|| panic!("{rel} not walked"))
        };
        assert!(walked.len() > 80, "{} files", walked.len());
        for unix_only in ["src/host/rescue.rs", "src/socket/ipc.rs"] {
            assert!(find(unix_only).no_windows, "{unix_only}");
        }
        for everywhere in [
            "src/socket/endpoint.rs",
            "src/push/host.rs",
            "src/binding.rs",
        ] {
            let w = find(everywhere);
            assert!(!w.no_windows && !w.no_unix, "{everywhere}");
        }
        assert!(
            !find("src/push/host_sys.rs").no_unix,
            "compiled in Linux tests"
        );
    }
}
