//! Typed views of device memory: the arguments every op reads and writes.
//!
//! A [`Slice`] is `len` elements of a buffer from element `off` (an op's input), a [`SliceMut`]
//! the same for an op's output. Making a view checks nothing; the op that uses it checks it
//! against its buffer ([`Slice::range`]) and against the op's geometry, and answers
//! [`BackendError`] instead of touching memory outside it.

use std::fmt;
use std::ops::Range;

use super::{check_range, BackendError, DeviceBuffer, Result};

/// `len` elements of a buffer from element `off`: what an op reads.
pub struct Slice<'a, T: ?Sized> {
    pub buf: &'a T,
    pub off: usize,
    pub len: usize,
}

/// `len` elements of a buffer from element `off`: what an op writes.
pub struct SliceMut<'a, T: ?Sized> {
    pub buf: &'a mut T,
    pub off: usize,
    pub len: usize,
}

/// An input of an op whose output may be that same input.
pub enum Src<'a, T: ?Sized> {
    /// Read this view (as long as the op's output).
    Slice(Slice<'a, T>),
    /// Read the op's own output: the op runs in place.
    InPlace,
}

/// Views of a whole buffer or of part of it.
pub trait Views: DeviceBuffer + Sized {
    /// The whole buffer.
    fn whole(&self) -> Slice<'_, Self> {
        Slice {
            buf: self,
            off: 0,
            len: self.len(),
        }
    }
    /// `len` elements from `off`.
    fn slice(&self, off: usize, len: usize) -> Slice<'_, Self> {
        Slice {
            buf: self,
            off,
            len,
        }
    }
    /// The elements from `off` to the end (empty when `off` is past it).
    fn tail(&self, off: usize) -> Slice<'_, Self> {
        self.slice(off, self.len().saturating_sub(off))
    }
    /// The whole buffer, to write.
    fn whole_mut(&mut self) -> SliceMut<'_, Self> {
        let len = self.len();
        SliceMut {
            buf: self,
            off: 0,
            len,
        }
    }
    /// `len` elements from `off`, to write.
    fn slice_mut(&mut self, off: usize, len: usize) -> SliceMut<'_, Self> {
        SliceMut {
            buf: self,
            off,
            len,
        }
    }
    /// The elements from `off` to the end, to write.
    fn tail_mut(&mut self, off: usize) -> SliceMut<'_, Self> {
        let len = self.len().saturating_sub(off);
        self.slice_mut(off, len)
    }
}

impl<T: DeviceBuffer> Views for T {}

impl<'a, T: DeviceBuffer + ?Sized> Slice<'a, T> {
    /// The buffer range this view covers, once checked to lie inside the buffer.
    pub fn range(&self, op: &'static str, arg: &'static str) -> Result<Range<usize>> {
        check_range(op, arg, self.buf.len(), self.off, self.len)
    }

    /// The buffer range an op touches in this view, checked as [`touched`] checks it.
    pub fn touched(
        &self,
        op: &'static str,
        arg: &'static str,
        extent: Extent,
    ) -> Result<Range<usize>> {
        touched(op, arg, (self.buf.len(), self.off, self.len), extent)
    }

    /// `len` elements from `off` within this view: checked against the view here, so a part
    /// never reaches past the whole it was cut from.
    pub fn part(self, off: usize, len: usize) -> Slice<'a, T> {
        let (off, len) = part_of(self.off, self.len, off, len);
        Slice {
            buf: self.buf,
            off,
            len,
        }
    }

    /// This view as an op input.
    pub fn src(self) -> Src<'a, T> {
        Src::Slice(self)
    }
}

impl<'a, T: DeviceBuffer + ?Sized> SliceMut<'a, T> {
    /// The buffer range this view covers, once checked to lie inside the buffer.
    pub fn range(&self, op: &'static str, arg: &'static str) -> Result<Range<usize>> {
        check_range(op, arg, self.buf.len(), self.off, self.len)
    }

    /// The buffer range an op touches in this view, checked as [`touched`] checks it.
    pub fn touched(
        &self,
        op: &'static str,
        arg: &'static str,
        extent: Extent,
    ) -> Result<Range<usize>> {
        touched(op, arg, (self.buf.len(), self.off, self.len), extent)
    }

    /// `len` elements from `off` within this view, as [`Slice::part`].
    pub fn part(self, off: usize, len: usize) -> SliceMut<'a, T> {
        let (off, len) = part_of(self.off, self.len, off, len);
        SliceMut {
            buf: self.buf,
            off,
            len,
        }
    }

    /// The same view, borrowed again: for passing it to an op without giving it up.
    pub fn reborrow(&mut self) -> SliceMut<'_, T> {
        SliceMut {
            buf: &mut *self.buf,
            off: self.off,
            len: self.len,
        }
    }

    /// The same elements, to read.
    pub fn as_slice(&self) -> Slice<'_, T> {
        Slice {
            buf: &*self.buf,
            off: self.off,
            len: self.len,
        }
    }
}

/// The offset and length of `off..off + len` within a view at `base` of `whole` elements. A
/// part reaching past the view is cut to an empty view past the buffer's end, so the op using
/// it reports it out of bounds.
fn part_of(base: usize, whole: usize, off: usize, len: usize) -> (usize, usize) {
    match off.checked_add(len) {
        Some(end) if end <= whole => (base + off, len),
        _ => (usize::MAX, len),
    }
}

impl<T: ?Sized> Clone for Slice<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Slice<'_, T> {}

impl<T: ?Sized> Clone for Src<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Src<'_, T> {}

impl<'a, T: ?Sized> From<Slice<'a, T>> for Src<'a, T> {
    fn from(slice: Slice<'a, T>) -> Self {
        Src::Slice(slice)
    }
}

impl<T: ?Sized> fmt::Debug for Slice<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slice({}..+{})", self.off, self.len)
    }
}

impl<T: ?Sized> fmt::Debug for SliceMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SliceMut({}..+{})", self.off, self.len)
    }
}

impl<T: ?Sized> fmt::Debug for Src<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Src::Slice(s) => write!(f, "Src::{s:?}"),
            Src::InPlace => f.write_str("Src::InPlace"),
        }
    }
}

impl<'a, T: DeviceBuffer + ?Sized> Src<'a, T> {
    /// The view this input reads, for an op writing `out`; an in-place input is `None`. A view
    /// of another length than the output is refused.
    pub fn resolve(
        self,
        op: &'static str,
        arg: &'static str,
        out: usize,
    ) -> Result<Option<Slice<'a, T>>> {
        match self {
            Src::InPlace => Ok(None),
            Src::Slice(s) if s.len == out => Ok(Some(s)),
            Src::Slice(s) => Err(length_mismatch(op, arg, s.len, out)),
        }
    }
}

/// How much of a view an op touches, which the view must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// All of it: an element-wise op's output, whose length is the op's.
    Whole,
    /// All of it, and it must be this long: an element-wise op's input.
    Exactly(usize),
    /// Its first elements, at least this many: what a geometry addresses from its start.
    AtLeast(usize),
}

/// The buffer range an op touches in the view of `len` elements at `off` of a buffer of
/// `buf_len`: checked to lie inside the buffer and to hold what `extent` says. The one view
/// check both backends make.
pub fn touched(
    op: &'static str,
    arg: &'static str,
    (buf_len, off, len): (usize, usize, usize),
    extent: Extent,
) -> Result<Range<usize>> {
    let range = check_range(op, arg, buf_len, off, len)?;
    match extent {
        Extent::Whole => Ok(range),
        Extent::Exactly(want) if len == want => Ok(range),
        Extent::Exactly(want) => Err(length_mismatch(op, arg, len, want)),
        Extent::AtLeast(want) if len >= want => Ok(range.start..range.start + want),
        Extent::AtLeast(want) => Err(super::invalid(
            op,
            format!("{arg} has {len} elements, the op needs at least {want}"),
        )),
    }
}

/// The error for an input of `len` elements where the op needs `want`.
pub fn length_mismatch(
    op: &'static str,
    arg: &'static str,
    len: usize,
    want: usize,
) -> BackendError {
    super::invalid(op, format!("{arg} has {len} elements, the op needs {want}"))
}

/// A tensor seen around one axis as `outer x dim x inner`, row-major: element `(o, c, j)` is at
/// `(o dim + c) inner + j` (`outer` = the count of the axes before, `inner` of those after, as
/// upstream's softmax computes them). Per-channel ops read it as `outer x channels x inner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    pub outer: usize,
    pub dim: usize,
    pub inner: usize,
}

impl Axis {
    pub fn new(outer: usize, dim: usize, inner: usize) -> Self {
        Self { outer, dim, inner }
    }

    /// `outer dim inner`, the elements of the whole tensor.
    pub fn len(&self, op: &'static str) -> Result<usize> {
        self.reduced_len(op)?
            .checked_mul(self.dim)
            .ok_or_else(|| super::invalid(op, format!("{self:?} overflows usize")))
    }

    /// `outer inner`, the elements left once the axis is reduced.
    pub fn reduced_len(&self, op: &'static str) -> Result<usize> {
        self.outer
            .checked_mul(self.inner)
            .ok_or_else(|| super::invalid(op, format!("{self:?} overflows usize")))
    }
}

/// The gradients a convolution's backward pass writes: the weights' (added to) and the
/// input's (overwritten), each only when wanted.
pub struct ConvGrads<'a, T: ?Sized> {
    pub dw: Option<SliceMut<'a, T>>,
    pub dx: Option<SliceMut<'a, T>>,
}

/// What an LRN forward pass keeps for its backward pass: its input `x`, its output `y` and the
/// normaliser `scale` (WITHIN_CHANNEL: the window mean and the power, in `y` and `scale`).
pub struct LrnSaved<'a, T: ?Sized> {
    pub x: Slice<'a, T>,
    pub y: Slice<'a, T>,
    pub scale: Slice<'a, T>,
}

/// Class labels stored as f32 values (as Caffe stores them), and the label to skip.
pub struct Labels<'a, T: ?Sized> {
    pub values: Slice<'a, T>,
    pub ignore_label: Option<i32>,
}

impl<T: ?Sized> Clone for Labels<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: ?Sized> Copy for Labels<'_, T> {}
