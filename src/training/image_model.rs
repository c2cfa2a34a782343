//! An image model read from a weights file: the network, built from the file's `imm` card (what
//! `imm train` writes) or from a preset for files without one (an export of the official
//! checkpoint), and the method that samples it. Used by `imm sample` and the page.

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{Value, json};

use crate::io::safetensors::Tensors;
use crate::io::weights::{detect_prefix, load_named};
use crate::method::precond::Condition;
use crate::method::{AnyMethod, Method};
use crate::networks::image::{ImageNet, ImageNetConfig};
use crate::networks::Precision;
use crate::training::presets::{ImagePreset, image_preset};
use crate::{Error, Labels, Rng};

/// Samples laid out as a grid ([`ImageModel::grid`]).
pub struct SampleGrid {
    /// [N, C * H * W]
    pub x: Tensor<2>,
    pub columns: usize,
    /// The class of each sample, for a conditional model.
    pub labels: Option<Labels>,
}

/// Which classes a conditional model samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classes {
    /// Sample i gets class (i / row) mod L: one row of a grid per class.
    All { row: usize },
    One(usize),
}

impl Classes {
    /// The labels of samples `first..first + n` of `classes` classes.
    pub fn labels(self, first: usize, n: usize, classes: usize) -> Labels {
        let index = (first..first + n)
            .map(|i| match self {
                Classes::All { row } => (i / row.max(1)) % classes,
                Classes::One(c) => c,
            })
            .collect();
        Labels::new(index, classes).expect("classes are parsed in range")
    }
}

pub struct ImageModel {
    pub config: ImageNetConfig,
    pub net: ImageNet,
    /// The method the model was trained with, which is how it samples.
    pub method: AnyMethod,
    /// The `imm` card of the file, when it has one.
    pub card: Option<Value>,
}

impl ImageModel {
    /// Builds the network the file describes (or `preset`'s, for a file without a card) on
    /// `device` and loads its weights; `what` names the file in errors.
    pub fn load(file: &Tensors, what: &str, preset: Option<&ImagePreset>, device: &Device) -> Result<Self, Error> {
        let (config, method, card): (ImageNetConfig, Value, Option<Value>) = match (file.metadata.get("imm"), preset) {
            (Some(text), _) => {
                let card: Value =
                    serde_json::from_str(text).map_err(|e| Error::new(format!("{what} has damaged metadata: {e}")))?;
                let net = serde_json::from_value(card["net"].clone())
                    .map_err(|e| Error::new(format!("{what}: bad network config: {e}")))?;
                (net, card.clone(), Some(card))
            }
            (None, Some(p)) => (p.net.clone(), json!({"method": "imm", "method_config": p.imm}), None),
            (None, None) => {
                return Err(Error::new(format!("{what} does not say which network it holds; choose its preset")));
            }
        };
        // A card is untrusted input: build no network larger than the file's weights.
        let stored: u128 = file.tensors.values().map(|t| t.values.len() as u128).sum();
        if config.min_params() > stored {
            return Err(Error::new(format!(
                "{what} does not fit the network its card describes (at least {} parameters; the file holds {stored} values)",
                config.min_params()
            )));
        }
        let net = config.init(&mut Rng::new(0), device)?;
        let prefix = detect_prefix(&net, file);
        let net = load_named(net, file, prefix, what, None)?;
        let method = AnyMethod::from_card(method["method"].as_str(), method["method_config"].clone(), what)?;
        Ok(Self { config, net, method, card })
    }

    /// A preset's network with fresh weights: what speed measurements need.
    pub fn untrained(preset: &ImagePreset, method: AnyMethod, device: &Device) -> Result<Self, Error> {
        let net = preset.net.init(&mut Rng::new(0), device)?;
        Ok(Self { config: preset.net.clone(), net, method, card: None })
    }

    /// The same weights computing in another dtype.
    pub fn with_precision(self, precision: Precision) -> Self {
        let config = self.config.clone().with_precision(precision);
        Self { net: self.net.with_precision(precision), config, ..self }
    }

    /// The number of classes the network is conditioned on; 0 for none.
    pub fn label_dim(&self) -> usize {
        self.config.classes()
    }

    /// The class names: the card's own (an image folder's), or its preset's dataset's; indices
    /// where neither names them.
    pub fn class_names(&self) -> Vec<String> {
        let own: Option<Vec<String>> = self.card.as_ref().and_then(|card| serde_json::from_value(card["classes"].clone()).ok());
        if let Some(names) = own.filter(|n| n.len() == self.label_dim()) {
            return names;
        }
        let preset = self.card.as_ref().and_then(|card| card["preset"].as_str()).and_then(image_preset);
        match preset {
            Some(p) if p.data.images().is_some_and(|set| set.class_names().len() == self.label_dim()) => {
                p.data.images().into_iter().flat_map(|set| set.class_names()).map(str::to_string).collect()
            }
            _ => (0..self.label_dim()).map(|i| i.to_string()).collect(),
        }
    }

    /// Parses a class choice: `all`, an index or a name (any case); `row` samples per class for
    /// `all`. None for an unconditional model, which accepts no choice.
    pub fn classes(&self, text: Option<&str>, row: usize) -> Result<Option<Classes>, Error> {
        let l = self.label_dim();
        let Some(text) = text else {
            return Ok((l > 0).then_some(Classes::All { row }));
        };
        if l == 0 {
            return Err(Error::new(format!("--class {text}: this model has no class labels")));
        }
        let names = self.class_names();
        if text.eq_ignore_ascii_case("all") {
            return Ok(Some(Classes::All { row }));
        }
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(Some(Classes::One(i)));
        }
        match text.parse::<usize>() {
            Ok(i) if i < l => Ok(Some(Classes::One(i))),
            _ => Err(Error::new(format!("unknown class '{text}': use all, an index from 0 to {}, or one of {}", l - 1, names.join(", ")))),
        }
    }

    /// The condition of samples `first..first + n`: their classes, guided with scale `guidance`.
    pub fn condition(&self, classes: Option<Classes>, guidance: f64, first: usize, n: usize) -> Result<Condition, Error> {
        let labels = classes.map(|c| c.labels(first, n, self.label_dim()));
        Condition::guided(labels, guidance)
    }

    /// Values per image, C * H * W.
    pub fn dim(&self) -> usize {
        self.config.in_channels() * self.config.img_resolution() * self.config.img_resolution()
    }

    pub fn sigma_data(&self) -> f64 {
        self.method.sigma_data()
    }

    pub fn check_steps(&self, steps: usize) -> Result<(), Error> {
        self.method.check_steps(steps)
    }

    /// A grid of about `n` samples in `steps` steps from the prior noise of `seed`, of `class`
    /// (as [`ImageModel::classes`] reads it; all classes when None) guided with `guidance`.
    /// All classes make one row per class, each row from the same noise; one class, or a model
    /// without labels, fills a square. The noise of an image depends on its place in the grid
    /// alone, never on the class, the guidance or the steps, so two grids differ by their setting.
    pub fn grid(&self, n: usize, class: Option<&str>, guidance: f64, steps: usize, seed: u64, device: &Device) -> Result<SampleGrid, Error> {
        self.check_steps(steps)?;
        let l = self.label_dim();
        let all = l > 0 && class.is_none_or(|c| c.eq_ignore_ascii_case("all"));
        let columns = if all { (n as f64 / l as f64).round().max(1.0) as usize } else { (n.max(1) as f64).sqrt().ceil() as usize };
        let classes = self.classes(class, columns)?;
        let dim = self.dim();
        let mut rng = Rng::new(seed);
        let (n, z) = if all {
            let row = rng.normal_vec(columns * dim, self.sigma_data());
            (l * columns, row.repeat(l))
        } else {
            (n.max(1), rng.normal_vec(n.max(1) * dim, self.sigma_data()))
        };
        let condition = self.condition(classes, guidance, 0, n)?;
        let z = Tensor::<2>::from_data(TensorData::new(z, [n, dim]), device);
        let x = self.sample(z, &condition, steps, &mut rng)?;
        Ok(SampleGrid { x, columns, labels: condition.labels })
    }

    /// Samples from prior noise z under `condition` in `steps` steps.
    ///
    /// # Shapes
    /// - z: [B, C * H * W]; condition: B labels or none
    /// - output: [B, C * H * W]
    pub fn sample(&self, z: Tensor<2>, condition: &Condition, steps: usize, rng: &mut Rng) -> Result<Tensor<2>, Error> {
        self.method.sample(&self.net, z, condition, steps, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// All classes: one row per class, every row from the same noise, so row c is the start of
    /// class c's own grid; one class fills a square.
    #[test]
    fn grids_share_their_noise_across_classes() {
        let device = Device::flex();
        let preset = image_preset("mnist-cond-tiny").unwrap();
        let model = ImageModel::untrained(&preset, AnyMethod::Imm(preset.imm.clone()), &device).unwrap();
        let values = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
        let all = model.grid(16, Some("all"), 2.0, 1, 5, &device).unwrap();
        assert_eq!((all.columns, all.x.dims()[0]), (2, 20), "16 images over 10 classes: 2 per row");
        assert_eq!(all.labels.as_ref().unwrap().index()[..6], [0, 0, 1, 1, 2, 2]);
        let all = values(all.x);
        let dim = model.dim();
        for (class, name) in [(0, "0"), (3, "3")] {
            let one = model.grid(9, Some(name), 2.0, 1, 5, &device).unwrap();
            assert_eq!((one.columns, one.x.dims()[0]), (3, 9));
            assert!(one.labels.unwrap().index().iter().all(|&l| l == class));
            let one = values(one.x);
            let row = &all[2 * class * dim..(2 * class + 2) * dim];
            let worst = row.iter().zip(&one[..2 * dim]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "class {class}: row of the all-classes grid and its own grid differ by {worst}");
        }
        assert!(model.grid(4, Some("eleven"), 1.0, 1, 5, &device).is_err());
        let unconditional = image_preset("mnist-tiny").unwrap();
        let model = ImageModel::untrained(&unconditional, AnyMethod::Imm(unconditional.imm.clone()), &device).unwrap();
        let grid = model.grid(10, None, 1.0, 1, 5, &device).unwrap();
        assert_eq!((grid.columns, grid.x.dims()[0], grid.labels.is_none()), (4, 10, true));
        assert!(model.grid(10, None, 2.0, 1, 5, &device).is_err(), "no guidance without labels");
    }
}
