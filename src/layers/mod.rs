//! Layers: the [`Layer`] trait every layer type implements, the views of blobs a layer call
//! gets, and the registry that builds a layer from its `LayerParameter` by type name.
//!
//! Upstream's shape (include/caffe/layer.hpp) is kept: a layer reads its parameters and creates
//! its weights once ([`Layer::layer_setup`]), computes its top shapes from its bottom shapes on
//! every forward pass ([`Layer::reshape`]), then runs [`Layer::forward`] and, when the net
//! needs it, [`Layer::backward`].
//!
//! # Writing a layer
//!
//! Adding a layer is one file in `src/layers/` and one line in the `registry!` list at the
//! bottom of this module. The file holds a struct, a `new(param: &LayerParameter) ->
//! Result<Self, LayerError>` constructor that reads and validates the layer's parameters, and an
//! `impl<B: Backend> Layer<B> for ...`. A layer that keeps device buffers of its own (an
//! im2col buffer, a dropout mask) is generic, `struct FooLayer<B: Backend>`, and allocates them
//! with `ctx.backend` in `layer_setup` or `reshape`; the registry infers `B`.
//!
//! * **Blobs.** A layer never owns its bottom and top blobs: the [`Net`](crate::net::Net) owns
//!   every activation blob in one arena and hands each call a [`Blobs`] view: the layer's
//!   bottoms and tops as indices into that arena. Read a bottom with `blobs.bottom(i)`, write a
//!   top with `blobs.top_mut(i)`. To hold several at once (read bottoms while writing tops),
//!   use [`Blobs::forward_all`] / [`Blobs::backward_all`], which return plain `Vec`s of
//!   references; the borrow checker then keeps reads and writes apart.
//! * **In place.** A top can be the very same blob as the bottom of the same index (a prototxt
//!   `bottom: "x" top: "x"`; upstream allows only that pairing, and so do we). A layer that can
//!   run in place says so with [`Layer::supports_in_place`] and uses [`Blobs::forward_io`] /
//!   [`Blobs::backward_io`], which give an [`InOut`]: `Separate { input, output }` or `Same(blob)`;
//!   with `Same` it calls the backend op with [`Src::InPlace`](crate::backend::Src::InPlace).
//!   The net refuses an in-place top for a layer that does not support it, at construction,
//!   with an error naming the layer; `forward_all` / `backward_all` can therefore assume
//!   distinct blobs.
//! * **Weights.** `layer_setup` creates the layer's parameter blobs (weights, biases, running
//!   statistics) by pushing them onto the `params` vector it is given, filled with
//!   [`Filler`](crate::filler::Filler)s drawing from `ctx.rng`. After setup the net owns them
//!   (so that named parameters can be shared between layers and the solver can update them all)
//!   and lends them back to each call as [`Params`]. As upstream, `backward` **accumulates**
//!   (`+=`) weight gradients into `params.get_mut(k).diff`, which the solver zeroes before each
//!   iteration, and skips a weight whose [`Params::propagate_down`] is false (lr_mult 0).
//! * **Loss.** A loss layer writes the loss into its top blob (shape `[]`, count 1); the net
//!   multiplies by the loss weight (`loss_weight`, or the implicit 1 of the first top of a layer
//!   whose type ends in `Loss`), sums, and before the first pass stores the weight in that top's
//!   diff, which a loss layer's `backward` reads as `top.diff[0]` to scale its gradient, as
//!   upstream does.
//! * **Errors.** Every method returns a [`LayerError`]; backend, blob and filler errors convert
//!   with `?`, bad parameters are [`LayerError::invalid`] with a message naming the field
//!   (`"pooling_param.kernel_size must be positive"`). The net and the test harness wrap it in
//!   an [`Error`] naming the layer and its type. Never panic on input: a wrong bottom count is
//!   caught before setup from [`Layer::counts`], a wrong shape is an error from `reshape`.
//! * **Context.** Every call gets a [`Context`]: the backend, the phase (TRAIN/TEST) and the
//!   net's RNG.
//!
//! # Example: a complete layer
//!
//! `y = 2 x`, in place or not:
//!
//! ```
//! use rcaffe::backend::{Backend, Src};
//! use rcaffe::blob::Blob;
//! use rcaffe::layers::{BlobCounts, Blobs, Context, InOut, Layer, LayerError, Params};
//! use rcaffe::proto::caffe::LayerParameter;
//!
//! pub struct DoubleLayer;
//!
//! impl DoubleLayer {
//!     pub fn new(_param: &LayerParameter) -> Result<Self, LayerError> {
//!         Ok(DoubleLayer)
//!     }
//! }
//!
//! impl<B: Backend> Layer<B> for DoubleLayer {
//!     fn layer_type(&self) -> &'static str {
//!         "Double"
//!     }
//!     fn counts(&self) -> BlobCounts {
//!         BlobCounts::exactly(1, 1)
//!     }
//!     fn supports_in_place(&self) -> bool {
//!         true
//!     }
//!     fn reshape(
//!         &mut self,
//!         _ctx: &mut Context<'_, B>,
//!         blobs: &mut Blobs<'_, B>,
//!         _params: &Params<'_, B>,
//!     ) -> Result<(), LayerError> {
//!         if !blobs.is_in_place(0) {
//!             let shape = blobs.bottom(0).shape().to_vec();
//!             blobs.top_mut(0).reshape(&shape)?;
//!         }
//!         Ok(())
//!     }
//!     fn forward(
//!         &mut self,
//!         ctx: &mut Context<'_, B>,
//!         blobs: &mut Blobs<'_, B>,
//!         _params: &mut Params<'_, B>,
//!     ) -> Result<(), LayerError> {
//!         match blobs.forward_io(0) {
//!             InOut::Separate { input, output } => {
//!                 let x = input.data_view().src();
//!                 ctx.backend.scale(2.0.into(), x, output.data_view_mut())?
//!             }
//!             InOut::Same(blob) => {
//!                 ctx.backend.scale(2.0.into(), Src::InPlace, blob.data_view_mut())?
//!             }
//!         }
//!         Ok(())
//!     }
//!     fn backward(
//!         &mut self,
//!         ctx: &mut Context<'_, B>,
//!         blobs: &mut Blobs<'_, B>,
//!         propagate_down: &[bool],
//!         _params: &mut Params<'_, B>,
//!     ) -> Result<(), LayerError> {
//!         if !propagate_down[0] {
//!             return Ok(());
//!         }
//!         match blobs.backward_io(0) {
//!             InOut::Separate { input: top, output: bottom } => {
//!                 let dy = top.diff_view().src();
//!                 ctx.backend.scale(2.0.into(), dy, bottom.diff_view_mut())?
//!             }
//!             InOut::Same(blob) => {
//!                 ctx.backend.scale(2.0.into(), Src::InPlace, blob.diff_view_mut())?
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//! ```
//!
//! and in the registry list: `"Double" => double::DoubleLayer,`. Then a gradient check in
//! `tests/` (see [`crate::testing`]).
//!
//! A layer whose element-wise function no op computes yet adds it as a variant of the op family
//! it belongs to (ELU: [`Activation::Elu`](crate::backend::Activation::Elu)), with its loop in
//! the CPU backend (`backend/cpu/neuron.rs`, one `match` arm per direction), its kernel in
//! `kernels/*.cu` (whose prototype `build.rs` turns into the typed launch arguments and the
//! host emulation's declaration) and the launch in `backend/cuda/backend/ops.rs`, one arm per
//! direction. The op battery in `tests/cuda_kernels/backend.rs` then compares the two backends.
//!
//! # Why a generic trait with index views
//!
//! `Layer<B>` is generic over the backend but object-safe, so a net is a `Vec<Box<dyn
//! Layer<B>>>` with no dynamic dispatch on the backend's ops (each op call is monomorphised for
//! `B`). Blobs live in the net's arena and layers see index views rather than upstream's
//! `shared_ptr<Blob>` (`Rc<RefCell<Blob>>` in Rust): an in-place pair is visible in the type
//! ([`InOut::Same`]) instead of failing at run time as a double `borrow_mut`, a view costs two
//! slices per call, and shared weights are one blob that two layers' [`Params`] both index.

pub mod accuracy;
pub mod argmax;
pub mod base_conv;
pub mod batch_norm;
pub mod batch_reindex;
pub mod bias;
pub mod concat;
pub mod contrastive_loss;
pub mod convolution;
pub mod crop;
pub mod data;
pub mod dropout;
pub mod dummy_data;
pub mod eltwise;
pub mod embed;
pub mod euclidean_loss;
pub mod filter;
pub mod flatten;
pub mod hdf5_data;
pub mod hdf5_output;
pub mod hinge_loss;
pub mod im2col;
pub mod image_data;
pub mod infogain_loss;
pub mod inner_product;
pub mod input;
pub mod loss;
pub mod lrn;
pub mod lstm_unit;
pub mod memory_data;
pub mod multinomial_logistic_loss;
pub mod mvn;
pub mod neuron;
pub mod parameter;
pub mod pooling;
pub mod prelu;
pub mod recurrent;
pub mod reduction;
pub mod reshape;
pub mod scale;
pub mod sigmoid_cross_entropy_loss;
pub mod silence;
pub mod slice;
pub mod softmax;
pub mod softmax_loss;
pub mod split;
pub mod spp;
pub mod tile;
pub mod window_data;

use crate::backend::{Backend, BackendError, Labels, Rng};
use crate::blob::{Blob, BlobError};
use crate::filler::FillerError;
use crate::proto::caffe::{LayerParameter, Phase};

/// What a layer reports when something is wrong. The caller wraps it in an [`Error`] naming
/// the layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayerError {
    /// A parameter is missing or out of range, or the bottoms do not fit the layer. The message
    /// names the field or blob.
    #[error("{0}")]
    Invalid(String),
    /// The layer got a number of bottom or top blobs it does not take.
    #[error("{0}")]
    BlobCount(String),
    /// No layer of this type is registered: the closest registered type when one is close,
    /// and every registered type.
    #[error(
        "unknown layer type \"{kind}\"{} (known types: {})",
        crate::proto::suggestion(kind, LAYER_TYPES),
        sorted_layer_types().join(", ")
    )]
    UnknownType { kind: String },
    /// A top is the same blob as a bottom, and the layer cannot run in place.
    #[error("{layer_type} Layer does not allow in-place computation (top {index} '{blob}' is also bottom {index})")]
    InPlace {
        layer_type: String,
        index: usize,
        blob: String,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Filler(#[from] FillerError),
}

impl LayerError {
    /// A [`LayerError::Invalid`] with this message.
    pub fn invalid(message: impl Into<String>) -> Self {
        LayerError::Invalid(message.into())
    }
}

/// A data layer's source (a database, an image, a window file) could not be read: its
/// message names the file and record.
impl From<crate::data::DataError> for LayerError {
    fn from(error: crate::data::DataError) -> Self {
        LayerError::invalid(error.to_string())
    }
}

/// A [`LayerError`] with the layer it happened in. (Its message includes the error's, so the
/// error is not also given as its source.)
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("layer '{layer}' (type {layer_type}): {error}")]
pub struct Error {
    /// The layer's name.
    pub layer: String,
    /// The layer's type string ("Convolution").
    pub layer_type: String,
    pub error: Box<LayerError>,
}

impl Error {
    /// Names `error` with the layer `param` describes.
    pub fn new(param: &LayerParameter, error: LayerError) -> Self {
        Error {
            layer: param.name().to_string(),
            layer_type: param.r#type().to_string(),
            error: Box::new(error),
        }
    }
}

/// What every layer call gets besides its blobs.
pub struct Context<'a, B: Backend> {
    /// The device the blobs live on; layers compute only through its ops.
    pub backend: &'a B,
    /// TRAIN or TEST: the layer's `phase` (the net's unless the layer sets its own).
    pub phase: Phase,
    /// The net's random number generator (fillers at setup; Dropout's masks in forward).
    pub rng: &'a mut Rng,
}

/// The bottom and top blobs of one layer call: indices into the net's blob arena.
///
/// The accessors panic on an index beyond the layer's bottom or top count: the counts were
/// checked against the layer's declared limits before setup, so such an index is a bug in the
/// layer, not bad input.
pub struct Blobs<'a, B: Backend> {
    store: &'a mut [Blob<B>],
    bottom: &'a [usize],
    top: &'a [usize],
}

/// An input blob and an output blob that may be the same blob (an in-place layer).
pub enum InOut<'s, B: Backend> {
    /// Two distinct blobs.
    Separate {
        input: &'s Blob<B>,
        output: &'s mut Blob<B>,
    },
    /// Input and output are this one blob.
    Same(&'s mut Blob<B>),
}

impl<'a, B: Backend> Blobs<'a, B> {
    /// A view of `store` with these bottom and top indices. Within `bottom` the indices must be
    /// distinct, likewise within `top`; `top[i]` may equal `bottom[i]` (in place) but no other
    /// bottom. The net guarantees this; [`Blobs::check`] verifies it.
    pub fn new(store: &'a mut [Blob<B>], bottom: &'a [usize], top: &'a [usize]) -> Self {
        Blobs { store, bottom, top }
    }

    /// Checks the invariants [`Blobs::new`] states, and that every index lies in the store.
    pub fn check(&self) -> Result<(), String> {
        let len = self.store.len();
        for (what, ids) in [("bottom", self.bottom), ("top", self.top)] {
            for (i, &id) in ids.iter().enumerate() {
                if id >= len {
                    return Err(format!("{what} {i} is blob {id} of a store of {len}"));
                }
                if ids[..i].contains(&id) {
                    return Err(format!("{what} {i} repeats blob {id}"));
                }
            }
        }
        for (j, &t) in self.top.iter().enumerate() {
            if let Some(i) = self.bottom.iter().position(|&b| b == t) {
                if i != j {
                    return Err(format!("top {j} is bottom {i}; only top i may be bottom i"));
                }
            }
        }
        Ok(())
    }

    /// Number of bottom blobs.
    pub fn num_bottom(&self) -> usize {
        self.bottom.len()
    }
    /// Number of top blobs.
    pub fn num_top(&self) -> usize {
        self.top.len()
    }
    /// Bottom `i`.
    pub fn bottom(&self, i: usize) -> &Blob<B> {
        &self.store[self.bottom[i]]
    }
    /// Bottom `i`, writable (its diff in backward).
    pub fn bottom_mut(&mut self, i: usize) -> &mut Blob<B> {
        &mut self.store[self.bottom[i]]
    }
    /// Top `i`.
    pub fn top(&self, i: usize) -> &Blob<B> {
        &self.store[self.top[i]]
    }
    /// Top `i`, writable (its data in forward, its shape in reshape).
    pub fn top_mut(&mut self, i: usize) -> &mut Blob<B> {
        &mut self.store[self.top[i]]
    }
    /// Whether top `i` is the same blob as bottom `i`.
    pub fn is_in_place(&self, i: usize) -> bool {
        i < self.bottom.len() && i < self.top.len() && self.bottom[i] == self.top[i]
    }
    /// Whether any top is a bottom.
    pub fn any_in_place(&self) -> bool {
        (0..self.top.len()).any(|i| self.is_in_place(i))
    }
    /// Bottom `i` as input and top `i` as output, for a forward pass.
    pub fn forward_io(&mut self, i: usize) -> InOut<'_, B> {
        io(self.store, self.bottom[i], self.top[i])
    }
    /// Top `i` as input and bottom `i` as output, for a backward pass.
    pub fn backward_io(&mut self, i: usize) -> InOut<'_, B> {
        io(self.store, self.top[i], self.bottom[i])
    }
    /// All bottoms shared and all tops writable, in their orders. Fails with
    /// [`LayerError::Invalid`] if a top is a bottom (an in-place pair: use
    /// [`Blobs::forward_io`]).
    #[allow(clippy::type_complexity)]
    pub fn forward_all(&mut self) -> Result<(Vec<&Blob<B>>, Vec<&mut Blob<B>>), LayerError> {
        let (shared, exclusive) = split_shared_exclusive(self.store, self.bottom, self.top)?;
        Ok((shared, exclusive))
    }
    /// All tops shared and all bottoms writable, in their orders. Fails if a top is a bottom.
    #[allow(clippy::type_complexity)]
    pub fn backward_all(&mut self) -> Result<(Vec<&Blob<B>>, Vec<&mut Blob<B>>), LayerError> {
        split_shared_exclusive(self.store, self.top, self.bottom)
    }
}

fn io<B: Backend>(store: &mut [Blob<B>], input: usize, output: usize) -> InOut<'_, B> {
    if input == output {
        return InOut::Same(&mut store[input]);
    }
    let mut both = disjoint_mut(store, &[input, output]).expect("distinct indices in the store");
    let output = both.pop().expect("two blobs");
    let input = both.pop().expect("two blobs");
    InOut::Separate {
        input: &*input,
        output,
    }
}

#[allow(clippy::type_complexity)]
fn split_shared_exclusive<'s, B: Backend>(
    store: &'s mut [Blob<B>],
    shared: &[usize],
    exclusive: &[usize],
) -> Result<(Vec<&'s Blob<B>>, Vec<&'s mut Blob<B>>), LayerError> {
    let all: Vec<usize> = shared.iter().chain(exclusive).copied().collect();
    let mut refs = disjoint_mut(store, &all).ok_or_else(|| {
        LayerError::invalid(
            "a top blob is also a bottom blob (in place): this layer must use \
             forward_io/backward_io",
        )
    })?;
    let exclusive = refs.split_off(shared.len());
    Ok((refs.into_iter().map(|r| &*r).collect(), exclusive))
}

/// Mutable references to `slice[indices[k]]` in the order of `indices`, or `None` if an index
/// repeats or lies outside the slice.
pub fn disjoint_mut<'s, T>(slice: &'s mut [T], indices: &[usize]) -> Option<Vec<&'s mut T>> {
    let mut order: Vec<usize> = (0..indices.len()).collect();
    order.sort_unstable_by_key(|&k| indices[k]);
    let mut out: Vec<Option<&'s mut T>> = (0..indices.len()).map(|_| None).collect();
    let mut rest = slice;
    let mut base = 0;
    for k in order {
        let idx = indices[k];
        if idx < base || idx - base >= rest.len() {
            return None;
        }
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(idx - base);
        let (first, tail) = tail.split_first_mut()?;
        out[k] = Some(first);
        rest = tail;
        base = idx + 1;
    }
    out.into_iter().collect()
}

/// The parameter blobs (weights) of one layer call: indices into the net's parameter store,
/// where a shared parameter is one blob indexed by every layer that shares it.
pub struct Params<'a, B: Backend> {
    store: &'a mut [Blob<B>],
    ids: &'a [usize],
    propagate_down: &'a [bool],
}

impl<'a, B: Backend> Params<'a, B> {
    /// A view of `store`: parameter `k` of the layer is `store[ids[k]]`, and its gradient is
    /// wanted when `propagate_down[k]`. `ids` must be distinct.
    pub fn new(store: &'a mut [Blob<B>], ids: &'a [usize], propagate_down: &'a [bool]) -> Self {
        Params {
            store,
            ids,
            propagate_down,
        }
    }
    /// Number of parameter blobs.
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    /// Whether the layer has no parameter blob.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    /// Parameter `k`.
    pub fn get(&self, k: usize) -> &Blob<B> {
        &self.store[self.ids[k]]
    }
    /// Parameter `k`, writable (accumulate its diff in backward; running statistics in
    /// forward).
    pub fn get_mut(&mut self, k: usize) -> &mut Blob<B> {
        &mut self.store[self.ids[k]]
    }
    /// All parameters, writable, in order.
    pub fn all_mut(&mut self) -> Vec<&mut Blob<B>> {
        disjoint_mut(self.store, self.ids).expect("a layer's parameter ids are distinct")
    }
    /// Whether the gradient of parameter `k` is wanted (upstream's `param_propagate_down`;
    /// false for `lr_mult: 0` unless the net forces backward).
    pub fn propagate_down(&self, k: usize) -> bool {
        self.propagate_down.get(k).copied().unwrap_or(false)
    }
}

/// The labels in a label bottom's data (one f32 per position, as Caffe stores them), with the
/// label to skip.
pub fn labels<B: Backend>(label: &Blob<B>, ignore_label: Option<i32>) -> Labels<'_, B::Buffer> {
    Labels {
        values: label.data_view(),
        ignore_label,
    }
}

/// How many bottoms (or tops) a layer takes: one of upstream's `ExactNum…Blobs`,
/// `MinNum…Blobs` and `MaxNum…Blobs`, or both of the last two ([`Count::Range`]); [`Count::Any`]
/// is upstream's -1 for all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Count {
    /// No constraint.
    #[default]
    Any,
    /// Exactly `n`.
    Exactly(usize),
    /// `n` or more.
    AtLeast(usize),
    /// `n` or fewer.
    AtMost(usize),
    /// From `min` to `max`, both included.
    Range(usize, usize),
}

impl Count {
    /// The fewest allowed (0 when there is no lower bound).
    pub const fn least(self) -> usize {
        match self {
            Count::Exactly(n) | Count::AtLeast(n) | Count::Range(n, _) => n,
            Count::Any | Count::AtMost(_) => 0,
        }
    }

    /// Whether `n` is allowed; if not, the bound it breaks as the words upstream's message
    /// puts before the number (`""`, `"at least "`, `"at most "`) and the number.
    fn violation(self, n: usize) -> Option<(&'static str, usize)> {
        match self {
            Count::Exactly(e) if n != e => Some(("", e)),
            Count::AtLeast(min) | Count::Range(min, _) if n < min => Some(("at least ", min)),
            Count::AtMost(max) | Count::Range(_, max) if n > max => Some(("at most ", max)),
            _ => None,
        }
    }
}

/// A layer's bottom and top counts ([`Layer::counts`]), stated in one expression:
/// `BlobCounts::exactly(1, 1)`, or
/// `BlobCounts::new(Count::Exactly(2), Count::Range(1, 2)).with_auto_top_blobs()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BlobCounts {
    /// How many bottoms the layer takes.
    pub bottoms: Count,
    /// How many tops the layer produces.
    pub tops: Count,
    /// Whether the layer produces exactly one top per bottom (upstream's
    /// `EqualNumBottomTopBlobs`).
    pub equal_bottom_top: bool,
    /// Whether the net should create anonymous tops up to [`Count::least`] of `tops` when the
    /// prototxt lists fewer (upstream's `AutoTopBlobs`).
    pub auto_top_blobs: bool,
}

impl BlobCounts {
    /// Any number of bottoms and tops (the default).
    pub const ANY: BlobCounts = BlobCounts::new(Count::Any, Count::Any);

    /// `bottoms` and `tops`, with neither flag.
    pub const fn new(bottoms: Count, tops: Count) -> Self {
        BlobCounts {
            bottoms,
            tops,
            equal_bottom_top: false,
            auto_top_blobs: false,
        }
    }

    /// Exactly `bottoms` bottoms and exactly `tops` tops.
    pub const fn exactly(bottoms: usize, tops: usize) -> Self {
        BlobCounts::new(Count::Exactly(bottoms), Count::Exactly(tops))
    }

    /// The same, with one top per bottom required.
    pub const fn with_equal_bottom_top(self) -> Self {
        BlobCounts {
            equal_bottom_top: true,
            ..self
        }
    }

    /// The same, with anonymous tops created up to the least top count.
    pub const fn with_auto_top_blobs(self) -> Self {
        BlobCounts {
            auto_top_blobs: true,
            ..self
        }
    }
}

/// A layer type. See the [module documentation](self) for how to write one.
pub trait Layer<B: Backend>: Send {
    /// The type string the registry knows this layer by ("Convolution").
    fn layer_type(&self) -> &'static str;

    /// How many bottoms and tops this layer takes (upstream's `ExactNumBottomBlobs` and
    /// friends, as one value); the default takes any number of each.
    fn counts(&self) -> BlobCounts {
        BlobCounts::ANY
    }
    /// Whether `force_backward` may make the net propagate into bottom `bottom_index` (false
    /// for labels).
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        let _ = bottom_index;
        true
    }
    /// Whether top `i` may be the same blob as bottom `i`. Such a layer must use
    /// [`Blobs::forward_io`] / [`Blobs::backward_io`] for those pairs.
    fn supports_in_place(&self) -> bool {
        false
    }

    /// One-time setup (upstream's `LayerSetUp`): validate the bottoms against the parameters,
    /// create the parameter blobs by pushing them onto `params` (filled from `ctx.rng`), and
    /// set the tops' shapes when they do not depend on the bottoms (data and Input layers).
    /// Called once, before the first [`Layer::reshape`].
    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let _ = (ctx, blobs, params);
        Ok(())
    }

    /// Sets the tops' shapes (and any internal buffer's) from the bottoms' shapes. Called after
    /// setup and before every forward pass; should be cheap when nothing changed
    /// ([`Blob::reshape`] keeps its buffers when the count fits).
    fn reshape(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &Params<'_, B>,
    ) -> Result<(), LayerError>;

    /// Computes the tops' data from the bottoms' data (and the parameters).
    fn forward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError>;

    /// Computes the diff of every bottom `i` with `propagate_down[i]` from the tops' diffs,
    /// overwriting it, and accumulates (`+=`) the diff of every parameter `k` with
    /// `params.propagate_down(k)`. `propagate_down` has one entry per bottom.
    fn backward(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError>;

    /// A prefetching data layer's loading times so far (`rcaffe time` reports them beside the
    /// per-layer table); `None` (the default) for every other layer.
    fn load_stats(&self) -> Option<crate::data::prefetch::LoadStats> {
        None
    }

    /// This layer as `Any`, for a program that needs its concrete type (a MemoryData layer fed
    /// with arrays, the object of a Python layer): [`crate::net::Net::layer_as`] downcasts it.
    /// `None` (the default) for layers nobody asks for.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// Checks a layer's bottom and top counts against its declared limits (upstream's
/// `CheckBlobCounts`), with upstream's messages.
pub fn check_blob_counts<B: Backend>(
    layer: &dyn Layer<B>,
    num_bottom: usize,
    num_top: usize,
) -> Result<(), LayerError> {
    let kind = layer.layer_type();
    let counts = layer.counts();
    let fail = |message: String| Err(LayerError::BlobCount(message));
    if let Some((bound, n)) = counts.bottoms.violation(num_bottom) {
        return fail(format!(
            "{kind} Layer takes {bound}{n} bottom blob(s) as input; got {num_bottom}"
        ));
    }
    if let Some((bound, n)) = counts.tops.violation(num_top) {
        return fail(format!(
            "{kind} Layer produces {bound}{n} top blob(s) as output; got {num_top}"
        ));
    }
    if counts.equal_bottom_top && num_bottom != num_top {
        return fail(format!(
            "{kind} Layer produces one top blob as output for each bottom blob input; got \
             {num_bottom} bottom(s) and {num_top} top(s)"
        ));
    }
    Ok(())
}

/// The number of tops a layer ends up with: the listed ones, plus anonymous ones up to the
/// least top count when the layer's [`BlobCounts::auto_top_blobs`] is set.
pub fn num_tops_with_auto<B: Backend>(layer: &dyn Layer<B>, listed: usize) -> usize {
    let counts = layer.counts();
    if counts.auto_top_blobs {
        listed.max(counts.tops.least())
    } else {
        listed
    }
}

/// The loss weight of each top, as upstream's `SetLossWeights` with `LossLayer`'s default:
/// `loss_weight` as given (exactly one per top), or, when none is given and the type ends in
/// `Loss`, 1 for a single top. Returns the weights and whether the implicit 1 was used (the
/// net then records it in the layer's parameter, as upstream's `LossLayer` does).
pub fn loss_weights(
    param: &LayerParameter,
    layer_type: &str,
    num_top: usize,
) -> Result<(Vec<f32>, bool), LayerError> {
    let (weights, implicit) = if param.loss_weight.is_empty() && layer_type.ends_with("Loss") {
        (vec![1.0], true)
    } else {
        (param.loss_weight.clone(), false)
    };
    if weights.is_empty() {
        return Ok((vec![0.0; num_top], false));
    }
    if weights.len() != num_top {
        return Err(LayerError::invalid(format!(
            "loss_weight must be unspecified or specified once per top blob: {} given{} for {} \
             top(s)",
            weights.len(),
            if implicit {
                " (the implicit 1 of a loss layer)"
            } else {
                ""
            },
            num_top
        )));
    }
    Ok((weights, implicit))
}

/// Declares the registry: each line maps a type string to a layer struct with a
/// `new(&LayerParameter) -> Result<Self, LayerError>` constructor.
macro_rules! registry {
    ($($name:literal => $($path:ident)::+),* $(,)?) => {
        /// Every layer type the registry can build, in registration order.
        pub const LAYER_TYPES: &[&str] = &[$($name),*];

        fn construct<B: Backend>(
            kind: &str,
            param: &LayerParameter,
        ) -> Option<Result<Box<dyn Layer<B>>, LayerError>> {
            Some(match kind {
                $($name => $($path)::+::new(param).map(|l| Box::new(l) as Box<dyn Layer<B>>),)*
                _ => return None,
            })
        }
    };
}

// ---- The registry: one line per layer type. -----------------------------------------------
registry! {
    "Input" => input::InputLayer,
    "Split" => split::SplitLayer,
    "Data" => data::DataLayer,
    "DummyData" => dummy_data::DummyDataLayer,
    "ImageData" => image_data::ImageDataLayer,
    "MemoryData" => memory_data::MemoryDataLayer,
    "WindowData" => window_data::WindowDataLayer,
    "HDF5Data" => hdf5_data::Hdf5DataLayer,
    "HDF5Output" => hdf5_output::Hdf5OutputLayer,
    "ReLU" => neuron::ReLULayer,
    "PReLU" => prelu::PReLULayer,
    "Sigmoid" => neuron::SigmoidLayer,
    "TanH" => neuron::TanHLayer,
    "ELU" => neuron::ELULayer,
    "AbsVal" => neuron::AbsValLayer,
    "Power" => neuron::PowerLayer,
    "Exp" => neuron::ExpLayer,
    "Log" => neuron::LogLayer,
    "Clip" => neuron::ClipLayer,
    "Swish" => neuron::SwishLayer,
    "Threshold" => neuron::ThresholdLayer,
    "BNLL" => neuron::BNLLLayer,
    "Dropout" => dropout::DropoutLayer,
    "Concat" => concat::ConcatLayer,
    "Slice" => slice::SliceLayer,
    "Eltwise" => eltwise::EltwiseLayer,
    "Flatten" => flatten::FlattenLayer,
    "Reshape" => reshape::ReshapeLayer,
    "Silence" => silence::SilenceLayer,
    "ArgMax" => argmax::ArgMaxLayer,
    "Convolution" => convolution::ConvolutionLayer,
    "Deconvolution" => convolution::DeconvolutionLayer,
    "Pooling" => pooling::PoolingLayer,
    "SPP" => spp::SppLayer,
    "LRN" => lrn::LrnLayer,
    "MVN" => mvn::MvnLayer,
    "InnerProduct" => inner_product::InnerProductLayer,
    "Crop" => crop::CropLayer,
    "Im2col" => im2col::Im2colLayer,
    "Softmax" => softmax::SoftmaxLayer,
    "SoftmaxWithLoss" => softmax_loss::SoftmaxWithLossLayer,
    "Accuracy" => accuracy::AccuracyLayer,
    "BatchNorm" => batch_norm::BatchNormLayer,
    "Scale" => scale::ScaleLayer,
    "Bias" => bias::BiasLayer,
    "EuclideanLoss" => euclidean_loss::EuclideanLossLayer,
    "SigmoidCrossEntropyLoss" => sigmoid_cross_entropy_loss::SigmoidCrossEntropyLossLayer,
    "HingeLoss" => hinge_loss::HingeLossLayer,
    "MultinomialLogisticLoss" => multinomial_logistic_loss::MultinomialLogisticLossLayer,
    "InfogainLoss" => infogain_loss::InfogainLossLayer,
    "ContrastiveLoss" => contrastive_loss::ContrastiveLossLayer,
    "Tile" => tile::TileLayer,
    "Reduction" => reduction::ReductionLayer,
    "Parameter" => parameter::ParameterLayer,
    "BatchReindex" => batch_reindex::BatchReindexLayer,
    "Filter" => filter::FilterLayer,
    "Embed" => embed::EmbedLayer,
    "LSTMUnit" => lstm_unit::LstmUnitLayer,
    "RNN" => recurrent::RnnLayer,
    "LSTM" => recurrent::LstmLayer,
}

/// Layer types from outside the registry (a test's toy layers, a user's own): returns `None`
/// for a type it does not provide. Consulted before the registry.
pub type LayerFactory<B> = dyn Fn(&LayerParameter) -> Option<Result<Box<dyn Layer<B>>, LayerError>>;

/// Builds the layer `param` describes, by its type string. An unknown type is an error naming
/// the layer and listing the known types.
pub fn create_layer<B: Backend>(param: &LayerParameter) -> Result<Box<dyn Layer<B>>, Error> {
    create_layer_with(param, None)
}

/// Why an upstream layer type that the registry lacks is not there, when there is more to say
/// than "unknown".
fn not_supported(kind: &str) -> Option<&'static str> {
    match kind {
        "Python" => Some(
            "Python layers run in nets built from Python with the rcaffe Python package \
             (`pip install ./python`, then caffe.Net or caffe.get_solver); the rcaffe command \
             line runs no Python",
        ),
        "Recurrent" => Some("upstream's abstract base of RNN and LSTM; use one of those"),
        _ => None,
    }
}

/// [`create_layer`], trying `extra` first.
pub fn create_layer_with<B: Backend>(
    param: &LayerParameter,
    extra: Option<&LayerFactory<B>>,
) -> Result<Box<dyn Layer<B>>, Error> {
    let kind = param.r#type();
    let found = extra
        .and_then(|f| f(param))
        .or_else(|| construct::<B>(kind, param));
    match found {
        Some(result) => result.map_err(|e| Error::new(param, e)),
        None => {
            let error = match not_supported(kind) {
                Some(reason) => {
                    LayerError::invalid(format!("layer type \"{kind}\" is not supported: {reason}"))
                }
                None => LayerError::UnknownType {
                    kind: kind.to_string(),
                },
            };
            Err(Error::new(param, error))
        }
    }
}

/// Every layer type the registry can build, in alphabetical order.
fn sorted_layer_types() -> Vec<&'static str> {
    let mut types = LAYER_TYPES.to_vec();
    types.sort_unstable();
    types
}

/// Every layer type the registry can build, in alphabetical order (pycaffe's
/// `caffe.layer_type_list()`).
pub fn registered_layer_types() -> Vec<&'static str> {
    sorted_layer_types()
}

/// Whether the registry knows `layer_type`.
pub fn is_registered(layer_type: &str) -> bool {
    LAYER_TYPES.contains(&layer_type)
}
