//! Training data: the [`Dataset`] trait (samples, with class labels where the data has them), the 2D [`toy`] distributions and drawn points, and the
//! [`images`] (MNIST, Fashion-MNIST, CIFAR-10) and users' image folders ([`folder`]); the VAE
//! [`latents`] of the ImageNet model and their normalisation.

use burn::tensor::{Device, Tensor, TensorData};

use crate::Labels;

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
    /// # Shapes
    /// - output: [n, D] and n labels
    fn batch(&mut self, n: usize, device: &Device) -> (Tensor<2>, Option<Labels>) {
        let dim = self.dim();
        let (x, y) = self.sample_labelled(n);
        (Tensor::from_data(TensorData::new(x, [n, dim]), device), y)
    }
}

