//! ImageNet-1k class table: index, wnid and human-readable name (src/data/tables/README.md says where it is
//! from).
use std::collections::HashSet;
use std::sync::OnceLock;

const TABLE: &str = include_str!("tables/imagenet_classes.tsv");

/// One ImageNet-1k class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImagenetClass {
    pub index: usize,
    pub wnid: &'static str,
    pub name: &'static str,
}

/// The 1000 classes in index order.
pub fn classes() -> &'static [ImagenetClass] {
    static CLASSES: OnceLock<Vec<ImagenetClass>> = OnceLock::new();
    CLASSES.get_or_init(|| {
        TABLE
            .lines()
            .enumerate()
            .map(|(index, line)| {
                let mut fields = line.split('\t');
                let (_, wnid, name) = (fields.next(), fields.next(), fields.next());
                ImagenetClass {
                    index,
                    wnid: wnid.expect("embedded table has a wnid column"),
                    name: name.expect("embedded table has a name column"),
                }
            })
            .collect()
    })
}

/// The index of a wnid such as `n01440764`.
pub fn index_of(wnid: &str) -> Option<usize> {
    classes().iter().position(|c| c.wnid == wnid)
}

/// The indices of `wnids` (a run's finetuning classes, say); `Err` names the first that is not an ImageNet
/// wnid.
pub fn indices_of<S: AsRef<str>>(wnids: &[S]) -> Result<HashSet<usize>, String> {
    wnids
        .iter()
        .map(|w| index_of(w.as_ref()).ok_or_else(|| format!("{:?} is not an ImageNet wnid", w.as_ref())))
        .collect()
}
