//! What the crate's unit tests share.

/// A small deterministic generator (xorshift64): a test's cases replay from its seed, without a
/// dependency for randomness.
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed`; any seed works (xorshift's state must not be zero, so the low bit is set).
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
