//! Admission control: priority classes, a concurrency limit, a queue, and
//! shedding of the least important work first.
//!
//! HAProxy has priority queues but no adaptive limit; Envoy has an adaptive
//! limit but sheds without regard to priority. A [`Controller`] does both:
//!
//! 1. a request of class `rank` (0 = most important) arrives;
//! 2. if fewer than [`Limit::current`] requests are in flight and nobody
//!    waits, it is admitted at once;
//! 3. otherwise it waits in a [`ClassQueue`] ordered by class, then arrival;
//!    when the queue is full, the least important newest waiter is shed to
//!    make room — or the arrival itself when nobody queued is less
//!    important;
//! 4. each completion frees a slot ([`Controller::release`]), feeds the
//!    limit its round-trip time, and admits the front of the queue;
//! 5. a waiter whose queue timeout passes leaves ([`Controller::cancel`])
//!    and is shed by the caller.
//!
//! The controller is a plain data structure: the caller supplies the
//! waiter handle `T` (the proxy uses a one-shot sender), holds it under its
//! own lock for the few instructions a call takes, and wakes the returned
//! waiters after unlocking. Time is passed in.

mod limit;
mod queue;

pub use limit::{
    GradientConfig, GradientLimit, Limit, DEFAULT_MIN_RTT_INTERVAL, DEFAULT_TOLERANCE,
    DEFAULT_WINDOW,
};
pub use queue::{ClassQueue, Enqueued, Ticket};

use crate::Nanos;

/// The outcome of [`Controller::admit`].
#[derive(Debug)]
pub enum Admit<T> {
    /// Admitted: a slot is taken; call [`Controller::release`] when done.
    Now,
    /// Queued: wait to be woken, or [`cancel`](Controller::cancel) at the
    /// queue timeout.
    Wait(Ticket),
    /// Queued after displacing a less important waiter, returned here for
    /// the caller to shed.
    WaitDisplacing(Ticket, T),
    /// Refused: the queue is full of waiters at least as important.
    Shed(T),
}

/// A cluster's admission state: in-flight count, limit and queue.
#[derive(Debug)]
pub struct Controller<T> {
    limit: Limit,
    in_flight: u32,
    queue: ClassQueue<T>,
}

impl<T> Controller<T> {
    /// A controller with nothing in flight.
    pub fn new(limit: Limit, max_queue: usize) -> Self {
        Self {
            limit,
            in_flight: 0,
            queue: ClassQueue::new(max_queue),
        }
    }

    /// Requests admitted and not yet released.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Waiters queued.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Waiters of class `rank` queued.
    pub fn queued_of(&self, rank: u8) -> usize {
        self.queue.len_of(rank)
    }

    /// The current concurrency limit.
    pub fn limit(&self) -> u32 {
        self.limit.current()
    }

    /// Offers a request of class `rank`; `waiter` is what wakes it later.
    pub fn admit(&mut self, rank: u8, waiter: T) -> Admit<T> {
        if self.in_flight < self.limit.current() && self.queue.is_empty() {
            self.in_flight += 1;
            return Admit::Now;
        }
        match self.queue.push(rank, waiter) {
            Enqueued::Queued(t) => Admit::Wait(t),
            Enqueued::Displaced(t, _, w) => Admit::WaitDisplacing(t, w),
            Enqueued::Full(w) => Admit::Shed(w),
        }
    }

    /// Frees one slot at `now`; `rtt` is the finished request's round trip
    /// when it should teach the limit (a success), `None` otherwise (an
    /// error, or a slot handed to a waiter that had already gone). Waiters
    /// now admitted are pushed to `woken`, each holding a slot.
    pub fn release(&mut self, now: Nanos, rtt: Option<Nanos>, woken: &mut Vec<T>) {
        if let Some(rtt) = rtt {
            self.limit.sample(now, rtt, self.in_flight);
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        self.wake(woken);
    }

    /// Removes a waiter that gave up. `false` when it is no longer queued
    /// (it was admitted or displaced meanwhile).
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        self.queue.remove(ticket).is_some()
    }

    fn wake(&mut self, woken: &mut Vec<T>) {
        while self.in_flight < self.limit.current() {
            let Some(w) = self.queue.pop() else { break };
            self.in_flight += 1;
            woken.push(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_queues_past_the_limit_and_admits_by_class() {
        let mut c = Controller::new(Limit::Static(2), 10);
        assert!(matches!(c.admit(1, "a"), Admit::Now));
        assert!(matches!(c.admit(1, "b"), Admit::Now));
        assert!(matches!(c.admit(2, "bulk"), Admit::Wait(_)));
        assert!(matches!(c.admit(0, "crit"), Admit::Wait(_)));
        assert_eq!((c.in_flight(), c.queued()), (2, 2));
        let mut woken = Vec::new();
        c.release(1, Some(10), &mut woken);
        assert_eq!(woken, ["crit"]);
        c.release(2, Some(10), &mut woken);
        assert_eq!(woken, ["crit", "bulk"]);
        assert_eq!((c.in_flight(), c.queued()), (2, 0));
    }

    #[test]
    fn controller_arrivals_do_not_overtake_waiters() {
        let mut c = Controller::new(Limit::Static(1), 10);
        assert!(matches!(c.admit(1, "a"), Admit::Now));
        assert!(matches!(c.admit(1, "b"), Admit::Wait(_)));
        let mut woken = Vec::new();
        c.release(1, None, &mut woken);
        assert_eq!(woken, ["b"]);
        assert!(matches!(c.admit(1, "c"), Admit::Wait(_)));
    }

    #[test]
    fn controller_sheds_lowest_class_first_when_full() {
        let mut c = Controller::new(Limit::Static(1), 2);
        c.admit(1, "running");
        c.admit(2, "bulk1");
        c.admit(2, "bulk2");
        assert!(matches!(c.admit(2, "bulk3"), Admit::Shed("bulk3")));
        assert!(matches!(
            c.admit(0, "crit"),
            Admit::WaitDisplacing(_, "bulk2")
        ));
        let mut woken = Vec::new();
        c.release(1, None, &mut woken);
        assert_eq!(woken, ["crit"]);
    }

    #[test]
    fn controller_cancel_reports_whether_the_waiter_was_still_queued() {
        let mut c = Controller::new(Limit::Static(1), 2);
        c.admit(1, "running");
        let Admit::Wait(t) = c.admit(1, "w") else {
            panic!()
        };
        assert!(c.cancel(t));
        assert!(!c.cancel(t));
        let mut woken = Vec::new();
        c.release(1, None, &mut woken);
        assert!(woken.is_empty());
        assert_eq!(c.in_flight(), 0);
    }
}
