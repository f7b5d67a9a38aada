//! Dense `f64` linear algebra of the preconditioners: Gram–Schmidt, projection, Cholesky.

use crate::error::{Result, TunerError};

/// Modified Gram–Schmidt, in place (a vector that vanishes stays zero).
pub(super) fn orthonormalise(v: &mut [Vec<f64>]) {
    for k in 0..v.len() {
        let (done, rest) = v.split_at_mut(k);
        let x = &mut rest[0];
        for u in done.iter() {
            let c: f64 = x.iter().zip(u).map(|(a, b)| a * b).sum();
            x.iter_mut().zip(u).for_each(|(a, b)| *a -= c * b);
        }
        let n = x.iter().map(|y| y * y).sum::<f64>().sqrt();
        if n > 0.0 {
            x.iter_mut().for_each(|y| *y /= n);
        }
    }
}

/// `x` minus its projection on the orthonormal directions `dirs`.
pub(super) fn project_out(x: &mut [f64], dirs: &[Vec<f64>]) {
    for u in dirs {
        let c: f64 = x.iter().zip(u).map(|(a, b)| a * b).sum();
        x.iter_mut().zip(u).for_each(|(a, b)| *a -= c * b);
    }
}

pub(super) fn cholesky(mut a: Vec<f64>, d: usize) -> Result<Vec<f64>> {
    // In place: lower triangle of `a` holds the matrix, becomes L.
    for j in 0..d {
        let mut s = a[j * d + j];
        for k in 0..j {
            s -= a[j * d + k] * a[j * d + k];
        }
        if !(s > 0.0 && s.is_finite()) {
            return Err(TunerError::Config(
                "the TRAK Gram matrix is not positive definite".into(),
            ));
        }
        let ljj = s.sqrt();
        a[j * d + j] = ljj;
        for i in j + 1..d {
            let mut s = a[i * d + j];
            for k in 0..j {
                s -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = s / ljj;
        }
    }
    Ok(a)
}

pub(super) fn solve_cholesky(l: &[f64], d: usize, mut b: Vec<f64>) -> Vec<f64> {
    for i in 0..d {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * d + k] * b[k];
        }
        b[i] = s / l[i * d + i];
    }
    for i in (0..d).rev() {
        let mut s = b[i];
        for k in i + 1..d {
            s -= l[k * d + i] * b[k];
        }
        b[i] = s / l[i * d + i];
    }
    b
}
