//! RFC 6962 Merkle tree: known answers and properties.
//!
//! The known answers are the Certificate Transparency reference vectors: eight leaves
//! `"", 00, 10, 2021, 3031, 40414243, 5051525354555657, 606162636465666768696a6b6c6d6e6f`
//! (hex), as used by every RFC 6962 implementation's tests. Reproduce any root with Python's
//! standard library only:
//!
//! ```text
//! python3 -c '
//! import hashlib; H=lambda b: hashlib.sha256(b).digest()
//! L=[bytes.fromhex(x) for x in ["","00","10","2021","3031","40414243","5051525354555657","606162636465666768696a6b6c6d6e6f"]]
//! def mth(d):
//!     if not d: return H(b"")
//!     if len(d)==1: return H(b"\x00"+d[0])
//!     k=1
//!     while k*2<len(d): k*=2
//!     return H(b"\x01"+mth(d[:k])+mth(d[k:]))
//! print(mth(L).hex())'
//! ```

use evalstream_audit::merkle::{
    consistency_proof, consistency_proof_from_leaf_hashes, inclusion_proof,
    inclusion_proof_from_leaf_hashes, leaf_hash, node_hash, root, root_from_leaf_hashes,
    verify_consistency, verify_inclusion, verify_inclusion_leaf_hash, CompactRange, Hash,
    MerkleError, EMPTY_ROOT, LEAF_PREFIX, NODE_PREFIX,
};
use proptest::prelude::*;

fn h(hex_str: &str) -> Hash {
    hex::decode(hex_str).unwrap().try_into().unwrap()
}

const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// `MTH(D[n])` of the CT leaves for n = 0..=8.
const CT_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn ct_leaf_hashes() -> Vec<Hash> {
    CT_LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).unwrap())).collect()
}

#[test]
fn prefixes_are_rfc_6962s() {
    assert_eq!((LEAF_PREFIX, NODE_PREFIX), (0x00, 0x01));
    // `printf '\x00' | sha256sum`
    assert_eq!(
        leaf_hash(b""),
        h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d")
    );
    // Node of two all-zero children:
    // `python3 -c 'import hashlib;print(hashlib.sha256(b"\x01"+bytes(64)).hexdigest())'`
    assert_eq!(
        node_hash(&[0; 32], &[0; 32]),
        h("ae0798d0ecaed2b778eddebf18f071a561c53658c05e76cedecc27cafbdbc577")
    );
    // `printf '' | sha256sum`
    assert_eq!(EMPTY_ROOT, h(CT_ROOTS[0]));
}

#[test]
fn roots_match_the_ct_vectors() {
    let leaves = ct_leaf_hashes();
    for n in 0..=8 {
        assert_eq!(root_from_leaf_hashes(&leaves[..n]), h(CT_ROOTS[n]), "size {n}");
        let mut range = CompactRange::new();
        for l in &leaves[..n] {
            range.append_leaf_hash(*l).unwrap();
        }
        assert_eq!(range.root(), h(CT_ROOTS[n]), "compact range, size {n}");
    }
}

#[test]
fn inclusion_proofs_match_the_ct_vectors() {
    // PATH(m, D[n]) from the CT reference tests.
    let vectors: [(u64, u64, &[&str]); 5] = [
        (0, 1, &[]),
        (
            0,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            8,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
        (
            1,
            5,
            &[
                "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    let leaves = ct_leaf_hashes();
    for (index, size, want) in vectors {
        let proof = inclusion_proof_from_leaf_hashes(&leaves, index, size).unwrap();
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        assert_eq!(proof, want, "PATH({index}, D[{size}])");
        let r = h(CT_ROOTS[size as usize]);
        verify_inclusion_leaf_hash(&leaves[index as usize], index, size, &proof, &r).unwrap();
    }
}

#[test]
fn consistency_proofs_match_the_ct_vectors() {
    let vectors: [(u64, u64, &[&str]); 4] = [
        (1, 1, &[]),
        (
            1,
            8,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    let leaves = ct_leaf_hashes();
    for (old, new, want) in vectors {
        let proof = consistency_proof_from_leaf_hashes(&leaves, old, new).unwrap();
        let want: Vec<Hash> = want.iter().map(|x| h(x)).collect();
        assert_eq!(proof, want, "PROOF({old}, D[{new}])");
        verify_consistency(
            old,
            new,
            &h(CT_ROOTS[old as usize]),
            &h(CT_ROOTS[new as usize]),
            &proof,
        )
        .unwrap();
    }
}

#[test]
fn structural_lies_are_refused() {
    let leaves = ct_leaf_hashes();
    let r8 = h(CT_ROOTS[8]);
    let proof = inclusion_proof_from_leaf_hashes(&leaves, 5, 8).unwrap();
    let leaf = leaves[5];
    assert!(verify_inclusion_leaf_hash(&leaf, 5, 8, &proof, &r8).is_ok());
    assert!(verify_inclusion_leaf_hash(&leaf, 4, 8, &proof, &r8).is_err());
    assert!(verify_inclusion_leaf_hash(&leaves[4], 5, 8, &proof, &r8).is_err());
    assert!(verify_inclusion_leaf_hash(&leaf, 5, 8, &proof, &EMPTY_ROOT).is_err());
    assert_eq!(
        verify_inclusion_leaf_hash(&leaf, 8, 8, &proof, &r8),
        Err(MerkleError::IndexOutOfRange { index: 8, size: 8 })
    );
    assert_eq!(
        verify_inclusion_leaf_hash(&leaf, 5, 8, &proof[..2], &r8),
        Err(MerkleError::ProofLength)
    );
    let mut long = proof.clone();
    long.push(EMPTY_ROOT);
    assert_eq!(verify_inclusion_leaf_hash(&leaf, 5, 8, &long, &r8), Err(MerkleError::ProofLength));
    assert!(verify_inclusion_leaf_hash(&leaf, 0, 0, &[], &EMPTY_ROOT).is_err());

    // Generation rejects impossible arguments instead of panicking.
    assert!(inclusion_proof_from_leaf_hashes(&leaves, 8, 8).is_err());
    assert!(inclusion_proof_from_leaf_hashes(&leaves, 0, 9).is_err());
    assert!(consistency_proof_from_leaf_hashes(&leaves, 9, 8).is_err());
    assert!(consistency_proof_from_leaf_hashes(&leaves, 3, 9).is_err());

    let r6 = h(CT_ROOTS[6]);
    let c = consistency_proof_from_leaf_hashes(&leaves, 6, 8).unwrap();
    assert!(verify_consistency(6, 8, &r6, &r8, &c).is_ok());
    assert!(verify_consistency(6, 8, &r8, &r8, &c).is_err());
    assert!(verify_consistency(5, 8, &r6, &r8, &c).is_err());
    assert!(verify_consistency(6, 8, &r6, &r6, &c).is_err());
    assert!(verify_consistency(6, 8, &r6, &r8, &c[..2]).is_err());
    assert!(verify_consistency(6, 8, &r6, &r8, &[]).is_err());
    assert!(verify_consistency(8, 6, &r8, &r6, &[]).is_err());
    assert!(verify_consistency(8, 8, &r8, &r8, &[]).is_ok());
    assert!(verify_consistency(8, 8, &r8, &r8, &[r8]).is_err());
    assert!(verify_consistency(8, 8, &r6, &r8, &[]).is_err());
    assert!(verify_consistency(0, 8, &EMPTY_ROOT, &r8, &[]).is_ok());
    assert!(verify_consistency(0, 8, &r6, &r8, &[]).is_err());
    // Power-of-two old sizes omit the old root from the proof.
    let r4 = h(CT_ROOTS[4]);
    let c4 = consistency_proof_from_leaf_hashes(&leaves, 4, 8).unwrap();
    assert_eq!(c4, vec![root_from_leaf_hashes(&leaves[4..8])]);
    assert!(verify_consistency(4, 8, &r4, &r8, &c4).is_ok());
}

/// Distinct entry hashes for tests: `SHA-256`-like spread without hashing, cheap.
fn entries(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| {
            let mut e = [0u8; 32];
            e[..8].copy_from_slice(&(i as u64).to_be_bytes());
            e[31] = 0xA5;
            e
        })
        .collect()
}

#[test]
fn compact_range_root_equals_batch_root_for_every_size_up_to_200() {
    let es = entries(200);
    let mut range = CompactRange::new();
    assert_eq!(range.root(), root(&[]));
    for n in 1..=200 {
        assert_eq!(range.append(&es[n - 1]).unwrap(), (n - 1) as u64);
        assert_eq!(range.size(), n as u64);
        assert_eq!(range.hashes().len(), n.count_ones() as usize);
        assert_eq!(range.root(), root(&es[..n]), "size {n}");
        // Resuming from the serialized state or from a checkpoint's hash list is lossless.
        let restored = CompactRange::from_bytes(&range.to_bytes()).unwrap();
        assert_eq!(restored, range);
        let from_list = CompactRange::from_hashes(range.size(), range.hashes().to_vec()).unwrap();
        assert_eq!(from_list, range);
    }
    // Resume in the middle from serialized state and continue: same root as never stopping.
    let stopped = CompactRange::from_entry_hashes(&es[..77]).unwrap();
    let mut resumed = CompactRange::from_bytes(&stopped.to_bytes()).unwrap();
    for e in &es[77..] {
        resumed.append(e).unwrap();
    }
    assert_eq!(resumed.root(), root(&es));
}

#[test]
fn every_inclusion_proof_verifies_and_tampering_fails() {
    let es = entries(70);
    for size in 1..=70u64 {
        let r = root(&es[..size as usize]);
        for index in 0..size {
            let proof = inclusion_proof(&es, index, size).unwrap();
            let e = &es[index as usize];
            verify_inclusion(e, index, size, &proof, &r)
                .unwrap_or_else(|err| panic!("index {index} size {size}: {err}"));
            // Tamper with every proof element, the entry, the index and the root.
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][i % 32] ^= 0x01;
                assert!(verify_inclusion(e, index, size, &bad, &r).is_err());
            }
            let mut bad_entry = *e;
            bad_entry[0] ^= 0x80;
            assert!(verify_inclusion(&bad_entry, index, size, &proof, &r).is_err());
            if size > 1 {
                let other = (index + 1) % size;
                assert!(verify_inclusion(e, other, size, &proof, &r).is_err());
            }
            let mut bad_root = r;
            bad_root[31] ^= 1;
            assert!(verify_inclusion(e, index, size, &proof, &bad_root).is_err());
        }
    }
}

#[test]
fn every_consistency_proof_verifies() {
    let es = entries(40);
    let roots: Vec<Hash> = (0..=40).map(|n| root(&es[..n])).collect();
    for new in 0..=40u64 {
        for old in 0..=new {
            let proof = consistency_proof(&es, old, new).unwrap();
            verify_consistency(old, new, &roots[old as usize], &roots[new as usize], &proof)
                .unwrap_or_else(|err| panic!("{old} -> {new}: {err}"));
            if old > 0 && old < new {
                let mut bad = proof.clone();
                bad[0][0] ^= 1;
                assert!(
                    verify_consistency(old, new, &roots[old as usize], &roots[new as usize], &bad)
                        .is_err(),
                    "{old} -> {new}"
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn proofs_hold_for_random_trees(size in 1u64..600, seed in any::<u64>()) {
        let es: Vec<Hash> = (0..size)
            .map(|i| {
                let mut e = [0u8; 32];
                e[..8].copy_from_slice(&(i ^ seed).to_le_bytes());
                e[8..16].copy_from_slice(&seed.to_be_bytes());
                e
            })
            .collect();
        let r = root(&es);
        prop_assert_eq!(CompactRange::from_entry_hashes(&es).unwrap().root(), r);
        let index = seed % size;
        let proof = inclusion_proof(&es, index, size).unwrap();
        prop_assert!(verify_inclusion(&es[index as usize], index, size, &proof, &r).is_ok());
        let old = seed % (size + 1);
        let c = consistency_proof(&es, old, size).unwrap();
        prop_assert!(verify_consistency(old, size, &root(&es[..old as usize]), &r, &c).is_ok());
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200),
                            index in any::<u64>(), size in any::<u64>()) {
        let _ = CompactRange::from_bytes(&bytes);
        let proof: Vec<Hash> = bytes.chunks(32).filter(|c| c.len() == 32)
            .map(|c| c.try_into().unwrap()).collect();
        let _ = verify_inclusion(&[0; 32], index, size, &proof, &EMPTY_ROOT);
        let _ = verify_consistency(index, size, &EMPTY_ROOT, &EMPTY_ROOT, &proof);
    }
}
