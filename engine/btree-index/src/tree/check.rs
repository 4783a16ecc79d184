//! Structural invariant checks (for tests): panics with a description on the first violation.

use std::cmp::Ordering;
use std::sync::Arc;

use super::node::{
    leaf_underfull, Ctx, Entries, Node, INTERNAL_CAP, INTERNAL_MIN, LEAF_CAP, LEAF_MAX_KEY_BYTES,
};
use super::MAX_KEY_BYTES;

type Bound<'a> = Option<(&'a [u8], u64)>;

struct Walk {
    cx: Ctx,
    /// Hold right-edge nodes to the minimum fill as well (bulk-built trees must meet it).
    strict: bool,
    leaf_depth: Option<usize>,
    count: usize,
}

/// `strict`: right-edge nodes must meet the minimum fill too (only the root is exempt).
pub(super) fn check_tree(root: Option<&Arc<Node>>, len: usize, cx: Ctx, strict: bool) {
    let Some(root) = root else {
        assert_eq!(len, 0, "tree without a root claims {len} entries");
        return;
    };
    let mut walk = Walk { cx, strict, leaf_depth: None, count: 0 };
    walk.node(root, None, None, 0, true, true);
    assert_eq!(walk.count, len, "tree holds {} entries but len() is {len}", walk.count);
}

impl Walk {
    /// `lower` <= every entry < `upper`. `rightmost`: on the tree's right edge, where
    /// append-splits legitimately leave nodes below the minimum fill (but never empty).
    fn node(
        &mut self,
        node: &Node,
        lower: Bound<'_>,
        upper: Bound<'_>,
        depth: usize,
        root: bool,
        rightmost: bool,
    ) {
        let exempt = root || (rightmost && !self.strict);
        match node {
            Node::Leaf(e) => {
                self.entries(e, lower, upper, "leaf", false);
                assert!(!e.is_empty(), "empty leaf at depth {depth}");
                assert!(e.len() <= LEAF_CAP, "leaf of {} entries exceeds {LEAF_CAP}", e.len());
                if self.cx.variable() {
                    assert!(e.key_bytes() <= LEAF_MAX_KEY_BYTES, "leaf holds {} key bytes", e.key_bytes());
                }
                assert!(
                    exempt || !leaf_underfull(e, self.cx),
                    "underfull leaf ({} entries, {} key bytes) at depth {depth}",
                    e.len(),
                    e.key_bytes()
                );
                match self.leaf_depth {
                    None => self.leaf_depth = Some(depth),
                    Some(d) => assert_eq!(d, depth, "leaves at depths {d} and {depth}"),
                }
                self.count += e.len();
            }
            Node::Internal(n) => {
                let kids = n.children.len();
                assert!(kids >= 1, "internal node without children at depth {depth}");
                assert!(!root || kids >= 2, "root with a single child");
                assert!(kids <= INTERNAL_CAP, "internal node with {kids} children");
                assert!(
                    exempt || kids >= INTERNAL_MIN,
                    "underfull internal node ({kids} children) at depth {depth}"
                );
                assert_eq!(n.seps.len() + 1, kids, "separator count does not match child count");
                self.entries(&n.seps, lower, upper, "separator", true);
                for (i, child) in n.children.iter().enumerate() {
                    let lo = if i == 0 { lower } else { Some(n.seps.entry(i - 1)) };
                    let hi = if i + 1 == kids { upper } else { Some(n.seps.entry(i)) };
                    self.node(child, lo, hi, depth + 1, false, rightmost && i + 1 == kids);
                }
            }
        }
    }

    /// Layout, key sizes, strict order, and bounds. Separators must exceed `lower` strictly
    /// (the non-empty child left of each separator lies between them); entries may equal it.
    fn entries(&self, e: &Entries, lower: Bound<'_>, upper: Bound<'_>, what: &str, strict_lower: bool) {
        let cx = self.cx;
        e.check_layout(cx.width);
        for i in 0..e.len() {
            let (k, v) = e.entry(i);
            assert!(k.len() <= MAX_KEY_BYTES, "{what} key of {} bytes", k.len());
            if let Some(w) = cx.width {
                assert_eq!(k.len(), w, "{what} key of the wrong width");
            }
            if i > 0 {
                let (pk, pv) = e.entry(i - 1);
                assert_eq!(
                    cx.cmp(pk, pv, k, v),
                    Ordering::Less,
                    "{what}s out of order at {i}: {pk:?}/{pv} then {k:?}/{v}"
                );
            }
        }
        if let (Some((lk, lv)), Some((k, v))) = (lower, e.first()) {
            let o = cx.cmp(lk, lv, k, v);
            assert!(
                o.is_lt() || (!strict_lower && o.is_eq()),
                "{what} {k:?}/{v} below its lower bound {lk:?}/{lv}"
            );
        }
        if let (Some((uk, uv)), Some((k, v))) = (upper, e.last()) {
            assert!(cx.cmp(k, v, uk, uv).is_lt(), "{what} {k:?}/{v} not below its upper bound {uk:?}/{uv}");
        }
    }
}
