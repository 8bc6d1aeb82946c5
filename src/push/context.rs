//! Source context for exceptions (`Utility.StackTraceParser` + the file
//! `Utility.Cache`): finds the first user frame of an error, reads that
//! source file and attaches `callsite` (`file:line`) and `context` (±4 lines
//! by default, `PM2_CONTEXT_ON_ERROR`, with a `>>` marker) to the error
//! object.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::js;

/// Lines shown before and after the failing line (`CONTEXT_ON_ERROR`).
pub const CONTEXT_ON_ERROR: usize = 4;
/// Cached files live this long from insertion (JS: ttl 60*30 s, not
/// refreshed on hit).
pub const SOURCE_CACHE_TTL: Duration = Duration::from_secs(1800);
/// Files kept in the cache at once.
pub const SOURCE_CACHE_MAX_ENTRIES: usize = 100;
/// Larger "source" files are not read (an error pointing into a bundle or a
/// data file must not make the agent load it): no context for them.
pub const SOURCE_MAX_FILE_BYTES: u64 = 2 * 1024 * 1024;

const NO_CONTEXT: &str = "cannot retrieve source context";

/// Reads a source file for the cache; `None` when it cannot (missing,
/// unreadable, larger than `max_bytes`). Injectable so tests and other
/// platforms can supply files.
pub trait SourceReader: Send + Sync {
    fn read(&self, path: &Path, max_bytes: u64) -> Option<Vec<u8>>;
}

/// The real file system; relative paths resolve against the agent's cwd,
/// like `path.resolve(key)`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsSourceReader;

impl SourceReader for FsSourceReader {
    fn read(&self, path: &Path, max_bytes: u64) -> Option<Vec<u8>> {
        use std::io::Read;
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() || meta.len() > max_bytes {
            tracing::debug!(path = %path.display(), size = meta.len(), "source file not read for error context");
            return None;
        }
        let mut buf = Vec::with_capacity(meta.len() as usize);
        // `take` guards against a file that grew since the metadata call.
        std::fs::File::open(path)
            .ok()?
            .take(max_bytes + 1)
            .read_to_end(&mut buf)
            .ok()?;
        if buf.len() as u64 > max_bytes {
            return None;
        }
        Some(buf)
    }
}

/// Source lines per file name, expiring `ttl` after insertion, at most
/// `max_entries` files. Failures are not cached (retried next time), as in JS.
pub struct SourceCache {
    reader: Box<dyn SourceReader>,
    entries: HashMap<String, (Instant, Arc<Vec<String>>)>,
    ttl: Duration,
    max_entries: usize,
    max_file_bytes: u64,
}

impl SourceCache {
    pub fn new(reader: Box<dyn SourceReader>) -> Self {
        Self::with_limits(
            reader,
            SOURCE_CACHE_TTL,
            SOURCE_CACHE_MAX_ENTRIES,
            SOURCE_MAX_FILE_BYTES,
        )
    }

    pub fn with_limits(
        reader: Box<dyn SourceReader>,
        ttl: Duration,
        max_entries: usize,
        max_file_bytes: u64,
    ) -> Self {
        SourceCache {
            reader,
            entries: HashMap::new(),
            ttl,
            max_entries: max_entries.max(1),
            max_file_bytes,
        }
    }

    /// The file's lines (`toString().split(/\r?\n/)`), from cache or disk.
    pub fn get(&mut self, file: &str) -> Option<Arc<Vec<String>>> {
        self.get_at(file, Instant::now())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn get_at(&mut self, file: &str, now: Instant) -> Option<Arc<Vec<String>>> {
        if file.is_empty() {
            return None;
        }
        if let Some((at, lines)) = self.entries.get(file) {
            if now.saturating_duration_since(*at) < self.ttl {
                return Some(lines.clone());
            }
            self.entries.remove(file);
        }
        let bytes = self.reader.read(Path::new(file), self.max_file_bytes)?;
        let lines = Arc::new(split_lines(&String::from_utf8_lossy(&bytes)));
        self.insert(file, now, lines.clone());
        Some(lines)
    }

    fn insert(&mut self, file: &str, now: Instant, lines: Arc<Vec<String>>) {
        if self.entries.len() >= self.max_entries {
            let ttl = self.ttl;
            self.entries
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
        }
        if self.entries.len() >= self.max_entries {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(file.to_owned(), (now, lines));
    }
}

/// `split(/\r?\n/)`.
fn split_lines(text: &str) -> Vec<String> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_owned())
        .collect()
}

/// What `StackTraceParser.parse` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Callsite {
    pub callsite: String,
    pub context: String,
}

/// `StackTraceParser`: the cache plus the context size.
pub struct StackContext {
    cache: SourceCache,
    context_lines: usize,
}

impl StackContext {
    pub fn new(cache: SourceCache) -> Self {
        StackContext {
            cache,
            context_lines: CONTEXT_ON_ERROR,
        }
    }

    /// Shows `lines` lines before and after the failing one
    /// (`CONTEXT_ON_ERROR`, default [`CONTEXT_ON_ERROR`]).
    pub fn with_context_lines(mut self, lines: usize) -> Self {
        self.context_lines = lines;
        self
    }

    /// Reads real files (the production setup).
    pub fn from_fs() -> Self {
        Self::new(SourceCache::new(Box::new(FsSourceReader)))
    }

    pub fn cache(&self) -> &SourceCache {
        &self.cache
    }

    /// `attachContext(error)`: non-objects are left alone.
    pub fn attach_context(&mut self, error: &mut Value) {
        let Some(err) = error.as_object_mut() else {
            return;
        };
        // (a) pmx-provided frames; `typeof null === 'object'` counts too.
        if let Some(frames) = err
            .get("stackframes")
            .filter(|v| v.is_object() || v.is_array() || v.is_null())
        {
            let found = match frames {
                Value::Array(list) => self.parse(list.iter().map(Frame::from_value)),
                _ => None,
            };
            err.shift_remove("stackframes");
            err.shift_remove("__error_callsites");
            if let Some(found) = found {
                set_callsite(err, found);
            }
        }
        // (b) the stack string, unless (a) or the app already set a callsite.
        if let Some(stack) = err.get("stack").and_then(Value::as_str) {
            if !js::truthy(err.get("callsite")) {
                let frames: Vec<Frame> = stack_paths(stack)
                    .into_iter()
                    .map(Frame::from_stack_path)
                    .collect();
                if let Some(found) = self.parse(frames.into_iter()) {
                    set_callsite(err, found);
                }
            }
        }
    }

    /// `StackTraceParser.parse(frames)` over a list of frame objects (the
    /// `stack_frame` of a span's `stacktrace` label): the first user frame's
    /// callsite and source context.
    pub fn parse_frames(&mut self, frames: &[Value]) -> Option<Callsite> {
        self.parse(frames.iter().map(Frame::from_value))
    }

    /// `parse(frames)`: the first user-land frame with a file and line.
    fn parse(&mut self, frames: impl Iterator<Item = Frame>) -> Option<Callsite> {
        for frame in frames {
            let Frame::Site {
                file_name,
                line,
                line_text,
            } = frame
            else {
                continue;
            };
            let user = is_absolute(&file_name) || file_name.starts_with('.');
            if !user || file_name.contains("node_modules") || file_name.contains("vxx") {
                continue;
            }
            let context = self
                .cache
                .get(&file_name)
                .and_then(|lines| render_context(&lines, line, self.context_lines));
            return Some(Callsite {
                context: context.unwrap_or_else(|| NO_CONTEXT.to_owned()),
                callsite: format!("{file_name}:{line_text}"),
            });
        }
        None
    }
}

fn set_callsite(err: &mut Map<String, Value>, found: Callsite) {
    err.insert("callsite".into(), Value::String(found.callsite));
    err.insert("context".into(), Value::String(found.context));
}

/// pre-context, the marked line, post-context, joined by `\n`; `None` when
/// no line of the file falls in the window (an empty line still counts).
fn render_context(lines: &[String], line: usize, c: usize) -> Option<String> {
    let tabs = |s: &str| s.replace('\t', "  ");
    let mut source: Vec<String> = Vec::new();
    if !lines.is_empty() {
        let start = line.saturating_sub(c + 1).min(lines.len());
        let end = (line - 1).min(lines.len());
        source.extend(lines[start.min(end)..end].iter().map(|l| tabs(l)));
        if let Some(l) = lines.get(line - 1).filter(|l| !l.is_empty()) {
            source.push(tabs(l).replacen("  ", ">>", 1));
        }
        let post_end = line.saturating_add(c).min(lines.len());
        let post_start = line.min(post_end);
        source.extend(lines[post_start..post_end].iter().map(|l| tabs(l)));
    }
    (!source.is_empty()).then(|| source.join("\n"))
}

/// One entry of a frame list, reduced to what `parse` looks at.
enum Frame {
    /// An object with a string `file_name` and a positive integer
    /// `line_number`; `line_text` is how JS prints that line number.
    Site {
        file_name: String,
        line: usize,
        line_text: String,
    },
    /// Anything `parse` skips.
    Other,
}

impl Frame {
    fn from_value(v: &Value) -> Frame {
        let Some(o) = v.as_object() else {
            return Frame::Other;
        };
        // A non-string truthy file_name would crash JS (`charAt`); skipped.
        let Some(file_name) = o
            .get("file_name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Frame::Other;
        };
        let Some(raw) = o.get("line_number").filter(|v| js::truthy(Some(v))) else {
            return Frame::Other;
        };
        // JS does arithmetic on whatever it gets (a string line number even
        // concatenates); only well-formed positive integers are used here.
        let n = js::to_number(Some(raw));
        if !(n >= 1.0 && n.fract() == 0.0 && n <= 1e9) {
            return Frame::Other;
        }
        Frame::Site {
            file_name: file_name.to_owned(),
            line: n as usize,
            line_text: js::to_js_string(raw),
        }
    }

    /// One regex match of the stack: `path:line:col` (≥ 3 `:`-parts) becomes
    /// a frame with `parseInt(line)`, anything else is skipped.
    fn from_stack_path(site: String) -> Frame {
        let site = site.strip_suffix(')').unwrap_or(&site);
        let parts: Vec<&str> = site.split(':').collect();
        if parts.len() < 3 {
            return Frame::Other;
        }
        let n = js::parse_int_auto(parts[1]);
        Frame::from_value(
            &serde_json::json!({ "file_name": parts[0], "line_number": js::js_number(n) }),
        )
    }
}

/// Every match of `/(\/[^\\\n]*)/g`: from a `/` up to the next backslash or
/// newline.
fn stack_paths(stack: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = stack;
    while let Some(start) = rest.find('/') {
        let tail = &rest[start..];
        let end = tail.find(['\\', '\n']).unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

fn is_absolute(path: &str) -> bool {
    if cfg!(windows) {
        is_absolute_win32(path)
    } else {
        path.starts_with('/')
    }
}

/// Node's win32 `isAbsolute` via `splitDeviceRe`: a drive (`C:`) or UNC
/// device (`\\server\share`), then an optional separator; absolute when the
/// separator is there or the device is UNC.
fn is_absolute_win32(path: &str) -> bool {
    let sep = |c: char| c == '\\' || c == '/';
    let b: Vec<char> = path.chars().collect();
    // Drive letter device.
    if b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == ':' {
        return b.get(2).is_some_and(|c| sep(*c));
    }
    // UNC device: two separators, a non-separator run, separators, a non-separator run.
    if b.len() >= 2 && sep(b[0]) && sep(b[1]) {
        let mut i = 2;
        let server = b[i..].iter().take_while(|c| !sep(**c)).count();
        i += server;
        let seps = b[i..].iter().take_while(|c| sep(**c)).count();
        i += seps;
        let share = b[i..].iter().take_while(|c| !sep(**c)).count();
        if server > 0 && seps > 0 && share > 0 {
            return true;
        }
    }
    b.first().is_some_and(|c| sep(*c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// In-memory files, counting reads.
    #[derive(Default)]
    struct MemReader {
        files: Mutex<HashMap<String, Vec<u8>>>,
        reads: Arc<AtomicUsize>,
    }

    impl MemReader {
        fn with(files: &[(&str, &str)]) -> (Self, Arc<AtomicUsize>) {
            let r = MemReader::default();
            for (k, v) in files {
                r.files
                    .lock()
                    .unwrap()
                    .insert((*k).into(), v.as_bytes().to_vec());
            }
            let reads = r.reads.clone();
            (r, reads)
        }
    }

    impl SourceReader for MemReader {
        fn read(&self, path: &Path, max_bytes: u64) -> Option<Vec<u8>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            let f = self.files.lock().unwrap().get(path.to_str()?).cloned()?;
            (f.len() as u64 <= max_bytes).then_some(f)
        }
    }

    const SRC: &str = "l1\nl2\r\nl3\n\tl4\nl5\n\tthrow new Error('x')\nl7\nl8\n\tl9\nl10\nl11\n";

    fn ctx(files: &[(&str, &str)]) -> (StackContext, Arc<AtomicUsize>) {
        let (r, reads) = MemReader::with(files);
        (StackContext::new(SourceCache::new(Box::new(r))), reads)
    }

    #[test]
    fn stackframes_give_callsite_and_marked_context() {
        let (mut c, _) = ctx(&[("/app/index.js", SRC)]);
        let mut err = json!({
            "message": "x",
            "stackframes": [
                {"file_name": "node:internal/x", "line_number": 3},
                {"file_name": "/app/node_modules/lib.js", "line_number": 3},
                null,
                {"file_name": "/app/index.js", "line_number": 6}
            ],
            "__error_callsites": [1],
            "stack": "Error: x\n    at /other/file.js:1:1"
        });
        c.attach_context(&mut err);
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"message":"x","stack":"Error: x\n    at /other/file.js:1:1","callsite":"/app/index.js:6","context":"l2\nl3\n  l4\nl5\n>>throw new Error('x')\nl7\nl8\n  l9\nl10"}"#
        );
    }

    #[test]
    fn stack_string_path_and_edges_of_file() {
        let (mut c, _) = ctx(&[("/app/index.js", SRC)]);
        let mut err = json!({"stack": "Error: boom\n    at Object.<anonymous> (/app/index.js:2:7)\n    at Module._compile (node:internal/modules/cjs/loader:1364:14)"});
        c.attach_context(&mut err);
        assert_eq!(err["callsite"], json!("/app/index.js:2"));
        // Line 2 has no indentation, so no ">>" marker (JS replaces the first two spaces only).
        assert_eq!(
            err["context"],
            json!("l1\nl2\nl3\n  l4\nl5\n  throw new Error('x')")
        );

        let mut last = json!({"stack": "at /app/index.js:12:1"});
        c.attach_context(&mut last);
        // Line 12 is the empty string after the final newline: not shown.
        assert_eq!(last["context"], json!("l8\n  l9\nl10\nl11"));
    }

    #[test]
    fn missing_or_oversized_file_gives_the_fallback_text() {
        let big = "x\n".repeat(2 * 1024 * 1024);
        let (mut c, reads) = ctx(&[("/app/big.js", &big)]);
        let mut err = json!({"stack": "at /app/missing.js:3:1"});
        c.attach_context(&mut err);
        assert_eq!(err["callsite"], json!("/app/missing.js:3"));
        assert_eq!(err["context"], json!("cannot retrieve source context"));
        let mut err = json!({"stack": "at /app/big.js:3:1"});
        c.attach_context(&mut err);
        assert_eq!(err["context"], json!("cannot retrieve source context"));
        // Failures are not cached: retried next time.
        let mut err = json!({"stack": "at /app/missing.js:3:1"});
        c.attach_context(&mut err);
        assert_eq!(reads.load(Ordering::SeqCst), 3);
        assert!(c.cache().is_empty());
    }

    #[test]
    fn no_user_frame_leaves_the_error_alone_but_strips_frames() {
        let (mut c, _) = ctx(&[]);
        let mut err = json!({"a": 1, "stackframes": {"x": 1}, "__error_callsites": 2, "b": 2});
        c.attach_context(&mut err);
        assert_eq!(serde_json::to_string(&err).unwrap(), r#"{"a":1,"b":2}"#);
        let mut err = json!({"stackframes": null, "stack": "C:\\app\\x.js:1:1\nrelative.js:1:1\n/x.js:1\n/vxx/a.js:1:1"});
        c.attach_context(&mut err);
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"stack":"C:\\app\\x.js:1:1\nrelative.js:1:1\n/x.js:1\n/vxx/a.js:1:1"}"#
        );
        // A string `stackframes` is not an object: kept.
        let mut err = json!({"stackframes": "s"});
        c.attach_context(&mut err);
        assert_eq!(err, json!({"stackframes": "s"}));
    }

    #[test]
    fn existing_truthy_callsite_skips_the_stack_path() {
        let (mut c, reads) = ctx(&[("/app/index.js", SRC)]);
        let mut err = json!({"callsite": "mine", "stack": "at /app/index.js:2:1"});
        c.attach_context(&mut err);
        assert_eq!(
            err,
            json!({"callsite": "mine", "stack": "at /app/index.js:2:1"})
        );
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn relative_dot_paths_and_odd_frames() {
        let (mut c, _) = ctx(&[("./rel.js", "a\n\tb\n")]);
        let mut err = json!({"stackframes": [
            {"file_name": 5, "line_number": 1},
            {"file_name": "/x.js", "line_number": 0},
            {"file_name": "/x.js", "line_number": -2},
            {"file_name": "/x.js", "line_number": 1.5},
            {"file_name": "/x.js", "line_number": {}},
            {"file_name": "./rel.js", "line_number": "2"}
        ]});
        c.attach_context(&mut err);
        // The empty string after the final newline is a post-context line.
        assert_eq!(
            err,
            json!({"callsite": "./rel.js:2", "context": "a\n>>b\n"})
        );
    }

    #[test]
    fn non_object_errors_are_ignored() {
        let (mut c, _) = ctx(&[]);
        for mut v in [json!(null), json!("boom"), json!(3), json!([1])] {
            let before = v.clone();
            c.attach_context(&mut v);
            assert_eq!(v, before);
        }
    }

    #[test]
    fn cache_hits_expire_and_stay_bounded() {
        let files: Vec<(String, String)> = (0..5)
            .map(|i| (format!("/f{i}.js"), format!("line{i}")))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let (r, reads) = MemReader::with(&refs);
        let mut cache = SourceCache::with_limits(Box::new(r), Duration::from_secs(1800), 3, 1024);
        let t0 = Instant::now();
        assert_eq!(cache.get_at("/f0.js", t0).unwrap().as_slice(), ["line0"]);
        cache.get_at("/f0.js", t0 + Duration::from_secs(10));
        assert_eq!(reads.load(Ordering::SeqCst), 1, "second get is a hit");
        // TTL counts from insertion, not from the last hit.
        cache.get_at("/f0.js", t0 + Duration::from_secs(1800));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        for (i, (name, _)) in files.iter().enumerate() {
            cache.get_at(name, t0 + Duration::from_secs(1801 + i as u64));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get_at("", t0).is_none());
    }

    #[test]
    fn stack_path_scanner_matches_the_js_regex() {
        assert_eq!(
            stack_paths("Error: a/b\n at f (/x/y.js:1:2)\n at /z.js:3:4\\q/r"),
            ["/b", "/x/y.js:1:2)", "/z.js:3:4", "/r"]
        );
        assert!(stack_paths("no slash here").is_empty());
    }

    #[test]
    fn win32_absolute_paths() {
        assert!(is_absolute_win32("C:\\app\\x.js"));
        assert!(is_absolute_win32("c:/app"));
        assert!(!is_absolute_win32("C:app"));
        assert!(is_absolute_win32("\\\\server\\share"));
        assert!(is_absolute_win32("\\app"));
        assert!(!is_absolute_win32("app\\x.js"));
        assert!(!is_absolute_win32(""));
    }

    #[test]
    fn reads_a_real_temp_file() {
        let dir = std::env::temp_dir().join(format!("kma-ctx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("app.js");
        std::fs::write(&file, SRC).unwrap();
        let mut c = StackContext::from_fs();
        let mut err = json!({"stack": format!("Error: x\n    at main ({}:6:3)", file.display())});
        c.attach_context(&mut err);
        assert_eq!(err["callsite"], json!(format!("{}:6", file.display())));
        assert!(err["context"]
            .as_str()
            .unwrap()
            .contains(">>throw new Error('x')"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
