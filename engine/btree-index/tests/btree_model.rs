//! Property tests: random operation sequences run against `BTree` and a reference model
//! (`BTreeMap` for unique trees, `BTreeSet<(key, value)>` for non-unique ones), including
//! clones taken along the way, which must keep matching the model as it was at that time.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use lightcone_btree_index::{BTree, BTreeError};
use proptest::prelude::*;
use proptest::test_runner::Config;

type Entry = (Vec<u8>, u64);

/// The reference: every entry of the tree, in (key, value) order.
#[derive(Clone, Debug)]
enum Model {
    Unique(BTreeMap<Vec<u8>, u64>),
    Multi(BTreeSet<Entry>),
}

impl Model {
    fn new(unique: bool) -> Model {
        if unique {
            Model::Unique(BTreeMap::new())
        } else {
            Model::Multi(BTreeSet::new())
        }
    }

    fn insert(&mut self, key: &[u8], value: u64) -> Result<(), BTreeError> {
        match self {
            Model::Unique(m) => match m.get(key) {
                Some(&existing) => Err(BTreeError::DuplicateKey { existing }),
                None => {
                    m.insert(key.to_vec(), value);
                    Ok(())
                }
            },
            Model::Multi(s) => {
                if s.insert((key.to_vec(), value)) {
                    Ok(())
                } else {
                    Err(BTreeError::DuplicateEntry)
                }
            }
        }
    }

    fn remove(&mut self, key: &[u8], value: u64) -> bool {
        match self {
            Model::Unique(m) => {
                if m.get(key) == Some(&value) {
                    m.remove(key);
                    true
                } else {
                    false
                }
            }
            Model::Multi(s) => s.remove(&(key.to_vec(), value)),
        }
    }

    fn get(&self, key: &[u8]) -> Option<u64> {
        match self {
            Model::Unique(m) => m.get(key).copied(),
            Model::Multi(s) => s.range((key.to_vec(), 0)..).next().filter(|(k, _)| k == key).map(|(_, v)| *v),
        }
    }

    fn entries(&self) -> Vec<Entry> {
        match self {
            Model::Unique(m) => m.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            Model::Multi(s) => s.iter().cloned().collect(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Model::Unique(m) => m.len(),
            Model::Multi(s) => s.len(),
        }
    }

    /// Entry `i` (mod len), to pick existing entries.
    fn nth(&self, i: usize) -> Option<Entry> {
        let n = self.len();
        if n == 0 {
            return None;
        }
        match self {
            Model::Unique(m) => m.iter().nth(i % n).map(|(k, v)| (k.clone(), *v)),
            Model::Multi(s) => s.iter().nth(i % n).cloned(),
        }
    }

    /// Filtered by hand: `BTreeMap::range` panics on inverted bounds, which we want to test.
    fn range(&self, lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> Vec<Entry> {
        let within = |k: &Vec<u8>| {
            let above = match lo {
                Bound::Included(b) => k >= b,
                Bound::Excluded(b) => k > b,
                Bound::Unbounded => true,
            };
            let below = match hi {
                Bound::Included(b) => k <= b,
                Bound::Excluded(b) => k < b,
                Bound::Unbounded => true,
            };
            above && below
        };
        match self {
            Model::Unique(m) => m.iter().filter(|(k, _)| within(k)).map(|(k, v)| (k.clone(), *v)).collect(),
            Model::Multi(s) => s.iter().filter(|(k, _)| within(k)).cloned().collect(),
        }
    }
}

/// How a range is consumed.
#[derive(Clone, Debug)]
enum Walk {
    Forward,
    Backward,
    /// true = `next`, false = `next_back`, cycled until both ends are exhausted.
    Mixed(Vec<bool>),
}

#[derive(Clone, Debug)]
enum Op {
    Insert(Vec<u8>, u64),
    /// A run of `count` keys derived from a base key, inserted in ascending order (appends).
    InsertRun(Vec<u8>, u16, u64),
    Remove(Vec<u8>, u64),
    RemoveExisting(usize),
    /// Removes every entry with key in [lo, hi] (drives merges in deep trees).
    RemoveSpan(Vec<u8>, Vec<u8>),
    Get(Vec<u8>),
    GetExisting(usize),
    Range(Bound<Vec<u8>>, Bound<Vec<u8>>, Walk),
    Clone,
    Check,
}

/// Key shapes under test.
#[derive(Clone, Copy, Debug)]
enum Keys {
    /// Fixed width 4: big-endian numbers below 3000.
    W4,
    /// Fixed width 4: big-endian numbers below 16000, for deep trees.
    W4Wide,
    /// Fixed width 8: few high bytes, numbers in the low bytes.
    W8,
    /// Variable 0..40 bytes from a 3-letter alphabet: many prefixes and empty keys.
    Var,
    /// Variable, some near MAX_KEY_BYTES: exercises byte-limited leaves.
    VarLong,
}

impl Keys {
    fn width(self) -> Option<usize> {
        match self {
            Keys::W4 | Keys::W4Wide => Some(4),
            Keys::W8 => Some(8),
            Keys::Var | Keys::VarLong => None,
        }
    }

    fn key(self) -> BoxedStrategy<Vec<u8>> {
        match self {
            Keys::W4 => (0u32..3000).prop_map(|n| n.to_be_bytes().to_vec()).boxed(),
            Keys::W4Wide => (0u32..16_000).prop_map(|n| n.to_be_bytes().to_vec()).boxed(),
            Keys::W8 => (0u8..3, 0u32..2000)
                .prop_map(|(hi, lo)| {
                    let mut k = vec![hi, 0, 0, 0];
                    k.extend_from_slice(&lo.to_be_bytes());
                    k
                })
                .boxed(),
            Keys::Var => {
                prop_oneof![prop::collection::vec(0u8..3, 0..4), prop::collection::vec(0u8..3, 0..40),]
                    .boxed()
            }
            Keys::VarLong => (0u8..3, prop_oneof![0usize..6, 1000usize..=4096], 0u8..=255)
                .prop_map(|(fill, len, last)| {
                    let mut k = vec![fill; len];
                    if let Some(b) = k.last_mut() {
                        *b = last;
                    }
                    k
                })
                .boxed(),
        }
    }

    /// Key `i` of a run starting at `base`, ascending in `i`.
    fn run_key(self, base: &[u8], i: u16) -> Vec<u8> {
        match self.width() {
            Some(w) => {
                // Add `i` to the number in the last four bytes (saturating: repeats are fine).
                let mut k = base.to_vec();
                let mut tail = [0u8; 4];
                tail.copy_from_slice(&k[w - 4..]);
                let n = u32::from_be_bytes(tail).saturating_add(u32::from(i));
                k[w - 4..].copy_from_slice(&n.to_be_bytes());
                k
            }
            None => {
                let mut k = base.to_vec();
                k.truncate(4000);
                k.push(2);
                k.extend_from_slice(&i.to_be_bytes());
                k
            }
        }
    }
}

fn value(unique: bool) -> BoxedStrategy<u64> {
    if unique {
        any::<u64>().boxed()
    } else {
        // Few values, so one key holds several entries; include the extremes.
        prop_oneof![8 => 0u64..4, 1 => Just(u64::MAX), 1 => Just(0)].boxed()
    }
}

fn bound(keys: Keys) -> BoxedStrategy<Bound<Vec<u8>>> {
    prop_oneof![
        2 => keys.key().prop_map(Bound::Included),
        2 => keys.key().prop_map(Bound::Excluded),
        1 => Just(Bound::Unbounded),
    ]
    .boxed()
}

fn op(keys: Keys, unique: bool) -> impl Strategy<Value = Op> {
    let walk = prop_oneof![
        Just(Walk::Forward),
        Just(Walk::Backward),
        prop::collection::vec(any::<bool>(), 1..8).prop_map(Walk::Mixed),
    ];
    prop_oneof![
        30 => (keys.key(), value(unique)).prop_map(|(k, v)| Op::Insert(k, v)),
        4 => (keys.key(), 1u16..300, value(unique)).prop_map(|(k, n, v)| Op::InsertRun(k, n, v)),
        8 => (keys.key(), value(unique)).prop_map(|(k, v)| Op::Remove(k, v)),
        15 => any::<usize>().prop_map(Op::RemoveExisting),
        2 => (keys.key(), keys.key()).prop_map(|(a, b)| if a <= b { Op::RemoveSpan(a, b) } else { Op::RemoveSpan(b, a) }),
        8 => keys.key().prop_map(Op::Get),
        5 => any::<usize>().prop_map(Op::GetExisting),
        10 => (bound(keys), bound(keys), walk).prop_map(|(lo, hi, w)| Op::Range(lo, hi, w)),
        3 => Just(Op::Clone),
        4 => Just(Op::Check),
    ]
}

/// Panics unless `tree` holds exactly the model's entries and is structurally valid.
fn assert_same(tree: &BTree, model: &Model) {
    tree.check_invariants();
    assert_eq!(tree.len(), model.len());
    let got: Vec<Entry> = tree.iter().map(|(k, v)| (k.to_vec(), v)).collect();
    assert_eq!(got, model.entries());
}

/// Consumes `tree.range(lo, hi)` as `walk` says and compares with the model.
fn check_range(tree: &BTree, model: &Model, lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>, walk: &Walk) {
    let want = model.range(lo, hi);
    let mut it = tree.range(lo.as_ref().map(Vec::as_slice), hi.as_ref().map(Vec::as_slice));
    let owned = |(k, v): (&[u8], u64)| (k.to_vec(), v);
    let got: Vec<Entry> = match walk {
        Walk::Forward => it.by_ref().map(owned).collect(),
        Walk::Backward => {
            let mut v: Vec<Entry> = it.by_ref().rev().map(owned).collect();
            v.reverse();
            v
        }
        Walk::Mixed(pattern) => {
            let (mut front, mut back) = (Vec::new(), Vec::new());
            for &fwd in pattern.iter().cycle() {
                let item = if fwd { it.next() } else { it.next_back() };
                match item {
                    Some(e) if fwd => front.push(owned(e)),
                    Some(e) => back.push(owned(e)),
                    None => break,
                }
            }
            back.reverse();
            front.extend(back);
            front
        }
    };
    assert_eq!(got, want, "range {lo:?}..{hi:?} walked {walk:?}");
    assert_eq!(it.next(), None, "range resumed after exhaustion");
    assert_eq!(it.next_back(), None, "range resumed after exhaustion");
}

/// Runs `ops` on `tree` (which must equal `model`) and checks every result against the model.
fn run(mut tree: BTree, mut model: Model, keys: Keys, ops: &[Op]) {
    let mut clones: Vec<(BTree, Model)> = Vec::new();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Insert(k, v) => assert_eq!(tree.insert(k, *v), model.insert(k, *v), "step {step}: insert"),
            Op::InsertRun(base, n, v) => {
                for i in 0..*n {
                    let k = keys.run_key(base, i);
                    assert_eq!(tree.insert(&k, *v), model.insert(&k, *v), "step {step}: run insert {i}");
                }
            }
            Op::Remove(k, v) => assert_eq!(tree.remove(k, *v), model.remove(k, *v), "step {step}: remove"),
            Op::RemoveExisting(i) => {
                if let Some((k, v)) = model.nth(*i) {
                    assert!(tree.remove(&k, v), "step {step}: existing entry not removed");
                    assert!(model.remove(&k, v));
                    assert!(!tree.remove(&k, v), "step {step}: removed twice");
                }
            }
            Op::RemoveSpan(lo, hi) => {
                for (k, v) in model.range(&Bound::Included(lo.clone()), &Bound::Included(hi.clone())) {
                    assert!(tree.remove(&k, v), "step {step}: span entry not removed");
                    assert!(model.remove(&k, v));
                }
            }
            Op::Get(k) => assert_eq!(tree.get(k), model.get(k), "step {step}: get"),
            Op::GetExisting(i) => {
                if let Some((k, _)) = model.nth(*i) {
                    assert_eq!(tree.get(&k), model.get(&k), "step {step}: get existing");
                }
            }
            Op::Range(lo, hi, walk) => check_range(&tree, &model, lo, hi, walk),
            Op::Clone => {
                if clones.len() == 4 {
                    clones.remove(0);
                }
                clones.push((tree.clone(), model.clone()));
            }
            Op::Check => {
                assert_same(&tree, &model);
                for (c, m) in &clones {
                    assert_same(c, m);
                }
            }
        }
        assert_eq!(tree.len(), model.len(), "step {step}: len");
    }
    assert_same(&tree, &model);
    for (c, m) in &clones {
        assert_same(c, m);
    }
}

fn ops(keys: Keys, unique: bool) -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(keys, unique), 1..300)
}

/// A sorted random entry set for bulk building, in model form.
fn model_strategy(keys: Keys, unique: bool, max: usize) -> impl Strategy<Value = Model> {
    prop::collection::vec((keys.key(), value(unique)), 0..max).prop_map(move |entries| {
        let mut m = Model::new(unique);
        for (k, v) in entries {
            let _ = m.insert(&k, v);
        }
        m
    })
}

fn bulk_then_run(keys: Keys, unique: bool, model: Model, ops: &[Op]) {
    let tree = BTree::bulk_build(unique, keys.width(), model.entries()).unwrap();
    assert_same(&tree, &model);
    run(tree, model, keys, ops);
}

proptest! {
    #![proptest_config(Config::default())]

    // Proves unique fixed-width(4) trees match a BTreeMap under random operations and clones.
    #[test]
    fn model_unique_w4(ops in ops(Keys::W4, true)) {
        run(BTree::new(true, Some(4)), Model::new(true), Keys::W4, &ops);
    }

    // Proves non-unique fixed-width(4) trees match a BTreeSet of (key, value) under random operations.
    #[test]
    fn model_multi_w4(ops in ops(Keys::W4, false)) {
        run(BTree::new(false, Some(4)), Model::new(false), Keys::W4, &ops);
    }

    // Proves unique fixed-width(8) trees match the model.
    #[test]
    fn model_unique_w8(ops in ops(Keys::W8, true)) {
        run(BTree::new(true, Some(8)), Model::new(true), Keys::W8, &ops);
    }

    // Proves non-unique fixed-width(8) trees match the model.
    #[test]
    fn model_multi_w8(ops in ops(Keys::W8, false)) {
        run(BTree::new(false, Some(8)), Model::new(false), Keys::W8, &ops);
    }

    // Proves unique variable-width trees (empty keys, prefixes) match the model.
    #[test]
    fn model_unique_var(ops in ops(Keys::Var, true)) {
        run(BTree::new(true, None), Model::new(true), Keys::Var, &ops);
    }

    // Proves non-unique variable-width trees match the model.
    #[test]
    fn model_multi_var(ops in ops(Keys::Var, false)) {
        run(BTree::new(false, None), Model::new(false), Keys::Var, &ops);
    }

    // Proves variable-width trees with keys up to MAX_KEY_BYTES (byte-limited leaves) match the model.
    #[test]
    fn model_var_long_keys(unique in any::<bool>(), ops in prop::collection::vec(op(Keys::VarLong, false), 1..120)) {
        run(BTree::new(unique, None), Model::new(unique), Keys::VarLong, &ops);
    }

    // Proves bulk_build of a sorted random set equals the model, is valid, and then behaves under random ops.
    #[test]
    fn bulk_build_matches_model(
        (keys, unique, model, ops) in prop_oneof![Just(Keys::W4), Just(Keys::W8), Just(Keys::Var)]
            .prop_flat_map(|keys| any::<bool>().prop_map(move |u| (keys, u)))
            .prop_flat_map(|(keys, unique)| (Just(keys), Just(unique), model_strategy(keys, unique, 3000), ops(keys, unique)))
    ) {
        bulk_then_run(keys, unique, model, &ops);
    }

    // Proves bulk_build with long variable keys packs valid byte-limited leaves.
    #[test]
    fn bulk_build_long_keys(unique in any::<bool>(), model in model_strategy(Keys::VarLong, true, 200), ops in prop::collection::vec(op(Keys::VarLong, true), 0..60)) {
        let model = if unique { model } else { Model::Multi(model.entries().into_iter().collect()) };
        bulk_then_run(Keys::VarLong, unique, model, &ops);
    }

    // Proves bulk_build refuses unsorted input at the first offending position.
    #[test]
    fn bulk_build_rejects_disorder(model in model_strategy(Keys::W4, false, 400), a in any::<usize>(), b in any::<usize>()) {
        let mut entries = model.entries();
        prop_assume!(entries.len() >= 2);
        let (a, b) = (a % entries.len(), b % entries.len());
        prop_assume!(a != b);
        entries[a] = entries[b].clone();
        let first_bad = (1..entries.len()).find(|&i| entries[i - 1] >= entries[i]);
        match BTree::bulk_build(false, Some(4), entries.clone()) {
            Ok(t) => {
                prop_assert_eq!(first_bad, None);
                assert_same(&t, &Model::Multi(entries.into_iter().collect()));
            }
            Err(e) => prop_assert_eq!(Some(e), first_bad.map(|index| BTreeError::NotSorted { index })),
        }
    }

    // Proves deep trees (depth 3, thousands of entries, internal-node merges and borrows) match the model.
    #[test]
    fn model_deep_tree(seed in any::<u64>(), n in 9000usize..16_000, ops in ops(Keys::W4Wide, true)) {
        // n distinct keys below 16000 (the ops' key space) in a seeded random order; more than
        // 64 full leaves' worth, so the tree has depth 3.
        let mut keys: Vec<u32> = (0..16_000).collect();
        let mut x = seed | 1;
        for i in (1..keys.len()).rev() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            keys.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut tree = BTree::new(true, Some(4));
        let mut model = Model::new(true);
        for &k in &keys[..n] {
            let k = k.to_be_bytes();
            let v = u64::from_be_bytes([k[0], k[1], k[2], k[3], 1, 2, 3, 4]);
            prop_assert_eq!(tree.insert(&k, v), model.insert(&k, v));
        }
        assert_same(&tree, &model);
        prop_assert!(tree.depth() >= 3, "{:?}", tree);
        run(tree, model, Keys::W4Wide, &ops);
    }
}
