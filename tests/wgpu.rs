//! The same model code on wgpu: the IMM loss and its gradients equal the CPU (Flex) backend's, the
//! conditional golden files (SongUNet, DiT) pass, and the fused MMD kernels equal the reference ops.
//! Without a GPU this runs on lavapipe, Mesa's software Vulkan (scripts/test.sh installs it).

use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use imm::method::loss::{GroupTimes, imm_loss};
use imm::networks::mlp::MlpConfig;
use imm::Rng;
use imm::training::presets::preset;

/// The wgpu device, initialised once per process as wgpu requires.
fn gpu() -> Device {
    static GPU: OnceLock<Device> = OnceLock::new();
    GPU.get_or_init(|| Device::wgpu_options().init().expect("a wgpu adapter (lavapipe without a GPU)")).clone()
}

/// Every float parameter's gradient, flattened, in visiting order.
struct Grads<'a>(&'a GradientsParams, Vec<Vec<f32>>);

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let grad = self.0.get::<D>(param.id).expect("every parameter has a gradient");
        self.1.push(grad.into_data().try_into_vec::<f32>().unwrap());
    }
}

fn loss_and_grads(device: Device) -> (f32, Vec<Vec<f32>>) {
    let device = device.autodiff();
    let p = preset("moons").unwrap();
    let net = MlpConfig::new().with_hidden(32).with_blocks(1).init(&mut Rng::new(1), &device);
    let mut rng = Rng::new(2);
    let (g, m) = (4, p.imm.particles);
    let x = Tensor::<2>::from_data(TensorData::new(rng.normal_vec(g * m * 2, 0.5), [g * m, 2]), &device);
    let eps = Tensor::<2>::from_data(TensorData::new(rng.normal_vec(g * m * 2, 0.5), [g * m, 2]), &device);
    let groups: Vec<GroupTimes> = (0..g)
        .map(|_| {
            let (s, r, t) = p.imm.times.sample(&mut rng);
            GroupTimes { s, r, t }
        })
        .collect();
    let loss = imm_loss(&net, &p.imm.precond, x, eps, None, &groups, (p.imm.a, p.imm.b)).loss;
    let grads = GradientsParams::from_grads(loss.backward(), &net);
    let mut visitor = Grads(&grads, Vec::new());
    net.visit(&mut visitor);
    (loss.into_scalar::<f32>(), visitor.1)
}

#[test]
fn imm_loss_and_gradients_on_wgpu_equal_the_cpu() {
    let (loss_cpu, grads_cpu) = loss_and_grads(Device::flex());
    let (loss_gpu, grads_gpu) = loss_and_grads(gpu());
    assert!((loss_cpu - loss_gpu).abs() <= 1e-4 * loss_cpu.abs(), "loss {loss_cpu} vs {loss_gpu}");
    assert_eq!(grads_cpu.len(), grads_gpu.len());
    for (i, (a, b)) in grads_cpu.iter().zip(&grads_gpu).enumerate() {
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(scale > 0.0 && err <= 1e-3 * scale, "parameter {i}: gradient error {err} over {scale}");
    }
}

/// The official networks with labels and guidance (SongUNet and DiT), their losses, gradients and
/// samplers, on wgpu.
#[test]
fn the_conditional_golden_files_pass_on_wgpu() {
    for (var, file) in [("IMM_GOLDEN_COND", "golden_songunet_cond"), ("IMM_GOLDEN_DIT", "golden_dit_small")] {
        let path = std::env::var_os(var).map(std::path::PathBuf::from).unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../shared/golden/{file}.safetensors"))
        });
        let rows = imm::evaluation::golden::check(&path, &gpu()).unwrap();
        let failed: Vec<String> = rows.iter().filter(|r| !r.ok()).map(|r| format!("{} rel {:.2e}", r.name, r.rel)).collect();
        assert!(rows.len() > 60 && failed.is_empty(), "{file}: {} rows, failed: {failed:?}", rows.len());
    }
}

/// Both fused MMD implementations (WGSL, and CubeCL compiled by cubecl) equal the reference ops in
/// value and gradient, over shapes that are not multiples of the workgroup or tile sizes, every M
/// from 1 to 16, and a clamped distance.
#[test]
fn fused_mmd_kernels_equal_the_reference() {
    use burn::tensor::DType;
    use imm::kernels::mmd::{comparison, relative_error, test_shapes};
    use imm::kernels::{Kernels, kernels_for};
    let gpu = gpu();
    assert_eq!(kernels_for(&gpu, DType::F32), Some(Kernels::Wgsl));
    assert_eq!(kernels_for(&Device::flex(), DType::F32), Some(Kernels::Cpu));
    assert_eq!(kernels_for(&gpu, DType::F16), None);
    let read = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().unwrap();
    let read3 = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().unwrap();
    let shapes = test_shapes(7, 20, 300);
    for (i, (shape, kernels)) in shapes.iter().flat_map(|&s| [(s, Kernels::Wgsl), (s, Kernels::CubeCl)]).enumerate() {
        let c = comparison(&gpu, shape, i as u64, kernels);
        let (value, grad) = (read(c.fused.0), read3(c.fused.1));
        let (want_value, want_grad) = (read(c.reference.0), read3(c.reference.1));
        let (e_value, e_grad) = (relative_error(&value, &want_value), relative_error(&grad, &want_grad));
        assert!(e_value <= 1e-4, "{kernels:?} {shape:?}: MMD relative error {e_value}: {value:?} vs {want_value:?}");
        assert!(e_grad <= 1e-4, "{kernels:?} {shape:?}: gradient relative error {e_grad}");
        assert!(grad.iter().any(|&v| v != 0.0), "{kernels:?} {shape:?}: the gradient is all zero");
    }
}

/// The fused GroupNorm (+ SiLU) in WGSL and in CubeCL equals burn's plain ops in value and every
/// gradient, over odd sizes, groups larger than a workgroup and of a single channel, on NCHW and
/// channels-last inputs.
#[test]
fn fused_group_norm_kernels_equal_the_reference() {
    use imm::kernels::Kernels;
    use imm::kernels::group_norm::{errors_against_reference, test_shapes};
    let gpu = gpu();
    for (i, shape) in test_shapes(13, 8).into_iter().enumerate() {
        for (silu, kernels) in [(false, Kernels::Wgsl), (true, Kernels::Wgsl), (true, Kernels::CubeCl), (false, Kernels::CubeCl)] {
            for last in [false, true] {
                let errors = errors_against_reference(&gpu, shape, silu, last, i as u64, kernels);
                for (what, err) in ["output", "dx", "dgamma", "dbeta"].iter().zip(errors) {
                    let layout = if last { "channels last" } else { "NCHW" };
                    assert!(err < 1e-4, "{kernels:?}, {layout}: {what} of {shape:?} ([B, C, H, W, groups]), silu {silu}: relative error {err}");
                }
            }
        }
    }
}
