// The registration of the robustvit ops: schemas, then kernels per dispatch key. The CUDA kernels of
// gae_relevance register in cpp/relevance_cuda.cu; without it, CUDA tensors reach the CompositeExplicitAutograd
// catch-all below (the dispatcher prefers a backend's own kernel, then CompositeExplicitAutograd) and its error.
#include "ops.h"

#include <torch/library.h>

TORCH_LIBRARY(robustvit, m) {
  m.def("gae_relevance(Tensor[] attn, Tensor[] grad, int start_layer=0) -> Tensor");
  // Internal: gae_relevance, its levels [L+1,B,T] (the CLS-row vector after each block), which the backward
  // reuses instead of reading A and G again, and with keep_blocks (CPU only) the Abar and sign bits of the
  // blocks [start_layer, L-1), which spare a backward of dA alone reading A (KeptBlocks, cpp/gae_kernels.h);
  // empty [0] tensors without.
  m.def("_gae_relevance_forward(Tensor[] attn, Tensor[] grad, int start_layer, bool keep_blocks=False) "
        "-> (Tensor, Tensor, Tensor, Tensor)");
  // Internal: the first-order backward of gae_relevance (fused kernels). Lists are empty where not needed;
  // levels: _gae_relevance_forward's, or None to compute them; abar and signs: its kept blocks, or None.
  m.def("_gae_relevance_backward(Tensor grad_rel, Tensor[] attn, Tensor[] grad, int start_layer, "
        "bool attn_needs_grad, bool grad_needs_grad, Tensor? levels=None, Tensor? abar=None, Tensor? signs=None) "
        "-> (Tensor[], Tensor[])");
  m.def("relevance_map(Tensor rel, int grid_h, int grid_w, int out_h, int out_w, float eps=1e-8) -> Tensor");
  m.def("relevance_loss(Tensor map, Tensor mask, float lambda_bg=2.0, float lambda_fg=0.3) -> (Tensor, Tensor, Tensor)");
  m.def("confidence_loss(Tensor logits, float temperature=1.0) -> Tensor");
  m.def("gradmask_loss(Tensor input_grad, Tensor mask) -> Tensor");
  m.def("rrr_loss(Tensor input_grad, Tensor mask) -> Tensor");
}

// Device-generic ATen kernels serve CPU, CUDA and Meta alike.
#define ROBUSTVIT_ATEN_KERNELS(m)                              \
  m.impl("relevance_map", &robustvit::relevance_map_kernel);   \
  m.impl("relevance_loss", &robustvit::relevance_loss_kernel); \
  m.impl("confidence_loss", &robustvit::confidence_loss_kernel); \
  m.impl("gradmask_loss", &robustvit::gradmask_loss_kernel);   \
  m.impl("rrr_loss", &robustvit::rrr_loss_kernel)

TORCH_LIBRARY_IMPL(robustvit, CPU, m) {
  m.impl("gae_relevance", &robustvit::gae_relevance_cpu);
  m.impl("_gae_relevance_forward", &robustvit::gae_relevance_forward_cpu);
  m.impl("_gae_relevance_backward", &robustvit::gae_relevance_backward_cpu);
  ROBUSTVIT_ATEN_KERNELS(m);
}

TORCH_LIBRARY_IMPL(robustvit, CUDA, m) {
  ROBUSTVIT_ATEN_KERNELS(m);
}

TORCH_LIBRARY_IMPL(robustvit, Meta, m) {
  m.impl("gae_relevance", &robustvit::gae_relevance_meta);
  m.impl("_gae_relevance_forward", &robustvit::gae_relevance_forward_meta);
  m.impl("_gae_relevance_backward", &robustvit::gae_relevance_backward_meta);
  ROBUSTVIT_ATEN_KERNELS(m);
}

TORCH_LIBRARY_IMPL(robustvit, CompositeExplicitAutograd, m) {
  m.impl("gae_relevance", &robustvit::gae_relevance_no_kernel);
  m.impl("_gae_relevance_forward", &robustvit::gae_relevance_forward_no_kernel);
}

TORCH_LIBRARY_IMPL(robustvit, Autograd, m) {
  m.impl("gae_relevance", &robustvit::gae_relevance_autograd);
  m.impl("relevance_map", &robustvit::relevance_map_autograd);
  m.impl("relevance_loss", &robustvit::relevance_loss_autograd);
  m.impl("confidence_loss", &robustvit::confidence_loss_autograd);
  m.impl("gradmask_loss", &robustvit::gradmask_loss_autograd);
  m.impl("rrr_loss", &robustvit::rrr_loss_autograd);
}
