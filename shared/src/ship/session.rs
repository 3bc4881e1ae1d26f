//! The edge shipper's session with its hub group: what to send next, what the hub has, when
//! to reconnect, and when to stop for good (fenced). Time and randomness are passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::ShipReply;
use crate::backoff::Backoff;

/// Batches sent and not yet acknowledged, at most (bounds memory and the resend on a gap).
pub const MAX_BATCHES_IN_FLIGHT: usize = 8;
/// First reconnect delay ceiling, and the default largest (the uplink may be down for days;
/// `[uplink] reconnect_max` sets it per group).
pub const RECONNECT_BASE: Duration = Duration::from_millis(200);
pub const RECONNECT_CAP: Duration = Duration::from_secs(30);
/// The largest `reconnect_max` a group may configure.
pub const RECONNECT_MAX_LIMIT: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No session; connect at or after `retry_at`.
    Disconnected { retry_at: Instant },
    /// Connected, waiting for the hub's shipped-through.
    Opening,
    /// Sending batches.
    Streaming,
    /// The hub holds a newer epoch: this group must stop accepting writes. Terminal.
    Fenced { epoch: u64 },
}

/// What the caller must do after a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Nothing beyond sending more when there is more.
    Continue,
    /// Drop the connection; `on_disconnected` says when to retry.
    Reconnect(String),
    /// Stop accepting writes at this group and say so in status (DESIGN.md §3.3).
    Fenced { epoch: u64 },
}

#[derive(Debug)]
pub struct ShipperSession {
    phase: Phase,
    /// Highest seq the hub has confirmed durable (what retention may compact up to).
    shipped_through: u64,
    /// Next seq to put in a batch.
    next_to_send: u64,
    /// (first, last) of each batch in flight, oldest first.
    in_flight: VecDeque<(u64, u64)>,
    backoff: Backoff,
}

impl ShipperSession {
    /// A session that knows the hub has at least `shipped_through` (persisted at the edge).
    /// Reconnects back off from `RECONNECT_BASE` up to `reconnect_max` (clamped to
    /// `RECONNECT_BASE..=RECONNECT_MAX_LIMIT`).
    pub fn new(shipped_through: u64, now: Instant, reconnect_max: Duration) -> Self {
        let cap = reconnect_max.clamp(RECONNECT_BASE, RECONNECT_MAX_LIMIT);
        ShipperSession {
            phase: Phase::Disconnected { retry_at: now },
            shipped_through,
            next_to_send: shipped_through + 1,
            in_flight: VecDeque::new(),
            backoff: Backoff::new(RECONNECT_BASE, cap),
        }
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    pub fn shipped_through(&self) -> u64 {
        self.shipped_through
    }

    /// The ceiling of the next reconnect delay (before jitter).
    pub fn reconnect_ceiling(&self) -> Duration {
        self.backoff.ceiling()
    }

    /// Events committed at the edge and not yet confirmed by the hub.
    pub fn backlog(&self, committed_through: u64) -> u64 {
        committed_through.saturating_sub(self.shipped_through)
    }

    /// Whether to dial the hub now.
    pub fn should_connect(&self, now: Instant) -> bool {
        matches!(self.phase, Phase::Disconnected { retry_at } if now >= retry_at)
    }

    pub fn on_connected(&mut self) {
        if matches!(self.phase, Phase::Disconnected { .. }) {
            self.phase = Phase::Opening;
        }
    }

    /// The connection broke (or was dropped after `Effect::Reconnect`): everything in flight
    /// is resent from the hub's shipped-through after the next connect.
    pub fn on_disconnected(&mut self, now: Instant, random: u64) -> Instant {
        if let Phase::Fenced { .. } = self.phase {
            return now;
        }
        let retry_at = now + self.backoff.next_delay(random);
        self.phase = Phase::Disconnected { retry_at };
        self.in_flight.clear();
        self.next_to_send = self.shipped_through + 1;
        retry_at
    }

    /// The seq the next batch starts at, if a batch may be sent now (the caller then reads
    /// the events and reserves exactly those with `next_batch`).
    pub fn sendable_from(&self, committed_through: u64) -> Option<u64> {
        (self.phase == Phase::Streaming
            && self.in_flight.len() < MAX_BATCHES_IN_FLIGHT
            && self.next_to_send <= committed_through)
            .then_some(self.next_to_send)
    }

    /// Batches sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The next batch's seq range, if one may be sent now: at most `max_events` events, none
    /// beyond `committed_through`.
    pub fn next_batch(&mut self, committed_through: u64, max_events: u64) -> Option<(u64, u64)> {
        let first = self.sendable_from(committed_through)?;
        if max_events == 0 {
            return None;
        }
        let last = committed_through.min(first + max_events - 1);
        self.in_flight.push_back((first, last));
        self.next_to_send = last + 1;
        Some((first, last))
    }

    /// Applies the hub's reply (to the opening or to the oldest batch in flight).
    pub fn on_reply(&mut self, reply: ShipReply) -> Effect {
        if let Phase::Fenced { epoch } = self.phase {
            return Effect::Fenced { epoch };
        }
        match reply {
            ShipReply::ShippedThrough(through) => {
                self.shipped_through = self.shipped_through.max(through);
                while self
                    .in_flight
                    .front()
                    .is_some_and(|(_, last)| *last <= self.shipped_through)
                {
                    self.in_flight.pop_front();
                }
                if self.phase == Phase::Opening {
                    self.phase = Phase::Streaming;
                    self.in_flight.clear();
                    self.next_to_send = self.shipped_through + 1;
                } else {
                    self.next_to_send = self.next_to_send.max(self.shipped_through + 1);
                }
                self.backoff.reset();
                Effect::Continue
            }
            ShipReply::Gap { expected } if expected <= self.shipped_through => {
                // The hub once confirmed more than it now has (its copy was lost or rolled
                // back): resending cannot help, and the outbox may no longer hold those
                // events. Back off and say so; an operator must reseed the hub's copy.
                Effect::Reconnect(format!(
                    "the hub expects seq {expected} but had confirmed seq {} earlier",
                    self.shipped_through
                ))
            }
            ShipReply::Gap { expected } => {
                if expected > self.shipped_through + 1 {
                    // The hub has more than we knew (e.g. our last ack was lost).
                    self.shipped_through = expected - 1;
                }
                self.in_flight.clear();
                self.next_to_send = expected.max(self.shipped_through + 1);
                Effect::Continue
            }
            ShipReply::Fenced {
                epoch,
                shipped_through,
            } => {
                self.shipped_through = self.shipped_through.max(shipped_through);
                self.phase = Phase::Fenced { epoch };
                self.in_flight.clear();
                Effect::Fenced { epoch }
            }
            ShipReply::Rejected(reason) => Effect::Reconnect(reason),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ship::rules::{decide, Decision, SiteShipState};

    fn streaming(shipped: u64, now: Instant) -> ShipperSession {
        let mut s = ShipperSession::new(shipped, now, RECONNECT_CAP);
        assert!(s.should_connect(now));
        s.on_connected();
        assert_eq!(
            s.on_reply(ShipReply::ShippedThrough(shipped)),
            Effect::Continue
        );
        s
    }

    #[test]
    fn resumes_from_the_hubs_shipped_through() {
        let now = Instant::now();
        let mut s = ShipperSession::new(5, now, RECONNECT_CAP);
        s.on_connected();
        s.on_reply(ShipReply::ShippedThrough(40)); // the hub got more than we recorded
        assert_eq!(s.next_batch(100, 10), Some((41, 50)));
        assert_eq!(s.shipped_through(), 40);
        assert_eq!(s.backlog(100), 60);
    }

    #[test]
    fn window_and_limits_bound_what_is_in_flight() {
        let now = Instant::now();
        let mut s = streaming(0, now);
        for i in 0..MAX_BATCHES_IN_FLIGHT as u64 {
            assert_eq!(s.next_batch(1_000, 10), Some((i * 10 + 1, i * 10 + 10)));
        }
        assert_eq!(s.next_batch(1_000, 10), None, "window full");
        s.on_reply(ShipReply::ShippedThrough(10));
        assert!(s.next_batch(1_000, 10).is_some());
        assert_eq!(
            s.next_batch(85, 100),
            None,
            "nothing committed beyond what was sent"
        );
    }

    #[test]
    fn gap_rewinds_and_disconnect_resends_from_shipped_through() {
        let now = Instant::now();
        let mut s = streaming(10, now);
        s.next_batch(100, 5);
        s.next_batch(100, 5);
        s.on_reply(ShipReply::Gap { expected: 11 });
        assert_eq!(s.next_batch(100, 5), Some((11, 15)));
        let retry = s.on_disconnected(now, 12_345);
        assert!(retry <= now + RECONNECT_BASE);
        assert!(!s.should_connect(now) || retry == now);
        s.on_connected();
        s.on_reply(ShipReply::ShippedThrough(10));
        assert_eq!(s.next_batch(100, 5), Some((11, 15)));
    }

    #[test]
    fn a_hub_that_forgot_what_it_confirmed_is_not_resent_to_in_a_loop() {
        let now = Instant::now();
        let mut s = streaming(50, now);
        s.next_batch(100, 10);
        assert!(matches!(
            s.on_reply(ShipReply::Gap { expected: 20 }),
            Effect::Reconnect(reason) if reason.contains("confirmed seq 50")
        ));
    }

    #[test]
    fn fenced_is_terminal() {
        let now = Instant::now();
        let mut s = streaming(3, now);
        assert_eq!(
            s.on_reply(ShipReply::Fenced {
                epoch: 4,
                shipped_through: 7
            }),
            Effect::Fenced { epoch: 4 }
        );
        assert_eq!(s.next_batch(100, 5), None);
        s.on_disconnected(now, 1);
        assert_eq!(s.phase(), &Phase::Fenced { epoch: 4 });
        assert_eq!(s.shipped_through(), 7, "where our epoch ended at the hub");
        assert!(!s.should_connect(now + RECONNECT_CAP));
        assert_eq!(
            s.on_reply(ShipReply::ShippedThrough(99)),
            Effect::Fenced { epoch: 4 }
        );
    }

    #[test]
    fn reconnect_delays_stop_growing_at_the_configured_max() {
        let now = Instant::now();
        let max = Duration::from_millis(500);
        let mut s = ShipperSession::new(0, now, max);
        for i in 0..20 {
            let retry = s.on_disconnected(now, i * 7_919);
            assert!(retry - now <= max, "attempt {i} waits {:?}", retry - now);
        }
        assert_eq!(s.reconnect_ceiling(), max);
        // Out of range: never below the first delay, never beyond the limit.
        let tiny = ShipperSession::new(0, now, Duration::ZERO);
        assert_eq!(tiny.reconnect_ceiling(), RECONNECT_BASE);
        let mut huge = ShipperSession::new(0, now, Duration::MAX);
        for i in 0..64 {
            huge.on_disconnected(now, i);
        }
        assert_eq!(huge.reconnect_ceiling(), RECONNECT_MAX_LIMIT);
    }

    #[test]
    fn reconnect_delays_grow_and_reset_after_progress() {
        let now = Instant::now();
        let mut s = ShipperSession::new(0, now, RECONNECT_CAP);
        let mut ceilings = Vec::new();
        for i in 0..10 {
            let ceiling = s.reconnect_ceiling();
            let retry = s.on_disconnected(now, i * 7_919);
            assert!(retry - now <= ceiling);
            ceilings.push(ceiling);
        }
        assert!(ceilings.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(ceilings[0], RECONNECT_BASE);
        assert_eq!(*ceilings.last().unwrap_or(&Duration::ZERO), RECONNECT_CAP);
        s.on_connected();
        s.on_reply(ShipReply::ShippedThrough(0));
        assert_eq!(
            s.reconnect_ceiling(),
            RECONNECT_BASE,
            "progress resets the backoff"
        );
    }

    /// Shipper and hub rules together, with the link dropping at random: the hub ends with
    /// every committed event exactly once, in order, and both agree on shipped-through.
    #[test]
    fn lossy_uplink_delivers_everything_exactly_once() {
        let start = Instant::now();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut hub = SiteShipState {
            epoch: 1,
            shipped_through: 0,
        };
        let mut hub_log: Vec<u64> = Vec::new();
        let mut s = ShipperSession::new(0, start, RECONNECT_CAP);
        let mut committed = 0u64;
        let mut now = start;
        let mut connected = false;
        let mut queue: VecDeque<(u64, u64)> = VecDeque::new(); // batches on the wire
        for _ in 0..20_000 {
            now += Duration::from_millis(10);
            committed += next() % 4;
            if !connected {
                if s.should_connect(now) {
                    s.on_connected();
                    connected = true;
                    s.on_reply(ShipReply::ShippedThrough(hub.shipped_through));
                }
                continue;
            }
            if let Some(range) = s.next_batch(committed, 1 + next() % 16) {
                queue.push_back(range);
            }
            if next() % 50 == 0 {
                queue.clear();
                connected = false;
                s.on_disconnected(now, next());
                continue;
            }
            if let Some((first, last)) = queue.pop_front() {
                let reply = match decide(hub, 1, first, (last - first + 1) as usize) {
                    Decision::Apply { skip, through } => {
                        hub_log.extend(first + skip as u64..=through);
                        hub.shipped_through = through;
                        ShipReply::ShippedThrough(through)
                    }
                    Decision::Answer(reply) => reply,
                };
                if let ShipReply::Gap { .. } = reply {
                    queue.clear(); // the shipper resends from the expected seq
                }
                // A reply lost with the connection is the same as a drop before it.
                assert_eq!(s.on_reply(reply), Effect::Continue);
            }
        }
        assert_eq!(hub_log, (1..=hub.shipped_through).collect::<Vec<_>>());
        assert_eq!(s.shipped_through(), hub.shipped_through);
        assert!(
            hub.shipped_through > committed / 2,
            "made progress: {} of {committed}",
            hub.shipped_through
        );
    }
}
