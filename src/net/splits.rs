//! Split insertion (upstream: src/caffe/util/insert_splits.cpp).
//!
//! A top consumed by more than one bottom gets a `Split` layer right after the layer producing
//! it, with one top per consumer, and each consumer reads its own copy, so each writes its own
//! diff and the Split sums them. A top with a non-zero `loss_weight` counts as one more
//! consumer: the Split's first top then carries the loss weight and the producer's
//! `loss_weight` is cleared. (Only an explicit `loss_weight` counts, as upstream: the implicit
//! weight of a `...Loss` layer is applied after splitting.)
//!
//! Names: the Split layer for top `j` named `blob` of layer `layer` is
//! `"{blob}_{layer}_{j}_split"`, its tops `"{blob}_{layer}_{j}_split_{k}"`.

use std::collections::HashMap;

use crate::proto::caffe::{LayerParameter, NetParameter};

/// The name of the Split layer for top `blob_index` (named `blob`) of layer `layer`.
pub fn split_layer_name(layer: &str, blob: &str, blob_index: usize) -> String {
    format!("{blob}_{layer}_{blob_index}_split")
}

/// The name of top `split_index` of that Split layer.
pub fn split_blob_name(layer: &str, blob: &str, blob_index: usize, split_index: usize) -> String {
    format!("{blob}_{layer}_{blob_index}_split_{split_index}")
}

/// `param` with Split layers inserted where a top feeds more than one consumer. A bottom that
/// no earlier layer produces is an error naming the layer, the blob and the bottom index.
pub fn insert_splits(param: &NetParameter) -> Result<NetParameter, String> {
    // (layer, top index) of the last producer of each blob name.
    let mut last_top: HashMap<&str, (usize, usize)> = HashMap::new();
    // For each (layer, bottom index): the (layer, top index) it reads.
    let mut source_of_bottom: HashMap<(usize, usize), (usize, usize)> = HashMap::new();
    let mut consumers: HashMap<(usize, usize), usize> = HashMap::new();
    let mut top_loss_weight: HashMap<(usize, usize), f32> = HashMap::new();
    for (i, layer) in param.layer.iter().enumerate() {
        for (j, blob) in layer.bottom.iter().enumerate() {
            let Some(&source) = last_top.get(blob.as_str()) else {
                return Err(format!(
                    "Unknown bottom blob '{blob}' (layer '{}', bottom index {j})",
                    layer.name()
                ));
            };
            source_of_bottom.insert((i, j), source);
            *consumers.entry(source).or_insert(0) += 1;
        }
        for (j, blob) in layer.top.iter().enumerate() {
            last_top.insert(blob.as_str(), (i, j));
        }
        for j in 0..layer.loss_weight.len().min(layer.top.len()) {
            let source = last_top[layer.top[j].as_str()];
            let weight = layer.loss_weight[j];
            top_loss_weight.insert(source, weight);
            if weight != 0.0 {
                *consumers.entry(source).or_insert(0) += 1;
            }
        }
    }
    let mut out = param.clone();
    out.layer.clear();
    let mut next_split: HashMap<(usize, usize), usize> = HashMap::new();
    for (i, original) in param.layer.iter().enumerate() {
        let mut layer = original.clone();
        for j in 0..layer.bottom.len() {
            let source = source_of_bottom[&(i, j)];
            if consumers.get(&source).copied().unwrap_or(0) > 1 {
                let producer = param.layer[source.0].name();
                let k = next_split.entry(source).or_insert(0);
                layer.bottom[j] = split_blob_name(producer, &layer.bottom[j], source.1, *k);
                *k += 1;
            }
        }
        let mut splits = Vec::new();
        for j in 0..layer.top.len() {
            let count = consumers.get(&(i, j)).copied().unwrap_or(0);
            if count > 1 {
                let weight = top_loss_weight.get(&(i, j)).copied().unwrap_or(0.0);
                splits.push(split_layer(layer.name(), &layer.top[j], j, count, weight));
                if weight != 0.0 {
                    layer.loss_weight.clear();
                    *next_split.entry((i, j)).or_insert(0) += 1;
                }
            }
        }
        out.layer.push(layer);
        out.layer.extend(splits);
    }
    Ok(out)
}

fn split_layer(
    layer: &str,
    blob: &str,
    blob_index: usize,
    count: usize,
    loss_weight: f32,
) -> LayerParameter {
    LayerParameter {
        name: Some(split_layer_name(layer, blob, blob_index)),
        r#type: Some("Split".to_string()),
        bottom: vec![blob.to_string()],
        top: (0..count)
            .map(|k| split_blob_name(layer, blob, blob_index, k))
            .collect(),
        loss_weight: if loss_weight != 0.0 {
            (0..count)
                .map(|k| if k == 0 { loss_weight } else { 0.0 })
                .collect()
        } else {
            Vec::new()
        },
        ..Default::default()
    }
}
