//! Group messages (ASGI-style events) and how one becomes a WebSocket frame: `text` → a
//! text frame, `bytes` → a binary frame, `type: "websocket.close"` → close the members,
//! anything else → the event as JSON without its `__asgi_*` keys. Done once per message.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::ws::prepared::Prepared;

/// An event published to a group or a channel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    /// Every field but binary ones.
    pub fields: Map<String, Value>,
    /// The `bytes` field, when the publisher sent binary (msgpack `bin`).
    pub bytes: Option<Bytes>,
}

/// What a connection is told to do with one message.
#[derive(Clone, Debug, PartialEq)]
pub enum Outbound {
    /// One frame, encoded once and shared by every member it goes to.
    Frame(Arc<Prepared>),
    Close(u16, String),
}

impl Event {
    /// An event from a JSON object.
    pub fn from_json(v: Value) -> Result<Event, &'static str> {
        match v {
            Value::Object(fields) => Ok(Event { fields, bytes: None }),
            _ => Err("an event must be a JSON object, e.g. {\"type\": \"chat.message\", \"text\": \"hi\"}"),
        }
    }

    /// `{"type": event_type, "text": text}`.
    pub fn text(event_type: &str, text: String) -> Event {
        let mut fields = Map::new();
        fields.insert("type".into(), Value::String(event_type.into()));
        fields.insert("text".into(), Value::String(text));
        Event {
            fields,
            bytes: None,
        }
    }

    /// `{"type": event_type, "bytes": data}`.
    pub fn binary(event_type: &str, data: Bytes) -> Event {
        let mut fields = Map::new();
        fields.insert("type".into(), Value::String(event_type.into()));
        Event {
            fields,
            bytes: Some(data),
        }
    }

    pub fn event_type(&self) -> Option<&str> {
        self.fields.get("type").and_then(Value::as_str)
    }

    /// The frame (or close) every member receives.
    pub fn to_outbound(&self) -> Result<Outbound, String> {
        if self.event_type() == Some("websocket.close") {
            let code = match self.fields.get("code") {
                None | Some(Value::Null) => 1000,
                Some(v) => v
                    .as_u64()
                    .filter(|c| *c == 1000 || (3000..=4999).contains(c))
                    .ok_or("websocket.close `code` must be 1000 or 3000-4999")?
                    as u16,
            };
            let reason = self
                .fields
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if reason.len() > 123 {
                return Err("websocket.close `reason` is longer than 123 bytes".into());
            }
            return Ok(Outbound::Close(code, reason));
        }
        if let Some(Value::String(t)) = self.fields.get("text") {
            return Ok(Outbound::Frame(Arc::new(Prepared::text(t))));
        }
        if let Some(b) = &self.bytes {
            return Ok(Outbound::Frame(Arc::new(Prepared::binary(b))));
        }
        let visible: Map<String, Value> = self
            .fields
            .iter()
            .filter(|(k, _)| !k.starts_with("__asgi_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Outbound::Frame(Arc::new(Prepared::text(
            &Value::Object(visible).to_string(),
        ))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(v: Value) -> Event {
        Event::from_json(v).unwrap()
    }

    #[test]
    fn maps_events_to_frames() {
        assert_eq!(
            ev(json!({"type": "x.y", "text": "hi"}))
                .to_outbound()
                .unwrap(),
            Outbound::Frame(Arc::new(Prepared::text("hi")))
        );
        assert_eq!(
            Event::binary("x", Bytes::from_static(b"\x00\x01"))
                .to_outbound()
                .unwrap(),
            Outbound::Frame(Arc::new(Prepared::binary(b"\x00\x01")))
        );
        assert_eq!(
            ev(json!({"type": "websocket.close", "code": 4001, "reason": "bye"}))
                .to_outbound()
                .unwrap(),
            Outbound::Close(4001, "bye".into())
        );
        assert_eq!(
            ev(json!({"type": "websocket.close"}))
                .to_outbound()
                .unwrap(),
            Outbound::Close(1000, String::new())
        );
        assert!(ev(json!({"type": "websocket.close", "code": 1006}))
            .to_outbound()
            .is_err());
        let Outbound::Frame(p) = ev(json!({"type": "a.b", "n": 1, "__asgi_group__": "g"}))
            .to_outbound()
            .unwrap()
        else {
            panic!()
        };
        assert!(p.is_text());
        assert_eq!(
            serde_json::from_slice::<Value>(p.payload()).unwrap(),
            json!({"type": "a.b", "n": 1})
        );
        assert!(Event::from_json(json!([1])).is_err());
    }
}
