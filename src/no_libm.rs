//! Keeps glibc's `libm.so.6` out of the process: the one function the program needs from it.
//!
//! Only `pow` is linked from libm (tokio's multi-thread scheduler and prometheus-client's bucket
//! boundaries call `f64::powf`), yet loading the library costs a glibc build about 0.4 MiB of
//! resident memory: with immediate binding, the dynamic loader runs the CPU-feature resolvers
//! spread over all of libm's code. Defined here, `pow` resolves inside the binary and the
//! linker (`--as-needed`) drops libm. The static (musl) build links musl's `pow` as before.

/// C's `pow`, computed by the `libm` crate (the port of musl's, which the static build uses).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the exported symbol below: it only has to keep C's signature and meaning
#[unsafe(no_mangle)]
pub(crate) extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use proptest::prelude::*;

    use super::pow;

    #[test]
    fn pow_keeps_the_c_meaning_for_the_edge_cases() {
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(0.5, -1.0), 2.0);
        assert_eq!(pow(f64::NAN, 0.0), 1.0, "anything to the power 0 is 1");
        assert_eq!(pow(1.0, f64::NAN), 1.0, "1 to any power is 1");
        assert!(
            pow(-8.0, 1.0 / 3.0).is_nan(),
            "a negative base needs an integer power"
        );
        assert_eq!(pow(0.0, -1.0), f64::INFINITY);
        assert_eq!(pow(10.0, 400.0), f64::INFINITY, "an overflow is infinite");
    }

    proptest! {
        /// Integer powers agree with `powi` (repeated multiplication, not `pow`), and a power
        /// of 0.5 with the square root, within rounding.
        #[test]
        fn pow_agrees_with_powi_and_sqrt(base in 0.001f64..1000.0, exponent in -20i32..20) {
            let expected = base.powi(exponent);
            let got = pow(base, f64::from(exponent));
            prop_assert!((got - expected).abs() <= expected.abs() * 1e-12, "{got} vs {expected}");
            let root = pow(base, 0.5);
            prop_assert!((root - base.sqrt()).abs() <= base.sqrt() * 1e-15, "{root}");
        }
    }
}
