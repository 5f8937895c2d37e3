//! `--precision`: fp32, or bf16 autocast. Under bf16 the matmuls and convolutions run in bf16 (autocast's
//! own list); the model computes its softmax and logits in fp32 (model::vit), so the attention that the
//! relevance ops read, their gradients, the losses and the optimiser state stay fp32.
use anyhow::bail;
use tch::Device;

use crate::ops;

crate::named_enum! {
    /// The arithmetic of forward passes.
    #[derive(Default)]
    pub enum Precision("precision") {
        #[default]
        Fp32 = "fp32",
        /// Autocast to bfloat16: CPUs with AVX512-BF16 or AMX, and CUDA.
        Bf16 = "bf16",
    }
}

impl Precision {
    /// Refuses bf16 on a CPU that has no native bf16 (it would run emulated, slower than fp32).
    pub fn check(self, device: Device) -> anyhow::Result<()> {
        if self == Precision::Bf16 && device == Device::Cpu && !ops::cpu_has_bf16() {
            bail!(
                "--precision bf16: this CPU has neither AVX512-BF16 nor AMX-BF16, so bf16 would be emulated and \
                 slower than fp32; use --precision fp32 (or a CUDA device)"
            );
        }
        Ok(())
    }

    /// Runs `f` under this precision on `device` (autocast is per thread; nested calls keep the outer one).
    pub fn run<T>(self, device: Device, f: impl FnOnce() -> T) -> T {
        if self == Precision::Fp32 {
            return f();
        }
        let cuda = device != Device::Cpu;
        let previous = ops::set_autocast_bf16(cuda, true);
        // Restores the previous state even if `f` panics.
        struct Restore(bool, bool);
        impl Drop for Restore {
            fn drop(&mut self) {
                ops::set_autocast_bf16(self.0, self.1);
            }
        }
        let _restore = Restore(cuda, previous);
        f()
    }
}
