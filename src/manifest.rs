//! Build facts recorded in every run manifest. The git revision is the binary's (harness sets it at build
//! time); the library alone does not know it.
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub robustvit_version: String,
    pub git_revision: String,
    pub libtorch_version: String,
    pub tch_version: String,
}

impl Provenance {
    /// The facts of this library build, with the revision `git_revision` of the calling binary.
    pub fn new(git_revision: &str) -> Self {
        Provenance {
            robustvit_version: env!("CARGO_PKG_VERSION").into(),
            git_revision: git_revision.into(),
            libtorch_version: env!("ROBUSTVIT_LIBTORCH_VERSION").into(),
            tch_version: "0.24.0".into(),
        }
    }
}

impl Default for Provenance {
    /// For library callers that have no revision of their own (tests, other programs).
    fn default() -> Self {
        Provenance::new("unknown")
    }
}
