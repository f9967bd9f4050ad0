//! Element-wise maps over slices, in place or not, chunked for the pool.
//!
//! Every output element is computed from the inputs at the same index only, so the result does
//! not depend on how the work is split.

use super::Par;

/// An input of a map: another slice (same length as the output) or the output itself.
#[derive(Clone, Copy)]
pub(super) enum Operand<'a> {
    /// Read the output's own values (in place).
    Same,
    /// Read this slice, index-aligned with the output.
    Slice(&'a [f32]),
}

/// `y[i] = f(x[i])`.
pub(super) fn map1<F>(par: Par<'_>, x: Operand<'_>, y: &mut [f32], f: F)
where
    F: Fn(f32) -> f32 + Sync + Send,
{
    par.chunks_mut(y, |start, yc| match x {
        Operand::Same => yc.iter_mut().for_each(|v| *v = f(*v)),
        Operand::Slice(x) => {
            let x = &x[start..start + yc.len()];
            yc.iter_mut().zip(x).for_each(|(v, &a)| *v = f(a));
        }
    });
}

/// `y[i] = f(a[i], b[i])`.
pub(super) fn map2<F>(par: Par<'_>, a: Operand<'_>, b: Operand<'_>, y: &mut [f32], f: F)
where
    F: Fn(f32, f32) -> f32 + Sync + Send,
{
    par.chunks_mut(y, |start, yc| {
        let end = start + yc.len();
        match (a, b) {
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
        }
    });
}

/// `y[i] = f(a[i], b[i], c[i])` with `a`, `b` plain inputs and `c` possibly the output itself.
pub(super) fn map3<F>(par: Par<'_>, a: &[f32], b: &[f32], c: Operand<'_>, y: &mut [f32], f: F)
where
    F: Fn(f32, f32, f32) -> f32 + Sync + Send,
{
    par.chunks_mut(y, |start, yc| {
        let end = start + yc.len();
        let ab = a[start..end].iter().zip(&b[start..end]);
        match c {
            Operand::Same => yc
                .iter_mut()
                .zip(ab)
                .for_each(|(v, (&p, &q))| *v = f(p, q, *v)),
            Operand::Slice(c) => yc
                .iter_mut()
                .zip(ab.zip(&c[start..end]))
                .for_each(|(v, ((&p, &q), &r))| *v = f(p, q, r)),
        }
    });
}
