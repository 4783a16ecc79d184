//! Unit tests that need the node layout: packing of bulk-built and sequentially built trees.

use super::check::check_tree;
use super::node::{Node, INTERNAL_CAP, LEAF_CAP};
use super::BTree;

/// Entry counts of the leaves, left to right.
fn leaf_sizes(t: &BTree) -> Vec<usize> {
    fn walk(node: &Node, out: &mut Vec<usize>) {
        match node {
            Node::Leaf(e) => out.push(e.len()),
            Node::Internal(n) => n.children.iter().for_each(|c| walk(c, out)),
        }
    }
    let mut out = Vec::new();
    if let Some(root) = t.root.as_deref() {
        walk(root, &mut out);
    }
    out
}

fn check_strict(t: &BTree) {
    check_tree(t.root.as_ref(), t.len, t.cx(), true);
}

// Proves bulk_build packs every leaf full except the last two, which share evenly, and that
// every node on every level (right edge included) meets the minimum fill.
#[test]
fn bulk_build_packs_and_balances_every_level() {
    for n in [1usize, 128, 129, 130, 200, 128 * 64, 128 * 64 + 1, 128 * 65 + 3, 128 * 64 * 64 + 5] {
        let t = BTree::bulk_build(true, Some(4), (0..n as u32).map(|i| (i.to_be_bytes(), 0))).unwrap();
        check_strict(&t);
        let sizes = leaf_sizes(&t);
        let full = sizes.len().saturating_sub(2);
        assert!(sizes[..full].iter().all(|&s| s == LEAF_CAP), "n={n}: {sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), n);
    }
}

// Proves bulk_build of long variable keys packs leaves by bytes and still balances the last level.
#[test]
fn bulk_build_long_keys_strict() {
    for n in [3usize, 4, 5, 40, 41] {
        let entries = (0..n as u32).map(|i| {
            let mut k = vec![b'x'; 3000];
            k.extend_from_slice(&i.to_be_bytes());
            (k, u64::from(i))
        });
        let t = BTree::bulk_build(false, None, entries).unwrap();
        check_strict(&t);
        assert_eq!(t.len(), n);
    }
}

// Proves ascending inserts leave every leaf but the last completely full (the append split).
#[test]
fn sequential_inserts_fill_leaves() {
    let mut t = BTree::new(false, Some(8));
    for i in 0..50_000u64 {
        t.insert(&i.to_be_bytes(), i).unwrap();
    }
    t.check_invariants();
    let sizes = leaf_sizes(&t);
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == LEAF_CAP), "{sizes:?}");
    let Some(Node::Internal(root)) = t.root.as_deref() else { panic!("expected an internal root") };
    let Node::Internal(first) = &*root.children[0] else { panic!("expected depth 3") };
    assert_eq!(first.children.len(), INTERNAL_CAP);
}

// Proves nodes stay small: the per-node overhead assumed by the memory bound.
#[test]
fn node_header_is_small() {
    assert!(size_of::<Node>() <= 96, "{}", size_of::<Node>());
}
