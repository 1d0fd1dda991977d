//! Reads of a logged tree: the tree's entries merged with the staged ones of the overlay.
//! It must never lock anything: the overlay's entries are taken before the tree is read.

use sled::IVec;
use std::iter::Peekable;

/// The tree's entries merged with the overlay's (which win, and hide removed keys), in key
/// order or, `reverse`, backwards.
pub struct Merged<I: Iterator<Item = sled::Result<(IVec, IVec)>>> {
    tree: Peekable<I>,
    staged: Peekable<std::vec::IntoIter<(Vec<u8>, Option<IVec>)>>,
    reverse: bool,
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Merged<I> {
    pub(super) fn new(tree: I, mut staged: Vec<(Vec<u8>, Option<IVec>)>, reverse: bool) -> Merged<I> {
        if reverse {
            staged.reverse();
        }
        Merged { tree: tree.peekable(), staged: staged.into_iter().peekable(), reverse }
    }
}

impl<I: Iterator<Item = sled::Result<(IVec, IVec)>>> Iterator for Merged<I> {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.tree.peek(), self.staged.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(_), None) => return self.tree.next(),
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(Ok((tree_key, _))), Some((staged_key, _))) => {
                    let order = tree_key.as_ref().cmp(staged_key.as_slice());
                    if self.reverse {
                        order.reverse()
                    } else {
                        order
                    }
                }
            };
            match order {
                std::cmp::Ordering::Less => return self.tree.next(),
                std::cmp::Ordering::Equal => {
                    self.tree.next();
                }
                std::cmp::Ordering::Greater => {}
            }
            if let Some((key, Some(value))) = self.staged.next() {
                return Some(Ok((IVec::from(key), value)));
            }
        }
    }
}
