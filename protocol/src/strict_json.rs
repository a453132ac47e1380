//! Strict JSON for payloads (PROTOCOL.md 1): integers in [0, 2^53) only, no duplicate
//! member names, no lone surrogates. serde_json alone would keep the last duplicate
//! and accept `1.0`, so payload text goes through this visitor instead.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Largest integer a payload may carry, exclusive (2^53).
pub const MAX_SAFE_INTEGER_EXCLUSIVE: u64 = 1 << 53;

/// Parse JSON text under the payload rules; the error says what broke them.
pub fn parse_strict(text: &str) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = StrictValue
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON with integer numbers only")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v >= MAX_SAFE_INTEGER_EXCLUSIVE {
            return Err(E::custom(format!("integer {v} is not below 2^53")));
        }
        Ok(Value::from(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v < 0 {
            return Err(E::custom(format!("negative number {v}")));
        }
        self.visit_u64(v as u64)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Err(E::custom(format!(
            "number {v} is not in integer syntax (no fractions, exponents or -0)"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictValue)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate member name {key:?}")));
            }
            let v = map.next_value_seed(StrictValue)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_pass_and_other_numbers_fail() {
        assert!(parse_strict(r#"{"a":1,"b":[0,9007199254740991]}"#).is_ok());
        for bad in ["1.0", "1e3", "-0", "-1", "9007199254740992", "1E2", "0.5"] {
            assert!(parse_strict(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn duplicate_member_names_fail_at_any_depth() {
        assert!(parse_strict(r#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(r#"{"x":{"a":1,"a":1}}"#).is_err());
        assert!(parse_strict(r#"[{"a":1},{"a":1}]"#).is_ok());
    }

    #[test]
    fn lone_surrogates_fail_and_pairs_pass() {
        assert!(parse_strict(r#""\ud800""#).is_err());
        assert!(parse_strict(r#""\udc00x""#).is_err());
        assert!(parse_strict(r#""\ud800\u0041""#).is_err());
        assert_eq!(
            parse_strict(r#""\ud83d\ude00""#).unwrap(),
            Value::String("😀".into())
        );
    }

    #[test]
    fn trailing_garbage_fails() {
        assert!(parse_strict(r#"{"a":1} x"#).is_err());
    }
}
