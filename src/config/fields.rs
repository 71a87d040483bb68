//! The valid keys of each config section, read from the serde structs themselves so the
//! "did you mean" list can never drift from what is accepted.

use std::cell::Cell;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::{RawConfig, RawLog, RawServer};
use crate::admin::RawAdmin;
use crate::broker::RawBroker;
use crate::upstream::config::{RawHealthCheck, RawUpstream};
use crate::ws::config::{RawAuth, RawBridge, RawRoute};

/// Valid keys of the section at a dotted path ("" is the top level).
pub fn valid_keys(section: &str) -> &'static [&'static str] {
    match section {
        "" => fields_of::<RawConfig>(),
        "server" => fields_of::<RawServer>(),
        "upstream" => fields_of::<RawUpstream>(),
        "upstream.health_check" => fields_of::<RawHealthCheck>(),
        "admin" => fields_of::<RawAdmin>(),
        "log" => fields_of::<RawLog>(),
        "ws" => fields_of::<RawRoute>(),
        "ws.auth" | "ws.authorize" => fields_of::<RawAuth>(),
        "ws.bridge" => fields_of::<RawBridge>(),
        "broker" => fields_of::<RawBroker>(),
        "tls" => fields_of::<crate::tls::config::RawTls>(),
        "tls.certificates" => fields_of::<crate::tls::config::RawCertFiles>(),
        "tls.acme" => fields_of::<crate::tls::config::RawAcme>(),
        "static" => fields_of::<crate::files::config::RawStatic>(),
        "compression" => fields_of::<crate::proxy::compress::RawCompression>(),
        _ => &[],
    }
}

/// The field names a `#[derive(Deserialize)]` struct declares.
fn fields_of<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    let found = Cell::new(None);
    let _ = T::deserialize(FieldCatcher { found: &found });
    found.get().unwrap_or(&[])
}

/// A deserializer that only records the field list passed to `deserialize_struct`.
struct FieldCatcher<'a> {
    found: &'a Cell<Option<&'static [&'static str]>>,
}

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("field names read")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: std::fmt::Display>(_msg: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for FieldCatcher<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _v: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _v: V,
    ) -> Result<V::Value, Stop> {
        self.found.set(Some(fields));
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_field_names() {
        assert!(valid_keys("server").contains(&"grace_period"));
        assert!(valid_keys("").contains(&"upstream"));
        assert!(valid_keys("upstream.health_check").contains(&"interval"));
        assert!(valid_keys("nope").is_empty());
    }
}
