//! Client protocols: what the frames on a route mean. `channels` (the default) is the
//! route's `inbound` mode over fixed groups ([`crate::ws`]); `awx` is AWX's subscription
//! protocol ([`awx`]); `amqp-bridge` is the CLU pass-through ([`bridge`]). Each is a small
//! module over the shared connection and hub machinery.

pub mod awx;
pub mod bridge;

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use pingora::http::RequestHeader;

use crate::hub::Member;
use crate::ws::{Conn, Endpoint};

/// Per-group decisions cached per connection, at most this many.
const MAX_CACHED: usize = 4096;

/// Groups a client subscribed to after connecting (AWX), with the authorization answers
/// seen so far. The session leaves them all when it ends.
#[derive(Default)]
pub struct Subscriptions {
    pub dynamic: BTreeSet<String>,
    cache: HashMap<String, bool>,
}

/// `*` matches any run of characters.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first)
        || !name[first.len()..].ends_with(last)
        || name.len() < first.len() + last.len()
    {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Subscriptions {
    /// May this connection join `group`? The auth answer's `subscribe` patterns allow
    /// without asking; otherwise the route's `authorize` path is asked (once per group);
    /// with neither configured every group is allowed.
    pub async fn authorized(&mut self, ep: &Endpoint, conn: &Conn, group: &str) -> bool {
        if let Some(v) = self.cache.get(group) {
            return *v;
        }
        let by_pattern = conn
            .subscribe
            .as_ref()
            .map(|ps| ps.iter().any(|p| glob(p, group)));
        let allowed = match (by_pattern, &conn.route.authorize) {
            (Some(true), _) => true,
            (_, Some(cfg)) => ask(ep, conn, &cfg.path, cfg.timeout, group).await,
            (Some(false), None) => false,
            (None, None) => true,
        };
        if self.cache.len() < MAX_CACHED {
            self.cache.insert(group.to_string(), allowed);
        }
        allowed
    }

    /// Makes `wanted` the subscription set; returns (left, joined).
    pub fn replace(
        &mut self,
        ep: &Endpoint,
        member: &Member,
        wanted: BTreeSet<String>,
    ) -> (Vec<String>, Vec<String>) {
        let left: Vec<String> = self.dynamic.difference(&wanted).cloned().collect();
        let joined: Vec<String> = wanted.difference(&self.dynamic).cloned().collect();
        for g in &left {
            ep.hub.leave(g, member.id);
        }
        for g in &joined {
            ep.hub.join(g, member);
        }
        self.dynamic = wanted;
        (left, joined)
    }

    pub fn leave_all(&mut self, ep: &Endpoint, member: &Member) {
        for g in std::mem::take(&mut self.dynamic) {
            ep.hub.leave(&g, member.id);
        }
    }
}

/// `GET path?group=<group>` with the client's credentials; 2xx allows.
async fn ask(
    ep: &Endpoint,
    conn: &Conn,
    path: &str,
    timeout: std::time::Duration,
    group: &str,
) -> bool {
    let target = format!(
        "{path}{}group={group}",
        if path.contains('?') { '&' } else { '?' }
    );
    let build = || -> pingora::Result<RequestHeader> {
        let mut req = RequestHeader::build("GET", target.as_bytes(), None)?;
        for (name, v) in &conn.credentials {
            req.insert_header(*name, v.clone())?;
        }
        if !req.headers.contains_key("host") {
            req.insert_header("host", "localhost")?;
        }
        req.insert_header("x-channelgate-channel", conn.channel.as_str())?;
        req.insert_header("x-channelgate-group", group)?;
        if let Some(u) = &conn.user {
            req.insert_header("x-channelgate-user", u.as_str())?;
        }
        Ok(req)
    };
    let outcome = match build() {
        Ok(req) => ep.upstreams.call(req, Bytes::new(), timeout).await,
        Err(e) => {
            crate::client_warn!("authorize_unbuildable", error = %e, "cannot build the authorize request");
            return false;
        }
    };
    match outcome {
        Ok(a) => (200..300).contains(&a.status),
        Err(e) => {
            ep.metrics
                .ws
                .inbound
                .with_label_values(&["authorize", "error"])
                .inc();
            crate::client_warn!("authorize_failed", channel = %conn.channel, group, error = %e, "authorize request failed; denying");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("jobs-*", "jobs-status_changed"));
        assert!(glob("job_events-12", "job_events-12"));
        assert!(!glob("job_events-12", "job_events-13"));
        assert!(glob("*", "x"));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxc"));
        assert!(!glob("ab*ba", "aba"));
    }
}
