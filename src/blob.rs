//! The Blob: an N-D shape with a data and a diff buffer on one backend
//! (upstream: include/caffe/blob.hpp, src/caffe/blob.cpp).

use crate::backend::{
    Backend, BackendError, CpuBackend, Reduction, Scalar, Slice, SliceMut, Src, Views,
};
use crate::proto::caffe::{BlobProto, BlobShape};

/// The most axes a blob may have, as upstream's `kMaxBlobAxes`.
pub const MAX_BLOB_AXES: usize = 32;

/// The largest element count a blob may hold: upstream's limit (`INT_MAX`), which also keeps
/// every index of a device kernel inside an `i32`.
pub const MAX_BLOB_COUNT: usize = i32::MAX as usize;

/// What can go wrong shaping, indexing or (de)serialising a blob. Shapes are written as
/// [`Blob::shape_string`] writes them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BlobError {
    #[error("axis {axis} out of range for {num_axes}-D blob with shape {shape}")]
    AxisOutOfRange {
        axis: isize,
        num_axes: usize,
        shape: String,
    },
    #[error("blob shape {shape} has {axes} axes; at most {MAX_BLOB_AXES} are supported")]
    TooManyAxes { axes: usize, shape: String },
    #[error("blob shape {shape} holds more than {MAX_BLOB_COUNT} elements")]
    CountOverflow { shape: String },
    #[error("cannot use legacy accessors (num/channels/height/width) on blob with shape {shape}: more than 4 axes")]
    LegacyAxes { shape: String },
    #[error("legacy axis index {index} is outside [-4, 3]")]
    LegacyIndex { index: isize },
    #[error("count({start}, {end}) is invalid for {num_axes}-D blob with shape {shape}")]
    CountRange {
        start: usize,
        end: usize,
        num_axes: usize,
        shape: String,
    },
    #[error("index {indices:?} is outside blob with shape {shape}")]
    IndexOutOfRange { indices: Vec<usize>, shape: String },
    #[error("shape mismatch: {context}: expected {expected}, found {found}")]
    ShapeMismatch {
        context: &'static str,
        expected: String,
        found: String,
    },
    #[error("{what} has {found} values but the blob with shape {shape} needs {expected}")]
    DataLength {
        what: &'static str,
        found: usize,
        expected: usize,
        shape: String,
    },
    #[error("BlobProto has invalid dimension {dim} in shape {shape}")]
    InvalidDim { dim: i64, shape: String },
    /// The memory for a blob's data or diff cannot be had. `blob` is "blob 'name'" for a blob
    /// of the net, "a blob" for one without a name.
    #[error("out of memory: the {buffer} of {blob} ({shape}) needs {bytes} bytes")]
    OutOfMemory {
        buffer: &'static str,
        blob: String,
        shape: String,
        bytes: u128,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Result of a blob operation.
pub type Result<T> = std::result::Result<T, BlobError>;

/// Writes a shape as upstream's `shape_string`: each dimension followed by a space, then the
/// count in parentheses, e.g. `"64 1 28 28 (50176)"`.
pub fn shape_string(shape: &[usize], count: usize) -> String {
    let mut s = String::new();
    for d in shape {
        s.push_str(&d.to_string());
        s.push(' ');
    }
    s.push_str(&format!("({count})"));
    s
}

/// The element count of a shape, checked against [`MAX_BLOB_AXES`] and [`MAX_BLOB_COUNT`].
pub fn checked_count(shape: &[usize]) -> Result<usize> {
    let display = || {
        let dims: String = shape.iter().map(|d| format!("{d} ")).collect();
        let count = shape
            .iter()
            .fold(1u128, |a, &d| a.saturating_mul(d as u128));
        format!("{dims}({count})")
    };
    if shape.len() > MAX_BLOB_AXES {
        return Err(BlobError::TooManyAxes {
            axes: shape.len(),
            shape: display(),
        });
    }
    let mut count = 1usize;
    for &d in shape {
        count = count
            .checked_mul(d)
            .filter(|&c| c <= MAX_BLOB_COUNT)
            .ok_or_else(|| BlobError::CountOverflow { shape: display() })?;
    }
    Ok(count)
}

/// Shape, data and diff of one blob, living on one backend.
///
/// The buffers are `capacity` elements long; a reshape to a count within the capacity keeps
/// them (and their values), a larger one replaces both with zeroed buffers.
pub struct Blob<B: Backend> {
    backend: B,
    /// The net's name for the blob, for errors; `None` for a layer's own blobs.
    name: Option<String>,
    shape: Vec<usize>,
    count: usize,
    capacity: usize,
    data: B::Buffer,
    diff: B::Buffer,
}

impl<B: Backend> std::fmt::Debug for Blob<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} on {})", self.shape_string(), B::NAME)
    }
}

impl<B: Backend> Blob<B> {
    /// A blob with no shape and no elements (upstream's default-constructed `Blob`: `count` 0
    /// until the first reshape; reshaping to `[]` then gives a scalar of count 1).
    pub fn empty(backend: &B) -> Result<Self> {
        Ok(Self {
            backend: backend.clone(),
            name: None,
            shape: Vec::new(),
            count: 0,
            capacity: 0,
            data: backend.alloc(0)?,
            diff: backend.alloc(0)?,
        })
    }

    /// A blob of `shape`, data and diff zeroed.
    pub fn new(backend: &B, shape: &[usize]) -> Result<Self> {
        let mut blob = Self::empty(backend)?;
        blob.reshape(shape)?;
        Ok(blob)
    }

    /// A blob shaped and filled from a `BlobProto` (see [`Blob::from_proto`]).
    pub fn new_from_proto(backend: &B, proto: &BlobProto) -> Result<Self> {
        let mut blob = Self::empty(backend)?;
        blob.from_proto(proto, true)?;
        Ok(blob)
    }

    /// A blob of the legacy 4-D shape `(num, channels, height, width)`.
    pub fn new_legacy(
        backend: &B,
        num: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Self> {
        Self::new(backend, &[num, channels, height, width])
    }

    /// Names the blob in its errors (the net names each blob it holds).
    pub fn set_name(&mut self, name: &str) {
        self.name = Some(name.to_string());
    }

    /// Changes the shape. Buffers are reallocated (zeroed; old values lost) only when the new
    /// count exceeds the capacity; otherwise they are kept as they are.
    pub fn reshape(&mut self, shape: &[usize]) -> Result<()> {
        let count = checked_count(shape)?;
        if count > self.capacity {
            // Both or neither: a diff that cannot be had leaves the blob as it was.
            let data = self.alloc("data", shape, count)?;
            let diff = self.alloc("diff", shape, count)?;
            self.data = data;
            self.diff = diff;
            self.capacity = count;
        }
        self.shape.clear();
        self.shape.extend_from_slice(shape);
        self.count = count;
        Ok(())
    }

    /// A `count`-element buffer for the `buffer` ("data", "diff") of shape `shape`; memory that
    /// cannot be had is an error naming the blob.
    fn alloc(&self, buffer: &'static str, shape: &[usize], count: usize) -> Result<B::Buffer> {
        self.backend.alloc(count).map_err(|error| match error {
            BackendError::OutOfMemory { bytes, .. } => BlobError::OutOfMemory {
                buffer,
                blob: self
                    .name
                    .as_ref()
                    .map_or_else(|| "a blob".to_string(), |name| format!("blob '{name}'")),
                shape: shape_string(shape, count),
                bytes,
            },
            other => other.into(),
        })
    }

    /// Reshapes to the legacy 4-D shape `(num, channels, height, width)`.
    pub fn reshape_legacy(
        &mut self,
        num: usize,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<()> {
        self.reshape(&[num, channels, height, width])
    }

    /// Reshapes to a `BlobShape` message.
    pub fn reshape_proto(&mut self, shape: &BlobShape) -> Result<()> {
        self.reshape(&dims_from_proto(&shape.dim)?)
    }

    /// Reshapes to another blob's shape.
    pub fn reshape_like<C: Backend>(&mut self, other: &Blob<C>) -> Result<()> {
        self.reshape(other.shape())
    }

    /// The backend the buffers live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The dimensions, outermost first.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The dimension of axis `index` (negative counts from the end).
    pub fn shape_at(&self, index: isize) -> Result<usize> {
        Ok(self.shape[self.canonical_axis_index(index)?])
    }

    /// Number of axes.
    pub fn num_axes(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Elements the buffers can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Product of the dimensions of axes `start..end`; needs `start <= end <= num_axes`.
    pub fn count_range(&self, start: usize, end: usize) -> Result<usize> {
        if start > end || end > self.num_axes() {
            return Err(BlobError::CountRange {
                start,
                end,
                num_axes: self.num_axes(),
                shape: self.shape_string(),
            });
        }
        Ok(self.shape[start..end].iter().product())
    }

    /// Product of the dimensions from axis `start` to the last.
    pub fn count_from(&self, start: usize) -> Result<usize> {
        self.count_range(start, self.num_axes())
    }

    /// Upstream's `CanonicalAxisIndex`: `0 <= index < num_axes` stays, `-num_axes <= index < 0`
    /// counts from the end (`-1` is the last axis); anything else is an error.
    pub fn canonical_axis_index(&self, index: isize) -> Result<usize> {
        let n = self.num_axes() as isize;
        if index < -n || index >= n {
            return Err(BlobError::AxisOutOfRange {
                axis: index,
                num_axes: self.num_axes(),
                shape: self.shape_string(),
            });
        }
        Ok(if index < 0 { index + n } else { index } as usize)
    }

    /// Upstream's `LegacyShape`: for blobs of at most 4 axes, the dimension of `index` in
    /// `-4..4`, or 1 where the blob has no such axis (legacy blobs were padded with ones).
    pub fn legacy_shape(&self, index: isize) -> Result<usize> {
        if self.num_axes() > 4 {
            return Err(BlobError::LegacyAxes {
                shape: self.shape_string(),
            });
        }
        if !(-4..4).contains(&index) {
            return Err(BlobError::LegacyIndex { index });
        }
        let n = self.num_axes() as isize;
        if index >= n || index < -n {
            return Ok(1);
        }
        self.shape_at(index)
    }

    /// Legacy `num`: `legacy_shape(0)`.
    pub fn num(&self) -> Result<usize> {
        self.legacy_shape(0)
    }
    /// Legacy `channels`: `legacy_shape(1)`.
    pub fn channels(&self) -> Result<usize> {
        self.legacy_shape(1)
    }
    /// Legacy `height`: `legacy_shape(2)`.
    pub fn height(&self) -> Result<usize> {
        self.legacy_shape(2)
    }
    /// Legacy `width`: `legacy_shape(3)`.
    pub fn width(&self) -> Result<usize> {
        self.legacy_shape(3)
    }

    /// Upstream's 4-D `offset(n, c, h, w)`: `((n C + c) H + h) W + w` with legacy dimensions.
    /// Each index may equal its dimension (so `offset(num, 0, 0, 0)` is the end), as upstream.
    pub fn offset(&self, n: usize, c: usize, h: usize, w: usize) -> Result<usize> {
        let (num, ch, he, wi) = (self.num()?, self.channels()?, self.height()?, self.width()?);
        if n > num || c > ch || h > he || w > wi {
            return Err(BlobError::IndexOutOfRange {
                indices: vec![n, c, h, w],
                shape: self.shape_string(),
            });
        }
        Ok(((n * ch + c) * he + h) * wi + w)
    }

    /// Row-major offset of the leading `indices` (missing trailing indices are 0); each index
    /// must be below its dimension.
    pub fn offset_of(&self, indices: &[usize]) -> Result<usize> {
        let bad = || BlobError::IndexOutOfRange {
            indices: indices.to_vec(),
            shape: self.shape_string(),
        };
        if indices.len() > self.num_axes() {
            return Err(bad());
        }
        let mut offset = 0;
        for (axis, &dim) in self.shape.iter().enumerate() {
            offset *= dim;
            if let Some(&i) = indices.get(axis) {
                if i >= dim {
                    return Err(bad());
                }
                offset += i;
            }
        }
        Ok(offset)
    }

    /// The shape as upstream prints it: `"64 1 28 28 (50176)"`.
    pub fn shape_string(&self) -> String {
        shape_string(&self.shape, self.count)
    }

    /// The data buffer (the first `count` elements are the blob's).
    pub fn data(&self) -> &B::Buffer {
        &self.data
    }
    /// The diff buffer.
    pub fn diff(&self) -> &B::Buffer {
        &self.diff
    }
    /// The data buffer, writable.
    pub fn data_mut(&mut self) -> &mut B::Buffer {
        &mut self.data
    }
    /// The diff buffer, writable.
    pub fn diff_mut(&mut self) -> &mut B::Buffer {
        &mut self.diff
    }
    /// Both buffers at once, writable: `(data, diff)`.
    pub fn data_diff_mut(&mut self) -> (&mut B::Buffer, &mut B::Buffer) {
        (&mut self.data, &mut self.diff)
    }
    /// The data's `count` elements, as an op input (the buffer may hold more: its capacity).
    pub fn data_view(&self) -> Slice<'_, B::Buffer> {
        self.data.slice(0, self.count)
    }
    /// The diff's `count` elements, as an op input.
    pub fn diff_view(&self) -> Slice<'_, B::Buffer> {
        self.diff.slice(0, self.count)
    }
    /// The data's `count` elements, as an op output.
    pub fn data_view_mut(&mut self) -> SliceMut<'_, B::Buffer> {
        self.data.slice_mut(0, self.count)
    }
    /// The diff's `count` elements, as an op output.
    pub fn diff_view_mut(&mut self) -> SliceMut<'_, B::Buffer> {
        self.diff.slice_mut(0, self.count)
    }
    /// The data to read and the diff to write at once: a gradient computed from the data.
    pub fn data_and_diff_mut(&mut self) -> (Slice<'_, B::Buffer>, SliceMut<'_, B::Buffer>) {
        (
            self.data.slice(0, self.count),
            self.diff.slice_mut(0, self.count),
        )
    }

    fn check_len(&self, what: &'static str, found: usize) -> Result<()> {
        if found != self.count {
            return Err(BlobError::DataLength {
                what,
                found,
                expected: self.count,
                shape: self.shape_string(),
            });
        }
        Ok(())
    }

    /// Uploads `values` (exactly `count` of them) into the data.
    pub fn set_data(&mut self, values: &[f32]) -> Result<()> {
        self.check_len("data", values.len())?;
        self.backend
            .upload(values, self.data.slice_mut(0, self.count))?;
        Ok(())
    }
    /// Uploads `values` (exactly `count` of them) into the diff.
    pub fn set_diff(&mut self, values: &[f32]) -> Result<()> {
        self.check_len("diff", values.len())?;
        self.backend
            .upload(values, self.diff.slice_mut(0, self.count))?;
        Ok(())
    }
    /// Downloads the data.
    pub fn data_to_vec(&self) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.count];
        self.backend.download(self.data_view(), &mut v)?;
        Ok(v)
    }
    /// Downloads the diff.
    pub fn diff_to_vec(&self) -> Result<Vec<f32>> {
        let mut v = vec![0.0; self.count];
        self.backend.download(self.diff_view(), &mut v)?;
        Ok(v)
    }

    /// Upstream's `Update`: `data -= diff`.
    pub fn update(&mut self) -> Result<()> {
        let diff = self.diff.slice(0, self.count);
        let data = self.data.slice_mut(0, self.count);
        self.backend.axpby(Scalar::Value(-1.0), diff, 1.0, data)?;
        Ok(())
    }
    /// Sum of absolute values of the data.
    pub fn asum_data(&self) -> Result<f32> {
        Ok(self.backend.reduce(Reduction::Asum, self.data_view())?)
    }
    /// Sum of absolute values of the diff.
    pub fn asum_diff(&self) -> Result<f32> {
        Ok(self.backend.reduce(Reduction::Asum, self.diff_view())?)
    }
    /// Sum of squares of the data.
    pub fn sumsq_data(&self) -> Result<f32> {
        Ok(self.backend.reduce(Reduction::Sumsq, self.data_view())?)
    }
    /// Sum of squares of the diff.
    pub fn sumsq_diff(&self) -> Result<f32> {
        Ok(self.backend.reduce(Reduction::Sumsq, self.diff_view())?)
    }
    /// Multiplies the data by `factor`.
    pub fn scale_data(&mut self, factor: f32) -> Result<()> {
        let data = self.data.slice_mut(0, self.count);
        self.backend
            .scale(Scalar::Value(factor), Src::InPlace, data)?;
        Ok(())
    }
    /// Multiplies the diff by `factor`.
    pub fn scale_diff(&mut self, factor: f32) -> Result<()> {
        let diff = self.diff.slice_mut(0, self.count);
        self.backend
            .scale(Scalar::Value(factor), Src::InPlace, diff)?;
        Ok(())
    }

    /// Upstream's `CopyFrom`: copies `source`'s data (or diff, with `copy_diff`) into this
    /// blob's data (or diff). Shapes must be equal unless `reshape`, which takes `source`'s.
    pub fn copy_from(&mut self, source: &Blob<B>, copy_diff: bool, reshape: bool) -> Result<()> {
        if source.count != self.count || source.shape != self.shape {
            if reshape {
                self.reshape(source.shape())?;
            } else {
                return Err(BlobError::ShapeMismatch {
                    context: "copy_from without reshape",
                    expected: self.shape_string(),
                    found: source.shape_string(),
                });
            }
        }
        if copy_diff {
            let diff = self.diff.slice_mut(0, self.count);
            self.backend.copy(source.diff_view(), diff)?;
        } else {
            let data = self.data.slice_mut(0, self.count);
            self.backend.copy(source.data_view(), data)?;
        }
        Ok(())
    }

    /// Upstream's `ShapeEquals`: compares with the proto's legacy 4-D fields when any is set
    /// (matching this blob's shape padded with leading ones, legacy blobs being indexed from
    /// the end), otherwise with `shape.dim`.
    pub fn shape_equals(&self, proto: &BlobProto) -> bool {
        if has_legacy_shape(proto) {
            let legacy = [proto.num(), proto.channels(), proto.height(), proto.width()];
            return self.num_axes() <= 4
                && (-4..0).zip(legacy).all(|(axis, dim)| {
                    self.legacy_shape(axis)
                        .is_ok_and(|d| i64::try_from(d).ok() == Some(i64::from(dim)))
                });
        }
        let dims = proto.shape.as_ref().map_or(&[][..], |s| &s.dim[..]);
        dims.len() == self.shape.len()
            && dims
                .iter()
                .zip(&self.shape)
                .all(|(&p, &s)| i64::try_from(s).ok() == Some(p))
    }

    /// Upstream's `FromProto`: with `reshape`, takes the proto's shape (legacy 4-D fields when
    /// any is set, else `shape.dim`); without, the shapes must be equal. Then loads `data` (or
    /// `double_data`, which wins when present) and, if present, `diff` (or `double_diff`).
    pub fn from_proto(&mut self, proto: &BlobProto, reshape: bool) -> Result<()> {
        if reshape {
            self.reshape(&proto_shape(proto)?)?;
        } else if !self.shape_equals(proto) {
            return Err(BlobError::ShapeMismatch {
                context: "loading a BlobProto without reshape",
                expected: self.shape_string(),
                found: proto_shape_string(proto),
            });
        }
        if !proto.double_data.is_empty() {
            self.check_len("BlobProto double_data", proto.double_data.len())?;
            let values: Vec<f32> = proto.double_data.iter().map(|&v| v as f32).collect();
            self.backend
                .upload(&values, self.data.slice_mut(0, self.count))?;
        } else {
            self.check_len("BlobProto data", proto.data.len())?;
            self.backend
                .upload(&proto.data, self.data.slice_mut(0, self.count))?;
        }
        if !proto.double_diff.is_empty() {
            self.check_len("BlobProto double_diff", proto.double_diff.len())?;
            let values: Vec<f32> = proto.double_diff.iter().map(|&v| v as f32).collect();
            self.backend
                .upload(&values, self.diff.slice_mut(0, self.count))?;
        } else if !proto.diff.is_empty() {
            self.check_len("BlobProto diff", proto.diff.len())?;
            self.backend
                .upload(&proto.diff, self.diff.slice_mut(0, self.count))?;
        }
        Ok(())
    }

    /// Upstream's `ToProto` for float blobs: `shape.dim`, `data`, and `diff` if `write_diff`.
    pub fn to_proto(&self, write_diff: bool) -> Result<BlobProto> {
        Ok(BlobProto {
            shape: Some(BlobShape {
                dim: self.shape.iter().map(|&d| d as i64).collect(),
            }),
            data: self.data_to_vec()?,
            diff: if write_diff {
                self.diff_to_vec()?
            } else {
                Vec::new()
            },
            ..Default::default()
        })
    }
}

impl Blob<CpuBackend> {
    /// Makes this blob's data the memory of `source`'s data (upstream's `ShareData`): a write
    /// through either is seen by both, until one of them is reshaped beyond its capacity and
    /// gets memory of its own. The shapes must be equal; the diffs stay separate.
    ///
    /// # Safety
    ///
    /// The two blobs alias: neither may be used while the other is borrowed mutably (never
    /// from two threads at once, nor from inside an engine call on the other's net).
    pub unsafe fn share_data(&mut self, source: &Self) -> Result<()> {
        if source.shape != self.shape {
            return Err(BlobError::ShapeMismatch {
                context: "share_data",
                expected: self.shape_string(),
                found: source.shape_string(),
            });
        }
        // SAFETY: the caller keeps the two blobs from being used at once.
        self.data = unsafe { source.data.alias() };
        // The data is now `source.capacity` long: reshapes within both lengths keep both.
        self.capacity = self.capacity.min(source.capacity);
        Ok(())
    }
    /// The data as a host slice, without copying (CPU only).
    pub fn cpu_data(&self) -> &[f32] {
        &self.data.as_slice()[..self.count]
    }
    /// The diff as a host slice, without copying (CPU only).
    pub fn cpu_diff(&self) -> &[f32] {
        &self.diff.as_slice()[..self.count]
    }
    /// The data as a writable host slice (CPU only).
    pub fn cpu_data_mut(&mut self) -> &mut [f32] {
        &mut self.data.as_mut_slice()[..self.count]
    }
    /// The diff as a writable host slice (CPU only).
    pub fn cpu_diff_mut(&mut self) -> &mut [f32] {
        &mut self.diff.as_mut_slice()[..self.count]
    }
}

fn has_legacy_shape(proto: &BlobProto) -> bool {
    proto.num.is_some()
        || proto.channels.is_some()
        || proto.height.is_some()
        || proto.width.is_some()
}

/// Converts proto dimensions, rejecting negative ones.
fn dims_from_proto(dims: &[i64]) -> Result<Vec<usize>> {
    dims.iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| BlobError::InvalidDim {
                dim: d,
                shape: format!("{dims:?}"),
            })
        })
        .collect()
}

/// The shape a proto describes: its legacy 4-D fields (unset ones 0) if any is set, else
/// `shape.dim`.
fn proto_shape(proto: &BlobProto) -> Result<Vec<usize>> {
    if has_legacy_shape(proto) {
        let legacy = [proto.num(), proto.channels(), proto.height(), proto.width()];
        dims_from_proto(&legacy.map(i64::from))
    } else {
        dims_from_proto(proto.shape.as_ref().map_or(&[][..], |s| &s.dim[..]))
    }
}

/// A proto's shape in `shape_string` form, for error messages.
fn proto_shape_string(proto: &BlobProto) -> String {
    let dims: Vec<i64> = if has_legacy_shape(proto) {
        vec![
            proto.num().into(),
            proto.channels().into(),
            proto.height().into(),
            proto.width().into(),
        ]
    } else {
        proto
            .shape
            .as_ref()
            .map_or_else(Vec::new, |s| s.dim.clone())
    };
    let mut s: String = dims.iter().map(|d| format!("{d} ")).collect();
    s.push_str(&format!("({})", dims.iter().product::<i64>()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuBackend;

    fn cpu() -> CpuBackend {
        CpuBackend::new(1).unwrap()
    }

    #[test]
    fn shape_string_matches_upstream_format() {
        let b = Blob::new(&cpu(), &[64, 1, 28, 28]).unwrap();
        assert_eq!(b.shape_string(), "64 1 28 28 (50176)");
        assert_eq!(b.count(), 50176);
        let e = Blob::empty(&cpu()).unwrap();
        assert_eq!(e.shape_string(), "(0)");
        assert_eq!(e.count(), 0);
        let mut s = Blob::empty(&cpu()).unwrap();
        s.reshape(&[]).unwrap();
        assert_eq!(s.count(), 1, "a 0-axis blob is a scalar once reshaped");
        assert_eq!(s.shape_string(), "(1)");
    }

    #[test]
    fn counts_and_ranges() {
        let b = Blob::new(&cpu(), &[2, 3, 4, 5]).unwrap();
        assert_eq!(b.count_range(0, 4).unwrap(), 120);
        assert_eq!(b.count_range(1, 3).unwrap(), 12);
        assert_eq!(b.count_range(2, 2).unwrap(), 1);
        assert_eq!(b.count_from(2).unwrap(), 20);
        assert_eq!(b.count_from(4).unwrap(), 1);
        assert!(matches!(
            b.count_range(3, 2),
            Err(BlobError::CountRange { .. })
        ));
        assert!(matches!(
            b.count_range(0, 5),
            Err(BlobError::CountRange { .. })
        ));
        let z = Blob::new(&cpu(), &[3, 0, 2]).unwrap();
        assert_eq!(z.count(), 0);
        assert_eq!(z.shape_string(), "3 0 2 (0)");
    }

    #[test]
    fn canonical_axis_index_rules() {
        let b = Blob::new(&cpu(), &[2, 3, 4]).unwrap();
        assert_eq!(b.canonical_axis_index(0).unwrap(), 0);
        assert_eq!(b.canonical_axis_index(2).unwrap(), 2);
        assert_eq!(b.canonical_axis_index(-1).unwrap(), 2);
        assert_eq!(b.canonical_axis_index(-3).unwrap(), 0);
        assert_eq!(b.shape_at(-2).unwrap(), 3);
        let err = b.canonical_axis_index(3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "axis 3 out of range for 3-D blob with shape 2 3 4 (24)"
        );
        let err = b.canonical_axis_index(-4).unwrap_err();
        assert!(matches!(
            err,
            BlobError::AxisOutOfRange {
                axis: -4,
                num_axes: 3,
                ..
            }
        ));
        assert!(b.shape_at(7).is_err());
    }

    #[test]
    fn legacy_accessors_pad_with_ones() {
        let b = Blob::new(&cpu(), &[7, 5]).unwrap();
        assert_eq!(b.num().unwrap(), 7);
        assert_eq!(b.channels().unwrap(), 5);
        assert_eq!(b.height().unwrap(), 1);
        assert_eq!(b.width().unwrap(), 1);
        assert_eq!(b.legacy_shape(-1).unwrap(), 5);
        assert_eq!(b.legacy_shape(-3).unwrap(), 1);
        assert!(matches!(
            b.legacy_shape(4),
            Err(BlobError::LegacyIndex { index: 4 })
        ));
        assert!(matches!(
            b.legacy_shape(-5),
            Err(BlobError::LegacyIndex { .. })
        ));
        let five = Blob::new(&cpu(), &[1, 2, 3, 4, 5]).unwrap();
        assert!(matches!(five.num(), Err(BlobError::LegacyAxes { .. })));
        let b4 = Blob::new(&cpu(), &[2, 3, 4, 5]).unwrap();
        assert_eq!(b4.offset(1, 2, 3, 4).unwrap(), 119);
        assert_eq!(b4.offset(2, 0, 0, 0).unwrap(), 120);
        assert!(b4.offset(3, 0, 0, 0).is_err());
        assert_eq!(b4.offset_of(&[1, 2]).unwrap(), (3 + 2) * 20);
        assert!(b4.offset_of(&[0, 3]).is_err());
    }

    #[test]
    fn axis_and_count_limits() {
        let many = vec![1usize; 33];
        assert!(matches!(
            Blob::new(&cpu(), &many),
            Err(BlobError::TooManyAxes { axes: 33, .. })
        ));
        assert!(Blob::new(&cpu(), &vec![1usize; 32]).is_ok());
        assert!(matches!(
            checked_count(&[1 << 16, 1 << 16]),
            Err(BlobError::CountOverflow { .. })
        ));
        assert!(matches!(
            checked_count(&[usize::MAX, 2]),
            Err(BlobError::CountOverflow { .. })
        ));
    }

    #[test]
    fn reshape_reuses_capacity_and_keeps_values() {
        let mut b = Blob::new(&cpu(), &[2, 3]).unwrap();
        b.set_data(&[1., 2., 3., 4., 5., 6.]).unwrap();
        b.reshape(&[3, 1]).unwrap();
        assert_eq!(b.capacity(), 6);
        assert_eq!(b.data_to_vec().unwrap(), vec![1., 2., 3.]);
        b.reshape(&[6]).unwrap();
        assert_eq!(b.capacity(), 6);
        assert_eq!(b.cpu_data(), &[1., 2., 3., 4., 5., 6.]);
        b.reshape(&[7]).unwrap();
        assert_eq!(b.capacity(), 7);
        assert_eq!(b.cpu_data(), &[0.; 7]);
    }

    #[test]
    fn set_data_checks_length() {
        let mut b = Blob::new(&cpu(), &[2, 2]).unwrap();
        let err = b.set_data(&[1.0; 3]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "data has 3 values but the blob with shape 2 2 (4) needs 4"
        );
    }

    #[test]
    fn proto_round_trip_nd_shape() {
        let mut b = Blob::new(&cpu(), &[2, 3, 1, 2, 2]).unwrap();
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let diff: Vec<f32> = (0..24).map(|i| -(i as f32)).collect();
        b.set_data(&data).unwrap();
        b.set_diff(&diff).unwrap();
        let p = b.to_proto(true).unwrap();
        assert_eq!(p.shape.as_ref().unwrap().dim, vec![2, 3, 1, 2, 2]);
        assert_eq!(p.num, None, "to_proto writes only the N-D shape");
        assert_eq!(p.data, data);
        assert_eq!(p.diff, diff);
        let without_diff = b.to_proto(false).unwrap();
        assert!(without_diff.diff.is_empty());

        let c = Blob::new_from_proto(&cpu(), &p).unwrap();
        assert_eq!(c.shape(), &[2, 3, 1, 2, 2]);
        assert_eq!(c.cpu_data(), &data[..]);
        assert_eq!(c.cpu_diff(), &diff[..]);
        // Through the wire format too.
        use prost::Message;
        let bytes = p.encode_to_vec();
        let q = BlobProto::decode(&bytes[..]).unwrap();
        let mut d = Blob::new(&cpu(), &[2, 3, 1, 2, 2]).unwrap();
        d.from_proto(&q, false).unwrap();
        assert_eq!(d.cpu_data(), &data[..]);
    }

    #[test]
    fn proto_legacy_shape_and_double_data() {
        let p = BlobProto {
            num: Some(1),
            channels: Some(2),
            height: Some(1),
            width: Some(3),
            double_data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5],
            data: vec![9.0; 6],
            ..Default::default()
        };
        let mut b = Blob::empty(&cpu()).unwrap();
        b.from_proto(&p, true).unwrap();
        assert_eq!(b.shape(), &[1, 2, 1, 3]);
        assert_eq!(
            b.cpu_data(),
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5],
            "double_data wins"
        );
        // Legacy protos compare against the shape padded with leading ones.
        let bias = Blob::new(&cpu(), &[3]).unwrap();
        let legacy_bias = BlobProto {
            num: Some(1),
            channels: Some(1),
            height: Some(1),
            width: Some(3),
            data: vec![0.5; 3],
            ..Default::default()
        };
        assert!(bias.shape_equals(&legacy_bias));
        let mut bias = bias;
        bias.from_proto(&legacy_bias, false).unwrap();
        assert_eq!(bias.cpu_data(), &[0.5; 3]);
        // Unset legacy fields read as 0, as upstream's proto defaults.
        let partial = BlobProto {
            width: Some(3),
            ..Default::default()
        };
        let mut z = Blob::empty(&cpu()).unwrap();
        z.from_proto(&partial, true).unwrap();
        assert_eq!(z.shape(), &[0, 0, 0, 3]);
    }

    #[test]
    fn proto_mismatch_errors_name_both_shapes() {
        let mut b = Blob::new(&cpu(), &[2, 3]).unwrap();
        let p = BlobProto {
            shape: Some(BlobShape { dim: vec![3, 2] }),
            data: vec![0.0; 6],
            ..Default::default()
        };
        let err = b.from_proto(&p, false).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("2 3 (6)") && msg.contains("3 2 (6)"), "{msg}");
        let short = BlobProto {
            shape: Some(BlobShape { dim: vec![2, 3] }),
            data: vec![0.0; 5],
            ..Default::default()
        };
        let err = b.from_proto(&short, false).unwrap_err();
        assert!(matches!(
            err,
            BlobError::DataLength {
                found: 5,
                expected: 6,
                ..
            }
        ));
        let neg = BlobProto {
            shape: Some(BlobShape { dim: vec![2, -3] }),
            ..Default::default()
        };
        assert!(matches!(
            b.from_proto(&neg, true),
            Err(BlobError::InvalidDim { dim: -3, .. })
        ));
    }

    #[test]
    fn update_and_copy_from() {
        let cpu = cpu();
        let mut a = Blob::new(&cpu, &[4]).unwrap();
        a.set_data(&[1., 2., 3., 4.]).unwrap();
        a.set_diff(&[0.5, 0.5, -1., 0.]).unwrap();
        a.update().unwrap();
        assert_eq!(a.cpu_data(), &[0.5, 1.5, 4., 4.]);
        assert_eq!(a.asum_diff().unwrap(), 2.0);
        assert_eq!(a.sumsq_data().unwrap(), 0.25 + 2.25 + 16. + 16.);
        let mut b = Blob::new(&cpu, &[4]).unwrap();
        b.copy_from(&a, false, false).unwrap();
        assert_eq!(b.cpu_data(), a.cpu_data());
        let mut b22 = Blob::new(&cpu, &[2, 2]).unwrap();
        assert!(
            b22.copy_from(&a, false, false).is_err(),
            "same count, different shape: upstream refuses without reshape"
        );
        let mut c = Blob::new(&cpu, &[3]).unwrap();
        assert!(matches!(
            c.copy_from(&a, false, false),
            Err(BlobError::ShapeMismatch { .. })
        ));
        c.copy_from(&a, true, true).unwrap();
        assert_eq!(c.shape(), &[4]);
        assert_eq!(
            c.cpu_data(),
            &[0.; 4],
            "diff copied, data untouched (reallocated)"
        );
        assert_eq!(c.cpu_diff(), &[0.5, 0.5, -1., 0.]);
    }
}
