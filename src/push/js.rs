//! JavaScript value semantics the JS agent relies on implicitly (`||`
//! defaults, `Math.floor` coercion, `parseInt`, `String(x)`), so that the
//! port produces the same JSON for the same (possibly odd) inputs instead of
//! guessing per call site.

use serde_json::{Number, Value};

/// JS truthiness of a property read (`None` = `undefined`).
pub(crate) fn truthy(v: Option<&Value>) -> bool {
    v.is_some_and(crate::common::js::truthy)
}

/// `a || b` where `a` is a property read: the value itself when truthy.
pub(crate) fn or_default(v: Option<Value>, default: Value) -> Value {
    match v {
        Some(v) if truthy(Some(&v)) => v,
        _ => default,
    }
}

/// JS `ToNumber` (what `Math.floor(x)` applies first).
pub(crate) fn to_number(v: Option<&Value>) -> f64 {
    match v {
        None => f64::NAN,
        Some(Value::Null) => 0.0,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(Value::String(s)) => string_to_number(s),
        // `[]` → "" → 0, `[x]` → String(x) → number; anything else NaN.
        Some(Value::Array(a)) => match a.as_slice() {
            [] => 0.0,
            [one @ (Value::String(_) | Value::Number(_) | Value::Null)] => match one {
                Value::Null => 0.0,
                other => to_number(Some(other)),
            },
            _ => f64::NAN,
        },
        Some(Value::Object(_)) => f64::NAN,
    }
}

fn is_js_space(c: char) -> bool {
    c.is_whitespace() || c == '\u{feff}'
}

/// `Number(string)`: whitespace-trimmed decimal literal, `0x`/`0o`/`0b`
/// integers, `±Infinity`; empty → 0; anything else NaN.
pub(crate) fn string_to_number(s: &str) -> f64 {
    let t = s.trim_matches(is_js_space);
    if t.is_empty() {
        return 0.0;
    }
    for (prefix, radix) in [
        ("0x", 16),
        ("0X", 16),
        ("0o", 8),
        ("0O", 8),
        ("0b", 2),
        ("0B", 2),
    ] {
        if let Some(digits) = t.strip_prefix(prefix) {
            if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
                return f64::NAN;
            }
            return digits.chars().fold(0.0, |acc, c| {
                acc * f64::from(radix) + f64::from(c.to_digit(radix).unwrap_or(0))
            });
        }
    }
    let (sign, body) = match t.as_bytes()[0] {
        b'-' => (-1.0, &t[1..]),
        b'+' => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    if body == "Infinity" {
        return sign * f64::INFINITY;
    }
    if !is_decimal_literal(body) {
        return f64::NAN;
    }
    body.parse::<f64>().map(|f| sign * f).unwrap_or(f64::NAN)
}

/// `digits [. digits] [e[±]digits]` with at least one mantissa digit; Rust's
/// float parser alone would also accept `inf`/`NaN`, which JS does not.
fn is_decimal_literal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let int_digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
    i += int_digits;
    let mut frac_digits = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac_digits;
    }
    if int_digits + frac_digits == 0 {
        return false;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp_digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp_digits == 0 {
            return false;
        }
        i += exp_digits;
    }
    i == b.len()
}

/// `parseInt(s, 10)`: leading whitespace and sign, then the longest decimal
/// digit prefix; NaN when no digit was found.
pub(crate) fn parse_int(s: &str) -> f64 {
    parse_int_radix(s, 10)
}

fn parse_int_radix(s: &str, radix: u32) -> f64 {
    let t = s.trim_start_matches(is_js_space);
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1.0, &t[1..]),
        Some(b'+') => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    let body = if radix == 16 {
        body.strip_prefix("0x")
            .or_else(|| body.strip_prefix("0X"))
            .unwrap_or(body)
    } else {
        body
    };
    let mut seen = false;
    let mut acc = 0.0;
    for d in body.chars().map_while(|c| c.to_digit(radix)) {
        seen = true;
        acc = acc * f64::from(radix) + f64::from(d);
    }
    if seen {
        sign * acc
    } else {
        f64::NAN
    }
}

/// `parseInt(s)` without a radix: a `0x`/`0X` prefix (after the sign)
/// selects base 16, everything else is base 10.
pub(crate) fn parse_int_auto(s: &str) -> f64 {
    let t = s.trim_start_matches(is_js_space);
    let unsigned = t.strip_prefix(['-', '+']).unwrap_or(t);
    if unsigned.starts_with("0x") || unsigned.starts_with("0X") {
        parse_int_radix(s, 16)
    } else {
        parse_int_radix(s, 10)
    }
}

/// `String(v)` for the values a JSON payload can hold.
pub(crate) fn to_js_string(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_to_js_string(n),
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|e| match e {
                Value::Null => String::new(),
                other => to_js_string(other),
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

fn number_to_js_string(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match js_number(n.as_f64().unwrap_or(f64::NAN)) {
        Value::Number(n) => n.to_string(),
        _ => "NaN".to_owned(),
    }
}

pub(crate) use crate::common::js::js_number;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_matches_js() {
        for v in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(!truthy(Some(&v)), "{v}");
        }
        assert!(!truthy(None));
        for v in [
            json!(true),
            json!(1),
            json!(-0.5),
            json!("0"),
            json!([]),
            json!({}),
        ] {
            assert!(truthy(Some(&v)), "{v}");
        }
    }

    #[test]
    fn to_number_coerces_like_js() {
        assert_eq!(to_number(Some(&json!("  12.5 "))), 12.5);
        assert_eq!(to_number(Some(&json!(""))), 0.0);
        assert_eq!(to_number(Some(&json!(null))), 0.0);
        assert_eq!(to_number(Some(&json!(true))), 1.0);
        assert_eq!(to_number(Some(&json!("0x10"))), 16.0);
        assert_eq!(to_number(Some(&json!("-Infinity"))), f64::NEG_INFINITY);
        assert_eq!(to_number(Some(&json!([]))), 0.0);
        assert_eq!(to_number(Some(&json!(["7"]))), 7.0);
        for v in [
            json!("inf"),
            json!("NaN"),
            json!("1e"),
            json!("."),
            json!("12px"),
            json!({}),
            json!([1, 2]),
        ] {
            assert!(to_number(Some(&v)).is_nan(), "{v}");
        }
        assert!(to_number(None).is_nan());
        assert_eq!(to_number(Some(&json!("1."))), 1.0);
        assert_eq!(to_number(Some(&json!(".5e1"))), 5.0);
    }

    #[test]
    fn parse_int_matches_js() {
        assert_eq!(parse_int("  42abc"), 42.0);
        assert_eq!(parse_int("-3"), -3.0);
        assert_eq!(parse_int("+3"), 3.0);
        assert!(parse_int("+-3").is_nan());
        assert!(parse_int("abc").is_nan());
        assert_eq!(parse_int("0x1A"), 0.0);
        assert_eq!(parse_int_auto("0x1A"), 26.0);
        assert_eq!(parse_int_auto("-0x10"), -16.0);
        assert_eq!(parse_int_auto("12:5"), 12.0);
        assert!(parse_int_auto("").is_nan());
    }

    #[test]
    fn js_number_prints_integers_without_fraction() {
        assert_eq!(js_number(3.0).to_string(), "3");
        assert_eq!(js_number(-0.0).to_string(), "0");
        assert_eq!(js_number(0.25).to_string(), "0.25");
        assert_eq!(js_number(f64::NAN), Value::Null);
        assert_eq!(js_number(f64::INFINITY), Value::Null);
    }

    #[test]
    fn to_js_string_matches_string_conversion() {
        assert_eq!(to_js_string(&json!(5)), "5");
        assert_eq!(to_js_string(&json!(2.0)), "2");
        assert_eq!(to_js_string(&json!([1, null, "a"])), "1,,a");
        assert_eq!(to_js_string(&json!({"a": 1})), "[object Object]");
    }
}
