//! A finetuning method is a function from (model, batch) to named loss terms: the relevance method of the
//! paper, GradMask and RRR (method.md sections 3-4), and the ablations as settings of the method. The
//! training loop never branches on the method.
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::Batch;
use crate::model::VisionTransformer;
use crate::ops::{self, OpError};
use crate::relevance::{self, Graph, Target};

crate::named_enum! {
    /// The finetuning methods, as flags, study files and tables name them.
    pub enum MethodKind("method") {
        /// The relevance method of the paper.
        Ours = "ours",
        Gradmask = "gradmask",
        Rrr = "rrr",
        /// Cross-entropy on the labels alone.
        CrossEntropy = "ce",
    }
}

crate::named_enum! {
    /// Whether the loss also differentiates through G = dS/dA (method.md section 1).
    pub enum RelevanceGrad("relevance gradient") {
        /// G is a constant, as in the reference code (the default).
        Detached = "detached",
        /// G computed with create_graph, so the loss also trains through it.
        Full = "full",
    }
}

crate::named_enum! {
    /// The target of the classification term of the method.
    pub enum ClsTarget("classification target") {
        /// The model's own current prediction: confidence boosting (the paper's method).
        Pred = "pred",
        /// The ground-truth label (the "with ground truth" ablation).
        Gt = "gt",
    }
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
    pub fn kind(&self) -> MethodKind {
        match self {
            Method::Ours(_) => MethodKind::Ours,
            Method::Gradmask(_) => MethodKind::Gradmask,
            Method::Rrr(_) => MethodKind::Rrr,
            Method::CrossEntropy(_) => MethodKind::CrossEntropy,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// `(lambda_bg, lambda_cls, temperature)`: the background weight and the classification weight where the
    /// method has them, for tables of settings.
    pub fn weights(&self) -> (Option<f64>, Option<f64>, f64) {
        match self {
            Method::Ours(m) => (Some(m.lambda_bg), Some(m.lambda_cls), m.temperature),
            Method::Gradmask(b) | Method::Rrr(b) => (Some(b.lambda_bg), Some(b.lambda_cls), b.temperature),
            Method::CrossEntropy(c) => (None, None, c.temperature),
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
            Method::Gradmask(b) => input_gradient_loss(
                b,
                model,
                batch,
                train,
                |logits, labels| logits.gather(1, &labels.unsqueeze(1), false).sum(Kind::Float),
                ops::gradmask_loss,
            ),
            Method::Rrr(b) => input_gradient_loss(
                b,
                model,
                batch,
                train,
                |logits, _| logits.log_softmax(-1, Kind::Float).sum(Kind::Float),
                ops::rrr_loss,
            ),
            Method::CrossEntropy(c) => {
                let logits = model.forward_fused(&batch.images);
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
    // The relevance of the label; G = dS/dA stays in the graph only in `full` mode.
    let graph = Graph::Train { through_gradient: m.relevance_grad == RelevanceGrad::Full };
    let out = relevance::relevance(model, &batch.images, Target::Classes(&batch.labels), graph)?;
    let r = ops::relevance_loss(&out.maps, &batch.masks, m.lambda_bg, m.lambda_fg)?;
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
