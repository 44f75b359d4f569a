//! A Merkle tree over the sealed chain, hashed as RFC 6962 / RFC 9162 (Certificate
//! Transparency) do, so auditors can check inclusion and append-only growth with short proofs
//! and a signed root ([`crate::checkpoint`]) instead of re-reading the whole log.
//!
//! - Leaf `i` (0-based) is the record with sequence `i + 1`; its leaf hash is
//!   `SHA-256(0x00 || chain_hash)`. The chain hash already commits to the record's content and
//!   its predecessor, so the tree adds no second encoding of records.
//! - An interior node is `SHA-256(0x01 || left || right)`; the empty tree's root is
//!   `SHA-256("")`.
//! - Stored state is the set of *perfect* subtrees ([`NodeId`]): leaves
//!   `[index << level, (index + 1) << level)`. Every proof element and every root of the tree
//!   at any size is computed from O(log² n) of them, so proofs never read the leaves.
//!
//! The proof shapes (which subtrees, in which order) are those of RFC 9162 §2.1.3 and §2.1.4;
//! the verifiers are the algorithms of §2.1.3.2 and §2.1.4.2.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// Longest tree this module handles: sequences are positive `i64`.
pub const TREE_SIZE_MAX: u64 = i64::MAX as u64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("merkle node {0:?} is not stored")]
    MissingNode(NodeId),
    #[error("leaf {leaf_index} is not in a tree of size {tree_size}")]
    LeafOutOfRange { leaf_index: u64, tree_size: u64 },
    #[error("consistency needs 0 < old size ({old_size}) <= new size ({new_size})")]
    BadSizes { old_size: u64, new_size: u64 },
    #[error("a frontier of size {size} has {expected} nodes, got {got}")]
    FrontierShape {
        size: u64,
        expected: usize,
        got: usize,
    },
}

pub fn leaf_hash(chain_hash: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(chain_hash);
    hasher.finalize().into()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x01]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A perfect subtree: leaves `[index << level, (index + 1) << level)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    pub fn first_leaf(self) -> u64 {
        self.index << self.level
    }

    pub fn leaves(self) -> u64 {
        1 << self.level
    }
}

/// Largest power of two strictly below `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The perfect subtrees whose concatenation is the range `[start, end)` as RFC 6962's MTH
/// recursion splits it, in the order MTH combines them. `start` must be aligned the way the
/// recursion produces ranges (a multiple of the largest power of two <= end - start).
fn range_nodes(start: u64, end: u64, into: &mut Vec<NodeId>) {
    assert!(start < end, "empty range");
    let size = end - start;
    if size.is_power_of_two() && start.is_multiple_of(size) {
        into.push(NodeId {
            level: size.trailing_zeros() as u8,
            index: start / size,
        });
        return;
    }
    let k = split_point(size);
    range_nodes(start, start + k, into);
    range_nodes(start + k, end, into);
}

/// MTH of `[start, end)` from stored perfect subtrees.
fn range_hash(
    start: u64,
    end: u64,
    node: &dyn Fn(NodeId) -> Option<Hash>,
) -> Result<Hash, MerkleError> {
    let size = end - start;
    if size.is_power_of_two() && start.is_multiple_of(size) {
        let id = NodeId {
            level: size.trailing_zeros() as u8,
            index: start / size,
        };
        return node(id).ok_or(MerkleError::MissingNode(id));
    }
    let k = split_point(size);
    let left = range_hash(start, start + k, node)?;
    let right = range_hash(start + k, end, node)?;
    Ok(node_hash(&left, &right))
}

/// The ranges whose MTHs form the inclusion proof of `m` in `[start, end)` (RFC 9162 PATH),
/// in proof order.
fn inclusion_ranges(m: u64, start: u64, end: u64, into: &mut Vec<(u64, u64)>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split_point(n);
    if m < k {
        inclusion_ranges(m, start, start + k, into);
        into.push((start + k, end));
    } else {
        inclusion_ranges(m - k, start + k, end, into);
        into.push((start, start + k));
    }
}

/// The ranges of the consistency proof from `m` to `[start, end)` (RFC 9162 SUBPROOF).
fn consistency_ranges(m: u64, start: u64, end: u64, complete: bool, into: &mut Vec<(u64, u64)>) {
    let n = end - start;
    if m == n {
        if !complete {
            into.push((start, end));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        consistency_ranges(m, start, start + k, complete, into);
        into.push((start + k, end));
    } else {
        consistency_ranges(m - k, start + k, end, false, into);
        into.push((start, start + k));
    }
}

fn node_ids_of(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    let mut ids = Vec::new();
    for &(start, end) in ranges {
        range_nodes(start, end, &mut ids);
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn check_inclusion_args(leaf_index: u64, tree_size: u64) -> Result<(), MerkleError> {
    if leaf_index >= tree_size || tree_size > TREE_SIZE_MAX {
        return Err(MerkleError::LeafOutOfRange {
            leaf_index,
            tree_size,
        });
    }
    Ok(())
}

fn check_consistency_args(old_size: u64, new_size: u64) -> Result<(), MerkleError> {
    if old_size == 0 || old_size > new_size || new_size > TREE_SIZE_MAX {
        return Err(MerkleError::BadSizes { old_size, new_size });
    }
    Ok(())
}

/// Which stored nodes [`inclusion_proof`] reads (empty if the arguments are out of range).
pub fn inclusion_node_ids(leaf_index: u64, tree_size: u64) -> Vec<NodeId> {
    if check_inclusion_args(leaf_index, tree_size).is_err() {
        return Vec::new();
    }
    let mut ranges = Vec::new();
    inclusion_ranges(leaf_index, 0, tree_size, &mut ranges);
    node_ids_of(&ranges)
}

/// Which stored nodes [`consistency_proof`] reads (empty if the arguments are invalid).
pub fn consistency_node_ids(old_size: u64, new_size: u64) -> Vec<NodeId> {
    if check_consistency_args(old_size, new_size).is_err() {
        return Vec::new();
    }
    let mut ranges = Vec::new();
    consistency_ranges(old_size, 0, new_size, true, &mut ranges);
    node_ids_of(&ranges)
}

/// Which stored nodes [`root_at`] reads.
pub fn root_node_ids(tree_size: u64) -> Vec<NodeId> {
    if tree_size == 0 {
        return Vec::new();
    }
    node_ids_of(&[(0, tree_size)])
}

pub fn inclusion_proof(
    leaf_index: u64,
    tree_size: u64,
    node: &dyn Fn(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, MerkleError> {
    check_inclusion_args(leaf_index, tree_size)?;
    let mut ranges = Vec::new();
    inclusion_ranges(leaf_index, 0, tree_size, &mut ranges);
    ranges
        .into_iter()
        .map(|(start, end)| range_hash(start, end, node))
        .collect()
}

pub fn consistency_proof(
    old_size: u64,
    new_size: u64,
    node: &dyn Fn(NodeId) -> Option<Hash>,
) -> Result<Vec<Hash>, MerkleError> {
    check_consistency_args(old_size, new_size)?;
    let mut ranges = Vec::new();
    consistency_ranges(old_size, 0, new_size, true, &mut ranges);
    ranges
        .into_iter()
        .map(|(start, end)| range_hash(start, end, node))
        .collect()
}

/// The root of the tree of the first `tree_size` leaves, from stored nodes.
pub fn root_at(tree_size: u64, node: &dyn Fn(NodeId) -> Option<Hash>) -> Result<Hash, MerkleError> {
    if tree_size == 0 {
        return Ok(empty_root());
    }
    range_hash(0, tree_size, node)
}

/// RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    leaf_index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if leaf_index >= tree_size {
        return false;
    }
    let (mut fn_, mut sn) = (leaf_index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && r == *root
}

/// RFC 9162 §2.1.4.2.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    if fn_ & 1 == 1 {
        while fn_ & 1 == 1 {
            fn_ >>= 1;
            sn >>= 1;
        }
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    fr == *old_root && sr == *new_root && sn == 0
}

/// The compact range of `[0, size)`: one perfect subtree per set bit of `size`, largest
/// (leftmost) first. Enough to append leaves and to compute the root at `size`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    /// Largest subtree first.
    nodes: Vec<(NodeId, Hash)>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The nodes a frontier of `size` consists of, largest first.
    pub fn node_ids(size: u64) -> Vec<NodeId> {
        let mut ids = Vec::new();
        let mut start = 0;
        for level in (0..64u8).rev() {
            if size & (1 << level) != 0 {
                ids.push(NodeId {
                    level,
                    index: start >> level,
                });
                start += 1 << level;
            }
        }
        ids
    }

    /// A frontier from the hashes of `node_ids(size)`, in that order.
    pub fn from_nodes(size: u64, hashes: Vec<Hash>) -> Result<Frontier, MerkleError> {
        let ids = Frontier::node_ids(size);
        if ids.len() != hashes.len() {
            return Err(MerkleError::FrontierShape {
                size,
                expected: ids.len(),
                got: hashes.len(),
            });
        }
        Ok(Frontier {
            size,
            nodes: ids.into_iter().zip(hashes).collect(),
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn nodes(&self) -> Vec<(NodeId, Hash)> {
        self.nodes.clone()
    }

    /// Appends one leaf hash; returns every perfect node it completes, the leaf (level 0)
    /// first, then each new parent, for storage.
    pub fn push(&mut self, leaf: Hash) -> Vec<(NodeId, Hash)> {
        assert!(self.size < TREE_SIZE_MAX, "merkle tree is full");
        let mut completed = Vec::with_capacity(4);
        let mut current = (
            NodeId {
                level: 0,
                index: self.size,
            },
            leaf,
        );
        completed.push(current);
        while let Some(&(last_id, last_hash)) = self.nodes.last() {
            if last_id.level != current.0.level {
                break;
            }
            self.nodes.pop();
            current = (
                NodeId {
                    level: last_id.level + 1,
                    index: last_id.index / 2,
                },
                node_hash(&last_hash, &current.1),
            );
            completed.push(current);
        }
        self.nodes.push(current);
        self.size += 1;
        completed
    }

    /// MTH of `[0, size)`.
    pub fn root(&self) -> Hash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut root)) = iter.next() else {
            return empty_root();
        };
        for (_, left) in iter {
            root = node_hash(left, &root);
        }
        root
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// MTH straight from the definition (RFC 6962 §2.1), over leaf hashes.
    fn reference_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
            }
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&Sha256::digest(i.to_be_bytes()).into()))
            .collect()
    }

    fn stored(leaves: &[Hash]) -> HashMap<NodeId, Hash> {
        let mut frontier = Frontier::new();
        let mut nodes = HashMap::new();
        for leaf in leaves {
            nodes.extend(frontier.push(*leaf));
        }
        nodes
    }

    #[test]
    fn known_answers() {
        // The empty tree and RFC 6962 hashing of a single empty leaf (as in CT's test data).
        assert_eq!(
            hex::encode(empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut hasher = Sha256::new();
        hasher.update([0x00]);
        assert_eq!(
            hex::encode(Into::<Hash>::into(hasher.finalize())),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn frontier_roots_match_the_definition_at_every_size() {
        let all = leaves(70);
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), empty_root());
        for (i, leaf) in all.iter().enumerate() {
            frontier.push(*leaf);
            assert_eq!(
                frontier.root(),
                reference_root(&all[..=i]),
                "size {}",
                i + 1
            );
            let ids: Vec<NodeId> = frontier.nodes().iter().map(|(id, _)| *id).collect();
            assert_eq!(ids, Frontier::node_ids(frontier.size()));
        }
        let nodes = stored(&all);
        for size in 1..=70 {
            assert_eq!(
                root_at(size, &|id| nodes.get(&id).copied()).unwrap(),
                reference_root(&all[..size as usize])
            );
            let hashes = Frontier::node_ids(size)
                .into_iter()
                .map(|id| nodes[&id])
                .collect();
            let rebuilt = Frontier::from_nodes(size, hashes).unwrap();
            assert_eq!(rebuilt.root(), reference_root(&all[..size as usize]));
        }
    }

    #[test]
    fn inclusion_proofs_verify_and_fail_when_anything_changes() {
        let all = leaves(37);
        let nodes = stored(&all);
        let lookup = |id: NodeId| nodes.get(&id).copied();
        for size in 1..=37u64 {
            let root = reference_root(&all[..size as usize]);
            for index in 0..size {
                let needed = inclusion_node_ids(index, size);
                let only_needed = |id: NodeId| needed.contains(&id).then(|| nodes[&id]);
                let proof = inclusion_proof(index, size, &only_needed).unwrap();
                assert_eq!(proof, inclusion_proof(index, size, &lookup).unwrap());
                let leaf = all[index as usize];
                assert!(
                    verify_inclusion(&leaf, index, size, &proof, &root),
                    "{index}/{size}"
                );
                let other_leaf = node_hash(&leaf, &leaf);
                assert!(!verify_inclusion(&other_leaf, index, size, &proof, &root));
                if let Some(first) = proof.first() {
                    let mut bad = proof.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(&leaf, index, size, &bad, &root));
                    assert!(!verify_inclusion(&leaf, index, size, &proof[1..], &root));
                }
                // The same proof at the neighbouring position combines in the other order.
                if index ^ 1 < size {
                    assert!(!verify_inclusion(&leaf, index ^ 1, size, &proof, &root));
                }
            }
        }
        assert!(inclusion_proof(5, 5, &lookup).is_err());
    }

    #[test]
    fn consistency_proofs_verify_and_fail_when_anything_changes() {
        let all = leaves(33);
        let nodes = stored(&all);
        for new_size in 1..=33u64 {
            let new_root = reference_root(&all[..new_size as usize]);
            for old_size in 1..=new_size {
                let old_root = reference_root(&all[..old_size as usize]);
                let needed = consistency_node_ids(old_size, new_size);
                let only_needed = |id: NodeId| needed.contains(&id).then(|| nodes[&id]);
                let proof = consistency_proof(old_size, new_size, &only_needed).unwrap();
                assert!(
                    verify_consistency(old_size, new_size, &old_root, &new_root, &proof),
                    "{old_size} -> {new_size}"
                );
                if old_size < new_size {
                    let other_root = reference_root(&all[1..old_size as usize + 1]);
                    assert!(!verify_consistency(
                        old_size,
                        new_size,
                        &other_root,
                        &new_root,
                        &proof
                    ));
                    let mut bad = proof.clone();
                    let last = bad.len() - 1;
                    bad[last] = node_hash(&bad[last], &bad[last]);
                    assert!(!verify_consistency(
                        old_size, new_size, &old_root, &new_root, &bad
                    ));
                }
            }
        }
    }

    #[test]
    fn missing_nodes_are_errors_not_wrong_answers() {
        let all = leaves(8);
        let nodes = stored(&all);
        let without_root = |id: NodeId| (id != NodeId { level: 2, index: 1 }).then(|| nodes[&id]);
        assert_eq!(
            inclusion_proof(0, 8, &without_root),
            Err(MerkleError::MissingNode(NodeId { level: 2, index: 1 }))
        );
        assert!(Frontier::from_nodes(3, vec![[0; 32]]).is_err());
    }
}
