//! Choosing the backend (`--device cpu|cuda|auto`) and running a command generically on
//! it. The CUDA libraries are probed before cudarc touches them, so a machine without a
//! driver gets one clear line instead of a loader panic.

use peregrine_core::{Backend, Error, Result};

use crate::args::DeviceArg;

/// A computation that can run on any backend.
pub trait OnBackend {
    type Output;
    fn run<B: Backend>(self, backend: &B) -> Result<Self::Output>;
}

/// Run `job` on the device `arg` asks for.
pub fn dispatch<J: OnBackend>(arg: DeviceArg, job: J) -> Result<J::Output> {
    match arg {
        DeviceArg::Cpu => job.run(&peregrine_cpu::CpuBackend::new()),
        DeviceArg::Cuda => job.run(&open_cuda()?),
        DeviceArg::Auto => match peregrine_cuda::driver_available() {
            true => match peregrine_cuda::CudaBackend::new(0) {
                Ok(cuda) => job.run(&cuda),
                Err(e) => {
                    eprintln!("peregrine: CUDA is not usable ({e}); running on the CPU");
                    job.run(&peregrine_cpu::CpuBackend::new())
                }
            },
            false => {
                eprintln!("peregrine: no CUDA GPU found; running on the CPU");
                job.run(&peregrine_cpu::CpuBackend::new())
            }
        },
    }
}

fn open_cuda() -> Result<peregrine_cuda::CudaBackend> {
    if !peregrine_cuda::driver_available() {
        return Err(Error::device("--device cuda: no CUDA driver found (libcuda.so.1 is not loadable); use --device cpu"));
    }
    peregrine_cuda::CudaBackend::new(0)
}
