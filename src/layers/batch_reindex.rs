//! BatchReindex: picks items of the first bottom by the indices in the second (upstream:
//! src/caffe/layers/batch_reindex_layer.cpp). The second bottom is one axis of `k` indices
//! into the first's num axis; the top is `(k, bottom.shape[1..])` with `top[i] =
//! bottom[trunc(index[i])]`. Indices are read on the host and must lie in `0..num`. Backward
//! adds each top item's gradient into the item it came from (an item picked twice gets both,
//! one never picked gets 0); there is no gradient for the indices.

use crate::backend::{Backend, Views};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The BatchReindex layer.
pub struct BatchReindexLayer {
    /// The items the last forward pass picked, in top order.
    picked: Vec<usize>,
}

impl BatchReindexLayer {
    /// BatchReindex takes no parameters.
    pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(BatchReindexLayer { picked: Vec::new() })
    }
}

/// The indices in `indices` as item numbers of `source`, each checked to lie in `0..num`.
fn read_indices<B: Backend>(source: &Blob<B>, indices: &Blob<B>) -> Result<Vec<usize>, LayerError> {
    let num = source.shape()[0];
    let values = indices.data_to_vec()?;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            // Upstream compares the stored value, then truncates it.
            if v >= 0.0 && v < num as f32 {
                Ok(v as usize)
            } else {
                Err(LayerError::invalid(format!(
                    "BatchReindex bottom 1 (the indices) element {i} is {v}: outside 0..{num}, \
                     the num of bottom 0 (shape {})",
                    source.shape_string()
                )))
            }
        })
        .collect()
}

impl<B: Backend> Layer<B> for BatchReindexLayer {
    fn layer_type(&self) -> &'static str {
        "BatchReindex"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(2, 1)
    }
    /// `force_backward` leaves the indices alone (they have no gradient; upstream would abort).
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        bottom_index == 0
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (source, indices) = (blobs.bottom(0), blobs.bottom(1));
        if indices.num_axes() != 1 {
            return Err(LayerError::invalid(format!(
                "BatchReindex bottom 1 (the indices) must have 1 axis; got shape {}",
                indices.shape_string()
            )));
        }
        if source.num_axes() == 0 {
            return Err(LayerError::invalid(
                "BatchReindex bottom 0 needs a num axis; got a scalar",
            ));
        }
        let mut shape = source.shape().to_vec();
        shape[0] = indices.shape()[0];
        blobs.top_mut(0).reshape(&shape)?;
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottoms, mut top) = blobs.forward_all()?;
        let source = bottoms[0];
        self.picked = read_indices(source, bottoms[1])?;
        let item = source.count_from(1)?;
        for (i, &n) in self.picked.iter().enumerate() {
            let x = source.data().slice(n * item, item);
            ctx.backend
                .copy(x, top[0].data_mut().slice_mut(i * item, item))?;
        }
        Ok(())
    }

    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down[1] {
            return Err(LayerError::invalid(
                "BatchReindex cannot backpropagate to bottom 1 (the indices)",
            ));
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let b = ctx.backend;
        let (top, mut bottoms) = blobs.backward_all()?;
        let source = &mut bottoms[0];
        let item = source.count_from(1)?;
        b.fill(0.0, source.diff_view_mut())?;
        for (i, &n) in self.picked.iter().enumerate() {
            let dy = top[0].diff().slice(i * item, item);
            b.axpby(
                1.0.into(),
                dy,
                1.0,
                source.diff_mut().slice_mut(n * item, item),
            )?;
        }
        Ok(())
    }
}
