//! The `extern "C" __global__` prototypes of `kernels/*.cu`, read by a small strict parser.
//! Shared by the build scripts that generate code from them (the crate's `build.rs`: the CUDA
//! backend's typed launchers; `tests/kernel-emu/build.rs`: the host emulation's declarations),
//! so both sides follow the one signature written in the `.cu` file.
//!
//! Only the C types the kernels use are understood; anything else fails the build naming the
//! file and line, so a new parameter type is taught here rather than silently mistranslated.

use std::path::Path;

/// A kernel parameter's C type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// `int`
    Int,
    /// `float`
    Float,
    /// `const float*`: device memory the kernel reads.
    ConstFloatPtr,
    /// `float*`: device memory the kernel writes (and may read).
    FloatPtr,
}

impl ParamType {
    /// The type as the prototypes spell it.
    pub fn c_spelling(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::ConstFloatPtr => "const float*",
            Self::FloatPtr => "float*",
        }
    }

    /// The variant of the CUDA backend's `KernelArg` that carries it.
    pub fn kernel_arg(self) -> &'static str {
        match self {
            Self::Int => "Int",
            Self::Float => "Float",
            Self::ConstFloatPtr => "Read",
            Self::FloatPtr => "Write",
        }
    }

    fn parse(c_type: &str) -> Option<Self> {
        let words: Vec<&str> = c_type.split_whitespace().collect();
        match words.as_slice() {
            ["int"] => Some(Self::Int),
            ["float"] => Some(Self::Float),
            ["const", "float*"] | ["const", "float", "*"] => Some(Self::ConstFloatPtr),
            ["float*"] | ["float", "*"] => Some(Self::FloatPtr),
            _ => None,
        }
    }
}

/// One parameter: its C name and type.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
}

/// One kernel: `extern "C" __global__ void <name>(<params>)` in `kernels/<file>.cu`.
#[derive(Clone, Debug)]
pub struct KernelSignature {
    /// The file's stem: `elementwise` for `kernels/elementwise.cu`.
    pub file: String,
    /// The line of the prototype, from 1.
    pub line: usize,
    pub name: String,
    pub params: Vec<Param>,
}

impl KernelSignature {
    /// The kernel's name in Rust type case: `relu_forward` -> `ReluForward`.
    pub fn type_name(&self) -> String {
        self.name
            .split('_')
            .map(|word| {
                let mut chars = word.chars();
                chars.next().map_or(String::new(), |first| {
                    first.to_ascii_uppercase().to_string() + chars.as_str()
                })
            })
            .collect()
    }
}

const PROTOTYPE: &str = "extern \"C\" __global__ void ";

/// Every kernel of every `*.cu` file in `dir`, by file name, then in file order.
pub fn read_dir(dir: &Path) -> Result<Vec<KernelSignature>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    files.retain(|path| path.extension().is_some_and(|ext| ext == "cu"));
    files.sort();
    let mut kernels = Vec::new();
    for path in files {
        let source =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .ok_or_else(|| format!("{}: not a UTF-8 file name", path.display()))?;
        kernels.extend(read_file(stem, &source)?);
    }
    let mut names: Vec<&str> = kernels.iter().map(|k| k.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!("kernels/: two kernels named {}", pair[0]));
    }
    Ok(kernels)
}

/// The kernels of `kernels/<stem>.cu`, whose text is `source`.
pub fn read_file(stem: &str, source: &str) -> Result<Vec<KernelSignature>, String> {
    let mut kernels = Vec::new();
    let lines: Vec<&str> = source.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let at = |message: String| format!("kernels/{stem}.cu:{}: {message}", index + 1);
        let code = line.split("//").next().unwrap_or_default();
        if !code.contains("__global__") && !code.contains("extern \"C\"") {
            continue;
        }
        // A kernel the launchers could not name, or a prototype spelt differently, would
        // otherwise be missed without a word.
        let Some(rest) = code.trim_start().strip_prefix(PROTOTYPE) else {
            return Err(at(format!(
                "a kernel must be declared on one line starting `{PROTOTYPE}<name>(`"
            )));
        };
        let (name, mut params) = rest
            .split_once('(')
            .ok_or_else(|| at("no `(` after the kernel's name".into()))?;
        let name = name.trim();
        check_identifier(name).map_err(at)?;
        // The parameter list may continue on the following lines, up to its `)`.
        let mut text = String::new();
        let mut next = index + 1;
        let close = loop {
            if let Some(close) = params.find(')') {
                break close;
            }
            text += params;
            text.push(' ');
            params = lines
                .get(next)
                .map(|l| l.split("//").next().unwrap_or_default())
                .ok_or_else(|| at(format!("{name}: no `)` closing its parameters")))?;
            next += 1;
        };
        text += &params[..close];
        let params = text
            .split(',')
            .map(|param| parse_param(param).map_err(|e| at(format!("{name}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        kernels.push(KernelSignature {
            file: stem.to_owned(),
            line: index + 1,
            name: name.to_owned(),
            params,
        });
    }
    Ok(kernels)
}

/// `<C type> <name>`, e.g. `const float* x`.
fn parse_param(param: &str) -> Result<Param, String> {
    let param = param.trim();
    let split = param
        .rfind(|c: char| c.is_whitespace() || c == '*')
        .ok_or_else(|| format!("cannot read the parameter `{param}`"))?;
    let (c_type, name) = param.split_at(split + 1);
    check_identifier(name)?;
    let ty = ParamType::parse(c_type).ok_or_else(|| {
        format!(
            "parameter `{param}`: the type `{}` is not one the launchers know (int, float, \
             const float*, float*)",
            c_type.trim()
        )
    })?;
    Ok(Param {
        name: name.to_owned(),
        ty,
    })
}

/// A name usable as is in Rust and C: lower snake case, not a Rust keyword.
fn check_identifier(name: &str) -> Result<(), String> {
    const RUST_KEYWORDS: &[&str] = &[
        "as", "async", "await", "box", "break", "const", "continue", "crate", "dyn", "else",
        "enum", "extern", "false", "fn", "for", "gen", "if", "impl", "in", "let", "loop", "match",
        "mod", "move", "mut", "pub", "ref", "return", "self", "static", "struct", "super", "trait",
        "true", "type", "unsafe", "use", "where", "while", "yield",
    ];
    let snake = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !snake || RUST_KEYWORDS.contains(&name) {
        return Err(format!(
            "`{name}` is not a name usable in Rust (lower snake case, not a keyword)"
        ));
    }
    Ok(())
}
