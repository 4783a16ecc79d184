//! Range iteration: a front and a back cursor over the borrowed tree, meeting in the middle.

use std::cmp::Ordering;
use std::iter::FusedIterator;
use std::ops::Bound;

use super::node::{cmp_keys, Entries, Internal, Node};

/// A position in the tree: the internal nodes on the way down with the child taken at each,
/// the leaf, and an index into it.
#[derive(Clone)]
struct Cursor<'a> {
    path: Vec<(&'a Internal, usize)>,
    leaf: &'a Entries,
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// The first position whose key does not satisfy `before` (true for a prefix of the entries
    /// in order); may be one past the end of a leaf.
    fn seek(root: &'a Node, before: impl Fn(&[u8]) -> bool) -> Cursor<'a> {
        let mut path = Vec::new();
        let mut node = root;
        loop {
            match node {
                Node::Internal(n) => {
                    // Separators whose key satisfies `before` bound subtrees that lie wholly
                    // before the position, so the position is in child `c` (or right after it).
                    let c = n.seps.partition_point(|k, _| before(k));
                    path.push((n, c));
                    node = &n.children[c];
                }
                Node::Leaf(leaf) => {
                    let pos = leaf.partition_point(|k, _| before(k));
                    return Cursor { path, leaf, pos };
                }
            }
        }
    }

    fn entry(&self) -> (&'a [u8], u64) {
        self.leaf.entry(self.pos)
    }

    /// Moves to the start of the next leaf; false (cursor spent) at the end of the tree.
    fn next_leaf(&mut self) -> bool {
        while let Some((n, c)) = self.path.pop() {
            if let Some(mut node) = n.children.get(c + 1).map(|c| &**c) {
                self.path.push((n, c + 1));
                loop {
                    match node {
                        Node::Internal(n) => match n.children.first() {
                            Some(first) => {
                                self.path.push((n, 0));
                                node = first;
                            }
                            None => return false,
                        },
                        Node::Leaf(leaf) => {
                            self.leaf = leaf;
                            self.pos = 0;
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// Moves to the end (one past the last entry) of the previous leaf; false at the start.
    fn prev_leaf(&mut self) -> bool {
        while let Some((n, c)) = self.path.pop() {
            if c > 0 {
                self.path.push((n, c - 1));
                let mut node: &'a Node = &n.children[c - 1];
                loop {
                    match node {
                        Node::Internal(n) => match n.children.len().checked_sub(1) {
                            Some(last) => {
                                self.path.push((n, last));
                                node = &n.children[last];
                            }
                            None => return false,
                        },
                        Node::Leaf(leaf) => {
                            self.leaf = leaf;
                            self.pos = leaf.len();
                            return true;
                        }
                    }
                }
            }
        }
        false
    }

    /// Forward until the cursor is on an entry (it may start one past a leaf's end).
    fn settle_forward(&mut self) -> bool {
        while self.pos >= self.leaf.len() {
            if !self.next_leaf() {
                return false;
            }
        }
        true
    }

    /// Back onto the entry before the position (an exclusive end, or the entry just yielded).
    fn settle_backward(&mut self) -> bool {
        while self.pos == 0 {
            if !self.prev_leaf() {
                return false;
            }
        }
        self.pos -= 1;
        true
    }

    /// Tree order of two positions in the same tree (leaves are all at the same depth).
    fn cmp_position(&self, other: &Cursor<'_>) -> Ordering {
        self.path
            .iter()
            .zip(&other.path)
            .map(|(a, b)| a.1.cmp(&b.1))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| self.pos.cmp(&other.pos))
    }

    fn same_entry(&self, other: &Cursor<'_>) -> bool {
        std::ptr::eq(self.leaf, other.leaf) && self.pos == other.pos
    }
}

/// Entries of a [`BTree`](super::BTree) in ascending (key, value) order, from either end.
/// Created by [`BTree::range`](super::BTree::range) and [`BTree::iter`](super::BTree::iter).
#[derive(Clone)]
pub struct Range<'a> {
    /// The next entry from the front and the next from the back (both inclusive); `None` once
    /// they have crossed.
    ends: Option<(Cursor<'a>, Cursor<'a>)>,
}

impl<'a> Range<'a> {
    pub(super) fn empty() -> Range<'a> {
        Range { ends: None }
    }

    pub(super) fn new(root: &'a Node, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Range<'a> {
        let mut front = Cursor::seek(root, |k| match lo {
            Bound::Included(b) => cmp_keys(k, b).is_lt(),
            Bound::Excluded(b) => cmp_keys(k, b).is_le(),
            Bound::Unbounded => false,
        });
        let mut back = Cursor::seek(root, |k| match hi {
            Bound::Included(b) => cmp_keys(k, b).is_le(),
            Bound::Excluded(b) => cmp_keys(k, b).is_lt(),
            Bound::Unbounded => true,
        });
        if !front.settle_forward() || !back.settle_backward() || front.cmp_position(&back).is_gt() {
            return Range::empty();
        }
        Range { ends: Some((front, back)) }
    }
}

impl<'a> Iterator for Range<'a> {
    type Item = (&'a [u8], u64);

    fn next(&mut self) -> Option<Self::Item> {
        let (front, back) = self.ends.as_mut()?;
        let item = front.entry();
        let more = !front.same_entry(back) && {
            // front is strictly before back, so settling finds an entry.
            front.pos += 1;
            front.settle_forward()
        };
        if !more {
            self.ends = None;
        }
        Some(item)
    }
}

impl DoubleEndedIterator for Range<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let (front, back) = self.ends.as_mut()?;
        let item = back.entry();
        // back is strictly after front, so stepping back finds an entry.
        let more = !front.same_entry(back) && back.settle_backward();
        if !more {
            self.ends = None;
        }
        Some(item)
    }
}

impl FusedIterator for Range<'_> {}
