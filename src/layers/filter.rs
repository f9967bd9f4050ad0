//! Filter: keeps the items whose selector is non-zero (upstream:
//! src/caffe/layers/filter_layer.cpp). The last bottom is the selector, `(num, 1, 1, ...)`;
//! each other bottom `i` has the same num and gives top `i`: its selected items, in order. The
//! selector is read on the host at every reshape. As upstream, the reshape at setup keeps
//! every item (the selector may not hold data yet), and an all-zero selector gives tops with
//! num 0. Backward copies each top item's gradient back to its item and zeroes the rest; there
//! is no gradient for the selector.

use crate::backend::{Backend, Views};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Filter layer.
pub struct FilterLayer {
    /// The items the selector keeps, in order.
    selected: Vec<usize>,
    /// Whether the next reshape is the one at setup.
    first_reshape: bool,
    /// The selector's bottom index, once set up.
    selector: Option<usize>,
}

impl FilterLayer {
    /// Filter takes no parameters.
    pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
        Ok(FilterLayer {
            selected: Vec::new(),
            first_reshape: true,
            selector: None,
        })
    }
}

impl<B: Backend> Layer<B> for FilterLayer {
    fn layer_type(&self) -> &'static str {
        "Filter"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::AtLeast(2), Count::AtLeast(1))
    }
    /// `force_backward` leaves the selector alone (it has no gradient; upstream would abort).
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        self.selector != Some(bottom_index)
    }

    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        if blobs.num_top() + 1 != blobs.num_bottom() {
            return Err(LayerError::invalid(format!(
                "Filter takes one top per filtered bottom (every bottom but the last, the \
                 selector): {} bottoms need {} tops; got {}",
                blobs.num_bottom(),
                blobs.num_bottom() - 1,
                blobs.num_top()
            )));
        }
        self.first_reshape = true;
        self.selector = Some(blobs.num_bottom() - 1);
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let last = blobs.num_bottom() - 1;
        let selector = blobs.bottom(last);
        if selector.num_axes() == 0 || selector.shape()[1..].iter().any(|&d| d != 1) {
            return Err(LayerError::invalid(format!(
                "Filter selector (bottom {last}) must be (num, 1, ...): every axis but the \
                 first a singleton; got shape {}",
                selector.shape_string()
            )));
        }
        let num = selector.shape()[0];
        for i in 0..last {
            let bottom = blobs.bottom(i);
            if bottom.num_axes() == 0 || bottom.shape()[0] != num {
                return Err(LayerError::invalid(format!(
                    "Filter bottom {i} has shape {} but the selector (bottom {last}) has num \
                     {num}: each bottom must have the selector's num",
                    bottom.shape_string()
                )));
            }
        }
        let flags = selector.data_to_vec()?;
        self.selected = (0..num).filter(|&n| flags[n] != 0.0).collect();
        let kept = if std::mem::take(&mut self.first_reshape) {
            num
        } else {
            self.selected.len()
        };
        for i in 0..last {
            let mut shape = blobs.bottom(i).shape().to_vec();
            shape[0] = kept;
            blobs.top_mut(i).reshape(&shape)?;
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottoms, mut tops) = blobs.forward_all()?;
        for (bottom, top) in bottoms.iter().zip(tops.iter_mut()) {
            let item = bottom.count_from(1)?;
            for (k, &n) in self.selected.iter().enumerate() {
                let x = bottom.data().slice(n * item, item);
                ctx.backend
                    .copy(x, top.data_mut().slice_mut(k * item, item))?;
            }
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
        let last = propagate_down.len() - 1;
        if propagate_down[last] {
            return Err(LayerError::invalid(format!(
                "Filter cannot backpropagate to the selector (bottom {last})"
            )));
        }
        let b = ctx.backend;
        let (tops, mut bottoms) = blobs.backward_all()?;
        for ((top, bottom), _) in tops
            .iter()
            .zip(bottoms.iter_mut())
            .zip(propagate_down)
            .filter(|(_, &down)| down)
        {
            let item = bottom.count_from(1)?;
            b.fill(0.0, bottom.diff_view_mut())?;
            for (k, &n) in self.selected.iter().enumerate() {
                let dy = top.diff().slice(k * item, item);
                b.copy(dy, bottom.diff_mut().slice_mut(n * item, item))?;
            }
        }
        Ok(())
    }
}
