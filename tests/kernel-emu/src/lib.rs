//! The kernels of rcaffe's `kernels/*.cu`, compiled as C++ for the host (see `build.rs` and
//! `kernels/emulation.h`), and [`launch`], which runs one emulated CUDA grid.
//!
//! Each kernel is declared here with the C signature of its `extern "C" __global__` function;
//! the same argument list is what the CUDA backend passes to the device launch. Calling a
//! kernel function directly runs one emulated thread, with the indices [`launch`] set.

#![allow(clippy::too_many_arguments)]

use std::os::raw::{c_float, c_int};

extern "C" {
    fn rcaffe_emu_set_index(block: u32, thread: u32, grid_dim: u32, block_dim: u32);
}

/// Runs `kernel` once for every `(block, thread)` of a `grid x block` launch, one after another
/// on this OS thread, with `blockIdx`, `threadIdx`, `gridDim` and `blockDim` set for each.
///
/// # Safety
///
/// `kernel` calls a kernel from [`k`] with pointers valid for every element the kernel touches.
pub unsafe fn launch(grid: u32, block: u32, mut kernel: impl FnMut()) {
    for b in 0..grid {
        for t in 0..block {
            // SAFETY: sets thread-local integers only.
            unsafe { rcaffe_emu_set_index(b, t, grid, block) };
            kernel();
        }
    }
}

/// The kernels, by file. Pointers are already offset; sizes are `int`.
pub mod k {
    use super::*;

    // kernels/elementwise.cu
    extern "C" {
        pub fn copy(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn set(n: c_int, value: c_float, y: *mut c_float);
        pub fn add_scalar(n: c_int, value: c_float, y: *mut c_float);
        pub fn axpy(n: c_int, alpha: c_float, x: *const c_float, y: *mut c_float);
        pub fn axpby(
            n: c_int,
            alpha_at: *const c_float,
            alpha: c_float,
            x: *const c_float,
            beta: c_float,
            y: *mut c_float,
        );
        pub fn scale(
            n: c_int,
            alpha_at: *const c_float,
            alpha: c_float,
            x: *const c_float,
            y: *mut c_float,
        );
        pub fn add(n: c_int, a: *const c_float, b: *const c_float, y: *mut c_float);
        pub fn sub(n: c_int, a: *const c_float, b: *const c_float, y: *mut c_float);
        pub fn mul(n: c_int, a: *const c_float, b: *const c_float, y: *mut c_float);
        pub fn div_kernel(n: c_int, a: *const c_float, b: *const c_float, y: *mut c_float);
        pub fn max_kernel(n: c_int, a: *const c_float, b: *const c_float, y: *mut c_float);
        pub fn powx(n: c_int, x: *const c_float, p: c_float, y: *mut c_float);
        pub fn power(
            n: c_int,
            x: *const c_float,
            power: c_float,
            scale: c_float,
            shift: c_float,
            y: *mut c_float,
        );
        pub fn exp_kernel(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn log_kernel(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn abs_kernel(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn sqr(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn sqrt_kernel(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn sign(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn reduce_partial(
            n: c_int,
            kind: c_int,
            x: *const c_float,
            y: *const c_float,
            partial: *mut c_float,
        );
        pub fn sum_partials(parts: c_int, partial: *const c_float, alpha: c_float, y: *mut c_float);
    }

    // kernels/activations.cu
    extern "C" {
        pub fn relu_forward(n: c_int, slope: c_float, x: *const c_float, y: *mut c_float);
        pub fn relu_backward(
            n: c_int,
            slope: c_float,
            x: *const c_float,
            dy: *const c_float,
            dx: *mut c_float,
        );
        pub fn sigmoid_forward(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn sigmoid_backward(n: c_int, y: *const c_float, dy: *const c_float, dx: *mut c_float);
        pub fn tanh_forward(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn tanh_backward(n: c_int, y: *const c_float, dy: *const c_float, dx: *mut c_float);
        pub fn elu_forward(n: c_int, alpha: c_float, x: *const c_float, y: *mut c_float);
        pub fn elu_backward(
            n: c_int,
            alpha: c_float,
            x: *const c_float,
            y: *const c_float,
            dy: *const c_float,
            dx: *mut c_float,
        );
        pub fn bnll_forward(n: c_int, x: *const c_float, y: *mut c_float);
        pub fn bnll_backward(n: c_int, x: *const c_float, dy: *const c_float, dx: *mut c_float);
        pub fn prelu_forward(
            outer: c_int,
            channels: c_int,
            inner: c_int,
            slope: *const c_float,
            x: *const c_float,
            y: *mut c_float,
        );
        pub fn prelu_backward(
            outer: c_int,
            channels: c_int,
            inner: c_int,
            slope: *const c_float,
            x: *const c_float,
            dy: *const c_float,
            dx: *mut c_float,
        );
        pub fn prelu_slope_grad(
            outer: c_int,
            channels: c_int,
            inner: c_int,
            x: *const c_float,
            dy: *const c_float,
            dslope: *mut c_float,
        );
    }

    // kernels/im2col.cu
    extern "C" {
        pub fn im2col(
            channels: c_int,
            height: c_int,
            width: c_int,
            kernel_h: c_int,
            kernel_w: c_int,
            pad_h: c_int,
            pad_w: c_int,
            stride_h: c_int,
            stride_w: c_int,
            dilation_h: c_int,
            dilation_w: c_int,
            out_h: c_int,
            out_w: c_int,
            im: *const c_float,
            col: *mut c_float,
        );
        pub fn col2im(
            channels: c_int,
            height: c_int,
            width: c_int,
            kernel_h: c_int,
            kernel_w: c_int,
            pad_h: c_int,
            pad_w: c_int,
            stride_h: c_int,
            stride_w: c_int,
            dilation_h: c_int,
            dilation_w: c_int,
            out_h: c_int,
            out_w: c_int,
            col: *const c_float,
            im: *mut c_float,
        );
    }

    // kernels/pooling.cu: geometry as (planes, height, width, kernel_h, kernel_w, stride_h,
    // stride_w, pad_h, pad_w, pooled_h, pooled_w).
    extern "C" {
        pub fn max_pool_forward(
            planes: c_int,
            height: c_int,
            width: c_int,
            kernel_h: c_int,
            kernel_w: c_int,
            stride_h: c_int,
            stride_w: c_int,
            pad_h: c_int,
            pad_w: c_int,
            pooled_h: c_int,
            pooled_w: c_int,
            x: *const c_float,
            y: *mut c_float,
            mask: *mut c_float,
        );
        pub fn max_pool_backward(
            planes: c_int,
            height: c_int,
            width: c_int,
            kernel_h: c_int,
            kernel_w: c_int,
            stride_h: c_int,
            stride_w: c_int,
            pad_h: c_int,
            pad_w: c_int,
            pooled_h: c_int,
            pooled_w: c_int,
            dy: *const c_float,
            mask: *const c_float,
            dx: *mut c_float,
        );
        pub fn ave_pool_forward(
            planes: c_int,
            height: c_int,
            width: c_int,
            kernel_h: c_int,
            kernel_w: c_int,
            stride_h: c_int,
            stride_w: c_int,
            pad_h: c_int,
            pad_w: c_int,
            pooled_h: c_int,
            pooled_w: c_int,
            x: *const c_float,
            y: *mut c_float,
        );
        pub fn ave_pool_backward(
            planes: c_int,
            height: c_int,
            width: c_int,
            kernel_h: c_int,
            kernel_w: c_int,
            stride_h: c_int,
            stride_w: c_int,
            pad_h: c_int,
            pad_w: c_int,
            pooled_h: c_int,
            pooled_w: c_int,
            dy: *const c_float,
            dx: *mut c_float,
        );
    }

    // kernels/axis.cu
    extern "C" {
        pub fn max_over_axis(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            x: *const c_float,
            y: *mut c_float,
        );
        pub fn sum_over_axis(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            x: *const c_float,
            y: *mut c_float,
        );
        pub fn dot_over_axis(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            a: *const c_float,
            b: *const c_float,
            y: *mut c_float,
        );
        pub fn sub_along_axis(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            v: *const c_float,
            y: *mut c_float,
        );
        pub fn div_along_axis(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            v: *const c_float,
            y: *mut c_float,
        );
        pub fn add_per_channel(
            outer: c_int,
            channels: c_int,
            inner: c_int,
            v: *const c_float,
            y: *mut c_float,
        );
        pub fn mul_per_channel(
            outer: c_int,
            channels: c_int,
            inner: c_int,
            v: *const c_float,
            x: *const c_float,
            y: *mut c_float,
        );
        pub fn sum_per_channel(
            outer: c_int,
            channels: c_int,
            inner: c_int,
            alpha: c_float,
            x: *const c_float,
            beta: c_float,
            y: *mut c_float,
        );
        pub fn sum_per_channel_partial(
            outer: c_int,
            channels: c_int,
            inner: c_int,
            parts: c_int,
            x: *const c_float,
            partial: *mut c_float,
        );
        pub fn sum_per_channel_parts(
            channels: c_int,
            parts: c_int,
            partial: *const c_float,
            alpha: c_float,
            beta: c_float,
            y: *mut c_float,
        );
    }

    // kernels/plumbing.cu
    extern "C" {
        pub fn copy_2d(
            rows: c_int,
            cols: c_int,
            x: *const c_float,
            x_stride: c_int,
            y: *mut c_float,
            y_stride: c_int,
        );
        pub fn running_argmax(
            n: c_int,
            index: c_float,
            x: *const c_float,
            y: *mut c_float,
            mask: *mut c_float,
        );
        pub fn copy_where_eq(
            n: c_int,
            mask: *const c_float,
            value: c_float,
            x: *const c_float,
            y: *mut c_float,
        );
        pub fn top_k_over_axis(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            k: c_int,
            x: *const c_float,
            values: *mut c_float,
            indices: *mut c_float,
        );
    }

    // kernels/loss.cu: `has_ignore` 0 or 1, then `ignore_label`.
    extern "C" {
        pub fn label_mask(
            n: c_int,
            label: *const c_float,
            has_ignore: c_int,
            ignore_label: c_int,
            y: *mut c_float,
        );
        pub fn gather_at_label(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            x: *const c_float,
            label: *const c_float,
            has_ignore: c_int,
            ignore_label: c_int,
            fill: c_float,
            y: *mut c_float,
            error: *mut c_float,
        );
        pub fn affine_at_label(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            label: *const c_float,
            has_ignore: c_int,
            ignore_label: c_int,
            alpha: c_float,
            beta: c_float,
            y: *mut c_float,
            error: *mut c_float,
        );
        pub fn top_k_hits(
            outer: c_int,
            dim: c_int,
            inner: c_int,
            top_k: c_int,
            x: *const c_float,
            label: *const c_float,
            has_ignore: c_int,
            ignore_label: c_int,
            y: *mut c_float,
            error: *mut c_float,
        );
        pub fn sum_by_label(
            n: c_int,
            classes: c_int,
            x: *const c_float,
            label: *const c_float,
            has_ignore: c_int,
            ignore_label: c_int,
            y: *mut c_float,
        );
        pub fn sigmoid_cross_entropy(
            n: c_int,
            x: *const c_float,
            t: *const c_float,
            y: *mut c_float,
        );
    }

    // kernels/lrn.cu
    extern "C" {
        pub fn lrn_across_forward(
            num: c_int,
            channels: c_int,
            spatial: c_int,
            size: c_int,
            alpha: c_float,
            beta: c_float,
            k: c_float,
            x: *const c_float,
            scale: *mut c_float,
            y: *mut c_float,
        );
        pub fn lrn_across_backward(
            num: c_int,
            channels: c_int,
            spatial: c_int,
            size: c_int,
            alpha: c_float,
            beta: c_float,
            x: *const c_float,
            y: *const c_float,
            scale: *const c_float,
            dy: *const c_float,
            dx: *mut c_float,
        );
    }

    // kernels/random.cu: `state` is a stream's 4 words (see src/backend/philox.rs).
    extern "C" {
        pub fn bernoulli_stream(
            n: c_int,
            groups: c_int,
            p: c_float,
            state: *const c_float,
            y: *mut c_float,
        );
        pub fn advance_stream(n: c_int, state: *mut c_float);
    }

    // kernels/solver.cu: the step scale as (step_at, step), see elementwise's scalars.
    extern "C" {
        pub fn sgd_update(
            n: c_int,
            g: *mut c_float,
            h: *mut c_float,
            momentum: c_float,
            step_at: *const c_float,
            step: c_float,
        );
        pub fn nesterov_update(
            n: c_int,
            g: *mut c_float,
            h: *mut c_float,
            momentum: c_float,
            step_at: *const c_float,
            step: c_float,
        );
        pub fn adagrad_update(
            n: c_int,
            g: *mut c_float,
            h: *mut c_float,
            delta: c_float,
            step_at: *const c_float,
            step: c_float,
        );
        pub fn rmsprop_update(
            n: c_int,
            g: *mut c_float,
            h: *mut c_float,
            rms_decay: c_float,
            delta: c_float,
            step_at: *const c_float,
            step: c_float,
        );
        pub fn adadelta_update(
            n: c_int,
            g: *mut c_float,
            h: *mut c_float,
            h2: *mut c_float,
            momentum: c_float,
            delta: c_float,
            step_at: *const c_float,
            step: c_float,
        );
        pub fn adam_update(
            n: c_int,
            g: *mut c_float,
            m: *mut c_float,
            v: *mut c_float,
            beta1: c_float,
            beta2: c_float,
            eps_hat: c_float,
            step_at: *const c_float,
            step: c_float,
        );
    }
}
