//! The edge shipper's next batch while it gathers: the outbox events read for it and not
//! sent yet.
//!
//! While a batch is in flight only a full batch follows it (the hub commits a site's batches
//! one after another, so many small ones would queue behind each other); the shipper looks
//! again every `batch_delay`. Reading the whole partial batch at every look cost ~45% of the
//! edges' CPU in a 100-site drain (a 904-event rest re-read every 5 ms for as long as the
//! 4,096-event batch before it waited for its reply: docs/benchmarks.md, 2026-12-07). The
//! events read stay here, so every look reads only the seqs committed since.

use super::ShippedEvent;
use crate::limits::{MAX_SHIP_BATCH_EVENTS, SHIP_BATCH_TARGET_BYTES};

/// Events `first..` of the next batch, contiguous, within the batch limits.
#[derive(Debug, Default)]
pub struct PendingBatch {
    first: u64,
    events: Vec<ShippedEvent>,
    /// Stored (outbox record) bytes of `events`: what `SHIP_BATCH_TARGET_BYTES` limits.
    bytes: usize,
}

impl PendingBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes this the batch starting at `first` and tops it up from the outbox with the seqs
    /// through `committed_through` it does not hold yet. `read(from, max_events, max_bytes,
    /// into)` appends outbox events `from..` contiguously, at most `max_events` and stopping
    /// once past `max_bytes`, and returns their stored bytes (`StateReader::outbox_append`).
    /// A batch that starts elsewhere than `first` (the session resumed or skipped ahead) is
    /// dropped first.
    pub fn fill<E>(
        &mut self,
        first: u64,
        committed_through: u64,
        read: impl FnOnce(u64, usize, usize, &mut Vec<ShippedEvent>) -> Result<usize, E>,
    ) -> Result<(), E> {
        if first != self.first {
            self.clear(first);
        }
        let from = first + self.events.len() as u64;
        if self.is_full() || from > committed_through {
            return Ok(());
        }
        let held = self.events.len();
        let bytes = read(
            from,
            MAX_SHIP_BATCH_EVENTS - held,
            SHIP_BATCH_TARGET_BYTES - self.bytes,
            &mut self.events,
        );
        match bytes {
            Ok(bytes) => {
                self.bytes += bytes;
                Ok(())
            }
            Err(e) => {
                // Whatever a failed read appended is not known to be contiguous.
                self.events.truncate(held);
                Err(e)
            }
        }
    }

    /// Whether the batch is as large as the shipper makes them.
    pub fn is_full(&self) -> bool {
        self.events.len() >= MAX_SHIP_BATCH_EVENTS || self.bytes >= SHIP_BATCH_TARGET_BYTES
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// The batch's events, to send; the next batch starts after them.
    pub fn take(&mut self) -> Vec<ShippedEvent> {
        let next = self.first + self.events.len() as u64;
        let events = std::mem::take(&mut self.events);
        self.clear(next);
        events
    }

    fn clear(&mut self, first: u64) {
        self.first = first;
        self.events.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ship::EventKind;

    /// An outbox of `n` events of `size` data bytes each, stored as `size` bytes, that counts
    /// the events read from it.
    struct Outbox {
        last: u64,
        size: usize,
        reads: u64,
    }

    impl Outbox {
        fn new(last: u64, size: usize) -> Self {
            Outbox {
                last,
                size,
                reads: 0,
            }
        }

        /// One look of the shipper at seq `first`, with everything through `last` committed.
        fn look(&mut self, batch: &mut PendingBatch, first: u64) {
            let last = self.last;
            batch
                .fill(first, last, |f, e, b, into| self.read(f, e, b, into))
                .expect("read");
        }

        fn read(
            &mut self,
            from: u64,
            max_events: usize,
            max_bytes: usize,
            into: &mut Vec<ShippedEvent>,
        ) -> Result<usize, ()> {
            let mut bytes = 0;
            for seq in (from..=self.last).take(max_events) {
                self.reads += 1;
                into.push(ShippedEvent {
                    seq,
                    hlc: seq,
                    kind: EventKind::Append {
                        stream: "s".into(),
                        data: vec![0; self.size],
                    },
                });
                bytes += self.size;
                if bytes >= max_bytes {
                    break;
                }
            }
            Ok(bytes)
        }
    }

    fn seqs(events: &[ShippedEvent]) -> Vec<u64> {
        events.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn each_look_reads_only_what_was_committed_since() {
        let mut outbox = Outbox::new(900, 10);
        let mut batch = PendingBatch::new();
        for _ in 0..1000 {
            outbox.look(&mut batch, 1);
        }
        assert_eq!(
            outbox.reads, 900,
            "the rest is read once, not at every look"
        );
        assert!(!batch.is_full());
        outbox.last = 950;
        outbox.look(&mut batch, 1);
        assert_eq!(outbox.reads, 950);
        assert_eq!(seqs(&batch.take()), (1..=950).collect::<Vec<_>>());
        outbox.look(&mut batch, 951);
        assert!(batch.is_empty());
        assert_eq!(
            outbox.reads, 950,
            "nothing committed past the batch: nothing read"
        );
    }

    #[test]
    fn a_batch_stops_at_the_event_limit_and_the_next_one_goes_on_from_there() {
        let mut outbox = Outbox::new(10_000, 10);
        let mut batch = PendingBatch::new();
        outbox.look(&mut batch, 1);
        assert!(batch.is_full());
        assert_eq!(batch.len(), MAX_SHIP_BATCH_EVENTS);
        let first = batch.take();
        let next = first.len() as u64 + 1;
        outbox.look(&mut batch, next);
        assert_eq!(batch.take()[0].seq, next);
        assert_eq!(outbox.reads, 2 * MAX_SHIP_BATCH_EVENTS as u64);
    }

    #[test]
    fn a_batch_gathered_in_steps_stops_at_the_byte_target() {
        let size = SHIP_BATCH_TARGET_BYTES / 64;
        assert_eq!(size * 64, SHIP_BATCH_TARGET_BYTES);
        let mut outbox = Outbox::new(40, size);
        let mut batch = PendingBatch::new();
        outbox.look(&mut batch, 1);
        assert!(!batch.is_full());
        outbox.last = 500;
        outbox.look(&mut batch, 1);
        assert!(batch.is_full());
        assert_eq!(batch.len(), 64, "as one read of the whole batch would stop");
        outbox.look(&mut batch, 1);
        assert_eq!(outbox.reads, 64, "a full batch reads nothing more");
    }

    #[test]
    fn a_batch_that_starts_elsewhere_is_read_afresh() {
        let mut outbox = Outbox::new(100, 10);
        let mut batch = PendingBatch::new();
        outbox.look(&mut batch, 1);
        // The hub had more than this session knew (a lost ack): it skips ahead.
        outbox.look(&mut batch, 41);
        assert_eq!(seqs(&batch.take()), (41..=100).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_read_leaves_what_was_held() {
        let mut outbox = Outbox::new(10, 10);
        let mut batch = PendingBatch::new();
        outbox.look(&mut batch, 1);
        let failed = batch.fill(1, 20, |f, e, b, into| {
            outbox.last = 20;
            outbox.read(f, e, b, into)?;
            Err::<usize, ()>(())
        });
        assert!(failed.is_err());
        assert_eq!(seqs(&batch.take()), (1..=10).collect::<Vec<_>>());
    }
}
