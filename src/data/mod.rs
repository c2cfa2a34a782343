//! Training data: the [`Dataset`] trait, the 2D [`toy`] distributions and drawn points, and the
//! [`images`] (MNIST, Fashion-MNIST, CIFAR-10).

use burn::tensor::{Device, Tensor, TensorData};

pub mod images;
pub mod toy;

/// A source of training batches.
pub trait Dataset {
    /// Elements per sample, D.
    fn dim(&self) -> usize;
    /// `n` samples, flattened row-major: n * D values.
    fn sample(&mut self, n: usize) -> Vec<f32>;
    /// # Shapes
    /// - output: [n, D]
    fn batch(&mut self, n: usize, device: &Device) -> Tensor<2> {
        let dim = self.dim();
        Tensor::from_data(TensorData::new(self.sample(n), [n, dim]), device)
    }
}

