//! Production's rules on secrets: the hashing cost's variable and the token secret's
//! length and entropy.

use std::collections::BTreeMap;

/// The variable that names the password hashing cost.
pub const PASSWORD_HASH_COST: &str = "PASSWORD_HASH_COST";

/// The shortest token secret production accepts.
pub const MIN_SECRET_LEN: usize = 32;

/// The least entropy production accepts in a token secret, estimated from the frequency of
/// its characters (32 hexadecimal digits from `openssl rand -hex 16` hold about 110 bits by
/// this estimate; 32 times the same letter none).
pub const MIN_SECRET_BITS: f64 = 96.0;

/// An estimate of the entropy of `secret`, in bits: its length times the Shannon entropy of
/// the frequencies of its characters. It cannot see every pattern (`abcabc...` passes), but
/// it refuses the repeated and near-constant secrets a person types.
pub fn secret_bits(secret: &str) -> f64 {
    let mut counts: BTreeMap<char, usize> = BTreeMap::new();
    for c in secret.chars() {
        *counts.entry(c).or_default() += 1;
    }
    let total = secret.chars().count() as f64;
    let per_char: f64 = counts
        .values()
        .map(|&n| {
            let p = n as f64 / total;
            -p * p.log2()
        })
        .sum();
    per_char * total
}
