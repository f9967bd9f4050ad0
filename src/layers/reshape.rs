//! Reshape: gives the bottom's values a new shape (upstream:
//! src/caffe/layers/reshape_layer.cpp). `reshape_param.shape` replaces the bottom axes
//! `axis .. axis + num_axes` (defaults 0 and -1: all of them); in it a 0 copies the bottom's
//! dimension at that position and a single -1 is inferred from the count. Upstream's top
//! shares the bottom's buffers; here it is a copy, and the gradient is copied back. Never in
//! place.

use crate::backend::Backend;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Reshape layer.
pub struct ReshapeLayer {
    /// The new dimensions; 0 (copy) and -1 (infer) are resolved at reshape.
    dims: Vec<i64>,
    axis: i32,
    num_axes: i32,
}

impl ReshapeLayer {
    /// Reads and checks `reshape_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.reshape_param.clone().unwrap_or_default();
        let dims = p.shape.as_ref().map(|s| s.dim.clone()).unwrap_or_default();
        if dims.iter().filter(|&&d| d == -1).count() > 1 {
            return Err(LayerError::invalid(format!(
                "reshape_param.shape {dims:?} contains multiple -1 dims; at most a single (1) \
                 value of -1 may be specified"
            )));
        }
        if let Some(d) = dims.iter().find(|&&d| d < -1) {
            return Err(LayerError::invalid(format!(
                "reshape_param.shape {dims:?} has dimension {d}: each must be positive, 0 \
                 (copy) or -1 (infer)"
            )));
        }
        if p.num_axes() < -1 {
            return Err(LayerError::invalid(format!(
                "reshape_param.num_axes must be >= 0, or -1 for all; got {}",
                p.num_axes()
            )));
        }
        Ok(ReshapeLayer {
            dims,
            axis: p.axis(),
            num_axes: p.num_axes(),
        })
    }

    /// The top shape for a bottom of `shape` and `count` elements, by upstream's rules.
    pub fn top_shape(&self, shape: &[usize], count: usize) -> Result<Vec<usize>, LayerError> {
        let n = shape.len() as i64;
        let axis = i64::from(self.axis);
        let start = if axis >= 0 { axis } else { n + axis + 1 };
        if start < 0 || start > n {
            return Err(LayerError::invalid(format!(
                "reshape_param.axis {axis} out of range for a {n}-D bottom"
            )));
        }
        let end = if self.num_axes == -1 {
            n
        } else {
            start + i64::from(self.num_axes)
        };
        if end > n {
            return Err(LayerError::invalid(format!(
                "reshape_param: end axis = axis + num_axes = {end} is out of range for a {n}-D \
                 bottom"
            )));
        }
        let (start, end) = (start as usize, end as usize);
        let mut top = shape[..start].to_vec();
        let mut inferred = None;
        for (i, &d) in self.dims.iter().enumerate() {
            top.push(match d {
                0 => *shape.get(start + i).ok_or_else(|| {
                    LayerError::invalid(format!(
                        "reshape_param.shape dim {i} is 0, but there is no bottom axis {} to \
                         copy",
                        start + i
                    ))
                })?,
                -1 => {
                    inferred = Some(start + i);
                    1
                }
                d => usize::try_from(d).map_err(|_| {
                    LayerError::invalid(format!("reshape_param.shape dim {d} is too large"))
                })?,
            });
        }
        top.extend_from_slice(&shape[end..]);
        if let Some(at) = inferred {
            let explicit = top
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .filter(|&e| e != 0 && count.is_multiple_of(e))
                .ok_or_else(|| {
                    LayerError::invalid(format!(
                        "reshape_param.shape {:?}: the bottom count ({count}) must be divisible \
                         by the product of the specified dimensions",
                        self.dims
                    ))
                })?;
            top[at] = count / explicit;
        }
        let top_count = top.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if top_count != Some(count) {
            return Err(LayerError::invalid(format!(
                "reshape_param: output count must match input count: shape {top:?} for a bottom \
                 of {count} elements ({shape:?})"
            )));
        }
        Ok(top)
    }
}

impl<B: Backend> Layer<B> for ReshapeLayer {
    fn layer_type(&self) -> &'static str {
        "Reshape"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottom, mut top) = blobs.forward_all()?;
        let shape = self.top_shape(bottom[0].shape(), bottom[0].count())?;
        top[0].reshape(&shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottom, mut top) = blobs.forward_all()?;
        ctx.backend
            .copy(bottom[0].data_view(), top[0].data_view_mut())?;
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down[0] {
            let (top, mut bottom) = blobs.backward_all()?;
            ctx.backend
                .copy(top[0].diff_view(), bottom[0].diff_view_mut())?;
        }
        Ok(())
    }
}
