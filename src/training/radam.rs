//! Rectified Adam (Liu et al. 2019), the optimizer of the paper's CIFAR-10 run; burn ships Adam only.

use burn::optim::{AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{Device, Tensor};

#[derive(Clone, Debug)]
pub struct RAdam {
    pub beta_1: f64,
    pub beta_2: f64,
    pub epsilon: f64,
}

impl Default for RAdam {
    fn default() -> Self {
        Self { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8 }
    }
}

impl Optimizer for RAdam {
    // Adam's moment state (step count and both moments) is exactly RAdam's, and burn can save it.
    type State<const D: usize> = AdaptiveMomentumState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let (b1, b2) = (self.beta_1, self.beta_2);
        let (time, m, v) = match state {
            Some(s) => (
                s.time + 1,
                s.moment_1.mul_scalar(b1 as f32) + grad.clone().mul_scalar((1.0 - b1) as f32),
                s.moment_2.mul_scalar(b2 as f32) + grad.square().mul_scalar((1.0 - b2) as f32),
            ),
            None => (1, grad.clone().mul_scalar((1.0 - b1) as f32), grad.square().mul_scalar((1.0 - b2) as f32)),
        };
        let n = time as i32;
        let (bias_1, bias_2) = (1.0 - b1.powi(n), 1.0 - b2.powi(n));
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        let rho = rho_inf - 2.0 * time as f64 * b2.powi(n) / bias_2;
        let m_hat = m.clone().div_scalar(bias_1 as f32);
        // While the variance of the adaptive rate is intractable (rho <= 5), take an SGD-momentum step.
        let update = if rho > 5.0 {
            let rect = ((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)).sqrt();
            let denom = v.clone().sqrt().add_scalar(self.epsilon as f32);
            (m_hat / denom).mul_scalar((rect * bias_2.sqrt()) as f32)
        } else {
            m_hat
        };
        let state = AdaptiveMomentumState::new(time, m, v);
        (tensor - update.mul_scalar(lr as f32), Some(state))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.moment_1 = state.moment_1.to_device(device);
        state.moment_2 = state.moment_2.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Module, Param};
    use burn::optim::{GradientsParams, ModuleOptimizer};
    use burn::tensor::TensorData;

    #[derive(Module, Debug)]
    struct Weights {
        p: Param<Tensor<1>>,
    }

    #[test]
    fn matches_the_rectified_adam_update_through_the_warm_up() {
        // Loss g . p has the constant gradient g; compare with RAdam's update written out in f64.
        let device = Device::flex().autodiff();
        let g = [0.5f64, -2.0, 1e-3];
        let grad = Tensor::<1>::from_data(TensorData::new(g.map(|v| v as f32).to_vec(), [3]), &device);
        let mut module = Weights { p: Param::from_data(TensorData::new(vec![1.0f32, 1.0, 1.0], [3]), &device) };
        let mut optim = ModuleOptimizer::from(RAdam::default());
        let (b1, b2, eps, lr) = (0.9f64, 0.999f64, 1e-8, 0.01);
        let (mut p, mut m, mut v) = ([1.0f64; 3], [0.0f64; 3], [0.0f64; 3]);
        let rho_inf = 2.0 / (1.0 - b2) - 1.0;
        for n in 1..=12 {
            let loss = (module.p.val() * grad.clone()).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &module);
            module = optim.step(lr, module, grads);
            let rho = rho_inf - 2.0 * n as f64 * b2.powi(n) / (1.0 - b2.powi(n));
            for i in 0..3 {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                let m_hat = m[i] / (1.0 - b1.powi(n));
                p[i] -= lr * if rho > 5.0 {
                    let rect = ((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)).sqrt();
                    m_hat * rect * (1.0 - b2.powi(n)).sqrt() / (v[i].sqrt() + eps)
                } else {
                    m_hat
                };
            }
            let ours = module.p.val().into_data().try_to_vec::<f32>().unwrap();
            for i in 0..3 {
                assert!((ours[i] as f64 - p[i]).abs() < 1e-5, "step {n}, coordinate {i}: {} vs {}", ours[i], p[i]);
            }
        }
    }
}
