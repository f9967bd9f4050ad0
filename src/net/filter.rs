//! Which layers a net keeps for its state (upstream: `Net::FilterNet` and
//! `Net::StateMeetsRule` in src/caffe/net.cpp).
//!
//! A layer with no `include` rule is kept unless its state meets one of its `exclude` rules; a
//! layer with `include` rules is kept only if the state meets one of them. A rule is met when
//! every condition it sets holds: the phase is the rule's, the level is within
//! `[min_level, max_level]`, the state has every `stage` and none of the `not_stage`s.

use crate::proto::caffe::{NetParameter, NetState, NetStateRule, Phase};

/// The state's phase as upstream prints it (an integer).
fn phase_number(phase: Phase) -> i32 {
    phase as i32
}

/// Whether `state` meets `rule`; when it does not, the line upstream logs says why.
pub fn state_meets_rule(
    state: &NetState,
    rule: &NetStateRule,
    layer_name: &str,
) -> Result<(), String> {
    if rule.phase.is_some() && rule.phase() != state.phase() {
        return Err(format!(
            "The NetState phase ({}) differed from the phase ({}) specified by a rule in layer {}",
            phase_number(state.phase()),
            phase_number(rule.phase()),
            layer_name
        ));
    }
    if rule.min_level.is_some() && state.level() < rule.min_level() {
        return Err(format!(
            "The NetState level ({}) is above the min_level ({}) specified by a rule in layer {}",
            state.level(),
            rule.min_level(),
            layer_name
        ));
    }
    if rule.max_level.is_some() && state.level() > rule.max_level() {
        return Err(format!(
            "The NetState level ({}) is above the max_level ({}) specified by a rule in layer {}",
            state.level(),
            rule.max_level(),
            layer_name
        ));
    }
    for stage in &rule.stage {
        if !state.stage.contains(stage) {
            return Err(format!(
                "The NetState did not contain stage '{stage}' specified by a rule in layer \
                 {layer_name}"
            ));
        }
    }
    for stage in &rule.not_stage {
        if state.stage.contains(stage) {
            return Err(format!(
                "The NetState contained a not_stage '{stage}' specified by a rule in layer \
                 {layer_name}"
            ));
        }
    }
    Ok(())
}

/// The net with only the layers its `state` keeps, and the lines upstream logs while
/// deciding. A layer with both `include` and `exclude` rules is an error naming it.
pub fn filter_net(param: &NetParameter) -> Result<(NetParameter, Vec<String>), String> {
    let state = param.state.clone().unwrap_or_default();
    let mut log = Vec::new();
    let mut filtered = param.clone();
    filtered.layer.clear();
    for layer in &param.layer {
        let name = layer.name();
        if !layer.include.is_empty() && !layer.exclude.is_empty() {
            return Err(format!(
                "layer '{name}': specify either include rules or exclude rules; not both"
            ));
        }
        let mut included = layer.include.is_empty();
        if included {
            for rule in &layer.exclude {
                match state_meets_rule(&state, rule, name) {
                    Ok(()) => {
                        included = false;
                        break;
                    }
                    Err(why) => log.push(why),
                }
            }
        } else {
            for rule in &layer.include {
                match state_meets_rule(&state, rule, name) {
                    Ok(()) => {
                        included = true;
                        break;
                    }
                    Err(why) => log.push(why),
                }
            }
        }
        if included {
            filtered.layer.push(layer.clone());
        }
    }
    Ok((filtered, log))
}
