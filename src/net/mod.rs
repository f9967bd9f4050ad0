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

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use crate::backend::{Backend, Rng};
use crate::blob::{Blob, BlobError};
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

    layers: Vec<Box<dyn Layer<B>>>,
    layer_params: Vec<LayerParameter>,
    layer_names: Vec<String>,
    layer_need_backward: Vec<bool>,

    blobs: Vec<Blob<B>>,
    blob_names: Vec<String>,
    blob_need_backward: Vec<bool>,
    blob_loss_weights: Vec<f32>,
    bottom_ids: Vec<Vec<usize>>,
    top_ids: Vec<Vec<usize>>,
    bottom_need_backward: Vec<Vec<bool>>,
    top_loss_weights: Vec<Vec<f32>>,
    input_blob_ids: Vec<usize>,
    output_blob_ids: Vec<usize>,

    /// The learnable parameters: one blob per owner (an unnamed parameter or the first
    /// occurrence of a name).
    learnable_params: Vec<Blob<B>>,
    params_lr: Vec<f32>,
    params_weight_decay: Vec<f32>,
    has_params_lr: Vec<bool>,
    has_params_decay: Vec<bool>,
    /// Per layer: parameter `k` is `learnable_params[layer_learnable_ids[layer][k]]`.
    layer_learnable_ids: Vec<Vec<usize>>,
    /// Per layer: whether parameter `k`'s gradient is computed.
    param_propagate_down: Vec<Vec<bool>>,
    /// Per (layer, parameter) pair, in order ("net params" upstream).
    param_layer_indices: Vec<(usize, usize)>,
    param_owners: Vec<Option<usize>>,
    param_display_names: Vec<String>,
    learnable_param_ids: Vec<usize>,
    param_names_index: HashMap<String, usize>,
    /// Per layer: the net param ids of its parameters.
    layer_net_param_ids: Vec<Vec<usize>>,

    blob_names_index: HashMap<String, usize>,
    layer_names_index: HashMap<String, usize>,
    memory_used: u64,
    init_log: Vec<String>,
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
            layer_params: Vec::new(),
            layer_names: Vec::new(),
            layer_need_backward: Vec::new(),
            blobs: Vec::new(),
            blob_names: Vec::new(),
            blob_need_backward: Vec::new(),
            blob_loss_weights: Vec::new(),
            bottom_ids: Vec::new(),
            top_ids: Vec::new(),
            bottom_need_backward: Vec::new(),
            top_loss_weights: Vec::new(),
            input_blob_ids: Vec::new(),
            output_blob_ids: Vec::new(),
            learnable_params: Vec::new(),
            params_lr: Vec::new(),
            params_weight_decay: Vec::new(),
            has_params_lr: Vec::new(),
            has_params_decay: Vec::new(),
            layer_learnable_ids: Vec::new(),
            param_propagate_down: Vec::new(),
            param_layer_indices: Vec::new(),
            param_owners: Vec::new(),
            param_display_names: Vec::new(),
            learnable_param_ids: Vec::new(),
            param_names_index: HashMap::new(),
            layer_net_param_ids: Vec::new(),
            blob_names_index: HashMap::new(),
            layer_names_index: HashMap::new(),
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

    fn init(&mut self, param: NetParameter, factory: Option<&LayerFactory<B>>) -> Result<()> {
        let mut blob_name_to_idx: HashMap<String, usize> = HashMap::new();
        let mut available: BTreeSet<String> = BTreeSet::new();
        for (layer_id, mut lp) in param.layer.into_iter().enumerate() {
            if lp.phase.is_none() {
                lp.phase = Some(self.phase as i32);
            }
            if !lp.propagate_down.is_empty() && lp.propagate_down.len() != lp.bottom.len() {
                return Err(self.build_error(format!(
                    "layer '{}': propagate_down must be specified either 0 or bottom_size ({}) \
                     times, not {}",
                    lp.name(),
                    lp.bottom.len(),
                    lp.propagate_down.len()
                )));
            }
            self.log(format!("Creating layer {}", lp.name()));
            let layer = layers::create_layer_with::<B>(&lp, factory)?;
            self.log(format!("Creating Layer {}", lp.name()));
            self.layer_names.push(lp.name().to_string());

            // Bottoms.
            let mut need_backward = false;
            let mut bottom_ids = Vec::new();
            let mut bottom_need = Vec::new();
            for (j, blob_name) in lp.bottom.iter().enumerate() {
                if !available.contains(blob_name) {
                    return Err(self.build_error(format!(
                        "Unknown bottom blob '{blob_name}' (layer '{}', bottom index {j})",
                        lp.name()
                    )));
                }
                let id = blob_name_to_idx[blob_name];
                self.log(format!("{} <- {}", lp.name(), blob_name));
                available.remove(blob_name);
                let mut need = self.blob_need_backward[id];
                if !lp.propagate_down.is_empty() {
                    need = lp.propagate_down[j];
                }
                need_backward |= self.blob_need_backward[id];
                bottom_ids.push(id);
                bottom_need.push(need);
            }
            // Tops, with anonymous ones for layers that want them.
            let mut top_ids = Vec::new();
            for (j, blob_name) in lp.top.iter().enumerate() {
                if lp.bottom.get(j) == Some(blob_name) {
                    self.log(format!("{} -> {} (in-place)", lp.name(), blob_name));
                    top_ids.push(blob_name_to_idx[blob_name]);
                } else if blob_name_to_idx.contains_key(blob_name) {
                    return Err(self.build_error(format!(
                        "Top blob '{blob_name}' produced by multiple sources (layer '{}', top \
                         index {j})",
                        lp.name()
                    )));
                } else {
                    self.log(format!("{} -> {}", lp.name(), blob_name));
                    let id = self.new_blob(blob_name)?;
                    blob_name_to_idx.insert(blob_name.clone(), id);
                    top_ids.push(id);
                }
                available.insert(blob_name.clone());
                if lp.r#type() == "Input" {
                    self.input_blob_ids
                        .push(*top_ids.last().expect("just pushed"));
                }
            }
            let num_top = layers::num_tops_with_auto(layer.as_ref(), lp.top.len());
            for _ in lp.top.len()..num_top {
                self.log(format!("{} -> (automatic)", lp.name()));
                top_ids.push(self.new_blob("(automatic)")?);
            }
            self.layers.push(layer);
            self.bottom_ids.push(bottom_ids);
            self.top_ids.push(top_ids);
            self.bottom_need_backward.push(bottom_need);
            self.layer_params.push(lp);

            let sharing_log = self.setup_layer(layer_id)?;

            // Which parameters learn.
            let lp = &self.layer_params[layer_id];
            let num_params = self.layer_learnable_ids[layer_id].len();
            let default_spec = ParamSpec::default();
            let mut propagate = Vec::with_capacity(num_params);
            for k in 0..num_params {
                let spec = lp.param.get(k).unwrap_or(&default_spec);
                let learns = spec.lr_mult() != 0.0;
                need_backward |= learns;
                propagate.push(learns);
            }
            self.param_propagate_down.push(propagate);
            for line in sharing_log {
                self.log(line);
            }
            self.layer_need_backward.push(need_backward);
            if need_backward {
                for &id in &self.top_ids[layer_id] {
                    self.blob_need_backward[id] = true;
                }
            }
        }
        self.decide_backward();
        for name in &available {
            let line = format!("This network produces output {name}");
            emit(&mut self.init_log, line);
            self.output_blob_ids.push(blob_name_to_idx[name]);
        }
        for (id, name) in self.blob_names.iter().enumerate() {
            self.blob_names_index.insert(name.clone(), id);
        }
        for (id, name) in self.layer_names.iter().enumerate() {
            self.layer_names_index.insert(name.clone(), id);
        }
        self.log("Network initialization done.".to_string());
        Ok(())
    }

    fn new_blob(&mut self, name: &str) -> Result<usize> {
        let id = self.blobs.len();
        let mut blob = Blob::empty(&self.backend)?;
        blob.set_name(name);
        self.blobs.push(blob);
        self.blob_names.push(name.to_string());
        self.blob_need_backward.push(false);
        self.blob_loss_weights.push(0.0);
        Ok(id)
    }

    /// Sets up layer `layer_id` (upstream's `Layer::SetUp`, then `AppendParam` for each of its
    /// parameters) and logs its shapes. Returns the "Sharing parameters" lines, which upstream
    /// logs after the memory line.
    fn setup_layer(&mut self, layer_id: usize) -> Result<Vec<String>> {
        let named = |lp: &LayerParameter, e: LayerError| NetError::Layer(layers::Error::new(lp, e));
        let lp = &self.layer_params[layer_id];
        let layer = self.layers[layer_id].as_mut();
        let bottom_ids = &self.bottom_ids[layer_id];
        let top_ids = &self.top_ids[layer_id];
        layers::check_blob_counts(layer, bottom_ids.len(), top_ids.len())
            .map_err(|e| named(lp, e))?;
        for (j, &t) in top_ids.iter().enumerate() {
            if bottom_ids.get(j) == Some(&t) && !layer.supports_in_place() {
                return Err(named(
                    lp,
                    LayerError::InPlace {
                        layer_type: layer.layer_type().to_string(),
                        index: j,
                        blob: self.blob_names[t].clone(),
                    },
                ));
            }
        }
        let mut blobs = Blobs::new(&mut self.blobs, bottom_ids, top_ids);
        blobs
            .check()
            .map_err(|m| named(lp, LayerError::invalid(m)))?;
        let mut ctx = Context {
            backend: &self.backend,
            phase: lp.phase(),
            rng: &mut self.rng,
        };
        let mut created = Vec::new();
        layer
            .layer_setup(&mut ctx, &mut blobs, &mut created)
            .map_err(|e| named(lp, e))?;
        if !lp.blobs.is_empty() {
            if lp.blobs.len() != created.len() {
                return Err(named(
                    lp,
                    LayerError::invalid(format!(
                        "the net file holds {} blobs for this layer, which has {} parameter \
                         blobs",
                        lp.blobs.len(),
                        created.len()
                    )),
                ));
            }
            for (blob, proto) in created.iter_mut().zip(&lp.blobs) {
                blob.from_proto(proto, false)
                    .map_err(|e| named(lp, e.into()))?;
            }
        }
        if lp.param.len() > created.len() {
            return Err(named(
                lp,
                LayerError::invalid(format!(
                    "Too many params specified for layer {}: {} param specs for {} parameter \
                     blobs",
                    lp.name(),
                    lp.param.len(),
                    created.len()
                )),
            ));
        }
        // Parameters: own ones go to the learnable store, named ones seen before are shared.
        let sharing_log = self.append_params(layer_id, created)?;

        let lp = &self.layer_params[layer_id];
        let layer = self.layers[layer_id].as_mut();
        let bottom_ids = &self.bottom_ids[layer_id];
        let top_ids = &self.top_ids[layer_id];
        let mut blobs = Blobs::new(&mut self.blobs, bottom_ids, top_ids);
        let mut ctx = Context {
            backend: &self.backend,
            phase: lp.phase(),
            rng: &mut self.rng,
        };
        let no_propagate = vec![true; self.layer_learnable_ids[layer_id].len()];
        let params = Params::new(
            &mut self.learnable_params,
            &self.layer_learnable_ids[layer_id],
            &no_propagate,
        );
        layer
            .reshape(&mut ctx, &mut blobs, &params)
            .map_err(|e| named(lp, e))?;
        let (weights, implicit) = layers::loss_weights(lp, layer.layer_type(), top_ids.len())
            .map_err(|e| named(lp, e))?;
        for (j, &w) in weights.iter().enumerate() {
            if w != 0.0 {
                let top = blobs.top_mut(j);
                let n = top.count();
                self.backend
                    .set(n, w, top.diff_mut(), 0)
                    .map_err(|e| named(lp, e.into()))?;
            }
        }
        let name = lp.name().to_string();
        if builds_inner_layer(lp) {
            self.log(format!("Creating layer {name}"));
        }
        if implicit {
            self.layer_params[layer_id].loss_weight = weights.clone();
        }
        self.log(format!("Setting up {name}"));
        for (j, &w) in weights.iter().enumerate() {
            let id = self.top_ids[layer_id][j];
            self.blob_loss_weights[id] = w;
            let shape = self.blobs[id].shape_string();
            self.log(format!("Top shape: {shape}"));
            if w != 0.0 {
                self.log(format!("    with loss weight {}", cpp_float(f64::from(w))));
            }
            self.memory_used += self.blobs[id].count() as u64;
        }
        let bytes = self.memory_used * std::mem::size_of::<f32>() as u64;
        self.log(format!("Memory required for data: {bytes}"));
        self.top_loss_weights.push(weights);
        Ok(sharing_log)
    }

    /// Upstream's `AppendParam` for each parameter blob of layer `layer_id`.
    fn append_params(&mut self, layer_id: usize, created: Vec<Blob<B>>) -> Result<Vec<String>> {
        let lp = self.layer_params[layer_id].clone();
        let default_spec = ParamSpec::default();
        let mut ids = Vec::with_capacity(created.len());
        let mut net_ids = Vec::with_capacity(created.len());
        let mut sharing_log = Vec::new();
        for (k, blob) in created.into_iter().enumerate() {
            let spec = lp.param.get(k).unwrap_or(&default_spec);
            let param_name = spec.name();
            let net_param_id = self.param_layer_indices.len();
            net_ids.push(net_param_id);
            self.param_display_names.push(if param_name.is_empty() {
                k.to_string()
            } else {
                param_name.to_string()
            });
            self.param_layer_indices.push((layer_id, k));
            // The first net param with a name owns it; later ones share it.
            let owner = if param_name.is_empty() {
                None
            } else {
                self.param_names_index.get(param_name).copied()
            };
            match owner {
                None => {
                    if !param_name.is_empty() {
                        self.param_names_index
                            .insert(param_name.to_string(), net_param_id);
                    }
                    self.param_owners.push(None);
                    let learnable = self.learnable_params.len();
                    self.learnable_params.push(blob);
                    self.learnable_param_ids.push(learnable);
                    self.has_params_lr.push(spec.lr_mult.is_some());
                    self.has_params_decay.push(spec.decay_mult.is_some());
                    self.params_lr.push(spec.lr_mult());
                    self.params_weight_decay.push(spec.decay_mult());
                    ids.push(learnable);
                }
                Some(owner_id) => {
                    self.param_owners.push(Some(owner_id));
                    let (owner_layer, owner_k) = self.param_layer_indices[owner_id];
                    let owner_layer_name = self.layer_names[owner_layer].clone();
                    sharing_log.push(format!(
                        "Sharing parameters '{param_name}' owned by layer '{owner_layer_name}', \
                         param index {owner_k}"
                    ));
                    let learnable = self.learnable_param_ids[owner_id];
                    let owner_blob = &self.learnable_params[learnable];
                    let permissive =
                        spec.share_mode() == DimCheckMode::Permissive && lp.param.len() > k;
                    if permissive && owner_blob.count() != blob.count() {
                        return Err(self.build_error(format!(
                            "Cannot share param '{param_name}' owned by layer \
                             '{owner_layer_name}' with layer '{}'; count mismatch.  Owner layer \
                             param shape is {}; sharing layer shape is {}",
                            lp.name(),
                            owner_blob.shape_string(),
                            blob.shape_string()
                        )));
                    }
                    if !permissive && owner_blob.shape() != blob.shape() {
                        return Err(self.build_error(format!(
                            "Cannot share param '{param_name}' owned by layer \
                             '{owner_layer_name}' with layer '{}'; shape mismatch.  Owner layer \
                             param shape is {}; sharing layer expects shape {}",
                            lp.name(),
                            owner_blob.shape_string(),
                            blob.shape_string()
                        )));
                    }
                    if ids.contains(&learnable) {
                        return Err(self.build_error(format!(
                            "layer '{}' shares param '{param_name}' with itself",
                            lp.name()
                        )));
                    }
                    self.learnable_param_ids.push(learnable);
                    if spec.lr_mult.is_some() {
                        if self.has_params_lr[learnable] {
                            if spec.lr_mult() != self.params_lr[learnable] {
                                return Err(self.build_error(format!(
                                    "Shared param '{param_name}' has mismatched lr_mult \
                                     (layer '{}' gives {}, the owner {})",
                                    lp.name(),
                                    spec.lr_mult(),
                                    self.params_lr[learnable]
                                )));
                            }
                        } else {
                            self.has_params_lr[learnable] = true;
                            self.params_lr[learnable] = spec.lr_mult();
                        }
                    }
                    if spec.decay_mult.is_some() {
                        if self.has_params_decay[learnable] {
                            if spec.decay_mult() != self.params_weight_decay[learnable] {
                                return Err(self.build_error(format!(
                                    "Shared param '{param_name}' has mismatched decay_mult \
                                     (layer '{}' gives {}, the owner {})",
                                    lp.name(),
                                    spec.decay_mult(),
                                    self.params_weight_decay[learnable]
                                )));
                            }
                        } else {
                            self.has_params_decay[learnable] = true;
                            self.params_weight_decay[learnable] = spec.decay_mult();
                        }
                    }
                    ids.push(learnable);
                }
            }
        }
        self.layer_learnable_ids.push(ids);
        self.layer_net_param_ids.push(net_ids);
        Ok(sharing_log)
    }

    /// Upstream's backward analysis: walking the layers from the last, a layer needs backward
    /// only if some top is a loss or feeds a loss, and not if every top's consumers skip
    /// propagating to it; then `force_backward`.
    fn decide_backward(&mut self) {
        let mut under_loss: BTreeSet<String> = BTreeSet::new();
        let mut skip_backprop: BTreeSet<String> = BTreeSet::new();
        for layer_id in (0..self.layers.len()).rev() {
            let mut contributes_loss = false;
            let mut skip_propagate_down = true;
            for (j, &id) in self.top_ids[layer_id].iter().enumerate() {
                let name = &self.blob_names[id];
                if self.top_loss_weights[layer_id][j] != 0.0 || under_loss.contains(name) {
                    contributes_loss = true;
                }
                if !skip_backprop.contains(name) {
                    skip_propagate_down = false;
                }
                if contributes_loss && !skip_propagate_down {
                    break;
                }
            }
            if self.layer_need_backward[layer_id] && skip_propagate_down {
                self.layer_need_backward[layer_id] = false;
                for need in &mut self.bottom_need_backward[layer_id] {
                    *need = false;
                }
            }
            if !contributes_loss {
                self.layer_need_backward[layer_id] = false;
            }
            let line = if self.layer_need_backward[layer_id] {
                format!("{} needs backward computation.", self.layer_names[layer_id])
            } else {
                format!(
                    "{} does not need backward computation.",
                    self.layer_names[layer_id]
                )
            };
            self.log(line);
            for (j, &id) in self.bottom_ids[layer_id].iter().enumerate() {
                let name = &self.blob_names[id];
                if contributes_loss {
                    under_loss.insert(name.clone());
                } else {
                    self.bottom_need_backward[layer_id][j] = false;
                }
                if !self.bottom_need_backward[layer_id][j] {
                    skip_backprop.insert(name.clone());
                }
            }
        }
        if self.force_backward {
            for layer_id in 0..self.layers.len() {
                self.layer_need_backward[layer_id] = true;
                for j in 0..self.bottom_ids[layer_id].len() {
                    let allowed = self.layers[layer_id].allow_force_backward(j);
                    let need = self.bottom_need_backward[layer_id][j] || allowed;
                    self.bottom_need_backward[layer_id][j] = need;
                    let id = self.bottom_ids[layer_id][j];
                    self.blob_need_backward[id] |= need;
                }
                for p in &mut self.param_propagate_down[layer_id] {
                    *p = true;
                }
            }
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
        for (i, weights) in self.top_loss_weights.iter().enumerate() {
            for (j, &w) in weights.iter().enumerate() {
                if w != 0.0 {
                    let top = &self.blobs[self.top_ids[i][j]];
                    loss += self
                        .backend
                        .dot(top.count(), top.data(), 0, top.diff(), 0)
                        .map_err(|e| {
                            NetError::Layer(layers::Error::new(&self.layer_params[i], e.into()))
                        })?;
                }
            }
        }
        Ok(loss)
    }

    fn forward_layer_with(&mut self, i: usize, read_loss: bool) -> Result<f32> {
        let lp = &self.layer_params[i];
        let named = |e: LayerError| NetError::Layer(layers::Error::new(lp, e));
        let layer = self.layers[i].as_mut();
        let mut ctx = Context {
            backend: &self.backend,
            phase: lp.phase(),
            rng: &mut self.rng,
        };
        let mut blobs = Blobs::new(&mut self.blobs, &self.bottom_ids[i], &self.top_ids[i]);
        let mut params = Params::new(
            &mut self.learnable_params,
            &self.layer_learnable_ids[i],
            &self.param_propagate_down[i],
        );
        layer
            .reshape(&mut ctx, &mut blobs, &params)
            .map_err(named)?;
        layer
            .forward(&mut ctx, &mut blobs, &mut params)
            .map_err(named)?;
        let mut loss = 0.0;
        for (j, &w) in self.top_loss_weights[i].iter().enumerate() {
            if w != 0.0 && read_loss {
                let top = blobs.top(j);
                loss += self
                    .backend
                    .dot(top.count(), top.data(), 0, top.diff(), 0)
                    .map_err(|e| named(e.into()))?;
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
            if self.layer_need_backward[i] {
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
        let lp = &self.layer_params[i];
        let named = |e: LayerError| NetError::Layer(layers::Error::new(lp, e));
        let layer = self.layers[i].as_mut();
        let mut ctx = Context {
            backend: &self.backend,
            phase: lp.phase(),
            rng: &mut self.rng,
        };
        let mut blobs = Blobs::new(&mut self.blobs, &self.bottom_ids[i], &self.top_ids[i]);
        let mut params = Params::new(
            &mut self.learnable_params,
            &self.layer_learnable_ids[i],
            &self.param_propagate_down[i],
        );
        layer
            .backward(
                &mut ctx,
                &mut blobs,
                &self.bottom_need_backward[i],
                &mut params,
            )
            .map_err(named)?;
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
            let lp = &self.layer_params[i];
            let mut ctx = Context {
                backend: &self.backend,
                phase: lp.phase(),
                rng: &mut self.rng,
            };
            let mut blobs = Blobs::new(&mut self.blobs, &self.bottom_ids[i], &self.top_ids[i]);
            let params = Params::new(
                &mut self.learnable_params,
                &self.layer_learnable_ids[i],
                &self.param_propagate_down[i],
            );
            self.layers[i]
                .reshape(&mut ctx, &mut blobs, &params)
                .map_err(|e| NetError::Layer(layers::Error::new(lp, e)))?;
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
            let n = blob.count();
            self.backend
                .set(n, 0.0, blob.diff_mut(), 0)
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
        let layer = &self.layer_names[i];
        for &id in &self.top_ids[i] {
            let v = Self::mean_abs(&self.blobs[id], false)?;
            log::info!(
                "    [Forward] Layer {layer}, top blob {} data: {v}",
                self.blob_names[id]
            );
        }
        for (k, &net_id) in self.layer_net_param_ids[i].iter().enumerate() {
            let blob = &self.learnable_params[self.layer_learnable_ids[i][k]];
            let v = Self::mean_abs(blob, false)?;
            log::info!(
                "    [Forward] Layer {layer}, param blob {} data: {v}",
                self.param_display_names[net_id]
            );
        }
        Ok(())
    }

    fn backward_debug_info(&self, i: usize) -> Result<()> {
        let layer = &self.layer_names[i];
        for (j, &id) in self.bottom_ids[i].iter().enumerate() {
            if !self.bottom_need_backward[i][j] {
                continue;
            }
            let v = Self::mean_abs(&self.blobs[id], true)?;
            log::info!(
                "    [Backward] Layer {layer}, bottom blob {} diff: {v}",
                self.blob_names[id]
            );
        }
        for k in 0..self.layer_learnable_ids[i].len() {
            if !self.param_propagate_down[i][k] {
                continue;
            }
            let blob = &self.learnable_params[self.layer_learnable_ids[i][k]];
            let v = Self::mean_abs(blob, true)?;
            log::info!("    [Backward] Layer {layer}, param blob {k} diff: {v}");
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
    pub fn layer_names(&self) -> &[String] {
        &self.layer_names
    }
    /// Layer `i`'s type string.
    pub fn layer_type(&self, i: usize) -> &str {
        self.layers[i].layer_type()
    }
    /// Layer `i`'s parameter as the net uses it (Split bottoms renamed, phase set, the
    /// implicit loss weight recorded).
    pub fn layer_param(&self, i: usize) -> &LayerParameter {
        &self.layer_params[i]
    }
    /// Layer `i`.
    pub fn layer(&self, i: usize) -> &dyn Layer<B> {
        self.layers[i].as_ref()
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
        self.layer_need_backward[i]
    }
    /// Per bottom of layer `i`: whether backward computes its diff.
    pub fn bottom_need_backward(&self, i: usize) -> &[bool] {
        &self.bottom_need_backward[i]
    }
    /// The blob ids of layer `i`'s bottoms.
    pub fn bottom_ids(&self, i: usize) -> &[usize] {
        &self.bottom_ids[i]
    }
    /// The blob ids of layer `i`'s tops.
    pub fn top_ids(&self, i: usize) -> &[usize] {
        &self.top_ids[i]
    }
    /// Per top of layer `i`: its loss weight.
    pub fn top_loss_weights(&self, i: usize) -> &[f32] {
        &self.top_loss_weights[i]
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
    pub fn blob_names(&self) -> &[String] {
        &self.blob_names
    }
    /// Per blob id: the loss weight of the top that produces it.
    pub fn blob_loss_weights(&self) -> &[f32] {
        &self.blob_loss_weights
    }
    /// Per blob id: whether some layer computes its diff.
    pub fn blob_need_backward(&self) -> &[bool] {
        &self.blob_need_backward
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
    /// Per learnable parameter: its `lr_mult`.
    pub fn params_lr(&self) -> &[f32] {
        &self.params_lr
    }
    /// Per learnable parameter: its `decay_mult`.
    pub fn params_weight_decay(&self) -> &[f32] {
        &self.params_weight_decay
    }
    /// Per learnable parameter: whether some layer gave its `lr_mult`.
    pub fn has_params_lr(&self) -> &[bool] {
        &self.has_params_lr
    }
    /// Per learnable parameter: whether some layer gave its `decay_mult`.
    pub fn has_params_decay(&self) -> &[bool] {
        &self.has_params_decay
    }
    /// Per layer parameter `k` of layer `i`: its learnable parameter index.
    pub fn layer_learnable_ids(&self, i: usize) -> &[usize] {
        &self.layer_learnable_ids[i]
    }
    /// Per net param (each (layer, parameter) pair in order): the net param that owns it, if
    /// shared.
    pub fn param_owners(&self) -> &[Option<usize>] {
        &self.param_owners
    }
    /// Per net param: `(layer, parameter index)`.
    pub fn param_layer_indices(&self) -> &[(usize, usize)] {
        &self.param_layer_indices
    }
    /// Per net param: its name, or its index in its layer when unnamed.
    pub fn param_display_names(&self) -> &[String] {
        &self.param_display_names
    }
    /// Per net param: its learnable parameter index.
    pub fn learnable_param_ids(&self) -> &[usize] {
        &self.learnable_param_ids
    }
    /// Whether backward computes the gradient of parameter `k` of layer `i`.
    pub fn param_propagate_down(&self, i: usize) -> &[bool] {
        &self.param_propagate_down[i]
    }
}
