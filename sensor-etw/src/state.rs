//! Bounded caches. ETW names objects once (a create, an open, a rundown)
//! and refers to them by kernel address afterwards, so the decoder keeps
//! address -> name tables; each is bounded, and every eviction is counted
//! by the caller.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
};

/// A map that forgets its oldest insertion when full (FIFO). Re-inserting
/// a key makes it young again.
#[derive(Debug)]
pub struct Bounded<K, V> {
    map: HashMap<K, (V, u64)>,
    order: VecDeque<(K, u64)>,
    capacity: usize,
    generation: u64,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            generation: 0,
        }
    }

    /// Inserts `key`; returns the entries evicted to make room.
    pub fn insert(&mut self, key: K, value: V) -> Vec<(K, V)> {
        self.generation += 1;
        let g = self.generation;
        self.map.insert(key.clone(), (value, g));
        self.order.push_back((key, g));
        let mut evicted = Vec::new();
        while self.map.len() > self.capacity {
            let Some((k, g)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|(_, cur)| *cur == g)
                && let Some((v, _)) = self.map.remove(&k)
            {
                evicted.push((k, v));
            }
        }
        // Stale order entries (keys re-inserted or removed) are dropped
        // lazily; compact when they dominate so the queue stays bounded.
        if self.order.len() > 2 * self.capacity + 16 {
            let map = &self.map;
            self.order
                .retain(|(k, g)| map.get(k).is_some_and(|(_, cur)| cur == g));
        }
        evicted
    }

    #[must_use]
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key).map(|(v, _)| v)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key).map(|(v, _)| v)
    }

    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.map.remove(key).map(|(v, _)| v)
    }

    #[must_use]
    pub fn contains(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes and returns the entries `pred` selects.
    pub fn drain_where(&mut self, mut pred: impl FnMut(&K, &V) -> bool) -> Vec<(K, V)> {
        let keys: Vec<K> = self
            .map
            .iter()
            .filter(|(k, (v, _))| pred(k, v))
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| self.map.remove(&k).map(|(v, _)| (k, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_leaves_first_and_reinsertion_makes_young() {
        let mut b = Bounded::new(2);
        assert!(b.insert(1, "a").is_empty());
        assert!(b.insert(2, "b").is_empty());
        assert!(b.insert(1, "a2").is_empty());
        assert_eq!(b.insert(3, "c"), vec![(2, "b")]);
        assert_eq!(b.get(&1), Some(&"a2"));
        assert_eq!(b.remove(&1), Some("a2"));
        assert!(b.insert(4, "d").is_empty());
        assert_eq!(b.len(), 2);
        for _ in 0..1000 {
            b.insert(5, "e");
        }
        assert!(b.order.len() <= 2 * 2 + 16 + 1);
        assert_eq!(b.drain_where(|k, _| *k == 5), vec![(5, "e")]);
    }
}
