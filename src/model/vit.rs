//! Vision Transformer in tch with timm's module tree, so variable paths are timm's state-dict keys.
//! Attention is written out (softmax(q k^T * scale) v) wherever gradients may flow: the probabilities are
//! needed for relevance, and the fused kernel's backward has no double backward. `forward_fused` (once
//! differentiable, no probabilities) and `predict` (no gradients) use the fused kernel
//! (scaled_dot_product_attention).
//!
//! The logits read only the class token of the last block, so that block computes keys and values for every
//! token but the query, attention, projection and MLP for the class token alone (timm's numbers, 1/T of
//! that block's query-side work: docs/performance.md).
use tch::nn::{self, Module};
use tch::Tensor;

use super::config::VitConfig;

const LN_EPS: f64 = 1e-6;

fn layer_norm(vs: nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(vs, vec![dim], nn::LayerNormConfig { eps: LN_EPS, ..Default::default() })
}

/// How a block's attention runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attend {
    /// The fused kernel: differentiable once, no probabilities.
    Fused,
    /// Written out (differentiable twice); the probabilities are not kept.
    WrittenOut,
    /// Written out, the probabilities returned for relevance.
    Recorded,
}

#[derive(Debug)]
struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    num_heads: i64,
    scale: f64,
}

impl Attention {
    fn new(vs: nn::Path, c: &VitConfig) -> Self {
        let d = c.embed_dim;
        Attention {
            qkv: nn::linear(&vs / "qkv", d, 3 * d, Default::default()),
            proj: nn::linear(&vs / "proj", d, d, Default::default()),
            num_heads: c.num_heads,
            scale: (c.head_dim() as f64).powf(-0.5),
        }
    }

    /// `[B,T,n*D]` -> `[n,B,H,T,D/H]`.
    fn heads(&self, x: &Tensor, n: i64) -> Tensor {
        let size = x.size();
        let h = self.num_heads;
        x.reshape([size[0], size[1], n, h, size[2] / (n * h)]).permute([2, 0, 3, 1, 4])
    }

    /// Output `[B,Q,D]` for the first `Q` tokens of `x` `[B,T,D]` as queries (all `T` as keys) and, when
    /// `Recorded`, the post-softmax attention `[B,H,T,T]`, whose rows past the queries are zero.
    fn forward(&self, x: &Tensor, queries: i64, attend: Attend) -> (Tensor, Option<Tensor>) {
        let size = x.size();
        let (b, t, d) = (size[0], size[1], size[2]);
        let (q, k, v) = if queries == t {
            let qkv = self.heads(&self.qkv.forward(x), 3);
            (qkv.get(0), qkv.get(1), qkv.get(2))
        } else {
            // Rows [0,D) of the qkv weight make the queries, rows [D,3D) the keys and values.
            let (w, bias) = (&self.qkv.ws, self.qkv.bs.as_ref());
            let kv = x.linear(&w.narrow(0, d, 2 * d), bias.map(|b| b.narrow(0, d, 2 * d)));
            let q = x.narrow(1, 0, queries).linear(&w.narrow(0, 0, d), bias.map(|b| b.narrow(0, 0, d)));
            let kv = self.heads(&kv, 2);
            (self.heads(&q, 1).get(0), kv.get(0), kv.get(1))
        };
        let (out, attn) = if attend == Attend::Fused {
            let out = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, self.scale, false);
            (out, None)
        } else {
            // Softmax in the input's dtype (fp32 under bf16 autocast, whose matmuls give bf16 scores): the
            // attention that relevance reads keeps full precision.
            let rows = (q * self.scale).matmul(&k.transpose(-2, -1)).softmax(-1, x.kind());
            if attend == Attend::Recorded && queries < t {
                // The full map, zero where no query ran; the output reads its rows back, so the gradient to the
                // map is the full model's (zero in the rows nothing downstream reads).
                let zeros = rows.new_zeros([b, self.num_heads, t - queries, t], (rows.kind(), rows.device()));
                let full = Tensor::cat(&[rows, zeros], 2);
                (full.narrow(2, 0, queries).matmul(&v), Some(full))
            } else {
                (rows.matmul(&v), (attend == Attend::Recorded).then_some(rows))
            }
        };
        (self.proj.forward(&out.transpose(1, 2).reshape([b, queries, d])), attn)
    }
}

#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Block {
    fn new(vs: nn::Path, c: &VitConfig) -> Self {
        let mlp = &vs / "mlp";
        Block {
            norm1: layer_norm(&vs / "norm1", c.embed_dim),
            attn: Attention::new(&vs / "attn", c),
            norm2: layer_norm(&vs / "norm2", c.embed_dim),
            fc1: nn::linear(&mlp / "fc1", c.embed_dim, c.mlp_hidden(), Default::default()),
            fc2: nn::linear(&mlp / "fc2", c.mlp_hidden(), c.embed_dim, Default::default()),
        }
    }

    /// The block's output `[B,Q,D]` for the first `Q` tokens (`queries`) and its attention as `Attention`'s.
    fn forward(&self, x: &Tensor, queries: i64, attend: Attend) -> (Tensor, Option<Tensor>) {
        let (a, attn) = self.attn.forward(&self.norm1.forward(x), queries, attend);
        let x = x.narrow(1, 0, queries) + a;
        let hidden = self.fc1.forward(&self.norm2.forward(&x)).gelu("none");
        (&x + self.fc2.forward(&hidden), attn)
    }
}

/// A timm-layout ViT. Construct it on a `VarStore` path (usually the root) so that variable names are
/// timm's keys: `cls_token`, `pos_embed`, `patch_embed.proj.*`, `blocks.{i}.*`, `norm.*`, `head.*`.
#[derive(Debug)]
pub struct VisionTransformer {
    config: VitConfig,
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    /// None for a backbone (num_classes 0, e.g. DINO's), as timm builds it.
    head: Option<nn::Linear>,
}

/// Logits `[B,C]` and, per block, the post-softmax attention `[B,H,T,T]` (in the autograd graph). The last
/// block's holds the class token's row alone (its other rows are zero: nothing downstream reads them, so their
/// gradient is zero in the full model too, and relevance reads the class token's row).
#[derive(Debug)]
pub struct ForwardWithAttention {
    pub logits: Tensor,
    pub attention: Vec<Tensor>,
}

impl VisionTransformer {
    pub fn new(vs: &nn::Path, config: &VitConfig) -> Self {
        let c = config;
        let d = c.embed_dim;
        let conv = nn::ConvConfig { stride: c.patch_size, ..Default::default() };
        let blocks_vs = vs / "blocks";
        VisionTransformer {
            config: c.clone(),
            patch_embed: nn::conv2d(vs / "patch_embed" / "proj", c.in_chans, d, c.patch_size, conv),
            cls_token: vs.var("cls_token", &[1, 1, d], nn::Init::Randn { mean: 0.0, stdev: 1e-6 }),
            pos_embed: vs.var("pos_embed", &[1, c.tokens(), d], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            blocks: (0..c.depth).map(|i| Block::new(&blocks_vs / i, c)).collect(),
            norm: layer_norm(vs / "norm", d),
            head: (c.num_classes > 0).then(|| nn::linear(vs / "head", d, c.num_classes, Default::default())),
        }
    }

    pub fn config(&self) -> &VitConfig {
        &self.config
    }

    /// Where the weights live.
    pub fn device(&self) -> tch::Device {
        self.pos_embed.device()
    }

    /// Checks that `images` is `[B, in_chans, img_size, img_size]` floating point, before a forward pass
    /// would fail deep inside libtorch.
    pub fn check_images(&self, images: &Tensor) -> Result<(), String> {
        let c = &self.config;
        let size = images.size();
        let ok = size.len() == 4 && size[1] == c.in_chans && size[2] == c.img_size && size[3] == c.img_size;
        if !ok {
            return Err(format!(
                "images must have shape [B,{},{},{}], got {size:?}",
                c.in_chans, c.img_size, c.img_size
            ));
        }
        if !images.is_floating_point() {
            return Err(format!("images must be floating point, got {:?}", images.kind()));
        }
        Ok(())
    }

    /// Tokens `[B, 1 + h*w, D]` of images whose patch grid is `h x w`. Only `any_size` resamples the position
    /// embedding to another grid than the checkpoint's (elsewhere another size stays a shape error).
    fn embed(&self, images: &Tensor, any_size: bool) -> Tensor {
        let patches = self.patch_embed.forward(images);
        let (h, w) = (patches.size()[2], patches.size()[3]);
        let patches = patches.flatten(2, 3).transpose(1, 2);
        let b = patches.size()[0];
        let pos = if any_size { self.position_embedding(h, w) } else { self.pos_embed.shallow_clone() };
        Tensor::cat(&[self.cls_token.expand([b, -1, -1], false), patches], 1) + pos
    }

    /// The position embedding at an `h x w` patch grid, resampled as timm's `resample_abs_pos_embed` does
    /// (bicubic, antialiased) when it is not the checkpoint's.
    fn position_embedding(&self, h: i64, w: i64) -> Tensor {
        let (g, d) = (self.config.grid(), self.config.embed_dim);
        if (h, w) == (g, g) {
            return self.pos_embed.shallow_clone();
        }
        let grid = self
            .pos_embed
            .narrow(1, 1, g * g)
            .reshape([1, g, g, d])
            .permute([0, 3, 1, 2])
            .internal_upsample_bicubic2d_aa([h, w], false, None, None)
            .permute([0, 2, 3, 1])
            .reshape([1, h * w, d]);
        Tensor::cat(&[self.pos_embed.narrow(1, 0, 1), grid], 1)
    }

    /// Logits of the class token `[B,1,D]`, in the residual stream's dtype: under bf16 autocast the head's
    /// matmul is bf16, the logits are not. A backbone gives its normalised class token, as timm's does
    /// (loading refuses backbones for classification: model::load).
    fn logits(&self, cls_token: &Tensor) -> Tensor {
        let cls = self.norm.forward(cls_token).select(1, 0);
        self.head.as_ref().map_or(cls.shallow_clone(), |head| head.forward(&cls)).to_kind(cls_token.kind())
    }

    /// The last block's attention keys of the patch tokens, `[B, N, D]` (heads side by side, patches in
    /// row-major order), for images `[B, C, H, W]` of any size that is a multiple of the patch size (the
    /// position embedding resampled: `embed`), which is how DINO and TokenCut run at each image's own size.
    pub fn last_keys(&self, images: &Tensor) -> Tensor {
        let d = self.config.embed_dim;
        let (last, rest) = self.blocks.split_last().expect("a ViT has at least one block");
        let x = self.embed(images, true);
        let t = x.size()[1];
        let x = rest.iter().fold(x, |x, block| block.forward(&x, t, Attend::Fused).0);
        let patches = t - 1;
        last.attn.qkv.forward(&last.norm1.forward(&x)).narrow(2, d, d).narrow(1, 1, patches)
    }

    /// Logits `[B,C]` for images `[B,3,H,W]` (normalised), differentiable (twice, for the input-gradient
    /// baselines).
    pub fn forward(&self, images: &Tensor) -> Tensor {
        self.logits(&self.blocks_forward(images, Attend::WrittenOut).0)
    }

    /// Logits through the fused attention kernel: differentiable once, not twice (cross-entropy training).
    pub fn forward_fused(&self, images: &Tensor) -> Tensor {
        self.logits(&self.blocks_forward(images, Attend::Fused).0)
    }

    /// The class token after the last block, `[B,1,D]`, and each block's attention when `Recorded`.
    fn blocks_forward(&self, images: &Tensor, attend: Attend) -> (Tensor, Vec<Tensor>) {
        let mut x = self.embed(images, false);
        let t = x.size()[1];
        let last = self.blocks.len() - 1;
        let mut attention = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let (next, attn) = block.forward(&x, if i == last { 1 } else { t }, attend);
            x = next;
            attention.extend(attn);
        }
        (x, attention)
    }

    /// Logits for evaluation: no gradients, the fused attention kernel.
    pub fn predict(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| self.forward_fused(images))
    }

    /// Logits and every block's attention probabilities, for relevance.
    pub fn forward_with_attention(&self, images: &Tensor) -> ForwardWithAttention {
        let (x, attention) = self.blocks_forward(images, Attend::Recorded);
        ForwardWithAttention { logits: self.logits(&x), attention }
    }
}
