//! `imm bench launches` counts what the runtime launches and reserves: one elementwise op on wgpu
//! is one launch and its output's buffer (with at most a small buffer of the launch's sizes), and
//! burn's fusion makes a chain of elementwise ops one launch.

use std::sync::{Mutex, MutexGuard, OnceLock};

use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use burn::tensor::{Device, Distribution, Tensor};
use imm::bench::counts::{Counts, count, install};
use imm::kernels::conv::conv2d;
use imm::kernels::group_norm::group_norm;

/// The wgpu device with the counts installed, and a guard: counts of tests run side by side would
/// mix.
fn counted_device() -> (MutexGuard<'static, ()>, Device) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    static DEVICE: OnceLock<Device> = OnceLock::new();
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let device = DEVICE.get_or_init(|| {
        // SAFETY: set before any device (and its threads) starts; nothing else reads it yet.
        unsafe { std::env::set_var("CUBECL_AUTOTUNE_LEVEL", "minimal") };
        install().expect("the counts install before any device starts");
        Device::wgpu_options().init().expect("a wgpu adapter (lavapipe without a GPU)")
    });
    (guard, device.clone())
}

fn launches_of(counts: &Counts, prefix: &str) -> u64 {
    counts.by_kernel.iter().filter(|(name, _)| name.starts_with(prefix)).map(|(_, n)| n).sum()
}

#[test]
fn counts_launches_and_buffers_of_the_runtime() {
    let (_guard, device) = counted_device();
    // The counts add the memory logger to cubecl's configuration and keep the rest of it.
    let config = serde_json::to_value(&*CubeClRuntimeConfig::get()).unwrap();
    assert_eq!(config["memory"]["logger"]["level"], "full", "{config}");
    assert_eq!(config["autotune"]["level"], "minimal", "CUBECL_AUTOTUNE_LEVEL was ignored: {config}");
    let x = Tensor::<1>::random([1000], Distribution::Normal(0.0, 1.0), &device);
    // Outputs are kept until the count has drained the device: fusion skips work nobody reads.
    let mut kept = Vec::new();
    let one = count(&device, || {
        kept.push(x.clone().add_scalar(1.0));
        Ok(())
    })
    .unwrap();
    assert_eq!((one.launches, one.kernels), (1, 1), "{one:?}");
    assert!((1..=2).contains(&one.buffers) && (4000..4256).contains(&one.buffer_bytes), "{one:?}");

    let chain = count(&device, || {
        kept.push((x.clone().exp() * x.clone()).add_scalar(1.0));
        Ok(())
    })
    .unwrap();
    assert_eq!(chain.launches, 1, "three elementwise ops fuse into one kernel: {chain:?}");
    assert_eq!(chain.by_kernel.iter().map(|(_, n)| n).sum::<u64>(), chain.launches);
}

/// A GroupNorm + SiLU between two convolutions adds its own three kernels (forward, backward, the
/// parameter gradients) and no layout copy: it reads and writes the channels-last activations
/// burn's convolutions leave, forward and backward.
#[test]
fn group_norm_between_convolutions_adds_no_copies() {
    let (_guard, device) = counted_device();
    let device = device.autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([2, 8, 6, 6], normal, &device);
    let [w1, w2] = [0, 1].map(|_| Tensor::<4>::random([8, 8, 3, 3], normal, &device).require_grad());
    let (gamma, beta) = (Tensor::<1>::ones([8], &device).require_grad(), Tensor::<1>::zeros([8], &device).require_grad());
    let mut kept = Vec::new();
    let mut step = |with_norm: bool| {
        count(&device, || {
            let h = conv2d(x.clone(), w1.clone(), None, 1);
            let h = if with_norm { group_norm(h, gamma.clone(), beta.clone(), 4, 1e-5, true) } else { h };
            let grads = conv2d(h, w2.clone(), None, 1).sum().backward();
            kept.extend([w1.grad(&grads), w2.grad(&grads)].map(|g| g.expect("a weight gradient")));
            Ok(())
        })
        .unwrap()
    };
    let (plain, normed) = (step(false), step(true));
    assert_eq!(launches_of(&normed, "SourceKernel | NormKernel"), 3, "{normed:?}");
    assert_eq!(launches_of(&normed, "Copy"), launches_of(&plain, "Copy"), "without the norm: {plain:?}\nwith it: {normed:?}");
}

/// A trained convolution's bias gradient sums the output gradient where it lies (burn's own first
/// copies all of it to [O, B H W]), and its add fuses with the elementwise op after the
/// convolution: the bias costs less than one more buffer of the output's size.
#[test]
fn a_convolutions_bias_copies_no_output_gradient() {
    let (_guard, device) = counted_device();
    let device = device.autodiff();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<4>::random([4, 8, 10, 10], normal, &device);
    let w = Tensor::<4>::random([16, 8, 3, 3], normal, &device).require_grad();
    let b = Tensor::<1>::random([16], normal, &device).require_grad();
    let (mut kept, mut kept_bias) = (Vec::new(), Vec::new());
    let mut step = |bias: Option<Tensor<1>>| {
        count(&device, || {
            let grads = conv2d(x.clone(), w.clone(), bias.clone(), 1).mul_scalar(2.0).sum().backward();
            kept.push(w.grad(&grads).expect("a weight gradient"));
            kept_bias.extend(bias.as_ref().map(|b| b.grad(&grads).expect("a bias gradient")));
            Ok(())
        })
        .unwrap()
    };
    // Compiled and autotuned first: those reserve buffers too.
    let _ = (step(None), step(Some(b.clone())));
    let (plain, biased) = (step(None), step(Some(b.clone())));
    let output_bytes = 4 * 16 * 10 * 10 * 4;
    assert!(biased.buffer_bytes < plain.buffer_bytes + output_bytes, "without the bias: {plain:?}\nwith it: {biased:?}");
}
