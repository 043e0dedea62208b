//! Kernel benchmarks: binaries that print a table (timings never go into tests).

pub mod attention;
pub mod hsa;
pub mod matmul;
pub mod scan;
pub mod timing;
pub mod train;
