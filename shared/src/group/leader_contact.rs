//! When a follower last heard from each leader it forwards writes to.
//!
//! A leader that hands over (SIGTERM, `transfer-leader`) lives on as a follower and answers
//! the forwarded writes it holds once they commit under its successor: a follower that heard
//! from it just before the change waits for that answer instead of calling the outcome
//! unknown. A leader that died cannot be replaced before the followers' lease on it runs
//! out (at least `election_timeout_min` of silence), so its followers give up on it at once.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::types::NodeId;

/// Longest a follower waits for a leader that handed over to answer a write it held.
/// It answers as soon as the write commits (or is discarded) under its successor, a few
/// round trips; past this the write is answered as outcome unknown.
pub const DEPOSED_LEADER_ANSWER_WAIT: Duration = Duration::from_secs(1);

/// Leaders whose last contact is remembered: a group's voters, and then some.
const LEADERS_REMEMBERED: usize = 16;

#[derive(Default)]
pub struct LeaderContact {
    /// When this node last received replication traffic from each recent leader. Per
    /// leader: a follower learns of a new leader from its first append, which must not
    /// erase when it last heard from the one it replaces.
    last_heard: Mutex<Vec<(NodeId, Instant)>>,
}

impl LeaderContact {
    /// Called for every replication frame (append or heartbeat) from `leader`.
    pub fn heard(&self, leader: NodeId) {
        let now = Instant::now();
        let mut last = self.last_heard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = last.iter_mut().find(|(from, _)| *from == leader) {
            entry.1 = now;
            return;
        }
        if last.len() == LEADERS_REMEMBERED {
            // The one heard from longest ago goes.
            if let Some(oldest) = (0..last.len()).min_by_key(|i| last[*i].1) {
                last.swap_remove(oldest);
            }
        }
        last.push((leader, now));
    }

    /// Whether `leader` sent this node replication traffic within `window` of now.
    pub fn heard_within(&self, leader: NodeId, window: Duration) -> bool {
        let last = self.last_heard.lock().unwrap_or_else(|e| e.into_inner());
        last.iter()
            .any(|(from, at)| *from == leader && at.elapsed() <= window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heard_names_the_leader_and_ages() {
        let contact = LeaderContact::default();
        assert!(!contact.heard_within(1, Duration::from_secs(60)));
        contact.heard(1);
        assert!(contact.heard_within(1, Duration::from_secs(60)));
        assert!(
            !contact.heard_within(2, Duration::from_secs(60)),
            "another leader"
        );
        contact.heard(2);
        assert!(
            contact.heard_within(1, Duration::from_secs(60)),
            "a new leader's first append keeps the old one's time"
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            !contact.heard_within(1, Duration::from_millis(1)),
            "too long ago"
        );
    }

    #[test]
    fn remembers_a_bounded_number_of_leaders_and_forgets_the_oldest() {
        let contact = LeaderContact::default();
        for leader in 0..LEADERS_REMEMBERED as NodeId + 1 {
            contact.heard(leader);
        }
        let remembered = contact.last_heard.lock().expect("lock").len();
        assert_eq!(remembered, LEADERS_REMEMBERED);
        assert!(
            !contact.heard_within(0, Duration::from_secs(60)),
            "the oldest went"
        );
        assert!(contact.heard_within(LEADERS_REMEMBERED as NodeId, Duration::from_secs(60)));
    }
}
