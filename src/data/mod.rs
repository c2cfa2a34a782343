//! Training data: the [`Dataset`] trait (samples, with class labels where the data has them), the 2D [`toy`] distributions and drawn points, and the
//! [`images`] (MNIST, Fashion-MNIST, CIFAR-10) and users' image folders ([`folder`]); the VAE
//! [`latents`] of the ImageNet model and their normalisation.

use burn::tensor::{Device, Tensor, TensorData};

use crate::{Error, Labels, Rng};

#[cfg(not(target_family = "wasm"))]
pub mod folder;
pub mod images;
pub mod latents;
pub mod toy;

/// A source of training batches.
pub trait Dataset {
    /// Elements per sample, D.
    fn dim(&self) -> usize;
    /// The number of classes its samples are labelled with; 0 for unlabelled data.
    fn classes(&self) -> usize {
        0
    }
    /// `n` samples, flattened row-major: n * D values.
    fn sample(&mut self, n: usize) -> Vec<f32>;
    /// `n` samples and, for labelled data, their labels.
    fn sample_labelled(&mut self, n: usize) -> (Vec<f32>, Option<Labels>) {
        (self.sample(n), None)
    }
    /// Continues as if `drawn` samples had been drawn before (a resumed run); data drawn without
    /// counting ignores it.
    fn skip_to(&mut self, _drawn: u64) {}
    /// # Shapes
    /// - output: [n, D] and n labels
    fn batch(&mut self, n: usize, device: &Device) -> (Tensor<2>, Option<Labels>) {
        let dim = self.dim();
        let (x, y) = self.sample_labelled(n);
        (Tensor::from_data(TensorData::new(x, [n, dim]), device), y)
    }
}

/// How a labelled dataset draws the samples of a batch and their labels: each sample uniformly,
/// or in runs of `group` of one class (the run's first sample's, so that classes keep their
/// frequencies); each label (or run) replaced by the null label with probability `dropout`.
#[derive(Clone, Debug, Default)]
pub(crate) struct LabelledDraw {
    /// The class of each sample; empty for unlabelled data.
    labels: Vec<usize>,
    classes: usize,
    dropout: f64,
    group: usize,
    /// Sample indices of each class.
    by_class: Vec<Vec<usize>>,
}

impl LabelledDraw {
    pub(crate) fn new(labels: Vec<usize>, classes: usize, dropout: f64, group: usize) -> Result<Self, Error> {
        if let Some(bad) = labels.iter().find(|&&l| l >= classes) {
            return Err(Error::new(format!("the data holds label {bad}, but the model knows {classes} classes")));
        }
        if !(0.0..=1.0).contains(&dropout) {
            return Err(Error::new(format!("label dropout must be between 0 and 1, got {dropout}")));
        }
        let mut by_class = vec![Vec::new(); classes];
        for (i, &l) in labels.iter().enumerate() {
            by_class[l].push(i);
        }
        Ok(Self { labels, classes, dropout, group: group.max(1), by_class })
    }

    pub(crate) fn classes(&self) -> usize {
        self.classes
    }

    /// A batch of `n` out of `count` samples: `take` hears each index as it is drawn (and may draw
    /// from the stream itself); returns the labels after dropout, None for unlabelled data.
    /// `drawn` samples came before this batch: with the seed, they fix its stream, so that a
    /// resumed run draws the batches it would have drawn.
    pub(crate) fn batch(&self, seed: u64, drawn: u64, n: usize, count: usize, mut take: impl FnMut(&mut Rng, usize)) -> Option<Labels> {
        let mut rng = Rng::new(seed ^ drawn.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut picked: Vec<usize> = Vec::with_capacity(n);
        for i in 0..n {
            let index = match picked.last() {
                Some(&previous) if self.classes > 0 && self.group > 1 && i % self.group != 0 => {
                    let class = &self.by_class[self.labels[previous]];
                    class[rng.below(class.len())]
                }
                _ => rng.below(count),
            };
            take(&mut rng, index);
            picked.push(index);
        }
        if self.classes == 0 {
            return None;
        }
        let labels = Labels::new(picked.iter().map(|&i| self.labels[i]).collect(), self.classes).expect("checked by new");
        Some(labels.dropout(self.dropout, self.group, &mut rng))
    }
}
