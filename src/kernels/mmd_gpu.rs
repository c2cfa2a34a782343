//! The grouped MMD as two fused kernels inside burn's autodiff: the forward pass reads each
//! group's rows once and writes the per-group MMD and the coefficients of its gradient; the
//! backward pass turns them into dL/dy_t. Hand-written WGSL (`shaders/mmd_*.wgsl`) on wgpu devices
//! (Vulkan, Metal, DX12, WebGPU), the same kernels in CubeCL (`mmd_cube.rs`) on the other cubecl
//! runtimes (CUDA, ROCm), where WGSL cannot run.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::wgpu::{CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous};
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, TensorMetadata, backend_extension, tensor::FloatTensor};
use burn::cubecl::prelude::{BufferArg, KernelId};
use burn::cubecl::server::KernelArguments;
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::{Device, Shape, Tensor, TensorData};

use super::Kernels;
use super::gpu::{WORKGROUP, empty_like, grid, input_access};
use super::mmd::mmd_reference_chunked;

/// Per-group MMD^2 through the chosen kernels, differentiable in y_t (y_r is a target: no
/// gradient). [`kernels_for`](super::kernels_for) says which a device has; on wgpu both run.
///
/// # Shapes
/// - y_t, y_r: [G, M, D] with 1 <= M <= 16
/// - kernel_scale: [G]
/// - output: [G]
pub fn mmd_with(y_t: Tensor<3>, y_r: Tensor<3>, kernel_scale: Tensor<1>, kernels: Kernels) -> Tensor<1> {
    let (mmd, _) = <Dispatch as FusedMmd>::fused_mmd(
        y_t.into_dispatch(),
        y_r.detach().into_dispatch(),
        kernel_scale.into_dispatch(),
        kernels,
    );
    Tensor::from_dispatch(mmd)
}

/// Outputs of the fused MMD and of the reference on the same inputs: values [G] and dL/dy_t
/// [G, M, D] of sum_g v_g mmd_g for random v_g > 0.
pub struct Comparison {
    pub fused: (Tensor<1>, Tensor<3>),
    pub reference: (Tensor<1>, Tensor<3>),
}

/// Runs `kernels` and the reference on one set of random inputs of shape [G, M, D] on `device`,
/// with a repeated particle in the first group (M >= 2) so that the distance clamp is exercised
/// off the diagonal. The reference runs as [`mmd_reference_chunked`]. Tests and `imm bench mmd`
/// read the outputs and compare them with [`relative_error`](super::mmd::relative_error).
pub fn comparison(device: &Device, [groups, particles, dim]: [usize; 3], seed: u64, kernels: Kernels) -> Comparison {
    let device = device.clone().autodiff();
    let mut rng = crate::Rng::new(seed);
    let mut y_t = rng.normal_vec(groups * particles * dim, 1.0);
    if particles >= 2 {
        y_t.copy_within(0..dim, dim);
    }
    let y_r = rng.normal_vec(groups * particles * dim, 1.0);
    let scale: Vec<f32> = (0..groups).map(|_| rng.uniform_in(0.5, 30.0) as f32).collect();
    let v: Vec<f32> = (0..groups).map(|_| rng.uniform_in(0.5, 2.0) as f32).collect();
    let shape = [groups, particles, dim];
    let run = |f: &dyn Fn(Tensor<3>, Tensor<3>, Tensor<1>) -> Tensor<1>| {
        let y_t = Tensor::<3>::from_data(TensorData::new(y_t.clone(), shape), &device).require_grad();
        let y_r = Tensor::<3>::from_data(TensorData::new(y_r.clone(), shape), &device);
        let scale = Tensor::<1>::from_data(TensorData::new(scale.clone(), [groups]), &device);
        let v = Tensor::<1>::from_data(TensorData::new(v.clone(), [groups]), &device);
        let mmd = f(y_t.clone(), y_r, scale);
        let grads = (mmd.clone() * v).sum().backward();
        (mmd.inner(), y_t.grad(&grads).expect("y_t has a gradient"))
    };
    Comparison {
        fused: run(&|y_t, y_r, scale| mmd_with(y_t, y_r, scale, kernels)),
        reference: run(&mmd_reference_chunked),
    }
}

/// The two kernels as a backend operation.
#[backend_extension(Cube, Fusion, Autodiff)]
pub trait FusedMmd: Backend {
    /// Returns the per-group MMD [G] and the gradient coefficients [G, 2, M, M].
    #[fusion(meta = mmd_outputs)]
    fn fused_mmd(
        y_t: FloatTensor<Self>,
        y_r: FloatTensor<Self>,
        kernel_scale: FloatTensor<Self>,
        kernels: Kernels,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// dL/dy_t [G, M, D] from the coefficients and dL/dmmd [G].
    #[fusion(dtype = y_t, shape = y_t)]
    fn fused_mmd_backward(
        y_t: FloatTensor<Self>,
        y_r: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        grad_mmd: FloatTensor<Self>,
        kernels: Kernels,
    ) -> FloatTensor<Self>;
}

/// What [`FusedMmd::fused_mmd`] returns, for burn's fusion backend to register before it runs.
fn mmd_outputs(y_t: &TensorSpec, _: &TensorSpec, _: &TensorSpec, _: &Kernels) -> (TensorSpec, TensorSpec) {
    let [g, m] = [y_t.shape[0], y_t.shape[1]];
    (TensorSpec::new(Shape::new([g]), y_t.dtype), TensorSpec::new(Shape::new([g, 2, m, m]), y_t.dtype))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Pass {
    Forward,
    Backward,
}

/// One of the two shaders, specialised to the sizes (constant loop bounds).
#[derive(Debug)]
struct MmdKernel {
    pass: Pass,
    groups: usize,
    particles: usize,
    dim: usize,
}

impl KernelSource for MmdKernel {
    fn source(&self) -> SourceTemplate {
        let text = match self.pass {
            Pass::Forward => include_str!("../../shaders/mmd_forward.wgsl"),
            Pass::Backward => include_str!("../../shaders/mmd_backward.wgsl"),
        };
        SourceTemplate::new(text)
            .register("m", self.particles.to_string())
            .register("d", self.dim.to_string())
            .register("g", self.groups.to_string())
            .register("access", input_access())
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info((self.pass, self.groups, self.particles, self.dim))
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

fn dims3(t: &CubeTensor) -> [usize; 3] {
    let shape = t.shape();
    assert_eq!(shape.num_dims(), 3, "the fused MMD takes [G, M, D] tensors");
    [shape[0], shape[1], shape[2]]
}

/// Launches one pass of the chosen implementation on contiguous tensors (inputs, then the output(s)).
fn launch(kernels: Kernels, kernel: MmdKernel, count: CubeCount, tensors: &[&CubeTensor]) {
    let client = tensors[0].client.clone();
    let cube_dim = CubeDim::new_1d(WORKGROUP);
    let MmdKernel { pass, groups, particles: m, dim: d } = kernel;
    match kernels {
        Kernels::Wgsl => {
            let bindings = tensors.iter().map(|t| t.handle.clone().binding()).collect();
            client.launch(Box::new(SourceKernel::new(kernel, cube_dim)), count, KernelArguments::new().with_buffers(bindings));
        }
        Kernels::CubeCl => {
            // SAFETY: each length is the tensor's element count, and the tensors are contiguous.
            let [a, b, c, e, f] = [0, 1, 2, 3, 4].map(|i| unsafe {
                BufferArg::from_raw_parts(tensors[i].handle.clone(), tensors[i].shape().num_elements())
            });
            match pass {
                Pass::Forward => crate::kernels::mmd_cube::mmd_forward::launch(&client, count, cube_dim, a, b, c, e, f, m, d, groups),
                Pass::Backward => crate::kernels::mmd_cube::mmd_backward::launch(&client, count, cube_dim, a, b, c, e, f, m, d, groups),
            }
        }
        Kernels::Cpu => unreachable!("the MMD has no CPU kernels"),
    }
}

impl FusedMmd for CubeBackend {
    fn fused_mmd(
        y_t: CubeTensor,
        y_r: CubeTensor,
        kernel_scale: CubeTensor,
        kernels: Kernels,
    ) -> (CubeTensor, CubeTensor) {
        let [groups, particles, dim] = dims3(&y_t);
        assert_eq!(dims3(&y_r), [groups, particles, dim], "y_t and y_r differ in shape");
        assert!((1..=16).contains(&particles), "the fused MMD takes 1 to 16 particles per group, not {particles}");
        let (y_t, y_r, kernel_scale) = (into_contiguous(y_t), into_contiguous(y_r), into_contiguous(kernel_scale));
        let mmd = empty_like(&y_t, Shape::new([groups]));
        let coef = empty_like(&y_t, Shape::new([groups, 2, particles, particles]));
        let kernel = MmdKernel { pass: Pass::Forward, groups, particles, dim };
        launch(kernels, kernel, grid(groups), &[&y_t, &y_r, &kernel_scale, &mmd, &coef]);
        (mmd, coef)
    }

    fn fused_mmd_backward(
        y_t: CubeTensor,
        y_r: CubeTensor,
        coef: CubeTensor,
        grad_mmd: CubeTensor,
        kernels: Kernels,
    ) -> CubeTensor {
        let [groups, particles, dim] = dims3(&y_t);
        let (y_t, y_r, coef, grad_mmd) =
            (into_contiguous(y_t), into_contiguous(y_r), into_contiguous(coef), into_contiguous(grad_mmd));
        let grad_y_t = empty_like(&y_t, Shape::new([groups, particles, dim]));
        let kernel = MmdKernel { pass: Pass::Backward, groups, particles, dim };
        let count = grid((groups * dim).div_ceil(WORKGROUP as usize));
        launch(kernels, kernel, count, &[&y_t, &y_r, &coef, &grad_mmd, &grad_y_t]);
        grad_y_t
    }
}

/// The autodiff node of the fused MMD; its state is what the backward kernel reads.
#[derive(Debug)]
struct MmdBackward;

impl<B: Backend + FusedMmd> Backward<B, 1> for MmdBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, Kernels);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad_mmd = grads.consume::<B>(&ops.node);
        if let [Some(parent)] = ops.parents {
            let (y_t, y_r, coef, kernels) = ops.state;
            grads.register::<B>(parent.id, B::fused_mmd_backward(y_t, y_r, coef, grad_mmd, kernels));
        }
    }
}

impl<B: Backend + FusedMmd, C: CheckpointStrategy> FusedMmd for Autodiff<B, C> {
    fn fused_mmd(
        y_t: FloatTensor<Self>,
        y_r: FloatTensor<Self>,
        kernel_scale: FloatTensor<Self>,
        kernels: Kernels,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y_r, kernel_scale) = (Self::inner(y_r), Self::inner(kernel_scale));
        let (mmd, coef) = B::fused_mmd(y_t.primitive().clone(), y_r.clone(), kernel_scale, kernels);
        let mmd = match MmdBackward.prepare::<C>([y_t.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((y_t.into_primitive(), y_r, coef.clone(), kernels), mmd),
            OpsKind::UnTracked(prep) => prep.finish(mmd),
        };
        (mmd, Self::from_inner(coef))
    }

    fn fused_mmd_backward(
        y_t: FloatTensor<Self>,
        y_r: FloatTensor<Self>,
        coef: FloatTensor<Self>,
        grad_mmd: FloatTensor<Self>,
        kernels: Kernels,
    ) -> FloatTensor<Self> {
        let [y_t, y_r, coef, grad_mmd] = [y_t, y_r, coef, grad_mmd].map(Self::inner);
        Self::from_inner(B::fused_mmd_backward(y_t, y_r, coef, grad_mmd, kernels))
    }
}
