//! Lookups, insert (with splits) and remove (with borrow / merge), all copy-on-write: a node is
//! reached for writing through `Arc::make_mut`, which copies it only while a clone shares it.

use std::cmp::Ordering;
use std::sync::Arc;

use super::node::{
    leaf_fits, reserve_for, split_vec_off, Ctx, Entries, Internal, Node, INTERNAL_CAP, LEAF_CAP, LEAF_LIMITS,
    LEAF_MAX_KEY_BYTES, SEP_LIMITS,
};
use super::BTreeError;

/// A node split off to the right of a node that overflowed, with the separator that bounds it
/// from below; the parent inserts both.
pub(super) struct Split {
    key: Vec<u8>,
    value: u64,
    right: Node,
}

impl Split {
    /// The new root over the old root `left` and this split's right half.
    pub(super) fn into_root(self, left: Arc<Node>, cx: Ctx) -> Node {
        let mut seps = Entries::new(cx.width);
        seps.push(&self.key, self.value, SEP_LIMITS);
        let mut children = Vec::new();
        reserve_for(&mut children, 2, INTERNAL_CAP);
        children.push(left);
        children.push(Arc::new(self.right));
        Node::Internal(Internal { seps, children })
    }
}

/// The entry exactly matching (key, value) in this subtree; in a unique tree, the entry with
/// `key` whatever its value.
pub(super) fn find<'a>(mut node: &'a Node, key: &[u8], value: u64, cx: Ctx) -> Option<(&'a [u8], u64)> {
    loop {
        match node {
            Node::Internal(n) => node = &n.children[n.child_for(key, value, cx)],
            Node::Leaf(e) => {
                let pos = e.partition_point(|k, v| cx.cmp(k, v, key, value) == Ordering::Less);
                return (pos < e.len() && cx.cmp(e.key(pos), e.value(pos), key, value) == Ordering::Equal)
                    .then(|| e.entry(pos));
            }
        }
    }
}

/// The first entry in this subtree whose key does not satisfy `before` (which must hold for a
/// prefix of the entries in order).
pub(super) fn first_not_before<'a>(
    node: &'a Node,
    before: &impl Fn(&[u8]) -> bool,
) -> Option<(&'a [u8], u64)> {
    match node {
        Node::Leaf(e) => {
            let pos = e.partition_point(|k, _| before(k));
            (pos < e.len()).then(|| e.entry(pos))
        }
        Node::Internal(n) => {
            let c = n.seps.partition_point(|k, _| before(k));
            // The answer is in child `c`, or else it is the first entry of child `c + 1`.
            first_not_before(&n.children[c], before)
                .or_else(|| n.children.get(c + 1).and_then(|next| next.first_entry()))
        }
    }
}

/// Whether inserting (key, value) would violate uniqueness in this subtree.
fn check_insertable(node: &Node, key: &[u8], value: u64, cx: Ctx) -> Result<(), BTreeError> {
    match find(node, key, value, cx) {
        None => Ok(()),
        Some((_, existing)) if cx.unique => Err(BTreeError::DuplicateKey { existing }),
        Some(_) => Err(BTreeError::DuplicateEntry),
    }
}

/// Inserts into the subtree at `slot`. `rightmost`: the subtree is on the tree's right edge, so
/// an insert past its last entry is an append. `checked`: a read-only duplicate check already
/// passed, so copying shared nodes cannot be wasted on a failing insert.
pub(super) fn insert(
    slot: &mut Arc<Node>,
    key: &[u8],
    value: u64,
    cx: Ctx,
    rightmost: bool,
    mut checked: bool,
) -> Result<Option<Split>, BTreeError> {
    // Plain loads, not `Arc::get_mut` (an atomic read-modify-write, and `make_mut` below does
    // another). This only decides whether to check first: while the writer holds the tree,
    // counts can only fall (readers drop clones), so a stale answer says "shared" and costs
    // one read-only check; duplicates are refused by the leaf insert either way.
    if !checked && (Arc::strong_count(slot) != 1 || Arc::weak_count(slot) != 0) {
        // Shared with a clone: rule out a duplicate before `make_mut` copies the path.
        check_insertable(slot, key, value, cx)?;
        checked = true;
    }
    match Arc::make_mut(slot) {
        Node::Leaf(e) => leaf_insert(e, key, value, cx, rightmost),
        Node::Internal(n) => {
            // Appends (ascending keys: sequences, log replay) skip the binary search.
            let c = match n.seps.last() {
                Some((k, v)) if cx.cmp(k, v, key, value) != Ordering::Greater => n.children.len() - 1,
                _ => n.child_for(key, value, cx),
            };
            let last = c + 1 == n.children.len();
            match insert(&mut n.children[c], key, value, cx, rightmost && last, checked)? {
                None => Ok(None),
                Some(split) => Ok(internal_insert(n, c + 1, split, cx, rightmost)),
            }
        }
    }
}

fn leaf_insert(
    leaf: &mut Entries,
    key: &[u8],
    value: u64,
    cx: Ctx,
    rightmost: bool,
) -> Result<Option<Split>, BTreeError> {
    let pos = match leaf.last() {
        Some((k, v)) if cx.cmp(k, v, key, value) == Ordering::Less => leaf.len(),
        _ => leaf.partition_point(|k, v| cx.cmp(k, v, key, value) == Ordering::Less),
    };
    if pos < leaf.len() && cx.cmp(leaf.key(pos), leaf.value(pos), key, value) == Ordering::Equal {
        return Err(if cx.unique {
            BTreeError::DuplicateKey { existing: leaf.value(pos) }
        } else {
            BTreeError::DuplicateEntry
        });
    }
    if leaf_fits(leaf.len() + 1, leaf.key_bytes() + key.len(), cx) {
        leaf.insert_at(pos, key, value, LEAF_LIMITS);
        return Ok(None);
    }
    if rightmost && pos == leaf.len() {
        // Append pattern: keep this leaf full and start the new right leaf with only the new
        // entry, so sequential loads leave every leaf packed.
        let mut right = Entries::new(cx.width);
        right.push(key, value, LEAF_LIMITS);
        return Ok(Some(Split { key: key.to_vec(), value, right: Node::Leaf(right) }));
    }
    // Split the virtual sequence "leaf with the new entry at `pos`" at `k`.
    let n = leaf.len() + 1;
    let k = choose_leaf_split(
        n,
        |i| match i.cmp(&pos) {
            Ordering::Less => leaf.key(i).len(),
            Ordering::Equal => key.len(),
            Ordering::Greater => leaf.key(i - 1).len(),
        },
        cx,
    );
    let right = if pos < k {
        let right = leaf.split_off(k - 1);
        leaf.insert_at(pos, key, value, LEAF_LIMITS);
        right
    } else {
        let mut right = leaf.split_off(k);
        // The left half takes no more entries now; return its slack.
        leaf.shrink_to_fit();
        right.insert_at(pos - k, key, value, LEAF_LIMITS);
        right
    };
    let (sk, sv) = right.entry(0);
    Ok(Some(Split { key: sk.to_vec(), value: sv, right: Node::Leaf(right) }))
}

/// Adds child `split.right` at position `p` of `node`, splitting `node` if it is full.
fn internal_insert(node: &mut Internal, p: usize, split: Split, cx: Ctx, rightmost: bool) -> Option<Split> {
    let Split { key, value, right } = split;
    let child = Arc::new(right);
    if node.children.len() < INTERNAL_CAP {
        node.insert_child(p, &key, value, child);
        return None;
    }
    if rightmost && p == node.children.len() {
        // Append pattern, as for leaves: this node stays full, the new one starts with one child.
        let mut children = Vec::new();
        reserve_for(&mut children, 1, INTERNAL_CAP);
        children.push(child);
        let right = Internal { seps: Entries::new(cx.width), children };
        return Some(Split { key, value, right: Node::Internal(right) });
    }
    let mid = node.children.len() / 2;
    let mut right =
        Internal { seps: node.seps.split_off(mid), children: split_vec_off(&mut node.children, mid) };
    // Separator `mid - 1` lies between the halves: it moves up to the parent.
    let (up_key, up_value) = {
        let (k, v) = node.seps.entry(mid - 1);
        (k.to_vec(), v)
    };
    node.seps.truncate(mid - 1);
    if p <= mid {
        node.insert_child(p, &key, value, child);
    } else {
        node.shrink_to_fit();
        right.insert_child(p - mid, &key, value, child);
    }
    Some(Split { key: up_key, value: up_value, right: Node::Internal(right) })
}

/// Where to cut `n` entries (key lengths given by `key_len`) into two leaves: left = `0..k`.
/// Fixed width: the middle. Variable width: of the cuts that keep both sides within the leaf
/// limits, the one that leaves the emptier side fullest (by entry count or key bytes,
/// whichever is the larger fraction of its limit).
pub(super) fn choose_leaf_split(n: usize, key_len: impl Fn(usize) -> usize, cx: Ctx) -> usize {
    let middle = n.div_ceil(2).clamp(1, n.saturating_sub(1).max(1));
    if !cx.variable() {
        return middle;
    }
    let total: usize = (0..n).map(&key_len).sum();
    // Fullness scaled so entry count and key bytes compare: count/LEAF_CAP vs bytes/MAX_BYTES.
    let fill = |count: usize, bytes: usize| (count * LEAF_MAX_KEY_BYTES).max(bytes * LEAF_CAP);
    let mut best: Option<(usize, usize)> = None;
    let mut left_bytes = 0;
    for k in 1..n {
        left_bytes += key_len(k - 1);
        let right_bytes = total - left_bytes;
        if leaf_fits(k, left_bytes, cx) && leaf_fits(n - k, right_bytes, cx) {
            let score = fill(k, left_bytes).min(fill(n - k, right_bytes));
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((k, score));
            }
        }
    }
    // Some cut always fits (every key is at most a quarter of the leaf byte limit); the middle
    // is only a fallback.
    best.map_or(middle, |(k, _)| k)
}

/// Removes (key, value) from the subtree at `slot`; false if absent. `checked`: presence was
/// already confirmed read-only, so copying shared nodes is not wasted.
pub(super) fn remove(slot: &mut Arc<Node>, key: &[u8], value: u64, cx: Ctx, mut checked: bool) -> bool {
    if !checked && Arc::get_mut(slot).is_none() {
        // Shared with a clone: do not copy the path for an entry that is not there.
        if !contains(slot, key, value, cx) {
            return false;
        }
        checked = true;
    }
    match Arc::make_mut(slot) {
        Node::Leaf(e) => {
            let pos = e.partition_point(|k, v| cx.cmp(k, v, key, value) == Ordering::Less);
            let hit = pos < e.len() && e.key(pos) == key && e.value(pos) == value;
            if hit {
                e.remove_at(pos);
            }
            hit
        }
        Node::Internal(n) => {
            let c = n.child_for(key, value, cx);
            if !remove(&mut n.children[c], key, value, cx, checked) {
                return false;
            }
            fix_child(n, c, cx);
            true
        }
    }
}

/// Whether the exact entry (key, value) is in this subtree.
fn contains(node: &Node, key: &[u8], value: u64, cx: Ctx) -> bool {
    find(node, key, value, cx).is_some_and(|(k, v)| k == key && v == value)
}

/// After a removal under child `c`: drops it if empty, else if underfull merges it with a
/// sibling or borrows entries from one.
pub(super) fn fix_child(node: &mut Internal, c: usize, cx: Ctx) {
    let child = &node.children[c];
    if !child.is_underfull(cx) {
        return;
    }
    if child.is_empty() {
        // Only a lone child on the right edge can empty out; drop it with one adjacent separator.
        node.children.remove(c);
        if !node.seps.is_empty() {
            node.seps.remove_at(c.saturating_sub(1));
        }
        return;
    }
    if node.children.len() < 2 {
        // A right-edge node with a single child: no sibling here; the parent rebalances us.
        return;
    }
    let l = c.saturating_sub(1);
    if node.children[l].can_merge_with(&node.children[l + 1], cx) {
        merge(node, l);
    } else {
        redistribute(node, l, cx);
    }
}

/// Merges child `l + 1` into child `l`, dropping the separator between them.
fn merge(node: &mut Internal, l: usize) {
    let right = Arc::unwrap_or_clone(node.children.remove(l + 1));
    let (sep_key, sep_value) = {
        let (k, v) = node.seps.entry(l);
        (k.to_vec(), v)
    };
    node.seps.remove_at(l);
    match (Arc::make_mut(&mut node.children[l]), right) {
        (Node::Leaf(a), Node::Leaf(b)) => a.append_from(&b, 0..b.len(), LEAF_LIMITS),
        (Node::Internal(a), Node::Internal(b)) => {
            // The parent separator comes down between the two halves' separators.
            a.seps.push(&sep_key, sep_value, SEP_LIMITS);
            a.seps.append_from(&b.seps, 0..b.seps.len(), SEP_LIMITS);
            let needed = a.children.len() + b.children.len();
            reserve_for(&mut a.children, needed, INTERNAL_CAP);
            a.children.extend(b.children);
        }
        _ => unreachable!("siblings are at the same depth, so both are leaves or both internal"),
    }
}

/// Evens out children `l` and `l + 1`, which together do not fit one node, and resets the
/// separator between them.
pub(super) fn redistribute(node: &mut Internal, l: usize, cx: Ctx) {
    let (head, tail) = node.children.split_at_mut(l + 1);
    match (Arc::make_mut(&mut head[l]), Arc::make_mut(&mut tail[0])) {
        (Node::Leaf(a), Node::Leaf(b)) => {
            balance_leaves(a, b, cx);
            let (k, v) = b.entry(0);
            node.seps.replace_at(l, k, v, SEP_LIMITS);
        }
        (Node::Internal(a), Node::Internal(b)) => {
            let (nl, nr) = (a.children.len(), b.children.len());
            let kl = (nl + nr).div_ceil(2);
            let parent = {
                let (k, v) = node.seps.entry(l);
                (k.to_vec(), v)
            };
            let new_sep = if kl < nl {
                // Move a's last children to the front of b; the parent separator comes down
                // between them and b's old first child, a's separator kl-1 goes up.
                b.seps.insert_at(0, &parent.0, parent.1, SEP_LIMITS);
                b.seps.prepend_from(&a.seps, kl..nl - 1, SEP_LIMITS);
                let up = (a.seps.key(kl - 1).to_vec(), a.seps.value(kl - 1));
                a.seps.truncate(kl - 1);
                reserve_for(&mut b.children, nl + nr - kl, INTERNAL_CAP);
                b.children.splice(0..0, a.children.drain(kl..));
                up
            } else if kl > nl {
                // Move b's first children to the end of a, symmetrically.
                let m = kl - nl;
                a.seps.push(&parent.0, parent.1, SEP_LIMITS);
                a.seps.append_from(&b.seps, 0..m - 1, SEP_LIMITS);
                let up = (b.seps.key(m - 1).to_vec(), b.seps.value(m - 1));
                b.seps.drain_front(m);
                reserve_for(&mut a.children, kl, INTERNAL_CAP);
                a.children.extend(b.children.drain(..m));
                up
            } else {
                parent
            };
            node.seps.replace_at(l, &new_sep.0, new_sep.1, SEP_LIMITS);
        }
        _ => unreachable!("siblings are at the same depth, so both are leaves or both internal"),
    }
}

/// Moves entries between adjacent leaves `a` and `b` (which together overflow one leaf) so both
/// are within limits and as evenly filled as possible.
pub(super) fn balance_leaves(a: &mut Entries, b: &mut Entries, cx: Ctx) {
    let na = a.len();
    let k =
        choose_leaf_split(na + b.len(), |i| if i < na { a.key(i).len() } else { b.key(i - na).len() }, cx);
    if k < na {
        b.prepend_from(a, k..na, LEAF_LIMITS);
        a.truncate(k);
    } else if k > na {
        a.append_from(b, 0..k - na, LEAF_LIMITS);
        b.drain_front(k - na);
    }
}

/// Replaces a root that has become trivial: an empty leaf (tree empty) or an internal node
/// with one child (the child becomes the root), repeatedly.
pub(super) fn collapse_root(root: &mut Option<Arc<Node>>) {
    loop {
        let replacement = match root.as_deref() {
            Some(Node::Leaf(e)) if e.is_empty() => None,
            Some(Node::Internal(n)) if n.children.len() <= 1 => n.children.first().cloned(),
            _ => return,
        };
        *root = replacement;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a variable-width split always finds a cut with both halves inside the limits,
    // including mixes of maximum-size and tiny keys.
    #[test]
    fn var_split_respects_limits() {
        let cx = Ctx { unique: true, width: None };
        let cases: Vec<Vec<usize>> = vec![
            vec![4096, 4096, 1],
            vec![4000, 4096, 4000].into_iter().chain(std::iter::repeat_n(1, 126)).collect(),
            std::iter::repeat_n(10, LEAF_CAP + 1).collect(),
            vec![1, 4096, 4096, 4096],
            vec![4096, 4096, 4096],
        ];
        for lens in cases {
            let n = lens.len();
            let k = choose_leaf_split(n, |i| lens[i], cx);
            assert!((1..n).contains(&k), "{lens:?}: cut {k}");
            let left: usize = lens[..k].iter().sum();
            let right: usize = lens[k..].iter().sum();
            assert!(leaf_fits(k, left, cx) && leaf_fits(n - k, right, cx), "{lens:?}: cut {k}");
        }
    }

    // Proves the fixed-width split is the middle, so both halves hold at least half a leaf.
    #[test]
    fn fixed_split_is_middle() {
        let cx = Ctx { unique: true, width: Some(4) };
        assert_eq!(choose_leaf_split(LEAF_CAP + 1, |_| 4, cx), LEAF_CAP / 2 + 1);
    }
}
