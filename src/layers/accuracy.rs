//! Accuracy: the fraction of positions whose label is among the `top_k` highest scores
//! (upstream: src/caffe/layers/accuracy_layer.cpp).
//!
//! `accuracy_param { top_k: 1 axis: 1 ignore_label: ... }`. Bottoms: scores `(outer, C, inner)`
//! around `axis`, and `outer * inner` labels. A label counts as found when at most `top_k`
//! classes, itself included, score at least as high as it: ties count against the label. An
//! optional top 1 holds the accuracy of each class (0 for a class with no position). No
//! backward pass.

use crate::backend::{Backend, Binary, Reduction, Src, Unary, Views};
use crate::layers::loss::{scratch, write_scalar};
use crate::layers::softmax::AxisView;
use crate::layers::{labels, BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;

/// The Accuracy layer.
pub struct AccuracyLayer<B: Backend> {
    top_k: usize,
    axis: i32,
    ignore_label: Option<i32>,
    view: AxisView,
    /// Per position: 1 where the label was found.
    hits: Option<B::Buffer>,
    /// Per position: 1 where the label is not ignored.
    mask: Option<B::Buffer>,
    /// Per class: the number of positions of that class, then at least 1.
    nums: Option<B::Buffer>,
    /// Per class: 1.
    ones: Option<B::Buffer>,
}

impl<B: Backend> AccuracyLayer<B> {
    /// Reads `accuracy_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.accuracy_param.unwrap_or_default();
        Ok(AccuracyLayer {
            top_k: p.top_k() as usize,
            axis: p.axis(),
            ignore_label: p.ignore_label,
            view: AxisView::default(),
            hits: None,
            mask: None,
            nums: None,
            ones: None,
        })
    }
}

impl<B: Backend> Layer<B> for AccuracyLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Accuracy"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Exactly(2), Count::Range(1, 2))
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        if label.count() == 0 || self.top_k > data.count() / label.count() {
            return Err(LayerError::invalid(format!(
                "accuracy_param.top_k ({}) must be less than or equal to the number of classes \
                 (predictions {}, labels {})",
                self.top_k,
                data.shape_string(),
                label.shape_string()
            )));
        }
        let view = AxisView::new(data, self.axis)
            .map_err(|e| LayerError::invalid(format!("accuracy_param.axis: {e}")))?;
        if view.positions() != label.count() {
            return Err(LayerError::invalid(format!(
                "Number of labels must match number of predictions; e.g., if label axis == 1 \
                 and prediction shape is (N, C, H, W), label count (number of labels) must be \
                 N*H*W, with integer values in {{0, 1, ..., C-1}}: predictions {} around axis \
                 {} give {} positions, labels {}",
                data.shape_string(),
                self.axis,
                view.positions(),
                label.shape_string()
            )));
        }
        self.view = view;
        blobs.top_mut(0).reshape(&[])?;
        let be = ctx.backend;
        scratch(be, &mut self.hits, view.positions())?;
        scratch(be, &mut self.mask, view.positions())?;
        if blobs.num_top() > 1 {
            blobs.top_mut(1).reshape(&[view.dim])?;
            scratch(be, &mut self.nums, view.dim)?;
            scratch(be, &mut self.ones, view.dim)?;
        }
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let (axis, positions, classes) = (self.view.axis(), self.view.positions(), self.view.dim);
        let ignore_label = self.ignore_label;
        let mut hits = scratch(be, &mut self.hits, positions)?.slice_mut(0, positions);
        let mut mask = scratch(be, &mut self.mask, positions)?.slice_mut(0, positions);
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        be.top_k_hits(
            axis,
            self.top_k,
            data.data_view(),
            labels(label, ignore_label),
            hits.reborrow(),
        )?;
        let valid = Unary::LabelMask { ignore_label };
        be.unary(valid, label.data_view().src(), mask.reborrow())?;
        let (hits, mask) = (hits.as_slice(), mask.as_slice());
        // Both sums are counts, exact in f32.
        let found = be.reduce(Reduction::Sum, hits)?;
        let count = be.reduce(Reduction::Sum, mask)?;
        let accuracy = if count == 0.0 { 0.0 } else { found / count };
        if blobs.num_top() == 1 {
            return write_scalar(be, blobs.top_mut(0), accuracy);
        }
        // Per class: hits / positions, with the count raised to 1 where it is 0 (the hits are 0
        // there too), which gives upstream's 0 for a class with no position.
        let mut nums = scratch(be, &mut self.nums, classes)?.slice_mut(0, classes);
        let mut ones = scratch(be, &mut self.ones, classes)?.slice_mut(0, classes);
        let (bottoms, mut tops) = blobs.forward_all()?;
        let label = bottoms[1];
        be.sum_by_label(mask, labels(label, ignore_label), nums.reborrow())?;
        let mut per_class = tops[1].data_view_mut();
        be.sum_by_label(hits, labels(label, ignore_label), per_class.reborrow())?;
        be.fill(1.0, ones.reborrow())?;
        be.binary(
            Binary::Max,
            Src::InPlace,
            ones.as_slice().src(),
            nums.reborrow(),
        )?;
        be.binary(Binary::Div, Src::InPlace, nums.as_slice().src(), per_class)?;
        write_scalar(be, tops[0], accuracy)?;
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down.iter().any(|&p| p) {
            return Err(LayerError::invalid(
                "Accuracy Layer has no backward pass: it cannot propagate a gradient to its \
                 bottoms",
            ));
        }
        Ok(())
    }
}
