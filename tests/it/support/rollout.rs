//! The composite reference for `gae_relevance`: the full T x T relevance matrix rolled out over the blocks
//! as method.md section 1 writes it, O(L T^3). Shared by the tests and the benchmark.
use tch::{Device, Tensor};

pub fn gae_relevance_full_matrix(attn: &[Tensor], grad: &[Tensor], start_layer: usize) -> Tensor {
    let (b, t) = (attn[0].size()[0], attn[0].size()[2]);
    let mut r = Tensor::eye(t, (attn[0].kind(), Device::Cpu)).expand([b, t, t], false);
    for (a, g) in attn.iter().zip(grad).skip(start_layer) {
        let abar = (g * a).clamp_min(0.0).mean_dim(1, false, None);
        r = &r + abar.bmm(&r);
    }
    r.select(1, 0).narrow(1, 1, t - 1)
}
