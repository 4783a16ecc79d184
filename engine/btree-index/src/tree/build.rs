//! Bulk build from sorted input: full leaves, then internal levels bottom-up.

use std::cmp::Ordering;
use std::sync::Arc;

use super::node::{
    leaf_fits, leaf_underfull, Ctx, Entries, Internal, Node, INTERNAL_CAP, INTERNAL_MIN, LEAF_CAP,
    LEAF_LIMITS, SEP_LIMITS,
};
use super::ops::balance_leaves;
use super::BTreeError;

/// Builds the root over `entries` (sorted and validated here); returns it and the entry count.
pub(super) fn build<K: AsRef<[u8]>>(
    cx: Ctx,
    entries: impl IntoIterator<Item = (K, u64)>,
    validate: impl Fn(&[u8]) -> Result<(), BTreeError>,
) -> Result<(Option<Arc<Node>>, usize), BTreeError> {
    let mut leaves: Vec<Entries> = Vec::new();
    // Allocated only once a validated key arrives: an unusable width (above MAX_KEY_BYTES)
    // must fail on the first key, not overflow an allocation first.
    let mut cur = Entries::new(cx.width);
    let mut len = 0;
    for (index, (key, value)) in entries.into_iter().enumerate() {
        let key = key.as_ref();
        validate(key)?;
        let prev = cur.last().or_else(|| leaves.last().and_then(Entries::last));
        if let Some((pk, pv)) = prev {
            if cx.cmp(pk, pv, key, value) != Ordering::Less {
                return Err(BTreeError::NotSorted { index });
            }
        }
        if !leaf_fits(cur.len() + 1, cur.key_bytes() + key.len(), cx) {
            let mut full = std::mem::replace(&mut cur, Entries::new(cx.width));
            full.shrink_to_fit();
            leaves.push(full);
        }
        if cur.is_empty() {
            cur = Entries::with_capacity(cx.width, LEAF_CAP);
        }
        cur.push(key, value, LEAF_LIMITS);
        len += 1;
    }
    if !cur.is_empty() {
        cur.shrink_to_fit();
        leaves.push(cur);
    }
    // The last leaf may be nearly empty; even it out with its (full) neighbour.
    if let [.., a, b] = leaves.as_mut_slice() {
        if leaf_underfull(b, cx) {
            balance_leaves(a, b, cx);
            a.shrink_to_fit();
            b.shrink_to_fit();
        }
    }
    let mut level: Vec<Arc<Node>> = leaves.into_iter().map(|e| Arc::new(Node::Leaf(e))).collect();
    while level.len() > 1 {
        level = parent_level(level, cx);
    }
    Ok((level.pop(), len))
}

/// Groups one level's nodes under full internal nodes; the last two groups share their
/// children evenly when the last would otherwise be underfull.
fn parent_level(children: Vec<Arc<Node>>, cx: Ctx) -> Vec<Arc<Node>> {
    let n = children.len();
    let groups = n.div_ceil(INTERNAL_CAP);
    let mut sizes = vec![INTERNAL_CAP; groups];
    let last = n - INTERNAL_CAP * (groups - 1);
    sizes[groups - 1] = last;
    if groups >= 2 && last < INTERNAL_MIN {
        let both = INTERNAL_CAP + last;
        sizes[groups - 2] = both.div_ceil(2);
        sizes[groups - 1] = both / 2;
    }
    let mut children = children.into_iter();
    sizes
        .into_iter()
        .map(|size| {
            let kids: Vec<Arc<Node>> = children.by_ref().take(size).collect();
            let mut seps = Entries::with_capacity(cx.width, size - 1);
            for kid in &kids[1..] {
                // Every node built here holds at least one entry, so each subtree has a first entry.
                let (k, v) = kid.first_entry().expect("bulk-built nodes are non-empty");
                seps.push(k, v, SEP_LIMITS);
            }
            seps.shrink_to_fit();
            Arc::new(Node::Internal(Internal { seps, children: kids }))
        })
        .collect()
}
