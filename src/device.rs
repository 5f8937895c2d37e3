//! `--device` values: `cpu`, `cuda`, `cuda:N`.
use anyhow::{bail, Context};
use tch::Device;

/// Parses a device name; a CUDA device must exist.
pub fn parse(name: &str) -> anyhow::Result<Device> {
    let device = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:") {
            Some(n) => Device::Cuda(n.parse().with_context(|| format!("bad CUDA device index in {other:?}"))?),
            None => bail!("unknown device {other:?}: use cpu, cuda or cuda:N"),
        },
    };
    let available = tch::Cuda::device_count() as usize;
    if let Device::Cuda(i) = device {
        if i >= available {
            bail!("device {name:?} requested but {available} CUDA device(s) are visible");
        }
    }
    Ok(device)
}
