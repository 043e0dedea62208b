//! A tensor that grows along one axis. Appends write into spare capacity, doubling it when
//! full, so a stream of appends copies each element O(1) times on average instead of the O(n)
//! times of concatenating the whole history on every call (a stream of 64M tokens appends
//! millions of times).

use burn::prelude::*;
use std::ops::Range;

/// See the module docs.
#[derive(Clone, Debug)]
pub struct GrowingTensor<B: Backend, const D: usize> {
    buf: Option<Tensor<B, D>>,
    len: usize,
    axis: usize,
}

impl<B: Backend, const D: usize> GrowingTensor<B, D> {
    /// Empty, growing along `axis`.
    pub fn new(axis: usize) -> Self {
        assert!(axis < D, "axis {axis} of a rank-{D} tensor");
        Self {
            buf: None,
            len: 0,
            axis,
        }
    }

    /// Entries along the axis.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was appended yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `x` along the axis (its other dimensions must match the earlier appends').
    pub fn append(&mut self, x: Tensor<B, D>) {
        let n = x.dims()[self.axis];
        if n == 0 {
            return;
        }
        let Some(buf) = self.buf.take() else {
            // The first append is adopted as it is: a stream of one call (every training
            // forward) copies nothing.
            self.buf = Some(x);
            self.len = n;
            return;
        };
        let dims = buf.dims();
        let cap = dims[self.axis];
        let end = self.len + n;
        self.buf = Some(if end <= cap {
            // In place when the buffer is not shared (no view of it is alive).
            buf.slice_assign(self.ranges(dims, self.len..end), x)
        } else {
            let new_cap = (2 * cap).max(end);
            let mut pad = dims;
            pad[self.axis] = new_cap - end;
            let kept = buf.narrow(self.axis, 0, self.len);
            let spare = Tensor::<B, D>::zeros(pad, &x.device()).cast(x.dtype());
            Tensor::cat(vec![kept, x, spare], self.axis)
        });
        self.len = end;
    }

    /// The appended entries (`None` before the first append).
    pub fn view(&self) -> Option<Tensor<B, D>> {
        let buf = self.buf.as_ref()?;
        Some(if buf.dims()[self.axis] == self.len {
            buf.clone()
        } else {
            buf.clone().narrow(self.axis, 0, self.len)
        })
    }

    /// The whole buffer, capacity included (entries past [`len`](Self::len) are zeros):
    /// for gathers that index it directly rather than copy a view of it.
    pub fn buffer(&self) -> Option<&Tensor<B, D>> {
        self.buf.as_ref()
    }

    /// Bytes of the buffer, capacity included.
    pub fn bytes(&self) -> usize {
        self.buf
            .as_ref()
            .map_or(0, |b| b.shape().num_elements() * b.dtype().size())
    }

    fn ranges(&self, dims: [usize; D], along: Range<usize>) -> [Range<usize>; D] {
        std::array::from_fn(|i| {
            if i == self.axis {
                along.clone()
            } else {
                0..dims[i]
            }
        })
    }
}
