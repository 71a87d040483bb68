//! The broker's bindings as a set reconciled against RabbitMQ, not a queue of requests.
//!
//! The hub is the source of truth for which groups should be bound (those with local
//! members). [`Pending`] only remembers *which* groups may have changed since the last
//! pass, and only while connected: after a (re)connect every binding is replayed from the
//! hub anyway. Its memory is bounded: past [`MAX_PENDING`] distinct groups it collapses to
//! "reconcile everything", so churn while RabbitMQ is slow or away costs nothing.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Distinct changed groups remembered before falling back to a full reconcile.
pub const MAX_PENDING: usize = 4096;

/// What one reconcile pass must look at.
#[derive(Debug, PartialEq, Eq)]
pub enum Work {
    /// Nothing changed.
    Nothing,
    /// These groups may have changed.
    Groups(Vec<String>),
    /// Compare every group of the hub with every bound group.
    Everything,
}

#[derive(Default)]
struct State {
    connected: bool,
    full: bool,
    groups: HashSet<String>,
}

/// Groups whose binding may be out of line with the hub, bounded by [`MAX_PENDING`].
#[derive(Default)]
pub struct Pending {
    state: Mutex<State>,
    changed: Notify,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `group` gained its first or lost its last local member.
    pub fn mark(&self, group: &str) {
        let mut s = self.lock();
        if !s.connected || s.full {
            return; // the replay after connecting, or the full pass, covers it
        }
        if s.groups.len() >= MAX_PENDING {
            s.groups = HashSet::new();
            s.full = true;
        } else if !s.groups.contains(group) {
            s.groups.insert(group.to_string());
        }
        drop(s);
        self.changed.notify_one();
    }

    /// A session starts: changes from now on are remembered (call before the replay
    /// reads the hub, so that no change falls between the two).
    pub fn connected(&self) {
        *self.lock() = State {
            connected: true,
            ..State::default()
        };
    }

    /// The session ended: forget everything; the next replay starts from the hub.
    pub fn disconnected(&self) {
        *self.lock() = State::default();
    }

    /// Takes what changed since the last call.
    pub fn take(&self) -> Work {
        let mut s = self.lock();
        if std::mem::take(&mut s.full) {
            s.groups.clear();
            Work::Everything
        } else if s.groups.is_empty() {
            Work::Nothing
        } else {
            Work::Groups(s.groups.drain().collect())
        }
    }

    /// Resolves after a [`mark`](Self::mark) (at once if one happened since the last wait).
    pub async fn wait(&self) {
        self.changed.notified().await
    }

    /// Remembered groups (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The binding changes that bring `bound` in line with `desired`: (to bind, to unbind).
pub fn diff(desired: &HashSet<String>, bound: &HashSet<String>) -> (Vec<String>, Vec<String>) {
    let bind = desired.difference(bound).cloned().collect();
    let unbind = bound.difference(desired).cloned().collect();
    (bind, unbind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_while_disconnected_are_not_kept() {
        let p = Pending::default();
        for i in 0..10_000 {
            p.mark(&format!("g{i}"));
        }
        assert!(p.is_empty());
        assert_eq!(p.take(), Work::Nothing);
    }

    #[test]
    fn churn_is_bounded_and_collapses_to_a_full_pass() {
        let p = Pending::default();
        p.connected();
        p.mark("a");
        p.mark("a");
        assert_eq!(p.take(), Work::Groups(vec!["a".into()]));
        for i in 0..MAX_PENDING * 3 {
            p.mark(&format!("g{i}"));
        }
        assert!(p.len() <= MAX_PENDING);
        assert_eq!(p.take(), Work::Everything);
        assert_eq!(p.take(), Work::Nothing);
        p.disconnected();
        p.mark("b");
        assert_eq!(p.take(), Work::Nothing);
    }

    #[tokio::test]
    async fn a_mark_before_the_wait_is_not_lost() {
        let p = Pending::default();
        p.connected();
        p.mark("a");
        tokio::time::timeout(std::time::Duration::from_secs(5), p.wait())
            .await
            .expect("woken");
    }

    #[test]
    fn diff_binds_the_missing_and_unbinds_the_stale() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        let (mut b, u) = diff(&set(&["a", "b", "c"]), &set(&["c", "d"]));
        b.sort();
        assert_eq!((b, u), (vec!["a".into(), "b".into()], vec!["d".into()]));
    }
}
