//! The group broker: where a published message goes so that every member of the group
//! receives it. `memory` (the default) delivers within this process; `amqp`
//! ([`amqp`]) goes through RabbitMQ in the channels_rabbitmq wire format ([`codec`]).

pub mod amqp;
pub mod bindings;
pub mod codec;
pub mod connection;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde::Deserialize;

use crate::config::{values, Errors, KeyPath};
use crate::hub::{Event, Hub};

/// `[broker]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BrokerConfig {
    /// Groups live in this process only.
    Memory,
    /// Groups live on RabbitMQ, shared with other instances and channels_rabbitmq peers.
    Amqp(AmqpConfig),
}

/// `[broker] kind = "amqp"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpConfig {
    /// The nodes, `amqp://user:pass@host:port/vhost` or `amqps://...`, tried in turn
    /// (`url = "..."` or `url = ["...", "..."]`). Never empty. Default: guest on localhost.
    pub urls: Vec<String>,
    /// The direct exchange groups are routed by. Default "groups" (channels_rabbitmq's).
    pub groups_exchange: String,
    /// Messages our queue holds before RabbitMQ rejects publishes (`x-max-length`). Default 100.
    pub capacity: u32,
    /// How long a message waits in our queue before it expires (`x-message-ttl`). Default 60s.
    pub expiry: Duration,
    /// Unacknowledged deliveries in flight (basic.qos). Default 100.
    pub prefetch: u16,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawBroker {
    kind: Option<String>,
    url: Option<Urls>,
    groups_exchange: Option<String>,
    capacity: Option<u32>,
    expiry: Option<String>,
    prefetch: Option<u16>,
}

/// `[broker] url`: one node or a list of nodes.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Urls {
    One(String),
    Many(Vec<String>),
}

/// The most nodes `[broker] url` may list.
pub const MAX_URLS: usize = 16;

pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl RawBroker {
    pub(crate) fn validate(self, path: &KeyPath, errs: &mut Errors) -> BrokerConfig {
        match self.kind.as_deref() {
            None | Some("memory") => {
                for (key, set) in [
                    ("url", self.url.is_some()),
                    ("groups_exchange", self.groups_exchange.is_some()),
                ] {
                    if set {
                        errs.add(&path.key(key), "only applies to kind = \"amqp\"");
                    }
                }
                BrokerConfig::Memory
            }
            Some("amqp") => {
                let urls = match self.url {
                    None => vec![DEFAULT_AMQP_URL.to_string()],
                    Some(Urls::One(u)) => vec![u],
                    Some(Urls::Many(v)) => v,
                };
                if urls.is_empty() || urls.len() > MAX_URLS {
                    errs.add(
                        &path.key("url"),
                        format!("must name 1 to {MAX_URLS} RabbitMQ nodes"),
                    );
                }
                for url in &urls {
                    if let Err(e) = url.parse::<lapin::uri::AMQPUri>() {
                        errs.add(&path.key("url"), format!("`{}` is not an AMQP URL ({e}); write it like \"amqp://user:pass@host:5672/%2f\"", amqp::redact(url)));
                    }
                }
                let urls = if urls.is_empty() {
                    vec![DEFAULT_AMQP_URL.to_string()]
                } else {
                    urls
                };
                let exchange = self.groups_exchange.unwrap_or_else(|| "groups".into());
                if exchange.is_empty() || exchange.len() > 255 {
                    errs.add(&path.key("groups_exchange"), "must be 1 to 255 characters");
                }
                let capacity = self.capacity.unwrap_or(100);
                if capacity == 0 {
                    errs.add(&path.key("capacity"), "must be at least 1");
                }
                let prefetch = self.prefetch.unwrap_or(100);
                if prefetch == 0 {
                    errs.add(&path.key("prefetch"), "must be at least 1");
                }
                BrokerConfig::Amqp(AmqpConfig {
                    urls,
                    groups_exchange: exchange,
                    capacity,
                    expiry: values::duration(
                        self.expiry.as_deref(),
                        Duration::from_secs(60),
                        false,
                        &path.key("expiry"),
                        errs,
                    ),
                    prefetch,
                })
            }
            Some(other) => {
                errs.add(
                    &path.key("kind"),
                    format!("`{other}` is not a broker kind; use \"memory\" or \"amqp\""),
                );
                BrokerConfig::Memory
            }
        }
    }
}

/// What a publish achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Connections of this process the message was queued to.
    pub local: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message itself is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// The broker cannot take messages now (503).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused this message (507).
    #[error("broker refused the message: {0}")]
    Refused(String),
}

#[async_trait]
pub trait Broker: Send + Sync {
    /// Sends `event` to every member of `group`, wherever the broker reaches.
    async fn group_send(&self, group: &str, event: Event) -> Result<Published, PublishError>;
    /// Sends `event` to the one connection named `channel`.
    async fn send(&self, channel: &str, event: Event) -> Result<Published, PublishError>;
    /// Whether publishes can go through now (for /readyz).
    fn is_ready(&self) -> bool;
    /// The name this process uses as its channel prefix.
    fn instance(&self) -> &str;
}

/// A channels_rabbitmq style queue name: `channels_` + 12 ASCII letters.
pub fn new_instance_name() -> String {
    format!("channels_{}", random_letters(12))
}

/// A connection's channel name: `<instance>!<12 letters>`.
pub fn new_channel_name(instance: &str) -> String {
    format!("{instance}!{}", random_letters(12))
}

fn random_letters(n: usize) -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| LETTERS[rng.gen_range(0..LETTERS.len())] as char)
        .collect()
}

/// Delivers within this process.
pub struct MemoryBroker {
    hub: Arc<Hub>,
    instance: String,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>) -> MemoryBroker {
        MemoryBroker {
            hub,
            instance: new_instance_name(),
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn group_send(&self, group: &str, event: Event) -> Result<Published, PublishError> {
        let d = self
            .hub
            .deliver_group(group, &event)
            .map_err(PublishError::Invalid)?;
        Ok(Published { local: d.delivered })
    }

    async fn send(&self, channel: &str, event: Event) -> Result<Published, PublishError> {
        let d = self
            .hub
            .deliver_channel(channel, &event)
            .map_err(PublishError::Invalid)?;
        Ok(Published { local: d.delivered })
    }

    fn is_ready(&self) -> bool {
        true
    }

    fn instance(&self) -> &str {
        &self.instance
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(keys: &str) -> Result<BrokerConfig, Vec<String>> {
        let text = format!(
            "[upstream]\nservers = [\"127.0.0.1:8050\"]\n[broker]\nkind = \"amqp\"\n{keys}\n"
        );
        crate::config::Config::parse(&text, std::path::Path::new("t.toml"))
            .map(|c| c.broker)
            .map_err(|e| e.errors.iter().map(|e| e.to_string()).collect())
    }

    fn urls(c: BrokerConfig) -> Vec<String> {
        match c {
            BrokerConfig::Amqp(a) => a.urls,
            BrokerConfig::Memory => panic!("amqp expected"),
        }
    }

    #[test]
    fn url_is_one_node_or_a_list() {
        assert_eq!(
            urls(broker("").unwrap()),
            vec![DEFAULT_AMQP_URL.to_string()]
        );
        assert_eq!(
            urls(broker("url = \"amqp://a:b@h1/%2f\"").unwrap()),
            vec!["amqp://a:b@h1/%2f".to_string()]
        );
        assert_eq!(
            urls(broker("url = [\"amqp://h1/%2f\", \"amqp://h2:5673/%2f\"]").unwrap()),
            vec![
                "amqp://h1/%2f".to_string(),
                "amqp://h2:5673/%2f".to_string()
            ]
        );
        let e = broker("url = []").unwrap_err();
        assert!(e[0].contains("must name 1 to 16 RabbitMQ nodes"), "{e:?}");
        let e = broker("url = [\"amqp://h1/%2f\", \"http://x:secret@h2/\"]").unwrap_err();
        assert!(
            e[0].contains("is not an AMQP URL") && !e[0].contains("secret"),
            "{e:?}"
        );
        assert!(broker("url = 5").is_err());
    }

    #[test]
    fn names_follow_channels_rabbitmq() {
        let i = new_instance_name();
        assert!(
            i.starts_with("channels_")
                && i.len() == 21
                && i[9..].chars().all(|c| c.is_ascii_alphabetic())
        );
        let c = new_channel_name(&i);
        assert_eq!(c.split_once('!').unwrap().0, i);
        assert_eq!(c.len(), 34);
    }
}
