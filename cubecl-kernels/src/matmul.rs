//! Matrix products through a named cubek kernel, for the linear layers.
//!
//! Burn's `float_matmul` launches cubek's default kernel (`SimpleCyclicCmma`) unless Burn is
//! built with `autotune`, and then the first training step spends minutes tuning every shape of
//! the model (`docs/perf.md`, 2026-12-07). The linear layers have a handful of large shapes and
//! name their kernel here instead ([`MatmulKernel`]); a kernel that cannot run a problem (no
//! tensor cores, no TMA, an alignment it needs) falls back to cubek's default, which itself
//! falls back to a scalar kernel.
//!
//! Shapes: `lhs [batch.., m, k]`, `rhs [batch.., k, n]` with batch dimensions broadcast, each
//! matrix row- or column-major (a transposed view is read in place); the output
//! `[batch.., m, n]` is contiguous, in the dtype the caller names. Accumulation is f32 whatever
//! the operands' dtype, so a bf16 product can be written straight into an f32 gradient.

use std::fmt;
use std::str::FromStr;

use burn::tensor::DType;
use burn_cubecl::{kernel::matmul::init_matmul_output, tensor::CubeTensor, CubeRuntime};
use cubek::matmul::components::tile::TileMatmulKind;
use cubek::matmul::definition::{MatmulElems, MatmulGlobalElems};
use cubek::matmul::launch::Strategy;
use cubek::matmul::routines::double_buffering::DoubleBufferingArgs;
use cubek::matmul::routines::ordered_double_buffering::OrderedSelectionArgs;
use cubek::matmul::routines::simple::SimpleArgs;
use cubek::matmul::routines::specialized::SpecializedStrategy;
use cubek::matmul::routines::BlueprintStrategy;
use cubek::std::InputBinding;

/// The cubek kernel families the linear layers can name (those of Burn's matmul autotune set
/// that use the tensor cores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulFamily {
    /// cubek's default launch (`SimpleCyclicCmma`, else a scalar kernel): what Burn runs.
    Default,
    /// One stage in shared memory, loaded cyclically.
    SimpleCyclic,
    /// The same, each plane computing several rows of tiles.
    SimpleCyclicMultiRows,
    /// Two stages, the next loaded while the current is multiplied.
    DoubleCyclic,
    /// Double buffering with loader planes specialised apart from compute planes.
    DoubleCyclicSpecialized,
    /// Double buffering with an ordered stage layout, 4 rows of tiles.
    OrderedDouble4,
    /// The same with 8 rows of tiles.
    OrderedDouble8,
    /// Warp-specialised pipeline with cyclic loads.
    SpecializedCyclic,
    /// One unit (thread) per output tile, plain f32 FMAs: no tensor cores, so f32 operands
    /// keep their 24-bit mantissas (the tensor-core kernels read f32 as TF32, 10 bits).
    Unit,
}
// cubek's double-buffered unit kernel (`DoubleUnit`) is left out: on lavapipe (2026-12-08) it
// accepted `[70, 24] · [24, 301]` and `[74, 29] · [29, 48]` and returned products 4% and 56%
// off, where the single-buffered one is exact.

impl MatmulFamily {
    /// Whether the family has a PTX `mma.sync` variant beside its WMMA-style one (the unit
    /// kernels and cubek's default have neither choice).
    pub fn has_mma_variant(self) -> bool {
        !matches!(self, Self::Default | Self::Unit)
    }
}
// cubek's TMA kernels are left out: on an H100 (2026-12-07) `SimpleTmaCmma` passed cubek's
// setup checks for `[32768, 640] · [640, 2836]` and then failed at launch ("Tile shape must be
// non-zero and <= 256"), which leaves the CUDA context unusable, so no fallback can follow.

/// A kernel family and the tile instruction it runs on: `Cmma` (the portable WMMA-style
/// fragments) or `Mma` (the PTX `mma.sync` shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatmulKernel {
    pub family: MatmulFamily,
    pub mma: bool,
}

impl MatmulKernel {
    /// cubek's default, what Burn's own matmul launches.
    pub const DEFAULT: Self = Self {
        family: MatmulFamily::Default,
        mma: false,
    };

    /// Every kernel the linear layers can name ([`NAMES`]' order), for benchmarks that compare
    /// them.
    pub fn all() -> Vec<Self> {
        let mut kernels = vec![Self::DEFAULT];
        for &(family, _) in &NAMES[1..] {
            kernels.push(Self { family, mma: false });
            if family.has_mma_variant() {
                kernels.push(Self { family, mma: true });
            }
        }
        kernels
    }

    fn strategy(self) -> Strategy {
        use MatmulFamily::*;
        let tile_matmul = if self.mma {
            TileMatmulKind::Mma
        } else {
            TileMatmulKind::Cmma
        };
        // Macros, not closures: each strategy's blueprint type differs by its loaders.
        macro_rules! simple {
            ($multi_rows:expr) => {
                BlueprintStrategy::Inferred(SimpleArgs {
                    multi_rows: $multi_rows,
                    tile_matmul,
                })
            };
        }
        macro_rules! double {
            ($specialized:expr) => {
                BlueprintStrategy::Inferred(DoubleBufferingArgs {
                    specialized: $specialized,
                    tile_matmul,
                })
            };
        }
        macro_rules! ordered {
            ($row_count:expr) => {
                BlueprintStrategy::Inferred(OrderedSelectionArgs {
                    partition_k: Some(2),
                    row_count: Some($row_count),
                    rows_per_plane: Some(2),
                    tile_matmul,
                })
            };
        }
        macro_rules! specialized {
            () => {
                BlueprintStrategy::Inferred(SpecializedStrategy { tile_matmul })
            };
        }
        match (self.family, self.mma) {
            (Default, _) => Strategy::default(),
            (SimpleCyclic, false) => Strategy::SimpleCyclicCmma(simple!(false)),
            (SimpleCyclic, true) => Strategy::SimpleCyclicMma(simple!(false)),
            (SimpleCyclicMultiRows, false) => Strategy::SimpleCyclicCmma(simple!(true)),
            (SimpleCyclicMultiRows, true) => Strategy::SimpleCyclicMma(simple!(true)),
            (DoubleCyclic, false) => Strategy::DoubleCyclicCmma(double!(false)),
            (DoubleCyclic, true) => Strategy::DoubleCyclicMma(double!(false)),
            (DoubleCyclicSpecialized, false) => Strategy::DoubleCyclicCmma(double!(true)),
            (DoubleCyclicSpecialized, true) => Strategy::DoubleCyclicMma(double!(true)),
            (OrderedDouble4, false) => Strategy::OrderedDoubleCmma(ordered!(4)),
            (OrderedDouble4, true) => Strategy::OrderedDoubleMma(ordered!(4)),
            (OrderedDouble8, false) => Strategy::OrderedDoubleCmma(ordered!(8)),
            (OrderedDouble8, true) => Strategy::OrderedDoubleMma(ordered!(8)),
            (SpecializedCyclic, false) => Strategy::SpecializedCyclicCmma(specialized!()),
            (SpecializedCyclic, true) => Strategy::SpecializedCyclicMma(specialized!()),
            (Unit, _) => Strategy::SimpleUnit(BlueprintStrategy::default()),
        }
    }
}

/// Each family's name in [`MatmulKernel`]'s `Display` and `FromStr`; `Default` first.
const NAMES: [(MatmulFamily, &str); 9] = [
    (MatmulFamily::Default, "default"),
    (MatmulFamily::SimpleCyclic, "simple"),
    (MatmulFamily::SimpleCyclicMultiRows, "simple_multirow"),
    (MatmulFamily::DoubleCyclic, "double"),
    (MatmulFamily::DoubleCyclicSpecialized, "double_specialized"),
    (MatmulFamily::OrderedDouble4, "ordered4"),
    (MatmulFamily::OrderedDouble8, "ordered8"),
    (MatmulFamily::SpecializedCyclic, "specialized"),
    (MatmulFamily::Unit, "unit"),
];

impl fmt::Display for MatmulKernel {
    /// `family` or `family_mma`, e.g. `specialized_mma`; `default` alone.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = NAMES
            .iter()
            .find(|(family, _)| *family == self.family)
            .map(|(_, name)| *name)
            .unwrap_or("default");
        if self.mma && self.family.has_mma_variant() {
            write!(f, "{name}_mma")
        } else {
            f.write_str(name)
        }
    }
}

impl FromStr for MatmulKernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (base, mma) = match s.strip_suffix("_mma") {
            Some(base) => (base, true),
            None => (s, false),
        };
        NAMES
            .iter()
            .find(|(_, name)| *name == base)
            .map(|(family, _)| Self {
                family: *family,
                mma: mma && family.has_mma_variant(),
            })
            .ok_or_else(|| {
                let known: Vec<String> = Self::all().iter().map(|k| k.to_string()).collect();
                format!("unknown matmul kernel `{s}` (known: {})", known.join(", "))
            })
    }
}

/// `lhs · rhs` with `kernel`, the product written in `out_dtype` (see the module docs for the
/// shapes). When `kernel` cannot run this problem, cubek's default runs it instead.
pub fn matmul<R: CubeRuntime>(
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
    out_dtype: DType,
    kernel: MatmulKernel,
) -> CubeTensor<R> {
    let out = init_matmul_output(&lhs, &rhs, out_dtype);
    if kernel.family != MatmulFamily::Default
        && launch(&kernel.strategy(), &lhs, &rhs, &out).is_ok()
    {
        return out;
    }
    if let Err(err) = launch(&Strategy::default(), &lhs, &rhs, &out) {
        panic!(
            "matmul {:?} · {:?} → {out_dtype:?}: no kernel can run it: {err:?}",
            lhs.meta.shape(),
            rhs.meta.shape()
        );
    }
    out
}

/// Whether `kernel` itself (not the fallback) can run `lhs · rhs` into `out_dtype`; benchmarks
/// use it to skip a kernel rather than time the fallback under its name.
pub fn try_matmul<R: CubeRuntime>(
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
    out_dtype: DType,
    kernel: MatmulKernel,
) -> Result<CubeTensor<R>, String> {
    let out = init_matmul_output(&lhs, &rhs, out_dtype);
    launch(&kernel.strategy(), &lhs, &rhs, &out).map_err(|err| format!("{err:?}"))?;
    Ok(out)
}

fn launch<R: CubeRuntime>(
    strategy: &Strategy,
    lhs: &CubeTensor<R>,
    rhs: &CubeTensor<R>,
    out: &CubeTensor<R>,
) -> Result<(), cubek::matmul::definition::MatmulSetupError> {
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: lhs.dtype.into(),
        rhs: rhs.dtype.into(),
        out: out.dtype.into(),
    });
    cubek::matmul::launch::launch_ref(
        strategy,
        &out.client,
        InputBinding::new(lhs.clone().binding(), lhs.dtype.into()),
        InputBinding::new(rhs.clone().binding(), rhs.dtype.into()),
        out.clone().binding(),
        &mut dtypes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kernel in MatmulKernel::all() {
            assert_eq!(kernel.to_string().parse::<MatmulKernel>(), Ok(kernel));
        }
        assert!("simplex".parse::<MatmulKernel>().is_err());
    }
}
