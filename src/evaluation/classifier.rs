//! A small CNN trained here on MNIST or Fashion-MNIST. Its 128-d hidden features give a fast
//! own-feature FID for those sets, cheap enough for the page to show live. Its numbers compare
//! models on the same set, not with Inception FIDs or with other papers.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::log_softmax;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::images::{ImageSet, Images, Split};
use crate::evaluation::fid::Moments;
use crate::io::safetensors::Tensors;
use crate::io::weights::{Named, load_named, named_params};
use crate::{Error, Rng};

/// Length of a feature vector.
pub const FEATURES: usize = 128;
/// The side the classifier sees; larger (padded) images are cropped to their centre.
pub const SIDE: usize = 28;
const CLASSES: usize = 10;

#[derive(Module, Debug)]
pub struct Classifier {
    conv1: Conv2d,
    conv2: Conv2d,
    conv3: Conv2d,
    hidden: Linear,
    head: Linear,
}

impl Named for Classifier {}

/// What a classifier file says about itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassifierCard {
    pub data: ImageSet,
    pub test_accuracy: f64,
    pub nimg: u64,
    pub seconds: f64,
}

impl Classifier {
    pub fn new(device: &Device) -> Self {
        let conv = |c_in, c_out| {
            Conv2dConfig::new([c_in, c_out], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
        };
        Self {
            conv1: conv(1, 32),
            conv2: conv(32, 64),
            conv3: conv(64, 64),
            hidden: LinearConfig::new(64 * 3 * 3, FEATURES).init(device),
            head: LinearConfig::new(FEATURES, CLASSES).init(device),
        }
    }

    /// The hidden layer's activations for images in [-1, 1].
    ///
    /// # Shapes
    /// - images: [N, 1, H, W], H = W >= 28 (the centre 28 x 28 is used)
    /// - output: [N, 128]
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let [n, _, h, _] = images.dims();
        let crop = (h - SIDE) / 2;
        let x = images.slice([0..n, 0..1, crop..crop + SIDE, crop..crop + SIDE]);
        let pool = |x| max_pool2d(x, MaxPoolOptions::new([2, 2]).with_stride([2, 2]));
        let x = pool(self.conv1.forward(x).clamp_min(0.0));
        let x = pool(self.conv2.forward(x).clamp_min(0.0));
        let x = pool(self.conv3.forward(x).clamp_min(0.0));
        self.hidden.forward(x.reshape([n, 64 * 3 * 3])).clamp_min(0.0)
    }

    /// # Shapes
    /// - images: [N, 1, H, W]
    /// - output: [N, 10]
    pub fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.head(self.features(images))
    }

    /// The logits of [`Classifier::features`] already computed.
    ///
    /// # Shapes
    /// - features: [N, 128]
    /// - output: [N, 10]
    pub fn head(&self, features: Tensor<2>) -> Tensor<2> {
        self.head.forward(features)
    }

    pub fn load(path: &Path, device: &Device) -> Result<(Self, ClassifierCard), Error> {
        Self::from_tensors(&Tensors::read(path)?, &path.display().to_string(), device)
    }

    /// A classifier from the tensors of its file; `what` names it in errors.
    pub fn from_tensors(file: &Tensors, what: &str, device: &Device) -> Result<(Self, ClassifierCard), Error> {
        let card = file
            .metadata
            .get("classifier")
            .and_then(|c| serde_json::from_str(c).ok())
            .ok_or_else(|| Error::new(format!("{what} is not a classifier of `imm classifier`")))?;
        Ok((load_named(Self::new(device), file, "", what, None)?, card))
    }

    pub fn to_tensors(&self, card: &ClassifierCard) -> Tensors {
        let mut file = Tensors { tensors: named_params(self), ..Default::default() };
        file.metadata.insert("classifier".into(), serde_json::to_string(card).expect("card serialises"));
        file
    }
}

/// Sample counts for which [`reference`] measures real images: the page's grid sizes and the
/// quality table's 2,000.
pub const FLOOR_SIZES: [usize; 6] = [16, 20, 60, 64, 100, 2000];

/// What a live quality number needs beside the classifier: the Gaussian of the training split's
/// features, and `floors`, the mean FID that `n` real test images score against it (over disjoint
/// subsets) for each `n` of [`FLOOR_SIZES`], the value a perfect model would show.
pub fn reference(net: &Classifier, set: ImageSet, data_dir: Option<&Path>, device: &Device) -> Result<Tensors, Error> {
    let features = |images: &Images, range: std::ops::Range<usize>| -> Result<Vec<f32>, Error> {
        let mut out = Vec::with_capacity(range.len() * FEATURES);
        for start in range.clone().step_by(1000) {
            let end = (start + 1000).min(range.end);
            let f = net.features(batch(images, start..end, device)).into_data().convert::<f32>().try_into_vec::<f32>();
            out.extend(f.map_err(|e| Error::new(format!("reading features: {e:?}")))?);
        }
        Ok(out)
    };
    let train = set.load_split(data_dir, Split::Train)?;
    let mut moments = Moments::new(FEATURES);
    moments.add(&features(&train, 0..train.len())?);
    let gaussian = moments.gaussian()?;
    let test = set.load_split(data_dir, Split::Test)?;
    let test_features = features(&test, 0..test.len())?;
    let mut floors = serde_json::Map::new();
    for n in FLOOR_SIZES {
        let subsets = (test.len() / n).min(20);
        let mut total = 0.0;
        for part in test_features.chunks_exact(n * FEATURES).take(subsets) {
            let mut m = Moments::new(FEATURES);
            m.add(part);
            total += m.gaussian()?.frechet_distance(&gaussian)?;
        }
        floors.insert(n.to_string(), (total / subsets as f64).into());
    }
    let mut file = gaussian.to_tensors(&format!("classifier features of the {} training split", set.name()));
    file.metadata.insert("floors".into(), serde_json::Value::Object(floors).to_string());
    Ok(file)
}

/// Images `range` of a set as a [N, 1, side, side] tensor in [-1, 1].
pub fn batch(images: &Images, range: std::ops::Range<usize>, device: &Device) -> Tensor<4> {
    let (c, s) = (images.channels, images.side);
    let pixels = &images.pixels[range.start * c * s * s..range.end * c * s * s];
    let values: Vec<f32> = pixels.iter().map(|&p| p as f32 / 127.5 - 1.0).collect();
    Tensor::from_data(TensorData::new(values, [range.len(), c, s, s]), device)
}

/// Trains a classifier on a set's training split with Adam, then measures it on the test split;
/// `progress` hears (images seen, latest batch loss) every 50 batches.
pub fn train(
    set: ImageSet,
    data_dir: Option<&Path>,
    epochs: usize,
    seed: u64,
    device: &Device,
    mut progress: impl FnMut(u64, f32),
) -> Result<(Classifier, ClassifierCard), Error> {
    if set == ImageSet::Cifar10 {
        return Err(Error::new("the own-feature classifier covers MNIST and Fashion-MNIST; CIFAR-10 uses Inception FID"));
    }
    const BATCH: usize = 128;
    let start = Instant::now();
    let images = set.load_split(data_dir, Split::Train)?;
    let labels = set.load_labels(data_dir, Split::Train)?;
    if labels.len() != images.len() {
        return Err(Error::new(format!("{} training images but {} labels", images.len(), labels.len())));
    }
    let ad = device.clone().autodiff();
    let mut net = Classifier::new(&ad);
    let mut optim = AdamConfig::new().init();
    let mut rng = Rng::new(seed);
    let mut nimg = 0;
    for epoch in 0..epochs {
        let mut order: Vec<usize> = (0..images.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let lr = if epoch + 1 == epochs && epochs > 1 { 3e-4 } else { 1e-3 };
        for chunk in order.chunks(BATCH) {
            let (c, s) = (images.channels, images.side);
            let mut values = Vec::with_capacity(chunk.len() * s * s);
            let mut onehot = vec![0f32; chunk.len() * CLASSES];
            for (row, &i) in chunk.iter().enumerate() {
                values.extend(images.pixels[i * c * s * s..(i + 1) * c * s * s].iter().map(|&p| p as f32 / 127.5 - 1.0));
                onehot[row * CLASSES + labels[i] as usize] = 1.0;
            }
            let x = Tensor::<4>::from_data(TensorData::new(values, [chunk.len(), c, s, s]), &ad);
            let target = Tensor::<2>::from_data(TensorData::new(onehot, [chunk.len(), CLASSES]), &ad);
            let loss = -(log_softmax(net.logits(x), 1) * target).sum() / chunk.len() as f32;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(lr, net, grads);
            nimg += chunk.len() as u64;
            if (nimg / BATCH as u64) % 50 == 0 {
                progress(nimg, loss.into_scalar::<f32>());
            }
        }
    }
    let net = net.valid();
    let test_accuracy = accuracy(&net, set, data_dir, device)?;
    Ok((net, ClassifierCard { data: set, test_accuracy, nimg, seconds: start.elapsed().as_secs_f64() }))
}

/// The fraction of the test split classified correctly.
pub fn accuracy(net: &Classifier, set: ImageSet, data_dir: Option<&Path>, device: &Device) -> Result<f64, Error> {
    let images = set.load_split(data_dir, Split::Test)?;
    let labels = set.load_labels(data_dir, Split::Test)?;
    let mut correct = 0;
    for start in (0..images.len()).step_by(500) {
        let end = (start + 500).min(images.len());
        let logits = net.logits(batch(&images, start..end, device)).into_data().convert::<f32>().try_into_vec::<f32>();
        let logits = logits.map_err(|e| Error::new(format!("reading logits: {e:?}")))?;
        for (row, label) in logits.chunks_exact(CLASSES).zip(&labels[start..end]) {
            let best = (0..CLASSES).max_by(|&a, &b| row[a].total_cmp(&row[b])).expect("10 classes");
            correct += usize::from(best == *label as usize);
        }
    }
    Ok(correct as f64 / images.len() as f64)
}
