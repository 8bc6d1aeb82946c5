//! RFC 6902 diffs for the `status:patch` channel (docs/protocols.md §7.3).
//!
//! [`compare`] is a port of fast-json-patch 3.1.1 `compare(old, new)`
//! (`_generate` in `commonjs/duplex.js`). The backend applies whatever we send,
//! so any correct patch would work, but emitting the *same* ops in the *same*
//! order as the JS agent keeps captures, fixtures and backend logs comparable.
//! The walk is:
//! * objects: old keys from last to first — `remove` when absent from new,
//!   recurse when both values are objects or both arrays, `replace` when the
//!   values differ otherwise; then, only if something was removed or the key
//!   counts differ, `add` for every new key missing from old, in new-key order;
//! * arrays: the same walk with the indices as keys (no `move`/`copy`), so a
//!   shrinking array yields `remove`s from the highest index down;
//! * keys are enumerated like JS `Object.keys`: integer-like keys first in
//!   ascending order, then the others in insertion order.
//!
//! [`apply`] implements the three ops [`compare`] emits; the agent itself
//! never applies patches, it exists to check [`compare`] (tests, benchmarks).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One RFC 6902 operation. Serialises as `{"op":…,"path":…,"value":…}` in
/// that key order, like fast-json-patch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
}

/// Why [`apply`] rejected an operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    #[error("invalid JSON pointer {0:?}")]
    InvalidPointer(String),
    #[error("path {0:?} does not exist")]
    NoSuchPath(String),
    #[error("bad array index in {0:?}")]
    BadIndex(String),
}

/// The ops that turn `old` into `new`, in fast-json-patch's order.
///
/// Deliberate deviation: when the two *roots* are not both objects or both
/// arrays, fast-json-patch emits one `replace ""` per old key plus stray
/// `add`s (and nothing at all for two different primitives), which does not
/// reproduce `new`; we emit a single `replace ""`. Status payloads are always
/// objects, so the wire output is unaffected.
pub fn compare(old: &Value, new: &Value) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut path = String::new();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => diff_objects(a, b, &mut path, &mut ops),
        (Value::Array(a), Value::Array(b)) => diff_arrays(a, b, &mut path, &mut ops),
        _ if !js_strict_eq(old, new) => ops.push(Op::Replace {
            path,
            value: new.clone(),
        }),
        _ => {}
    }
    ops
}

fn diff_objects(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    path: &mut String,
    ops: &mut Vec<Op>,
) {
    // Fast path, the usual case from one status to the next: the same keys
    // in the same order, none array-index-like (so `Object.keys` order is
    // insertion order). The walk below would visit the same pairs in the
    // same order, with two hash lookups and a key list per object.
    if same_plain_keys(old, new) {
        for ((key, old_val), (_, new_val)) in old.iter().zip(new.iter()).rev() {
            diff_values(old_val, new_val, Key::Name(key), path, ops);
        }
        return;
    }
    let mut deleted = false;
    for key in js_keys(old).into_iter().rev() {
        let old_val = &old[key];
        match new.get(key) {
            Some(new_val) => diff_values(old_val, new_val, Key::Name(key), path, ops),
            None => {
                ops.push(Op::Remove {
                    path: child(path, Key::Name(key)),
                });
                deleted = true;
            }
        }
    }
    // Same count and nothing removed means the same key set: no adds.
    if !deleted && new.len() == old.len() {
        return;
    }
    for key in js_keys(new) {
        if !old.contains_key(key) {
            ops.push(Op::Add {
                path: child(path, Key::Name(key)),
                value: new[key].clone(),
            });
        }
    }
}

fn diff_arrays(old: &[Value], new: &[Value], path: &mut String, ops: &mut Vec<Op>) {
    let mut deleted = false;
    for (i, old_val) in old.iter().enumerate().rev() {
        match new.get(i) {
            Some(new_val) => diff_values(old_val, new_val, Key::Index(i), path, ops),
            None => {
                ops.push(Op::Remove {
                    path: child(path, Key::Index(i)),
                });
                deleted = true;
            }
        }
    }
    if !deleted && new.len() == old.len() {
        return;
    }
    for (i, value) in new.iter().enumerate().skip(old.len()) {
        ops.push(Op::Add {
            path: child(path, Key::Index(i)),
            value: value.clone(),
        });
    }
}

/// True when `old` and `new` have the same keys in the same order and none
/// of them is array-index-like.
fn same_plain_keys(old: &Map<String, Value>, new: &Map<String, Value>) -> bool {
    old.len() == new.len()
        && old
            .keys()
            .zip(new.keys())
            .all(|(a, b)| a == b && array_index(a).is_none())
}

/// A path segment: an object key, or an array index (formatted only when
/// a path is actually built).
#[derive(Clone, Copy)]
enum Key<'a> {
    Name(&'a str),
    Index(usize),
}

fn diff_values(old: &Value, new: &Value, key: Key<'_>, path: &mut String, ops: &mut Vec<Op>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let len = push_segment(path, key);
            diff_objects(a, b, path, ops);
            path.truncate(len);
        }
        (Value::Array(a), Value::Array(b)) => {
            let len = push_segment(path, key);
            diff_arrays(a, b, path, ops);
            path.truncate(len);
        }
        _ if !js_strict_eq(old, new) => ops.push(Op::Replace {
            path: child(path, key),
            value: new.clone(),
        }),
        _ => {}
    }
}

/// JS `===` on two values of which at most one is a container: containers
/// from two different trees are never identical.
fn js_strict_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Number(x), Value::Number(y)) => {
            // JS has one number type: 1 and 1.0 are the same value. Integers
            // are compared exactly so that two distinct u64 beyond 2^53 still
            // produce a replace (harmless extra op, never a lost update).
            if x.is_f64() || y.is_f64() {
                x.as_f64() == y.as_f64()
            } else {
                x == y
            }
        }
        _ => false,
    }
}

/// Keys in JS `Object.keys` order: array-index-like keys ("0", "17", not
/// "01", below 2^32 - 1) ascending, then the rest in insertion order.
fn js_keys(map: &Map<String, Value>) -> Vec<&str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    if keys.iter().any(|k| array_index(k).is_some()) {
        // Stable sort: non-index keys keep their insertion order.
        keys.sort_by_key(|k| match array_index(k) {
            Some(i) => (0, i),
            None => (1, 0),
        });
    }
    keys
}

fn array_index(key: &str) -> Option<u32> {
    let canonical = key == "0"
        || (!key.is_empty() && !key.starts_with('0') && key.bytes().all(|b| b.is_ascii_digit()));
    if !canonical {
        return None;
    }
    key.parse::<u32>().ok().filter(|&i| i != u32::MAX)
}

fn push_segment(path: &mut String, key: Key<'_>) -> usize {
    let len = path.len();
    path.push('/');
    let key = match key {
        Key::Name(k) => k,
        Key::Index(i) => {
            use std::fmt::Write;
            let _ = write!(path, "{i}");
            return len;
        }
    };
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
    len
}

fn child(path: &str, key: Key<'_>) -> String {
    let mut p = path.to_owned();
    push_segment(&mut p, key);
    p
}

/// Applies `ops` to `doc` in order. On error `doc` may hold the ops before
/// the failing one.
pub fn apply(doc: &mut Value, ops: &[Op]) -> Result<(), PatchError> {
    for op in ops {
        match op {
            Op::Add { path, value } => add(doc, path, value.clone())?,
            Op::Remove { path } => {
                remove(doc, path)?;
            }
            Op::Replace { path, value } => {
                *pointer_mut(doc, path)? = value.clone();
            }
        }
    }
    Ok(())
}

fn parse_pointer(path: &str) -> Result<Vec<String>, PatchError> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| PatchError::InvalidPointer(path.to_owned()))?;
    // RFC 6901: `~1` before `~0`, so that `~01` becomes `~1`, not `/`.
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn pointer_mut<'a>(doc: &'a mut Value, path: &str) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for token in parse_pointer(path)? {
        cur = match cur {
            Value::Object(m) => m.get_mut(&token),
            Value::Array(a) => index(&token, a.len(), path).ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::NoSuchPath(path.to_owned()))?;
    }
    Ok(cur)
}

/// Splits `path` into (parent, last token); `None` for the root.
fn parent_and_last<'a>(
    doc: &'a mut Value,
    path: &str,
) -> Result<Option<(&'a mut Value, String)>, PatchError> {
    let mut tokens = parse_pointer(path)?;
    let Some(last) = tokens.pop() else {
        return Ok(None);
    };
    let mut cur = doc;
    for token in tokens {
        cur = match cur {
            Value::Object(m) => m.get_mut(&token),
            Value::Array(a) => index(&token, a.len(), path).ok().and_then(|i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| PatchError::NoSuchPath(path.to_owned()))?;
    }
    Ok(Some((cur, last)))
}

fn index(token: &str, len: usize, path: &str) -> Result<usize, PatchError> {
    let bad = || PatchError::BadIndex(path.to_owned());
    if token.is_empty()
        || (token.len() > 1 && token.starts_with('0'))
        || !token.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let i: usize = token.parse().map_err(|_| bad())?;
    if i >= len {
        return Err(bad());
    }
    Ok(i)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let Some((parent, last)) = parent_and_last(doc, path)? else {
        *doc = value;
        return Ok(());
    };
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
            Ok(())
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                index(&last, a.len() + 1, path)?
            };
            a.insert(i, value);
            Ok(())
        }
        _ => Err(PatchError::NoSuchPath(path.to_owned())),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let Some((parent, last)) = parent_and_last(doc, path)? else {
        return Ok(std::mem::take(doc));
    };
    match parent {
        // shift_remove keeps the other keys' order (plain remove swaps).
        Value::Object(m) => m
            .shift_remove(&last)
            .ok_or_else(|| PatchError::NoSuchPath(path.to_owned())),
        Value::Array(a) => {
            let i = index(&last, a.len(), path)?;
            Ok(a.remove(i))
        }
        _ => Err(PatchError::NoSuchPath(path.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ops_json(ops: &[Op]) -> String {
        serde_json::to_string(ops).unwrap()
    }

    #[test]
    fn captured_status_sequence() {
        // docs/protocols.md §7.3: full → patch → [] → replace+add.
        let s = |cpu: u64| json!({"data": {"process": [{"pm_id": 0, "cpu": cpu}], "server": {}}, "server_name": "m1"});
        let s1 = s(1);
        let s2 = s(2);
        let s3 = s(2);
        let mut s4 = s(3);
        s4["internal_ip"] = json!("10.0.0.2");
        assert_eq!(
            ops_json(&compare(&s1, &s2)),
            r#"[{"op":"replace","path":"/data/process/0/cpu","value":2}]"#
        );
        assert_eq!(ops_json(&compare(&s2, &s3)), "[]");
        assert_eq!(
            ops_json(&compare(&s3, &s4)),
            r#"[{"op":"replace","path":"/data/process/0/cpu","value":3},{"op":"add","path":"/internal_ip","value":"10.0.0.2"}]"#
        );
    }

    #[test]
    fn documented_array_example() {
        let ops = compare(
            &json!({"p": [{"n": "a"}, {"n": "b"}]}),
            &json!({"p": [{"n": "b"}]}),
        );
        assert_eq!(
            ops_json(&ops),
            r#"[{"op":"remove","path":"/p/1"},{"op":"replace","path":"/p/0/n","value":"b"}]"#
        );
    }

    #[test]
    fn roots_of_different_kinds_are_one_replace() {
        for (a, b) in [
            (json!({"a": 1}), json!([1])),
            (json!([1]), json!({})),
            (json!(1), json!("1")),
            (json!(null), json!({})),
        ] {
            let ops = compare(&a, &b);
            assert_eq!(
                ops,
                vec![Op::Replace {
                    path: String::new(),
                    value: b.clone()
                }]
            );
            let mut doc = a.clone();
            apply(&mut doc, &ops).unwrap();
            assert_eq!(doc, b);
        }
        assert!(compare(&json!(1), &json!(1.0)).is_empty());
        assert!(compare(&json!("x"), &json!("x")).is_empty());
    }

    #[test]
    fn js_key_order() {
        let m = json!({"b": 1, "10": 2, "2": 3, "a": 4, "01": 5, "4294967295": 6, "4294967294": 7});
        let keys = js_keys(m.as_object().unwrap());
        assert_eq!(
            keys,
            ["2", "10", "4294967294", "b", "a", "01", "4294967295"]
        );
    }

    /// The same-keys fast path and the general walk emit the same ops in
    /// the same order: last key first, index-like keys in JS order.
    #[test]
    fn same_keys_reordered_or_index_like_follow_js_order() {
        let same = compare(
            &json!({"a": 1, "b": {"c": 1, "d": 1}, "e": 1}),
            &json!({"a": 2, "b": {"c": 2, "d": 1}, "e": 2}),
        );
        assert_eq!(
            ops_json(&same),
            r#"[{"op":"replace","path":"/e","value":2},{"op":"replace","path":"/b/c","value":2},{"op":"replace","path":"/a","value":2}]"#
        );
        // Reordered keys: old's order decides, like Object.keys(old).
        let reordered = compare(&json!({"a": 1, "b": 1}), &json!({"b": 2, "a": 2}));
        assert_eq!(
            ops_json(&reordered),
            r#"[{"op":"replace","path":"/b","value":2},{"op":"replace","path":"/a","value":2}]"#
        );
        // Index-like keys come first in ascending order, so last here.
        let indexed = compare(
            &json!({"b": 1, "10": 1, "2": 1}),
            &json!({"b": 2, "10": 2, "2": 2}),
        );
        assert_eq!(
            ops_json(&indexed),
            r#"[{"op":"replace","path":"/b","value":2},{"op":"replace","path":"/10","value":2},{"op":"replace","path":"/2","value":2}]"#
        );
    }

    #[test]
    fn escaping() {
        let ops = compare(&json!({}), &json!({"a/b~c": 1}));
        assert_eq!(
            ops_json(&ops),
            r#"[{"op":"add","path":"/a~1b~0c","value":1}]"#
        );
        let mut doc = json!({});
        apply(&mut doc, &ops).unwrap();
        assert_eq!(doc, json!({"a/b~c": 1}));
    }

    #[test]
    fn apply_rejects_bad_ops() {
        let mut doc = json!({"a": [1, 2]});
        let add = |path: &str| Op::Add {
            path: path.into(),
            value: json!(0),
        };
        assert_eq!(
            apply(&mut doc, &[add("a")]),
            Err(PatchError::InvalidPointer("a".into()))
        );
        assert_eq!(
            apply(&mut doc, &[add("/x/y")]),
            Err(PatchError::NoSuchPath("/x/y".into()))
        );
        assert_eq!(
            apply(&mut doc, &[add("/a/3")]),
            Err(PatchError::BadIndex("/a/3".into()))
        );
        assert_eq!(
            apply(&mut doc, &[add("/a/01")]),
            Err(PatchError::BadIndex("/a/01".into()))
        );
        assert_eq!(
            apply(&mut doc, &[Op::Remove { path: "/b".into() }]),
            Err(PatchError::NoSuchPath("/b".into()))
        );
        assert_eq!(
            apply(
                &mut doc,
                &[Op::Replace {
                    path: "/a/2".into(),
                    value: json!(1)
                }]
            ),
            Err(PatchError::NoSuchPath("/a/2".into()))
        );
        assert_eq!(
            apply(&mut doc, &[add("/a/1/x")]),
            Err(PatchError::NoSuchPath("/a/1/x".into()))
        );
        apply(&mut doc, &[add("/a/-"), add("/a/0")]).unwrap();
        assert_eq!(doc, json!({"a": [0, 1, 2, 0]}));
    }

    /// Op lists byte-identical to the real fast-json-patch 3.1.1, generated by
    /// fixtures/gen_json_patch.js.
    #[test]
    fn matches_fast_json_patch_fixture() {
        let fixture: Vec<Value> =
            serde_json::from_str(include_str!("fixtures/json_patch_compare.json")).unwrap();
        assert!(fixture.len() >= 10);
        for case in fixture {
            let name = case["name"].as_str().unwrap();
            let old: Value = serde_json::from_str(case["old"].as_str().unwrap()).unwrap();
            let new: Value = serde_json::from_str(case["new"].as_str().unwrap()).unwrap();
            let ops = compare(&old, &new);
            assert_eq!(
                ops_json(&ops),
                case["patch"].as_str().unwrap(),
                "case {name:?}"
            );
            let mut doc = old.clone();
            apply(&mut doc, &ops).unwrap();
            assert_eq!(doc, new, "case {name:?}");
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        // A small key alphabet so that old and new share keys, including
        // escaped and integer-like ones.
        let key = prop::sample::select(vec![
            "a", "b", "c", "0", "1", "10", "01", "a/b", "~", "~1", "",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3i64..3).prop_map(Value::from),
            (-3i64..3).prop_map(|i| Value::from(i as f64 + 0.5)),
            prop::sample::select(vec!["", "x", "y"]).prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn apply_compare_roundtrip(old in arb_json(), new in arb_json()) {
            let ops = compare(&old, &new);
            let mut doc = old.clone();
            apply(&mut doc, &ops).unwrap();
            prop_assert_eq!(&doc, &new);
            prop_assert!(compare(&new, &new).is_empty());
        }
    }
}
