//! The channels_rabbitmq message body: a msgpack map holding the event plus exactly one of
//! `__asgi_group__` (a group message) or `__asgi_channel__` (one connection). Strings are
//! msgpack str, binary is bin. JSON bodies (`content_type: application/json`) are read
//! too, for publishers in other languages.

use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Number, Value};

use crate::hub::Event;

pub const GROUP_KEY: &str = "__asgi_group__";
pub const CHANNEL_KEY: &str = "__asgi_channel__";

/// Where a consumed message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Group(String),
    Channel(String),
}

/// Why a body could not be read; `kind` labels the metric and the once-per-kind log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub kind: &'static str,
    pub detail: String,
}

fn err(kind: &'static str, detail: impl Into<String>) -> DecodeError {
    DecodeError {
        kind,
        detail: detail.into(),
    }
}

/// Encodes `event` for `target` exactly as channels_rabbitmq does.
pub fn encode(event: &Event, target: &Target) -> Vec<u8> {
    let mut entries: Vec<(Mp, Mp)> = event
        .fields
        .iter()
        .filter(|(k, _)| k.as_str() != GROUP_KEY && k.as_str() != CHANNEL_KEY)
        .map(|(k, v)| (Mp::from(k.as_str()), json_to_mp(v)))
        .collect();
    if let Some(b) = &event.bytes {
        entries.push((Mp::from("bytes"), Mp::Binary(b.to_vec())));
    }
    let (key, name) = match target {
        Target::Group(g) => (GROUP_KEY, g),
        Target::Channel(c) => (CHANNEL_KEY, c),
    };
    entries.push((Mp::from(key), Mp::from(name.as_str())));
    let mut out = Vec::with_capacity(64);
    // Writing msgpack into a Vec cannot fail (the only errors are I/O errors).
    let _ = rmpv::encode::write_value(&mut out, &Mp::Map(entries));
    out
}

fn json_to_mp(v: &Value) -> Mp {
    match v {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Mp::from(i),
            (_, Some(u), _) => Mp::from(u),
            (_, _, Some(f)) => Mp::F64(f),
            _ => Mp::Nil,
        },
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(a) => Mp::Array(a.iter().map(json_to_mp).collect()),
        Value::Object(o) => Mp::Map(
            o.iter()
                .map(|(k, v)| (Mp::from(k.as_str()), json_to_mp(v)))
                .collect(),
        ),
    }
}

fn mp_to_json(v: &Mp) -> Result<Value, DecodeError> {
    Ok(match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(*b),
        Mp::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(n), _) => Value::from(n),
            (_, Some(n)) => Value::from(n),
            _ => return Err(err("bad_value", "integer out of range")),
        },
        Mp::F32(f) => Number::from_f64(f64::from(*f))
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Mp::F64(f) => Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Mp::String(s) => Value::String(
            s.as_str()
                .ok_or_else(|| err("bad_value", "a str that is not UTF-8"))?
                .to_string(),
        ),
        // Binary below the top level has no JSON form; keep the bytes as numbers.
        Mp::Binary(b) => Value::Array(b.iter().map(|x| Value::from(*x)).collect()),
        Mp::Array(a) => Value::Array(a.iter().map(mp_to_json).collect::<Result<_, _>>()?),
        Mp::Map(m) => Value::Object(map_to_json(m)?),
        Mp::Ext(..) => return Err(err("bad_value", "msgpack ext types are not events")),
    })
}

fn map_to_json(m: &[(Mp, Mp)]) -> Result<Map<String, Value>, DecodeError> {
    let mut out = Map::new();
    for (k, v) in m {
        let k = k
            .as_str()
            .ok_or_else(|| err("non_string_key", "map keys must be strings"))?;
        out.insert(k.to_string(), mp_to_json(v)?);
    }
    Ok(out)
}

/// Decodes a consumed body into its target and event.
pub fn decode(body: &[u8], content_type: Option<&str>) -> Result<(Target, Event), DecodeError> {
    let (mut fields, bytes) = if content_type.is_some_and(|c| c.starts_with("application/json")) {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(o)) => (o, None),
            Ok(_) => return Err(err("not_a_map", "the JSON body is not an object")),
            Err(e) => return Err(err("not_json", e.to_string())),
        }
    } else {
        let mut rd = body;
        let v = rmpv::decode::read_value(&mut rd).map_err(|e| err("not_msgpack", e.to_string()))?;
        if !rd.is_empty() {
            return Err(err("not_msgpack", "trailing bytes after the msgpack value"));
        }
        let Mp::Map(entries) = v else {
            return Err(err("not_a_map", "the msgpack body is not a map"));
        };
        let mut bytes = None;
        let mut rest = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match (k.as_str(), v) {
                (Some("bytes"), Mp::Binary(b)) => bytes = Some(Bytes::from(b)),
                (_, v) => rest.push((k, v)),
            }
        }
        (map_to_json(&rest)?, bytes)
    };
    let group = fields.remove(GROUP_KEY);
    let channel = fields.remove(CHANNEL_KEY);
    let target = match (group, channel) {
        (Some(Value::String(g)), None) => Target::Group(g),
        (None, Some(Value::String(c))) => Target::Channel(c),
        (None, None) => {
            return Err(err(
                "no_target",
                "neither __asgi_group__ nor __asgi_channel__",
            ))
        }
        _ => {
            return Err(err(
                "bad_target",
                "__asgi_group__/__asgi_channel__ must be one string",
            ))
        }
    };
    Ok((target, Event { fields, bytes }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_in_channels_rabbitmq_format() {
        let mut ev = Event::from_json(json!({"type": "x.y", "text": "hi", "n": -3, "f": 1.5, "l": [1, "a"], "m": {"k": null}})).unwrap();
        ev.bytes = Some(Bytes::from_static(b"\x00\xff"));
        let body = encode(&ev, &Target::Group("g".into()));
        // The layer's own reader: a msgpack map with str keys and bin for bytes.
        let v = rmpv::decode::read_value(&mut &body[..]).unwrap();
        let map = v.as_map().unwrap();
        assert!(map
            .iter()
            .any(|(k, v)| k.as_str() == Some("bytes") && v.is_bin()));
        assert!(map
            .iter()
            .any(|(k, v)| k.as_str() == Some(GROUP_KEY) && v.as_str() == Some("g")));
        let (target, back) = decode(&body, None).unwrap();
        assert_eq!(target, Target::Group("g".into()));
        assert_eq!(back, ev);
    }

    #[test]
    fn reads_json_bodies() {
        let (t, e) = decode(
            br#"{"type": "a", "text": "t", "__asgi_channel__": "q!x"}"#,
            Some("application/json"),
        )
        .unwrap();
        assert_eq!(t, Target::Channel("q!x".into()));
        assert_eq!(e.fields["text"], "t");
    }

    #[test]
    fn names_what_is_wrong() {
        let kind = |b: &[u8], ct| decode(b, ct).unwrap_err().kind;
        assert_eq!(kind(b"\xc1garbage", None), "not_msgpack");
        assert_eq!(
            kind(&rmp_serde::to_vec(&[1, 2]).unwrap(), None),
            "not_a_map"
        );
        assert_eq!(
            kind(
                &rmp_serde::to_vec(&std::collections::BTreeMap::from([(1, 2)])).unwrap(),
                None
            ),
            "non_string_key"
        );
        assert_eq!(
            kind(
                &encode(&Event::text("t", "x".into()), &Target::Group("g".into()))[..3],
                None
            ),
            "not_msgpack"
        );
        assert_eq!(
            kind(br#"{"type": "a"}"#, Some("application/json")),
            "no_target"
        );
        assert_eq!(
            kind(br#"{"__asgi_group__": 5}"#, Some("application/json")),
            "bad_target"
        );
        assert_eq!(kind(b"[1]", Some("application/json")), "not_a_map");
    }
}
