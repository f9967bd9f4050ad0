//! The engine below the solver: the CPU backend's ops, fillers, layers, net construction, and
//! net initialisation against upstream's logs.
//!
//! One test binary for these modules, so CI links a handful of binaries rather than one per
//! file.

mod backend_cpu;
#[path = "../common/mod.rs"]
mod common;
mod filler;
mod layers_activation;
mod layers_data;
mod layers_hdf5;
mod layers_loss;
mod layers_loss_more;
mod layers_neuron;
mod layers_norm_vision;
mod layers_recurrent;
mod layers_shape;
mod layers_vision;
mod net;
mod netinit;
