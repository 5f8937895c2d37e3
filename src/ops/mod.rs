//! Safe Rust access to the `robustvit` torch ops (cpp/). Every call goes through the PyTorch dispatcher, so
//! autograd works as from Python: gradients, `create_graph` double backward, and CUDA tensors where the
//! build has CUDA kernels. Bad input returns an [`OpError`] naming the op, the argument and the expected
//! shape. The maths is ../shared/method.md sections 1-4.
use cxx::UniquePtr;
use tch::Tensor;

#[cxx::bridge(namespace = "robustvit::bridge")]
mod ffi {
    unsafe extern "C++" {
        include!("robustvit/src/ops/bridge.h");

        #[namespace = "at"]
        type Tensor;
        type TensorList;

        fn new_tensor_list() -> UniquePtr<TensorList>;
        fn push(self: Pin<&mut TensorList>, t: &Tensor);
        fn take(self: Pin<&mut TensorList>, i: usize) -> Result<UniquePtr<Tensor>>;

        fn gae_relevance(attn: &TensorList, grad: &TensorList, start_layer: i64) -> Result<UniquePtr<Tensor>>;
        fn relevance_map(
            rel: &Tensor,
            grid_h: i64,
            grid_w: i64,
            out_h: i64,
            out_w: i64,
            eps: f64,
        ) -> Result<UniquePtr<Tensor>>;
        fn relevance_loss(map: &Tensor, mask: &Tensor, lambda_bg: f64, lambda_fg: f64)
            -> Result<UniquePtr<TensorList>>;
        fn confidence_loss(logits: &Tensor, temperature: f64) -> Result<UniquePtr<Tensor>>;
        fn gradmask_loss(input_grad: &Tensor, mask: &Tensor) -> Result<UniquePtr<Tensor>>;
        fn rrr_loss(input_grad: &Tensor, mask: &Tensor) -> Result<UniquePtr<Tensor>>;
        fn built_with_cuda() -> bool;
        fn set_autocast_bf16(cuda: bool, enabled: bool) -> bool;
        fn clear_grads(params: &TensorList);
        #[allow(clippy::too_many_arguments)]
        fn fused_adamw(
            params: &TensorList,
            grads: &TensorList,
            exp_avgs: &TensorList,
            exp_avg_sqs: &TensorList,
            step: i64,
            lr: f64,
            beta1: f64,
            beta2: f64,
            weight_decay: f64,
            eps: f64,
        ) -> Result<()>;
        fn cpu_has_bf16() -> bool;
    }
}

/// An op rejected its arguments (or a kernel failed); the message is PyTorch's `c10::Error` text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpError(String);

impl From<cxx::Exception> for OpError {
    fn from(e: cxx::Exception) -> Self {
        OpError(e.what().to_string())
    }
}

pub type Result<T> = std::result::Result<T, OpError>;

fn borrow(t: &Tensor) -> &ffi::Tensor {
    // SAFETY: tch's C_tensor is a heap `at::Tensor*`; the reference lives as long as `t`.
    unsafe { &*(t.as_ptr() as *const ffi::Tensor) }
}

fn own(p: UniquePtr<ffi::Tensor>) -> Tensor {
    // SAFETY: `into_raw` hands over a heap `at::Tensor*`, which tch takes ownership of and deletes.
    unsafe { Tensor::from_ptr(p.into_raw() as *mut _) }
}

fn tensor_list(ts: &[Tensor]) -> UniquePtr<ffi::TensorList> {
    let mut list = ffi::new_tensor_list();
    for t in ts {
        list.pin_mut().push(borrow(t));
    }
    list
}

/// GAE relevance of the CLS token (method.md section 1): `attn` and `grad` hold one `[B,H,T,T]` tensor per
/// block (post-softmax attention and its gradient), blocks before `start_layer` are skipped; returns
/// `[B,T-1]`. Computes only the CLS row, O(L H T^2). Differentiable w.r.t. both lists, twice.
pub fn gae_relevance(attn: &[Tensor], grad: &[Tensor], start_layer: i64) -> Result<Tensor> {
    Ok(own(ffi::gae_relevance(&tensor_list(attn), &tensor_list(grad), start_layer)?))
}

/// Relevance `[B, grid_h*grid_w]` -> map `[B,1,out_h,out_w]`: bilinear upsampling (align_corners=False),
/// then per-sample min-max to [0,1] with `eps` added to the denominator (method.md section 2).
pub fn relevance_map(rel: &Tensor, grid: (i64, i64), out: (i64, i64), eps: f64) -> Result<Tensor> {
    Ok(own(ffi::relevance_map(borrow(rel), grid.0, grid.1, out.0, out.1, eps)?))
}

/// The terms of the relevance loss (method.md section 3).
#[derive(Debug)]
pub struct RelevanceLoss {
    /// `lambda_bg * background + lambda_fg * foreground`
    pub total: Tensor,
    /// `L_bg = mean((map * (1 - mask))^2)`
    pub background: Tensor,
    /// `L_fg = mean((map * mask - mask)^2)`
    pub foreground: Tensor,
}

/// Relevance loss of a map `[B,1,H,W]` against a foreground mask of the same shape (1 = object).
pub fn relevance_loss(map: &Tensor, mask: &Tensor, lambda_bg: f64, lambda_fg: f64) -> Result<RelevanceLoss> {
    let mut terms = ffi::relevance_loss(borrow(map), borrow(mask), lambda_bg, lambda_fg)?;
    let mut take = |i| -> Result<Tensor> { Ok(own(terms.pin_mut().take(i)?)) };
    Ok(RelevanceLoss { total: take(0)?, background: take(1)?, foreground: take(2)? })
}

/// Confidence boosting: `CE(logits / temperature, argmax(logits))`, mean over the batch; `logits` `[B,C]`.
pub fn confidence_loss(logits: &Tensor, temperature: f64) -> Result<Tensor> {
    Ok(own(ffi::confidence_loss(borrow(logits), temperature)?))
}

/// GradMask's penalty `mean((input_grad * (1 - mask))^2)`; `input_grad` `[B,C,H,W]`, `mask` `[B,1,H,W]`.
pub fn gradmask_loss(input_grad: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(own(ffi::gradmask_loss(borrow(input_grad), borrow(mask))?))
}

/// RRR's penalty `sum((input_grad * (1 - mask))^2)`; shapes as [`gradmask_loss`].
pub fn rrr_loss(input_grad: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok(own(ffi::rrr_loss(borrow(input_grad), borrow(mask))?))
}

/// Whether this build carries the CUDA kernels of `gae_relevance`.
pub fn built_with_cuda() -> bool {
    ffi::built_with_cuda()
}

/// Turns bf16 autocast for CPU (or CUDA) on or off on this thread; returns the previous state
/// ([`crate::precision::Precision::run`] is the scoped way).
pub fn set_autocast_bf16(cuda: bool, enabled: bool) -> bool {
    ffi::set_autocast_bf16(cuda, enabled)
}

/// Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), as libtorch detects it.
pub fn cpu_has_bf16() -> bool {
    ffi::cpu_has_bf16()
}

/// AdamW's settings for [`fused_adamw`].
#[derive(Clone, Copy, Debug)]
pub struct AdamWSettings {
    pub lr: f64,
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

/// One AdamW update of `params` in place from `grads` and the moments, in one pass over all of them
/// (`torch.optim.AdamW(fused=True)`'s kernel); `step` counts this update. All tensors share a device and dtype.
pub fn fused_adamw(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    step: i64,
    s: AdamWSettings,
) -> Result<()> {
    Ok(ffi::fused_adamw(
        &tensor_list(params),
        &tensor_list(grads),
        &tensor_list(exp_avgs),
        &tensor_list(exp_avg_sqs),
        step,
        s.lr,
        s.betas.0,
        s.betas.1,
        s.weight_decay,
        s.eps,
    )?)
}

/// Drops the tensors' `.grad` (`zero_grad(set_to_none=True)`): the next backward hands its gradients over
/// instead of adding them to zeros.
pub fn clear_grads(params: &[Tensor]) {
    ffi::clear_grads(&tensor_list(params))
}
