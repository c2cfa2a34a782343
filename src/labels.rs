//! Class labels of a batch: one index per sample, where the index `classes` is the null label
//! (the official networks take one-hot rows and read an all-zero row as "no class").

use burn::tensor::{Device, Tensor, TensorData};

use crate::{Error, Rng};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    index: Vec<usize>,
    classes: usize,
}

impl Labels {
    /// Fails on an index above `classes` (which itself is the null label).
    pub fn new(index: Vec<usize>, classes: usize) -> Result<Self, Error> {
        if classes == 0 {
            return Err(Error::new("labels need at least one class"));
        }
        if let Some(bad) = index.iter().find(|&&i| i > classes) {
            return Err(Error::new(format!("class {bad} is out of range: there are {classes} classes (0 to {})", classes - 1)));
        }
        Ok(Self { index, classes })
    }

    /// `n` null labels.
    pub fn null(n: usize, classes: usize) -> Self {
        Self { index: vec![classes; n], classes }
    }

    pub fn index(&self) -> &[usize] {
        &self.index
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The labels of samples `start..end`.
    pub fn slice(&self, start: usize, end: usize) -> Self {
        Self { index: self.index[start..end].to_vec(), classes: self.classes }
    }

    /// These labels followed by `other`'s (same class count).
    pub fn concat(&self, other: &Labels) -> Self {
        Self { index: [&self.index[..], &other.index[..]].concat(), classes: self.classes }
    }

    /// Each run of `group` labels replaced by the null label with probability `p` (classifier-free
    /// guidance's label dropout); draws one number per run.
    pub fn dropout(mut self, p: f64, group: usize, rng: &mut Rng) -> Self {
        let null = self.classes;
        for run in self.index.chunks_mut(group.max(1)) {
            if rng.uniform() < p {
                run.fill(null);
            }
        }
        self
    }

    /// The official network input: one-hot rows, the null label an all-zero row.
    ///
    /// # Shapes
    /// - output: [B, classes]
    pub fn one_hot(&self, device: &Device) -> Tensor<2> {
        let (n, c) = (self.index.len(), self.classes);
        let mut values = vec![0f32; n * c];
        for (row, &i) in self.index.iter().enumerate() {
            if i < c {
                values[row * c + i] = 1.0;
            }
        }
        Tensor::from_data(TensorData::new(values, [n, c]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_hot_rows_and_the_null_label() {
        let labels = Labels::new(vec![2, 0, 3], 3).unwrap();
        let rows = labels.one_hot(&Device::flex()).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(rows, [0., 0., 1., 1., 0., 0., 0., 0., 0.]);
        assert!(Labels::new(vec![4], 3).unwrap_err().0.contains("out of range"));
        assert_eq!(labels.concat(&Labels::null(1, 3)).slice(2, 4).index(), [3, 3]);
        let dropped = Labels::new(vec![0; 10_000], 3).unwrap().dropout(0.1, 1, &mut Rng::new(1));
        let nulls = dropped.index().iter().filter(|&&i| i == 3).count();
        assert!((850..1150).contains(&nulls), "{nulls} of 10000 dropped at p = 0.1");
        let grouped = Labels::new(vec![0; 10_000], 3).unwrap().dropout(0.1, 4, &mut Rng::new(1));
        let runs: Vec<_> = grouped.index().chunks(4).map(|run| run.iter().filter(|&&i| i == 3).count()).collect();
        assert!(runs.iter().all(|&n| n == 0 || n == 4), "a group is dropped as a whole");
        let dropped_runs = runs.iter().filter(|&&n| n == 4).count();
        assert!((200..300).contains(&dropped_runs), "{dropped_runs} of 2500 groups dropped at p = 0.1");
    }
}
