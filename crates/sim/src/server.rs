//! The modelled backend: a queue with workers, a speed that can change, and
//! an optional key cache.
//!
//! Work is measured in nanoseconds at speed 1. The server keeps a *virtual
//! clock*: the work one in-service request has received so far. It advances
//! at `speed` per nanosecond for FCFS and delay servers and at
//! `speed × min(1, workers / n)` for processor sharing, so each request
//! simply finishes when the virtual clock reaches its start value plus its
//! work. A speed change or a new arrival only changes the clock's rate; the
//! engine then reschedules the single "next departure" event. This keeps
//! every operation O(log n) even with thousands of requests in service.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use fulcrum_balance::Nanos;

use crate::scenario::Discipline;

/// A request held by a server, named by its slot in the engine's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobRef {
    /// Slot in the request table.
    pub slot: u32,
    /// Generation of that slot when the job was admitted.
    pub gen: u32,
}

#[derive(Clone, Copy, Debug)]
struct InService {
    finish: f64,
    job: JobRef,
}

impl PartialEq for InService {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for InService {}
impl PartialOrd for InService {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InService {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.finish
            .total_cmp(&other.finish)
            .then(self.job.slot.cmp(&other.job.slot))
            .then(self.job.gen.cmp(&other.job.gen))
    }
}

/// Virtual-clock slack when deciding which requests have finished: float
/// rounding of a departure time is far below a nanosecond of work.
const FINISH_SLACK: f64 = 1e-3;

/// One modelled backend.
#[derive(Debug)]
pub struct Server {
    discipline: Discipline,
    workers: usize,
    /// Current capacity multiplier.
    speed: f64,
    vclock: f64,
    vclock_at: Nanos,
    in_service: BinaryHeap<Reverse<InService>>,
    waiting: VecDeque<(f64, JobRef)>,
    /// Bumped whenever the next departure is rescheduled; stale departure
    /// events carry an older value and are ignored.
    pub departure_gen: u64,
}

impl Server {
    /// An idle server.
    pub fn new(discipline: Discipline, workers: u32, speed: f64) -> Self {
        Self {
            discipline,
            workers: workers.max(1) as usize,
            speed,
            vclock: 0.0,
            vclock_at: 0,
            in_service: BinaryHeap::new(),
            waiting: VecDeque::new(),
            departure_gen: 0,
        }
    }

    /// Requests held (in service and waiting).
    pub fn in_system(&self) -> usize {
        self.in_service.len() + self.waiting.len()
    }

    /// What the backend reports as its load: requests held per worker
    /// (utilisation below saturation, queue depth beyond it); for a delay
    /// server, simply the requests held.
    pub fn utilisation(&self) -> f64 {
        match self.discipline {
            Discipline::Delay => self.in_system() as f64,
            _ => self.in_system() as f64 / self.workers as f64,
        }
    }

    /// Current speed.
    pub fn speed(&self) -> f64 {
        self.speed
    }

    fn rate(&self) -> f64 {
        match self.discipline {
            Discipline::ProcessorSharing => {
                let n = self.in_service.len().max(1);
                self.speed * (self.workers as f64 / n as f64).min(1.0)
            }
            _ => self.speed,
        }
    }

    fn advance(&mut self, now: Nanos) {
        let dt = now.saturating_sub(self.vclock_at) as f64;
        if !self.in_service.is_empty() {
            self.vclock += self.rate() * dt;
        }
        self.vclock_at = now;
    }

    /// Changes the speed at `now`.
    pub fn set_speed(&mut self, now: Nanos, speed: f64) {
        self.advance(now);
        self.speed = speed;
    }

    /// Takes a request needing `work` (ns at speed 1).
    pub fn admit(&mut self, now: Nanos, work: f64, job: JobRef) {
        self.advance(now);
        let can_start = match self.discipline {
            Discipline::Fcfs => self.in_service.len() < self.workers,
            _ => true,
        };
        if can_start {
            self.in_service.push(Reverse(InService {
                finish: self.vclock + work,
                job,
            }));
        } else {
            self.waiting.push_back((work, job));
        }
    }

    /// When the next request finishes, if any does at the current speed.
    pub fn next_departure(&self, now: Nanos) -> Option<Nanos> {
        let Reverse(head) = self.in_service.peek()?;
        let rate = self.rate();
        if rate <= 0.0 {
            return None;
        }
        let dt = ((head.finish - self.vclock) / rate).max(0.0);
        Some(now.saturating_add(dt.ceil().min(Nanos::MAX as f64 / 2.0) as Nanos))
    }

    /// Removes the requests finished by `now` (at least the first one) and
    /// starts waiting ones; finished jobs are appended to `done`.
    pub fn complete(&mut self, now: Nanos, done: &mut Vec<JobRef>) {
        self.advance(now);
        let mut first = true;
        while let Some(Reverse(head)) = self.in_service.peek() {
            if !first && head.finish > self.vclock + FINISH_SLACK {
                break;
            }
            first = false;
            let Reverse(head) = self.in_service.pop().expect("peeked");
            // Requests finish in virtual-clock order; snap the clock forward
            // so rounding never lets a later one finish "in the past".
            self.vclock = self.vclock.max(head.finish);
            done.push(head.job);
        }
        if self.discipline == Discipline::Fcfs {
            while self.in_service.len() < self.workers {
                let Some((work, job)) = self.waiting.pop_front() else {
                    break;
                };
                self.in_service.push(Reverse(InService {
                    finish: self.vclock + work,
                    job,
                }));
            }
        }
    }
}

/// A least-recently-used set of keys.
#[derive(Debug)]
pub struct Lru {
    capacity: usize,
    stamp: u64,
    by_key: HashMap<u64, u64>,
    by_stamp: BTreeMap<u64, u64>,
}

impl Lru {
    /// An empty cache holding at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            stamp: 0,
            by_key: HashMap::with_capacity(capacity.min(1 << 20)),
            by_stamp: BTreeMap::new(),
        }
    }

    /// Looks `key` up, inserting it (and evicting the least recently used
    /// key when full); returns whether it was a hit.
    pub fn touch(&mut self, key: u64) -> bool {
        self.stamp += 1;
        let stamp = self.stamp;
        if let Some(old) = self.by_key.insert(key, stamp) {
            self.by_stamp.remove(&old);
            self.by_stamp.insert(stamp, key);
            return true;
        }
        self.by_stamp.insert(stamp, key);
        if self.by_key.len() > self.capacity {
            if let Some((_, evicted)) = self.by_stamp.pop_first() {
                self.by_key.remove(&evicted);
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(slot: u32) -> JobRef {
        JobRef { slot, gen: 0 }
    }

    #[test]
    fn fcfs_single_worker_serves_in_order() {
        let mut s = Server::new(Discipline::Fcfs, 1, 1.0);
        s.admit(0, 10.0, job(1));
        s.admit(0, 5.0, job(2));
        assert_eq!(s.next_departure(0), Some(10));
        let mut done = Vec::new();
        s.complete(10, &mut done);
        assert_eq!(done, [job(1)]);
        assert_eq!(s.next_departure(10), Some(15));
    }

    #[test]
    fn processor_sharing_splits_capacity() {
        let mut s = Server::new(Discipline::ProcessorSharing, 1, 1.0);
        s.admit(0, 10.0, job(1));
        s.admit(0, 10.0, job(2));
        // Two requests share one worker: both finish at 20.
        assert_eq!(s.next_departure(0), Some(20));
        let mut done = Vec::new();
        s.complete(20, &mut done);
        assert_eq!(done.len(), 2);
    }

    #[test]
    fn speed_change_stretches_remaining_work() {
        let mut s = Server::new(Discipline::Fcfs, 1, 1.0);
        s.admit(0, 10.0, job(1));
        s.set_speed(4, 0.5);
        // 6 units of work left at half speed.
        assert_eq!(s.next_departure(4), Some(16));
        s.set_speed(5, 0.0);
        assert_eq!(s.next_departure(5), None);
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut c = Lru::new(2);
        assert!(!c.touch(1));
        assert!(!c.touch(2));
        assert!(c.touch(1));
        assert!(!c.touch(3)); // evicts 2
        assert!(c.touch(1));
        assert!(!c.touch(2));
    }
}
