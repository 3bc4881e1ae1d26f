//! The hub's rules for one site's incoming batch: exactly once, in order, single writer.

use super::ShipReply;

/// What the hub knows of one site (part of its Raft state).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SiteShipState {
    /// The site's ownership generation; batches stamped older are fenced.
    pub epoch: u64,
    /// Highest seq durably committed for the site (0: none).
    pub shipped_through: u64,
}

/// The decision on a batch of `count` contiguous events starting at `first_seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Apply the events from index `skip` on (a prefix may already be there), then the site
    /// is shipped through `through`.
    Apply { skip: usize, through: u64 },
    /// Nothing new: answer with the reply without touching state.
    Answer(ShipReply),
}

/// Decides what to do with a batch. Pure: the caller applies `Apply` through the hub's Raft
/// log and replies `ShippedThrough(through)` only once that is committed.
pub fn decide(state: SiteShipState, batch_epoch: u64, first_seq: u64, count: usize) -> Decision {
    if batch_epoch < state.epoch {
        // Where the batch's epoch ended is the caller's to fill in (it keeps the history).
        return Decision::Answer(ShipReply::Fenced {
            epoch: state.epoch,
            shipped_through: 0,
        });
    }
    if batch_epoch > state.epoch {
        return Decision::Answer(ShipReply::Rejected(format!(
            "batch epoch {batch_epoch} is newer than the hub's {} for this site",
            state.epoch
        )));
    }
    if first_seq == 0 {
        return Decision::Answer(ShipReply::Rejected("seq starts at 1".into()));
    }
    let expected = state.shipped_through + 1;
    if count == 0 {
        return Decision::Answer(ShipReply::ShippedThrough(state.shipped_through));
    }
    let Some(last) = first_seq.checked_add(count as u64 - 1) else {
        return Decision::Answer(ShipReply::Rejected("seq overflows".into()));
    };
    if last <= state.shipped_through {
        return Decision::Answer(ShipReply::ShippedThrough(state.shipped_through));
    }
    if first_seq > expected {
        return Decision::Answer(ShipReply::Gap { expected });
    }
    Decision::Apply {
        skip: (expected - first_seq) as usize,
        through: last,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT_10: SiteShipState = SiteShipState {
        epoch: 2,
        shipped_through: 10,
    };

    #[test]
    fn next_batch_applies() {
        assert_eq!(
            decide(AT_10, 2, 11, 5),
            Decision::Apply {
                skip: 0,
                through: 15
            }
        );
        assert_eq!(
            decide(SiteShipState::default(), 0, 1, 3),
            Decision::Apply {
                skip: 0,
                through: 3
            },
            "a new site starts at seq 1"
        );
    }

    #[test]
    fn duplicates_are_acknowledged_and_dropped() {
        assert_eq!(
            decide(AT_10, 2, 5, 6),
            Decision::Answer(ShipReply::ShippedThrough(10))
        );
        assert_eq!(
            decide(AT_10, 2, 1, 1),
            Decision::Answer(ShipReply::ShippedThrough(10))
        );
        assert_eq!(
            decide(AT_10, 2, 11, 0),
            Decision::Answer(ShipReply::ShippedThrough(10))
        );
    }

    #[test]
    fn overlapping_batch_applies_only_its_new_tail() {
        assert_eq!(
            decide(AT_10, 2, 8, 5),
            Decision::Apply {
                skip: 3,
                through: 12
            }
        );
    }

    #[test]
    fn gaps_are_refused_with_the_expected_seq() {
        assert_eq!(
            decide(AT_10, 2, 12, 3),
            Decision::Answer(ShipReply::Gap { expected: 11 })
        );
    }

    #[test]
    fn stale_epochs_are_fenced_before_anything_else() {
        // Even a batch that would otherwise be the next one, or a duplicate.
        for first in [1, 11, 50] {
            assert_eq!(
                decide(AT_10, 1, first, 3),
                Decision::Answer(ShipReply::Fenced {
                    epoch: 2,
                    shipped_through: 0
                })
            );
        }
        assert!(matches!(
            decide(AT_10, 3, 11, 1),
            Decision::Answer(ShipReply::Rejected(_))
        ));
    }

    #[test]
    fn malformed_ranges_are_rejected() {
        assert!(matches!(
            decide(AT_10, 2, 0, 1),
            Decision::Answer(ShipReply::Rejected(_))
        ));
        assert!(matches!(
            decide(AT_10, 2, u64::MAX, 2),
            Decision::Answer(ShipReply::Rejected(_))
        ));
    }

    /// Any interleaving of resends, duplicates and gaps leaves every seq applied once, in order.
    #[test]
    fn random_resends_apply_every_event_exactly_once_in_order() {
        let mut state = SiteShipState {
            epoch: 1,
            shipped_through: 0,
        };
        let mut applied = Vec::new();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for _ in 0..10_000 {
            let first = 1 + next() % 200;
            let count = (next() % 8) as usize;
            if let Decision::Apply { skip, through } = decide(state, 1, first, count) {
                applied.extend(first + skip as u64..=through);
                state.shipped_through = through;
            }
        }
        let expected: Vec<u64> = (1..=state.shipped_through).collect();
        assert_eq!(applied, expected);
        assert!(state.shipped_through > 100);
    }
}
