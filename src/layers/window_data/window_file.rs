//! The window file of the WindowData layer: per image a `#` header line and its windows,
//! read into images and foreground/background window lists. Errors name the file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::CHANNELS;
use crate::data::DataError;
use crate::proto::caffe::WindowDataParameter;

/// One image of the window file.
#[derive(Debug, Clone)]
pub(super) struct ImageRecord {
    pub(super) path: PathBuf,
    pub(super) height: usize,
    pub(super) width: usize,
    /// The line of its `#` header.
    pub(super) line: usize,
    /// The file's bytes, with `cache_images`.
    pub(super) cached: Option<Vec<u8>>,
}

/// One kept window: its image, label (0 for background) and inclusive corners.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) image: usize,
    pub(super) label: i32,
    pub(super) corners: [i32; 4],
}

/// The images and the foreground and background windows of a window file.
#[derive(Debug, Default)]
pub(super) struct WindowFile {
    pub(super) images: Vec<ImageRecord>,
    pub(super) foreground: Vec<Window>,
    pub(super) background: Vec<Window>,
}

/// The whitespace-separated tokens of a file, with their line numbers (upstream reads the
/// file with `>>`, so line breaks carry no meaning).
struct Tokens<'a> {
    path: &'a Path,
    tokens: Vec<(usize, &'a str)>,
    next: usize,
}

impl<'a> Tokens<'a> {
    fn new(path: &'a Path, text: &'a str) -> Self {
        let tokens = text
            .lines()
            .enumerate()
            .flat_map(|(i, line)| line.split_whitespace().map(move |t| (i + 1, t)))
            .collect();
        Tokens {
            path,
            tokens,
            next: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.next >= self.tokens.len()
    }

    fn error(&self, line: usize, message: String) -> DataError {
        DataError::format(self.path, format!("line {line}: {message}"))
    }

    /// The next token and its line.
    fn token(&mut self, what: &str) -> Result<(&'a str, usize), DataError> {
        let Some(&(line, token)) = self.tokens.get(self.next) else {
            let line = self.tokens.last().map_or(1, |&(line, _)| line);
            return Err(self.error(line, format!("expected {what}, found the end of the file")));
        };
        self.next += 1;
        Ok((token, line))
    }

    /// The next token as a `T`, and its line.
    fn value<T: FromStr>(&mut self, what: &str) -> Result<(T, usize), DataError> {
        let (token, line) = self.token(what)?;
        match token.parse() {
            Ok(value) => Ok((value, line)),
            Err(_) => Err(self.error(line, format!("expected {what}, found \"{token}\""))),
        }
    }
}

/// Reads a window file and sorts its windows by overlap (see the layer's documentation).
pub(super) fn read_window_file(
    path: &Path,
    p: &WindowDataParameter,
) -> Result<WindowFile, DataError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| DataError::read(path, "window file", e))?;
    let mut tokens = Tokens::new(path, &text);
    if tokens.at_end() {
        return Err(DataError::format(path, "the window file is empty"));
    }
    let mut file = WindowFile::default();
    while !tokens.at_end() {
        read_image_record(&mut tokens, p, &mut file)?;
    }
    Ok(file)
}

/// Reads one image's record: its header and its windows.
fn read_image_record(
    tokens: &mut Tokens<'_>,
    p: &WindowDataParameter,
    file: &mut WindowFile,
) -> Result<(), DataError> {
    let (hash, line) = tokens.token("'#'")?;
    if hash != "#" {
        return Err(tokens.error(
            line,
            format!("expected '#' before an image, found \"{hash}\""),
        ));
    }
    let image = file.images.len();
    let (index, _) = tokens.value::<usize>("the image index")?;
    if index != image {
        return Err(tokens.error(
            line,
            format!("image index {index} where {image} was expected (indices count up from 0)"),
        ));
    }
    let (name, _) = tokens.token("the image path")?;
    let (channels, line_c) = tokens.value::<usize>("the image's channels")?;
    if channels != CHANNELS {
        return Err(tokens.error(
            line_c,
            format!("{name} has {channels} channels; WindowData reads images in colour (3)"),
        ));
    }
    let (height, _) = tokens.value::<usize>("the image's height")?;
    let (width, _) = tokens.value::<usize>("the image's width")?;
    let (num_windows, _) = tokens.value::<usize>("the number of windows")?;
    for _ in 0..num_windows {
        let (label, line) = tokens.value::<i32>("a window's class index")?;
        let (overlap, _) = tokens.value::<f32>("a window's overlap")?;
        let mut corners = [0i32; 4];
        for (corner, what) in corners.iter_mut().zip(["x1", "y1", "x2", "y2"]) {
            *corner = tokens.value::<i32>(&format!("a window's {what}"))?.0;
        }
        let [x1, y1, x2, y2] = corners;
        if x1 < 0 || y1 < 0 || x1 > x2 || y1 > y2 || x2 as usize >= width || y2 as usize >= height {
            return Err(tokens.error(
                line,
                format!(
                    "window ({x1}, {y1})-({x2}, {y2}) does not lie in the {width}x{height} image \
                     {name}"
                ),
            ));
        }
        if overlap >= p.fg_threshold() {
            if label <= 0 {
                return Err(tokens.error(
                    line,
                    format!("a foreground window (overlap {overlap}) needs a class above 0"),
                ));
            }
            file.foreground.push(Window {
                image,
                label,
                corners,
            });
        } else if overlap < p.bg_threshold() {
            file.background.push(Window {
                image,
                label: 0,
                corners,
            });
        }
    }
    file.images.push(ImageRecord {
        path: PathBuf::from(format!("{}{name}", p.root_folder())),
        height,
        width,
        line,
        cached: None,
    });
    Ok(())
}

/// Logs upstream's summary of the windows: how many of each class.
pub(super) fn log_windows(file: &WindowFile) {
    let mut per_class = BTreeMap::from([(0, file.background.len())]);
    for window in &file.foreground {
        *per_class.entry(window.label).or_insert(0) += 1;
    }
    log::info!("Number of images: {}", file.images.len());
    for (class, count) in per_class {
        log::info!("class {class} has {count} samples");
    }
}
