//! Node layout: flat key storage ([`Keys`]), (key, value) arrays ([`Entries`]) and the two node
//! kinds. All offset arithmetic lives here, behind small accessors.

use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;

/// Most entries a leaf holds.
pub(super) const LEAF_CAP: usize = 128;
/// A leaf with fewer entries than this is underfull (variable-width leaves: and fewer key bytes
/// than [`LEAF_MIN_KEY_BYTES`]).
pub(super) const LEAF_MIN: usize = LEAF_CAP / 4;
/// Variable-width trees: most key bytes a leaf holds, so a leaf of long keys stays a few pages.
pub(super) const LEAF_MAX_KEY_BYTES: usize = 8 * 1024;
/// Variable-width trees: a leaf holding at least this many key bytes is not underfull.
pub(super) const LEAF_MIN_KEY_BYTES: usize = LEAF_MAX_KEY_BYTES / 4;
/// Most children an internal node holds. Moderate, because a copy-on-write copy of an internal
/// node clones (and later drops) one `Arc` per child.
pub(super) const INTERNAL_CAP: usize = 64;
/// An internal node with fewer children than this is underfull.
pub(super) const INTERNAL_MIN: usize = INTERNAL_CAP / 4;
/// Smallest allocation when a vector first grows, so tiny nodes do not reallocate per insert.
const MIN_GROWTH: usize = 4;

/// Per-tree parameters every node operation needs.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ctx {
    pub(super) unique: bool,
    pub(super) width: Option<usize>,
}

impl Ctx {
    /// Entry order: key bytes, then (non-unique trees only) the value. In a unique tree the value
    /// never takes part, so separators and lookups compare keys alone.
    pub(super) fn cmp(self, ak: &[u8], av: u64, bk: &[u8], bv: u64) -> Ordering {
        match cmp_keys(ak, bk) {
            Ordering::Equal if !self.unique => av.cmp(&bv),
            other => other,
        }
    }

    pub(super) fn variable(self) -> bool {
        self.width.is_none()
    }
}

/// Byte-string order, with the common 4- and 8-byte keys (u32/i32/u64/i64 columns) compared
/// as big-endian integers instead of through a `memcmp` call.
#[inline]
pub(super) fn cmp_keys(a: &[u8], b: &[u8]) -> Ordering {
    if let (Ok(x), Ok(y)) = (<[u8; 8]>::try_from(a), <[u8; 8]>::try_from(b)) {
        return u64::from_be_bytes(x).cmp(&u64::from_be_bytes(y));
    }
    if let (Ok(x), Ok(y)) = (<[u8; 4]>::try_from(a), <[u8; 4]>::try_from(b)) {
        return u32::from_be_bytes(x).cmp(&u32::from_be_bytes(y));
    }
    a.cmp(b)
}

/// Growth ceilings for one kind of [`Entries`]: vectors double as they grow but stop doubling
/// at these sizes, so a full node carries no growth slack.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    entries: usize,
    bytes: usize,
}

/// Leaves: [`LEAF_CAP`] entries, [`LEAF_MAX_KEY_BYTES`] key bytes (variable width).
pub(super) const LEAF_LIMITS: Limits = Limits { entries: LEAF_CAP, bytes: LEAF_MAX_KEY_BYTES };
/// Separators of an internal node: one fewer than its children. Key bytes are not limited.
pub(super) const SEP_LIMITS: Limits = Limits { entries: INTERNAL_CAP - 1, bytes: usize::MAX };

/// The capacity to grow to so that `needed` elements fit: double, but not past `soft_max`
/// unless `needed` itself is larger.
fn grown_capacity(current: usize, needed: usize, soft_max: usize) -> usize {
    if needed <= current {
        return current;
    }
    current.saturating_mul(2).max(MIN_GROWTH).min(soft_max).max(needed)
}

/// Makes room for `needed` elements in total, with exact (not 2x amortized) reservations.
pub(super) fn reserve_for<T>(v: &mut Vec<T>, needed: usize, soft_max: usize) {
    let target = grown_capacity(v.capacity(), needed, soft_max);
    if target > v.capacity() {
        v.reserve_exact(target - v.len());
    }
}

/// `v[at..]` moved into a new vector of exactly that length; `v` keeps `v[..at]`.
pub(super) fn split_vec_off<T: Clone>(v: &mut Vec<T>, at: usize) -> Vec<T> {
    let mut tail = Vec::with_capacity(v.len() - at);
    tail.extend(v.drain(at..));
    tail
}

/// Converts a byte offset within one node to the stored `u32`. A node holds at most
/// `INTERNAL_CAP * MAX_KEY_BYTES` (256 KiB) of key bytes, far below `u32::MAX`.
fn off(x: usize) -> u32 {
    x as u32
}

/// The keys of one node, stored flat.
#[derive(Clone, Debug)]
pub(super) enum Keys {
    /// Every key is exactly `width` bytes; key `i` is `bytes[i * width..(i + 1) * width]`.
    Fixed { width: usize, bytes: Vec<u8> },
    /// Key `i` is `bytes[ends[i - 1]..ends[i]]` (starting at 0 for `i == 0`).
    Var { bytes: Vec<u8>, ends: Vec<u32> },
}

impl Keys {
    fn new(width: Option<usize>) -> Keys {
        match width {
            Some(width) => Keys::Fixed { width, bytes: Vec::new() },
            None => Keys::Var { bytes: Vec::new(), ends: Vec::new() },
        }
    }

    /// Byte offset where key `i` starts; `i` may equal the key count (then: total bytes).
    fn start(&self, i: usize) -> usize {
        match self {
            Keys::Fixed { width, .. } => i * width,
            Keys::Var { ends, .. } => {
                if i == 0 {
                    0
                } else {
                    ends[i - 1] as usize
                }
            }
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        match self {
            Keys::Fixed { width, bytes } => &bytes[i * width..(i + 1) * width],
            Keys::Var { bytes, ends } => &bytes[self.start(i)..ends[i] as usize],
        }
    }

    fn total_bytes(&self) -> usize {
        match self {
            Keys::Fixed { bytes, .. } | Keys::Var { bytes, .. } => bytes.len(),
        }
    }

    /// Key bytes of keys `r`.
    fn range_bytes(&self, r: Range<usize>) -> usize {
        self.start(r.end) - self.start(r.start)
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Keys::Fixed { bytes, .. } => bytes.capacity(),
            Keys::Var { bytes, ends } => bytes.capacity() + ends.capacity() * size_of::<u32>(),
        }
    }

    /// Ensures room for `needed` keys in total (`extra_bytes` more key bytes for variable width).
    fn reserve(&mut self, needed: usize, extra_bytes: usize, limits: Limits) {
        match self {
            Keys::Fixed { width, bytes } => {
                // Width 0 stores no bytes. Otherwise grow in whole entries, so a full node's keys
                // fill their allocation exactly.
                if let Some(current) = bytes.capacity().checked_div(*width) {
                    let target = grown_capacity(current, needed, limits.entries);
                    let target_bytes = target * *width;
                    if target_bytes > bytes.capacity() {
                        bytes.reserve_exact(target_bytes - bytes.len());
                    }
                }
            }
            Keys::Var { bytes, ends } => {
                reserve_for(ends, needed, limits.entries);
                reserve_for(bytes, bytes.len() + extra_bytes, limits.bytes);
            }
        }
    }

    /// Inserts `key` before key `i` (`i` may equal the count).
    fn insert(&mut self, i: usize, key: &[u8]) {
        let at = self.start(i);
        match self {
            Keys::Fixed { bytes, .. } => insert_bytes(bytes, at, key),
            Keys::Var { bytes, ends } => {
                insert_bytes(bytes, at, key);
                ends.insert(i, off(at + key.len()));
                for e in &mut ends[i + 1..] {
                    *e += off(key.len());
                }
            }
        }
    }

    fn remove(&mut self, i: usize) {
        let (s, e) = (self.start(i), self.start(i + 1));
        match self {
            Keys::Fixed { bytes, .. } => {
                bytes.drain(s..e);
            }
            Keys::Var { bytes, ends } => {
                bytes.drain(s..e);
                ends.remove(i);
                for x in &mut ends[i..] {
                    *x -= off(e - s);
                }
            }
        }
    }

    /// Keeps the first `n` keys.
    fn truncate(&mut self, n: usize) {
        let cut = self.start(n);
        match self {
            Keys::Fixed { bytes, .. } => bytes.truncate(cut),
            Keys::Var { bytes, ends } => {
                bytes.truncate(cut);
                ends.truncate(n);
            }
        }
    }

    /// Drops the first `n` keys.
    fn drain_front(&mut self, n: usize) {
        let cut = self.start(n);
        match self {
            Keys::Fixed { bytes, .. } => {
                bytes.drain(..cut);
            }
            Keys::Var { bytes, ends } => {
                bytes.drain(..cut);
                ends.drain(..n);
                for x in ends.iter_mut() {
                    *x -= off(cut);
                }
            }
        }
    }

    /// Keys `at..` moved into new exactly-sized storage.
    fn split_off(&mut self, at: usize) -> Keys {
        let base = self.start(at);
        match self {
            Keys::Fixed { width, bytes } => Keys::Fixed { width: *width, bytes: split_vec_off(bytes, base) },
            Keys::Var { bytes, ends } => {
                let tail_ends = ends[at..].iter().map(|&e| e - off(base)).collect();
                ends.truncate(at);
                Keys::Var { bytes: split_vec_off(bytes, base), ends: tail_ends }
            }
        }
    }

    /// Appends `other`'s keys `r` at the end.
    fn extend_from(&mut self, other: &Keys, r: Range<usize>) {
        let (s, e) = (other.start(r.start), other.start(r.end));
        match (self, other) {
            (Keys::Fixed { bytes, .. }, Keys::Fixed { bytes: ob, .. }) => bytes.extend_from_slice(&ob[s..e]),
            (Keys::Var { bytes, ends }, Keys::Var { bytes: ob, ends: oe }) => {
                let base = bytes.len();
                bytes.extend_from_slice(&ob[s..e]);
                ends.extend(oe[r].iter().map(|&x| x - off(s) + off(base)));
            }
            // A tree's nodes all share one layout; this slow path only keeps mixing well defined.
            (this, _) => {
                for i in r {
                    let n = this.count_hint();
                    this.insert(n, other.key(i));
                }
            }
        }
    }

    /// Inserts `other`'s keys `r` at the front.
    fn prepend_from(&mut self, other: &Keys, r: Range<usize>) {
        let (s, e) = (other.start(r.start), other.start(r.end));
        match (self, other) {
            (Keys::Fixed { bytes, .. }, Keys::Fixed { bytes: ob, .. }) => insert_bytes(bytes, 0, &ob[s..e]),
            (Keys::Var { bytes, ends }, Keys::Var { bytes: ob, ends: oe }) => {
                insert_bytes(bytes, 0, &ob[s..e]);
                for x in ends.iter_mut() {
                    *x += off(e - s);
                }
                ends.splice(0..0, oe[r].iter().map(|&x| x - off(s)));
            }
            (this, _) => {
                for (j, i) in r.enumerate() {
                    this.insert(j, other.key(i));
                }
            }
        }
    }

    /// The key count, for the mixed-layout fallback only (fixed width 0 cannot tell).
    fn count_hint(&self) -> usize {
        match self {
            Keys::Fixed { width: 0, .. } => 0,
            Keys::Fixed { width, bytes } => bytes.len() / width,
            Keys::Var { ends, .. } => ends.len(),
        }
    }

    fn shrink_to_fit(&mut self) {
        match self {
            Keys::Fixed { bytes, .. } => bytes.shrink_to_fit(),
            Keys::Var { bytes, ends } => {
                bytes.shrink_to_fit();
                ends.shrink_to_fit();
            }
        }
    }

    /// Panics unless the layout is self-consistent for `len` keys of the tree's `width`.
    fn check_layout(&self, len: usize, width: Option<usize>) {
        match self {
            Keys::Fixed { width: w, bytes } => {
                assert_eq!(width, Some(*w), "node key width {w} differs from the tree's {width:?}");
                assert_eq!(bytes.len(), len * w, "fixed-width key bytes do not match the entry count");
            }
            Keys::Var { bytes, ends } => {
                assert_eq!(width, None, "variable-width node in a fixed-width tree");
                assert_eq!(ends.len(), len, "offset count does not match the entry count");
                assert!(ends.windows(2).all(|w| w[0] <= w[1]), "key offsets decrease");
                assert_eq!(
                    ends.last().map_or(0, |&e| e as usize),
                    bytes.len(),
                    "key offsets do not cover the key bytes"
                );
            }
        }
    }
}

/// Inserts `add` into `bytes` at `at` with one memmove.
fn insert_bytes(bytes: &mut Vec<u8>, at: usize, add: &[u8]) {
    let old = bytes.len();
    bytes.resize(old + add.len(), 0);
    bytes.copy_within(at..old, at + add.len());
    bytes[at..at + add.len()].copy_from_slice(add);
}

/// A sorted array of (key, value) entries: a leaf's contents or an internal node's separators.
#[derive(Clone, Debug)]
pub(super) struct Entries {
    keys: Keys,
    values: Vec<u64>,
}

impl Entries {
    /// Empty, without allocating.
    pub(super) fn new(width: Option<usize>) -> Entries {
        Entries { keys: Keys::new(width), values: Vec::new() }
    }

    /// Empty, with room for exactly `n` entries (and their key bytes, for fixed width).
    pub(super) fn with_capacity(width: Option<usize>, n: usize) -> Entries {
        let mut e = Entries::new(width);
        e.values.reserve_exact(n);
        match &mut e.keys {
            Keys::Fixed { width, bytes } => bytes.reserve_exact(n.saturating_mul(*width)),
            Keys::Var { ends, .. } => ends.reserve_exact(n),
        }
        e
    }

    pub(super) fn len(&self) -> usize {
        self.values.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub(super) fn key(&self, i: usize) -> &[u8] {
        self.keys.key(i)
    }

    pub(super) fn value(&self, i: usize) -> u64 {
        self.values[i]
    }

    pub(super) fn entry(&self, i: usize) -> (&[u8], u64) {
        (self.keys.key(i), self.values[i])
    }

    /// The first entry, if any.
    pub(super) fn first(&self) -> Option<(&[u8], u64)> {
        (!self.is_empty()).then(|| self.entry(0))
    }

    /// The last entry, if any.
    pub(super) fn last(&self) -> Option<(&[u8], u64)> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Total key bytes stored.
    pub(super) fn key_bytes(&self) -> usize {
        self.keys.total_bytes()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.keys.heap_bytes() + self.values.capacity() * size_of::<u64>()
    }

    /// Index of the first entry for which `pred` is false, given `pred` is true for a prefix.
    pub(super) fn partition_point(&self, mut pred: impl FnMut(&[u8], u64) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.key(mid), self.values[mid]) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn reserve(&mut self, extra: usize, extra_bytes: usize, limits: Limits) {
        let needed = self.len() + extra;
        reserve_for(&mut self.values, needed, limits.entries);
        self.keys.reserve(needed, extra_bytes, limits);
    }

    pub(super) fn insert_at(&mut self, i: usize, key: &[u8], value: u64, limits: Limits) {
        self.reserve(1, key.len(), limits);
        self.keys.insert(i, key);
        self.values.insert(i, value);
    }

    pub(super) fn push(&mut self, key: &[u8], value: u64, limits: Limits) {
        self.insert_at(self.len(), key, value, limits);
    }

    pub(super) fn remove_at(&mut self, i: usize) {
        self.keys.remove(i);
        self.values.remove(i);
    }

    pub(super) fn replace_at(&mut self, i: usize, key: &[u8], value: u64, limits: Limits) {
        self.remove_at(i);
        self.insert_at(i, key, value, limits);
    }

    /// Keeps the first `n` entries.
    pub(super) fn truncate(&mut self, n: usize) {
        self.keys.truncate(n);
        self.values.truncate(n);
    }

    /// Drops the first `n` entries.
    pub(super) fn drain_front(&mut self, n: usize) {
        self.keys.drain_front(n);
        self.values.drain(..n);
    }

    /// Entries `at..` moved into a new, exactly-sized `Entries`.
    pub(super) fn split_off(&mut self, at: usize) -> Entries {
        let keys = self.keys.split_off(at);
        Entries { keys, values: split_vec_off(&mut self.values, at) }
    }

    /// Appends `other`'s entries `r`.
    pub(super) fn append_from(&mut self, other: &Entries, r: Range<usize>, limits: Limits) {
        self.reserve(r.len(), other.keys.range_bytes(r.clone()), limits);
        self.keys.extend_from(&other.keys, r.clone());
        self.values.extend_from_slice(&other.values[r]);
    }

    /// Inserts `other`'s entries `r` before the first entry.
    pub(super) fn prepend_from(&mut self, other: &Entries, r: Range<usize>, limits: Limits) {
        self.reserve(r.len(), other.keys.range_bytes(r.clone()), limits);
        self.keys.prepend_from(&other.keys, r.clone());
        self.values.splice(0..0, other.values[r].iter().copied());
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.keys.shrink_to_fit();
        self.values.shrink_to_fit();
    }

    /// Panics unless the raw layout is consistent with the entry count and the tree's width.
    pub(super) fn check_layout(&self, width: Option<usize>) {
        self.keys.check_layout(self.len(), width);
    }
}

/// A tree node. Shared between tree versions behind `Arc`; `Clone` is the copy-on-write copy.
#[derive(Clone, Debug)]
pub(super) enum Node {
    Leaf(Entries),
    Internal(Internal),
}

/// Internal node: `children.len() - 1` separators; separator `i` is an entry that is greater
/// than every entry under child `i` and at most every entry under child `i + 1`.
#[derive(Clone, Debug)]
pub(super) struct Internal {
    pub(super) seps: Entries,
    pub(super) children: Vec<Arc<Node>>,
}

impl Internal {
    /// The child whose subtree holds (key, value): the number of separators at or below it.
    pub(super) fn child_for(&self, key: &[u8], value: u64, cx: Ctx) -> usize {
        self.seps.partition_point(|k, v| cx.cmp(k, v, key, value) != Ordering::Greater)
    }

    /// Inserts `child` at position `p >= 1` with its lower-bound separator (key, value).
    pub(super) fn insert_child(&mut self, p: usize, key: &[u8], value: u64, child: Arc<Node>) {
        self.seps.insert_at(p - 1, key, value, SEP_LIMITS);
        let needed = self.children.len() + 1;
        reserve_for(&mut self.children, needed, INTERNAL_CAP);
        self.children.insert(p, child);
    }

    pub(super) fn shrink_to_fit(&mut self) {
        self.seps.shrink_to_fit();
        self.children.shrink_to_fit();
    }
}

/// Whether a leaf of `count` entries and `bytes` key bytes is within the leaf limits.
pub(super) fn leaf_fits(count: usize, bytes: usize, cx: Ctx) -> bool {
    count <= LEAF_CAP && (!cx.variable() || bytes <= LEAF_MAX_KEY_BYTES)
}

/// Whether a leaf is below a quarter of capacity (by entries and, for variable width, by bytes).
pub(super) fn leaf_underfull(e: &Entries, cx: Ctx) -> bool {
    e.len() < LEAF_MIN && (!cx.variable() || e.key_bytes() < LEAF_MIN_KEY_BYTES)
}

impl Node {
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Node::Leaf(e) => e.is_empty(),
            Node::Internal(n) => n.children.is_empty(),
        }
    }

    /// Below a quarter of capacity: the parent should borrow for it or merge it.
    pub(super) fn is_underfull(&self, cx: Ctx) -> bool {
        match self {
            Node::Leaf(e) => leaf_underfull(e, cx),
            Node::Internal(n) => n.children.len() < INTERNAL_MIN,
        }
    }

    /// Whether this node and its right sibling fit in one node.
    pub(super) fn can_merge_with(&self, right: &Node, cx: Ctx) -> bool {
        match (self, right) {
            (Node::Leaf(a), Node::Leaf(b)) => leaf_fits(a.len() + b.len(), a.key_bytes() + b.key_bytes(), cx),
            (Node::Internal(a), Node::Internal(b)) => a.children.len() + b.children.len() <= INTERNAL_CAP,
            _ => false,
        }
    }

    /// The smallest entry in this subtree (None only for an empty node).
    pub(super) fn first_entry(&self) -> Option<(&[u8], u64)> {
        let mut node = self;
        loop {
            match node {
                Node::Leaf(e) => return (!e.is_empty()).then(|| e.entry(0)),
                Node::Internal(n) => node = n.children.first()?,
            }
        }
    }

    /// Heap bytes of this subtree: each node's `Arc` allocation plus its vectors' capacities.
    pub(super) fn heap_bytes(&self) -> usize {
        // `Arc` allocates the node next to its strong and weak counts.
        let own = size_of::<Node>() + 2 * size_of::<usize>();
        match self {
            Node::Leaf(e) => own + e.heap_bytes(),
            Node::Internal(n) => {
                own + n.seps.heap_bytes()
                    + n.children.capacity() * size_of::<Arc<Node>>()
                    + n.children.iter().map(|c| c.heap_bytes()).sum::<usize>()
            }
        }
    }

    /// Levels from this node down to the leaves, inclusive.
    pub(super) fn depth(&self) -> usize {
        let mut node = self;
        let mut depth = 1;
        while let Node::Internal(n) = node {
            match n.children.first() {
                Some(c) => node = c,
                None => break,
            }
            depth += 1;
        }
        depth
    }
}
