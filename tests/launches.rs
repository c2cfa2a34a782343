//! `imm bench launches` counts what the runtime launches and reserves: one elementwise op on wgpu
//! is one launch and its output's buffer (with at most a small buffer of the launch's sizes), and
//! burn's fusion makes a chain of elementwise ops one launch.

use burn::tensor::{Device, Distribution, Tensor};
use imm::cli::counts::{count, install};

#[test]
fn counts_launches_and_buffers_of_the_runtime() {
    install().expect("the counts install before any device starts");
    let device = Device::wgpu_options().init().expect("a wgpu adapter (lavapipe without a GPU)");
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
