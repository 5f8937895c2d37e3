//! A finetuning method is a function from (model, batch) to named loss terms: the relevance method of the
//! paper, GradMask and RRR (method.md sections 3-4), and the ablations as settings of the method. The
//! training loop never branches on the method.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::model::VisionTransformer;
use crate::ops::{self, OpError};

/// Whether the loss also differentiates through G = dS/dA (method.md section 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum RelevanceGrad {
    /// G is a constant, as in the reference code (the default).
    Detached,
    /// G computed with create_graph, so the loss also trains through it.
    Full,
}

/// The target of the classification term of the method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ClsTarget {
    /// The model's own current prediction: confidence boosting (the paper's method).
    Pred,
    /// The ground-truth label (the "with ground truth" ablation).
    Gt,
}

/// The relevance method (paper Eq. 1-5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Relevance {
    pub lambda_bg: f64,
    pub lambda_fg: f64,
    pub lambda_rel: f64,
    pub lambda_cls: f64,
    pub temperature: f64,
    pub relevance_grad: RelevanceGrad,
    pub cls_target: ClsTarget,
}

impl Default for Relevance {
    fn default() -> Self {
        Relevance {
            lambda_bg: 2.0,
            lambda_fg: 0.3,
            lambda_rel: 0.8,
            lambda_cls: 0.2,
            temperature: 1.0,
            relevance_grad: RelevanceGrad::Detached,
            cls_target: ClsTarget::Pred,
        }
    }
}

/// An input-gradient baseline: `lambda_bg * penalty(dY/dx, mask) + lambda_cls * CE(logits / T, label)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputGradient {
    pub lambda_bg: f64,
    pub lambda_cls: f64,
    pub temperature: f64,
}

/// Plain cross-entropy on the labels: training from scratch, and what the reference code's baselines
/// reduce to without double backpropagation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossEntropy {
    pub temperature: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Method {
    Ours(Relevance),
    Gradmask(InputGradient),
    Rrr(InputGradient),
    CrossEntropy(CrossEntropy),
}

/// A batch on the model's device: normalised images `[B,3,S,S]`, masks `[B,1,S,S]` (1 = object), labels `[B]`.
pub struct Batch {
    pub images: Tensor,
    pub masks: Tensor,
    pub labels: Tensor,
}

/// The loss to minimise, its named terms (0-dim tensors, `total` first) and the detached logits.
pub struct Loss {
    pub terms: Vec<(&'static str, Tensor)>,
    pub logits: Tensor,
}

impl Loss {
    pub fn total(&self) -> &Tensor {
        &self.terms[0].1
    }
}

impl Method {
    pub fn name(&self) -> &'static str {
        match self {
            Method::Ours(_) => "ours",
            Method::Gradmask(_) => "gradmask",
            Method::Rrr(_) => "rrr",
            Method::CrossEntropy(_) => "cross-entropy",
        }
    }

    /// The term the method exists to lower (the relevance loss, the input-gradient penalty); model
    /// selection across epochs and settings compares it.
    pub fn penalty_term(&self) -> &'static str {
        match self {
            Method::Ours(_) => "relevance",
            Method::Gradmask(_) | Method::Rrr(_) => "mask",
            Method::CrossEntropy(_) => "total",
        }
    }

    /// The names of the terms `loss` returns, in order.
    pub fn term_names(&self) -> &'static [&'static str] {
        match self {
            Method::Ours(_) => &["total", "relevance", "bg", "fg", "cls"],
            Method::Gradmask(_) | Method::Rrr(_) => &["total", "mask", "ce"],
            Method::CrossEntropy(_) => &["total"],
        }
    }

    /// The loss of `batch`. `train` keeps the graph needed to backpropagate the total (for the baselines:
    /// the input gradient is taken with create_graph, the double backpropagation); evaluation computes the
    /// same values without it.
    pub fn loss(&self, model: &VisionTransformer, batch: &Batch, train: bool) -> Result<Loss, OpError> {
        match self {
            Method::Ours(m) => relevance_loss(m, model, batch),
            Method::Gradmask(b) => input_gradient_loss(b, model, batch, train, |logits, labels| {
                logits.gather(1, &labels.unsqueeze(1), false).sum(Kind::Float)
            }, ops::gradmask_loss),
            Method::Rrr(b) => input_gradient_loss(b, model, batch, train, |logits, _| {
                logits.log_softmax(-1, Kind::Float).sum(Kind::Float)
            }, ops::rrr_loss),
            Method::CrossEntropy(c) => {
                let logits = model.forward(&batch.images);
                let total = cross_entropy(&logits, c.temperature, &batch.labels);
                Ok(Loss { terms: vec![("total", total)], logits: logits.detach() })
            }
        }
    }
}

fn cross_entropy(logits: &Tensor, temperature: f64, target: &Tensor) -> Tensor {
    (logits / temperature).log_softmax(-1, Kind::Float).nll_loss(target)
}

fn relevance_loss(m: &Relevance, model: &VisionTransformer, batch: &Batch) -> Result<Loss, OpError> {
    let out = model.forward_with_attention(&batch.images);
    // S = sum_b logit[b, label_b]; G_l = dS/dA_l, kept in the graph only in `full` mode.
    let score = out.logits.gather(1, &batch.labels.unsqueeze(1), false).sum(Kind::Float);
    let full = m.relevance_grad == RelevanceGrad::Full;
    let grads = Tensor::run_backward(&[score], &out.attention, true, full);
    let rel = ops::gae_relevance(&out.attention, &grads, 0)?;
    let c = model.config();
    let size = batch.images.size()[2];
    let map = ops::relevance_map(&rel, (c.grid(), c.grid()), (size, size), 1e-8)?;
    let r = ops::relevance_loss(&map, &batch.masks, m.lambda_bg, m.lambda_fg)?;
    let cls = match m.cls_target {
        ClsTarget::Pred => ops::confidence_loss(&out.logits, m.temperature)?,
        ClsTarget::Gt => cross_entropy(&out.logits, m.temperature, &batch.labels),
    };
    let total = &r.total * m.lambda_rel + &cls * m.lambda_cls;
    Ok(Loss {
        terms: vec![("total", total), ("relevance", r.total), ("bg", r.background), ("fg", r.foreground), ("cls", cls)],
        logits: out.logits.detach(),
    })
}

fn input_gradient_loss(
    b: &InputGradient,
    model: &VisionTransformer,
    batch: &Batch,
    train: bool,
    explained: impl Fn(&Tensor, &Tensor) -> Tensor,
    penalty: impl Fn(&Tensor, &Tensor) -> Result<Tensor, OpError>,
) -> Result<Loss, OpError> {
    let x = batch.images.detach().set_requires_grad(true);
    let logits = model.forward(&x);
    let y = explained(&logits, &batch.labels);
    let input_grad = Tensor::run_backward(&[y], &[&x], true, train).swap_remove(0);
    let mask = penalty(&input_grad, &batch.masks)?;
    let ce = cross_entropy(&logits, b.temperature, &batch.labels);
    let total = &mask * b.lambda_bg + &ce * b.lambda_cls;
    Ok(Loss { terms: vec![("total", total), ("mask", mask), ("ce", ce)], logits: logits.detach() })
}
