//! Factor matrices laid out for the SIMD kernels while training runs.
//!
//! A model keeps its factors densely packed (`n_factors` floats a row), which
//! is what the file and the scoring index want. During training each row is
//! instead padded with zeros to a multiple of 16 floats and the matrix starts
//! on a 64-byte boundary, so every row starts on a cache line and the AVX-512
//! kernel runs full, aligned vectors with no tail. The padding stays zero
//! through SGD (a zero factor times anything, plus decay of zero, is zero), so
//! copying the rows back gives exactly the dense result.

/// One cache line of floats.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; 16]);

// SAFETY: `Line` is 16 `f32`s (64 bytes) with alignment 64: no padding bytes,
// and every bit pattern is a valid value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; it is also `Copy` and `'static`.
unsafe impl bytemuck::Pod for Line {}

const FLOATS_PER_LINE: usize = 16;

/// A row-major matrix whose rows are padded to whole cache lines.
pub(crate) struct PaddedMatrix {
    k: usize,
    stride: usize,
    lines: Vec<Line>,
}

impl PaddedMatrix {
    /// Copies `values` (rows of `k` floats) into a padded matrix.
    pub(crate) fn from_rows(values: &[f32], k: usize) -> Self {
        let stride = k.next_multiple_of(FLOATS_PER_LINE).max(FLOATS_PER_LINE);
        let rows = values.len().checked_div(k).unwrap_or(0);
        let mut matrix = PaddedMatrix {
            k,
            stride,
            lines: vec![Line([0.0; 16]); rows * stride / FLOATS_PER_LINE],
        };
        let padded = matrix.as_mut_slice();
        for (row, dense) in values.chunks_exact(k.max(1)).enumerate() {
            padded[row * stride..row * stride + k].copy_from_slice(dense);
        }
        matrix
    }

    /// Floats from one row start to the next.
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    /// All rows, padding included.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(&mut self.lines)
    }

    /// Copies the rows back into dense form.
    pub(crate) fn write_back(&self, values: &mut [f32]) {
        let padded: &[f32] = bytemuck::cast_slice(&self.lines);
        for (row, dense) in values.chunks_exact_mut(self.k.max(1)).enumerate() {
            dense.copy_from_slice(&padded[row * self.stride..row * self.stride + self.k]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_aligned_padded_and_round_trip() {
        let dense: Vec<f32> = (0..3 * 20).map(|i| i as f32).collect();
        let mut m = PaddedMatrix::from_rows(&dense, 20);
        assert_eq!(m.stride(), 32);
        let slice = m.as_mut_slice();
        assert_eq!(slice.as_ptr() as usize % 64, 0);
        assert_eq!(slice.len(), 3 * 32);
        assert_eq!(&slice[32..52], &dense[20..40]);
        assert!(slice[52..64].iter().all(|&x| x == 0.0));
        let mut back = vec![0.0; dense.len()];
        m.write_back(&mut back);
        assert_eq!(back, dense);
    }
}
