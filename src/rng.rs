//! Deterministic randomness from explicit seeds: the same streams on every machine (the standard
//! library's hashers are randomly keyed), so splits, data order and augmentation reproduce exactly and a
//! resumed run redraws what it drew before.

/// Mixes `parts` into `seed`, e.g. (run seed, epoch, sample index) into the
/// seed of one training sample, so a resumed run redraws the same crops.
pub fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(seed, |h, &p| SplitMix64(h ^ SplitMix64(p).next_u64()).next_u64())
}

/// SplitMix64 (Steele et al.): tiny, portable, and the same stream on every
/// machine, unlike the standard library's randomly keyed hashers.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below n / 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Fisher-Yates.
pub fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// A permutation of `0..n` drawn from `seed`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut SplitMix64(seed));
    order
}
