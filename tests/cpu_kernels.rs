//! The CPU kernels against burn's plain ops on Flex: values and every gradient, on random shapes
//! with odd sizes (convolutions: kernels 1, 3 and 5, padding from none to more than the kernel
//! needs; GroupNorm: one to 32 groups, with and without SiLU; resampling up and down).

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use imm::kernels::conv::{conv2d_cpu, conv2d_reference};
use imm::kernels::resample::{resample, resample_reference};
use imm::kernels::Kernels;
use imm::kernels::group_norm::{errors_against_reference, test_shapes};
use imm::kernels::mmd::relative_error;

fn read<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn convolution_matches_burn_in_values_and_gradients() {
    let device = Device::flex().autodiff();
    let mut rng = imm::Rng::new(7);
    let mut pick = |n: u64| (rng.next_u64() % n) as usize;
    // The last: 14 px images in weight-gradient groups of two, three images per task on two cores.
    let fixed = [[1, 1, 1, 1, 1, 1, 0], [2, 3, 5, 7, 4, 3, 1], [3, 16, 7, 7, 32, 1, 0], [2, 2, 4, 3, 3, 3, 2], [9, 3, 14, 14, 4, 3, 1]];
    let random: Vec<[usize; 7]> = (0..12)
        .map(|_| {
            let k = [1, 3, 5][pick(3)];
            [1 + pick(5), 1 + pick(9), 1 + pick(11), 1 + pick(11), 1 + pick(9), k, pick(k as u64 / 2 + 2)]
        })
        .collect();
    for [batch, c, h, w, o, k, p] in fixed.into_iter().chain(random) {
        if h + 2 * p < k || w + 2 * p < k {
            continue;
        }
        let x = Tensor::<4>::random([batch, c, h, w], Distribution::Normal(0.0, 1.0), &device);
        let weight = Tensor::<4>::random([o, c, k, k], Distribution::Normal(0.0, 0.3), &device);
        let bias = Tensor::<1>::random([o], Distribution::Normal(0.0, 1.0), &device);
        let (ho, wo) = (h + 2 * p - k + 1, w + 2 * p - k + 1);
        let v = Tensor::<4>::random([batch, o, ho, wo], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>| {
            let (x, weight, bias) = (x.clone().require_grad(), weight.clone().require_grad(), bias.clone().require_grad());
            let y = f(x.clone(), weight.clone(), bias.clone());
            let grads = (y.clone() * v.clone()).sum().backward();
            [
                read(y),
                read(x.grad(&grads).unwrap()),
                read(weight.grad(&grads).unwrap()),
                read(bias.grad(&grads).unwrap()),
            ]
        };
        let ours = run(&|x, w, b| conv2d_cpu(x, w, b, p));
        let reference = run(&|x, w, b| conv2d_reference(x, w, Some(b), p));
        for (what, (a, b)) in ["output", "dx", "dweight", "dbias"].iter().zip(ours.iter().zip(&reference)) {
            let err = relative_error(a, b);
            assert!(err < 1e-5, "{what} of [{batch}, {c}, {h}, {w}] * [{o}, {c}, {k}, {k}] padding {p}: relative error {err}");
        }
    }
}

#[test]
fn convolution_keeps_gradients_of_untracked_inputs_out() {
    let device = Device::flex().autodiff();
    let x = Tensor::<4>::from_data(TensorData::new(vec![1f32; 2 * 3 * 4 * 4], [2, 3, 4, 4]), &device);
    let weight = Tensor::<4>::random([5, 3, 3, 3], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let bias = Tensor::<1>::zeros([5], &device);
    let grads = conv2d_cpu(x.clone(), weight.clone(), bias.clone(), 1).sum().backward();
    assert!(x.grad(&grads).is_none() && bias.grad(&grads).is_none());
    let expected = conv2d_reference(x, weight.clone(), Some(bias), 1).sum().backward();
    let err = relative_error(&read(weight.grad(&grads).unwrap()), &read(weight.grad(&expected).unwrap()));
    assert!(err < 1e-5, "dweight relative error {err}");
}

#[test]
fn group_norm_matches_burn_in_values_and_gradients() {
    for (i, shape) in test_shapes(11, 10).into_iter().enumerate() {
        for silu in [false, true] {
            let errors = errors_against_reference(&Device::flex(), shape, silu, i % 2 == 1, i as u64, Kernels::Cpu);
            for (what, err) in ["output", "dx", "dgamma", "dbeta"].iter().zip(errors) {
                assert!(err < 1e-4, "{what} of {shape:?} ([B, C, H, W, groups]), silu {silu}: relative error {err}");
            }
        }
    }
}

#[test]
fn resampling_matches_burn_in_values_and_gradients() {
    let device = Device::flex().autodiff();
    let mut rng = imm::Rng::new(11);
    let mut pick = |n: u64| 1 + (rng.next_u64() % n) as usize;
    for _ in 0..12 {
        let [batch, c, h, w] = [pick(5), pick(6), 2 * pick(7), 2 * pick(7)];
        for up in [false, true] {
            let x = Tensor::<4>::random([batch, c, h, w], Distribution::Normal(0.0, 1.0), &device);
            let out = if up { [batch, c, 2 * h, 2 * w] } else { [batch, c, h / 2, w / 2] };
            let v = Tensor::<4>::random(out, Distribution::Normal(0.0, 1.0), &device);
            let run = |f: fn(Tensor<4>, bool) -> Tensor<4>| {
                let x = x.clone().require_grad();
                let y = f(x.clone(), up);
                let grads = (y.clone() * v.clone()).sum().backward();
                [read(y), read(x.grad(&grads).unwrap())]
            };
            let (ours, reference) = (run(resample), run(resample_reference));
            for (what, (a, b)) in ["output", "dx"].iter().zip(ours.iter().zip(&reference)) {
                let err = relative_error(a, b);
                assert!(a.len() == b.len() && err < 1e-6, "{what} of {} [{batch}, {c}, {h}, {w}]: relative error {err}", if up { "up" } else { "down" });
            }
        }
    }
}
