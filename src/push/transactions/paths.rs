//! Route keys: which request paths are "the same route" (`matchPath` and
//! `isIdentifier` of the JS aggregator), and JS object key order.

/// `isIdentifier(segment)`: could this path segment be an id?
///
/// The JS tests four regexes anywhere in the string: a UUID, `\d+`,
/// digits-next-to-letters, and an alphanumeric run next to one of `@-_.`.
/// The UUID patterns contain a mandatory `1` or `4` and the third needs a
/// digit too, so all three reduce to "contains an ASCII digit"; the fourth
/// to "an ASCII alphanumeric is adjacent to one of `@-_.`".
pub fn is_identifier(segment: &str) -> bool {
    let b = segment.as_bytes();
    if b.iter().any(u8::is_ascii_digit) {
        return true;
    }
    let sep = |c: u8| matches!(c, b'@' | b'-' | b'_' | b'.');
    b.windows(2).any(|w| {
        (w[0].is_ascii_alphanumeric() && sep(w[1])) || (sep(w[0]) && w[1].is_ascii_alphanumeric())
    })
}

/// The route key of a `http/path` label: without its leading `/` (except
/// for `/` itself) and without trailing `/`s.
///
/// JS only stripped the trailing slash while matching, and stored the route
/// under the unstripped path, so every trace of `/users/` created the route
/// anew, overwriting the previous one. One key for both spellings fixes that.
pub fn route_key(path: &str) -> String {
    let mut p = path;
    if p != "/" {
        p = p.strip_prefix('/').unwrap_or(p);
    }
    while p.len() > 1 {
        match p.strip_suffix('/') {
            Some(rest) => p = rest,
            None => break,
        }
    }
    p.to_owned()
}

/// What [`match_route`] found for a key among the existing route keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    /// The route at this index (same key, or its `*` segments cover the
    /// key's ids).
    Existing(usize),
    /// The route at this index matches once the given segments become `*`:
    /// it must be renamed to `key` (which does not exist yet).
    Rename { index: usize, key: String },
    /// A route with this `*` key already exists (rename target taken): use it.
    Wildcard(usize),
    /// A new route.
    New,
}

/// `matchPath(key, routes)`, with the JS bugs fixed:
/// * a one-segment key returned the route *array* (used as a key, it found
///   nothing: every trace of `/users` after the first was lost);
/// * a multi-segment key matched on the last differing segment without
///   looking at the segments before it (`a/b/1` merged into `c/b/*`, and
///   `x/a/1` renamed to `x/a/*` by a trace of `y/a/2`).
///
/// Otherwise as JS: keys of different segment counts never match; walking
/// from the last segment, a differing segment matches when the key's one is
/// an id and the route's is `*`, or when both are ids (the route then
/// becomes `*` there), in both cases only if the previous segments are equal
/// (so two ids in a row are not merged); routes are tried in key order.
pub fn match_route<'a>(key: &str, routes: impl Iterator<Item = &'a str> + Clone) -> RouteMatch {
    if key == "/" || !key.contains('/') {
        return match routes.into_iter().position(|r| r == key) {
            Some(i) => RouteMatch::Existing(i),
            None => RouteMatch::New,
        };
    }
    let path: Vec<&str> = key.split('/').collect();
    for (index, route) in routes.clone().enumerate() {
        let mut segments: Vec<&str> = route.split('/').collect();
        if segments.len() != path.len() {
            continue;
        }
        let mut renamed = false;
        let mut matched = true;
        for j in (0..path.len()).rev() {
            if path[j] == segments[j] {
                continue;
            }
            // `path[j - 1] === segments[j - 1]`: at j = 0 both are undefined.
            let prev_equal = j == 0 || path[j - 1] == segments[j - 1];
            if prev_equal && segments[j] == "*" && is_identifier(path[j]) {
                continue;
            }
            if j > 0 && prev_equal && is_identifier(path[j]) && is_identifier(segments[j]) {
                segments[j] = "*";
                renamed = true;
                continue;
            }
            matched = false;
            break;
        }
        if !matched {
            continue;
        }
        if !renamed {
            return RouteMatch::Existing(index);
        }
        let new_key = segments.join("/");
        return match routes.clone().position(|r| r == new_key) {
            Some(existing) => RouteMatch::Wildcard(existing),
            None => RouteMatch::Rename {
                index,
                key: new_key,
            },
        };
    }
    RouteMatch::New
}

/// A canonical array index (`"0"`, `"17"`, below 2³²−1): JS objects list
/// such keys first, in numeric order, before the others in insertion order.
pub fn array_index(key: &str) -> Option<u32> {
    if key.is_empty() || key.len() > 10 || (key.len() > 1 && key.starts_with('0')) {
        return None;
    }
    if !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse::<u64>()
        .ok()
        .filter(|&n| n < u64::from(u32::MAX))
        .map(|n| n as u32)
}

/// Indices of `keys` in JS `Object.keys` order.
pub fn js_key_order<'a>(keys: impl Iterator<Item = &'a str>) -> Vec<usize> {
    let keys: Vec<&str> = keys.collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // Stable: non-index keys keep their insertion order.
    order.sort_by_key(|&i| match array_index(keys[i]) {
        Some(n) => (0, n),
        None => (1, 0),
    });
    order
}
