//! Net construction and running: state rules, split insertion, in-place layers, shared
//! parameters, loss weights, backward decisions, weights in and out; and the gradient checker.
//!
//! Most nets here are made of small toy layers defined below (host arithmetic, so they are easy
//! to trust) and passed to the net with `Net::new_with_factory`; the tests that build the zoo
//! nets with the real layers say so.

use std::path::Path;

use rcaffe::backend::{rng_from_seed, Backend, CpuBackend, Distribution};
use rcaffe::blob::Blob;
use rcaffe::layers::{
    is_registered, BlobCounts, Blobs, Context, Count, InOut, Layer, LayerError, LayerFactory,
    Params,
};
use rcaffe::log::cpp_float;
use rcaffe::net::{filter, splits, Net, NetError};
use rcaffe::proto::caffe::{LayerParameter, NetParameter, Phase};
use rcaffe::proto::{parse_text, read_caffemodel, read_net};
use rcaffe::testing::{cpu, layer_param, GradientChecker, GradientError, LayerHarness};

// ---- toy layers -----------------------------------------------------------------------------

/// `y[n, o] = sum_i W[o, i] x[n, i]`, `W` of shape `(num_output, count(1))` drawn from
/// U[-1, 1]; `num_output` from `inner_product_param`.
struct ToyAffine {
    num_output: usize,
}

impl<B: Backend> Layer<B> for ToyAffine {
    fn layer_type(&self) -> &'static str {
        "ToyAffine"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let k = blobs.bottom(0).count_from(1)?;
        let mut w = Blob::new(ctx.backend, &[self.num_output, k])?;
        let uniform = Distribution::Uniform { lo: -1.0, hi: 1.0 };
        ctx.backend.random(uniform, ctx.rng, w.data_view_mut())?;
        params.push(w);
        Ok(())
    }
    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let n = blobs.bottom(0).shape()[0];
        blobs.top_mut(0).reshape(&[n, self.num_output])?;
        Ok(())
    }
    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let x = blobs.bottom(0).data_to_vec()?;
        let w = params.get(0).data_to_vec()?;
        let (o, k) = (self.num_output, w.len() / self.num_output);
        let n = x.len() / k;
        let mut y = vec![0.0; n * o];
        for a in 0..n {
            for b in 0..o {
                y[a * o + b] = (0..k).map(|i| w[b * k + i] * x[a * k + i]).sum();
            }
        }
        blobs.top_mut(0).set_data(&y)?;
        Ok(())
    }
    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let x = blobs.bottom(0).data_to_vec()?;
        let dy = blobs.top(0).diff_to_vec()?;
        let w = params.get(0).data_to_vec()?;
        let (o, k) = (self.num_output, w.len() / self.num_output);
        let n = x.len() / k;
        if params.propagate_down(0) {
            let mut dw = params.get(0).diff_to_vec()?;
            for b in 0..o {
                for i in 0..k {
                    dw[b * k + i] += (0..n).map(|a| dy[a * o + b] * x[a * k + i]).sum::<f32>();
                }
            }
            params.get_mut(0).set_diff(&dw)?;
        }
        if propagate_down[0] {
            let mut dx = vec![0.0; n * k];
            for a in 0..n {
                for i in 0..k {
                    dx[a * k + i] = (0..o).map(|b| dy[a * o + b] * w[b * k + i]).sum();
                }
            }
            blobs.bottom_mut(0).set_diff(&dx)?;
        }
        Ok(())
    }
}

/// `y = max(x, 0)`, in place or not.
struct ToyRelu;

impl<B: Backend> Layer<B> for ToyRelu {
    fn layer_type(&self) -> &'static str {
        "ToyRelu"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn supports_in_place(&self) -> bool {
        true
    }
    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        if !blobs.is_in_place(0) {
            let shape = blobs.bottom(0).shape().to_vec();
            blobs.top_mut(0).reshape(&shape)?;
        }
        Ok(())
    }
    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let (x, out) = match blobs.forward_io(0) {
            InOut::Separate { input, output } => (input.data_to_vec()?, output),
            InOut::Same(blob) => (blob.data_to_vec()?, blob),
        };
        let y: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
        out.set_data(&y)?;
        Ok(())
    }
    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if !propagate_down[0] {
            return Ok(());
        }
        let (y, dy, out) = match blobs.backward_io(0) {
            InOut::Separate { input, output } => {
                (input.data_to_vec()?, input.diff_to_vec()?, output)
            }
            InOut::Same(blob) => (blob.data_to_vec()?, blob.diff_to_vec()?, blob),
        };
        let dx: Vec<f32> = y
            .iter()
            .zip(&dy)
            .map(|(&v, &g)| if v > 0.0 { g } else { 0.0 })
            .collect();
        out.set_diff(&dx)?;
        Ok(())
    }
}

/// `loss = sum(x^2) / 2` over all bottoms; a scalar top.
struct ToySquareLoss;

impl<B: Backend> Layer<B> for ToySquareLoss {
    fn layer_type(&self) -> &'static str {
        "ToySquareLoss"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::new(Count::AtLeast(1), Count::Exactly(1))
    }
    fn allow_force_backward(&self, bottom_index: usize) -> bool {
        bottom_index == 0
    }
    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        blobs.top_mut(0).reshape(&[])?;
        Ok(())
    }
    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let mut loss = 0.0;
        for i in 0..blobs.num_bottom() {
            loss += blobs
                .bottom(i)
                .data_to_vec()?
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
                / 2.0;
        }
        blobs.top_mut(0).set_data(&[loss])?;
        Ok(())
    }
    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let scale = blobs.top(0).diff_to_vec()?[0];
        for (i, &down) in propagate_down.iter().enumerate() {
            if down {
                let dx: Vec<f32> = blobs
                    .bottom(i)
                    .data_to_vec()?
                    .iter()
                    .map(|v| v * scale)
                    .collect();
                blobs.bottom_mut(i).set_diff(&dx)?;
            }
        }
        Ok(())
    }
}

/// Two tops, `data` (2 x 3, values 0.1 i - 0.2) and `label` (2), set once.
struct ToyData;

impl<B: Backend> Layer<B> for ToyData {
    fn layer_type(&self) -> &'static str {
        "ToyData"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(0, 2)
    }
    fn layer_setup(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        blobs.top_mut(0).reshape(&[2, 3])?;
        let values: Vec<f32> = (0..6).map(|i| 0.1 * i as f32 - 0.2).collect();
        blobs.top_mut(0).set_data(&values)?;
        blobs.top_mut(1).reshape(&[2])?;
        blobs.top_mut(1).set_data(&[0.0, 1.0])?;
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
        _ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
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

/// `y = x^3 + p * x` element-wise with a scalar parameter `p`; with `wrong`, backward
/// forgets the `p` term of dx (a bug the gradient checker must catch).
struct ToyCubic {
    wrong: bool,
}

impl<B: Backend> Layer<B> for ToyCubic {
    fn layer_type(&self) -> &'static str {
        "ToyCubic"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn layer_setup(
        &mut self,
        ctx: &mut Context<'_, B>,
        _blobs: &mut Blobs<'_, B>,
        params: &mut Vec<Blob<B>>,
    ) -> Result<(), LayerError> {
        let mut p = Blob::new(ctx.backend, &[1])?;
        p.set_data(&[0.7])?;
        params.push(p);
        Ok(())
    }
    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let shape = blobs.bottom(0).shape().to_vec();
        blobs.top_mut(0).reshape(&shape)?;
        Ok(())
    }
    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let p = params.get(0).data_to_vec()?[0];
        let y: Vec<f32> = blobs
            .bottom(0)
            .data_to_vec()?
            .iter()
            .map(|&x| x * x * x + p * x)
            .collect();
        blobs.top_mut(0).set_data(&y)?;
        Ok(())
    }
    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let p = params.get(0).data_to_vec()?[0];
        let x = blobs.bottom(0).data_to_vec()?;
        let dy = blobs.top(0).diff_to_vec()?;
        if params.propagate_down(0) {
            let mut dp = params.get(0).diff_to_vec()?;
            dp[0] += x.iter().zip(&dy).map(|(&x, &g)| g * x).sum::<f32>();
            params.get_mut(0).set_diff(&dp)?;
        }
        if propagate_down[0] {
            let linear = if self.wrong { 0.0 } else { p };
            let dx: Vec<f32> = x
                .iter()
                .zip(&dy)
                .map(|(&x, &g)| g * (3.0 * x * x + linear))
                .collect();
            blobs.bottom_mut(0).set_diff(&dx)?;
        }
        Ok(())
    }
}

/// `y = factor * x`, backward `dx = factor * dy`: correct maths, but with a NaN or infinite
/// factor every value on both sides of the gradient check is non-finite.
struct ToyScale {
    factor: f32,
}

impl<B: Backend> Layer<B> for ToyScale {
    fn layer_type(&self) -> &'static str {
        "ToyScale"
    }
    fn counts(&self) -> BlobCounts {
        BlobCounts::exactly(1, 1)
    }
    fn reshape(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &Params<'_, B>,
    ) -> Result<(), LayerError> {
        let shape = blobs.bottom(0).shape().to_vec();
        blobs.top_mut(0).reshape(&shape)?;
        Ok(())
    }
    fn forward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        let y: Vec<f32> = blobs
            .bottom(0)
            .data_to_vec()?
            .iter()
            .map(|&x| self.factor * x)
            .collect();
        blobs.top_mut(0).set_data(&y)?;
        Ok(())
    }
    fn backward(
        &mut self,
        _ctx: &mut Context<'_, B>,
        blobs: &mut Blobs<'_, B>,
        propagate_down: &[bool],
        _params: &mut Params<'_, B>,
    ) -> Result<(), LayerError> {
        if propagate_down[0] {
            let dx: Vec<f32> = blobs
                .top(0)
                .diff_to_vec()?
                .iter()
                .map(|&g| self.factor * g)
                .collect();
            blobs.bottom_mut(0).set_diff(&dx)?;
        }
        Ok(())
    }
}

fn toy_layer<B: Backend>(p: &LayerParameter) -> Option<Result<Box<dyn Layer<B>>, LayerError>> {
    let layer: Box<dyn Layer<B>> = match p.r#type() {
        "ToyAffine" => {
            let num_output = p
                .inner_product_param
                .as_ref()
                .map_or(1, |ip| ip.num_output() as usize);
            Box::new(ToyAffine { num_output })
        }
        "ToyRelu" => Box::new(ToyRelu),
        "ToySquareLoss" => Box::new(ToySquareLoss),
        "ToyData" => Box::new(ToyData),
        "ToyCubic" => Box::new(ToyCubic { wrong: false }),
        _ => return None,
    };
    Some(Ok(layer))
}

fn net_param(text: &str) -> NetParameter {
    parse_text(text, Path::new("<test net>")).expect("test net prototxt")
}

fn build(text: &str) -> Result<Net<CpuBackend>, NetError> {
    let factory: &LayerFactory<CpuBackend> = &toy_layer::<CpuBackend>;
    Net::new_with_factory(&net_param(text), &cpu(), rng_from_seed(1701), factory)
}

fn layer_names(param: &NetParameter) -> Vec<&str> {
    param.layer.iter().map(|l| l.name()).collect()
}

// ---- state rules ----------------------------------------------------------------------------

const RULES_NET: &str = r#"
name: "rules"
layer { name: "always" type: "Input" top: "a" }
layer { name: "train_only" type: "Input" top: "b" include { phase: TRAIN } }
layer { name: "test_only" type: "Input" top: "c" include { phase: TEST } }
layer { name: "not_test" type: "Input" top: "d" exclude { phase: TEST } }
layer { name: "level_ge_2" type: "Input" top: "e" include { min_level: 2 } }
layer { name: "level_le_1" type: "Input" top: "f" include { max_level: 1 } }
layer { name: "stage_x_and_y" type: "Input" top: "g" include { stage: "x" stage: "y" } }
layer { name: "stage_x_or_y" type: "Input" top: "h" include { stage: "x" } include { stage: "y" } }
layer { name: "not_stage_x" type: "Input" top: "i" include { not_stage: "x" } }
layer { name: "exclude_stage_y" type: "Input" top: "j" exclude { stage: "y" } }
layer { name: "test_level_1" type: "Input" top: "k" include { phase: TEST min_level: 1 } }
"#;

fn kept(state: &str) -> Vec<String> {
    let text = format!("{RULES_NET}\nstate {{ {state} }}");
    let (filtered, _) = filter::filter_net(&net_param(&text)).unwrap();
    layer_names(&filtered)
        .into_iter()
        .map(String::from)
        .collect()
}

#[test]
fn state_rules_phase_level_stage() {
    assert_eq!(
        kept("phase: TRAIN"),
        [
            "always",
            "train_only",
            "not_test",
            "level_le_1",
            "not_stage_x",
            "exclude_stage_y"
        ]
    );
    assert_eq!(
        kept("phase: TEST"),
        [
            "always",
            "test_only",
            "level_le_1",
            "not_stage_x",
            "exclude_stage_y"
        ]
    );
    assert_eq!(
        kept("phase: TEST level: 2"),
        [
            "always",
            "test_only",
            "level_ge_2",
            "not_stage_x",
            "exclude_stage_y",
            "test_level_1"
        ]
    );
    assert_eq!(
        kept("phase: TRAIN stage: \"x\""),
        [
            "always",
            "train_only",
            "not_test",
            "level_le_1",
            "stage_x_or_y",
            "exclude_stage_y"
        ]
    );
    assert_eq!(
        kept("phase: TRAIN stage: \"y\" stage: \"x\""),
        [
            "always",
            "train_only",
            "not_test",
            "level_le_1",
            "stage_x_and_y",
            "stage_x_or_y"
        ]
    );
}

#[test]
fn state_rules_default_phase_is_test_and_logs_say_why() {
    // NetState's phase defaults to TEST, as upstream's proto.
    let (filtered, log) = filter::filter_net(&net_param(RULES_NET)).unwrap();
    assert!(layer_names(&filtered).contains(&"test_only"));
    assert!(log.contains(
        &"The NetState phase (1) differed from the phase (0) specified by a rule in layer \
          train_only"
            .to_string()
    ));
    assert!(log.contains(
        &"The NetState level (0) is above the min_level (2) specified by a rule in layer \
          level_ge_2"
            .to_string()
    ));
    assert!(log.contains(
        &"The NetState did not contain stage 'x' specified by a rule in layer stage_x_and_y"
            .to_string()
    ));
    let (_, log) = filter::filter_net(&net_param(&format!(
        "{RULES_NET} state {{ level: 3 stage: \"x\" }}"
    )))
    .unwrap();
    assert!(log.contains(
        &"The NetState level (3) is above the max_level (1) specified by a rule in layer \
          level_le_1"
            .to_string()
    ));
    assert!(log.contains(
        &"The NetState contained a not_stage 'x' specified by a rule in layer not_stage_x"
            .to_string()
    ));
}

#[test]
fn include_and_exclude_together_is_an_error() {
    let text = r#"layer { name: "both" type: "Input" top: "a" include { phase: TRAIN } exclude { phase: TEST } }"#;
    let err = filter::filter_net(&net_param(text)).unwrap_err();
    assert!(err.contains("both") && err.contains("not both"), "{err}");
    let err = build(text).err().expect("an error");
    assert!(err.to_string().contains("'both'"), "{err}");
}

#[test]
fn lenet_train_test_filters_by_phase() {
    let mut param = read_net(Path::new(
        "../shared/caffe-zoo/examples/mnist/lenet_train_test.prototxt",
    ))
    .unwrap();
    param.state.get_or_insert_default().phase = Some(Phase::Train as i32);
    let (train, _) = filter::filter_net(&param).unwrap();
    assert_eq!(
        layer_names(&train),
        ["mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"]
    );
    param.state.get_or_insert_default().phase = Some(Phase::Test as i32);
    let (test, _) = filter::filter_net(&param).unwrap();
    assert_eq!(
        layer_names(&test),
        ["mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "accuracy", "loss"]
    );
    assert_eq!(test.layer[0].include[0].phase(), Phase::Test);
}

// ---- split insertion ------------------------------------------------------------------------

fn splits_of(text: &str) -> NetParameter {
    splits::insert_splits(&net_param(text)).unwrap()
}

#[test]
fn no_split_for_single_consumers_and_in_place_chains() {
    let text = r#"
        layer { name: "data" type: "Input" top: "data" }
        layer { name: "ip" type: "ToyAffine" bottom: "data" top: "ip" }
        layer { name: "relu" type: "ToyRelu" bottom: "ip" top: "ip" }
        layer { name: "loss" type: "ToySquareLoss" bottom: "ip" top: "loss" }
    "#;
    assert_eq!(splits_of(text), net_param(text));
}

#[test]
fn split_names_and_counts() {
    let out = splits_of(
        r#"
        layer { name: "data" type: "Input" top: "data" top: "label" }
        layer { name: "a" type: "ToyAffine" bottom: "data" top: "a" }
        layer { name: "b" type: "ToyAffine" bottom: "data" top: "b" }
        layer { name: "c" type: "ToySquareLoss" bottom: "a" bottom: "data" bottom: "label" top: "c" }
        "#,
    );
    assert_eq!(
        layer_names(&out),
        ["data", "data_data_0_split", "a", "b", "c"]
    );
    let split = &out.layer[1];
    assert_eq!(split.r#type(), "Split");
    assert_eq!(split.bottom, ["data"]);
    assert_eq!(
        split.top,
        [
            "data_data_0_split_0",
            "data_data_0_split_1",
            "data_data_0_split_2"
        ]
    );
    assert!(split.loss_weight.is_empty());
    assert_eq!(out.layer[2].bottom, ["data_data_0_split_0"]);
    assert_eq!(out.layer[3].bottom, ["data_data_0_split_1"]);
    assert_eq!(
        out.layer[4].bottom,
        ["a", "data_data_0_split_2", "label"],
        "label has one consumer: no split"
    );
}

#[test]
fn split_after_in_place_uses_the_in_place_layer_name() {
    let out = splits_of(
        r#"
        layer { name: "data" type: "Input" top: "data" }
        layer { name: "relu" type: "ToyRelu" bottom: "data" top: "data" }
        layer { name: "a" type: "ToyAffine" bottom: "data" top: "a" }
        layer { name: "b" type: "ToyAffine" bottom: "data" top: "b" }
        "#,
    );
    assert_eq!(
        layer_names(&out),
        ["data", "relu", "data_relu_0_split", "a", "b"]
    );
    assert_eq!(
        out.layer[1].bottom,
        ["data"],
        "the in-place layer reads the unsplit blob"
    );
    assert_eq!(out.layer[3].bottom, ["data_relu_0_split_0"]);
}

#[test]
fn split_counts_a_loss_weighted_top_as_a_consumer() {
    let out = splits_of(
        r#"
        layer { name: "data" type: "Input" top: "data" }
        layer { name: "ip" type: "ToyAffine" bottom: "data" top: "ip" loss_weight: 0.5 }
        layer { name: "loss" type: "ToySquareLoss" bottom: "ip" top: "loss" }
        "#,
    );
    assert_eq!(layer_names(&out), ["data", "ip", "ip_ip_0_split", "loss"]);
    assert!(out.layer[1].loss_weight.is_empty(), "moved to the split");
    assert_eq!(out.layer[2].loss_weight, [0.5, 0.0]);
    assert_eq!(out.layer[2].top, ["ip_ip_0_split_0", "ip_ip_0_split_1"]);
    assert_eq!(
        out.layer[3].bottom,
        ["ip_ip_0_split_1"],
        "split 0 carries the loss"
    );
    // The implicit weight of a Loss layer is not known when splitting (upstream's subtlety).
    let out = splits_of(
        r#"
        layer { name: "data" type: "Input" top: "data" }
        layer { name: "l1" type: "ToySquareLoss" bottom: "data" top: "l1" }
        layer { name: "l2" type: "ToySquareLoss" bottom: "l1" top: "l2" }
        "#,
    );
    assert_eq!(layer_names(&out), ["data", "l1", "l2"]);
}

#[test]
fn unknown_bottom_is_an_error_naming_layer_and_index() {
    let err = splits::insert_splits(&net_param(
        r#"layer { name: "a" type: "ToyRelu" bottom: "nope" top: "a" }"#,
    ))
    .unwrap_err();
    assert_eq!(
        err,
        "Unknown bottom blob 'nope' (layer 'a', bottom index 0)"
    );
}

// ---- building and running -------------------------------------------------------------------

const CHAIN: &str = r#"
name: "chain"
force_backward: false
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip1" type: "ToyAffine" bottom: "data" top: "ip1" inner_product_param { num_output: 4 } }
layer { name: "relu1" type: "ToyRelu" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "ToyAffine" bottom: "ip1" top: "ip2" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "ToySquareLoss" bottom: "ip2" top: "loss" }
"#;

#[test]
fn chain_builds_with_upstream_log_lines() {
    let net = build(CHAIN).unwrap();
    assert!(net
        .layer_names()
        .eq(["data", "ip1", "relu1", "ip2", "loss"]));
    assert!(net.blob_names().eq(["data", "ip1", "ip2", "loss"]));
    assert_eq!(net.top_ids(2), net.bottom_ids(2), "relu1 runs in place");
    assert_eq!(net.input_blob_ids(), [0]);
    let log = net.init_log();
    let expect = [
        "Creating layer data",
        "Creating Layer data",
        "data -> data",
        "Setting up data",
        "Top shape: 2 3 (6)",
        "Memory required for data: 24",
        "Creating layer ip1",
        "Creating Layer ip1",
        "ip1 <- data",
        "ip1 -> ip1",
        "Setting up ip1",
        "Top shape: 2 4 (8)",
        "Memory required for data: 56",
        "Creating layer relu1",
        "Creating Layer relu1",
        "relu1 <- ip1",
        "relu1 -> ip1 (in-place)",
        "Setting up relu1",
        "Top shape: 2 4 (8)",
        "Memory required for data: 88",
        "Creating layer ip2",
        "Creating Layer ip2",
        "ip2 <- ip1",
        "ip2 -> ip2",
        "Setting up ip2",
        "Top shape: 2 2 (4)",
        "Memory required for data: 104",
        "Creating layer loss",
        "Creating Layer loss",
        "loss <- ip2",
        "loss -> loss",
        "Setting up loss",
        "Top shape: (1)",
        "    with loss weight 1",
        "Memory required for data: 108",
        "loss needs backward computation.",
        "ip2 needs backward computation.",
        "relu1 needs backward computation.",
        "ip1 needs backward computation.",
        "data does not need backward computation.",
        "This network produces output loss",
        "Network initialization done.",
    ];
    assert!(log[0].starts_with("Initializing net from parameters: \nname: \"chain\""));
    assert_eq!(&log[1..], expect);
    assert_eq!(net.memory_used(), 108);
    assert_eq!(net.output_blob_ids(), [3]);
    // The implicit loss weight is recorded in the layer's parameter, as upstream's LossLayer.
    assert_eq!(net.layer_param(4).loss_weight, [1.0]);
    assert_eq!(net.layer_param(1).phase(), Phase::Test, "the net's phase");
}

#[test]
fn forward_and_backward_match_a_hand_computation() {
    let mut net = build(CHAIN).unwrap();
    let x = [0.5, -1.0, 2.0, 0.25, 0.0, -0.5];
    net.blob_by_name_mut("data").unwrap().set_data(&x).unwrap();
    let w1 = net.learnable_params()[0].cpu_data().to_vec();
    let w2 = net.learnable_params()[1].cpu_data().to_vec();
    let loss = net.forward().unwrap();
    // By hand.
    let mut h = [0f32; 8];
    for n in 0..2 {
        for o in 0..4 {
            h[n * 4 + o] = (0..3)
                .map(|i| w1[o * 3 + i] * x[n * 3 + i])
                .sum::<f32>()
                .max(0.0);
        }
    }
    let mut y = [0f32; 4];
    for n in 0..2 {
        for o in 0..2 {
            y[n * 2 + o] = (0..4).map(|i| w2[o * 4 + i] * h[n * 4 + i]).sum();
        }
    }
    let expected: f32 = y.iter().map(|v| v * v).sum::<f32>() / 2.0;
    assert!((loss - expected).abs() < 1e-5, "{loss} vs {expected}");
    assert_eq!(net.blob_by_name("ip1").unwrap().cpu_data(), &h);
    // Backward: dW2[o, i] = sum_n y[n, o] h[n, i].
    net.clear_param_diffs().unwrap();
    net.backward().unwrap();
    let dw2 = net.learnable_params()[1].cpu_diff();
    for o in 0..2 {
        for i in 0..4 {
            let e: f32 = (0..2).map(|n| y[n * 2 + o] * h[n * 4 + i]).sum();
            assert!((dw2[o * 4 + i] - e).abs() < 1e-5);
        }
    }
    // The input does not need a gradient: its diff stays zero.
    assert!(net
        .blob_by_name("data")
        .unwrap()
        .cpu_diff()
        .iter()
        .all(|&v| v == 0.0));
}

#[test]
fn parameter_gradients_accumulate_across_backward_passes() {
    let mut net = build(CHAIN).unwrap();
    net.blob_by_name_mut("data")
        .unwrap()
        .set_data(&[0.5, -1.0, 2.0, 0.25, 0.0, -0.5])
        .unwrap();
    net.forward().unwrap();
    net.clear_param_diffs().unwrap();
    net.backward().unwrap();
    let once = net.learnable_params()[0].diff_to_vec().unwrap();
    net.backward().unwrap();
    let twice = net.learnable_params()[0].diff_to_vec().unwrap();
    for (a, b) in once.iter().zip(&twice) {
        assert!((2.0 * a - b).abs() < 1e-6);
    }
    net.clear_param_diffs().unwrap();
    assert!(net.learnable_params()[0]
        .cpu_diff()
        .iter()
        .all(|&v| v == 0.0));
}

/// The net's gradient with respect to its parameters, by central differences on the net's loss.
#[test]
fn whole_net_gradient_matches_finite_differences() {
    let text = r#"
        name: "g"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "a" type: "ToyAffine" bottom: "data" top: "a"
                param { name: "shared" } inner_product_param { num_output: 3 } }
        layer { name: "b" type: "ToyAffine" bottom: "a" top: "b"
                param { name: "shared" } inner_product_param { num_output: 3 } }
        layer { name: "cube" type: "ToyCubic" bottom: "a" top: "cube" }
        layer { name: "l1" type: "ToySquareLoss" bottom: "b" top: "l1" loss_weight: 0.5 }
        layer { name: "l2" type: "ToySquareLoss" bottom: "cube" top: "l2" }
    "#;
    let mut net = build(text).unwrap();
    assert!(net.layer_names().any(|name| name == "a_a_0_split"));
    net.blob_by_name_mut("data")
        .unwrap()
        .set_data(&[0.3, -0.2, 0.1, 0.05, 0.4, -0.3])
        .unwrap();
    net.forward().unwrap();
    net.clear_param_diffs().unwrap();
    net.backward().unwrap();
    let analytic: Vec<Vec<f32>> = net
        .learnable_params()
        .iter()
        .map(|b| b.diff_to_vec().unwrap())
        .collect();
    assert_eq!(
        analytic.len(),
        2,
        "the shared weight once, and the cubic's p"
    );
    let step = 1e-2f32;
    for (k, grad) in analytic.iter().enumerate() {
        for (i, &computed) in grad.iter().enumerate() {
            let original = net.learnable_params()[k].cpu_data()[i];
            net.learnable_params_mut()[k].cpu_data_mut()[i] = original + step;
            let plus = f64::from(net.forward().unwrap());
            net.learnable_params_mut()[k].cpu_data_mut()[i] = original - step;
            let minus = f64::from(net.forward().unwrap());
            net.learnable_params_mut()[k].cpu_data_mut()[i] = original;
            let estimate = ((plus - minus) / (2.0 * f64::from(step))) as f32;
            let scale = computed.abs().max(estimate.abs()).max(1.0);
            assert!(
                (computed - estimate).abs() <= 2e-3 * scale,
                "param {k}[{i}]: backward {computed} vs numeric {estimate}"
            );
        }
    }
}

#[test]
fn in_place_needs_layer_support() {
    let err = build(
        r#"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "ip" type: "ToyAffine" bottom: "data" top: "data" }
        "#,
    )
    .err()
    .expect("ToyAffine cannot run in place");
    let msg = err.to_string();
    assert!(msg.contains("layer 'ip' (type ToyAffine)"), "{msg}");
    assert!(msg.contains("in-place"), "{msg}");
}

#[test]
fn split_layer_refuses_in_place() {
    let err = build(
        r#"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 } } }
        layer { name: "s" type: "Split" bottom: "data" top: "data" }
        "#,
    )
    .err()
    .expect("Split cannot run in place");
    assert!(
        err.to_string()
            .contains("Split Layer does not allow in-place"),
        "{err}"
    );
}

#[test]
fn structural_errors_name_the_blob_and_layer() {
    let err = build(
        r#"
        layer { name: "d1" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        layer { name: "d2" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        "#,
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("Top blob 'x' produced by multiple sources"),
        "{err}"
    );
    let err = build(r#"layer { name: "r" type: "ToyRelu" bottom: "none" top: "r" }"#)
        .err()
        .unwrap();
    assert!(err
        .to_string()
        .contains("Unknown bottom blob 'none' (layer 'r', bottom index 0)"));
    let err = build(r#"layer { name: "d" type: "Input" top: "x" bottom: "y" }"#)
        .err()
        .unwrap();
    assert!(err.to_string().contains("Unknown bottom blob 'y'"), "{err}");
    let err = build(
        r#"
        layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        layer { name: "r" type: "ToyRelu" bottom: "x" top: "r" top: "extra" }
        "#,
    )
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("layer 'r' (type ToyRelu)") && msg.contains("produces 1 top blob(s)"),
        "{msg}"
    );
    let err = build(r#"layer { name: "q" type: "NoSuchLayer" top: "x" }"#)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("layer 'q'")
            && msg.contains("unknown layer type \"NoSuchLayer\"")
            && msg.contains("Input")
            && msg.contains("Split"),
        "{msg}"
    );
    let err = build(
        r#"
        layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        layer { name: "r" type: "ToyRelu" bottom: "x" top: "r" propagate_down: true propagate_down: false }
        "#,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("propagate_down"), "{err}");
    let err = build(
        r#"
        layer { name: "d" type: "Input" top: "x" input_param { shape { dim: 1 } } }
        layer { name: "r" type: "ToyRelu" bottom: "x" top: "r" param { lr_mult: 1 } }
        "#,
    )
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("Too many params specified for layer r"),
        "{err}"
    );
}

#[test]
fn input_layer_shapes() {
    let net = build(
        r#"
        layer { name: "in" type: "Input" top: "a" top: "b"
                input_param { shape { dim: 2 dim: 3 } shape { dim: 4 } } }
        layer { name: "one" type: "Input" top: "c" top: "d" input_param { shape { dim: 5 } } }
        "#,
    )
    .unwrap();
    let shapes: Vec<&[usize]> = net.blobs().iter().map(|b| b.shape()).collect();
    assert_eq!(shapes, [&[2, 3][..], &[4], &[5], &[5]]);
    assert_eq!(net.input_blob_ids(), [0, 1, 2, 3]);
    let outputs: Vec<&str> = net
        .output_blob_ids()
        .iter()
        .map(|&i| net.blob_name(i))
        .collect();
    assert_eq!(outputs, ["a", "b", "c", "d"]);
    let err = build(
        r#"layer { name: "in" type: "Input" top: "a" top: "b" top: "c"
                   input_param { shape { dim: 2 } shape { dim: 4 } } }"#,
    )
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("layer 'in' (type Input)") && msg.contains("3 tops vs. 2 shapes"),
        "{msg}"
    );
}

// ---- shared parameters ----------------------------------------------------------------------

const SHARED: &str = r#"
name: "shared"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "ToyAffine" bottom: "data" top: "a"
        param { name: "w" lr_mult: 2 } inner_product_param { num_output: 3 } }
layer { name: "b" type: "ToyAffine" bottom: "a" top: "b"
        param { name: "w" } inner_product_param { num_output: 3 } }
layer { name: "loss" type: "ToySquareLoss" bottom: "b" top: "loss" }
"#;

#[test]
fn named_parameters_are_shared() {
    let mut net = build(SHARED).unwrap();
    assert_eq!(net.learnable_params().len(), 1);
    assert_eq!(net.layer_learnable_ids(1), [0]);
    assert_eq!(net.layer_learnable_ids(2), [0]);
    let owners: Vec<_> = net.net_params().iter().map(|p| p.owner).collect();
    assert_eq!(owners, [None, Some(0)]);
    assert!(net.net_params().iter().all(|p| p.display_name == "w"));
    assert_eq!(net.param_multipliers().len(), 1);
    assert_eq!(net.param_multipliers()[0].lr(), 2.0, "the owner's lr_mult");
    assert_eq!(net.param_multipliers()[0].decay(), 1.0);
    let line = "Sharing parameters 'w' owned by layer 'a', param index 0";
    let log = net.init_log();
    let at = log.iter().position(|l| l == line).expect("sharing line");
    assert_eq!(
        log[at - 1],
        "Memory required for data: 72",
        "logged after the memory line"
    );
    // Both layers' gradients land in the one diff.
    net.blob_by_name_mut("data")
        .unwrap()
        .set_data(&[1.0, 0.5, -0.5, 0.2, 0.1, 0.3])
        .unwrap();
    net.forward().unwrap();
    net.clear_param_diffs().unwrap();
    net.backward().unwrap();
    let x = net.blob_by_name("data").unwrap().cpu_data().to_vec();
    let a = net.blob_by_name("a").unwrap().cpu_data().to_vec();
    let b = net.blob_by_name("b").unwrap().cpu_data().to_vec();
    let da = net.blob_by_name("a").unwrap().cpu_diff().to_vec();
    let dw = net.learnable_params()[0].cpu_diff();
    for o in 0..3 {
        for i in 0..3 {
            let from_b: f32 = (0..2).map(|n| b[n * 3 + o] * a[n * 3 + i]).sum();
            let from_a: f32 = (0..2).map(|n| da[n * 3 + o] * x[n * 3 + i]).sum();
            assert!((dw[o * 3 + i] - (from_a + from_b)).abs() < 1e-5);
        }
    }
}

#[test]
fn shared_parameter_mismatches_are_errors() {
    let err = build(&SHARED.replace(
        "num_output: 3 } }\nlayer { name: \"loss\"",
        "num_output: 2 } }\nlayer { name: \"loss\"",
    ))
    .err()
    .expect("shape mismatch");
    let msg = err.to_string();
    assert!(
        msg.contains("Cannot share param 'w' owned by layer 'a' with layer 'b'; shape mismatch")
            && msg.contains("Owner layer param shape is 3 3 (9)")
            && msg.contains("sharing layer expects shape 2 3 (6)"),
        "{msg}"
    );
    let err = build(&SHARED.replace("param { name: \"w\" }", "param { name: \"w\" lr_mult: 3 }"))
        .err()
        .expect("lr_mult mismatch");
    assert!(
        err.to_string()
            .contains("Shared param 'w' has mismatched lr_mult"),
        "{err}"
    );
    // The sharer may set what the owner left unset.
    let net = build(&SHARED.replace(
        "param { name: \"w\" }",
        "param { name: \"w\" decay_mult: 0 }",
    ))
    .unwrap();
    assert_eq!(net.param_multipliers()[0].decay_mult, Some(0.0));
}

#[test]
fn permissive_sharing_checks_counts_only() {
    let text = r#"
        layer { name: "data" type: "Input" top: "data" top: "data2"
                input_param { shape { dim: 1 dim: 6 } shape { dim: 1 dim: 2 dim: 3 } } }
        layer { name: "a" type: "ToyAffine" bottom: "data" top: "a"
                param { name: "w" } inner_product_param { num_output: 2 } }
        layer { name: "b" type: "ToyAffine" bottom: "data2" top: "b"
                param { name: "w" share_mode: PERMISSIVE } inner_product_param { num_output: 3 } }
    "#;
    let err = build(text).err().expect("counts differ: 12 vs 18");
    assert!(err.to_string().contains("count mismatch"), "{err}");
    let ok = text
        .replace("num_output: 3", "num_output: 2")
        .replace("dim: 2 dim: 3", "dim: 3 dim: 2");
    let net = build(&ok).unwrap();
    assert_eq!(net.learnable_params().len(), 1);
}

// ---- loss weights and backward decisions ----------------------------------------------------

#[test]
fn loss_weights_scale_the_loss_and_are_logged() {
    let mut net = build(&CHAIN.replace(
        "bottom: \"ip2\" top: \"loss\"",
        "bottom: \"ip2\" top: \"loss\" loss_weight: 2.5",
    ))
    .unwrap();
    assert!(net
        .init_log()
        .contains(&"    with loss weight 2.5".to_string()));
    let weighted = net.forward().unwrap();
    let raw = net.blob_by_name("loss").unwrap().cpu_data()[0];
    assert!((weighted - 2.5 * raw).abs() < 1e-6);
    assert_eq!(net.blob_loss_weight(3), 2.5);
    // A loss weight on an ordinary top makes it a loss too.
    let mut net = build(&CHAIN.replace(
        "top: \"ip2\" inner_product_param",
        "top: \"ip2\" loss_weight: 0.5 inner_product_param",
    ))
    .unwrap();
    assert!(net.layer_names().any(|name| name == "ip2_ip2_0_split"));
    let total = net.forward().unwrap();
    let ip2: f32 = net.blob_by_name("ip2").unwrap().cpu_data().iter().sum();
    let sq = net.blob_by_name("loss").unwrap().cpu_data()[0];
    assert!(
        (total - (0.5 * ip2 + sq)).abs() < 1e-5,
        "{total} vs {}",
        0.5 * ip2 + sq
    );
    // Weights must be given once per top.
    let err = build(&CHAIN.replace(
        "bottom: \"ip2\" top: \"loss\"",
        "bottom: \"ip2\" top: \"loss\" loss_weight: 1 loss_weight: 2",
    ))
    .err()
    .unwrap();
    assert!(err
        .to_string()
        .contains("loss_weight must be unspecified or specified once per top blob"));
}

fn needs(net: &Net<CpuBackend>) -> Vec<(String, bool)> {
    (0..net.num_layers())
        .map(|i| (net.layer_name(i).to_string(), net.layer_need_backward(i)))
        .collect()
}

#[test]
fn backward_decisions() {
    // lr_mult 0 on the first layer: nothing before ip2 learns, so ip1 and relu1 need no
    // backward.
    let frozen = CHAIN.replace(
        "top: \"ip1\" inner_product_param",
        "top: \"ip1\" param { lr_mult: 0 } inner_product_param",
    );
    let net = build(&frozen).unwrap();
    let expect = [
        ("data", false),
        ("ip1", false),
        ("relu1", false),
        ("ip2", true),
        ("loss", true),
    ];
    let expect: Vec<(String, bool)> = expect.iter().map(|&(n, b)| (n.to_string(), b)).collect();
    assert_eq!(needs(&net), expect);
    assert_eq!(
        net.bottom_need_backward(3),
        [false],
        "ip2 need not compute d ip1"
    );
    assert_eq!(net.param_propagate_down(1), [false]);
    // force_backward: every layer, every bottom the layer allows, every parameter.
    let net = build(&frozen.replace("force_backward: false", "force_backward: true")).unwrap();
    assert!((0..5).all(|i| net.layer_need_backward(i)));
    assert_eq!(net.bottom_need_backward(1), [true]);
    assert_eq!(net.param_propagate_down(1), [true]);
    assert!(net.blob_need_backward(0), "data gets a gradient");
    // A layer feeding no loss needs no backward; propagate_down: false stops the gradient.
    let net = build(
        r#"
        layer { name: "data" type: "ToyData" top: "data" top: "label" }
        layer { name: "ip" type: "ToyAffine" bottom: "data" top: "ip" }
        layer { name: "side" type: "ToyAffine" bottom: "data" top: "side" }
        layer { name: "loss" type: "ToySquareLoss" bottom: "ip" bottom: "label" top: "loss"
                propagate_down: true propagate_down: false }
        "#,
    )
    .unwrap();
    let n: Vec<(String, bool)> = needs(&net);
    let get = |name: &str| n.iter().find(|(l, _)| l == name).unwrap().1;
    assert!(get("ip") && get("loss"));
    assert!(!get("side"), "side's output is no loss");
    assert!(!get("data") && !get("data_data_0_split"));
    assert_eq!(
        net.bottom_need_backward(net.layer_index("loss").unwrap()),
        [true, false]
    );
    assert!(net
        .init_log()
        .contains(&"side does not need backward computation.".to_string()));
    let outputs: Vec<&str> = net
        .output_blob_ids()
        .iter()
        .map(|&i| net.blob_name(i))
        .collect();
    assert_eq!(outputs, ["loss", "side"], "sorted by name");
    // force_backward respects allow_force_backward (the loss's label).
    let forced = build(
        r#"
        force_backward: true
        layer { name: "data" type: "ToyData" top: "data" top: "label" }
        layer { name: "loss" type: "ToySquareLoss" bottom: "data" bottom: "label" top: "loss" }
        "#,
    )
    .unwrap();
    assert_eq!(forced.bottom_need_backward(1), [true, false]);
}

#[test]
fn a_layer_whose_consumers_all_skip_it_needs_no_backward() {
    let net = build(
        r#"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "ip" type: "ToyAffine" bottom: "data" top: "ip" }
        layer { name: "loss" type: "ToySquareLoss" bottom: "ip" top: "loss" propagate_down: false }
        "#,
    )
    .unwrap();
    assert!(
        !net.layer_need_backward(1),
        "its only consumer does not propagate to it"
    );
    assert!(net.layer_need_backward(2));
}

// ---- weights in and out ---------------------------------------------------------------------

#[test]
fn to_proto_and_copy_trained_layers_round_trip() {
    let mut net = build(&CHAIN.replace(
        "top: \"ip2\" inner_product_param",
        "top: \"ip2\" loss_weight: 0.5 inner_product_param",
    ))
    .unwrap();
    let proto = net.to_proto(false).unwrap();
    assert_eq!(proto.name(), "chain");
    assert!(proto.state.is_none() && !proto.force_backward.unwrap_or(false));
    let names: Vec<&str> = layer_names(&proto);
    assert_eq!(
        names,
        ["data", "ip1", "relu1", "ip2", "ip2_ip2_0_split", "loss"]
    );
    assert!(proto
        .layer
        .iter()
        .all(|l| l.phase() == Phase::Test && l.phase.is_some()));
    assert_eq!(proto.layer[1].blobs.len(), 1);
    assert_eq!(proto.layer[1].blobs[0].shape.as_ref().unwrap().dim, [4, 3]);
    assert!(proto.layer[1].blobs[0].diff.is_empty());
    assert_eq!(
        proto.layer[5].loss_weight,
        [1.0],
        "the implicit weight is written"
    );
    assert_eq!(proto.layer[4].loss_weight, [0.5, 0.0]);
    // Diffs when asked.
    net.forward().unwrap();
    net.clear_param_diffs().unwrap();
    net.backward().unwrap();
    let with_diff = net.to_proto(true).unwrap();
    assert_eq!(
        with_diff.layer[3].blobs[0].diff,
        net.learnable_params()[1].cpu_diff()
    );

    // Into a net with other initial weights, plus a layer the source lacks.
    let other_text = CHAIN.replace(
        "layer { name: \"loss\"",
        "layer { name: \"extra\" type: \"ToyAffine\" bottom: \"ip2\" top: \"extra\" }\nlayer { name: \"loss\"",
    ).replace("bottom: \"ip2\" top: \"loss\"", "bottom: \"extra\" top: \"loss\"");
    let factory: &LayerFactory<CpuBackend> = &toy_layer::<CpuBackend>;
    let mut other =
        Net::new_with_factory(&net_param(&other_text), &cpu(), rng_from_seed(7), factory).unwrap();
    assert_ne!(
        other.learnable_params()[0].cpu_data(),
        net.learnable_params()[0].cpu_data()
    );
    let extra_before = other.learnable_params()[2].cpu_data().to_vec();
    other.copy_trained_layers_from(&proto).unwrap();
    for k in 0..2 {
        assert_eq!(
            other.learnable_params()[k].cpu_data(),
            net.learnable_params()[k].cpu_data()
        );
    }
    assert_eq!(
        other.learnable_params()[2].cpu_data(),
        &extra_before[..],
        "untouched"
    );
    // Net to net.
    let mut third =
        Net::new_with_factory(&net_param(CHAIN), &cpu(), rng_from_seed(99), factory).unwrap();
    third.copy_trained_layers_from_net(&net).unwrap();
    assert_eq!(
        third.learnable_params()[1].cpu_data(),
        net.learnable_params()[1].cpu_data()
    );
}

#[test]
fn sharing_trained_layers_shares_the_weights_memory_not_the_diffs() {
    let factory: &LayerFactory<CpuBackend> = &toy_layer::<CpuBackend>;
    let build_seeded = |seed| {
        Net::new_with_factory(&net_param(CHAIN), &cpu(), rng_from_seed(seed), factory).unwrap()
    };
    let (mut lender, mut borrower) = (build_seeded(1), build_seeded(2));
    assert!(!lender.shares_weights());
    // SAFETY: the two nets are used one at a time below.
    unsafe { borrower.share_trained_layers_with(&mut lender) }.unwrap();
    assert!(lender.shares_weights() && borrower.shares_weights());
    let k = 1;
    assert_eq!(
        borrower.learnable_params()[k].cpu_data(),
        lender.learnable_params()[k].cpu_data()
    );
    // A write to the lender's weights is the borrower's; a diff is not.
    let count = lender.learnable_params()[k].count();
    let values: Vec<f32> = (0..count).map(|i| i as f32 * 0.25).collect();
    lender.learnable_params_mut()[k].set_data(&values).unwrap();
    lender.learnable_params_mut()[k].set_diff(&values).unwrap();
    assert_eq!(borrower.learnable_params()[k].cpu_data(), &values[..]);
    assert!(borrower.learnable_params()[k]
        .cpu_diff()
        .iter()
        .all(|&d| d == 0.0));
}

#[test]
fn copy_trained_layers_errors_name_layer_index_and_shapes() {
    let mut net = build(CHAIN).unwrap();
    let mut proto = net.to_proto(false).unwrap();
    proto.layer[3].blobs[0].shape.as_mut().unwrap().dim = vec![3, 4];
    let err = net
        .copy_trained_layers_from(&proto)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Cannot copy param 0 weights from layer 'ip2'; shape mismatch")
            && err.contains("Source param shape is 3 4 (12)")
            && err.contains("target param shape is 2 4 (8)")
            && err.contains("rename the layer")
            && err.contains("legacy"),
        "{err}"
    );
    let copy = proto.layer[3].blobs[0].clone();
    proto.layer[3].blobs.push(copy);
    let err = net
        .copy_trained_layers_from(&proto)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Incompatible number of blobs for layer ip2"),
        "{err}"
    );
    // A legacy 4-D blob matches a 2-D target padded with leading ones.
    let mut proto = net.to_proto(false).unwrap();
    let blob = &mut proto.layer[3].blobs[0];
    blob.shape = None;
    blob.num = Some(1);
    blob.channels = Some(1);
    blob.height = Some(2);
    blob.width = Some(4);
    blob.data = (0..8).map(|i| i as f32).collect();
    net.copy_trained_layers_from(&proto).unwrap();
    assert_eq!(
        net.learnable_params()[1].cpu_data(),
        &[0., 1., 2., 3., 4., 5., 6., 7.]
    );
}

fn require_types(types: &[&str]) {
    let missing: Vec<&str> = types
        .iter()
        .copied()
        .filter(|t| !is_registered(t))
        .collect();
    assert!(
        missing.is_empty(),
        "layer types not registered yet: {}",
        missing.join(", ")
    );
}

#[test]
fn lenet_takes_upstream_initial_weights() {
    require_types(&["Convolution", "Pooling", "InnerProduct", "ReLU", "Softmax"]);
    let mut net = Net::from_file(
        Path::new("../shared/caffe-zoo/examples/mnist/lenet.prototxt"),
        Phase::Test,
        0,
        &[],
        &cpu(),
        rng_from_seed(1),
    )
    .unwrap();
    let source = read_caffemodel(Path::new(
        "../shared/reference/upstream/lenet/init.caffemodel",
    ))
    .unwrap();
    net.copy_trained_layers_from(&source).unwrap();
    for layer in &source.layer {
        let Some(i) = net.layer_index(layer.name()) else {
            continue;
        };
        for (k, proto) in layer.blobs.iter().enumerate() {
            let ours = &net.learnable_params()[net.layer_learnable_ids(i)[k]];
            assert_eq!(
                ours.cpu_data(),
                &proto.data[..],
                "{} blob {k}",
                layer.name()
            );
        }
    }
    // And it runs.
    net.forward().unwrap();
    let prob = net.blob_by_name("prob").unwrap();
    assert_eq!(prob.shape(), &[64, 10]);
    let first: f32 = prob.cpu_data()[..10].iter().sum();
    assert!((first - 1.0).abs() < 1e-4);
}

// ---- the gradient checker -------------------------------------------------------------------

fn toy_harness(kind: &str, wrong: bool, shape: &[usize]) -> LayerHarness<CpuBackend> {
    let param = layer_param(&format!(r#"name: "toy" type: "{kind}""#)).unwrap();
    let layer: Box<dyn Layer<CpuBackend>> = match kind {
        "ToyCubic" => Box::new(ToyCubic { wrong }),
        "ToyRelu" => Box::new(ToyRelu),
        "ToyAffine" => Box::new(ToyAffine { num_output: 3 }),
        _ => unreachable!(),
    };
    LayerHarness::with_layer(&cpu(), param, layer, &[shape], 1701).unwrap()
}

#[test]
fn gradient_checker_passes_correct_layers() {
    let checker = GradientChecker::new(1e-2, 1e-3);
    let mut h = toy_harness("ToyCubic", false, &[2, 3]);
    checker.check(&mut h, None).unwrap();
    checker.check_exhaustive(&mut h, None).unwrap();
    let mut h = toy_harness("ToyAffine", false, &[2, 4]);
    checker.check_exhaustive(&mut h, None).unwrap();
    checker.check_exhaustive(&mut h, Some(0)).unwrap();
    // ReLU is not smooth at 0: skip a band around the kink.
    let mut h = toy_harness("ToyRelu", false, &[3, 4]);
    GradientChecker::new(1e-3, 1e-3)
        .with_kink(0.0, 0.01)
        .check_eltwise(&mut h)
        .unwrap();
}

#[test]
fn gradient_checker_catches_a_wrong_gradient() {
    let checker = GradientChecker::new(1e-2, 1e-3);
    let mut h = toy_harness("ToyCubic", true, &[2, 3]);
    let err = checker.check(&mut h, None).unwrap_err();
    match &err {
        GradientError::Mismatch { count, first, .. } => {
            assert_eq!(*count, 6, "every bottom element: {err}");
            assert!(
                first.iter().all(|m| m.blob == "bottom 0"),
                "the parameter is right"
            );
        }
        other => panic!("expected a mismatch, got {other}"),
    }
    assert!(err.to_string().contains("layer 'toy'"));
    assert!(checker.check_exhaustive(&mut h, None).is_err());
    // Checking only the parameter passes: propagate_down is honoured.
    checker
        .check(&mut h, rcaffe::testing::CheckBottoms::ParamsOnly)
        .unwrap();
}

#[test]
fn gradient_checker_fails_non_finite_gradients() {
    let checker = GradientChecker::new(1e-2, 1e-3);
    let param = layer_param(r#"name: "toy" type: "ToyScale""#).unwrap();
    let harness = |factor: f32| {
        let layer: Box<dyn Layer<CpuBackend>> = Box::new(ToyScale { factor });
        LayerHarness::with_layer(&cpu(), param.clone(), layer, &[&[2, 3]], 1701).unwrap()
    };
    // The same check passes with a finite factor, so what fails below is the non-finite value.
    checker.check(&mut harness(2.0), None).unwrap();
    // NaN on both sides (NaN - NaN is no number above the tolerance); infinity on both sides
    // (inf - inf is NaN, and an infinite value would scale the tolerance to infinity).
    for factor in [f32::NAN, f32::INFINITY] {
        match checker.check(&mut harness(factor), None) {
            Err(GradientError::Mismatch { count, checked, .. }) => {
                assert_eq!(count, checked, "factor {factor}: every element fails")
            }
            other => panic!("factor {factor}: expected a mismatch, got {other:?}"),
        }
    }
}

#[test]
fn gradient_checker_on_split_and_in_place() {
    let checker = GradientChecker::new(1e-2, 1e-2);
    let mut h = LayerHarness::from_prototxt(
        &cpu(),
        r#"name: "split" type: "Split" bottom: "x" top: "a" top: "b" top: "c""#,
        &[&[2, 3, 2]],
        3,
    )
    .unwrap();
    assert_eq!(h.num_top(), 3);
    checker.check_exhaustive(&mut h, None).unwrap();
    h.forward().unwrap();
    for t in 0..3 {
        assert_eq!(h.top(t).cpu_data(), h.bottom(0).cpu_data());
    }
    // Backward sums the three diffs.
    for t in 0..3 {
        let d: Vec<f32> = (0..12).map(|i| (i * (t + 1)) as f32).collect();
        h.top_mut(t).set_diff(&d).unwrap();
    }
    h.backward(&[true]).unwrap();
    let expect: Vec<f32> = (0..12).map(|i| (6 * i) as f32).collect();
    assert_eq!(h.bottom(0).cpu_diff(), &expect[..]);
    // An in-place layer is checked with its bottom restored before each pass.
    let param = layer_param(r#"name: "r" type: "ToyRelu" bottom: "x" top: "x""#).unwrap();
    let mut h = LayerHarness::with_layer(&cpu(), param, Box::new(ToyRelu), &[&[4, 3]], 5).unwrap();
    assert!(h.is_in_place(0));
    GradientChecker::new(1e-3, 1e-3)
        .with_kink(0.0, 0.01)
        .check(&mut h, None)
        .unwrap();
}

#[test]
fn harness_reports_count_errors_with_layer_name() {
    let err = LayerHarness::from_prototxt(&cpu(), r#"name: "s" type: "Split""#, &[&[2], &[2]], 1)
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("layer 's' (type Split)") && msg.contains("takes 1 bottom blob(s)"),
        "{msg}"
    );
}

#[test]
fn cpp_float_formats_like_ostream() {
    let cases = [
        (1.0, "1"),
        (0.5, "0.5"),
        (2.5, "2.5"),
        (1e-5, "1e-05"),
        (0.0001, "0.0001"),
        (123456.0, "123456"),
        (1234567.0, "1.23457e+06"),
        (0.1 + 0.2, "0.3"),
        (-3.25, "-3.25"),
        (0.0, "0"),
        (1.0 / 3.0, "0.333333"),
    ];
    for (v, s) in cases {
        assert_eq!(cpp_float(v), s, "{v}");
    }
}

#[test]
fn upstream_layers_we_lack_say_why() {
    let param = rcaffe::proto::parse_text::<rcaffe::proto::caffe::LayerParameter>(
        "name: \"py\" type: \"Python\" top: \"data\"",
        std::path::Path::new("net.prototxt"),
    )
    .unwrap();
    let error = rcaffe::layers::create_layer::<rcaffe::backend::CpuBackend>(&param)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("'py'") && error.contains("Python package"),
        "{error}"
    );
    let param = rcaffe::proto::caffe::LayerParameter {
        name: Some("x".into()),
        r#type: Some("Convolutoin".into()),
        ..Default::default()
    };
    let error = rcaffe::layers::create_layer::<rcaffe::backend::CpuBackend>(&param)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("unknown layer type") && error.contains("Convolution"),
        "{error}"
    );
}

#[test]
fn a_misspelt_layer_type_names_the_line_of_its_type_and_the_closest_type() {
    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("net.prototxt");
    std::fs::write(
        &path,
        "name: 'n'\nlayer { name: 'x' type: 'Input' top: 'x' input_param { shape { dim: 2 } } }\n\
         layer {\n  name: 'ip'\n  bottom: 'x' top: 'y'\n  type: 'InerProduct'\n}\n",
    )
    .unwrap();
    let said = "layer 'ip' (type InerProduct): unknown layer type \"InerProduct\"; did you mean \
                'InnerProduct'?";
    let error = Net::from_file(&path, Phase::Train, 0, &[], &cpu(), rng_from_seed(0))
        .err()
        .unwrap()
        .to_string();
    let place = format!("{}:6: ", path.display());
    assert!(error.starts_with(&format!("{place}{said} ")), "{error}");
    assert_eq!(error.matches("SoftmaxWithLoss").count(), 1, "{error}");
    // Built from a message: no file to name.
    let param = read_net(&path).unwrap();
    let error = Net::new(&param, &cpu(), rng_from_seed(0))
        .err()
        .unwrap()
        .to_string();
    assert!(error.starts_with(&format!("{said} ")), "{error}");
    assert_eq!(error.matches("SoftmaxWithLoss").count(), 1, "{error}");
}
