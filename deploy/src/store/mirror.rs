//! This node's copy of the fleet's desired state, as pure data: filled by a snapshot (a
//! linearizable read at a revision), then kept by the watched changes after it. Two rules
//! keep it honest: nothing older is ever applied over something newer (a change at or below
//! the copy's revision is one it has already seen), and a fresh snapshot (after a
//! compaction, say) replaces the copy only if it is newer. Each step says whether anything
//! changed, so the reconciler wakes only for a real change.

use std::collections::BTreeMap;

use super::Versioned;

/// One watched change of a key, at the revision of the commit that made it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put { key: String, value: Versioned },
    Delete { key: String, revision: u64 },
}

impl Change {
    fn revision(&self) -> u64 {
        match self {
            Change::Put { value, .. } => value.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Mirror {
    /// The store's revision this copy reflects: every change up to it is in.
    pub revision: u64,
    pub entries: BTreeMap<String, Versioned>,
}

impl Mirror {
    /// Takes a snapshot made at `revision`, unless the copy is already as new; true when the
    /// entries changed.
    pub fn replace(&mut self, revision: u64, entries: BTreeMap<String, Versioned>) -> bool {
        if revision < self.revision {
            return false;
        }
        self.revision = revision;
        if self.entries == entries {
            return false;
        }
        self.entries = entries;
        true
    }

    /// Applies watched changes, in the order etcd sent them; the copy has then seen up to the
    /// last of them. True when the entries changed.
    ///
    /// A response's header revision is not a promise that every change up to it has come:
    /// the first answer of a watch that resumes from the past carries the store's current
    /// revision before the missed changes follow. Only changes, and [`Mirror::progress`],
    /// move the copy's revision.
    pub fn apply(&mut self, changes: Vec<Change>) -> bool {
        // Every change of one revision (a transaction's several keys) comes in one response:
        // what this response holds is new unless the copy had its revision before it.
        let seen = self.revision;
        let mut changed = false;
        for change in changes {
            let revision = change.revision();
            if revision <= seen {
                continue;
            }
            changed |= match change {
                Change::Put { key, value } => {
                    self.entries.insert(key, value.clone()).is_none_or(|old| old != value)
                }
                Change::Delete { key, .. } => self.entries.remove(&key).is_some(),
            };
            self.revision = self.revision.max(revision);
        }
        changed
    }

    /// A progress notification: every change up to `revision` has been sent to this watch.
    pub fn progress(&mut self, revision: u64) {
        self.revision = self.revision.max(revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(value: serde_json::Value, mod_revision: u64) -> Versioned {
        Versioned { value, mod_revision }
    }

    fn put(key: &str, v: i64, revision: u64) -> Change {
        Change::Put { key: key.into(), value: at(json!(v), revision) }
    }

    fn filled() -> Mirror {
        let mut m = Mirror::default();
        m.replace(
            10,
            BTreeMap::from([("a".to_string(), at(json!(1), 5)), ("b".to_string(), at(json!(2), 10))]),
        );
        m
    }

    #[test]
    fn watched_changes_after_the_snapshot_are_applied_in_order() {
        let mut m = filled();
        assert!(m.apply(vec![put("a", 3, 11), Change::Delete { key: "b".into(), revision: 12 }]));
        assert_eq!(m.revision, 12);
        assert_eq!(m.entries.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(m.entries["a"], at(json!(3), 11));
    }

    #[test]
    fn every_key_of_one_transaction_is_applied() {
        let mut m = filled();
        assert!(m.apply(vec![
            put("x", 1, 11),
            put("y", 2, 11),
            Change::Delete { key: "a".into(), revision: 11 }
        ]));
        assert_eq!(m.entries.keys().collect::<Vec<_>>(), ["b", "x", "y"]);
        assert_eq!(m.revision, 11);
    }

    #[test]
    fn a_change_the_copy_already_has_is_never_applied_again() {
        let mut m = filled();
        // A watch restarted from an older revision replays what the snapshot already holds.
        assert!(!m.apply(vec![put("a", 0, 5), Change::Delete { key: "b".into(), revision: 9 }]));
        assert_eq!(m, filled());
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_copy() {
        let mut m = filled();
        m.apply(vec![put("c", 9, 20)]);
        assert!(!m.replace(15, BTreeMap::new()), "a snapshot made before revision 20");
        assert!(m.entries.contains_key("c") && m.revision == 20);
    }

    #[test]
    fn a_snapshot_after_a_compaction_replaces_the_copy_and_says_whether_anything_changed() {
        let mut m = filled();
        let same = m.entries.clone();
        assert!(!m.replace(30, same), "nothing changed while away: no wake-up");
        assert_eq!(m.revision, 30);
        assert!(m.replace(31, BTreeMap::from([("d".to_string(), at(json!(4), 31))])));
        assert_eq!(m.entries.keys().collect::<Vec<_>>(), ["d"]);
    }

    #[test]
    fn a_resumed_watch_that_answers_with_the_current_revision_first_still_gets_the_missed_changes() {
        // Away from revision 10 to 15: the watch resumes from 11; its first answer says 15.
        let mut m = filled();
        m.apply(Vec::new());
        assert_eq!(m.revision, 10, "an answer without changes moves nothing");
        assert!(m.apply(vec![put("a", 7, 12), put("c", 8, 15)]));
        assert_eq!((m.revision, &m.entries["a"]), (15, &at(json!(7), 12)));
    }

    #[test]
    fn progress_without_changes_moves_the_revision_but_wakes_nobody() {
        let mut m = filled();
        m.progress(40);
        assert_eq!(m.revision, 40);
        // The same value written again is a new revision of the key: a change for its CAS.
        assert!(m.apply(vec![put("a", 1, 41)]));
    }
}
