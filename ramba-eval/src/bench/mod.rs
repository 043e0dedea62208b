//! Kernel benchmarks: binaries that print a table (timings never go into tests).

pub mod hsa;
pub mod scan;
pub mod timing;
