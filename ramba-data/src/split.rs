//! Which part of the data a batch comes from.
//!
//! Its own module because the row RNG, the sources and the pipeline all key on it: owned by
//! any one of them, the others would depend on it and it back on them.

/// Which part of the data a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The first `1 - val_fraction` of each token source; training seed stream.
    Train,
    /// The held-out tail of each token source; validation seed stream.
    Val,
}

impl Split {
    /// `"train"` or `"val"`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
