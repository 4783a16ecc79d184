//! Deterministic tests of `BTree`: errors, deep trees, deletion to empty, memory bounds,
//! snapshots and iteration edge cases.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{self, Excluded, Included, Unbounded};

use lightcone_btree_index::{BTree, BTreeError, MAX_KEY_BYTES};

/// Small deterministic PRNG (xorshift64*), so these tests need no extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Fisher-Yates shuffle.
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

fn k4(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

fn entries(t: &BTree) -> Vec<(Vec<u8>, u64)> {
    t.iter().map(|(k, v)| (k.to_vec(), v)).collect()
}

// Proves a duplicate key in a unique tree is refused with the existing value and changes nothing.
#[test]
fn duplicate_key_leaves_tree_unchanged() {
    let mut t = BTree::new(true, Some(4));
    for i in 0..1000 {
        t.insert(&k4(i), u64::from(i) * 10).unwrap();
    }
    let before = entries(&t);
    let snapshot = t.clone();
    assert_eq!(t.insert(&k4(500), 7), Err(BTreeError::DuplicateKey { existing: 5000 }));
    assert_eq!(entries(&t), before);
    assert_eq!(t.len(), 1000);
    assert_eq!(t.get(&k4(500)), Some(5000));
    // With a clone sharing every node, a refused insert must not copy any of them either.
    let shared_bytes = t.memory_bytes();
    assert_eq!(t.insert(&k4(999), 1), Err(BTreeError::DuplicateKey { existing: 9990 }));
    assert_eq!(t.memory_bytes(), shared_bytes);
    assert_eq!(entries(&snapshot), before);
    t.check_invariants();
}

// Proves a non-unique tree refuses only the exact (key, value) pair and keeps values ordered.
#[test]
fn duplicate_entry_in_non_unique_tree() {
    let mut t = BTree::new(false, None);
    t.insert(b"k", 5).unwrap();
    t.insert(b"k", 3).unwrap();
    t.insert(b"k", 9).unwrap();
    assert_eq!(t.insert(b"k", 3), Err(BTreeError::DuplicateEntry));
    assert_eq!(t.len(), 3);
    assert_eq!(t.get(b"k"), Some(3));
    assert_eq!(t.iter().map(|(_, v)| v).collect::<Vec<_>>(), vec![3, 5, 9]);
    assert!(!t.remove(b"k", 4));
    assert!(t.remove(b"k", 3));
    assert_eq!(t.get(b"k"), Some(5));
    t.check_invariants();
}

// Proves a unique tree's remove needs the matching value.
#[test]
fn unique_remove_needs_matching_value() {
    let mut t = BTree::new(true, None);
    t.insert(b"a", 1).unwrap();
    assert!(!t.remove(b"a", 2));
    assert_eq!(t.get(b"a"), Some(1));
    assert!(t.remove(b"a", 1));
    assert!(t.is_empty());
    assert!(!t.remove(b"a", 1));
}

// Proves a fixed-width tree refuses keys of any other length, and never panics on lookups with them.
#[test]
fn wrong_key_width_is_refused() {
    let mut t = BTree::new(true, Some(8));
    assert_eq!(t.insert(b"abc", 1), Err(BTreeError::WrongKeyWidth { expected: 8, got: 3 }));
    assert_eq!(t.insert(b"", 1), Err(BTreeError::WrongKeyWidth { expected: 8, got: 0 }));
    assert!(t.is_empty());
    t.insert(b"abcdefgh", 1).unwrap();
    assert_eq!(t.get(b"abc"), None);
    assert!(!t.remove(b"abcdefghi", 1));
    assert_eq!(t.range(Included(b"a".as_slice()), Excluded(b"abcdefghz".as_slice())).count(), 1);
    assert_eq!(
        BTree::bulk_build(true, Some(8), [(b"abcdefgh".to_vec(), 1), (b"xyz".to_vec(), 2)]).unwrap_err(),
        BTreeError::WrongKeyWidth { expected: 8, got: 3 }
    );
}

// Proves keys up to MAX_KEY_BYTES are accepted and longer ones refused, also via a huge fixed width.
#[test]
fn key_too_large_is_refused() {
    let mut t = BTree::new(false, None);
    let max = vec![7u8; MAX_KEY_BYTES];
    let over = vec![7u8; MAX_KEY_BYTES + 1];
    t.insert(&max, 1).unwrap();
    assert_eq!(
        t.insert(&over, 1),
        Err(BTreeError::KeyTooLarge { len: MAX_KEY_BYTES + 1, max: MAX_KEY_BYTES })
    );
    assert_eq!(t.len(), 1);
    let mut wide = BTree::new(true, Some(MAX_KEY_BYTES + 1));
    assert_eq!(
        wide.insert(&over, 1),
        Err(BTreeError::KeyTooLarge { len: MAX_KEY_BYTES + 1, max: MAX_KEY_BYTES })
    );
    assert!(BTree::bulk_build(true, Some(MAX_KEY_BYTES + 1), [(over.clone(), 1)]).is_err());
    // An absurd width must fail cleanly rather than size an allocation from it.
    assert_eq!(
        BTree::bulk_build(true, Some(usize::MAX), [(b"k".to_vec(), 1)]).unwrap_err(),
        BTreeError::WrongKeyWidth { expected: usize::MAX, got: 1 }
    );
    assert!(BTree::new(true, Some(usize::MAX)).insert(b"k", 1).is_err());
    assert!(BTree::bulk_build(true, Some(MAX_KEY_BYTES + 1), Vec::<(Vec<u8>, u64)>::new())
        .unwrap()
        .is_empty());
}

// Proves bulk_build reports the position of the first out-of-order or repeated entry.
#[test]
fn bulk_build_not_sorted_reports_index() {
    let mut input: Vec<(Vec<u8>, u64)> = (0..1000u32).map(|i| (k4(i).to_vec(), u64::from(i))).collect();
    input.swap(700, 701);
    assert_eq!(
        BTree::bulk_build(true, Some(4), input.clone()).unwrap_err(),
        BTreeError::NotSorted { index: 701 }
    );
    // Unique: a repeated key with another value is out of order; non-unique accepts it.
    let dup = vec![(b"a".to_vec(), 1), (b"b".to_vec(), 1), (b"b".to_vec(), 2)];
    assert_eq!(BTree::bulk_build(true, None, dup.clone()).unwrap_err(), BTreeError::NotSorted { index: 2 });
    assert_eq!(BTree::bulk_build(false, None, dup).unwrap().len(), 3);
    // Non-unique: exact repeat and decreasing value are both refused.
    let rep = vec![(b"a".to_vec(), 1), (b"a".to_vec(), 1)];
    assert_eq!(BTree::bulk_build(false, None, rep).unwrap_err(), BTreeError::NotSorted { index: 1 });
    let dec = vec![(b"a".to_vec(), 2), (b"a".to_vec(), 1)];
    assert_eq!(BTree::bulk_build(false, None, dec).unwrap_err(), BTreeError::NotSorted { index: 1 });
    // The first entry past a leaf boundary is checked against the previous leaf.
    let mut at_boundary: Vec<(Vec<u8>, u64)> = (0..300u32).map(|i| (k4(i).to_vec(), 0)).collect();
    at_boundary[128].0 = k4(5).to_vec();
    assert_eq!(
        BTree::bulk_build(true, Some(4), at_boundary).unwrap_err(),
        BTreeError::NotSorted { index: 128 }
    );
}

// Proves bulk-built trees of every size near the level boundaries are valid and complete.
#[test]
fn bulk_build_sizes() {
    for n in [0usize, 1, 2, 127, 128, 129, 130, 160, 161, 8191, 8192, 8193, 8192 + 128 * 15, 100_000] {
        for unique in [true, false] {
            let t = BTree::bulk_build(unique, Some(4), (0..n as u32).map(|i| (k4(i), u64::from(i)))).unwrap();
            t.check_invariants();
            assert_eq!(t.len(), n);
            assert!(t
                .iter()
                .map(|(k, v)| (u32::from_be_bytes(k.try_into().unwrap()), v))
                .eq((0..n as u32).map(|i| (i, u64::from(i)))));
        }
    }
}

// Proves a 100k-entry tree built by random inserts is valid, deep, and answers every lookup.
#[test]
fn deep_tree_100k() {
    let mut rng = Rng(42);
    let mut keys: Vec<u32> = (0..100_000).collect();
    rng.shuffle(&mut keys);
    let mut t = BTree::new(true, Some(4));
    for (n, &k) in keys.iter().enumerate() {
        t.insert(&k4(k), u64::from(k) + 1).unwrap();
        if n % 20_000 == 0 {
            t.check_invariants();
        }
    }
    t.check_invariants();
    assert!(t.depth() >= 3, "{t:?}");
    assert_eq!(t.len(), 100_000);
    for k in 0..100_000u32 {
        assert_eq!(t.get(&k4(k)), Some(u64::from(k) + 1));
    }
    assert_eq!(t.get(&k4(100_000)), None);
    let lo = k4(1234);
    let hi = k4(5678);
    assert_eq!(t.range(Excluded(&lo[..]), Included(&hi[..])).count(), 5678 - 1234);
}

// Proves deleting every entry (random and in order, from random-built and bulk-built trees)
// keeps the tree valid at each step and ends with an empty, rootless tree.
#[test]
fn delete_everything_down_to_empty() {
    let mut rng = Rng(7);
    let n = 30_000u32;
    for order in 0..3 {
        let mut t = if order == 2 {
            BTree::bulk_build(false, Some(4), (0..n).map(|i| (k4(i / 3), u64::from(i)))).unwrap()
        } else {
            let mut t = BTree::new(false, Some(4));
            let mut ins: Vec<u32> = (0..n).collect();
            rng.shuffle(&mut ins);
            for i in ins {
                t.insert(&k4(i / 3), u64::from(i)).unwrap();
            }
            t
        };
        let mut del: Vec<u32> = (0..n).collect();
        match order {
            0 => rng.shuffle(&mut del),
            1 => del.reverse(),
            _ => {}
        }
        for (step, &i) in del.iter().enumerate() {
            assert!(t.remove(&k4(i / 3), u64::from(i)), "entry {i} missing");
            assert!(!t.remove(&k4(i / 3), u64::from(i)));
            if step % 997 == 0 || t.len() < 300 {
                t.check_invariants();
            }
        }
        assert!(t.is_empty());
        assert_eq!(t.depth(), 0);
        assert_eq!(t.memory_bytes(), 0);
        assert_eq!(t.iter().next(), None);
        t.check_invariants();
    }
}

// Proves the append-pattern split packs sequential fixed-width loads to at most 14 bytes/entry.
#[test]
fn sequential_insert_memory_bound() {
    let mut t = BTree::new(true, Some(4));
    let n = 1_000_000u32;
    for i in 0..n {
        t.insert(&k4(i), u64::from(i)).unwrap();
    }
    t.check_invariants();
    let per_entry = t.memory_bytes() as f64 / t.len() as f64;
    eprintln!(
        "sequential: {} bytes for {} entries = {per_entry:.2} bytes/entry ({t:?})",
        t.memory_bytes(),
        t.len()
    );
    assert!(per_entry <= 14.0, "{per_entry} bytes/entry");
}

// Proves random-order inserts stay within ~24 bytes/entry (leaves about 70% full).
#[test]
fn random_insert_memory_bound() {
    let mut rng = Rng(99);
    let mut keys: Vec<u32> = (0..1_000_000).collect();
    rng.shuffle(&mut keys);
    let mut t = BTree::new(true, Some(4));
    for &k in &keys {
        t.insert(&k4(k), u64::from(k)).unwrap();
    }
    t.check_invariants();
    let per_entry = t.memory_bytes() as f64 / t.len() as f64;
    eprintln!(
        "random: {} bytes for {} entries = {per_entry:.2} bytes/entry ({t:?})",
        t.memory_bytes(),
        t.len()
    );
    assert!(per_entry <= 24.0, "{per_entry} bytes/entry");
    let bulk = BTree::bulk_build(true, Some(4), t.iter()).unwrap();
    eprintln!("bulk: {:.2} bytes/entry", bulk.memory_bytes() as f64 / bulk.len() as f64);
    assert!(bulk.memory_bytes() as f64 / bulk.len() as f64 <= 14.0);
}

// Proves reverse iteration over a 100k tree is exactly the forward order reversed, and that
// meeting in the middle yields every entry once.
#[test]
fn reverse_iteration_100k() {
    let mut rng = Rng(5);
    let mut t = BTree::new(false, None);
    for i in 0..100_000u64 {
        let key = format!("{:x}", rng.below(20_000)).into_bytes();
        t.insert(&key, i).unwrap();
    }
    t.check_invariants();
    let forward: Vec<(&[u8], u64)> = t.iter().collect();
    let mut backward: Vec<(&[u8], u64)> = t.iter().rev().collect();
    backward.reverse();
    assert_eq!(forward.len(), 100_000);
    assert_eq!(forward, backward);
    assert!(forward.windows(2).all(|w| w[0] < w[1]));
    let mut it = t.iter();
    let mut front = Vec::new();
    let mut back = Vec::new();
    loop {
        match (it.next(), it.next_back()) {
            (Some(a), Some(b)) => {
                front.push(a);
                back.push(b);
            }
            (Some(a), None) => front.push(a),
            (None, _) => break,
        }
    }
    back.reverse();
    front.extend(back);
    assert_eq!(front, forward);
}

// Proves a clone is a frozen snapshot: later inserts and removes in either copy do not leak into the other.
#[test]
fn clones_are_isolated_snapshots() {
    let mut t = BTree::new(true, Some(4));
    let mut model = BTreeMap::new();
    let mut snaps = Vec::new();
    let mut rng = Rng(11);
    for round in 0..20 {
        for _ in 0..2_000 {
            let k = rng.below(20_000) as u32;
            if rng.below(3) == 0 {
                let v = model.get(&k).copied().unwrap_or(0);
                assert_eq!(t.remove(&k4(k), v), model.remove(&k).is_some());
            } else {
                let v = rng.next();
                assert_eq!(t.insert(&k4(k), v).is_ok(), !model.contains_key(&k));
                model.entry(k).or_insert(v);
            }
        }
        snaps.push((t.clone(), model.clone()));
        if round == 10 {
            // Mutating a clone must not affect the original either.
            let (mut c, _) = snaps[3].clone();
            c.insert(&k4(1_000_000), 1).unwrap();
            assert!(snaps[3].0.get(&k4(1_000_000)).is_none());
        }
    }
    for (snap, m) in &snaps {
        snap.check_invariants();
        let want: Vec<(Vec<u8>, u64)> = m.iter().map(|(k, v)| (k4(*k).to_vec(), *v)).collect();
        assert_eq!(entries(snap), want);
    }
}

// Proves an empty tree answers everything without a root and that Debug reports len, unique, depth.
#[test]
fn empty_tree_and_debug() {
    let t = BTree::new(false, Some(2));
    assert!(t.is_empty() && !t.is_unique() && t.key_width() == Some(2));
    assert_eq!(t.get(b"ab"), None);
    assert_eq!(t.iter().next_back(), None);
    assert_eq!(t.memory_bytes(), 0);
    t.check_invariants();
    assert_eq!(format!("{t:?}"), "BTree { len: 0, unique: false, depth: 0 }");
    let mut u = BTree::new(true, Some(2));
    u.insert(b"ab", 1).unwrap();
    assert_eq!(format!("{u:?}"), "BTree { len: 1, unique: true, depth: 1 }");
}

// Proves range bounds compare keys only and that empty or inverted ranges yield nothing.
#[test]
fn range_bounds_edge_cases() {
    let mut t = BTree::new(false, None);
    for (k, v) in [(&b""[..], 1), (b"a", 1), (b"a", 2), (b"ab", 0), (b"b", u64::MAX)] {
        t.insert(k, v).unwrap();
    }
    let r = |lo: Bound<&[u8]>, hi: Bound<&[u8]>| {
        t.range(lo, hi).map(|(k, v)| (k.to_vec(), v)).collect::<Vec<_>>()
    };
    assert_eq!(r(Included(b"a"), Included(b"a")), vec![(b"a".to_vec(), 1), (b"a".to_vec(), 2)]);
    assert_eq!(r(Excluded(b"a"), Unbounded), vec![(b"ab".to_vec(), 0), (b"b".to_vec(), u64::MAX)]);
    assert_eq!(r(Unbounded, Excluded(b"a")), vec![(b"".to_vec(), 1)]);
    assert!(r(Excluded(b"a"), Excluded(b"a")).is_empty());
    assert!(r(Included(b"b"), Included(b"a")).is_empty());
    assert!(r(Excluded(b"ab"), Excluded(b"b")).is_empty());
    assert!(r(Included(b"c"), Unbounded).is_empty());
    assert_eq!(r(Included(b""), Included(b"")), vec![(b"".to_vec(), 1)]);
    assert_eq!(t.get(b""), Some(1));
    assert_eq!(t.get(b"b"), Some(u64::MAX));
    assert_eq!(t.get(b"aa"), None);
}

// Proves the smallest value under a key is found even when the key's entries straddle leaves.
#[test]
fn non_unique_get_across_leaves() {
    let mut t = BTree::new(false, Some(1));
    for v in 0..1000u64 {
        t.insert(b"m", v * 2 + 1).unwrap();
    }
    for v in 0..200u64 {
        t.insert(b"a", v).unwrap();
        t.insert(b"z", v).unwrap();
    }
    t.check_invariants();
    assert!(t.depth() >= 2);
    assert_eq!(t.get(b"m"), Some(1));
    for v in 0..400u64 {
        t.remove(b"m", v * 2 + 1);
        assert_eq!(t.get(b"m"), Some(v * 2 + 3));
    }
    assert_eq!(t.range(Included(b"m"), Included(b"m")).count(), 600);
    t.check_invariants();
}

// Proves a zero-width fixed tree (every key empty) works: one entry if unique, many values if not.
#[test]
fn zero_width_keys() {
    let mut u = BTree::new(true, Some(0));
    u.insert(b"", 5).unwrap();
    assert_eq!(u.insert(b"", 6), Err(BTreeError::DuplicateKey { existing: 5 }));
    let mut n = BTree::new(false, Some(0));
    for v in (0..1000u64).rev() {
        n.insert(b"", v).unwrap();
    }
    n.check_invariants();
    assert_eq!(n.get(b""), Some(0));
    assert!(n.iter().map(|(_, v)| v).eq(0..1000));
    for v in 0..1000u64 {
        assert!(n.remove(b"", v));
    }
    assert!(n.is_empty());
}

// Proves variable-width leaves split by key bytes: long keys give valid trees whose leaves stay small.
#[test]
fn long_variable_keys() {
    let mut rng = Rng(3);
    let mut t = BTree::new(true, None);
    let mut model = BTreeSet::new();
    for i in 0..3_000u32 {
        let len = match rng.below(4) {
            0 => rng.below(8) as usize,
            1 => MAX_KEY_BYTES,
            _ => 500 + rng.below(3_600) as usize,
        };
        let mut key = vec![(rng.below(4)) as u8; len];
        if len >= 4 {
            key[len - 4..].copy_from_slice(&i.to_be_bytes());
        }
        if t.insert(&key, u64::from(i)).is_ok() {
            model.insert((key, u64::from(i)));
        }
        if i % 500 == 0 {
            t.check_invariants();
        }
    }
    t.check_invariants();
    assert!(t.iter().map(|(k, v)| (k.to_vec(), v)).eq(model.iter().cloned()));
    let mut all: Vec<_> = model.iter().cloned().collect();
    rng.shuffle(&mut all);
    for (n, (k, v)) in all.iter().enumerate() {
        assert!(t.remove(k, *v));
        if n % 250 == 0 {
            t.check_invariants();
        }
    }
    assert!(t.is_empty());
    let bulk = BTree::bulk_build(true, None, model.iter().cloned()).unwrap();
    bulk.check_invariants();
    assert_eq!(bulk.len(), model.len());
}

// Proves the right edge left by append-splits (an internal node with one child, a nearly empty
// last leaf) rebalances and collapses correctly as its entries are deleted and re-added.
#[test]
fn right_edge_after_append_splits() {
    // `extra` entries past 64 full leaves: the right edge is root -> lone internal -> small leaf.
    for extra in [1u32, 2, 20, 40] {
        let n = 64 * 128 + extra;
        let mut t = BTree::new(true, Some(4));
        for i in 0..n {
            t.insert(&k4(i), u64::from(i)).unwrap();
        }
        t.check_invariants();
        assert_eq!(t.depth(), 3);
        for i in (n - 600..n).rev() {
            assert!(t.remove(&k4(i), u64::from(i)));
            t.check_invariants();
            assert_eq!(t.iter().next_back().map(|(k, _)| k.to_vec()), Some(k4(i - 1).to_vec()));
        }
        for i in n - 600..n + 300 {
            t.insert(&k4(i), u64::from(i)).unwrap();
            t.check_invariants();
        }
        assert_eq!(t.len(), n as usize + 300);
        assert!(t.iter().map(|(_, v)| v).eq(0..u64::from(n) + 300));
    }
}
