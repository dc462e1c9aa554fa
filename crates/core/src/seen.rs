//! Which items each user has already rated, so recommendations can skip them.
//!
//! Stored in compressed-sparse-row form: one offset per user into one sorted
//! array of item indices. That is compact (4 bytes per rating), goes into the
//! model file as two flat arrays, and gives each user's list as a sorted slice
//! for the top-N exclusion. Items rated after training (online learning) go
//! to a small per-user overlay rather than rebuilding the arrays. A model
//! file stores the merged rows and, apart, the overlay: followers replace a
//! user's overlay with the learner's list of everything rated since the
//! batch model, so a learner resumed from a file must still know that list.

use std::collections::HashMap;

use crate::data::Rating;

/// Items seen per user.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeenItems {
    offsets: Vec<u64>,
    items: Vec<u32>,
    added: HashMap<u32, Vec<u32>>,
}

impl SeenItems {
    /// Builds the index from ratings; duplicates of a (user, item) pair count once.
    pub fn from_ratings(n_users: usize, ratings: &[Rating]) -> Self {
        let mut counts = vec![0u64; n_users + 1];
        for r in ratings {
            if let Some(c) = counts.get_mut(r.user as usize + 1) {
                *c += 1;
            }
        }
        for u in 0..n_users {
            counts[u + 1] += counts[u];
        }
        let mut fill = counts.clone();
        let mut items = vec![0u32; ratings.len()];
        for r in ratings {
            if let Some(at) = fill.get_mut(r.user as usize) {
                items[*at as usize] = r.item;
                *at += 1;
            }
        }
        // Sort and de-duplicate each row, compacting in place.
        let mut offsets = Vec::with_capacity(n_users + 1);
        offsets.push(0u64);
        let mut write = 0usize;
        for u in 0..n_users {
            let (start, end) = (counts[u] as usize, counts[u + 1] as usize);
            items[start..end].sort_unstable();
            let mut last = None;
            for read in start..end {
                let item = items[read];
                if last != Some(item) {
                    items[write] = item;
                    write += 1;
                    last = Some(item);
                }
            }
            offsets.push(write as u64);
        }
        items.truncate(write);
        items.shrink_to_fit();
        SeenItems {
            offsets,
            items,
            added: HashMap::new(),
        }
    }

    /// Rebuilds the index from its two arrays (as stored in a model file),
    /// checking that they describe sorted, in-range rows.
    pub fn from_parts(offsets: Vec<u64>, items: Vec<u32>, n_items: usize) -> Result<Self, String> {
        check_rows(&offsets, &items, n_items)?;
        Ok(SeenItems {
            offsets,
            items,
            added: HashMap::new(),
        })
    }

    /// Moves the items of `offsets`/`items` (rows as [`SeenItems::added_parts`]
    /// gives them, each item already in its user's row) from the training
    /// rows to the overlay of items rated after training, as they were when
    /// the model was saved.
    pub fn split_added(&mut self, offsets: &[u64], items: &[u32]) -> Result<(), String> {
        check_rows(offsets, items, u32::MAX as usize)?;
        if offsets.len() > self.offsets.len() {
            return Err("rows rated after training for more users than the model has".into());
        }
        let mut added = HashMap::new();
        for (user, w) in offsets.windows(2).enumerate() {
            let row = &items[w[0] as usize..w[1] as usize];
            if row.is_empty() {
                continue;
            }
            let base = self.base_row(user as u32);
            if row.iter().any(|i| base.binary_search(i).is_err()) {
                return Err(format!(
                    "an item rated after training by user {user} is missing from their seen items"
                ));
            }
            added.insert(user as u32, row.to_vec());
        }
        let mut kept = Vec::with_capacity(self.items.len() - items.len());
        let mut offsets = Vec::with_capacity(self.offsets.len());
        offsets.push(0u64);
        for user in 0..self.n_users() as u32 {
            let row = added.get(&user).map_or(&[][..], Vec::as_slice);
            kept.extend(
                self.base_row(user)
                    .iter()
                    .filter(|i| row.binary_search(i).is_err()),
            );
            offsets.push(kept.len() as u64);
        }
        self.offsets = offsets;
        self.items = kept;
        self.added = added;
        Ok(())
    }

    /// Number of users with a row.
    pub fn n_users(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Makes room for users up to `n_users` (new users have seen nothing).
    pub fn ensure_users(&mut self, n_users: usize) {
        let last = self.offsets.last().copied().unwrap_or(0);
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        while self.n_users() < n_users {
            self.offsets.push(last);
        }
    }

    /// Replaces the items `user` rated after training (as a follower learns them).
    pub fn set_added_row(&mut self, user: u32, mut items: Vec<u32>) {
        items.sort_unstable();
        items.dedup();
        let base = self.base_row(user);
        items.retain(|i| base.binary_search(i).is_err());
        if items.is_empty() {
            self.added.remove(&user);
        } else {
            self.added.insert(user, items);
        }
    }

    /// The items `user` rated in the training data, sorted.
    pub fn base_row(&self, user: u32) -> &[u32] {
        let u = user as usize;
        match (self.offsets.get(u), self.offsets.get(u + 1)) {
            (Some(&start), Some(&end)) => &self.items[start as usize..end as usize],
            _ => &[],
        }
    }

    /// Items `user` rated after training, sorted (empty for most users).
    pub fn added_row(&self, user: u32) -> &[u32] {
        self.added.get(&user).map_or(&[], Vec::as_slice)
    }

    /// True when `user` has rated `item`.
    pub fn contains(&self, user: u32, item: u32) -> bool {
        self.base_row(user).binary_search(&item).is_ok()
            || self.added_row(user).binary_search(&item).is_ok()
    }

    /// Records that `user` rated `item`; returns false when it was already known.
    pub fn insert(&mut self, user: u32, item: u32) -> bool {
        if self.base_row(user).binary_search(&item).is_ok() {
            return false;
        }
        let row = self.added.entry(user).or_default();
        match row.binary_search(&item) {
            Ok(_) => false,
            Err(at) => {
                row.insert(at, item);
                true
            }
        }
    }

    /// Total number of (user, item) pairs.
    pub fn len(&self) -> usize {
        self.items.len() + self.added.values().map(Vec::len).sum::<usize>()
    }

    /// True when no user has seen anything.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The overlay alone (items rated after training) as CSR arrays over
    /// `n_users` users, for writing a model file; `None` when it is empty.
    /// Kept apart so that a learner resumed from the file still knows what
    /// each user rated since the batch model.
    pub fn added_parts(&self, n_users: usize) -> Option<(Vec<u64>, Vec<u32>)> {
        if self.added.is_empty() {
            return None;
        }
        let mut offsets = Vec::with_capacity(n_users + 1);
        let mut items = Vec::new();
        offsets.push(0);
        for u in 0..n_users as u32 {
            items.extend_from_slice(self.added_row(u));
            offsets.push(items.len() as u64);
        }
        Some((offsets, items))
    }

    /// The CSR arrays including the overlay, for writing a model file.
    pub fn to_parts(&self, n_users: usize) -> (Vec<u64>, Vec<u32>) {
        let mut offsets = Vec::with_capacity(n_users + 1);
        let mut items = Vec::with_capacity(self.len());
        offsets.push(0);
        for u in 0..n_users as u32 {
            let (base, added) = (self.base_row(u), self.added_row(u));
            let start = items.len();
            items.extend_from_slice(base);
            items.extend_from_slice(added);
            if !added.is_empty() {
                items[start..].sort_unstable();
            }
            offsets.push(items.len() as u64);
        }
        (offsets, items)
    }
}

/// Checks that CSR arrays describe sorted rows of items below `n_items`.
fn check_rows(offsets: &[u64], items: &[u32], n_items: usize) -> Result<(), String> {
    if offsets.first() != Some(&0) || offsets.last() != Some(&(items.len() as u64)) {
        return Err("seen-items offsets do not span the item array".into());
    }
    for w in offsets.windows(2) {
        if w[0] > w[1] || w[1] > items.len() as u64 {
            return Err("seen-items offsets go backwards or past the item array".into());
        }
        let row = &items[w[0] as usize..w[1] as usize];
        if row.windows(2).any(|p| p[0] >= p[1]) || row.iter().any(|&i| i as usize >= n_items) {
            return Err("a seen-items row is unsorted or names an unknown item".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(user: u32, item: u32) -> Rating {
        Rating {
            user,
            item,
            value: 3.0,
        }
    }

    #[test]
    fn rows_are_sorted_and_deduplicated() {
        let seen = SeenItems::from_ratings(3, &[r(0, 5), r(2, 1), r(0, 2), r(0, 5), r(2, 0)]);
        assert_eq!(seen.base_row(0), &[2, 5]);
        assert_eq!(seen.base_row(1), &[] as &[u32]);
        assert_eq!(seen.base_row(2), &[0, 1]);
        assert_eq!(seen.base_row(9), &[] as &[u32]);
        assert_eq!(seen.len(), 4);
        assert!(seen.contains(0, 5) && !seen.contains(1, 5));
    }

    #[test]
    fn overlay_insertions_are_visible_and_survive_round_trip() {
        let mut seen = SeenItems::from_ratings(2, &[r(0, 3), r(1, 1)]);
        assert!(seen.insert(0, 1));
        assert!(!seen.insert(0, 1));
        assert!(!seen.insert(0, 3));
        assert!(seen.insert(1, 7));
        assert!(seen.contains(0, 1));
        let (offsets, items) = seen.to_parts(2);
        assert_eq!(
            (offsets.clone(), items.clone()),
            (vec![0, 2, 4], vec![1, 3, 1, 7])
        );
        let back = SeenItems::from_parts(offsets, items, 8).unwrap();
        assert_eq!(back.base_row(0), &[1, 3]);
    }

    #[test]
    fn the_overlay_splits_back_out_of_the_merged_rows() {
        let mut seen = SeenItems::from_ratings(3, &[r(0, 3), r(1, 1), r(2, 4)]);
        seen.insert(0, 1);
        seen.insert(0, 8);
        seen.insert(2, 0);
        let (offsets, items) = seen.to_parts(3);
        let (added_offsets, added_items) = seen.added_parts(3).unwrap();
        let mut back = SeenItems::from_parts(offsets, items, 9).unwrap();
        back.split_added(&added_offsets, &added_items).unwrap();
        assert_eq!(back, seen);
        assert_eq!(back.base_row(0), &[3]);
        assert_eq!(back.added_row(0), &[1, 8]);
        assert_eq!(back.added_row(2), &[0]);
        assert_eq!(SeenItems::from_ratings(2, &[r(0, 3)]).added_parts(2), None);
    }

    #[test]
    fn an_overlay_that_does_not_fit_the_rows_is_refused() {
        let mut seen = SeenItems::from_ratings(2, &[r(0, 3), r(1, 1)]);
        assert!(seen.split_added(&[0, 1, 1], &[2]).is_err(), "not rated");
        assert!(
            seen.split_added(&[0, 0, 0, 1], &[1]).is_err(),
            "no such user"
        );
        assert!(
            seen.split_added(&[0, 2], &[3]).is_err(),
            "offsets past the items"
        );
        assert_eq!(seen, SeenItems::from_ratings(2, &[r(0, 3), r(1, 1)]));
    }

    #[test]
    fn from_parts_rejects_inconsistent_arrays() {
        assert!(SeenItems::from_parts(vec![0, 2], vec![1], 5).is_err());
        assert!(SeenItems::from_parts(vec![0, 2], vec![3, 1], 5).is_err());
        assert!(SeenItems::from_parts(vec![0, 1], vec![9], 5).is_err());
        assert!(SeenItems::from_parts(vec![0, 2, 1], vec![1, 2], 5).is_err());
        assert!(SeenItems::from_parts(vec![0, 5, 2], vec![1, 2], 5).is_err());
    }
}
