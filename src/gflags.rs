//! Caffe's command lines, as gflags reads them, turned into the spelling clap reads, so that
//! upstream's scripts run with `rcaffe` in place of `caffe`, `convert_mnist_data` and the
//! other tools.
//!
//! gflags takes a long flag after one dash or two (`-solver x`, `--solver x`), its value after
//! a space or `=`, names with underscores (`-resize_height`), and booleans as `-shuffle`,
//! `-shuffle=true`, `-shuffle=false` or `-noshuffle`. clap takes `--resize-height`, and a
//! boolean only as `--shuffle`. [`normalize`] rewrites the first into the second for the flags
//! the (sub)command being run actually has, and leaves everything else (short flags, values,
//! positional arguments, flags it does not have) for clap to accept or refuse.

/// The long flags one (sub)command takes.
struct LongFlags {
    /// Every long name and alias.
    names: Vec<String>,
    /// Those that take no value (clap's `SetTrue`).
    switches: Vec<String>,
}

impl LongFlags {
    /// The flags of `command` itself, with the global ones of `parent` when it is a subcommand.
    fn of(command: &clap::Command, parent: Option<&clap::Command>) -> Self {
        let globals = parent
            .into_iter()
            .flat_map(clap::Command::get_arguments)
            .filter(|arg| arg.is_global_set());
        let mut flags = LongFlags {
            names: Vec::new(),
            switches: Vec::new(),
        };
        for arg in command.get_arguments().chain(globals) {
            let names: Vec<String> = arg
                .get_long()
                .into_iter()
                .chain(arg.get_all_aliases().unwrap_or_default())
                .map(str::to_owned)
                .collect();
            if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
                flags.switches.extend(names.iter().cloned());
            }
            flags.names.extend(names);
        }
        flags
    }

    /// The clap name of gflags' `name`: itself, or with its underscores as dashes.
    fn find(&self, name: &str) -> Option<String> {
        [name.to_owned(), name.replace('_', "-")]
            .into_iter()
            .find(|candidate| self.names.contains(candidate))
    }

    fn is_switch(&self, name: &str) -> bool {
        self.switches.iter().any(|switch| switch == name)
    }
}

/// A gflags boolean's value, as gflags (and glog's environment variables) spell true and false.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// `args` (the program name first) with every gflags spelling of `command`'s long flags
/// rewritten as clap reads it: `--name` or `--name=value`; a false boolean is dropped, as it
/// is the default. Arguments after a bare `--` are left alone.
pub fn normalize(args: Vec<String>, command: &clap::Command) -> Vec<String> {
    let mut command = command.clone();
    // Building adds clap's own `--help` and `--version`, so `-help` and `-version` work too.
    command.build();
    // Before the subcommand's name, the command's own flags; after it, the subcommand's (a flag
    // of another subcommand is left for clap to refuse, as gflags refuses an unknown flag).
    let subcommand = args
        .iter()
        .enumerate()
        .skip(1)
        .find_map(|(index, arg)| Some((index, command.find_subcommand(arg)?)));
    let own_flags = LongFlags::of(&command, None);
    let subcommand_flags =
        subcommand.map(|(index, sub)| (index, LongFlags::of(sub, Some(&command))));
    let mut normalized = Vec::with_capacity(args.len());
    let mut rest_is_positional = false;
    for (index, arg) in args.iter().cloned().enumerate() {
        if index == 0 || rest_is_positional || !arg.starts_with('-') {
            normalized.push(arg);
            continue;
        }
        let flags = match &subcommand_flags {
            Some((at, flags)) if index > *at => flags,
            _ => &own_flags,
        };
        if arg == "--" {
            rest_is_positional = true;
            normalized.push(arg);
            continue;
        }
        let body = arg.strip_prefix("--").unwrap_or(&arg[1..]);
        let (name, value) = match body.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (body, None),
        };
        // One dash and one letter is a short flag (`-o`).
        if name.len() < 2 && !arg.starts_with("--") {
            normalized.push(arg);
            continue;
        }
        match flags.find(name) {
            Some(long) if flags.is_switch(&long) => match value.map(parse_bool) {
                None | Some(Some(true)) => normalized.push(format!("--{long}")),
                Some(Some(false)) => {}
                // Not a boolean: clap says so.
                Some(None) => normalized.push(format!("--{long}={}", value.unwrap_or(""))),
            },
            Some(long) => normalized.push(match value {
                Some(value) => format!("--{long}={value}"),
                None => format!("--{long}"),
            }),
            None => match name
                .strip_prefix("no")
                .and_then(|negated| flags.find(negated))
            {
                Some(long) if value.is_none() && flags.is_switch(&long) => {}
                _ => normalized.push(arg),
            },
        }
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("tool")
            .version("1.2.3")
            .arg(clap::Arg::new("log-dir").long("log-dir").global(true))
            .subcommand(
                clap::Command::new("convert")
                    .arg(clap::Arg::new("resize-height").long("resize-height"))
                    .arg(
                        clap::Arg::new("shuffle")
                            .long("shuffle")
                            .action(clap::ArgAction::SetTrue),
                    )
                    .arg(clap::Arg::new("input")),
            )
    }

    fn normalized(line: &str) -> String {
        let args = line.split_whitespace().map(String::from).collect();
        normalize(args, &command()).join(" ")
    }

    #[test]
    fn one_or_two_dashes_underscores_and_equals_signs() {
        for line in [
            "tool convert -resize_height 32 x",
            "tool convert --resize_height 32 x",
            "tool convert -resize-height 32 x",
        ] {
            assert_eq!(
                normalized(line),
                "tool convert --resize-height 32 x",
                "{line}"
            );
        }
        assert_eq!(
            normalized("tool convert -resize_height=32 -log_dir=/tmp"),
            "tool convert --resize-height=32 --log-dir=/tmp"
        );
    }

    #[test]
    fn booleans_as_gflags_spells_them() {
        for (line, want) in [
            ("tool convert -shuffle x", "tool convert --shuffle x"),
            ("tool convert --shuffle=true x", "tool convert --shuffle x"),
            ("tool convert -shuffle=1 x", "tool convert --shuffle x"),
            ("tool convert --shuffle=false x", "tool convert x"),
            ("tool convert -noshuffle x", "tool convert x"),
            ("tool convert --noshuffle x", "tool convert x"),
            // Not a boolean value: left for clap to refuse.
            (
                "tool convert --shuffle=maybe",
                "tool convert --shuffle=maybe",
            ),
        ] {
            assert_eq!(normalized(line), want, "{line}");
        }
    }

    #[test]
    fn only_the_flags_of_the_subcommand_run_are_rewritten() {
        let command = command().subcommand(clap::Command::new("train"));
        let normalized = |line: &str| {
            let args = line.split_whitespace().map(String::from).collect();
            normalize(args, &command).join(" ")
        };
        // convert's switch is not train's: left for clap to refuse, not dropped or rewritten.
        assert_eq!(normalized("tool train -noshuffle"), "tool train -noshuffle");
        assert_eq!(
            normalized("tool train -shuffle=false"),
            "tool train -shuffle=false"
        );
        // The global flag works before and after the subcommand's name.
        assert_eq!(
            normalized("tool -log_dir x train -log_dir y"),
            "tool --log-dir x train --log-dir y"
        );
    }

    #[test]
    fn clap_help_and_version_take_one_dash() {
        assert_eq!(normalized("tool -version"), "tool --version");
        assert_eq!(normalized("tool convert -help"), "tool convert --help");
    }

    #[test]
    fn short_flags_values_unknown_flags_and_positionals_are_left_alone() {
        for line in [
            "tool convert -o x -5 --iterations",
            "tool convert -nothing",
            "tool convert -- -shuffle -resize_height",
        ] {
            assert_eq!(normalized(line), line);
        }
    }
}
