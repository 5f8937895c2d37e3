//! AdamW as `torch.optim.AdamW` computes it, with its state exposed as named tensors so that a run can be
//! checkpointed and resumed exactly (tch's optimisers keep their state inside libtorch, out of reach).
use std::collections::HashMap;

use tch::{nn, Tensor};

use crate::ops::{self, AdamWSettings, OpError};

/// Decoupled-weight-decay Adam over the trainable variables of a `VarStore`, in name order.
pub struct AdamW {
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: i64,
    pub settings: AdamWSettings,
}

impl AdamW {
    pub fn new(vs: &nn::VarStore, lr: f64, weight_decay: f64) -> Self {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |ps: &[(String, Tensor)]| ps.iter().map(|(_, p)| p.zeros_like()).collect();
        AdamW {
            exp_avg: zeros(&params),
            exp_avg_sq: zeros(&params),
            params,
            step: 0,
            settings: AdamWSettings { lr, betas: (0.9, 0.999), eps: 1e-8, weight_decay },
        }
    }

    /// Drops the gradients, as PyTorch's default `zero_grad` (set to none) does.
    pub fn zero_grad(&mut self) {
        let params: Vec<Tensor> = self.params.iter().map(|(_, p)| p.shallow_clone()).collect();
        ops::clear_grads(&params);
    }

    /// One update from the parameters' `.grad`, PyTorch's fused AdamW kernel over all of them at once (one pass
    /// over parameters, gradients and moments). Parameters without a gradient are left alone, as PyTorch does.
    pub fn step(&mut self) -> Result<(), OpError> {
        self.step += 1;
        let mut lists: [Vec<Tensor>; 4] = Default::default();
        for (((_, p), m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            let g = p.grad();
            if g.defined() {
                for (list, t) in lists.iter_mut().zip([p, &g, m, v]) {
                    list.push(t.shallow_clone());
                }
            }
        }
        let [params, grads, exp_avgs, exp_avg_sqs] = &lists;
        ops::fused_adamw(params, grads, exp_avgs, exp_avg_sqs, self.step, self.settings)
    }

    pub fn steps_taken(&self) -> i64 {
        self.step
    }

    /// The state as named tensors: `exp_avg.<param>`, `exp_avg_sq.<param>` and `step`.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("step".to_string(), Tensor::from(self.step))];
        for (((name, _), m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            out.push((format!("exp_avg.{name}"), m.to_device(tch::Device::Cpu)));
            out.push((format!("exp_avg_sq.{name}"), v.to_device(tch::Device::Cpu)));
        }
        out
    }

    /// Restores a state written by [`AdamW::state`]; the message names what is missing or misshapen.
    pub fn load_state(&mut self, state: Vec<(String, Tensor)>) -> Result<(), String> {
        let named: HashMap<String, Tensor> = state.into_iter().collect();
        let step = named.get("step").ok_or("optimiser state has no step")?;
        self.step = step.int64_value(&[]);
        for (((name, p), m), v) in self.params.iter().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
            for (prefix, slot) in [("exp_avg", m), ("exp_avg_sq", v)] {
                let key = format!("{prefix}.{name}");
                let t = named.get(&key).ok_or_else(|| format!("optimiser state lacks {key}"))?;
                if t.size() != p.size() {
                    return Err(format!("optimiser state {key} has shape {:?}, parameter {:?}", t.size(), p.size()));
                }
                *slot = t.to_kind(p.kind()).to_device(p.device());
            }
        }
        Ok(())
    }
}
