//! Counter-based random streams: Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel
//! random numbers: as easy as 1, 2, 3", SC 2011). Every output is a pure function of a key and
//! a counter, so a draw runs in parallel, gives the same values on every backend
//! (`kernels/random.cu` computes the same function on the GPU), and a recorded CUDA graph,
//! whose kernels read the stream's state from device memory, draws anew on each replay.
//!
//! A stream's state is [`STATE_LEN`] elements of a buffer holding `u32` bit patterns:
//! `{key0, key1, draw_lo, draw_hi}`. Element `i` of a draw is word `i % 4` of
//! `philox(counter = {i / 4, 0, draw_lo, draw_hi}, key)`; each draw then advances the draw
//! counter by one.

use super::{invalid, Result};

/// Elements of a stream's state.
pub const STATE_LEN: usize = 4;

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds.
pub fn philox4x32_10(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = counter;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let p0 = u64::from(M0) * u64::from(c0);
        let p1 = u64::from(M1) * u64::from(c2);
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0);
    }
    [c0, c1, c2, c3]
}

/// The state of a new stream keyed by `key`, at draw 0.
pub fn new_state(key: u64) -> [f32; STATE_LEN] {
    [key as u32, (key >> 32) as u32, 0, 0].map(f32::from_bits)
}

/// The number of groups of 4 in a draw of `n` elements, which the counter numbers with a `u32`.
pub(crate) fn group_count(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n.div_ceil(4))
        .map_err(|_| invalid(op, format!("{n} elements exceed a random stream's counter")))
}

/// A stream's key and draw counter.
pub(crate) fn read_state(state: &[f32]) -> ([u32; 2], [u32; 2]) {
    let word = |i: usize| state[i].to_bits();
    ([word(0), word(1)], [word(2), word(3)])
}

/// Advances the draw counter by one.
pub(crate) fn advance(state: &mut [f32]) {
    let ([_, _], [lo, hi]) = read_state(state);
    let (lo, carry) = lo.overflowing_add(1);
    state[2] = f32::from_bits(lo);
    state[3] = f32::from_bits(hi.wrapping_add(u32::from(carry)));
}

/// The four uniform draws on `[0, 1)` (24 random bits each, as the CPU backend's other fills)
/// of elements `4 group .. 4 group + 4` of draw `draw`.
pub(crate) fn uniform_group(key: [u32; 2], draw: [u32; 2], group: u32) -> [f32; 4] {
    philox4x32_10([group, 0, draw[0], draw[1]], key)
        .map(|w| (w >> 8) as f32 * (1.0 / (1u32 << 24) as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random123's known-answer vectors (`tests/kat_vectors`, the three `philox4x32 10` lines).
    #[test]
    fn philox_matches_the_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }

    #[test]
    fn the_draw_counter_carries_into_its_high_word() {
        let mut state = new_state(0x1234_5678_9abc_def0);
        assert_eq!(read_state(&state), ([0x9abc_def0, 0x1234_5678], [0, 0]));
        state[2] = f32::from_bits(u32::MAX);
        advance(&mut state);
        assert_eq!(read_state(&state).1, [0, 1]);
        advance(&mut state);
        assert_eq!(read_state(&state), ([0x9abc_def0, 0x1234_5678], [1, 1]));
    }
}
