//! Run-time selection of the AVX2 instruction set for the hand-written loops.
//!
//! The crate is built for the baseline x86-64 (SSE2), so a loop compiled normally moves and
//! adds four floats at a time. Hot loops run through [`with_simd`], which inlines them into a
//! function compiled with AVX2 enabled when the CPU has it. The loops spell out their order of
//! operations and never ask for fused multiply-adds, so the result is the same bits either way.

/// Whether the CPU has AVX2 (false off x86-64).
pub(super) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the CPU has AVX2 and FMA (false off x86-64).
pub(super) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    return has_avx2() && std::arch::is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `f` with AVX2 enabled when the CPU supports it, else as it is.
///
/// Callers mark the closure `#[inline(always)]`: LLVM leaves a closure with a few loops out of
/// line otherwise, compiled for the baseline, and the AVX2 wrapper then only calls it.
#[inline(always)]
pub(super) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        if has_avx2() {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// `dst = src` for im2col's short rows (8 to 64 floats), as whole 8-float
/// blocks and a tail: a call to `memcpy` per row costs more than the copy itself.
#[inline(always)]
pub(super) fn copy_short(dst: &mut [f32], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (a, b) in (&mut d).zip(&mut s) {
        let block: [f32; 8] = b.try_into().expect("8-float block");
        a.copy_from_slice(&block);
    }
    for (a, &b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = b;
    }
}

/// `dst += src`, element by element (each sum a single rounding, as a scalar loop).
#[inline(always)]
pub(super) fn add_short(dst: &mut [f32], src: &[f32]) {
    debug_assert_eq!(dst.len(), src.len());
    dst.iter_mut().zip(src).for_each(|(a, &b)| *a += b);
}
