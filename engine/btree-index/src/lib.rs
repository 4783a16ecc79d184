//! Lightcone's index structure: a copy-on-write B+tree over normalized byte-string keys.
//!
//! Owns: the tree ([`BTree`]: unique and non-unique, point lookup, range scans in both
//! directions, delete, bulk build from sorted input) and the order-preserving key encoding
//! ([`key`]) that turns typed column values into byte strings whose `memcmp` order is the
//! values' order, so the tree itself never needs to know column types.
//!
//! Does not own: which columns an index covers or when it is updated (`lightcone-mvcc`).
//!
//! Snapshots: cloning a [`BTree`] is O(1); nodes are shared behind `Arc` and a mutation
//! copies only the nodes on its path that a clone still shares.

pub mod key;
mod tree;

pub use tree::*;
