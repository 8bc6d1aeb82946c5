//! JavaScript value rules the JS agent applies implicitly (`!x`, numbers
//! printed without `.0`), in one place so every layer agrees.

use serde_json::{Number, Value};

/// JS truthiness of a JSON value (`!!x`).
pub fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// `!x`.
pub fn is_falsy(v: &Value) -> bool {
    !truthy(v)
}

/// A computed JS number as a JSON value: integral values become JSON
/// integers (JS prints `3`, serde_json would print `3.0` for an f64), NaN
/// and ±Infinity become `null` as `JSON.stringify` does.
pub fn js_number(f: f64) -> Value {
    if !f.is_finite() {
        return Value::Null;
    }
    // 2^53: beyond it JS itself cannot tell integers apart; keep f64 there.
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        return Value::from(f as i64);
    }
    Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truthiness_like_js() {
        for v in [json!(null), json!(false), json!(0), json!(0.0), json!("")] {
            assert!(is_falsy(&v) && !truthy(&v), "{v}");
        }
        for v in [json!(true), json!(1), json!("0"), json!([]), json!({})] {
            assert!(truthy(&v) && !is_falsy(&v), "{v}");
        }
    }

    #[test]
    fn numbers_print_like_js() {
        assert_eq!(js_number(3.0), json!(3));
        assert_eq!(js_number(-0.5), json!(-0.5));
        assert_eq!(js_number(f64::NAN), Value::Null);
        assert_eq!(js_number(f64::INFINITY), Value::Null);
        assert_eq!(js_number(1e300), json!(1e300));
    }
}
