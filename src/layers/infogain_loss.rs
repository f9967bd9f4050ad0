//! InfogainLoss: the multinomial logistic loss of the softmax of the predictions, each class's
//! log-probability weighted by a row of an information-gain matrix `H`
//! (upstream: src/caffe/layers/infogain_loss_layer.cpp, the version with the softmax inside).
//!
//! Bottoms: predictions `(outer, C, inner)` around `infogain_loss_param.axis` (default 1),
//! `outer * inner` labels in `0..C`, and optionally `H` itself (`C x C` values); without a third
//! bottom `H` is read once from the BlobProto file `infogain_loss_param.source`. With `p` the
//! softmax along the axis, top 0 is
//! `-sum_{(o, j)} sum_l H[label, l] log(max(p[o, l, j], 1e-20)) / normalizer`, skipping
//! positions labelled `loss_param.ignore_label`; the normalizer follows
//! `loss_param.normalization` (default VALID; the legacy `normalize` is refused, as upstream).
//! The predictions get `(p sum_l H[label, l] - H[label, :]) loss_weight / normalizer`, 0 at
//! ignored positions. An optional top 1 receives the probabilities. Neither the labels nor `H`
//! get a gradient.

use std::path::Path;

use crate::backend::{
    AxisReduction, Backend, Binary, Broadcast, Gemm, Scalar, Slice, Src, Transpose, Unary, Views,
};
use crate::blob::Blob;
use crate::layers::loss::{
    ignore_label, label_backprop_error, label_positions, normalize_loss, normalizer_slot, scratch,
    weight_over_normalizer, Normalization,
};
use crate::layers::multinomial_logistic_loss::LOG_THRESHOLD;
use crate::layers::softmax::{softmax_forward, AxisView};
use crate::layers::{labels, BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::LayerParameter;
use crate::proto::read_blob_proto;

/// `(alpha, beta)` of an affine map at the label that turns a zeroed row into a one-hot one.
const ONE_AT_LABEL: (f32, f32) = (0.0, 1.0);

/// The InfogainLoss layer.
pub struct InfogainLossLayer<B: Backend> {
    axis: i32,
    source: Option<String>,
    ignore_label: Option<i32>,
    normalization: Normalization,
    view: AxisView,
    /// `H` read from `source` (when there is no third bottom).
    infogain: Option<Blob<B>>,
    /// The softmax output.
    prob: Option<B::Buffer>,
    /// The one-hot labels, then (forward) `H[label, l] log(max(p, 1e-20))`.
    onehot: Option<B::Buffer>,
    /// `H[label, l]` at every `(o, l, j)` (0 at ignored positions), kept for the backward.
    rows: Option<B::Buffer>,
    /// Per-position scratch: the softmax's max and sum, the valid mask, the rows' sums.
    per_position: Option<B::Buffer>,
    /// The normalizer of the last forward pass, one element, on the device.
    normalizer: Option<B::Buffer>,
    /// One element: scratch forward, loss weight / normalizer backward.
    factor: Option<B::Buffer>,
}

impl<B: Backend> InfogainLossLayer<B> {
    /// Reads `infogain_loss_param` (`source`, `axis`) and `loss_param` (`ignore_label`,
    /// `normalization`; upstream refuses the deprecated `normalize`).
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        if param
            .loss_param
            .as_ref()
            .is_some_and(|l| l.normalize.is_some())
        {
            return Err(LayerError::invalid(
                "loss_param.normalize is deprecated for InfogainLoss: use \
                 loss_param.normalization",
            ));
        }
        let infogain_param = param.infogain_loss_param.clone().unwrap_or_default();
        Ok(InfogainLossLayer {
            axis: infogain_param.axis(),
            source: infogain_param.source,
            ignore_label: ignore_label(param),
            normalization: Normalization::from_param(param, Normalization::Valid)?,
            view: AxisView::default(),
            infogain: None,
            prob: None,
            onehot: None,
            rows: None,
            per_position: None,
            normalizer: None,
            factor: None,
        })
    }

    /// Upstream's check of `H` against the number of labels `C`: `C x C` values.
    fn check_infogain(&self, blobs: &Blobs<'_, B>) -> Result<(), LayerError> {
        let h = infogain(&self.infogain, blobs)?;
        let labels = self.view.dim;
        if h.count() == labels * labels {
            return Ok(());
        }
        let origin = match &self.source {
            Some(path) if blobs.num_bottom() < 3 => format!("infogain_loss_param.source {path}"),
            _ => "bottom 2".to_string(),
        };
        Err(LayerError::invalid(format!(
            "InfogainLoss: H must be {labels}x{labels} for {labels} labels along axis {}, but \
             {origin} has shape {}",
            self.axis,
            h.shape_string()
        )))
    }
}

impl<B: Backend> Layer<B> for InfogainLossLayer<B> {
    fn layer_type(&self) -> &'static str {
        "InfogainLoss"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Range(2, 3), Count::Range(1, 2)).with_auto_top_blobs()
    }
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        bottom_index != 1
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        if blobs.num_bottom() > 2 {
            return Ok(());
        }
        let source = self.source.as_deref().ok_or_else(|| {
            LayerError::invalid(
                "infogain_loss_param.source must be specified (the Infogain matrix H) when H is \
                 not a third bottom",
            )
        })?;
        let proto = read_blob_proto(Path::new(source))
            .map_err(|e| LayerError::invalid(format!("infogain_loss_param.source: {e}")))?;
        self.infogain = Some(Blob::new_from_proto(ctx.backend, &proto)?);
        Ok(())
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (data, label) = (blobs.bottom(0), blobs.bottom(1));
        let view = label_positions(
            data,
            label,
            (self.axis, "infogain_loss_param.axis"),
            "infogain",
        )?;
        let shape = data.shape().to_vec();
        self.view = view;
        self.check_infogain(blobs)?;
        blobs.top_mut(0).reshape(&[])?;
        if blobs.num_top() > 1 {
            blobs.top_mut(1).reshape(&shape)?;
        }
        let be = ctx.backend;
        for slot in [&mut self.prob, &mut self.onehot, &mut self.rows] {
            scratch(be, slot, view.count())?;
        }
        scratch(be, &mut self.per_position, view.positions())?;
        scratch(be, &mut self.factor, 1)?;
        normalizer_slot(be, &mut self.normalizer)
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let be = ctx.backend;
        let v = self.view;
        let (axis, n, positions) = (v.axis(), v.count(), v.positions());
        let labels = labels(blobs.bottom(1), self.ignore_label);
        let per_position = scratch(be, &mut self.per_position, positions)?;
        let mut prob = scratch(be, &mut self.prob, n)?.slice_mut(0, n);
        let x = blobs.bottom(0).data_view().src();
        softmax_forward(
            be,
            axis,
            x,
            prob.reborrow(),
            per_position.slice_mut(0, positions),
        )?;
        // The rows of H at the labels (zero at ignored positions).
        let mut onehot = scratch(be, &mut self.onehot, n)?.slice_mut(0, n);
        be.fill(0.0, onehot.reborrow())?;
        be.affine_at_label(axis, labels, ONE_AT_LABEL, onehot.reborrow())?;
        let h = infogain(&self.infogain, blobs)?.data_view();
        let rows = scratch(be, &mut self.rows, n)?;
        gather_rows(be, v, h, onehot.as_slice(), rows)?;
        // terms = H[label, l] log(max(p, 1e-20)), summed and negated.
        let mut terms = scratch(be, &mut self.onehot, n)?.slice_mut(0, n);
        let prob = scratch(be, &mut self.prob, n)?.slice(0, n);
        be.fill(LOG_THRESHOLD, terms.reborrow())?;
        be.binary(Binary::Max, Src::InPlace, prob.src(), terms.reborrow())?;
        be.unary(Unary::Log, Src::InPlace, terms.reborrow())?;
        let rows = scratch(be, &mut self.rows, n)?.slice(0, n);
        be.binary(Binary::Mul, Src::InPlace, rows.src(), terms.reborrow())?;
        let per_position = scratch(be, &mut self.per_position, positions)?;
        let valid_mask = match self.ignore_label {
            Some(_) => {
                let valid = Unary::LabelMask {
                    ignore_label: labels.ignore_label,
                };
                be.unary(
                    valid,
                    labels.values.src(),
                    per_position.slice_mut(0, positions),
                )?;
                Some(&*per_position)
            }
            None => None,
        };
        let factor = scratch(be, &mut self.factor, 1)?;
        let normalizer = scratch(be, &mut self.normalizer, 1)?;
        let loss = blobs.top_mut(0).data_mut();
        be.sum_into(-1.0, terms.as_slice(), loss.slice_mut(0, 1))?;
        let shape = (v.outer, v.inner);
        normalize_loss(
            be,
            self.normalization,
            shape,
            valid_mask,
            (factor, normalizer),
            loss,
        )?;
        if blobs.num_top() > 1 {
            be.copy(prob, blobs.top_mut(1).data_view_mut())?;
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
            return Err(label_backprop_error("InfogainLoss"));
        }
        if propagate_down.get(2) == Some(&true) {
            return Err(LayerError::invalid(
                "InfogainLoss Layer cannot backpropagate to infogain inputs.",
            ));
        }
        if !propagate_down[0] {
            return Ok(());
        }
        let be = ctx.backend;
        let v = self.view;
        let (axis, n, positions) = (v.axis(), v.count(), v.positions());
        let weight = scratch(be, &mut self.factor, 1)?;
        let normalizer = scratch(be, &mut self.normalizer, 1)?;
        weight_over_normalizer(be, blobs.top(0), normalizer, weight)?;
        // dx = p sum_l H[label, l] - H[label, :], then times weight / normalizer.
        let rows = scratch(be, &mut self.rows, n)?.slice(0, n);
        let row_sums = scratch(be, &mut self.per_position, positions)?;
        let sum = AxisReduction::Sum;
        be.reduce_over_axis(sum, axis, rows, row_sums.slice_mut(0, positions))?;
        let prob = scratch(be, &mut self.prob, n)?.slice(0, n);
        let mut dx = blobs.bottom_mut(0).diff_view_mut();
        let row_sums = row_sums.slice(0, positions);
        let over_axis = Broadcast::OverAxis;
        be.broadcast(
            Binary::Mul,
            over_axis,
            axis,
            row_sums,
            prob.src(),
            dx.reborrow(),
        )?;
        be.binary(Binary::Sub, Src::InPlace, rows.src(), dx.reborrow())?;
        let weight = scratch(be, &mut self.factor, 1)?;
        be.scale(Scalar::At(weight, 0), Src::InPlace, dx)?;
        Ok(())
    }
}

/// `H`: the third bottom if there is one, else the matrix read from `source`.
fn infogain<'a, B: Backend>(
    from_source: &'a Option<Blob<B>>,
    blobs: &'a Blobs<'_, B>,
) -> Result<&'a Blob<B>, LayerError> {
    if blobs.num_bottom() > 2 {
        return Ok(blobs.bottom(2));
    }
    from_source
        .as_ref()
        .ok_or_else(|| LayerError::invalid("InfogainLoss has no H: its setup read no matrix"))
}

/// `rows[o, l, j] = sum_k H[k, l] onehot[o, k, j]`: the label's row of `H` at every position
/// of `view`, one GEMM when `inner` is 1, else one per `o`.
fn gather_rows<B: Backend>(
    be: &B,
    view: AxisView,
    h: Slice<'_, B::Buffer>,
    onehot: Slice<'_, B::Buffer>,
    rows: &mut B::Buffer,
) -> Result<(), LayerError> {
    let AxisView { outer, dim, inner } = view;
    if inner == 1 {
        let g = Gemm::packed(Transpose::NoTrans, Transpose::NoTrans, outer, dim, dim);
        be.gemm(&g, onehot, h, rows.slice_mut(0, view.count()))?;
        return Ok(());
    }
    let g = Gemm::packed(Transpose::Trans, Transpose::NoTrans, dim, inner, dim);
    let block = dim * inner;
    for o in 0..outer {
        let e = onehot.part(o * block, block);
        be.gemm(&g, h, e, rows.slice_mut(o * block, block))?;
    }
    Ok(())
}
