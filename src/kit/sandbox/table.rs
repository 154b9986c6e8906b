//! One resource's records, kept in change-time order so that a page is found in O(log n + page).
//!
//! Every change appends a slot to an append-only log whose change times strictly increase (the
//! caller hands out times through [`Table::next_time`]), and marks the record's previous slot as
//! superseded. A Fenwick tree over "slot is current" answers "which slot holds the k-th current
//! record" in O(log n), so a page deep into a million records costs the same as the first one.
//! When superseded slots outnumber current ones the log is compacted (amortised O(1) per change).

use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::sync::Arc;

/// A Fenwick (binary indexed) tree of counts that can grow at the end.
struct Fenwick {
    /// 1-based; `tree[0]` is unused.
    tree: Vec<i64>,
}

fn lowbit(i: usize) -> usize {
    i & i.wrapping_neg()
}

impl Fenwick {
    fn new() -> Self {
        Fenwick { tree: vec![0] }
    }

    /// Builds the tree over `values` in O(n).
    fn from_values(values: impl Iterator<Item = i64>) -> Self {
        let mut tree = vec![0];
        tree.extend(values);
        let n = tree.len() - 1;
        for i in 1..=n {
            let j = i + lowbit(i);
            if j <= n {
                tree[j] += tree[i];
            }
        }
        Fenwick { tree }
    }

    fn len(&self) -> usize {
        self.tree.len() - 1
    }

    /// Sum of the first `n` values.
    fn prefix(&self, mut n: usize) -> i64 {
        let mut sum = 0;
        while n > 0 {
            sum += self.tree[n];
            n &= n - 1;
        }
        sum
    }

    /// Adds `delta` to the value at 0-based `index`.
    fn add(&mut self, index: usize, delta: i64) {
        let n = self.len();
        let mut i = index + 1;
        while i <= n {
            self.tree[i] += delta;
            i += lowbit(i);
        }
    }

    /// Appends a value at the end.
    fn push(&mut self, value: i64) {
        let i = self.len() + 1;
        let node = value + self.prefix(i - 1) - self.prefix(i - lowbit(i));
        self.tree.push(node);
    }

    /// The 0-based index of the value where the running sum first exceeds `k` (with 0/1 values:
    /// the position of the k-th one, counting from 0), or `None` when the total is not above `k`.
    fn find_kth(&self, k: i64) -> Option<usize> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        let mut pos = 0;
        let mut remaining = k + 1;
        let mut step = 1usize << (usize::BITS - 1 - n.leading_zeros());
        while step > 0 {
            let next = pos + step;
            if next <= n && self.tree[next] < remaining {
                pos = next;
                remaining -= self.tree[next];
            }
            step >>= 1;
        }
        (pos < n).then_some(pos)
    }
}

/// One entry of the change log.
pub(super) struct Slot {
    /// When the record last changed (the sandbox-internal change time).
    pub(crate) at: DateTime<Utc>,
    /// The record's id.
    pub(crate) id: Arc<str>,
    /// The record as compact JSON; `None` once a later slot superseded this one.
    pub(crate) json: Option<Box<str>>,
}

/// The records of one resource.
pub(super) struct Table {
    slots: Vec<Slot>,
    current: Fenwick,
    index: HashMap<Arc<str>, usize>,
}

impl Table {
    pub(crate) fn new() -> Self {
        Table {
            slots: Vec::new(),
            current: Fenwick::new(),
            index: HashMap::new(),
        }
    }

    /// How many records (including ones flagged deleted) the table holds.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// A change time for a change made at `now`: never earlier than `now`, and strictly after
    /// every change time handed out before, so the log stays ordered.
    pub(crate) fn next_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self.slots.last() {
            Some(last) if last.at >= now => last.at + TimeDelta::microseconds(1),
            _ => now,
        }
    }

    /// The current JSON of record `id`.
    pub(crate) fn get(&self, id: &str) -> Option<&str> {
        let slot = &self.slots[*self.index.get(id)?];
        slot.json.as_deref()
    }

    /// Stores a new version of record `id`, changed at `at` (which must come from
    /// [`Table::next_time`]).
    pub(crate) fn put(&mut self, id: &str, at: DateTime<Utc>, json: String) {
        debug_assert!(self.slots.last().is_none_or(|last| last.at < at));
        let id: Arc<str> = match self.index.get_key_value(id) {
            Some((key, &old)) => {
                let key = key.clone();
                self.slots[old].json = None;
                self.current.add(old, -1);
                key
            }
            None => Arc::from(id),
        };
        self.index.insert(id.clone(), self.slots.len());
        self.slots.push(Slot {
            at,
            id,
            json: Some(json.into_boxed_str()),
        });
        self.current.push(1);
        if self.slots.len() > 2 * self.index.len() + 1024 {
            self.compact();
        }
    }

    /// Drops superseded slots and rebuilds the index and the tree.
    fn compact(&mut self) {
        self.slots.retain(|s| s.json.is_some());
        for (pos, slot) in self.slots.iter().enumerate() {
            if let Some(entry) = self.index.get_mut(&slot.id) {
                *entry = pos;
            }
        }
        self.current = Fenwick::from_values(std::iter::repeat_n(1, self.slots.len()));
    }

    /// The records changed at or after `since` (all when `None`), in change order, skipping the
    /// first `skip` of them and returning at most `limit`.
    pub(crate) fn page(
        &self,
        since: Option<DateTime<Utc>>,
        skip: usize,
        limit: usize,
    ) -> Vec<&str> {
        let start = match since {
            Some(since) => self.slots.partition_point(|s| s.at < since),
            None => 0,
        };
        let Some(k) = (self.current.prefix(start) as usize).checked_add(skip) else {
            return Vec::new();
        };
        if k >= self.len() || limit == 0 {
            return Vec::new();
        }
        let Some(first) = self.current.find_kth(k as i64) else {
            return Vec::new();
        };
        self.slots[first..]
            .iter()
            .filter_map(|s| s.json.as_deref())
            .take(limit)
            .collect()
    }

    /// Every current record changed at or after `since` (all when `None`), in change order.
    pub(crate) fn window(&self, since: Option<DateTime<Utc>>) -> impl Iterator<Item = &Slot> {
        let start = match since {
            Some(since) => self.slots.partition_point(|s| s.at < since),
            None => 0,
        };
        self.slots[start..].iter().filter(|s| s.json.is_some())
    }

    /// The `k`-th current record in change order (`k` is taken modulo the count), for picking a
    /// record at random without depending on hash order.
    pub(crate) fn nth(&self, k: usize) -> Option<&Slot> {
        if self.index.is_empty() {
            return None;
        }
        let pos = self.current.find_kth((k % self.index.len()) as i64)?;
        Some(&self.slots[pos])
    }

    /// Every current record, in change order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter().filter(|s| s.json.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenwick_matches_naive_counts() {
        let mut f = Fenwick::new();
        let mut naive = Vec::new();
        for i in 0..300usize {
            let v = (i % 3 != 0) as i64;
            f.push(v);
            naive.push(v);
        }
        for i in (0..300).step_by(7) {
            f.add(i, -naive[i]);
            naive[i] = 0;
        }
        for n in 0..=300 {
            assert_eq!(f.prefix(n), naive[..n].iter().sum::<i64>(), "prefix {n}");
        }
        let ones: Vec<usize> = (0..300).filter(|&i| naive[i] == 1).collect();
        for (k, &pos) in ones.iter().enumerate() {
            assert_eq!(f.find_kth(k as i64), Some(pos));
        }
        assert_eq!(f.find_kth(ones.len() as i64), None);
        let rebuilt = Fenwick::from_values(naive.iter().copied());
        for n in 0..=300 {
            assert_eq!(rebuilt.prefix(n), f.prefix(n));
        }
    }

    #[test]
    fn table_pages_skip_superseded_versions_and_compact() {
        let mut t = Table::new();
        let t0 = DateTime::parse_from_rfc3339("2026-11-29T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for i in 0..2000 {
            let at = t.next_time(t0);
            t.put(&format!("id{i:04}"), at, format!("{i}"));
        }
        // Rewrite the even ids many times, forcing compactions.
        for round in 0..3 {
            for i in (0..2000).step_by(2) {
                let at = t.next_time(t0);
                t.put(&format!("id{i:04}"), at, format!("{i}-{round}"));
            }
        }
        assert_eq!(t.len(), 2000);
        assert!(t.slots.len() <= 2 * 2000 + 1024);
        let all: Vec<&str> = t.page(None, 0, usize::MAX);
        assert_eq!(all.len(), 2000);
        // Odd ids first (never changed again), then the even ids in their last rewrite order.
        assert_eq!(all[0], "1");
        assert_eq!(all[999], "1999");
        assert_eq!(all[1000], "0-2");
        assert_eq!(t.page(None, 1990, 100).len(), 10);
        assert!(t.page(None, 2000, 100).is_empty());
        assert_eq!(t.get("id0002"), Some("2-2"));
        let last_at = t.iter().last().unwrap().at;
        assert_eq!(t.page(Some(last_at), 0, 100), vec!["1998-2"]);
        assert_eq!(t.nth(0).unwrap().id.as_ref(), "id0001");
    }
}
