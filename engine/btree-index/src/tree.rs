//! The copy-on-write B+tree: [`BTree`] and its iterator [`Range`].
//!
//! Layout: leaves hold up to 128 entries as flat key bytes plus a value array; internal nodes
//! hold up to 64 children behind `Arc` and (key, value) separators. Submodules: `node` (raw
//! layout and size limits), `ops` (lookup, insert, remove, rebalancing), `iter` (cursors),
//! `build` (bulk build), `check` (invariant checker).

mod build;
mod check;
mod iter;
mod node;
mod ops;
#[cfg(test)]
mod tests;

use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

pub use iter::Range;
use node::{Ctx, Entries, Node, LEAF_LIMITS};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// Why a [`BTree`] operation was refused. A refused operation leaves the tree unchanged.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BTreeError {
    /// Unique tree: the key is already present, mapped to `existing`.
    #[error("duplicate key (already mapped to {existing})")]
    DuplicateKey {
        /// The value the key already maps to.
        existing: u64,
    },
    /// Non-unique tree: this exact (key, value) entry is already present.
    #[error("duplicate (key, value) entry")]
    DuplicateEntry,
    /// The key is longer than [`MAX_KEY_BYTES`].
    #[error("key of {len} bytes exceeds the maximum of {max}")]
    KeyTooLarge {
        /// Length of the refused key.
        len: usize,
        /// The limit, [`MAX_KEY_BYTES`].
        max: usize,
    },
    /// Fixed-width tree: the key is not exactly the tree's key width.
    #[error("key of {got} bytes in a tree of {expected}-byte keys")]
    WrongKeyWidth {
        /// The tree's key width.
        expected: usize,
        /// Length of the refused key.
        got: usize,
    },
    /// [`BTree::bulk_build`] input is out of order, or repeats an entry (or, for a unique
    /// tree, a key), at this position.
    #[error("bulk-build input not strictly increasing at position {index}")]
    NotSorted {
        /// Zero-based position of the offending entry in the input.
        index: usize,
    },
}

/// A B+tree from normalized byte-string keys (compared with `memcmp` order) to `u64` values.
///
/// Cloning is O(1): clones share nodes behind `Arc`, and a mutation copies only the nodes on
/// its path that some clone still shares, so every clone keeps seeing its own version.
#[derive(Clone)]
pub struct BTree {
    root: Option<Arc<Node>>,
    len: usize,
    unique: bool,
    key_width: Option<usize>,
}

impl BTree {
    /// An empty tree (allocates nothing).
    ///
    /// `unique`: at most one entry per key. Otherwise entries are ordered by (key, value) and
    /// the same key may appear with many values.
    /// `key_width`: `Some(w)` => every key is exactly `w` bytes, stored flat with stride `w`
    /// (the compact layout). `None` => variable-length keys, stored flat in one buffer per node
    /// plus an offsets array. A width above [`MAX_KEY_BYTES`] makes every insert fail.
    pub fn new(unique: bool, key_width: Option<usize>) -> BTree {
        BTree { root: None, len: 0, unique, key_width }
    }

    /// Whether the tree holds at most one entry per key.
    pub fn is_unique(&self) -> bool {
        self.unique
    }

    /// The fixed key width, or `None` for variable-length keys.
    pub fn key_width(&self) -> Option<usize> {
        self.key_width
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Levels from the root to the leaves (0 for an empty tree, 1 for a single leaf).
    pub fn depth(&self) -> usize {
        self.root.as_deref().map_or(0, Node::depth)
    }

    fn cx(&self) -> Ctx {
        Ctx { unique: self.unique, width: self.key_width }
    }

    /// Refuses keys the tree cannot hold: wrong width first (more telling), then too long.
    fn validate_key(width: Option<usize>, key: &[u8]) -> Result<(), BTreeError> {
        if let Some(expected) = width {
            if key.len() != expected {
                return Err(BTreeError::WrongKeyWidth { expected, got: key.len() });
            }
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(BTreeError::KeyTooLarge { len: key.len(), max: MAX_KEY_BYTES });
        }
        Ok(())
    }

    /// Adds the entry (key, value). Errors (tree unchanged): [`BTreeError::DuplicateKey`] in a
    /// unique tree whose key is present, [`BTreeError::DuplicateEntry`] in a non-unique tree
    /// holding this exact entry, [`BTreeError::WrongKeyWidth`], [`BTreeError::KeyTooLarge`].
    pub fn insert(&mut self, key: &[u8], value: u64) -> Result<(), BTreeError> {
        Self::validate_key(self.key_width, key)?;
        let cx = self.cx();
        match self.root.as_mut() {
            None => {
                let mut leaf = Entries::new(cx.width);
                leaf.push(key, value, LEAF_LIMITS);
                self.root = Some(Arc::new(Node::Leaf(leaf)));
            }
            Some(root) => {
                if let Some(split) = ops::insert(root, key, value, cx, true, false)? {
                    *root = Arc::new(split.into_root(Arc::clone(root), cx));
                }
            }
        }
        self.len += 1;
        Ok(())
    }

    /// Removes the exact entry (key, value); false if absent. (Unique tree: removes only if
    /// the key maps to `value`.)
    pub fn remove(&mut self, key: &[u8], value: u64) -> bool {
        let cx = self.cx();
        let Some(root) = self.root.as_mut() else {
            return false;
        };
        if !ops::remove(root, key, value, cx, false) {
            return false;
        }
        ops::collapse_root(&mut self.root);
        self.len -= 1;
        true
    }

    /// Unique tree: the value for `key`. Non-unique: the smallest value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        let root = self.root.as_deref()?;
        if self.unique {
            ops::find(root, key, 0, self.cx()).map(|(_, v)| v)
        } else {
            // (key, 0) may not be present; the first entry at or after `key` is the answer if
            // it carries `key`.
            ops::first_not_before(root, &|k: &[u8]| k < key).and_then(|(k, v)| (k == key).then_some(v))
        }
    }

    /// Entries whose key lies within the bounds (which compare keys only, in `memcmp` order),
    /// in ascending (key, value) order. Iterate from both ends: mixing `next` and `next_back`
    /// yields every entry exactly once. Bounds that exclude everything (even `lo > hi`) give an
    /// empty range.
    pub fn range<'a>(&'a self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Range<'a> {
        match self.root.as_deref() {
            None => Range::empty(),
            Some(root) => Range::new(root, lo, hi),
        }
    }

    /// All entries in ascending (key, value) order.
    pub fn iter(&self) -> Range<'_> {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// Builds a tree from entries already sorted in (key, value) order: strictly increasing,
    /// and for a unique tree with strictly increasing keys. Leaves and internal nodes are
    /// packed full (the last two of each level share evenly). O(n).
    ///
    /// Errors: [`BTreeError::NotSorted`] with the position of the first entry out of order,
    /// or the key errors of [`BTree::insert`].
    pub fn bulk_build<K: AsRef<[u8]>>(
        unique: bool,
        key_width: Option<usize>,
        entries: impl IntoIterator<Item = (K, u64)>,
    ) -> Result<BTree, BTreeError> {
        let cx = Ctx { unique, width: key_width };
        let (root, len) = build::build(cx, entries, |k| Self::validate_key(key_width, k))?;
        Ok(BTree { root, len, unique, key_width })
    }

    /// Heap bytes held by this tree's nodes: each node's allocation plus its vectors'
    /// capacities, each node counted once (nodes shared with clones count fully here too).
    pub fn memory_bytes(&self) -> usize {
        self.root.as_deref().map_or(0, Node::heap_bytes)
    }

    /// Checks every structural invariant and panics with a message on a violation: entries
    /// sorted, separators bound their subtrees, all leaves at the same depth, node sizes within
    /// limits, `len` matches. Nodes must be at least a quarter full except the root and the
    /// nodes on the right edge, where append-splits deliberately start nodes with one entry.
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        check::check_tree(self.root.as_ref(), self.len, self.cx(), false);
    }
}

impl fmt::Debug for BTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BTree")
            .field("len", &self.len)
            .field("unique", &self.unique)
            .field("depth", &self.depth())
            .finish()
    }
}
