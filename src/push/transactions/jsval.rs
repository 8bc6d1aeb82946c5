//! The bits of JS semantics the aggregator's output depends on: the label
//! censoring regex, `new Date(x)`, strict equality, and `fclone`'s key order.
//! No regex crate: the one regex is small enough to match by hand, which
//! also makes its cost linear and obvious.

use serde_json::{Map, Value};

use super::paths::array_index;

/// What censored label values become.
const CENSORED: &str = "\": \"?\"";

/// `value.replace(REGEX_JSON_CLEANUP, '": "?"')` where the regex is
///
/// ```text
/// ":(?!\[|{)\\"[^"]*\\"  |  ":(["'])(?:(?=(\\?))\2.)*?\1  |  ":(?!\[|{)[^,}\]]*  |  ":\[[^{]*]
/// ```
///
/// i.e. every JSON-ish value after `":` (an escaped string, a quoted
/// string, a bare value up to `,`/`}`/`]`, or a flat array) is replaced.
/// `None` when nothing matched (the common case for plain labels).
pub fn censor(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        // Every alternative starts with `":` (ASCII, so `i` is a char boundary).
        if b[i] == b'"' && b[i + 1] == b':' {
            if let Some(end) = censored_value_end(s, i + 2) {
                out.push_str(&s[copied..i]);
                out.push_str(CENSORED);
                copied = end;
                i = end;
                continue;
            }
        }
        i += 1;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&s[copied..]);
    Some(out)
}

/// JS line terminators (what `.` does not match).
fn is_line_terminator(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{2028}' | '\u{2029}')
}

/// Where the regex match starting with `":` (value at byte `p`) ends, trying
/// the four alternatives in order as the JS engine does.
fn censored_value_end(s: &str, p: usize) -> Option<usize> {
    let rest = &s[p..];
    let rb = rest.as_bytes();
    // 1. `\"[^"]*\"`: the first `"` after the opening `\"` must be escaped.
    if rb.starts_with(b"\\\"") {
        if let Some(q) = rest[2..].find('"').map(|q| q + 2) {
            if q > 2 && rb[q - 1] == b'\\' {
                return Some(p + q + 1);
            }
        }
    }
    // 2. A quoted string: escapes consume two characters (the lookahead is
    //    atomic), the first unescaped quote of the same kind closes it, a
    //    line terminator (even escaped) or the end fails it.
    if let Some(&quote) = rb.first().filter(|c| matches!(c, b'"' | b'\'')) {
        let mut chars = rest[1..].char_indices();
        while let Some((k, c)) = chars.next() {
            if c == char::from(quote) {
                return Some(p + 1 + k + 1);
            }
            if is_line_terminator(c) {
                break;
            }
            if c == '\\' {
                match chars.next() {
                    Some((_, n)) if !is_line_terminator(n) => {}
                    _ => break,
                }
            }
        }
    }
    match rb.first() {
        // 4. `\[[^{]*]`: up to the last `]` before the first `{`.
        Some(b'[') => {
            let region = rest[1..].find('{').map_or(rest.len(), |k| k + 1);
            rest[1..region].rfind(']').map(|k| p + 1 + k + 1)
        }
        Some(b'{') => None,
        // 3. A bare value, up to `,`, `}` or `]` (possibly empty).
        _ => Some(p + rest.find([',', '}', ']']).unwrap_or(rest.len())),
    }
}

/// `new Date(v).getTime()` for what a span's `startTime`/`endTime` can be:
/// numbers (epoch ms, `TimeClip`ped), `null`/booleans (0/1), and ISO 8601
/// strings (`YYYY[-MM[-DD]][THH:mm[:ss[.fff…]]][Z|±HH:mm]`, 6-digit signed
/// years too, days rolling over like V8's: Feb 30 = Mar 1). A date-time without offset is local time in JS; it is read
/// as UTC here, which only matters for a span crossing a DST change.
/// Other strings V8 happens to accept are `None` (the span is dropped).
pub fn date_ms(v: Option<&Value>) -> Option<f64> {
    let ms = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::Null => 0.0,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => parse_iso(s)?,
        _ => return None,
    };
    // TimeClip.
    if !ms.is_finite() || ms.abs() > 8.64e15 {
        return None;
    }
    Some(ms.trunc() + 0.0)
}

fn parse_iso(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = 0;
    let num = |i: &mut usize, n: usize| -> Option<i64> {
        let digits = b.get(*i..*i + n)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        *i += n;
        Some(digits.iter().fold(0, |a, d| a * 10 + i64::from(d - b'0')))
    };
    let year = match b.first()? {
        sign @ (b'+' | b'-') => {
            i = 1;
            let y = num(&mut i, 6)?;
            if *sign == b'-' && y == 0 {
                return None; // -000000 is not allowed
            }
            if *sign == b'-' {
                -y
            } else {
                y
            }
        }
        _ => num(&mut i, 4)?,
    };
    let (mut month, mut day) = (1, 1);
    if b.get(i) == Some(&b'-') {
        i += 1;
        month = num(&mut i, 2)?;
        if b.get(i) == Some(&b'-') {
            i += 1;
            day = num(&mut i, 2)?;
        }
    }
    // V8 accepts any day 1-31 and lets it roll over (Feb 30 = Mar 1).
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if i == b.len() {
        // Date-only forms are UTC.
        return Some(epoch_ms(year, month, day, 0, 0, 0, 0.0));
    }
    if !matches!(b.get(i), Some(b'T' | b't' | b' ')) {
        return None;
    }
    i += 1;
    let h = num(&mut i, 2)?;
    if b.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    let m = num(&mut i, 2)?;
    let (mut sec, mut ms) = (0, 0.0);
    if b.get(i) == Some(&b':') {
        i += 1;
        sec = num(&mut i, 2)?;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
            // Milliseconds: the first three digits, the rest truncated.
            let frac = &s[start..i];
            let three: String = frac.chars().chain("00".chars()).take(3).collect();
            ms = three.parse::<f64>().ok()?;
        }
    }
    if m > 59 || sec > 59 || h > 24 || (h == 24 && (m > 0 || sec > 0 || ms > 0.0)) {
        return None;
    }
    let offset_min = match b.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let neg = *sign == b'-';
            i += 1;
            let oh = num(&mut i, 2)?;
            // `±HH:mm`, or `±HHmm` (V8 accepts both).
            if b.get(i) == Some(&b':') {
                i += 1;
            }
            let om = num(&mut i, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if neg {
                -off
            } else {
                off
            }
        }
        None => 0,
        _ => return None,
    };
    if i != b.len() {
        return None;
    }
    Some(epoch_ms(year, month, day, h, m, sec, ms) - (offset_min * 60_000) as f64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn epoch_ms(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64, ms: f64) -> f64 {
    let days = days_from_civil(y, mo, d);
    ((days * 86_400 + h * 3600 + mi * 60 + s) * 1000) as f64 + ms
}

/// `a === b` for two property reads (`None` = `undefined`): objects and
/// arrays are never equal (references).
pub fn strict_eq(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Value::Null), Some(Value::Null)) => true,
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x == y,
        (Some(Value::Number(x)), Some(Value::Number(y))) => x.as_f64() == y.as_f64(),
        (Some(Value::String(x)), Some(Value::String(y))) => x == y,
        _ => false,
    }
}

/// `v.length` as JS reads it (strings count UTF-16 units; objects may have
/// a `length` property; other values have none).
pub fn js_length(v: Option<&Value>) -> Option<Value> {
    match v? {
        Value::String(s) => Some(Value::from(s.encode_utf16().count())),
        Value::Array(a) => Some(Value::from(a.len())),
        Value::Object(o) => o.get("length").cloned(),
        _ => None,
    }
}

/// `fclone(v)` as serialised: the JS deep copy re-inserts every object's
/// keys in reverse, so the agent's JSON has reversed key order (array
/// indices, which JS always lists first, excepted).
pub fn fclone(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(fclone_map(o)),
        Value::Array(a) => Value::Array(a.iter().map(fclone).collect()),
        other => other.clone(),
    }
}

/// [`fclone`] of an object given as its entries in JS key order.
pub fn fclone_map(o: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in o.iter().rev() {
        out.insert(k.clone(), fclone(v));
    }
    js_order(out)
}

/// Reorders an object's keys as a JS object would list them: array indices
/// first, ascending, then the rest in insertion order.
pub fn js_order(o: Map<String, Value>) -> Map<String, Value> {
    if !o.keys().any(|k| array_index(k).is_some()) {
        return o;
    }
    let mut entries: Vec<(String, Value)> = o.into_iter().collect();
    entries.sort_by_key(|(k, _)| match array_index(k) {
        Some(n) => (0, n),
        None => (1, 0),
    });
    entries.into_iter().collect()
}
