//! The `--device` flag: which burn device (Flex on the CPU, wgpu, CUDA) a command runs on.

use burn::tensor::{Device, DeviceKind};
use serde::Serialize;

use crate::Error;

/// Where tensors live; chosen at run time, never by editing code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// A GPU when one is found (CUDA in a build with it, else wgpu), else the CPU.
    Auto,
    /// burn's Flex backend on the CPU (fastest for the small 2D networks).
    Cpu,
    /// wgpu on the best adapter found (Vulkan, Metal, DX12), a software one included.
    Wgpu,
    /// An NVIDIA GPU through CUDA (builds with `--features cuda`).
    Cuda,
}

impl DeviceChoice {
    /// The device, and the choice `Auto` resolved to. wgpu can be initialised once per process, so
    /// call this once.
    pub fn device(self) -> Result<(Device, DeviceChoice), Error> {
        match self {
            DeviceChoice::Auto => {
                // CUDA when this build has it and the machine has an NVIDIA driver and the toolkit's headers.
                if std::path::Path::new("/dev/nvidiactl").exists()
                    && let Ok(device) = cuda(0)
                {
                    return Ok((device, DeviceChoice::Cuda));
                }
                for kind in [DeviceKind::DiscreteGpu(0), DeviceKind::IntegratedGpu(0)] {
                    if let Ok(device) = Device::wgpu_options().device_kind(kind).init() {
                        return Ok((device, DeviceChoice::Wgpu));
                    }
                }
                Ok((Device::flex(), DeviceChoice::Cpu))
            }
            DeviceChoice::Cpu => Ok((Device::flex(), self)),
            DeviceChoice::Wgpu => Device::wgpu_options()
                .init()
                .map(|device| (device, self))
                .map_err(|e| Error::new(format!("no usable wgpu adapter ({e}); try --device cpu"))),
            DeviceChoice::Cuda => cuda(0).map(|device| (device, self)),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device, Error> {
    // cubecl-cuda panics without a CUDA include directory; say so before it does.
    let include = ["CUDA_PATH", "CUDA_HOME"].iter().filter_map(std::env::var_os).map(std::path::PathBuf::from).chain([std::path::PathBuf::from("/usr/local/cuda")]);
    if !include.into_iter().any(|dir| dir.join("include/crt/mma.h").exists()) {
        return Err(Error::new("--device cuda needs the CUDA toolkit's headers: set CUDA_PATH to a directory with include/crt/mma.h"));
    }
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device, Error> {
    Err(Error::new("this build has no CUDA: build with `cargo run --release --features cuda -- ...` (or use --device wgpu)"))
}

impl DeviceChoice {
    /// `n` devices of this kind for data-parallel training: GPUs `first` to `first + n - 1` (one
    /// process of several on a machine takes its own), or the CPU n times (one device in fact;
    /// useful for checking the split).
    pub fn devices(self, first: usize, n: usize) -> Result<(Vec<Device>, DeviceChoice), Error> {
        let (default, choice) = self.device()?;
        let mut devices = Vec::with_capacity(n);
        for i in first..first + n {
            let device = match choice {
                DeviceChoice::Cpu => Device::flex(),
                _ if i == 0 => default.clone(),
                DeviceChoice::Cuda => cuda(i)?,
                _ => Device::wgpu_options()
                    .device_kind(DeviceKind::DiscreteGpu(i))
                    .init()
                    .map_err(|e| Error::new(format!("no GPU {i} for devices {first} to {} ({e}); this machine has {i}", first + n - 1)))?,
            };
            devices.push(device);
        }
        Ok((devices, choice))
    }
}
