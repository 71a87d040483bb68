//! The AWX / Tower subscription protocol (`protocol = "awx"`), as awx/main/consumers.py
//! speaks it: after the 101 the server sends `{"accept": true, "user": <id>}`; the client
//! sends `{"groups": {"jobs": ["status_changed"], "job_events": [12]}, "xrftoken": ...}`,
//! which REPLACES its subscriptions (list entry `v` of key `k` is group `k-v`), and gets
//! `{"groups_current", "groups_left", "groups_joined"}` back. Refusals use AWX's words.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::{ClientProtocol, Ctx, Subscriptions};
use crate::hub::{check_group_name, Membership, Outbound};
use crate::ws::frame::Message;
use crate::ws::prepared::Prepared;
use crate::ws::{Conn, Endpoint};

const DENIED: &str = "access denied to channel";

/// One AWX connection: its authorization answers so far (its subscriptions live in its
/// membership).
#[derive(Default)]
pub struct Awx {
    subs: Subscriptions,
}

#[async_trait::async_trait]
impl ClientProtocol for Awx {
    /// The first message: `{"accept": true, "user": <id>}` (a number when the id is one).
    fn open(&mut self, cx: &Ctx) {
        let user = match cx.conn.user.as_deref() {
            Some(u) => u
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::from(u)),
            None => Value::Null,
        };
        cx.send_json(&json!({"accept": true, "user": user}));
    }

    async fn message(&mut self, cx: &Ctx, msg: Message) {
        handle(&cx.ep, &cx.conn, &cx.membership, &mut self.subs, msg).await
    }
}

/// The group name AWX forms from a key and a list entry: `format('{}-{}', key, oid)`.
fn group_name(key: &str, oid: &Value) -> String {
    match oid {
        Value::String(s) => format!("{key}-{s}"),
        Value::Bool(b) => format!("{key}-{}", if *b { "True" } else { "False" }),
        Value::Null => format!("{key}-None"),
        other => format!("{key}-{other}"),
    }
}

fn oid_text(oid: &Value) -> String {
    match oid {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn count(ep: &Endpoint, outcome: &str) {
    ep.metrics
        .ws
        .inbound
        .with_label_values(&["awx", outcome])
        .inc();
}

/// Sends `v` to the client through its queue.
fn reply(membership: &Membership, v: Value) {
    membership.send(Outbound::Frame(std::sync::Arc::new(Prepared::text(
        &v.to_string(),
    ))));
}

/// One client message, beside the connection's loop ([`crate::ws::calls`]). `max_groups`
/// is checked before the app is asked anything, so one frame costs the app at most
/// `max_groups` authorize calls, [`super::AUTHORIZE_CONCURRENCY`] at a time.
pub async fn handle(
    ep: &Endpoint,
    conn: &Conn,
    membership: &Membership,
    subs: &mut Subscriptions,
    msg: Message,
) {
    let Message::Text(text) = msg else {
        return count(ep, "ignored");
    };
    let data: Value = match serde_json::from_str(&text) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => return count(ep, "ignored"),
    };
    let xrf_ok = match (
        data.get("xrftoken").and_then(Value::as_str),
        conn.csrftoken.as_deref(),
    ) {
        (Some(given), Some(expected)) => !given.is_empty() && given == expected,
        _ => false,
    };
    if !xrf_ok {
        count(ep, "xrf_mismatch");
        return reply(membership, json!({"error": DENIED}));
    }
    let Some(groups) = data.get("groups") else {
        return count(ep, "ok");
    };
    let Some(groups) = groups.as_object() else {
        count(ep, "bad_request");
        return reply(membership, json!({"error": DENIED}));
    };
    if groups.values().any(|v| !v.is_array()) {
        // AWX refuses the whole message when a value is not a list.
        count(ep, "bad_request");
        return reply(membership, json!({"error": DENIED}));
    }
    // Every (key, id) the client names, each group once; more than `max_groups` is
    // refused before anything else is done.
    let limit = conn.route.max_groups;
    let mut asked: Vec<(&String, &Value, String)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (key, oids) in groups {
        for oid in oids.as_array().into_iter().flatten() {
            let name = group_name(key, oid);
            if seen.insert(name.clone()) {
                if seen.len() > limit {
                    count(ep, "too_many_groups");
                    let error = format!("{DENIED}: at most {limit} groups per connection");
                    return reply(membership, json!({ "error": error }));
                }
                asked.push((key, oid, name));
            }
        }
    }
    let valid = |name: &str| check_group_name(name).is_ok();
    let unknown: Vec<String> = asked
        .iter()
        .filter(|(_, _, n)| valid(n) && subs.decided(conn, n).is_none())
        .map(|(_, _, n)| n.clone())
        .collect();
    let answers = subs.ask_all(ep, conn, &unknown).await;
    let answers: HashMap<String, bool> = unknown.into_iter().zip(answers).collect();
    let mut wanted = BTreeSet::new();
    for (key, oid, name) in asked {
        let allowed = valid(&name)
            && subs
                .decided(conn, &name)
                // Asked just now (and not cached when the cache is full).
                .or_else(|| answers.get(&name).copied())
                .unwrap_or(false);
        if allowed {
            wanted.insert(name);
        } else {
            count(ep, "denied");
            let error = format!("{DENIED} {key} for resource id {}", oid_text(oid));
            reply(membership, json!({ "error": error }));
        }
    }
    let (left, joined) = membership.replace(wanted);
    count(ep, "ok");
    reply(
        membership,
        json!({"groups_current": membership.subscribed(), "groups_left": left, "groups_joined": joined}),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_groups_like_awx() {
        assert_eq!(
            group_name("jobs", &json!("status_changed")),
            "jobs-status_changed"
        );
        assert_eq!(group_name("job_events", &json!(12)), "job_events-12");
        assert_eq!(oid_text(&json!(13)), "13");
        assert_eq!(group_name("x", &json!(true)), "x-True");
    }
}

#[cfg(test)]
mod session_tests {
    //! The AWX protocol over an in-memory stream: the real session, a tokio-tungstenite
    //! client speaking as awx's UI does.
    use futures::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio_tungstenite::tungstenite::Message as Ws;

    use crate::hub::Event;
    use crate::ws::testing::{endpoint, serve, Who};

    async fn next_json(
        client: &mut tokio_tungstenite::WebSocketStream<tokio::io::DuplexStream>,
    ) -> Value {
        loop {
            match client.next().await {
                Some(Ok(Ws::Text(t))) => return serde_json::from_str(&t).unwrap(),
                Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    fn awx() -> std::sync::Arc<crate::ws::Endpoint> {
        endpoint(
            "127.0.0.1:1",
            "[[ws]]\npath = \"/websocket/\"\nprotocol = \"awx\"\nmax_groups = 3\n",
        )
    }

    fn user() -> Who {
        Who {
            user: Some("7".into()),
            csrftoken: Some("tok".into()),
            subscribe: Some(vec!["jobs-*".into(), "job_events-*".into()]),
            ..Who::default()
        }
    }

    #[tokio::test]
    async fn greets_subscribes_and_delivers() {
        let ep = awx();
        let (m, mut client) = serve(&ep, 0, user()).await;
        assert_eq!(
            next_json(&mut client).await,
            json!({"accept": true, "user": 7})
        );
        let sub =
            json!({"groups": {"jobs": ["status_changed"], "job_events": [12]}, "xrftoken": "tok"});
        client.send(Ws::Text(sub.to_string().into())).await.unwrap();
        let answer = next_json(&mut client).await;
        assert_eq!(
            answer["groups_current"],
            json!(["job_events-12", "jobs-status_changed"])
        );
        assert_eq!(answer["groups_left"], json!([]));
        let ev = Event::from_json(json!({"type": "job_event", "counter": 1})).unwrap();
        assert_eq!(
            ep.hub
                .deliver_group("job_events-12", &ev)
                .unwrap()
                .delivered,
            1
        );
        assert_eq!(next_json(&mut client).await["counter"], 1);
        // A new subscription replaces the old one.
        let sub = json!({"groups": {"jobs": ["status_changed"]}, "xrftoken": "tok"});
        client.send(Ws::Text(sub.to_string().into())).await.unwrap();
        let answer = next_json(&mut client).await;
        assert_eq!(answer["groups_left"], json!(["job_events-12"]));
        assert_eq!(m.subscribed(), vec!["jobs-status_changed".to_string()]);
        assert!(!ep.hub.has_group("job_events-12"));
    }

    #[tokio::test]
    async fn refuses_in_awx_words() {
        let ep = awx();
        let (m, mut client) = serve(&ep, 0, user()).await;
        next_json(&mut client).await;
        let wrong_token = json!({"groups": {"jobs": ["x"]}, "xrftoken": "nope"});
        client
            .send(Ws::Text(wrong_token.to_string().into()))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut client).await,
            json!({"error": "access denied to channel"})
        );
        let not_allowed = json!({"groups": {"inventories": [1]}, "xrftoken": "tok"});
        client
            .send(Ws::Text(not_allowed.to_string().into()))
            .await
            .unwrap();
        assert_eq!(
            next_json(&mut client).await["error"],
            "access denied to channel inventories for resource id 1"
        );
        next_json(&mut client).await; // the groups answer
        let too_many = json!({"groups": {"jobs": [1, 2, 3, 4]}, "xrftoken": "tok"});
        client
            .send(Ws::Text(too_many.to_string().into()))
            .await
            .unwrap();
        let error = next_json(&mut client).await["error"].to_string();
        assert!(error.contains("at most 3 groups"), "{error}");
        assert!(m.subscribed().is_empty());
        // Not JSON: ignored, the connection stays.
        client.send(Ws::Text("{".into())).await.unwrap();
        client.send(Ws::Ping(vec![1].into())).await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Ws::Pong(vec![1].into())
        );
    }
}
