//! Helpers for layer tests: a [`LayerHarness`] that builds one layer from a prototxt snippet
//! with its own bottom and top blobs, and a [`GradientChecker`] that compares a layer's
//! backward pass with central finite differences (upstream:
//! include/caffe/test/test_gradient_check_util.hpp).
//!
//! ```
//! use rcaffe::backend::CpuBackend;
//! use rcaffe::testing::{GradientChecker, LayerHarness};
//!
//! let cpu = CpuBackend::new(1).unwrap();
//! let mut h = LayerHarness::from_prototxt(
//!     &cpu,
//!     r#"name: "s" type: "Split" bottom: "x" top: "a" top: "b""#,
//!     &[&[2, 3, 4]],
//!     1701,
//! )
//! .unwrap();
//! h.forward().unwrap();
//! assert_eq!(h.top(1).data_to_vec().unwrap(), h.bottom(0).data_to_vec().unwrap());
//! GradientChecker::new(1e-2, 1e-2).check_exhaustive(&mut h, None).unwrap();
//! ```

use std::fmt;
use std::path::Path;

use crate::backend::{rng_from_seed, Backend, CpuBackend, Distribution, Reduction, Rng, Views};
use crate::blob::Blob;
use crate::layers::{self, Blobs, Context, Error, Layer, LayerError, Params};
use crate::proto::caffe::{LayerParameter, Phase};
use crate::proto::parse_text;

/// A CPU backend with one thread, for tests.
pub fn cpu() -> CpuBackend {
    CpuBackend::new(1).expect("a one-thread CPU backend")
}

/// Parses a `LayerParameter` from prototxt text (`name: "ip" type: "InnerProduct" ...`).
pub fn layer_param(text: &str) -> Result<LayerParameter, crate::proto::ProtoError> {
    parse_text(text, Path::new("<layer prototxt>"))
}

/// One layer with bottoms, tops and parameters of its own, set up as a net would set it up.
///
/// Bottoms take the names in `param.bottom` (or `bottom0`, `bottom1`, ... when none are
/// listed); a top named like the bottom of the same index is that blob (in place). When the
/// prototxt lists no top, the layer gets `exact_num_top`, else `min_num_top`, else one.
pub struct LayerHarness<B: Backend> {
    backend: B,
    param: LayerParameter,
    layer: Box<dyn Layer<B>>,
    store: Vec<Blob<B>>,
    bottom: Vec<usize>,
    top: Vec<usize>,
    params: Vec<Blob<B>>,
    param_ids: Vec<usize>,
    param_propagate_down: Vec<bool>,
    loss_weights: Vec<f32>,
    phase: Phase,
    /// The RNG the layer's calls get; [`LayerHarness::new`] seeds it with `seed`.
    pub rng: Rng,
    seed: u64,
}

impl<B: Backend> LayerHarness<B> {
    /// Builds the layer `text` describes (prototxt of one `LayerParameter`) with bottoms of
    /// `bottom_shapes` filled with N(0, 1) draws, and sets it up. See [`LayerHarness::new`].
    pub fn from_prototxt(
        backend: &B,
        text: &str,
        bottom_shapes: &[&[usize]],
        seed: u64,
    ) -> Result<Self, HarnessError> {
        let param = layer_param(text).map_err(|e| HarnessError::Prototxt(e.to_string()))?;
        Self::new(backend, param, bottom_shapes, seed)
    }

    /// Builds the layer `param` describes with bottoms of `bottom_shapes` filled with N(0, 1)
    /// draws from an RNG seeded with `seed`, and sets it up (counts, in-place check,
    /// `layer_setup`, `reshape`, loss weights). The phase is `param.phase` (TRAIN if unset).
    pub fn new(
        backend: &B,
        param: LayerParameter,
        bottom_shapes: &[&[usize]],
        seed: u64,
    ) -> Result<Self, HarnessError> {
        let layer = layers::create_layer::<B>(&param)?;
        Self::with_layer(backend, param, layer, bottom_shapes, seed)
    }

    /// [`LayerHarness::new`] with a layer built elsewhere (a test's own layer type); `param`
    /// gives its name, bottoms, tops, phase, loss weights and blobs.
    pub fn with_layer(
        backend: &B,
        param: LayerParameter,
        layer: Box<dyn Layer<B>>,
        bottom_shapes: &[&[usize]],
        seed: u64,
    ) -> Result<Self, HarnessError> {
        let mut param = param;
        let (name, kind) = (param.name().to_string(), param.r#type().to_string());
        let named = |e: LayerError| {
            HarnessError::Layer(Error {
                layer: name.clone(),
                layer_type: kind.clone(),
                error: Box::new(e),
            })
        };
        let phase = param.phase();
        param.phase = Some(phase as i32);
        let mut rng = rng_from_seed(seed);

        if param.bottom.is_empty() {
            param.bottom = (0..bottom_shapes.len())
                .map(|i| format!("bottom{i}"))
                .collect();
        } else if param.bottom.len() != bottom_shapes.len() {
            return Err(HarnessError::Setup(format!(
                "the prototxt lists {} bottoms but {} bottom shapes were given",
                param.bottom.len(),
                bottom_shapes.len()
            )));
        }
        let mut store = Vec::new();
        let mut bottom = Vec::new();
        for shape in bottom_shapes {
            let mut blob = Blob::new(backend, shape).map_err(|e| named(e.into()))?;
            let standard_normal = Distribution::Gaussian {
                mean: 0.0,
                std: 1.0,
            };
            backend
                .random(standard_normal, &mut rng, blob.data_view_mut())
                .map_err(|e| named(e.into()))?;
            bottom.push(store.len());
            store.push(blob);
        }
        if param.top.is_empty() {
            let n = layer.counts().tops.least().max(1);
            param.top = (0..n).map(|i| format!("top{i}")).collect();
        }
        let num_top = layers::num_tops_with_auto(layer.as_ref(), param.top.len());
        let mut top = Vec::new();
        for j in 0..num_top {
            let in_place = param
                .top
                .get(j)
                .is_some_and(|name| param.bottom.get(j) == Some(name));
            if let (true, Some(&b)) = (in_place, bottom.get(j)) {
                top.push(b);
            } else {
                top.push(store.len());
                store.push(Blob::empty(backend).map_err(|e| named(e.into()))?);
            }
        }
        let mut h = LayerHarness {
            backend: backend.clone(),
            param,
            layer,
            store,
            bottom,
            top,
            params: Vec::new(),
            param_ids: Vec::new(),
            param_propagate_down: Vec::new(),
            loss_weights: Vec::new(),
            phase,
            rng,
            seed,
        };
        h.setup()
            .map_err(|e| HarnessError::Layer(Error::new(&h.param, e)))?;
        Ok(h)
    }

    fn setup(&mut self) -> Result<(), LayerError> {
        layers::check_blob_counts(self.layer.as_ref(), self.bottom.len(), self.top.len())?;
        for j in 0..self.top.len() {
            if j < self.bottom.len()
                && self.top[j] == self.bottom[j]
                && !self.layer.supports_in_place()
            {
                return Err(LayerError::InPlace {
                    layer_type: self.layer.layer_type().to_string(),
                    index: j,
                    blob: self.param.top[j].clone(),
                });
            }
        }
        let mut ctx = Context {
            backend: &self.backend,
            phase: self.phase,
            rng: &mut self.rng,
        };
        let mut blobs = Blobs::new(&mut self.store, &self.bottom, &self.top);
        let mut params = Vec::new();
        self.layer.layer_setup(&mut ctx, &mut blobs, &mut params)?;
        if !self.param.blobs.is_empty() {
            if self.param.blobs.len() != params.len() {
                return Err(LayerError::invalid(format!(
                    "the prototxt holds {} blobs but the layer has {} parameter blobs",
                    self.param.blobs.len(),
                    params.len()
                )));
            }
            for (blob, proto) in params.iter_mut().zip(&self.param.blobs) {
                blob.from_proto(proto, false)?;
            }
        }
        self.param_ids = (0..params.len()).collect();
        self.param_propagate_down = vec![true; params.len()];
        self.params = params;
        let p = Params::new(
            &mut self.params,
            &self.param_ids,
            &self.param_propagate_down,
        );
        self.layer.reshape(&mut ctx, &mut blobs, &p)?;
        let (weights, implicit) =
            layers::loss_weights(&self.param, self.layer.layer_type(), self.top.len())?;
        if implicit {
            self.param.loss_weight = weights.clone();
        }
        for (j, &w) in weights.iter().enumerate() {
            if w != 0.0 {
                self.backend.fill(w, blobs.top_mut(j).diff_view_mut())?;
            }
        }
        self.loss_weights = weights;
        Ok(())
    }

    fn named(&self, e: LayerError) -> Error {
        Error::new(&self.param, e)
    }

    /// Reshapes and runs the layer's forward pass; returns the weighted loss of its tops
    /// (`sum_j loss_weight_j * dot(top_j.data, top_j.diff)`, as the net computes it).
    pub fn forward(&mut self) -> Result<f32, Error> {
        self.forward_inner().map_err(|e| self.named(e))
    }

    fn forward_inner(&mut self) -> Result<f32, LayerError> {
        let mut ctx = Context {
            backend: &self.backend,
            phase: self.phase,
            rng: &mut self.rng,
        };
        let mut blobs = Blobs::new(&mut self.store, &self.bottom, &self.top);
        let mut p = Params::new(
            &mut self.params,
            &self.param_ids,
            &self.param_propagate_down,
        );
        self.layer.reshape(&mut ctx, &mut blobs, &p)?;
        self.layer.forward(&mut ctx, &mut blobs, &mut p)?;
        let mut loss = 0.0;
        for (j, &w) in self.loss_weights.iter().enumerate() {
            if w != 0.0 {
                let top = blobs.top(j);
                let weighted = Reduction::Dot(top.diff_view());
                loss += self.backend.reduce(weighted, top.data_view())?;
            }
        }
        Ok(loss)
    }

    /// Runs the layer's backward pass with one `propagate_down` flag per bottom.
    pub fn backward(&mut self, propagate_down: &[bool]) -> Result<(), Error> {
        if propagate_down.len() != self.bottom.len() {
            return Err(self.named(LayerError::invalid(format!(
                "propagate_down has {} entries for {} bottoms",
                propagate_down.len(),
                self.bottom.len()
            ))));
        }
        let mut ctx = Context {
            backend: &self.backend,
            phase: self.phase,
            rng: &mut self.rng,
        };
        let mut blobs = Blobs::new(&mut self.store, &self.bottom, &self.top);
        let mut p = Params::new(
            &mut self.params,
            &self.param_ids,
            &self.param_propagate_down,
        );
        let result = self
            .layer
            .backward(&mut ctx, &mut blobs, propagate_down, &mut p);
        result.map_err(|e| self.named(e))
    }

    /// Re-seeds the layer's RNG (the checker does before each forward pass so that a
    /// stochastic layer draws the same numbers).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = rng_from_seed(seed);
    }
    /// The seed the harness was built with.
    pub fn seed(&self) -> u64 {
        self.seed
    }
    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// The layer parameter as set up (bottom and top names filled in, phase set).
    pub fn param(&self) -> &LayerParameter {
        &self.param
    }
    /// The layer.
    pub fn layer(&self) -> &dyn Layer<B> {
        self.layer.as_ref()
    }
    /// The layer, writable.
    pub fn layer_mut(&mut self) -> &mut dyn Layer<B> {
        self.layer.as_mut()
    }
    /// The phase the layer runs in.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// Sets the phase of later calls.
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }
    /// Number of bottoms.
    pub fn num_bottom(&self) -> usize {
        self.bottom.len()
    }
    /// Number of tops.
    pub fn num_top(&self) -> usize {
        self.top.len()
    }
    /// Bottom `i`.
    pub fn bottom(&self, i: usize) -> &Blob<B> {
        &self.store[self.bottom[i]]
    }
    /// Bottom `i`, writable (set inputs here; reshape it and the next forward reshapes the
    /// tops).
    pub fn bottom_mut(&mut self, i: usize) -> &mut Blob<B> {
        &mut self.store[self.bottom[i]]
    }
    /// Top `i`.
    pub fn top(&self, i: usize) -> &Blob<B> {
        &self.store[self.top[i]]
    }
    /// Top `i`, writable (set the diff before [`LayerHarness::backward`]).
    pub fn top_mut(&mut self, i: usize) -> &mut Blob<B> {
        &mut self.store[self.top[i]]
    }
    /// Whether top `i` is bottom `i`.
    pub fn is_in_place(&self, i: usize) -> bool {
        i < self.bottom.len() && self.top[i] == self.bottom[i]
    }
    /// Number of parameter blobs.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }
    /// Parameter blob `k`.
    pub fn param_blob(&self, k: usize) -> &Blob<B> {
        &self.params[k]
    }
    /// Parameter blob `k`, writable.
    pub fn param_blob_mut(&mut self, k: usize) -> &mut Blob<B> {
        &mut self.params[k]
    }
    /// Whether backward computes the gradient of parameter `k` (all true after setup).
    pub fn set_param_propagate_down(&mut self, k: usize, value: bool) {
        self.param_propagate_down[k] = value;
    }
    /// The loss weight of each top.
    pub fn loss_weights(&self) -> &[f32] {
        &self.loss_weights
    }
    /// Fills bottom `i` with N(mean, std^2) draws from the harness RNG.
    pub fn fill_bottom_gaussian(&mut self, i: usize, mean: f32, std: f32) -> Result<(), Error> {
        let bottom = self.store[self.bottom[i]].data_view_mut();
        let gaussian = Distribution::Gaussian { mean, std };
        let r = self.backend.random(gaussian, &mut self.rng, bottom);
        r.map_err(|e| self.named(e.into()))
    }
    /// Fills bottom `i` with U[lo, hi) draws from the harness RNG.
    pub fn fill_bottom_uniform(&mut self, i: usize, lo: f32, hi: f32) -> Result<(), Error> {
        let bottom = self.store[self.bottom[i]].data_view_mut();
        let uniform = Distribution::Uniform { lo, hi };
        let r = self.backend.random(uniform, &mut self.rng, bottom);
        r.map_err(|e| self.named(e.into()))
    }
    /// Sets the data of bottom `i`.
    pub fn set_bottom(&mut self, i: usize, values: &[f32]) -> Result<(), Error> {
        let id = self.bottom[i];
        let r = self.store[id].set_data(values);
        r.map_err(|e| self.named(e.into()))
    }
}

/// What can go wrong building a [`LayerHarness`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HarnessError {
    #[error("{0}")]
    Prototxt(String),
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Layer(#[from] Error),
}

/// Which bottoms a gradient check covers (the parameters are always checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckBottoms {
    /// Every bottom (upstream's `check_bottom = -1`).
    All,
    /// Only this bottom; the others get `propagate_down = false`.
    Only(usize),
    /// No bottom, only the parameters (upstream's `check_bottom < -1`).
    ParamsOnly,
}

impl From<Option<usize>> for CheckBottoms {
    /// `None` is every bottom, `Some(i)` bottom `i` only.
    fn from(v: Option<usize>) -> Self {
        v.map_or(CheckBottoms::All, CheckBottoms::Only)
    }
}

/// One gradient entry whose analytic and numeric values disagree.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// "bottom 0" or "param 1".
    pub blob: String,
    /// The element of that blob.
    pub index: usize,
    /// The objective: `None` is half the sum of squares of every top, `Some((top, element))`
    /// one top element.
    pub objective: Option<(usize, usize)>,
    /// The value of the element.
    pub feature: f32,
    /// What backward computed.
    pub computed: f32,
    /// The central difference.
    pub estimated: f32,
    /// The tolerance it exceeded: `threshold * max(|computed|, |estimated|, 1)`.
    pub tolerance: f32,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let objective = match self.objective {
            None => "sum of squares of all tops / 2".to_string(),
            Some((t, e)) => format!("top {t} element {e}"),
        };
        write!(
            f,
            "{} element {} (value {}): computed {} vs estimated {} (|diff| {} > {}), \
             objective {}",
            self.blob,
            self.index,
            self.feature,
            self.computed,
            self.estimated,
            (self.computed - self.estimated).abs(),
            self.tolerance,
            objective
        )
    }
}

/// What a failed gradient check reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GradientError {
    /// The layer failed to run.
    #[error(transparent)]
    Layer(#[from] Error),
    /// The check cannot be run as asked.
    #[error("gradient check: {0}")]
    Usage(String),
    /// Some gradients disagree; the first few are listed.
    #[error("gradient check of layer '{layer}' failed at {count} of {checked} entries; first: {}",
        first.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; "))]
    Mismatch {
        layer: String,
        count: usize,
        checked: usize,
        first: Vec<Mismatch>,
    },
}

/// Compares a layer's backward pass with central differences of an objective of its tops.
///
/// For every checked element `x` (every parameter, and the bottoms [`CheckBottoms`] selects),
/// the estimate is `(f(x + stepsize) - f(x - stepsize)) / (2 stepsize)` and must be within
/// `threshold * max(|computed|, |estimated|, 1)` of what backward computed, except where
/// `kink - kink_range <= |x| <= kink + kink_range` (a non-smooth point such as ReLU's 0; the
/// default `kink_range` of -1 makes that range empty). The RNG is re-seeded with `seed` before
/// every forward pass, and the bottoms' data is restored, so in-place and stochastic layers
/// can be checked too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientChecker {
    pub stepsize: f32,
    pub threshold: f32,
    pub seed: u64,
    pub kink: f32,
    pub kink_range: f32,
}

impl GradientChecker {
    /// Upstream's defaults besides the two given: seed 1701, no kink.
    pub fn new(stepsize: f32, threshold: f32) -> Self {
        GradientChecker {
            stepsize,
            threshold,
            seed: 1701,
            kink: 0.0,
            kink_range: -1.0,
        }
    }
    /// With a non-smooth region `kink - kink_range <= |x| <= kink + kink_range` left unchecked.
    pub fn with_kink(mut self, kink: f32, kink_range: f32) -> Self {
        self.kink = kink;
        self.kink_range = kink_range;
        self
    }
    /// With another seed for the RNG re-seeded before each forward pass.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Checks the gradient of half the sum of squares of all tops (upstream's `CheckGradient`).
    pub fn check<B: Backend>(
        &self,
        h: &mut LayerHarness<B>,
        bottoms: impl Into<CheckBottoms>,
    ) -> Result<(), GradientError> {
        self.check_single(h, bottoms, None, false)
    }

    /// Checks the gradient of every top element separately (upstream's
    /// `CheckGradientExhaustive`).
    pub fn check_exhaustive<B: Backend>(
        &self,
        h: &mut LayerHarness<B>,
        bottoms: impl Into<CheckBottoms>,
    ) -> Result<(), GradientError> {
        let bottoms = bottoms.into();
        if h.num_top() == 0 {
            return Err(GradientError::Usage(
                "exhaustive mode needs at least one top blob".into(),
            ));
        }
        forward_keeping_bottoms(h)?;
        for t in 0..h.num_top() {
            for e in 0..h.top(t).count() {
                self.check_single(h, bottoms, Some((t, e)), false)?;
            }
        }
        Ok(())
    }

    /// For element-wise layers (`d top[i] / d bottom[j] = 0` for `i != j`): for each element
    /// `e` of top 0, finite differences only for bottom element `e`, and every other computed
    /// entry must be 0 (upstream's `CheckGradientEltwise`). The layer may not have parameters.
    pub fn check_eltwise<B: Backend>(&self, h: &mut LayerHarness<B>) -> Result<(), GradientError> {
        if h.num_params() != 0 {
            return Err(GradientError::Usage(
                "the element-wise check is for layers without parameters".into(),
            ));
        }
        forward_keeping_bottoms(h)?;
        for t in 0..h.num_top() {
            for e in 0..h.top(t).count() {
                self.check_single(h, CheckBottoms::All, Some((t, e)), true)?;
            }
        }
        Ok(())
    }

    /// Checks the gradient of one objective: `None` for half the sum of squares of all tops,
    /// `Some((t, e))` for element `e` of top `t` (times 2, as upstream). With `element_wise`,
    /// only bottom element `e` is differenced and every other entry must be 0.
    pub fn check_single<B: Backend>(
        &self,
        h: &mut LayerHarness<B>,
        bottoms: impl Into<CheckBottoms>,
        objective: Option<(usize, usize)>,
        element_wise: bool,
    ) -> Result<(), GradientError> {
        let (to_check, propagate_down) = check_targets(h, bottoms.into())?;
        let differenced = differenced_element(h, objective, element_wise)?;
        // The inputs, restored before every forward pass (an in-place layer overwrites them).
        let inputs = bottom_values(h)?;
        let computed =
            self.analytic_gradients(h, &inputs, &to_check, &propagate_down, objective)?;
        let mut tally = Tally::default();
        for (&target, computed) in to_check.iter().zip(&computed) {
            let original = match target {
                Target::Bottom(i) => inputs[i].clone(),
                Target::Param(_) => target
                    .blob(h)
                    .data_to_vec()
                    .map_err(|e| GradientError::Layer(h.named(e.into())))?,
            };
            for (index, &feature) in original.iter().enumerate() {
                let estimated = if differenced.is_none_or(|e| e == index) {
                    self.central_difference(h, &inputs, target, index, feature, objective)?
                } else {
                    0.0
                };
                if self.in_kink(feature) {
                    continue;
                }
                tally.checked += 1;
                let computed = computed[index];
                if let Some(tolerance) = self.exceeded_tolerance(computed, estimated) {
                    tally.record(Mismatch {
                        blob: target.name(),
                        index,
                        objective,
                        feature,
                        computed,
                        estimated,
                        tolerance,
                    });
                }
            }
        }
        // Leave the bottoms as they were.
        for (i, values) in inputs.iter().enumerate() {
            h.set_bottom(i, values)?;
        }
        tally.into_result(h.param().name())
    }

    /// What backward computes for each target: the parameter diffs zeroed, a forward pass on
    /// `inputs`, the objective's gradient in the tops' diffs, then backward.
    fn analytic_gradients<B: Backend>(
        &self,
        h: &mut LayerHarness<B>,
        inputs: &[Vec<f32>],
        to_check: &[Target],
        propagate_down: &[bool],
        objective: Option<(usize, usize)>,
    ) -> Result<Vec<Vec<f32>>, GradientError> {
        let layer_error = |h: &LayerHarness<B>, e: LayerError| GradientError::Layer(h.named(e));
        for k in 0..h.num_params() {
            let blob = h.param_blob_mut(k);
            let backend = blob.backend().clone();
            backend
                .fill(0.0, blob.diff_view_mut())
                .map_err(|e| layer_error(h, e.into()))?;
        }
        self.run_forward(h, inputs, None)?;
        objective_and_gradient(h, objective).map_err(|e| layer_error(h, e))?;
        h.backward(propagate_down)?;
        to_check
            .iter()
            .map(|t| t.blob(h).diff_to_vec())
            .collect::<Result<_, _>>()
            .map_err(|e| layer_error(h, e.into()))
    }

    /// The central difference of the objective at element `index` of `target`, whose value is
    /// `feature`; the element is put back afterwards.
    fn central_difference<B: Backend>(
        &self,
        h: &mut LayerHarness<B>,
        inputs: &[Vec<f32>],
        target: Target,
        index: usize,
        feature: f32,
        objective: Option<(usize, usize)>,
    ) -> Result<f32, GradientError> {
        let step = self.stepsize;
        let plus = self.perturbed_objective(h, inputs, target, index, feature + step, objective)?;
        let minus =
            self.perturbed_objective(h, inputs, target, index, feature - step, objective)?;
        self.set_element(h, target, index, feature)?;
        Ok(((plus - minus) / f64::from(step) / 2.0) as f32)
    }

    /// Whether `feature` lies in the non-smooth region left unchecked.
    fn in_kink(&self, feature: f32) -> bool {
        self.kink - self.kink_range <= feature.abs() && feature.abs() <= self.kink + self.kink_range
    }

    /// The tolerance `computed` misses `estimated` by more than, if it does.
    fn exceeded_tolerance(&self, computed: f32, estimated: f32) -> Option<f32> {
        let scale = computed.abs().max(estimated.abs()).max(1.0);
        let tolerance = self.threshold * scale;
        // A non-finite value on either side is a failure: NaN compares false with any
        // tolerance, and an infinity would make the tolerance infinite.
        let bad = !computed.is_finite()
            || !estimated.is_finite()
            || (computed - estimated).abs() > tolerance;
        bad.then_some(tolerance)
    }

    fn run_forward<B: Backend>(
        &self,
        h: &mut LayerHarness<B>,
        inputs: &[Vec<f32>],
        perturb: Option<(Target, usize, f32)>,
    ) -> Result<(), GradientError> {
        for (i, values) in inputs.iter().enumerate() {
            h.set_bottom(i, values)?;
        }
        if let Some((target, index, value)) = perturb {
            self.set_element(h, target, index, value)?;
        }
        h.reseed(self.seed);
        h.forward()?;
        Ok(())
    }

    fn perturbed_objective<B: Backend>(
        &self,
        h: &mut LayerHarness<B>,
        inputs: &[Vec<f32>],
        target: Target,
        index: usize,
        value: f32,
        objective: Option<(usize, usize)>,
    ) -> Result<f64, GradientError> {
        self.run_forward(h, inputs, Some((target, index, value)))?;
        objective_and_gradient(h, objective).map_err(|e| GradientError::Layer(h.named(e)))
    }

    fn set_element<B: Backend>(
        &self,
        h: &mut LayerHarness<B>,
        target: Target,
        index: usize,
        value: f32,
    ) -> Result<(), GradientError> {
        let backend = h.backend().clone();
        let blob = match target {
            Target::Bottom(i) => h.bottom_mut(i),
            Target::Param(k) => h.param_blob_mut(k),
        };
        backend
            .upload(&[value], blob.data_mut().slice_mut(index, 1))
            .map_err(|e| GradientError::Layer(h.named(e.into())))
    }
}

/// The blobs a check covers (every parameter, and the bottoms `bottoms` selects) and, per
/// bottom, whether backward propagates to it.
fn check_targets<B: Backend>(
    h: &LayerHarness<B>,
    bottoms: CheckBottoms,
) -> Result<(Vec<Target>, Vec<bool>), GradientError> {
    let num_bottom = h.num_bottom();
    let mut propagate_down = vec![bottoms == CheckBottoms::All; num_bottom];
    let mut to_check: Vec<Target> = (0..h.num_params()).map(Target::Param).collect();
    match bottoms {
        CheckBottoms::All => to_check.extend((0..num_bottom).map(Target::Bottom)),
        CheckBottoms::Only(i) if i < num_bottom => {
            to_check.push(Target::Bottom(i));
            propagate_down[i] = true;
        }
        CheckBottoms::Only(i) => {
            return Err(GradientError::Usage(format!(
                "bottom {i} to check, but the layer has {num_bottom} bottoms"
            )))
        }
        CheckBottoms::ParamsOnly => {}
    }
    if to_check.is_empty() {
        return Err(GradientError::Usage("no blobs to check".into()));
    }
    Ok((to_check, propagate_down))
}

/// The only element a check differences: with `element_wise`, the objective's top element
/// (every bottom must be as large as that top); otherwise `None`, every element.
fn differenced_element<B: Backend>(
    h: &LayerHarness<B>,
    objective: Option<(usize, usize)>,
    element_wise: bool,
) -> Result<Option<usize>, GradientError> {
    if !element_wise {
        return Ok(None);
    }
    let Some((t, e)) = objective else {
        return Err(GradientError::Usage(
            "the element-wise check needs one top element as objective".into(),
        ));
    };
    let n = h.top(t).count();
    if (0..h.num_bottom()).any(|i| h.bottom(i).count() != n) {
        return Err(GradientError::Usage(
            "the element-wise check needs every bottom as large as the top".into(),
        ));
    }
    Ok(Some(e))
}

/// The bottoms' data.
fn bottom_values<B: Backend>(h: &LayerHarness<B>) -> Result<Vec<Vec<f32>>, GradientError> {
    (0..h.num_bottom())
        .map(|i| h.bottom(i).data_to_vec())
        .collect::<Result<_, _>>()
        .map_err(|e| GradientError::Layer(h.named(LayerError::from(e))))
}

/// A check's failures: how many of how many entries checked, and the first few.
#[derive(Default)]
struct Tally {
    count: usize,
    checked: usize,
    first: Vec<Mismatch>,
}

impl Tally {
    /// How many mismatches a failed check lists.
    const LISTED: usize = 5;

    fn record(&mut self, mismatch: Mismatch) {
        self.count += 1;
        if self.first.len() < Self::LISTED {
            self.first.push(mismatch);
        }
    }

    fn into_result(self, layer: &str) -> Result<(), GradientError> {
        if self.count == 0 {
            return Ok(());
        }
        Err(GradientError::Mismatch {
            layer: layer.to_string(),
            count: self.count,
            checked: self.checked,
            first: self.first,
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Bottom(usize),
    Param(usize),
}

impl Target {
    fn blob<'h, B: Backend>(&self, h: &'h LayerHarness<B>) -> &'h Blob<B> {
        match *self {
            Target::Bottom(i) => h.bottom(i),
            Target::Param(k) => h.param_blob(k),
        }
    }
    fn name(&self) -> String {
        match self {
            Target::Bottom(i) => format!("bottom {i}"),
            Target::Param(k) => format!("param {k}"),
        }
    }
}

/// The objective of the tops and its gradient, written into the tops' diffs (upstream's
/// `GetObjAndGradient`): half the sum of squares of every top (gradient: the data), or twice
/// one top element (gradient: 2 at that element, 0 elsewhere). Accumulated in f64.
fn objective_and_gradient<B: Backend>(
    h: &mut LayerHarness<B>,
    objective: Option<(usize, usize)>,
) -> Result<f64, LayerError> {
    let backend = h.backend().clone();
    match objective {
        None => {
            let mut loss = 0.0f64;
            for t in 0..h.num_top() {
                let data = h.top(t).data_to_vec()?;
                loss += data
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>();
                h.top_mut(t).set_diff(&data)?;
            }
            Ok(loss / 2.0)
        }
        Some((top_id, element)) => {
            if top_id >= h.num_top() || element >= h.top(top_id).count() {
                return Err(LayerError::invalid(format!(
                    "objective top {top_id} element {element} does not exist"
                )));
            }
            for t in 0..h.num_top() {
                backend.fill(0.0, h.top_mut(t).diff_view_mut())?;
            }
            let top = h.top_mut(top_id);
            backend.upload(&[2.0], top.diff_mut().slice_mut(element, 1))?;
            let mut value = [0.0f32];
            backend.download(top.data().slice(element, 1), &mut value)?;
            Ok(f64::from(value[0]) * 2.0)
        }
    }
}

/// Runs a forward pass (to learn the tops' sizes) and puts the bottoms back as they were: an
/// in-place layer overwrites its bottom, and the checks must start from the original inputs.
fn forward_keeping_bottoms<B: Backend>(h: &mut LayerHarness<B>) -> Result<(), GradientError> {
    let inputs = bottom_values(h)?;
    h.forward()?;
    for (i, values) in inputs.iter().enumerate() {
        h.set_bottom(i, values)?;
    }
    Ok(())
}
