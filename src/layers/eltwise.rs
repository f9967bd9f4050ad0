//! Eltwise: combines same-shaped bottoms element by element (upstream:
//! src/caffe/layers/eltwise_layer.cpp). `eltwise_param.operation`: SUM (default) with one
//! optional `coeff` per bottom, PROD (its gradient a product of the other bottoms with
//! `stable_prod_grad`, the default, else `top / bottom`), or MAX, whose gradient goes to the
//! bottom that won. Ties: bottom 1 beats bottom 0, and after that the earlier bottom keeps it.

use crate::backend::{Backend, Binary, Src};
use crate::blob::Blob;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::eltwise_parameter::EltwiseOp;
use crate::proto::caffe::LayerParameter;

/// The Eltwise layer.
pub struct EltwiseLayer<B: Backend> {
    op: EltwiseOp,
    /// The SUM coefficients as given (empty: all 1).
    coeff: Vec<f32>,
    stable_prod_grad: bool,
    /// MAX: the index of the winning bottom at each element.
    mask: Option<Blob<B>>,
}

impl<B: Backend> EltwiseLayer<B> {
    /// Reads `eltwise_param`.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let p = param.eltwise_param.clone().unwrap_or_default();
        let op = match p.operation {
            None => EltwiseOp::Sum,
            Some(v) => EltwiseOp::try_from(v).map_err(|_| {
                LayerError::invalid(format!(
                    "eltwise_param.operation {v} is not PROD (0), SUM (1) or MAX (2)"
                ))
            })?,
        };
        if op == EltwiseOp::Prod && !p.coeff.is_empty() {
            return Err(LayerError::invalid(
                "eltwise_param.coeff: Eltwise layer only takes coefficients for summation",
            ));
        }
        Ok(EltwiseLayer {
            op,
            coeff: p.coeff.clone(),
            stable_prod_grad: p.stable_prod_grad(),
            mask: None,
        })
    }

    fn coeff(&self, i: usize) -> f32 {
        self.coeff.get(i).copied().unwrap_or(1.0)
    }

    fn mask(&mut self) -> Result<&mut Blob<B>, LayerError> {
        self.mask
            .as_mut()
            .ok_or_else(|| LayerError::invalid("Eltwise MAX run before reshape"))
    }
}

impl<B: Backend> Layer<B> for EltwiseLayer<B> {
    fn layer_type(&self) -> &'static str {
        "Eltwise"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::AtLeast(2), Count::Exactly(1))
    }

    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let n = blobs.num_bottom();
        if !self.coeff.is_empty() && self.coeff.len() != n {
            return Err(LayerError::invalid(format!(
                "eltwise_param.coeff: Eltwise Layer takes one coefficient per bottom blob \
                 ({} given for {n} bottoms)",
                self.coeff.len()
            )));
        }
        Ok(())
    }

    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (bottoms, mut top) = blobs.forward_all()?;
        let shape = bottoms[0].shape().to_vec();
        for (i, bottom) in bottoms.iter().enumerate().skip(1) {
            if bottom.shape() != shape.as_slice() {
                return Err(LayerError::invalid(format!(
                    "Eltwise bottoms must have the same shape: bottom 0 is {}, bottom {i} is {}",
                    bottoms[0].shape_string(),
                    bottom.shape_string()
                )));
            }
        }
        top[0].reshape(&shape)?;
        if self.op == EltwiseOp::Max {
            match &mut self.mask {
                Some(mask) => mask.reshape(&shape)?,
                None => self.mask = Some(Blob::new(ctx.backend, &shape)?),
            }
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
        let (bottoms, mut top) = blobs.forward_all()?;
        let x: Vec<_> = bottoms.iter().map(|bottom| bottom.data_view()).collect();
        let mut y = top[0].data_view_mut();
        match self.op {
            EltwiseOp::Prod => {
                be.binary(Binary::Mul, x[0].src(), x[1].src(), y.reborrow())?;
                for x in &x[2..] {
                    be.binary(Binary::Mul, Src::InPlace, x.src(), y.reborrow())?;
                }
            }
            EltwiseOp::Sum => {
                be.fill(0.0, y.reborrow())?;
                for (i, &x) in x.iter().enumerate() {
                    be.axpby(self.coeff(i).into(), x, 1.0, y.reborrow())?;
                }
            }
            EltwiseOp::Max => {
                // Start from bottom 1 so that bottom 0 wins only when strictly greater, as
                // upstream's first comparison; later bottoms must be strictly greater too.
                let mut mask = self.mask()?.data_view_mut();
                be.copy(x[1], y.reborrow())?;
                be.fill(1.0, mask.reborrow())?;
                be.running_argmax(0.0, x[0], y.reborrow(), mask.reborrow())?;
                for (i, &x) in x.iter().enumerate().skip(2) {
                    be.running_argmax(i as f32, x, y.reborrow(), mask.reborrow())?;
                }
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
        let be = ctx.backend;
        let (top, mut bottoms) = blobs.backward_all()?;
        let (y, dy) = (top[0].data_view(), top[0].diff_view());
        for i in (0..bottoms.len()).filter(|&i| propagate_down[i]) {
            let (before, rest) = bottoms.split_at_mut(i);
            let (current, after) = rest.split_first_mut().expect("i < bottoms.len()");
            let others: Vec<_> = before
                .iter()
                .chain(after.iter())
                .map(|other| other.data_view())
                .collect();
            let (x, mut dx) = current.data_and_diff_mut();
            match self.op {
                EltwiseOp::Prod => {
                    if self.stable_prod_grad {
                        be.copy(others[0], dx.reborrow())?;
                        for other in &others[1..] {
                            be.binary(Binary::Mul, other.src(), Src::InPlace, dx.reborrow())?;
                        }
                    } else {
                        be.binary(Binary::Div, y.src(), x.src(), dx.reborrow())?;
                    }
                    be.binary(Binary::Mul, Src::InPlace, dy.src(), dx)?;
                }
                EltwiseOp::Sum => {
                    let c = self.coeff(i);
                    if c == 1.0 {
                        be.copy(dy, dx)?;
                    } else {
                        be.scale(c.into(), dy.src(), dx)?;
                    }
                }
                EltwiseOp::Max => {
                    let mask = self.mask()?.data_view();
                    be.copy_where_eq(mask, i as f32, dy, dx)?;
                }
            }
        }
        Ok(())
    }
}
