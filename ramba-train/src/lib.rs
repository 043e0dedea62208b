//! ramba-train: from an experiment file to a trained checkpoint.
//!
//! One readable loop ([`trainer::train`]): batches from `ramba-data`, forward and loss through
//! the model, backward, global-norm clipping, AdamW with a warm-up + cosine or WSD schedule, metrics,
//! validation, checkpoints, and the passkey report at the end; data-parallel over several
//! devices and machines through [`parallel`]; [`compare`] trains one experiment per
//! architecture and tabulates their evaluations.

pub mod compare;
pub mod device_failure;
pub mod init_from;
pub mod optim;
pub mod parallel;
pub mod schedule;
pub mod state;
pub mod trainer;
