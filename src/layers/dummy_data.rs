//! DummyData: tops of given shapes filled by fillers (upstream:
//! src/caffe/layers/dummy_data_layer.cpp).
//!
//! `dummy_data_param` gives the shapes (`shape` once or once per top, or the legacy
//! `num`/`channels`/`height`/`width`, each once or once per top) and the fillers
//! (`data_filler` none (constant 0), once for every top, or once per top). A top whose filler
//! is `constant` is filled once at setup; the others are refilled on every forward pass, from
//! the net's generator.

use crate::backend::Backend;
use crate::blob::Blob;
use crate::filler::Filler;
use crate::layers::{BlobCounts, Blobs, Context, Count, Layer, LayerError, Params};
use crate::proto::caffe::{DummyDataParameter, FillerParameter, LayerParameter};

/// The DummyData layer.
pub struct DummyDataLayer {
    param: DummyDataParameter,
    /// One filler for every top, or one per top.
    fillers: Vec<Filler>,
    /// Whether filler `i` refills its tops on each forward pass (not constant).
    refill: Vec<bool>,
}

impl DummyDataLayer {
    /// Reads `dummy_data_param` and its fillers.
    pub fn new(param: &LayerParameter) -> Result<Self, LayerError> {
        let param = param.dummy_data_param.clone().unwrap_or_default();
        let filler_params: Vec<FillerParameter> = if param.data_filler.is_empty() {
            vec![FillerParameter {
                r#type: Some("constant".into()),
                value: Some(0.0),
                ..Default::default()
            }]
        } else {
            param.data_filler.clone()
        };
        let mut fillers = Vec::new();
        let mut refill = Vec::new();
        for (i, p) in filler_params.iter().enumerate() {
            let filler = Filler::from_param(p).map_err(|e| {
                LayerError::invalid(format!("dummy_data_param.data_filler[{i}]: {e}"))
            })?;
            refill.push(p.r#type() != "constant");
            fillers.push(filler);
        }
        Ok(DummyDataLayer {
            param,
            fillers,
            refill,
        })
    }

    fn filler_index(&self, top: usize) -> usize {
        if self.fillers.len() > 1 {
            top
        } else {
            0
        }
    }
}

/// Checks that a repeated field is given once or once per top.
fn once_or_per_top(field: &str, len: usize, num_top: usize) -> Result<(), LayerError> {
    if len == 1 || len == num_top {
        Ok(())
    } else {
        Err(LayerError::invalid(format!(
            "dummy_data_param: must specify '{field}' once, or once per top blob ({num_top}); \
             specified {len}"
        )))
    }
}

impl<B: Backend> Layer<B> for DummyDataLayer {
    fn layer_type(&self) -> &'static str {
        "DummyData"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::Exactly(0), Count::AtLeast(1))
    }

    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let num_top = blobs.num_top();
        let p = &self.param;
        let num_fillers = p.data_filler.len();
        if !(num_fillers == 0 || num_fillers == 1 || num_fillers == num_top) {
            return Err(LayerError::invalid(format!(
                "dummy_data_param: number of data fillers must be 0, 1 or equal to the number \
                 of tops: {num_top}; you specified {num_fillers} data fillers"
            )));
        }
        let legacy = !(p.num.is_empty()
            && p.channels.is_empty()
            && p.height.is_empty()
            && p.width.is_empty());
        let pick = |v: &[u32], i: usize| v[if v.len() == 1 { 0 } else { i }] as usize;
        if legacy {
            if !p.shape.is_empty() {
                return Err(LayerError::invalid(
                    "dummy_data_param: both shape and legacy fields (num, channels, height, \
                     width) were specified",
                ));
            }
            once_or_per_top("num", p.num.len(), num_top)?;
            once_or_per_top("channels", p.channels.len(), num_top)?;
            once_or_per_top("height", p.height.len(), num_top)?;
            once_or_per_top("width", p.width.len(), num_top)?;
            for i in 0..num_top {
                let shape = [
                    pick(&p.num, i),
                    pick(&p.channels, i),
                    pick(&p.height, i),
                    pick(&p.width, i),
                ];
                blobs.top_mut(i).reshape(&shape)?;
            }
        } else {
            once_or_per_top("shape", p.shape.len(), num_top)?;
            for i in 0..num_top {
                let shape = &p.shape[if p.shape.len() == 1 { 0 } else { i }];
                blobs.top_mut(i).reshape_proto(shape)?;
            }
        }
        // Constant tops are filled once, here; the others on every forward pass.
        for i in 0..num_top {
            let k = self.filler_index(i);
            let top = blobs.top_mut(i);
            if !self.refill[k] && top.count() > 0 {
                self.fillers[k].fill(top, ctx.rng)?;
            }
        }
        Ok(())
    }

    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }

    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        for i in 0..blobs.num_top() {
            let k = self.filler_index(i);
            let top = blobs.top_mut(i);
            if self.refill[k] && top.count() > 0 {
                self.fillers[k].fill(top, ctx.rng)?;
            }
        }
        Ok(())
    }

    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        Ok(())
    }
}
