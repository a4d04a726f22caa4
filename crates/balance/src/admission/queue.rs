//! The admission queue: waiters ordered by priority class, then arrival.
//!
//! A [`ClassQueue`] holds whatever the caller uses to wake a waiter (the
//! proxy stores a one-shot sender) under a key `(rank, sequence)`: rank 0 is
//! the most important class, the sequence number orders arrivals. It is an
//! ordered map rather than a binary heap because admission control needs
//! *both* ends cheaply:
//!
//! * the **front** (most important class, oldest waiter) is the next to be
//!   admitted when a slot frees;
//! * the **back** (least important class, newest waiter) is the first to be
//!   shed when the queue is full and a more important request arrives —
//!   newest first within a class, because it has invested least in waiting
//!   (tail drop);
//!
//! and a waiter that gives up (queue timeout, client gone) removes itself by
//! its [`Ticket`] in O(log n) instead of leaving a tombstone behind.

use std::collections::BTreeMap;

/// Identifies one queued waiter, for [`ClassQueue::remove`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket {
    /// Class rank (0 = most important).
    pub rank: u8,
    /// Arrival order.
    pub seq: u64,
}

/// What happened to a waiter offered to a full or non-full queue.
#[derive(Debug)]
pub enum Enqueued<T> {
    /// Queued; nobody was displaced.
    Queued(Ticket),
    /// Queued by displacing the least important, newest waiter, which the
    /// caller must now shed.
    Displaced(Ticket, Ticket, T),
    /// The queue is full of waiters at least as important: shed this one.
    Full(T),
}

/// A bounded queue of waiters ordered by class rank, then arrival.
#[derive(Debug)]
pub struct ClassQueue<T> {
    waiters: BTreeMap<Ticket, T>,
    capacity: usize,
    next_seq: u64,
}

impl<T> ClassQueue<T> {
    /// An empty queue holding at most `capacity` waiters (0: nobody waits).
    pub fn new(capacity: usize) -> Self {
        Self {
            waiters: BTreeMap::new(),
            capacity,
            next_seq: 0,
        }
    }

    /// Waiters queued.
    pub fn len(&self) -> usize {
        self.waiters.len()
    }

    /// True when nobody waits.
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Most waiters held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waiters queued with this rank.
    pub fn len_of(&self, rank: u8) -> usize {
        self.waiters
            .range(
                Ticket { rank, seq: 0 }..=Ticket {
                    rank,
                    seq: u64::MAX,
                },
            )
            .count()
    }

    /// Offers a waiter of class `rank`. When the queue is full, the least
    /// important newest waiter is displaced if it is strictly less important
    /// than `rank`; otherwise the offered waiter is refused.
    pub fn push(&mut self, rank: u8, waiter: T) -> Enqueued<T> {
        let ticket = Ticket {
            rank,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        if self.waiters.len() < self.capacity {
            self.waiters.insert(ticket, waiter);
            return Enqueued::Queued(ticket);
        }
        match self.waiters.last_key_value() {
            Some((&last, _)) if last.rank > rank => {
                let (last, displaced) = self.waiters.pop_last().expect("non-empty");
                self.waiters.insert(ticket, waiter);
                Enqueued::Displaced(ticket, last, displaced)
            }
            _ => Enqueued::Full(waiter),
        }
    }

    /// Takes the next waiter to admit: most important class, oldest first.
    pub fn pop(&mut self) -> Option<T> {
        self.waiters.pop_first().map(|(_, w)| w)
    }

    /// Removes a waiter that gave up; `None` when it already left (admitted
    /// or displaced).
    pub fn remove(&mut self, ticket: Ticket) -> Option<T> {
        self.waiters.remove(&ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_admits_by_class_then_arrival() {
        let mut q = ClassQueue::new(10);
        for (rank, name) in [
            (2, "bulk1"),
            (0, "crit1"),
            (1, "norm1"),
            (0, "crit2"),
            (2, "bulk2"),
        ] {
            assert!(matches!(q.push(rank, name), Enqueued::Queued(_)));
        }
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["crit1", "crit2", "norm1", "bulk1", "bulk2"]);
    }

    #[test]
    fn queue_full_displaces_the_newest_of_the_lowest_class() {
        let mut q = ClassQueue::new(3);
        q.push(2, "bulk1");
        q.push(2, "bulk2");
        q.push(1, "norm1");
        match q.push(0, "crit1") {
            Enqueued::Displaced(_, gone, w) => {
                assert_eq!(w, "bulk2");
                assert_eq!(gone.rank, 2);
            }
            other => panic!("{other:?}"),
        }
        // A bulk request cannot displace anyone: nobody is less important.
        assert!(matches!(q.push(2, "bulk3"), Enqueued::Full("bulk3")));
        assert_eq!(q.len(), 3);
        assert_eq!(q.len_of(2), 1);
    }

    #[test]
    fn queue_equal_class_does_not_displace() {
        let mut q = ClassQueue::new(1);
        q.push(1, "a");
        assert!(matches!(q.push(1, "b"), Enqueued::Full("b")));
        assert_eq!(q.pop(), Some("a"));
    }

    #[test]
    fn queue_remove_forgets_a_waiter_that_gave_up() {
        let mut q = ClassQueue::new(4);
        let Enqueued::Queued(t) = q.push(1, "a") else {
            panic!()
        };
        q.push(1, "b");
        assert_eq!(q.remove(t), Some("a"));
        assert_eq!(q.remove(t), None);
        assert_eq!(q.pop(), Some("b"));
        assert!(q.is_empty());
    }

    #[test]
    fn queue_of_capacity_zero_holds_nobody() {
        let mut q = ClassQueue::new(0);
        assert!(matches!(q.push(0, "a"), Enqueued::Full("a")));
    }
}
