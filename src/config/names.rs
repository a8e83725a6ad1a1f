//! The set of check names of one load, found by hash.
//!
//! A reload that takes over 100,000 parsed checks should not read 100,000 names scattered
//! over the heap to learn what it already knows: the name of every taken-over check was
//! hashed when it was first parsed (`Sources`), so the set is built from those hashes, and
//! a name is read only to confirm a hit. The full list is built only if a check asks for
//! it (a `rule` with dynamic references, a `plugin` that watches every check).

use std::cell::OnceCell;

use super::CheckConfig;

/// The 64-bit hash of a check name that [`Names`] and `Sources` use.
pub fn hash(name: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(name.as_bytes())
}

/// One entry's name: read from the file, lent by a taken-over check, or absent (an
/// entry without `name`, already reported).
#[derive(Clone, Copy)]
pub enum Name<'n> {
    /// Parsed from this file.
    Parsed(&'n str),
    /// A taken-over check's.
    Reused(&'n CheckConfig),
    /// None.
    Missing,
}

impl<'n> Name<'n> {
    fn get(self) -> Option<&'n str> {
        match self {
            Name::Parsed(s) => Some(s),
            Name::Reused(c) => Some(c.name.as_str()),
            Name::Missing => None,
        }
    }
}

/// What a kind's parser may ask about the other checks' names (`ParseCx::names`).
pub trait NameSet {
    /// Whether a check is named `name`.
    fn contains(&self, name: &str) -> bool;
    /// Every name, in file order.
    fn all(&self) -> &[&str];
}

impl NameSet for Names<'_> {
    fn contains(&self, name: &str) -> bool {
        Names::contains(self, name)
    }

    fn all(&self) -> &[&str] {
        Names::all(self)
    }
}

/// Every check name of a load.
pub struct Names<'n> {
    names: Vec<Name<'n>>,
    hashes: Vec<u64>,
    /// Name hash → the first entry with it.
    index: super::blocks::ByHash<u32>,
    /// Entries whose name an earlier entry already has, in increasing order.
    duplicates: Vec<usize>,
    /// Two different names share a hash: lookups go through the list.
    collision: bool,
    list: OnceCell<Vec<&'n str>>,
}

impl<'n> Names<'n> {
    /// The names of the entries, with their hashes (ignored for `Missing`).
    pub fn new(names: Vec<Name<'n>>, hashes: Vec<u64>) -> Self {
        debug_assert_eq!(names.len(), hashes.len());
        let mut index = super::blocks::ByHash::default();
        index.reserve(names.len());
        let mut duplicates = Vec::new();
        let mut collision = false;
        for (i, (n, h)) in names.iter().zip(&hashes).enumerate() {
            if matches!(n, Name::Missing) {
                continue;
            }
            match index.entry(u128::from(*h)) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(i as u32);
                }
                std::collections::hash_map::Entry::Occupied(o) => {
                    // Equal hashes: the same name, or (rarely) a collision.
                    if names[*o.get() as usize].get() == n.get() {
                        duplicates.push(i);
                    } else {
                        collision = true;
                    }
                }
            }
        }
        Self {
            names,
            hashes,
            index,
            duplicates,
            collision,
            list: OnceCell::new(),
        }
    }

    /// Whether a check is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        if self.collision {
            return self.all().contains(&name);
        }
        self.index
            .get(&u128::from(hash(name)))
            .is_some_and(|&i| self.names[i as usize].get() == Some(name))
    }

    /// Every name, in file order.
    pub fn all(&self) -> &[&'n str] {
        self.list
            .get_or_init(|| self.names.iter().filter_map(|n| n.get()).collect())
    }

    /// How many entries have a name.
    pub fn len(&self) -> usize {
        self.names
            .iter()
            .filter(|n| !matches!(n, Name::Missing))
            .count()
    }

    /// Whether no entry has a name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether entry `i` repeats an earlier entry's name.
    pub fn is_duplicate(&self, i: usize) -> bool {
        self.duplicates.binary_search(&i).is_ok()
    }

    /// The hash of the set (not the order) of names: equal sets, equal hashes.
    pub fn set_hash(&self) -> u64 {
        self.names
            .iter()
            .zip(&self.hashes)
            .filter(|(n, _)| !matches!(n, Name::Missing))
            .fold(0u64, |acc, (_, h)| acc.wrapping_add(*h))
            .wrapping_add(self.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(list: &[&'a str]) -> Names<'a> {
        Names::new(
            list.iter().map(|n| Name::Parsed(n)).collect(),
            list.iter().map(|n| hash(n)).collect(),
        )
    }

    #[test]
    fn finds_names_and_duplicates() {
        let n = names(&["a", "b", "a", "c"]);
        assert!(n.contains("a") && n.contains("c") && !n.contains("d"));
        assert!(n.is_duplicate(2) && !n.is_duplicate(0) && !n.is_duplicate(1));
        assert_eq!(n.all(), ["a", "b", "a", "c"]);
        assert_eq!(n.len(), 4);
    }

    #[test]
    fn a_hash_collision_is_not_a_duplicate_and_stays_findable() {
        // Two different names forced onto one hash.
        let n = Names::new(vec![Name::Parsed("x"), Name::Parsed("y")], vec![7, 7]);
        assert!(!n.is_duplicate(1));
        assert!(n.contains("x") && n.contains("y") && !n.contains("z"));
    }

    #[test]
    fn set_hash_ignores_order() {
        assert_eq!(names(&["a", "b"]).set_hash(), names(&["b", "a"]).set_hash());
        assert_ne!(names(&["a", "b"]).set_hash(), names(&["a", "c"]).set_hash());
        assert_ne!(names(&["a"]).set_hash(), names(&["a", "a"]).set_hash());
    }
}
