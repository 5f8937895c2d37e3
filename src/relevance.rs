//! The relevance of a class, the one place this sequence is written (method.md sections 1-2): forward with
//! the attention maps -> the class score -> its gradient with respect to every block's attention ->
//! `gae_relevance` -> `relevance_map`. Training differentiates through it; evaluation and pictures read it.
use tch::{Kind, Tensor};

use crate::model::VisionTransformer;
use crate::ops::{self, OpError};

/// Which class of each image is explained.
pub enum Target<'a> {
    /// Each image's predicted class.
    Predicted,
    /// `[B]` class indices (the labels, or classes asked for).
    Classes(&'a Tensor),
}

/// How much of the graph the result keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Graph {
    /// Everything detached: evaluation and pictures.
    Detached,
    /// Logits and map stay in the graph, for a loss; `through_gradient` also keeps the attention gradient
    /// G = dS/dA in it (create_graph), so the loss trains through G as well.
    Train { through_gradient: bool },
}

/// The relevance of one class per image.
pub struct Relevance {
    /// `[B, C]`
    pub logits: Tensor,
    /// `[B]`: the explained class of each image.
    pub classes: Tensor,
    /// `[B, P]`: `gae_relevance`, the CLS row over the patches.
    pub patches: Tensor,
    /// `[B, 1, S, S]` in [0, 1]: `relevance_map` at the input's size.
    pub maps: Tensor,
}

/// The relevance of `target` for `images` (`[B, 3, S, S]`, normalised, on the model's device).
pub fn relevance(
    model: &VisionTransformer,
    images: &Tensor,
    target: Target,
    graph: Graph,
) -> Result<Relevance, OpError> {
    let out = model.forward_with_attention(images);
    let classes = match target {
        Target::Predicted => out.logits.argmax(-1, false),
        Target::Classes(c) => c.shallow_clone(),
    };
    // S = sum_b logit[b, class_b]; its gradient to each block's attention.
    let score = out.logits.gather(1, &classes.unsqueeze(1), false).sum(Kind::Float);
    let (keep_graph, create_graph) = match graph {
        Graph::Detached => (false, false),
        Graph::Train { through_gradient } => (true, through_gradient),
    };
    let grads = Tensor::run_backward(&[score], &out.attention, keep_graph, create_graph);
    let patches = ops::gae_relevance(&out.attention, &grads, 0)?;
    let grid = model.config().grid();
    let side = images.size()[2];
    let maps = ops::relevance_map(&patches, (grid, grid), (side, side), 1e-8)?;
    Ok(match graph {
        Graph::Detached => {
            Relevance { logits: out.logits.detach(), classes, patches: patches.detach(), maps: maps.detach() }
        }
        Graph::Train { .. } => Relevance { logits: out.logits, classes, patches, maps },
    })
}
