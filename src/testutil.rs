//! Helpers shared by unit tests.

/// A small deterministic pseudo-random generator (xorshift64) for the
/// property tests that hold a fast routine to the one it replaced: the same
/// inputs on every run, so a failure reproduces.
pub(crate) fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// `n` byte strings of up to `max_len - 1` bytes drawn from `alphabet`
/// (repeat a byte there to draw it more often), the same on every run.
pub(crate) fn random_strings(
    seed: u64,
    alphabet: &'static [u8],
    max_len: u64,
    n: usize,
) -> impl Iterator<Item = Vec<u8>> {
    let mut next = xorshift(seed);
    (0..n).map(move |_| {
        let len = next() % max_len;
        (0..len)
            .map(|_| {
                let i = usize::try_from(next() % alphabet.len() as u64).unwrap_or(0);
                alphabet.get(i).copied().unwrap_or(b'a')
            })
            .collect()
    })
}
