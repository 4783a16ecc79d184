//! A persistent, append-only vector: a radix tree of `Arc` nodes (fanout [`FANOUT`]).
//!
//! Holds a table's pages. Cloning is O(1); `get_mut` copies only the nodes on the path to the
//! element that a clone still shares (`Arc::make_mut`), so a write transaction touching one page
//! of a million-row table copies ~`FANOUT × height` pointers, not the whole page list.

use std::sync::Arc;

/// Children per node. Small on purpose: a copied node clones all its child `Arc`s.
pub const FANOUT: usize = 32;
const BITS: u32 = FANOUT.trailing_zeros();

#[derive(Clone)]
enum Node<T> {
    Leaf(Vec<Arc<T>>),
    Inner(Vec<Arc<Node<T>>>),
}

#[derive(Clone)]
pub struct PVec<T> {
    root: Option<Arc<Node<T>>>,
    len: usize,
    /// Levels of inner nodes above the leaves.
    height: u32,
}

impl<T: Clone> Default for PVec<T> {
    fn default() -> Self {
        PVec::new()
    }
}

impl<T: Clone> PVec<T> {
    pub fn new() -> PVec<T> {
        PVec { root: None, len: 0, height: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    fn capacity(&self) -> usize {
        FANOUT << (BITS * self.height)
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        let mut node = self.root.as_deref()?;
        let mut level = self.height;
        loop {
            let slot = (index >> (BITS * level)) & (FANOUT - 1);
            match node {
                Node::Inner(children) => node = children.get(slot)?,
                Node::Leaf(items) => return items.get(slot).map(|a| &**a),
            }
            level = level.saturating_sub(1);
        }
    }

    /// Mutable access, copying shared nodes (and the element itself if shared) on the way.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index >= self.len {
            return None;
        }
        let mut node = Arc::make_mut(self.root.as_mut()?);
        let mut level = self.height;
        loop {
            let slot = (index >> (BITS * level)) & (FANOUT - 1);
            match node {
                Node::Inner(children) => node = Arc::make_mut(children.get_mut(slot)?),
                Node::Leaf(items) => return items.get_mut(slot).map(Arc::make_mut),
            }
            level = level.saturating_sub(1);
        }
    }

    pub fn push(&mut self, value: T) {
        if self.root.is_none() {
            self.root = Some(Arc::new(Node::Leaf(Vec::with_capacity(FANOUT))));
        }
        if self.len == self.capacity() {
            // Grow a level: the old root becomes the first child of a new root.
            // Invariant: root is Some (set above).
            let old = self.root.take().expect("root exists");
            let mut children = Vec::with_capacity(FANOUT);
            children.push(old);
            self.root = Some(Arc::new(Node::Inner(children)));
            self.height += 1;
        }
        let index = self.len;
        let mut node = Arc::make_mut(self.root.as_mut().expect("root exists"));
        let mut level = self.height;
        loop {
            let slot = (index >> (BITS * level)) & (FANOUT - 1);
            match node {
                Node::Inner(children) => {
                    if slot == children.len() {
                        let fresh = if level == 1 {
                            Node::Leaf(Vec::with_capacity(FANOUT))
                        } else {
                            Node::Inner(Vec::with_capacity(FANOUT))
                        };
                        children.push(Arc::new(fresh));
                    }
                    node = Arc::make_mut(&mut children[slot]);
                }
                Node::Leaf(items) => {
                    debug_assert_eq!(slot, items.len(), "append must land at the end of the last leaf");
                    items.push(Arc::new(value));
                    break;
                }
            }
            level -= 1;
        }
        self.len += 1;
    }

    /// Removes elements from the end until `len` remain (copying shared nodes on the way).
    pub fn truncate(&mut self, len: usize) {
        while self.len > len {
            self.pop();
        }
    }

    fn pop(&mut self) {
        fn pop_last<T: Clone>(node: &mut Node<T>) -> bool {
            match node {
                Node::Leaf(items) => {
                    items.pop();
                    items.is_empty()
                }
                Node::Inner(children) => {
                    if let Some(last) = children.last_mut() {
                        if pop_last(Arc::make_mut(last)) {
                            children.pop();
                        }
                    }
                    children.is_empty()
                }
            }
        }
        let Some(root) = self.root.as_mut() else { return };
        pop_last(Arc::make_mut(root));
        self.len -= 1;
        if self.len == 0 {
            self.root = None;
            self.height = 0;
            return;
        }
        // Elements are packed to the left, so once they fit under the first child, the root
        // has only that child: drop a level.
        while self.height > 0 && self.len <= FANOUT << (BITS * (self.height - 1)) {
            let Some(Node::Inner(children)) = self.root.as_deref() else { break };
            let only = Arc::clone(&children[0]);
            self.root = Some(only);
            self.height -= 1;
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        (0..self.len).filter_map(move |i| self.get(i))
    }

    /// Bytes of the radix nodes themselves (not the elements).
    pub fn node_bytes(&self) -> usize {
        fn walk<T>(node: &Node<T>) -> usize {
            match node {
                Node::Leaf(items) => items.capacity() * 8 + 16,
                Node::Inner(children) => {
                    children.capacity() * 8 + 16 + children.iter().map(|c| walk(c)).sum::<usize>()
                }
            }
        }
        self.root.as_deref().map_or(0, walk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves push/get across several levels and that a clone keeps its version after writes.
    #[test]
    fn clone_is_isolated_from_later_writes() {
        let mut v = PVec::new();
        for i in 0..5000u32 {
            v.push(i);
        }
        let snapshot = v.clone();
        for i in (0..5000).step_by(7) {
            *v.get_mut(i).unwrap() += 1_000_000;
        }
        v.push(42);
        for i in 0..5000usize {
            assert_eq!(*snapshot.get(i).unwrap(), i as u32);
            let expect = if i % 7 == 0 { i as u32 + 1_000_000 } else { i as u32 };
            assert_eq!(*v.get(i).unwrap(), expect);
        }
        assert_eq!(snapshot.len(), 5000);
        assert_eq!(v.len(), 5001);
        assert!(snapshot.get(5000).is_none());
        assert_eq!(v.iter().count(), 5001);

        // Truncating shrinks the tree (levels too) without touching the clone, and pushes work after.
        v.truncate(33);
        assert_eq!(v.len(), 33);
        assert_eq!(v.height, 1);
        assert!(v.get(33).is_none());
        assert_eq!(*v.get(32).unwrap(), 32);
        v.truncate(5);
        assert_eq!(v.height, 0);
        for i in 5..2000u32 {
            v.push(i + 7);
        }
        assert_eq!(*v.get(0).unwrap(), 1_000_000);
        assert_eq!(*v.get(4).unwrap(), 4);
        assert_eq!(*v.get(1999).unwrap(), 2006);
        v.truncate(0);
        assert!(v.get(0).is_none());
        v.push(9);
        assert_eq!(v.iter().copied().collect::<Vec<_>>(), vec![9]);
        assert_eq!(snapshot.iter().count(), 5000);
        assert_eq!(*snapshot.get(4999).unwrap(), 4999);
    }
}
