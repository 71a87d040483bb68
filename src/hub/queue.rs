//! A member's outbound queue: bounded in messages and in bytes, filled by the hub without
//! waiting, emptied by the connection's task. It also carries the kick (close now, ahead of
//! what is queued).
//!
//! Built for many idle connections: an empty queue owns no buffer (tokio's bounded mpsc
//! allocates a 32-slot block up front, ~2 KiB per connection), and a queue that grew in a
//! burst gives its buffer back once it drains.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Outbound;

/// A drained queue whose buffer holds more than this many slots frees it.
const KEEP_SLOTS: usize = 16;

pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct State {
    items: VecDeque<Outbound>,
    /// The payload bytes of `items`.
    bytes: usize,
    /// The close code the connection was kicked with; 0 when not kicked.
    kick: u16,
    /// The connection is gone: offers are refused.
    closed: bool,
}

impl State {
    fn pop(&mut self) -> Option<Outbound> {
        let item = self.items.pop_front();
        if let Some(i) = &item {
            self.bytes -= weight(i);
        }
        if self.items.is_empty() && self.items.capacity() > KEEP_SLOTS {
            self.items = VecDeque::new();
        }
        item
    }
}

/// The bytes a queued item holds: the frame's payload, or the close reason.
fn weight(out: &Outbound) -> usize {
    match out {
        Outbound::Frame(m) => m.len(),
        Outbound::Close(_, reason) => reason.len(),
    }
}

/// Why [`Queue::offer`] did not queue a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    Closed,
}

/// What [`Queue::recv`] found.
#[derive(Debug, PartialEq)]
pub enum Recv {
    Item(Outbound),
    /// Close now with this code, whatever is still queued.
    Kicked(u16),
}

impl Queue {
    /// A queue that holds up to `capacity` messages (at least one) and `max_bytes` of
    /// payload. An empty queue takes one message of any size, so a message larger than the
    /// whole byte bound still reaches a client that keeps up.
    pub fn new(capacity: usize, max_bytes: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            max_bytes,
        }
    }

    // A poisoned lock means a panic while holding it, in code that does not panic; the
    // state (a queue and two flags) stays consistent, so go on with it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `out` unless the queue is full or closed. Never waits.
    pub fn offer(&self, out: Outbound) -> Result<(), Refused> {
        {
            let mut s = self.lock();
            if s.closed {
                return Err(Refused::Closed);
            }
            let w = weight(&out);
            if s.items.len() >= self.capacity
                || (!s.items.is_empty() && s.bytes + w > self.max_bytes)
            {
                return Err(Refused::Full);
            }
            s.bytes += w;
            s.items.push_back(out);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Tells the connection to close with `code`; the first kick wins.
    pub fn kick(&self, code: u16) {
        {
            let mut s = self.lock();
            if s.kick != 0 || s.closed {
                return;
            }
            s.kick = code;
        }
        self.notify.notify_one();
    }

    /// The next message without waiting; `None` when the queue is empty or kicked.
    pub fn try_recv(&self) -> Option<Outbound> {
        let mut s = self.lock();
        if s.kick != 0 {
            return None;
        }
        s.pop()
    }

    /// Waits for the kick or the next message. Cancel-safe: a message is taken out only
    /// in the poll that returns it.
    pub async fn recv(&self) -> Recv {
        loop {
            {
                let mut s = self.lock();
                if s.kick != 0 {
                    return Recv::Kicked(s.kick);
                }
                if let Some(item) = s.pop() {
                    return Recv::Item(item);
                }
            }
            // A message offered after the check above leaves a permit behind, so this
            // returns at once and the loop finds it.
            self.notify.notified().await;
        }
    }

    /// Refuses further offers and drops what is queued.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.items = VecDeque::new();
        s.bytes = 0;
    }

    /// Payload bytes queued now.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio_tungstenite::tungstenite::Message;

    fn text(s: &str) -> Outbound {
        Outbound::Frame(Message::Text(s.into()))
    }

    #[test]
    fn bounded_and_closable() {
        let q = Queue::new(2, usize::MAX);
        assert_eq!(q.offer(text("a")), Ok(()));
        assert_eq!(q.offer(text("b")), Ok(()));
        assert_eq!(q.offer(text("c")), Err(Refused::Full));
        assert_eq!(q.try_recv(), Some(text("a")));
        assert_eq!(q.offer(text("c")), Ok(()));
        assert_eq!(q.len(), 2);
        q.close();
        assert_eq!(q.offer(text("d")), Err(Refused::Closed));
        assert!(q.is_empty());
    }

    #[test]
    fn bounded_in_bytes_too() {
        let q = Queue::new(100, 10);
        let big = Outbound::Frame(Message::Text("x".repeat(25).into()));
        // An empty queue takes one message of any size...
        assert_eq!(q.offer(big.clone()), Ok(()));
        // ...but nothing more until it drains.
        assert_eq!(q.offer(text("a")), Err(Refused::Full));
        assert_eq!(q.bytes(), 25);
        assert_eq!(q.try_recv(), Some(big));
        assert_eq!(q.bytes(), 0);
        for s in ["0123", "4567", "89"] {
            assert_eq!(q.offer(text(s)), Ok(()));
        }
        assert_eq!(q.bytes(), 10);
        assert_eq!(q.offer(text("z")), Err(Refused::Full), "11 bytes > 10");
        assert_eq!(q.try_recv(), Some(text("0123")));
        assert_eq!(q.offer(text("z")), Ok(()));
        assert_eq!(q.bytes(), 7);
        // Ten 1 MiB messages to a client that never reads: only one is held at 1 MiB.
        let q = Queue::new(256, 1 << 20);
        let mib = Outbound::Frame(Message::Binary(vec![0u8; 1 << 20].into()));
        let taken = (0..10).filter(|_| q.offer(mib.clone()).is_ok()).count();
        assert_eq!(taken, 1);
        q.close();
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back() {
        let q = Queue::new(1000, usize::MAX);
        for i in 0..100 {
            q.offer(text(&i.to_string())).unwrap();
        }
        for i in 0..100 {
            assert_eq!(q.try_recv(), Some(text(&i.to_string())));
        }
        assert_eq!(q.lock().items.capacity(), 0);
        // A small queue keeps its buffer: steady traffic does not reallocate.
        q.offer(text("x")).unwrap();
        q.try_recv();
        q.offer(text("y")).unwrap();
        q.try_recv();
        assert!(q.lock().items.capacity() > 0);
    }

    #[tokio::test]
    async fn kick_overtakes_a_full_queue() {
        let q = Queue::new(1, usize::MAX);
        q.offer(text("a")).unwrap();
        q.kick(1013);
        q.kick(1001); // the first kick wins
        assert_eq!(q.recv().await, Recv::Kicked(1013));
        assert_eq!(q.try_recv(), None);
    }

    #[tokio::test]
    async fn wakes_a_waiting_receiver_and_loses_nothing() {
        let q = Arc::new(Queue::new(10_000, usize::MAX));
        let producer = {
            let q = q.clone();
            tokio::spawn(async move {
                for i in 0..5000u32 {
                    while q.offer(text(&i.to_string())).is_err() {
                        tokio::task::yield_now().await;
                    }
                    if i % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        };
        for i in 0..5000u32 {
            // Drop some recv futures mid-wait, as the session's select! does.
            loop {
                tokio::select! {
                    r = q.recv() => {
                        assert_eq!(r, Recv::Item(text(&i.to_string())));
                        break;
                    }
                    _ = tokio::task::yield_now() => {}
                }
            }
        }
        producer.await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(20), q.recv())
            .await
            .is_err());
    }
}
