//! Element-wise maps over slices, in place or not, chunked for the pool.
//!
//! Every output element is computed from the inputs at the same index only, so the result does
//! not depend on how the work is split, nor on the instruction set the loops are compiled for
//! ([`with_simd`]: AVX2's selects and eight-wide arithmetic where the CPU has them).

use super::simd::with_simd;
use super::Par;

/// An input of a map: another slice (same length as the output) or the output itself.
#[derive(Clone, Copy)]
pub(super) enum Operand<'a> {
    /// Read the output's own values (in place).
    Same,
    /// Read this slice, index-aligned with the output.
    Slice(&'a [f32]),
}

/// A copy of the element function on the task's own stack. The loops read its captured
/// values (a slope, a scale) from there; read through a reference to the caller's copy, they
/// might alias the output as far as the compiler can tell, which keeps it from vectorising
/// the loop. So the maps take `Copy` functions, and their callers `move` closures.
#[inline(always)]
pub(super) fn local<F: Copy>(f: F) -> F {
    f
}

/// `y[i] = f(x[i])`.
pub(super) fn map1<F>(par: Par<'_>, x: Operand<'_>, y: &mut [f32], f: F)
where
    F: Fn(f32) -> f32 + Copy + Sync + Send,
{
    par.chunks_mut(y, |start, yc| {
        let f = local(f);
        with_simd(
            #[inline(always)]
            || match x {
                Operand::Same => yc.iter_mut().for_each(|v| *v = f(*v)),
                Operand::Slice(x) => {
                    let x = &x[start..start + yc.len()];
                    yc.iter_mut().zip(x).for_each(|(v, &a)| *v = f(a));
                }
            },
        )
    });
}

/// `y[i] = f(a[i], b[i])`.
pub(super) fn map2<F>(par: Par<'_>, a: Operand<'_>, b: Operand<'_>, y: &mut [f32], f: F)
where
    F: Fn(f32, f32) -> f32 + Copy + Sync + Send,
{
    par.chunks_mut(y, |start, yc| {
        let f = local(f);
        let end = start + yc.len();
        with_simd(
            #[inline(always)]
            || match (a, b) {
                (Operand::Same, Operand::Same) => yc.iter_mut().for_each(|v| *v = f(*v, *v)),
                (Operand::Same, Operand::Slice(b)) => yc
                    .iter_mut()
                    .zip(&b[start..end])
                    .for_each(|(v, &q)| *v = f(*v, q)),
                (Operand::Slice(a), Operand::Same) => yc
                    .iter_mut()
                    .zip(&a[start..end])
                    .for_each(|(v, &p)| *v = f(p, *v)),
                (Operand::Slice(a), Operand::Slice(b)) => yc
                    .iter_mut()
                    .zip(a[start..end].iter().zip(&b[start..end]))
                    .for_each(|(v, (&p, &q))| *v = f(p, q)),
            },
        )
    });
}

/// `y[i] = f(a[i], b[i], c[i])` with `a`, `b` plain inputs and `c` possibly the output itself.
pub(super) fn map3<F>(par: Par<'_>, a: &[f32], b: &[f32], c: Operand<'_>, y: &mut [f32], f: F)
where
    F: Fn(f32, f32, f32) -> f32 + Copy + Sync + Send,
{
    par.chunks_mut(y, |start, yc| {
        let f = local(f);
        let end = start + yc.len();
        let ab = a[start..end].iter().zip(&b[start..end]);
        with_simd(
            #[inline(always)]
            || match c {
                Operand::Same => yc
                    .iter_mut()
                    .zip(ab)
                    .for_each(|(v, (&p, &q))| *v = f(p, q, *v)),
                Operand::Slice(c) => yc
                    .iter_mut()
                    .zip(ab.zip(&c[start..end]))
                    .for_each(|(v, ((&p, &q), &r))| *v = f(p, q, r)),
            },
        )
    });
}
