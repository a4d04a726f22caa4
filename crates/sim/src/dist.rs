//! Random variates: service times and request keys.
//!
//! Service times are drawn in nanoseconds of *work at speed 1*; a server
//! running at speed `s` takes `work / s`. Every sampler takes the RNG as an
//! argument so a seed fixes the whole run.

use fastrand::Rng;

/// A service-time distribution (work per request at speed 1, in nanoseconds).
#[derive(Clone, Debug, PartialEq)]
pub enum ServiceDist {
    /// Always the same value.
    Constant {
        /// The service time.
        value: f64,
    },
    /// Exponential with the given mean (CV 1; the M/M/k textbook case).
    Exponential {
        /// Mean service time.
        mean: f64,
    },
    /// Lognormal with the given mean and coefficient of variation.
    Lognormal {
        /// Mean service time.
        mean: f64,
        /// Standard deviation divided by the mean.
        cv: f64,
    },
    /// Two constant values: `long` with probability `p_long`, else `short`.
    Bimodal {
        /// The common, short service time.
        short: f64,
        /// The rare, long service time.
        long: f64,
        /// Probability of the long one.
        p_long: f64,
    },
    /// Pareto with shape `alpha`, truncated to `[min, max]`.
    BoundedPareto {
        /// Tail index; 1.1–1.5 is typical of heavy-tailed request costs.
        alpha: f64,
        /// Smallest value.
        min: f64,
        /// Largest value.
        max: f64,
    },
}

impl ServiceDist {
    /// The distribution's mean in nanoseconds.
    pub fn mean(&self) -> f64 {
        match *self {
            ServiceDist::Constant { value } => value,
            ServiceDist::Exponential { mean } | ServiceDist::Lognormal { mean, .. } => mean,
            ServiceDist::Bimodal {
                short,
                long,
                p_long,
            } => short * (1.0 - p_long) + long * p_long,
            ServiceDist::BoundedPareto { alpha, min, max } => {
                let ratio = (min / max).powf(alpha);
                if (alpha - 1.0).abs() < 1e-9 {
                    min * (max / min).ln() / (1.0 - ratio)
                } else {
                    min.powf(alpha) / (1.0 - ratio) * alpha / (alpha - 1.0)
                        * (min.powf(1.0 - alpha) - max.powf(1.0 - alpha))
                }
            }
        }
    }

    /// Draws one service time in nanoseconds of work.
    pub fn sample(&self, rng: &mut Rng) -> f64 {
        match *self {
            ServiceDist::Constant { value } => value,
            ServiceDist::Exponential { mean } => exponential(rng, mean),
            ServiceDist::Lognormal { mean, cv } => {
                let sigma2 = (1.0 + cv * cv).ln();
                let mu = mean.ln() - sigma2 / 2.0;
                (mu + sigma2.sqrt() * standard_normal(rng)).exp()
            }
            ServiceDist::Bimodal {
                short,
                long,
                p_long,
            } => {
                if rng.f64() < p_long {
                    long
                } else {
                    short
                }
            }
            ServiceDist::BoundedPareto { alpha, min, max } => {
                let u = rng.f64();
                let ratio = (min / max).powf(alpha);
                min / (1.0 - u * (1.0 - ratio)).powf(1.0 / alpha)
            }
        }
    }
}

/// An exponential variate with the given mean.
#[inline]
pub fn exponential(rng: &mut Rng, mean: f64) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    -mean * (1.0 - rng.f64()).ln()
}

/// A standard normal variate (Box–Muller; one of the pair is discarded to
/// keep the sampler stateless).
pub fn standard_normal(rng: &mut Rng) -> f64 {
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Mixes a key rank into a well-spread 64-bit hash (SplitMix64's finaliser),
/// so consecutive ranks land far apart on a hash ring.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a over bytes: a stable hash for string keys read from traces.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How request keys (for affinity hashing and caches) are drawn.
#[derive(Clone, Debug)]
pub enum KeyDist {
    /// Every key equally likely among `count`.
    Uniform {
        /// Number of distinct keys.
        count: u64,
    },
    /// Zipf: key of rank `k` (1-based) has probability ∝ `k^-s`.
    Zipf {
        /// Cumulative weights, one per rank.
        cumulative: Vec<f64>,
    },
}

impl KeyDist {
    /// A Zipf distribution over `count` keys with exponent `s`.
    pub fn zipf(count: u64, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=count)
            .map(|k| {
                total += (k as f64).powf(-s);
                total
            })
            .collect();
        KeyDist::Zipf { cumulative }
    }

    /// Draws a key rank (0-based; 0 is the hottest key under Zipf).
    pub fn sample_rank(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyDist::Uniform { count } => rng.u64(0..*count),
            KeyDist::Zipf { cumulative } => {
                let total = *cumulative.last().expect("zipf over at least one key");
                let x = rng.f64() * total;
                cumulative
                    .partition_point(|&c| c <= x)
                    .min(cumulative.len() - 1) as u64
            }
        }
    }

    /// Draws a key and returns its hash.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        mix64(self.sample_rank(rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_mean(d: &ServiceDist, n: usize) -> f64 {
        let mut rng = Rng::with_seed(7);
        (0..n).map(|_| d.sample(&mut rng)).sum::<f64>() / n as f64
    }

    #[test]
    fn service_samples_match_their_stated_means() {
        let dists = [
            ServiceDist::Exponential { mean: 1e6 },
            ServiceDist::Lognormal { mean: 1e6, cv: 1.0 },
            ServiceDist::Bimodal {
                short: 0.5e6,
                long: 25.5e6,
                p_long: 0.02,
            },
            ServiceDist::BoundedPareto {
                alpha: 1.5,
                min: 0.3e6,
                max: 100e6,
            },
        ];
        for d in &dists {
            let m = sample_mean(d, 400_000);
            let rel = (m - d.mean()).abs() / d.mean();
            assert!(rel < 0.03, "{d:?}: sample mean {m} vs {}", d.mean());
        }
    }

    #[test]
    fn zipf_makes_rank_zero_the_hottest() {
        let keys = KeyDist::zipf(1000, 1.1);
        let mut rng = Rng::with_seed(3);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            let r = keys.sample_rank(&mut rng) as usize;
            if r < 3 {
                counts[r] += 1;
            }
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[2], "{counts:?}");
        // P(rank 0) = 1 / H(1000, 1.1) ≈ 0.179.
        let p0 = counts[0] as f64 / 100_000.0;
        assert!((p0 - 0.179).abs() < 0.01, "{p0}");
    }
}
