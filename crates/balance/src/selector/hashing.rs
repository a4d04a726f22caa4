//! Hash functions shared by the hashing selectors. Both are stable across
//! processes, platforms and versions — a key must map to the same backend
//! on every proxy of a fleet and after every restart — so neither uses
//! std's randomly seeded hasher.

/// SplitMix64's finaliser: a fast bijective mixer, so poorly distributed
/// request keys (small integers, similar strings) still spread evenly.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A 64-bit hash of a backend address and a salt (replica number,
/// permutation parameter): FNV-1a over the bytes, then mixed with the salt.
pub fn hash_address(address: &str, salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in address.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h ^ mix64(salt))
}
