//! The net: layers wired by blob names, built with Caffe's rules (upstream: src/caffe/net.cpp).
//!
//! [`Net::new`] filters the layers by the net's state ([`filter`]), inserts Split layers where
//! a blob has several consumers ([`splits`]), builds each layer from the registry, connects
//! bottoms and tops (a top named like the bottom of the same index is that blob: in place),
//! sets each layer up, shares named parameters, and works out which layers need a backward
//! pass. It logs what upstream logs while doing so, in the same words and order; the lines are
//! also kept ([`Net::init_log`]) for comparison with upstream's logs.
//!
//! # Ownership
//!
//! The net owns every activation blob in one arena (`blobs`, indexed by blob id) and every
//! learnable parameter blob in another (`learnable_params`). Layers get index views of both
//! for each call ([`crate::layers::Blobs`], [`crate::layers::Params`]). A parameter shared by
//! name is one blob in the parameter arena that several layers index, so its data and its
//! accumulated diff are shared, as upstream's `ShareData`/`ShareDiff`.

pub mod filter;
pub mod splits;
mod weights;
mod weights_hdf5;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::backend::{Backend, Reduction, Rng};
use crate::blob::{Blob, BlobError};
use crate::layers::memory_data::MemoryDataLayer;
use crate::layers::{self, Blobs, Context, Layer, LayerError, LayerFactory, Params};
use crate::log::cpp_float;
use crate::proto::caffe::param_spec::DimCheckMode;
use crate::proto::caffe::{LayerParameter, NetParameter, NetState, ParamSpec, Phase};
use crate::proto::{NetOrigin, ProtoError};

/// What can go wrong building or running a net.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A layer failed (setup, reshape, forward, backward): names the layer and its type.
    #[error(transparent)]
    Layer(#[from] layers::Error),
    /// The net's structure is wrong (an unknown bottom, a top produced twice, a bad rule,
    /// mismatched shared parameters).
    #[error("net '{net}': {message}")]
    Build { net: String, message: String },
    /// Copying trained weights failed.
    #[error("{0}")]
    Weights(String),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Proto(#[from] ProtoError),
    /// An error placed in the file the net was read from, at the line of the field at fault
    /// when the file writes it there.
    #[error("{}{}: {error}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    InFile {
        path: std::path::PathBuf,
        line: Option<usize>,
        error: Box<NetError>,
    },
}

impl NetError {
    /// Places an unknown layer type in the file the net was read from (`origin`), at its `type`
    /// field. Other errors are returned as they are.
    pub fn placed_in(self, origin: &NetOrigin) -> NetError {
        let NetError::Layer(layer_error) = &self else {
            return self;
        };
        if !matches!(*layer_error.error, LayerError::UnknownType { .. }) {
            return self;
        }
        let line = origin.layer_type_line(&layer_error.layer, &layer_error.layer_type);
        NetError::InFile {
            path: origin.path.clone(),
            line,
            error: Box::new(self),
        }
    }
}

/// Result of a net operation.
pub type Result<T> = std::result::Result<T, NetError>;

/// Whether upstream's version of this layer builds an inner layer through its registry during
/// setup, which logs a second "Creating layer X" line before "Setting up X": SoftmaxWithLoss and
/// InfogainLoss (a Softmax), Scale with `bias_term` (a Bias).
fn builds_inner_layer(param: &LayerParameter) -> bool {
    match param.r#type() {
        "SoftmaxWithLoss" | "InfogainLoss" => true,
        "Scale" => param.scale_param.as_ref().is_some_and(|p| p.bias_term()),
        _ => false,
    }
}

/// A net of layers on backend `B`.
pub struct Net<B: Backend> {
    backend: B,
    name: String,
    phase: Phase,
    rng: Rng,
    debug_info: bool,
    force_backward: bool,

    layers: Vec<NetLayer<B>>,

    /// The activation blobs by blob id: the store the layers' [`Blobs`] views index.
    blobs: Vec<Blob<B>>,
    /// What the net knows of each activation blob, by blob id.
    blob_info: Vec<BlobInfo>,
    input_blob_ids: Vec<usize>,
    output_blob_ids: Vec<usize>,

    /// The learnable parameters: one blob per owner (an unnamed parameter or the first
    /// occurrence of a name), the store the layers' [`Params`] views index.
    learnable_params: Vec<Blob<B>>,
    /// Per learnable parameter: its learning multipliers.
    param_multipliers: Vec<Multipliers>,
    /// Every (layer, parameter) pair, in order ("net params" upstream).
    net_params: Vec<NetParam>,
    /// The net param that owns each parameter name.
    param_names_index: HashMap<String, usize>,

    blob_names_index: HashMap<String, usize>,
    layer_names_index: HashMap<String, usize>,
    /// Whether some weights are another net's memory too (see
    /// `Net::share_trained_layers_with`).
    shares_weights: bool,
    memory_used: u64,
    init_log: Vec<String>,
}

/// A layer of the net and how it is wired. The per-bottom, per-top and per-parameter lists are
/// kept apart because the layer's views of the stores ([`Blobs`], [`Params`]) take them as
/// slices.
struct NetLayer<B: Backend> {
    layer: Box<dyn Layer<B>>,
    /// The parameter the net built the layer from, as the net uses it (Split bottoms renamed,
    /// phase set, the implicit loss weight recorded).
    param: LayerParameter,
    need_backward: bool,
    /// The blob ids of the bottoms.
    bottoms: Vec<usize>,
    /// Per bottom: whether backward computes its diff.
    bottom_need_backward: Vec<bool>,
    /// The blob ids of the tops.
    tops: Vec<usize>,
    /// Per top: its loss weight.
    top_loss_weights: Vec<f32>,
    /// Per parameter: its learnable parameter index.
    learnable_ids: Vec<usize>,
    /// Per parameter: whether backward computes its gradient.
    param_propagate_down: Vec<bool>,
    /// Per parameter: its net param id.
    net_param_ids: Vec<usize>,
}

/// What the net knows of an activation blob besides its contents.
struct BlobInfo {
    name: String,
    /// Whether some layer computes its diff.
    need_backward: bool,
    /// The loss weight of the top that produces it.
    loss_weight: f32,
}

/// One parameter of one layer (upstream keeps these in parallel "net params" arrays).
#[derive(Clone, Debug, PartialEq)]
pub struct NetParam {
    /// The layer that has the parameter.
    pub layer: usize,
    /// The parameter's index in its layer.
    pub index: usize,
    /// Its name, or its index in its layer when unnamed.
    pub display_name: String,
    /// The net param that owns the blob, when this one shares it by name.
    pub owner: Option<usize>,
    /// The learnable parameter that holds the blob.
    pub learnable_id: usize,
}

/// A learnable parameter's multipliers: as the layers that use it give them (they must agree),
/// or unset where none does.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Multipliers {
    pub lr_mult: Option<f32>,
    pub decay_mult: Option<f32>,
}

impl Multipliers {
    fn given_by(spec: &ParamSpec) -> Self {
        Multipliers {
            lr_mult: spec.lr_mult,
            decay_mult: spec.decay_mult,
        }
    }
    /// The `lr_mult` in force: the given one or `ParamSpec`'s default.
    pub fn lr(&self) -> f32 {
        self.lr_mult
            .unwrap_or_else(|| ParamSpec::default().lr_mult())
    }
    /// The `decay_mult` in force: the given one or `ParamSpec`'s default.
    pub fn decay(&self) -> f32 {
        self.decay_mult
            .unwrap_or_else(|| ParamSpec::default().decay_mult())
    }
}

/// The multiplier `held` for a shared parameter after a sharing layer gives `given`: taken when
/// none was held; a different one is refused with the one held.
fn share_multiplier(held: &mut Option<f32>, given: Option<f32>) -> std::result::Result<(), f32> {
    match (*held, given) {
        (Some(held), Some(given)) if held != given => Err(held),
        (None, Some(given)) => {
            *held = Some(given);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The blobs by name while the layers are wired.
#[derive(Default)]
struct Wiring {
    /// Every named top so far.
    blob_ids: HashMap<String, usize>,
    /// The tops no later layer has consumed yet: the outputs, once every layer is wired.
    available: BTreeSet<String>,
}

/// Layer `i` ready for a call: the layer, its context, and its views of the stores.
struct LayerCall<'a, B: Backend> {
    layer: &'a mut dyn Layer<B>,
    param: &'a LayerParameter,
    bottom_need_backward: &'a [bool],
    top_loss_weights: &'a [f32],
    ctx: Context<'a, B>,
    blobs: Blobs<'a, B>,
    params: Params<'a, B>,
}

impl<B: Backend> LayerCall<'_, B> {
    /// `error` as a net error naming the layer.
    fn error(&self, error: LayerError) -> NetError {
        NetError::Layer(layers::Error::new(self.param, error))
    }
}

/// Records a log line: sends it to the `log` facade and keeps it.
fn emit(log: &mut Vec<String>, line: String) {
    log::info!("{line}");
    log.push(line);
}

impl<B: Backend> Net<B> {
    /// Reads a net prototxt and builds it for `phase`, `level` and `stages`, as upstream's
    /// `Net(param_file, phase, level, stages)`: those replace the file's state phase and level
    /// and add to its stages.
    pub fn from_file(
        path: &Path,
        phase: Phase,
        level: i32,
        stages: &[String],
        backend: &B,
        rng: Rng,
    ) -> Result<Self> {
        let mut param = crate::proto::read_net(path)?;
        let state = param.state.get_or_insert_with(NetState::default);
        state.phase = Some(phase as i32);
        state.stage.extend(stages.iter().cloned());
        state.level = Some(level);
        Self::new(&param, backend, rng).map_err(|e| e.placed_in(&NetOrigin::file(path)))
    }

    /// Builds the net `param` describes, in the phase, level and stages of `param.state`, with
    /// its blobs on `backend`; `rng` initialises the weights and feeds stochastic layers.
    pub fn new(param: &NetParameter, backend: &B, rng: Rng) -> Result<Self> {
        Self::build(param, backend, rng, None)
    }

    /// [`Net::new`] with layer types from `factory` besides the registry's (tried first).
    pub fn new_with_factory(
        param: &NetParameter,
        backend: &B,
        rng: Rng,
        factory: &LayerFactory<B>,
    ) -> Result<Self> {
        Self::build(param, backend, rng, Some(factory))
    }

    fn build(
        param: &NetParameter,
        backend: &B,
        rng: Rng,
        factory: Option<&LayerFactory<B>>,
    ) -> Result<Self> {
        let net_name = param.name().to_string();
        let build_err = |message: String| NetError::Build {
            net: net_name.clone(),
            message,
        };
        let phase = param.state.clone().unwrap_or_default().phase();
        let mut log = Vec::new();
        let (filtered, filter_log) = filter::filter_net(param).map_err(build_err)?;
        for line in filter_log {
            emit(&mut log, line);
        }
        let text = crate::proto::print_text(&filtered);
        emit(
            &mut log,
            format!(
                "Initializing net from parameters: \n{}",
                text.trim_end_matches('\n')
            ),
        );
        let split = splits::insert_splits(&filtered).map_err(build_err)?;

        let mut net = Net {
            backend: backend.clone(),
            name: split.name().to_string(),
            phase,
            rng,
            debug_info: split.debug_info(),
            force_backward: split.force_backward(),
            layers: Vec::new(),
            blobs: Vec::new(),
            blob_info: Vec::new(),
            input_blob_ids: Vec::new(),
            output_blob_ids: Vec::new(),
            learnable_params: Vec::new(),
            param_multipliers: Vec::new(),
            net_params: Vec::new(),
            param_names_index: HashMap::new(),
            blob_names_index: HashMap::new(),
            layer_names_index: HashMap::new(),
            shares_weights: false,
            memory_used: 0,
            init_log: log,
        };
        net.init(split, factory)?;
        Ok(net)
    }

    fn build_error(&self, message: String) -> NetError {
        NetError::Build {
            net: self.name.clone(),
            message,
        }
    }

    fn log(&mut self, line: String) {
        emit(&mut self.init_log, line);
    }

    /// Layer `i` ready for a call.
    fn call(&mut self, i: usize) -> LayerCall<'_, B> {
        let NetLayer {
            layer,
            param,
            bottoms,
            bottom_need_backward,
            tops,
            top_loss_weights,
            learnable_ids,
            param_propagate_down,
            ..
        } = &mut self.layers[i];
        LayerCall {
            layer: layer.as_mut(),
            param,
            bottom_need_backward,
            top_loss_weights,
            ctx: Context {
                backend: &self.backend,
                phase: param.phase(),
                rng: &mut self.rng,
            },
            blobs: Blobs::new(&mut self.blobs, bottoms, tops),
            params: Params::new(
                &mut self.learnable_params,
                learnable_ids,
                param_propagate_down,
            ),
        }
    }

    fn init(&mut self, param: NetParameter, factory: Option<&LayerFactory<B>>) -> Result<()> {
        let mut wiring = Wiring::default();
        for (layer_id, mut lp) in param.layer.into_iter().enumerate() {
            if lp.phase.is_none() {
                lp.phase = Some(self.phase as i32);
            }
            self.check_propagate_down(&lp)?;
            self.log(format!("Creating layer {}", lp.name()));
            let layer = layers::create_layer_with::<B>(&lp, factory)?;
            self.log(format!("Creating Layer {}", lp.name()));
            let net_layer = self.connect(layer, lp, &mut wiring)?;
            self.layers.push(net_layer);
            let sharing_log = self.setup_layer(layer_id)?;
            self.decide_param_learning(layer_id);
            for line in sharing_log {
                self.log(line);
            }
            let layer = &self.layers[layer_id];
            if layer.need_backward {
                for &id in &layer.tops {
                    self.blob_info[id].need_backward = true;
                }
            }
        }
        self.decide_backward();
        for name in &wiring.available {
            emit(
                &mut self.init_log,
                format!("This network produces output {name}"),
            );
            self.output_blob_ids.push(wiring.blob_ids[name]);
        }
        for (id, info) in self.blob_info.iter().enumerate() {
            self.blob_names_index.insert(info.name.clone(), id);
        }
        for (id, layer) in self.layers.iter().enumerate() {
            self.layer_names_index
                .insert(layer.param.name().to_string(), id);
        }
        self.log("Network initialization done.".to_string());
        Ok(())
    }

    fn check_propagate_down(&self, lp: &LayerParameter) -> Result<()> {
        if !lp.propagate_down.is_empty() && lp.propagate_down.len() != lp.bottom.len() {
            return Err(self.build_error(format!(
                "layer '{}': propagate_down must be specified either 0 or bottom_size ({}) \
                 times, not {}",
                lp.name(),
                lp.bottom.len(),
                lp.propagate_down.len()
            )));
        }
        Ok(())
    }

    /// Wires `layer` to its bottoms and tops, creating the tops it introduces.
    fn connect(
        &mut self,
        layer: Box<dyn Layer<B>>,
        param: LayerParameter,
        wiring: &mut Wiring,
    ) -> Result<NetLayer<B>> {
        let (bottoms, bottom_need_backward) = self.connect_bottoms(&param, wiring)?;
        let need_backward = bottoms.iter().any(|&id| self.blob_info[id].need_backward);
        let tops = self.connect_tops(layer.as_ref(), &param, wiring)?;
        Ok(NetLayer {
            layer,
            param,
            need_backward,
            bottoms,
            bottom_need_backward,
            tops,
            top_loss_weights: Vec::new(),
            learnable_ids: Vec::new(),
            param_propagate_down: Vec::new(),
            net_param_ids: Vec::new(),
        })
    }

    /// The layer's bottoms (each consumes an available top) and whether each needs backward.
    fn connect_bottoms(
        &mut self,
        lp: &LayerParameter,
        wiring: &mut Wiring,
    ) -> Result<(Vec<usize>, Vec<bool>)> {
        let mut ids = Vec::new();
        let mut need_backward = Vec::new();
        for (j, blob_name) in lp.bottom.iter().enumerate() {
            if !wiring.available.remove(blob_name) {
                return Err(self.build_error(format!(
                    "Unknown bottom blob '{blob_name}' (layer '{}', bottom index {j})",
                    lp.name()
                )));
            }
            let id = wiring.blob_ids[blob_name];
            self.log(format!("{} <- {}", lp.name(), blob_name));
            ids.push(id);
            need_backward.push(match lp.propagate_down.get(j) {
                Some(&propagate) => propagate,
                None => self.blob_info[id].need_backward,
            });
        }
        Ok((ids, need_backward))
    }

    /// The layer's tops: a top named like the bottom of its index is that blob (in place), any
    /// other is a new blob; then anonymous ones for a layer that wants more.
    fn connect_tops(
        &mut self,
        layer: &dyn Layer<B>,
        lp: &LayerParameter,
        wiring: &mut Wiring,
    ) -> Result<Vec<usize>> {
        let mut ids = Vec::new();
        for (j, blob_name) in lp.top.iter().enumerate() {
            let id = if lp.bottom.get(j) == Some(blob_name) {
                self.log(format!("{} -> {} (in-place)", lp.name(), blob_name));
                wiring.blob_ids[blob_name]
            } else if wiring.blob_ids.contains_key(blob_name) {
                return Err(self.build_error(format!(
                    "Top blob '{blob_name}' produced by multiple sources (layer '{}', top \
                     index {j})",
                    lp.name()
                )));
            } else {
                self.log(format!("{} -> {}", lp.name(), blob_name));
                let id = self.new_blob(blob_name)?;
                wiring.blob_ids.insert(blob_name.clone(), id);
                id
            };
            ids.push(id);
            wiring.available.insert(blob_name.clone());
            if lp.r#type() == "Input" {
                self.input_blob_ids.push(id);
            }
        }
        let num_top = layers::num_tops_with_auto(layer, lp.top.len());
        for _ in lp.top.len()..num_top {
            self.log(format!("{} -> (automatic)", lp.name()));
            ids.push(self.new_blob("(automatic)")?);
        }
        Ok(ids)
    }

    fn new_blob(&mut self, name: &str) -> Result<usize> {
        let id = self.blobs.len();
        let mut blob = Blob::empty(&self.backend)?;
        blob.set_name(name);
        self.blobs.push(blob);
        self.blob_info.push(BlobInfo {
            name: name.to_string(),
            need_backward: false,
            loss_weight: 0.0,
        });
        Ok(id)
    }

    /// Sets up layer `layer_id` (upstream's `Layer::SetUp`, then `AppendParam` for each of its
    /// parameters) and logs its shapes. Returns the "Sharing parameters" lines, which upstream
    /// logs after the memory line.
    fn setup_layer(&mut self, layer_id: usize) -> Result<Vec<String>> {
        let created = self.run_layer_setup(layer_id)?;
        // Parameters: own ones go to the learnable store, named ones seen before are shared.
        let sharing_log = self.append_params(layer_id, created)?;
        self.first_reshape(layer_id)?;
        self.log_setup(layer_id);
        Ok(sharing_log)
    }

    /// Checks layer `layer_id`'s wiring and runs its `layer_setup`; returns the parameter blobs
    /// it creates, holding the values the net file gives them.
    fn run_layer_setup(&mut self, layer_id: usize) -> Result<Vec<Blob<B>>> {
        let layer = &self.layers[layer_id];
        let first_in_place = layer
            .tops
            .iter()
            .zip(&layer.bottoms)
            .position(|(top, bottom)| top == bottom)
            .map(|j| (j, self.blob_info[layer.tops[j]].name.clone()));
        let mut call = self.call(layer_id);
        layers::check_blob_counts(call.layer, call.blobs.num_bottom(), call.blobs.num_top())
            .map_err(|e| call.error(e))?;
        if let Some((index, blob)) = first_in_place {
            if !call.layer.supports_in_place() {
                let layer_type = call.layer.layer_type().to_string();
                return Err(call.error(LayerError::InPlace {
                    layer_type,
                    index,
                    blob,
                }));
            }
        }
        call.blobs
            .check()
            .map_err(|m| call.error(LayerError::invalid(m)))?;
        let mut created = Vec::new();
        call.layer
            .layer_setup(&mut call.ctx, &mut call.blobs, &mut created)
            .map_err(|e| call.error(e))?;
        let lp = call.param;
        if !lp.blobs.is_empty() {
            if lp.blobs.len() != created.len() {
                return Err(call.error(LayerError::invalid(format!(
                    "the net file holds {} blobs for this layer, which has {} parameter \
                     blobs",
                    lp.blobs.len(),
                    created.len()
                ))));
            }
            for (blob, proto) in created.iter_mut().zip(&lp.blobs) {
                blob.from_proto(proto, false)
                    .map_err(|e| call.error(e.into()))?;
            }
        }
        if lp.param.len() > created.len() {
            return Err(call.error(LayerError::invalid(format!(
                "Too many params specified for layer {}: {} param specs for {} parameter \
                 blobs",
                lp.name(),
                lp.param.len(),
                created.len()
            ))));
        }
        Ok(created)
    }

    /// Upstream's `AppendParam` for each parameter blob of layer `layer_id`: an unnamed
    /// parameter, or the first of a name, gets a learnable parameter of its own; a later one of
    /// the name shares its owner's.
    fn append_params(&mut self, layer_id: usize, created: Vec<Blob<B>>) -> Result<Vec<String>> {
        let mut sharing_log = Vec::new();
        for (index, blob) in created.into_iter().enumerate() {
            let layer_param = &self.layers[layer_id].param;
            let spec = layer_param.param.get(index).cloned().unwrap_or_default();
            let name = spec.name();
            let net_param_id = self.net_params.len();
            let owner = if name.is_empty() {
                None
            } else {
                self.param_names_index.get(name).copied()
            };
            let learnable_id = match owner {
                None => {
                    if !name.is_empty() {
                        self.param_names_index
                            .insert(name.to_string(), net_param_id);
                    }
                    self.learnable_params.push(blob);
                    self.param_multipliers.push(Multipliers::given_by(&spec));
                    self.learnable_params.len() - 1
                }
                Some(owner) => {
                    sharing_log.push(self.share_param(layer_id, index, owner, &blob, &spec)?);
                    self.net_params[owner].learnable_id
                }
            };
            self.net_params.push(NetParam {
                layer: layer_id,
                index,
                display_name: if name.is_empty() {
                    index.to_string()
                } else {
                    name.to_string()
                },
                owner,
                learnable_id,
            });
            let layer = &mut self.layers[layer_id];
            layer.learnable_ids.push(learnable_id);
            layer.net_param_ids.push(net_param_id);
            // Every parameter propagates during setup; `decide_param_learning` settles it after.
            layer.param_propagate_down.push(true);
        }
        Ok(sharing_log)
    }

    /// Checks that parameter `index` of layer `layer_id` (its blob `blob`, its spec `spec`) may
    /// share the blob of net param `owner`, and merges its multipliers into the owner's.
    /// Returns the "Sharing parameters" line.
    fn share_param(
        &mut self,
        layer_id: usize,
        index: usize,
        owner: usize,
        blob: &Blob<B>,
        spec: &ParamSpec,
    ) -> Result<String> {
        let name = spec.name();
        let owner = &self.net_params[owner];
        let owner_layer = self.layers[owner.layer].param.name();
        let sharer = &self.layers[layer_id];
        let sharer_name = sharer.param.name();
        let learnable_id = owner.learnable_id;
        let owner_blob = &self.learnable_params[learnable_id];
        let permissive =
            spec.share_mode() == DimCheckMode::Permissive && sharer.param.param.len() > index;
        if permissive && owner_blob.count() != blob.count() {
            return Err(self.build_error(format!(
                "Cannot share param '{name}' owned by layer '{owner_layer}' with layer \
                 '{sharer_name}'; count mismatch.  Owner layer param shape is {}; sharing layer \
                 shape is {}",
                owner_blob.shape_string(),
                blob.shape_string()
            )));
        }
        if !permissive && owner_blob.shape() != blob.shape() {
            return Err(self.build_error(format!(
                "Cannot share param '{name}' owned by layer '{owner_layer}' with layer \
                 '{sharer_name}'; shape mismatch.  Owner layer param shape is {}; sharing layer \
                 expects shape {}",
                owner_blob.shape_string(),
                blob.shape_string()
            )));
        }
        if sharer.learnable_ids.contains(&learnable_id) {
            return Err(self.build_error(format!(
                "layer '{sharer_name}' shares param '{name}' with itself"
            )));
        }
        let line = format!(
            "Sharing parameters '{name}' owned by layer '{owner_layer}', param index {}",
            owner.index
        );
        let held = &mut self.param_multipliers[learnable_id];
        if let Err(owners) = share_multiplier(&mut held.lr_mult, spec.lr_mult) {
            return Err(self.build_error(format!(
                "Shared param '{name}' has mismatched lr_mult (layer '{sharer_name}' gives {}, \
                 the owner {owners})",
                spec.lr_mult()
            )));
        }
        if let Err(owners) = share_multiplier(&mut held.decay_mult, spec.decay_mult) {
            return Err(self.build_error(format!(
                "Shared param '{name}' has mismatched decay_mult (layer '{sharer_name}' gives \
                 {}, the owner {owners})",
                spec.decay_mult()
            )));
        }
        Ok(line)
    }

    /// Layer `layer_id`'s first reshape; then its loss weights, each written into its top's
    /// diff, where backward starts.
    fn first_reshape(&mut self, layer_id: usize) -> Result<()> {
        let mut call = self.call(layer_id);
        call.layer
            .reshape(&mut call.ctx, &mut call.blobs, &call.params)
            .map_err(|e| call.error(e))?;
        let (weights, implicit) =
            layers::loss_weights(call.param, call.layer.layer_type(), call.blobs.num_top())
                .map_err(|e| call.error(e))?;
        for (j, &weight) in weights.iter().enumerate() {
            if weight != 0.0 {
                let top = call.blobs.top_mut(j);
                call.ctx
                    .backend
                    .fill(weight, top.diff_view_mut())
                    .map_err(|e| call.error(e.into()))?;
            }
        }
        let layer = &mut self.layers[layer_id];
        for (&id, &weight) in layer.tops.iter().zip(&weights) {
            self.blob_info[id].loss_weight = weight;
        }
        if implicit {
            layer.param.loss_weight = weights.clone();
        }
        layer.top_loss_weights = weights;
        Ok(())
    }

    /// Logs layer `layer_id`'s setup (its tops' shapes and loss weights) and the memory the
    /// tops of the layers so far take.
    fn log_setup(&mut self, layer_id: usize) {
        let layer = &self.layers[layer_id];
        let name = layer.param.name();
        let mut lines = Vec::new();
        if builds_inner_layer(&layer.param) {
            lines.push(format!("Creating layer {name}"));
        }
        lines.push(format!("Setting up {name}"));
        for (&id, &weight) in layer.tops.iter().zip(&layer.top_loss_weights) {
            let top = &self.blobs[id];
            lines.push(format!("Top shape: {}", top.shape_string()));
            if weight != 0.0 {
                lines.push(format!(
                    "    with loss weight {}",
                    cpp_float(f64::from(weight))
                ));
            }
            self.memory_used += top.count() as u64;
        }
        lines.push(format!("Memory required for data: {}", self.memory_used()));
        for line in lines {
            self.log(line);
        }
    }

    /// Which of layer `layer_id`'s parameters learn: those whose own spec has a nonzero
    /// `lr_mult`. A layer with one needs backward.
    fn decide_param_learning(&mut self, layer_id: usize) {
        let layer = &mut self.layers[layer_id];
        let default_spec = ParamSpec::default();
        for (k, learns) in layer.param_propagate_down.iter_mut().enumerate() {
            let spec = layer.param.param.get(k).unwrap_or(&default_spec);
            *learns = spec.lr_mult() != 0.0;
            layer.need_backward |= *learns;
        }
    }

    /// Upstream's backward analysis: walking the layers from the last, a layer needs backward
    /// only if some top is a loss or feeds a loss, and not if every top's consumers skip
    /// propagating to it; then `force_backward`.
    fn decide_backward(&mut self) {
        let mut under_loss: BTreeSet<String> = BTreeSet::new();
        let mut skip_backprop: BTreeSet<String> = BTreeSet::new();
        let blob_name = |id: usize| self.blob_info[id].name.as_str();
        for layer in self.layers.iter_mut().rev() {
            let mut contributes_loss = false;
            let mut skip_propagate_down = true;
            for (&id, &weight) in layer.tops.iter().zip(&layer.top_loss_weights) {
                let name = blob_name(id);
                if weight != 0.0 || under_loss.contains(name) {
                    contributes_loss = true;
                }
                if !skip_backprop.contains(name) {
                    skip_propagate_down = false;
                }
                if contributes_loss && !skip_propagate_down {
                    break;
                }
            }
            if layer.need_backward && skip_propagate_down {
                layer.need_backward = false;
                layer.bottom_need_backward.fill(false);
            }
            if !contributes_loss {
                layer.need_backward = false;
            }
            let name = layer.param.name();
            let line = if layer.need_backward {
                format!("{name} needs backward computation.")
            } else {
                format!("{name} does not need backward computation.")
            };
            emit(&mut self.init_log, line);
            for (&id, need) in layer.bottoms.iter().zip(&mut layer.bottom_need_backward) {
                let name = blob_name(id);
                if contributes_loss {
                    under_loss.insert(name.to_string());
                } else {
                    *need = false;
                }
                if !*need {
                    skip_backprop.insert(name.to_string());
                }
            }
        }
        if self.force_backward {
            self.force_backward_everywhere();
        }
    }

    /// `force_backward`: every layer runs backward, computing the gradient of every parameter
    /// and of every bottom that needs one or that the layer allows forcing.
    fn force_backward_everywhere(&mut self) {
        for layer in &mut self.layers {
            layer.need_backward = true;
            let bottoms = layer.bottoms.iter().zip(&mut layer.bottom_need_backward);
            for (j, (&id, need)) in bottoms.enumerate() {
                *need |= layer.layer.allow_force_backward(j);
                self.blob_info[id].need_backward |= *need;
            }
            layer.param_propagate_down.fill(true);
        }
    }
}

/// Running the net.
impl<B: Backend> Net<B> {
    /// Runs every layer's forward pass; returns the total loss (the sum over loss tops of
    /// `loss_weight * top`).
    pub fn forward(&mut self) -> Result<f32> {
        if self.layers.is_empty() {
            return Ok(0.0);
        }
        self.forward_from_to(0, self.layers.len() - 1)
    }

    /// Runs the forward passes of layers `start..=end`; returns their loss.
    pub fn forward_from_to(&mut self, start: usize, end: usize) -> Result<f32> {
        if start > end || end >= self.layers.len() {
            return Err(self.build_error(format!(
                "forward_from_to({start}, {end}) with {} layers",
                self.layers.len()
            )));
        }
        let mut loss = 0.0;
        for i in start..=end {
            loss += self.forward_layer(i)?;
        }
        Ok(loss)
    }

    /// Runs the forward passes from layer `start` to the last.
    pub fn forward_from(&mut self, start: usize) -> Result<f32> {
        let end = self.layers.len().saturating_sub(1);
        self.forward_from_to(start, end)
    }

    /// Runs the forward passes from the first layer to `end`.
    pub fn forward_to(&mut self, end: usize) -> Result<f32> {
        self.forward_from_to(0, end)
    }

    fn forward_layer(&mut self, i: usize) -> Result<f32> {
        self.forward_layer_with(i, true)
    }

    /// Runs the forward passes of layers `start..` without reading the loss back to the host
    /// (no host round trip between layers, as a CUDA graph capture needs); [`Net::loss`] reads
    /// it afterwards.
    pub fn forward_from_on_device(&mut self, start: usize) -> Result<()> {
        for i in start..self.layers.len() {
            self.forward_layer_with(i, false)?;
        }
        Ok(())
    }

    /// The loss of the last forward pass, read from the loss tops: the sum over them of
    /// `loss_weight * top` (what [`Net::forward`] returns).
    pub fn loss(&self) -> Result<f32> {
        let mut loss = 0.0;
        for layer in &self.layers {
            for (&id, &weight) in layer.tops.iter().zip(&layer.top_loss_weights) {
                if weight != 0.0 {
                    let top = &self.blobs[id];
                    loss += self
                        .backend
                        .reduce(Reduction::Dot(top.diff_view()), top.data_view())
                        .map_err(|e| NetError::Layer(layers::Error::new(&layer.param, e.into())))?;
                }
            }
        }
        Ok(loss)
    }

    fn forward_layer_with(&mut self, i: usize, read_loss: bool) -> Result<f32> {
        let mut call = self.call(i);
        call.layer
            .reshape(&mut call.ctx, &mut call.blobs, &call.params)
            .map_err(|e| call.error(e))?;
        call.layer
            .forward(&mut call.ctx, &mut call.blobs, &mut call.params)
            .map_err(|e| call.error(e))?;
        let mut loss = 0.0;
        for (j, &weight) in call.top_loss_weights.iter().enumerate() {
            if weight != 0.0 && read_loss {
                let top = call.blobs.top(j);
                loss += call
                    .ctx
                    .backend
                    .reduce(Reduction::Dot(top.diff_view()), top.data_view())
                    .map_err(|e| call.error(e.into()))?;
            }
        }
        if self.debug_info {
            self.forward_debug_info(i)?;
        }
        Ok(loss)
    }

    /// Runs every backward pass that is needed, from the last layer to the first.
    pub fn backward(&mut self) -> Result<()> {
        if self.layers.is_empty() {
            return Ok(());
        }
        self.backward_from_to(self.layers.len() - 1, 0)?;
        if self.debug_info {
            let (mut asum_data, mut asum_diff, mut sumsq_data, mut sumsq_diff) =
                (0.0f32, 0.0f32, 0.0f32, 0.0f32);
            for blob in &self.learnable_params {
                asum_data += blob.asum_data()?;
                asum_diff += blob.asum_diff()?;
                sumsq_data += blob.sumsq_data()?;
                sumsq_diff += blob.sumsq_diff()?;
            }
            log::error!(
                "    [Backward] All net params (data, diff): L1 norm = ({}, {}); L2 norm = ({}, \
                 {})",
                cpp_float(f64::from(asum_data)),
                cpp_float(f64::from(asum_diff)),
                cpp_float(f64::from(sumsq_data.sqrt())),
                cpp_float(f64::from(sumsq_diff.sqrt()))
            );
        }
        Ok(())
    }

    /// Runs the needed backward passes of layers `start` down to `end` (`start >= end`).
    pub fn backward_from_to(&mut self, start: usize, end: usize) -> Result<()> {
        if end > start || start >= self.layers.len() {
            return Err(self.build_error(format!(
                "backward_from_to({start}, {end}) with {} layers",
                self.layers.len()
            )));
        }
        for i in (end..=start).rev() {
            if self.layers[i].need_backward {
                self.backward_layer(i)?;
            }
        }
        Ok(())
    }

    /// Runs layer `i`'s backward pass whether or not the net needs it, with the net's
    /// propagate-down flags (weight gradients are computed for every learning parameter). This
    /// is what upstream's `caffe time` times for every layer, even in a net without a loss.
    pub fn backward_layer(&mut self, i: usize) -> Result<()> {
        if i >= self.layers.len() {
            return Err(self.build_error(format!(
                "backward_layer({i}) with {} layers",
                self.layers.len()
            )));
        }
        let mut call = self.call(i);
        call.layer
            .backward(
                &mut call.ctx,
                &mut call.blobs,
                call.bottom_need_backward,
                &mut call.params,
            )
            .map_err(|e| call.error(e))?;
        if self.debug_info {
            self.backward_debug_info(i)?;
        }
        Ok(())
    }

    /// Runs the backward passes from layer `start` down to the first.
    pub fn backward_from(&mut self, start: usize) -> Result<()> {
        self.backward_from_to(start, 0)
    }

    /// Runs the backward passes from the last layer down to `end`.
    pub fn backward_to(&mut self, end: usize) -> Result<()> {
        let start = self.layers.len().saturating_sub(1);
        self.backward_from_to(start, end)
    }

    /// Forward then backward; returns the loss.
    pub fn forward_backward(&mut self) -> Result<f32> {
        let loss = self.forward()?;
        self.backward()?;
        Ok(loss)
    }

    /// Reshapes every layer's tops from its bottoms (after an input blob changed shape).
    pub fn reshape(&mut self) -> Result<()> {
        for i in 0..self.layers.len() {
            let mut call = self.call(i);
            call.layer
                .reshape(&mut call.ctx, &mut call.blobs, &call.params)
                .map_err(|e| call.error(e))?;
        }
        Ok(())
    }

    /// `data -= diff` for every learnable parameter (upstream's `Net::Update`).
    pub fn update(&mut self) -> Result<()> {
        for blob in &mut self.learnable_params {
            blob.update()?;
        }
        Ok(())
    }

    /// Zeroes every learnable parameter's diff (upstream's `ClearParamDiffs`).
    pub fn clear_param_diffs(&mut self) -> Result<()> {
        for blob in &mut self.learnable_params {
            self.backend
                .fill(0.0, blob.diff_view_mut())
                .map_err(BlobError::from)?;
        }
        Ok(())
    }

    fn mean_abs(blob: &Blob<B>, diff: bool) -> Result<String> {
        let sum = if diff {
            blob.asum_diff()?
        } else {
            blob.asum_data()?
        };
        Ok(cpp_float(f64::from(sum) / blob.count() as f64))
    }

    fn forward_debug_info(&self, i: usize) -> Result<()> {
        let layer = &self.layers[i];
        let name = layer.param.name();
        for &id in &layer.tops {
            let v = Self::mean_abs(&self.blobs[id], false)?;
            log::info!(
                "    [Forward] Layer {name}, top blob {} data: {v}",
                self.blob_info[id].name
            );
        }
        for &net_id in &layer.net_param_ids {
            let param = &self.net_params[net_id];
            let v = Self::mean_abs(&self.learnable_params[param.learnable_id], false)?;
            log::info!(
                "    [Forward] Layer {name}, param blob {} data: {v}",
                param.display_name
            );
        }
        Ok(())
    }

    fn backward_debug_info(&self, i: usize) -> Result<()> {
        let layer = &self.layers[i];
        let name = layer.param.name();
        for (&id, &need) in layer.bottoms.iter().zip(&layer.bottom_need_backward) {
            if !need {
                continue;
            }
            let v = Self::mean_abs(&self.blobs[id], true)?;
            log::info!(
                "    [Backward] Layer {name}, bottom blob {} diff: {v}",
                self.blob_info[id].name
            );
        }
        let params = layer.learnable_ids.iter().zip(&layer.param_propagate_down);
        for (k, (&id, &propagates)) in params.enumerate() {
            if !propagates {
                continue;
            }
            let v = Self::mean_abs(&self.learnable_params[id], true)?;
            log::info!("    [Backward] Layer {name}, param blob {k} diff: {v}");
        }
        Ok(())
    }
}

/// What the net holds.
impl<B: Backend> Net<B> {
    /// The net's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The phase the net was built for.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// The backend the blobs live on.
    pub fn backend(&self) -> &B {
        &self.backend
    }
    /// The net's RNG (Dropout masks draw from it).
    pub fn rng_mut(&mut self) -> &mut Rng {
        &mut self.rng
    }
    /// The lines logged while building the net, without glog prefixes, in order.
    pub fn init_log(&self) -> &[String] {
        &self.init_log
    }
    /// Whether forward and backward log upstream's per-blob debug lines.
    pub fn set_debug_info(&mut self, value: bool) {
        self.debug_info = value;
    }
    /// Bytes of top blob data, as upstream's "Memory required for data".
    pub fn memory_used(&self) -> u64 {
        self.memory_used * std::mem::size_of::<f32>() as u64
    }

    /// Number of layers (Split layers included).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
    /// The layers' names, in order.
    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|layer| layer.param.name())
    }
    /// Layer `i`'s name.
    pub fn layer_name(&self, i: usize) -> &str {
        self.layers[i].param.name()
    }
    /// Layer `i`'s type string.
    pub fn layer_type(&self, i: usize) -> &str {
        self.layers[i].layer.layer_type()
    }
    /// Layer `i`'s parameter as the net uses it (Split bottoms renamed, phase set, the
    /// implicit loss weight recorded).
    pub fn layer_param(&self, i: usize) -> &LayerParameter {
        &self.layers[i].param
    }
    /// Whether some of this net's weights are another net's memory too (a net that
    /// [`Net::share_trained_layers_with`] made, or whose weights it lent).
    pub fn shares_weights(&self) -> bool {
        self.shares_weights
    }
    /// Layer `i`.
    pub fn layer(&self, i: usize) -> &dyn Layer<B> {
        self.layers[i].layer.as_ref()
    }
    /// Layer `i` as its concrete type `T`, when it is one (see [`Layer::as_any_mut`]).
    pub fn layer_as<T: 'static>(&mut self, i: usize) -> Option<&mut T> {
        self.layers[i].layer.as_any_mut()?.downcast_mut()
    }
    /// The first layer as a MemoryData layer, the one pycaffe's `set_input_arrays` feeds; an
    /// error when the first layer is another type.
    pub fn memory_data_layer_mut(&mut self) -> Result<&mut MemoryDataLayer> {
        self.first_memory_data().map(|(_, layer)| layer)
    }

    /// Feeds the first layer, a MemoryData layer, `data` of shape `data_shape` (`[n, channels,
    /// height, width]`) and `n` `labels` (pycaffe's `set_input_arrays`; see
    /// [`MemoryDataLayer::reset`]). A wrong shape or an `n` that is not a multiple of the
    /// batch size is an error naming the layer.
    pub fn set_input_arrays(
        &mut self,
        data: Vec<f32>,
        data_shape: &[usize],
        labels: Vec<f32>,
    ) -> Result<()> {
        let (param, layer) = self.first_memory_data()?;
        layer
            .reset(data, data_shape, labels)
            .map_err(|e| NetError::Layer(layers::Error::new(param, e)))
    }

    fn first_memory_data(&mut self) -> Result<(&LayerParameter, &mut MemoryDataLayer)> {
        let refused = |what: String| NetError::Build {
            net: self.name.clone(),
            message: format!(
                "set_input_arrays may only be called if the first layer is a MemoryData layer; \
                 {what}"
            ),
        };
        let Some(first) = self.layers.first_mut() else {
            return Err(refused("the net has no layer".into()));
        };
        let kind = first.layer.layer_type();
        match first
            .layer
            .as_any_mut()
            .and_then(|layer| layer.downcast_mut::<MemoryDataLayer>())
        {
            Some(layer) => Ok((&first.param, layer)),
            None => Err(refused(format!(
                "it is '{}' of type {kind}",
                first.param.name()
            ))),
        }
    }

    /// Whether the net has a layer of this name.
    pub fn has_layer(&self, name: &str) -> bool {
        self.layer_names_index.contains_key(name)
    }
    /// The index of the layer of this name (the last one, as upstream's index).
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layer_names_index.get(name).copied()
    }
    /// Whether layer `i` runs its backward pass.
    pub fn layer_need_backward(&self, i: usize) -> bool {
        self.layers[i].need_backward
    }
    /// Per bottom of layer `i`: whether backward computes its diff.
    pub fn bottom_need_backward(&self, i: usize) -> &[bool] {
        &self.layers[i].bottom_need_backward
    }
    /// The blob ids of layer `i`'s bottoms.
    pub fn bottom_ids(&self, i: usize) -> &[usize] {
        &self.layers[i].bottoms
    }
    /// The blob ids of layer `i`'s tops.
    pub fn top_ids(&self, i: usize) -> &[usize] {
        &self.layers[i].tops
    }
    /// Per top of layer `i`: its loss weight.
    pub fn top_loss_weights(&self, i: usize) -> &[f32] {
        &self.layers[i].top_loss_weights
    }

    /// Every activation blob, by blob id.
    pub fn blobs(&self) -> &[Blob<B>] {
        &self.blobs
    }
    /// Every activation blob, writable.
    pub fn blobs_mut(&mut self) -> &mut [Blob<B>] {
        &mut self.blobs
    }
    /// The blobs' names, by blob id.
    pub fn blob_names(&self) -> impl Iterator<Item = &str> {
        self.blob_info.iter().map(|info| info.name.as_str())
    }
    /// Blob `id`'s name.
    pub fn blob_name(&self, id: usize) -> &str {
        &self.blob_info[id].name
    }
    /// The loss weight of the top that produces blob `id`.
    pub fn blob_loss_weight(&self, id: usize) -> f32 {
        self.blob_info[id].loss_weight
    }
    /// Whether some layer computes blob `id`'s diff.
    pub fn blob_need_backward(&self, id: usize) -> bool {
        self.blob_info[id].need_backward
    }
    /// Whether the net has a blob of this name.
    pub fn has_blob(&self, name: &str) -> bool {
        self.blob_names_index.contains_key(name)
    }
    /// The blob of this name.
    pub fn blob_by_name(&self, name: &str) -> Option<&Blob<B>> {
        self.blob_names_index.get(name).map(|&i| &self.blobs[i])
    }
    /// The blob of this name, writable (to set inputs).
    pub fn blob_by_name_mut(&mut self, name: &str) -> Option<&mut Blob<B>> {
        self.blob_names_index.get(name).map(|&i| &mut self.blobs[i])
    }
    /// The blob ids of the Input layers' tops.
    pub fn input_blob_ids(&self) -> &[usize] {
        &self.input_blob_ids
    }
    /// The blob ids of the outputs (tops no layer consumes), sorted by name.
    pub fn output_blob_ids(&self) -> &[usize] {
        &self.output_blob_ids
    }

    /// The learnable parameter blobs (one per owner; shared parameters appear once), in the
    /// order the solver keeps its history.
    pub fn learnable_params(&self) -> &[Blob<B>] {
        &self.learnable_params
    }
    /// The learnable parameter blobs, writable.
    pub fn learnable_params_mut(&mut self) -> &mut [Blob<B>] {
        &mut self.learnable_params
    }
    /// Per learnable parameter: its `lr_mult` and `decay_mult`.
    pub fn param_multipliers(&self) -> &[Multipliers] {
        &self.param_multipliers
    }
    /// Per layer parameter `k` of layer `i`: its learnable parameter index.
    pub fn layer_learnable_ids(&self, i: usize) -> &[usize] {
        &self.layers[i].learnable_ids
    }
    /// Every parameter of every layer, in order (upstream's "net params").
    pub fn net_params(&self) -> &[NetParam] {
        &self.net_params
    }
    /// Whether backward computes the gradient of parameter `k` of layer `i`.
    pub fn param_propagate_down(&self, i: usize) -> &[bool] {
        &self.layers[i].param_propagate_down
    }
}
