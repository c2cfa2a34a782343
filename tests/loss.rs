//! The loss, the parameterisation and the interpolant on tensors, against hand computation in f64.

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use imm::kernels::mmd::mmd;
use imm::method::loss::{GroupTimes, imm_loss};
use imm::method::precond::{Condition, Parameterization, Precond, TimeInput};
use imm::method::schedule::{Schedule, weight};
use imm::networks::mlp::MlpConfig;
use imm::networks::Network;
use imm::Rng;

fn device() -> Device {
    Device::flex()
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    t.into_data().try_into_vec::<f32>().unwrap().into_iter().map(f64::from).collect()
}

/// MMD^2 of one group by the definition, in f64.
fn mmd_by_hand(yt: &[Vec<f64>], yr: &[Vec<f64>], w: f64) -> f64 {
    let d = yt[0].len() as f64;
    let k = |a: &[f64], b: &[f64]| {
        let dist = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().max(1e-8).sqrt();
        (-w * dist / d).exp()
    };
    let m = yt.len() as f64;
    let mean = |p: &[Vec<f64>], q: &[Vec<f64>]| p.iter().flat_map(|a| q.iter().map(move |b| k(a, b))).sum::<f64>() / (m * m);
    mean(yt, yt) + mean(yr, yr) - 2.0 * mean(yt, yr)
}

#[test]
fn mmd_equals_the_definition_and_is_non_negative() {
    let dev = device();
    let mut rng = Rng::new(11);
    for (g, m, d, w) in [(1, 2, 1, 1.0), (3, 4, 5, 7.0), (2, 8, 3, 0.3), (2, 1, 4, 50.0)] {
        let yt = rng.normal_vec(g * m * d, 1.0);
        let yr = rng.normal_vec(g * m * d, 1.0);
        let scales: Vec<f32> = (0..g).map(|i| (w * (1.0 + i as f64)) as f32).collect();
        let ours = values(mmd(
            tensor(yt.clone(), [g, m, d], &dev),
            tensor(yr.clone(), [g, m, d], &dev),
            tensor(scales.clone(), [g], &dev),
        ));
        for i in 0..g {
            let rows = |y: &[f32]| -> Vec<Vec<f64>> {
                (0..m).map(|j| y[(i * m + j) * d..(i * m + j + 1) * d].iter().map(|&v| v as f64).collect()).collect()
            };
            let want = mmd_by_hand(&rows(&yt), &rows(&yr), scales[i] as f64);
            assert!((ours[i] - want).abs() <= 1e-5 * want.abs().max(1e-3), "g{i} m{m} d{d}: {} vs {want}", ours[i]);
            assert!(ours[i] >= -1e-7, "MMD^2 must be non-negative: {}", ours[i]);
        }
    }
}

#[test]
fn mmd_vanishes_for_identical_sets_and_keeps_precision_near_one() {
    let dev = device();
    let mut rng = Rng::new(5);
    let (g, m, d) = (2, 4, 4);
    let y = rng.normal_vec(g * m * d, 1.0);
    let scales = vec![1e-3f32, 3e-3];
    let run = |yr: &[f32]| values(mmd(tensor(y.clone(), [g, m, d], &dev), tensor(yr.to_vec(), [g, m, d], &dev), tensor(scales.clone(), [g], &dev)));
    assert!(run(&y).iter().all(|v| v.abs() < 1e-12), "identical sets");
    // Kernel values are 1 - 1e-3 and the MMD ~1e-6: computed as exp(z) - 1 in f32, rounding near 1
    // alone would cost ~1e-2 relative error; summed from expm1 it stays below 1e-3.
    let yr: Vec<f32> = y.iter().map(|v| v + 1e-2 * rng.normal() as f32).collect();
    let ours = run(&yr);
    for i in 0..g {
        let rows = |v: &[f32]| -> Vec<Vec<f64>> { (0..m).map(|j| v[(i * m + j) * d..(i * m + j + 1) * d].iter().map(|&x| x as f64).collect()).collect() };
        let want = mmd_by_hand(&rows(&y), &rows(&yr), scales[i] as f64);
        assert!(want > 0.0 && (ours[i] - want).abs() <= 1e-3 * want, "{} vs {want}", ours[i]);
    }
}

#[test]
fn single_particle_mmd_is_the_pointwise_loss_with_its_gradient() {
    // M = 1: MMD^2 = 2 k(y_t, y_t) - 2 k(y_t, y_r) with k(y, y) = exp(-w 1e-4 / D) from the distance
    // clamp; d/dy_t = 2 w / D exp(-w |y_t - y_r| / D) sign(y_t - y_r).
    let dev = device().autodiff();
    let w: f64 = 3.0;
    for (a, b) in [(0.7f32, 0.2f32), (-0.1, 0.4), (0.3, 0.3)] {
        let yt = tensor(vec![a], [1, 1, 1], &dev).require_grad();
        let out = mmd(yt.clone(), tensor(vec![b], [1, 1, 1], &dev), tensor(vec![w as f32], [1], &dev));
        let value = values(out.clone())[0];
        let dist = ((a - b) as f64).abs().max(1e-4);
        let want = 2.0 * (-w * 1e-4).exp() - 2.0 * (-w * dist).exp();
        assert!((value - want).abs() <= 1e-6 * want.max(1e-3), "{value} vs {want}");
        let grad = values(yt.grad(&out.sum().backward()).expect("gradient"))[0];
        let want_grad = if a == b { 0.0 } else { 2.0 * w * (-w * dist).exp() * ((a - b) as f64).signum() };
        assert!(grad.is_finite() && (grad - want_grad).abs() < 1e-5, "{grad} vs {want_grad}");
    }
}

/// G(x) = c x with one trainable scalar c: small enough to compute the whole loss by hand.
#[derive(Module, Debug)]
struct Scale {
    c: Param<Tensor<1>>,
}

impl imm::io::weights::Named for Scale {}

impl Network for Scale {
    fn forward(&self, x: Tensor<2>, _c_t: Tensor<1>, _c_s: Tensor<1>, _y: Option<Tensor<2>>) -> Tensor<2> {
        x * self.c.val().reshape([1, 1])
    }
}

#[test]
fn imm_loss_and_its_gradient_by_hand() {
    let (g, m, d) = (2, 3, 2);
    let mut rng = Rng::new(21);
    let x = rng.normal_vec(g * m * d, 0.5);
    let eps = rng.normal_vec(g * m * d, 0.5);
    let groups = [GroupTimes { s: 0.1, r: 0.55, t: 0.6 }, GroupTimes { s: 0.3, r: 0.85, t: 0.9 }];
    let (a, b) = (1.0, 4.0);
    for parameterization in [Parameterization::EulerFm, Parameterization::SimpleEdm] {
        let precond = Precond { schedule: Schedule::OtFm, parameterization, sigma_data: 0.5, time_input: TimeInput::S, time_scale: 1000.0 };
        let c = 0.8f32;
        // The loss by hand, with the target pass held at c_target (stop-gradient).
        let by_hand = |c_student: f64, c_target: f64| -> f64 {
            let sch = precond.schedule;
            let mut total = 0.0;
            for (i, gr) in groups.iter().enumerate() {
                let jump = |c: f64, s: f64, t: f64, j: usize| -> Vec<f64> {
                    let (skip, out) = precond.c_skip_out(s, t);
                    (0..d)
                        .map(|k| {
                            let idx = (i * m + j) * d + k;
                            let xt = sch.alpha(t) * x[idx] as f64 + sch.sigma(t) * eps[idx] as f64;
                            skip * xt + out * c * precond.c_in(t) * xt
                        })
                        .collect()
                };
                let yt: Vec<Vec<f64>> = (0..m).map(|j| jump(c_student, gr.s, gr.t, j)).collect();
                let yr: Vec<Vec<f64>> = (0..m).map(|j| jump(c_target, gr.s, gr.r, j)).collect();
                total += weight(sch, gr.t, a, b) * mmd_by_hand(&yt, &yr, precond.kernel_scale(gr.s, gr.t));
            }
            total / g as f64
        };
        let dev = device().autodiff();
        let net = Scale { c: Param::from_tensor(tensor(vec![c], [1], &dev)) };
        let terms = imm_loss(&net, &precond, tensor(x.clone(), [g * m, d], &dev), tensor(eps.clone(), [g * m, d], &dev), None, &groups, (a, b));
        let loss = values(terms.loss.clone())[0];
        let want = by_hand(c as f64, c as f64);
        assert!((loss - want).abs() <= 1e-4 * want, "{parameterization:?}: {loss} vs {want}");
        let grads = terms.loss.backward();
        let grad = values(net.c.val().grad(&grads).expect("gradient of c"))[0];
        let h = 1e-5;
        let want_grad = (by_hand(c as f64 + h, c as f64) - by_hand(c as f64 - h, c as f64)) / (2.0 * h);
        assert!((grad - want_grad).abs() <= 2e-3 * want_grad.abs(), "{parameterization:?}: grad {grad} vs {want_grad}");
    }
}

#[test]
fn boundary_condition_and_interpolant_endpoints_on_tensors() {
    let dev = device();
    let mut rng = Rng::new(2);
    let net = MlpConfig::new().init(&mut rng, &dev);
    let x = tensor(rng.normal_vec(16 * 2, 0.5), [16, 2], &dev);
    let eps = tensor(rng.normal_vec(16 * 2, 0.5), [16, 2], &dev);
    let t: Vec<f64> = (0..16).map(|i| 0.05 + 0.06 * i as f64).collect();
    for p in [Parameterization::SimpleEdm, Parameterization::EulerFm] {
        let precond = Precond { schedule: Schedule::OtFm, parameterization: p, sigma_data: 0.5, time_input: TimeInput::S, time_scale: 1000.0 };
        let f = values(precond.f(&net, x.clone(), &t, &t, &Condition::none()));
        assert_eq!(f, values(x.clone()), "{p:?}: f_{{t,t}}(x) = x");
        let g = values(precond.g_raw(&net, x.clone(), &t, &t, None));
        assert!(g.iter().any(|v| v.abs() > 1e-3), "the network is not trivially zero");
    }
    for sch in [Schedule::OtFm, Schedule::Cosine] {
        let at = |t: f64| values(sch.interpolate(x.clone(), eps.clone(), &vec![t; 16]));
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(u, v)| (u - v).abs() < 1e-6);
        assert!(close(&at(0.0), &values(x.clone())), "x_0 = x");
        assert!(close(&at(1.0), &values(eps.clone())), "x_1 = eps");
        // DDIM(DDIM(x_t, x, t -> r), x, r -> s) = DDIM(x_t, x, t -> s) = x_s on tensors.
        let (s, r, tt) = (vec![0.2; 16], vec![0.5; 16], vec![0.8; 16]);
        let x_t = sch.interpolate(x.clone(), eps.clone(), &tt);
        let two = sch.ddim(sch.ddim(x_t.clone(), x.clone(), &tt, &r), x.clone(), &r, &s);
        let one = sch.ddim(x_t, x.clone(), &tt, &s);
        assert!(close(&values(two), &values(one.clone())));
        assert!(close(&values(one), &at(0.2)));
    }
}
