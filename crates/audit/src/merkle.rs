//! RFC 6962 Merkle trees over the chain's entry hashes (RFC 6962 section 2.1, RFC 9162
//! section 2.1).
//!
//! ```text
//!  entry_hash[0..n) ──► leaf = SHA-256(0x00 ‖ entry_hash)
//!                        node = SHA-256(0x01 ‖ left ‖ right)
//!                        MTH({}) = SHA-256("")
//!
//!  processor:  CompactRange::append(entry_hash) ... root()      O(log n) state, in checkpoints
//!  verifier:   root(&entry_hashes) == checkpoint.root            batch, the RFC's recursion
//!  prover:     inclusion_proof(&entry_hashes, i, n) ──► verify_inclusion(entry_hash, i, n, proof, root)
//! ```
//!
//! Why a Merkle tree on top of the hash chain: the chain alone proves order and integrity but
//! an inclusion check costs a walk from the checkpoint back to the entry. A signed checkpoint
//! carrying the tree head lets anyone check one entry with `log2(n)` hashes, and lets two
//! checkpoints be checked for consistency (the later tree extends the earlier one) without
//! reading the entries between them. The 0x00 / 0x01 prefixes are RFC 6962's domain separation:
//! without them a leaf could be passed off as an interior node (second-preimage attack).
//!
//! A caveat shared by every RFC 6962 verifier: the verification algorithms consume the tree size
//! only through right shifts of `size - 1`, so a proof for size 8 also verifies when a caller
//! claims size 7 against the same root. The size is authenticated by the signed checkpoint body
//! (which carries size and root together), so always take both from a verified checkpoint.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// A SHA-256 digest: entry hashes, leaf and node hashes, roots.
pub type Hash = [u8; 32];

/// Length of a [`Hash`](type@Hash) in bytes.
pub const HASH_LEN: usize = 32;

/// RFC 6962 section 2.1 leaf hash prefix: `leaf = SHA-256(0x00 ‖ leaf_input)`.
pub const LEAF_PREFIX: u8 = 0x00;

/// RFC 6962 section 2.1 interior node prefix: `node = SHA-256(0x01 ‖ left ‖ right)`.
pub const NODE_PREFIX: u8 = 0x01;

/// The root of the empty tree, `MTH({}) = SHA-256("")`.
///
/// Reproduce: `printf '' | sha256sum` →
/// `e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// Version byte of [`CompactRange::to_bytes`], so that the state format can change later
/// without misreading old state.
pub const COMPACT_RANGE_VERSION: u8 = 1;

/// Why a Merkle computation or proof check failed. Proof failures are findings about the data
/// (a verifier reports them); argument errors are caller mistakes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MerkleError {
    /// A leaf index at or beyond the tree size.
    #[error("leaf index {index} is outside a tree of size {size}")]
    IndexOutOfRange {
        /// The leaf index asked for.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A tree size larger than the number of leaves supplied.
    #[error("tree size {size} exceeds the {available} leaves supplied")]
    SizeBeyondLeaves {
        /// The tree size asked for.
        size: u64,
        /// How many leaves were given.
        available: u64,
    },
    /// A consistency proof between sizes where the first is larger than the second.
    #[error("old tree size {old_size} exceeds new tree size {new_size}")]
    Shrinking {
        /// The earlier tree size.
        old_size: u64,
        /// The later tree size.
        new_size: u64,
    },
    /// The proof has the wrong number of hashes for its index and size.
    #[error("proof has the wrong length for its index and tree size")]
    ProofLength,
    /// The proof is well formed but the root it implies differs from the expected root.
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    /// A compact range whose hash count does not match its size (`popcount(size)` hashes).
    #[error("compact range of size {size} needs {expected} hashes, got {got}")]
    CompactRangeShape {
        /// The claimed tree size.
        size: u64,
        /// `popcount(size)`.
        expected: usize,
        /// Hashes present.
        got: usize,
    },
    /// Serialized compact range bytes that are truncated, too long or of an unknown version.
    #[error("malformed compact range bytes: {0}")]
    CompactRangeBytes(&'static str),
    /// The tree cannot grow beyond `u64::MAX` leaves.
    #[error("tree size overflow")]
    Overflow,
}

/// `SHA-256(0x00 ‖ leaf_input)`: the hash of one leaf. Our leaf inputs are entry hashes.
pub fn leaf_hash(leaf_input: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(leaf_input);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle tree head over `entry_hashes` (each one a leaf input), computed with RFC 6962's
/// recursive definition. Verifiers use it; the processor uses [`CompactRange`].
pub fn root(entry_hashes: &[Hash]) -> Hash {
    let leaves: Vec<Hash> = entry_hashes.iter().map(|e| leaf_hash(e)).collect();
    root_from_leaf_hashes(&leaves)
}

/// The Merkle tree head over already hashed leaves: `MTH(D[n])` of RFC 6962 section 2.1, where
/// `k` is the largest power of two smaller than `n` and `MTH = node(MTH(D[0:k]), MTH(D[k:n]))`.
pub fn root_from_leaf_hashes(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => EMPTY_ROOT,
        [one] => *one,
        _ => {
            let k = split_point(leaf_hashes.len());
            node_hash(
                &root_from_leaf_hashes(&leaf_hashes[..k]),
                &root_from_leaf_hashes(&leaf_hashes[k..]),
            )
        }
    }
}

/// The largest power of two strictly smaller than `n` (for `n >= 2`).
fn split_point(n: usize) -> usize {
    debug_assert!(n >= 2);
    let p = n.next_power_of_two();
    if p == n {
        n / 2
    } else {
        p / 2
    }
}

/// The first `size` of `items`, or an error naming how many there are.
fn prefix<T>(items: &[T], size: u64) -> Result<&[T], MerkleError> {
    usize::try_from(size)
        .ok()
        .and_then(|s| items.get(..s))
        .ok_or(MerkleError::SizeBeyondLeaves { size, available: items.len() as u64 })
}

/// The RFC 6962 section 2.1.1 audit path `PATH(index, D[size])` for the entry at `index` in the
/// tree of the first `size` entry hashes: the sibling hashes from the leaf up to the root.
pub fn inclusion_proof(
    entry_hashes: &[Hash],
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    let entries = prefix(entry_hashes, size)?;
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    inclusion_proof_from_leaf_hashes(&leaves, index, size)
}

/// [`inclusion_proof`] over already hashed leaves.
pub fn inclusion_proof_from_leaf_hashes(
    leaf_hashes: &[Hash],
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    let leaves = prefix(leaf_hashes, size)?;
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut path = Vec::new();
    // index < size <= leaves.len(), so it fits a usize.
    path_into(index as usize, leaves, &mut path);
    Ok(path)
}

/// `PATH(m, D[n])`, appending the sibling hashes bottom-up.
fn path_into(m: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let k = split_point(leaves.len());
    if m < k {
        path_into(m, &leaves[..k], out);
        out.push(root_from_leaf_hashes(&leaves[k..]));
    } else {
        path_into(m - k, &leaves[k..], out);
        out.push(root_from_leaf_hashes(&leaves[..k]));
    }
}

/// Checks that `entry_hash` is the leaf at `index` of the tree of `size` leaves with head
/// `root`, given its audit path (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    entry_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    verify_inclusion_leaf_hash(&leaf_hash(entry_hash), index, size, proof, root)
}

/// [`verify_inclusion`] for an already hashed leaf.
pub fn verify_inclusion_leaf_hash(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    if root_from_inclusion_proof(leaf_hash, index, size, proof)? == *root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// The root implied by a leaf hash and its audit path: RFC 9162 section 2.1.3.2 steps 1-6
/// without the final comparison. Fails when the proof length does not fit `index` and `size`.
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
) -> Result<Hash, MerkleError> {
    if index >= size {
        return Err(MerkleError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf_hash;
    for p in proof {
        if s_n == 0 {
            return Err(MerkleError::ProofLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                // The right edge of a ragged tree: climb past levels where this node has no
                // right sibling.
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(MerkleError::ProofLength);
    }
    Ok(r)
}

/// The RFC 6962 section 2.1.2 consistency proof `PROOF(old_size, D[new_size])` that the tree of
/// the first `old_size` entry hashes is a prefix of the tree of the first `new_size`. Empty when
/// `old_size` is 0 or equals `new_size`.
pub fn consistency_proof(
    entry_hashes: &[Hash],
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    let entries = prefix(entry_hashes, new_size)?;
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    consistency_proof_from_leaf_hashes(&leaves, old_size, new_size)
}

/// [`consistency_proof`] over already hashed leaves.
pub fn consistency_proof_from_leaf_hashes(
    leaf_hashes: &[Hash],
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Hash>, MerkleError> {
    let leaves = prefix(leaf_hashes, new_size)?;
    if old_size > new_size {
        return Err(MerkleError::Shrinking { old_size, new_size });
    }
    let mut proof = Vec::new();
    if old_size > 0 {
        // old_size <= new_size <= leaves.len(), so it fits a usize.
        subproof_into(old_size as usize, leaves, true, &mut proof);
    }
    Ok(proof)
}

/// `SUBPROOF(m, D[n], b)` of RFC 6962 section 2.1.2.
fn subproof_into(m: usize, leaves: &[Hash], complete: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !complete {
            out.push(root_from_leaf_hashes(leaves));
        }
        return;
    }
    let k = split_point(n);
    if m <= k {
        subproof_into(m, &leaves[..k], complete, out);
        out.push(root_from_leaf_hashes(&leaves[k..]));
    } else {
        subproof_into(m - k, &leaves[k..], false, out);
        out.push(root_from_leaf_hashes(&leaves[..k]));
    }
}

/// Checks that the tree of `old_size` leaves with head `old_root` is a prefix of the tree of
/// `new_size` leaves with head `new_root` (RFC 9162 section 2.1.4.2). The empty tree is a prefix
/// of every tree (empty proof, `old_root` must be [`EMPTY_ROOT`]); equal sizes need an empty
/// proof and equal roots.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), MerkleError> {
    if old_size > new_size {
        return Err(MerkleError::Shrinking { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(MerkleError::ProofLength);
        }
        let expected_old = if old_size == 0 { &EMPTY_ROOT } else { new_root };
        return if old_root == expected_old { Ok(()) } else { Err(MerkleError::RootMismatch) };
    }
    if proof.is_empty() {
        return Err(MerkleError::ProofLength);
    }
    // When old_size is a power of two its root is a node of the new tree and the proof omits
    // it; put it back so one loop handles both cases.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(MerkleError::ProofLength);
    };
    let mut f_n = old_size - 1;
    let mut s_n = new_size - 1;
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut f_r = *first;
    let mut s_r = *first;
    for c in rest {
        if s_n == 0 {
            return Err(MerkleError::ProofLength);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(MerkleError::ProofLength);
    }
    if f_r == *old_root && s_r == *new_root {
        Ok(())
    } else {
        Err(MerkleError::RootMismatch)
    }
}

/// The compact range `[0, size)` of a Merkle tree (a "frontier"): the roots of the perfect
/// subtrees that the binary representation of `size` splits the leaves into, largest (leftmost)
/// first. `popcount(size)` hashes, at most 64, are enough to append further leaves and to compute
/// the current root, which is why the `audit-chain` processor keeps this instead of all entry
/// hashes, and why every checkpoint carries it (a restart resumes from the last checkpoint).
///
/// Example: size 6 = 0b110 → `[MTH(D[0:4]), MTH(D[4:6])]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// The compact range over `entry_hashes` (each one a leaf input).
    pub fn from_entry_hashes(entry_hashes: &[Hash]) -> Result<CompactRange, MerkleError> {
        let mut range = CompactRange::new();
        for e in entry_hashes {
            range.append(e)?;
        }
        Ok(range)
    }

    /// Rebuilds a compact range from a tree size and its `popcount(size)` subtree roots, largest
    /// first (the `frontier` of a checkpoint). Fails when the count does not match the size.
    pub fn from_hashes(size: u64, hashes: Vec<Hash>) -> Result<CompactRange, MerkleError> {
        let expected = size.count_ones() as usize;
        if hashes.len() != expected {
            return Err(MerkleError::CompactRangeShape { size, expected, got: hashes.len() });
        }
        Ok(CompactRange { size, hashes })
    }

    /// Number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest (leftmost) first; what a checkpoint's `frontier` holds.
    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Appends the leaf for `entry_hash` and returns its leaf index.
    pub fn append(&mut self, entry_hash: &Hash) -> Result<u64, MerkleError> {
        self.append_leaf_hash(leaf_hash(entry_hash))
    }

    /// Appends an already hashed leaf and returns its leaf index. O(log n): each trailing one
    /// bit of the old size is a perfect subtree that the new leaf completes into a bigger one.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> Result<u64, MerkleError> {
        let index = self.size;
        let new_size = index.checked_add(1).ok_or(MerkleError::Overflow)?;
        let mut hash = leaf;
        let mut bits = index;
        while bits & 1 == 1 {
            let Some(left) = self.hashes.pop() else {
                // Unreachable while the popcount invariant holds; report instead of panicking.
                return Err(MerkleError::CompactRangeShape {
                    size: self.size,
                    expected: self.size.count_ones() as usize,
                    got: self.hashes.len(),
                });
            };
            hash = node_hash(&left, &hash);
            bits >>= 1;
        }
        self.hashes.push(hash);
        self.size = new_size;
        Ok(index)
    }

    /// The tree head `MTH(D[size])`: the subtree roots folded from the right, which is exactly
    /// RFC 6962's recursion (the largest power of two below `n` is the leftmost subtree).
    pub fn root(&self) -> Hash {
        let mut from_right = self.hashes.iter().rev();
        match from_right.next() {
            None => EMPTY_ROOT,
            Some(last) => from_right.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }

    /// State bytes: `version (1 byte, 0x01) ‖ u64_be(size) ‖ hashes (32 bytes each)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + HASH_LEN * self.hashes.len());
        out.push(COMPACT_RANGE_VERSION);
        out.extend_from_slice(&self.size.to_be_bytes());
        for h in &self.hashes {
            out.extend_from_slice(h);
        }
        out
    }

    /// Parses [`CompactRange::to_bytes`]; any other length or version is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<CompactRange, MerkleError> {
        let (&version, rest) =
            bytes.split_first().ok_or(MerkleError::CompactRangeBytes("empty"))?;
        if version != COMPACT_RANGE_VERSION {
            return Err(MerkleError::CompactRangeBytes("unknown version"));
        }
        let (size_bytes, rest) =
            rest.split_at_checked(8).ok_or(MerkleError::CompactRangeBytes("truncated size"))?;
        let mut size = [0u8; 8];
        size.copy_from_slice(size_bytes);
        let size = u64::from_be_bytes(size);
        let expected = size.count_ones() as usize;
        if rest.len() != expected * HASH_LEN {
            return Err(MerkleError::CompactRangeBytes("hash bytes do not match the tree size"));
        }
        let hashes = rest
            .chunks_exact(HASH_LEN)
            .map(|c| {
                let mut h = [0u8; HASH_LEN];
                h.copy_from_slice(c);
                h
            })
            .collect();
        CompactRange::from_hashes(size, hashes)
    }
}

/// A 32-byte hash from a byte slice of exactly that length (Avro `bytes` fields, hex input).
pub fn hash_from_slice(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        let h: Hash = Sha256::digest(b"").into();
        assert_eq!(h, EMPTY_ROOT);
        assert_eq!(root(&[]), EMPTY_ROOT);
        assert_eq!(CompactRange::new().root(), EMPTY_ROOT);
    }

    #[test]
    fn split_point_is_the_largest_power_of_two_below() {
        for n in 2..300usize {
            let brute = (0..usize::BITS).map(|b| 1usize << b).filter(|&k| k < n).max().unwrap();
            assert_eq!(split_point(n), brute, "n = {n}");
        }
    }

    #[test]
    fn compact_range_bytes_round_trip_and_reject_garbage() {
        let entries: Vec<Hash> = (0..13u8).map(|i| [i; 32]).collect();
        let range = CompactRange::from_entry_hashes(&entries).unwrap();
        assert_eq!(range.hashes().len(), 3); // 13 = 0b1101
        let bytes = range.to_bytes();
        assert_eq!(bytes.len(), 1 + 8 + 3 * 32);
        assert_eq!(CompactRange::from_bytes(&bytes).unwrap(), range);
        assert!(CompactRange::from_bytes(&[]).is_err());
        assert!(CompactRange::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(CompactRange::from_bytes(&[bytes.clone(), vec![0]].concat()).is_err());
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert!(CompactRange::from_bytes(&v2).is_err());
        assert!(CompactRange::from_bytes(&[1, 0xff, 0xff]).is_err());
        // A claimed size of u64::MAX needs 64 hashes; 9 bytes of header alone are rejected.
        let mut huge = vec![1];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(CompactRange::from_bytes(&huge).is_err());
        assert!(CompactRange::from_hashes(13, vec![[0; 32]; 2]).is_err());
    }

    #[test]
    fn append_reports_overflow_instead_of_wrapping() {
        let mut full = CompactRange::from_hashes(u64::MAX, vec![[7; 32]; 64]).unwrap();
        assert_eq!(full.append(&[0; 32]), Err(MerkleError::Overflow));
    }
}
