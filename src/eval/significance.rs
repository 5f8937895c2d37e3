//! Whether one method beats another by more than chance: the mean paired difference of top-1 over seeds
//! with its standard error, and a percentile bootstrap interval over the test images (the same resample of
//! images for every seed, since every seed is scored on the same test split).
use crate::rng::SplitMix64;

/// Resamples of the bootstrap.
pub const RESAMPLES: usize = 2000;

/// `a` against `b` in top-1 points (`a - b`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Paired {
    pub seeds: usize,
    /// Mean over seeds of the difference in top-1 (percent points).
    pub mean: f64,
    /// Standard error of that mean over seeds (sample std / sqrt(seeds)); None for one seed.
    pub se: Option<f64>,
    /// The 2.5th and 97.5th percentiles of the seed-mean difference over image resamples.
    pub ci95: (f64, f64),
}

/// `a[s][i]` and `b[s][i]`: whether seed `s`'s model got test image `i` right. Every seed must score the
/// same images; `seed` fixes the resamples.
pub fn paired(a: &[Vec<bool>], b: &[Vec<bool>], resamples: usize, seed: u64) -> anyhow::Result<Paired> {
    let images = a.first().map_or(0, Vec::len);
    anyhow::ensure!(
        !a.is_empty() && a.len() == b.len() && images > 0 && a.iter().chain(b).all(|hits| hits.len() == images),
        "significance: both methods need the same seeds, each scored on the same non-empty test images"
    );
    let top1 = |hits: &[bool], pick: &mut dyn Iterator<Item = usize>| {
        100.0 * pick.filter(|&i| hits[i]).count() as f64 / images as f64
    };
    let differences: Vec<f64> =
        a.iter().zip(b).map(|(x, y)| top1(x, &mut (0..images)) - top1(y, &mut (0..images))).collect();
    let seeds = differences.len();
    let mean = differences.iter().sum::<f64>() / seeds as f64;
    let se = (seeds > 1).then(|| {
        let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (seeds - 1) as f64;
        (variance / seeds as f64).sqrt()
    });
    let mut rng = SplitMix64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let draw: Vec<usize> = (0..images).map(|_| rng.below(images as u64) as usize).collect();
            let per_seed =
                a.iter().zip(b).map(|(x, y)| top1(x, &mut draw.iter().copied()) - top1(y, &mut draw.iter().copied()));
            per_seed.sum::<f64>() / seeds as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * resamples as f64).floor() as usize).min(resamples - 1)];
    Ok(Paired { seeds, mean, se, ci95: (at(0.025), at(0.975)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_methods_differ_by_nothing() {
        let hits = vec![vec![true, false, true, true], vec![false, false, true, true]];
        let p = paired(&hits, &hits, 200, 1).unwrap();
        assert_eq!((p.seeds, p.mean, p.se, p.ci95), (2, 0.0, Some(0.0), (0.0, 0.0)));
    }

    #[test]
    fn mean_and_standard_error_over_seeds() {
        // 10 images; a beats b by 2, 4 and 6 images in three seeds: 20, 40, 60 points.
        let a: Vec<Vec<bool>> = (0..3).map(|_| vec![true; 10]).collect();
        let b: Vec<Vec<bool>> = [8, 6, 4].iter().map(|&n| (0..10).map(|i| i < n).collect()).collect();
        let p = paired(&a, &b, 500, 7).unwrap();
        assert!((p.mean - 40.0).abs() < 1e-9);
        // std of (20, 40, 60) is 20; se = 20 / sqrt(3).
        assert!((p.se.unwrap() - 20.0 / 3f64.sqrt()).abs() < 1e-9);
        assert!(p.ci95.0 <= p.mean && p.mean <= p.ci95.1 && p.ci95.0 > 0.0, "{p:?}");
        assert_eq!(paired(&a[..1], &b[..1], 10, 7).unwrap().se, None);
    }

    #[test]
    fn the_interval_matches_the_binomial_spread() {
        // One seed, a right on 60% and b on 40% of 2000 disjointly mixed images: the difference's std over
        // image resamples is sqrt((p_a + p_b - (p_a - p_b)^2) / n) = sqrt(0.96 / 2000) = 2.19 points, so
        // the 95% interval is about 20 +- 4.3.
        let n = 2000;
        let a = vec![(0..n).map(|i| i % 5 < 3).collect::<Vec<_>>()];
        let b = vec![(0..n).map(|i| i % 5 >= 3).collect::<Vec<_>>()];
        let p = paired(&a, &b, RESAMPLES, 3).unwrap();
        assert!((p.mean - 20.0).abs() < 1e-9);
        let half = (p.ci95.1 - p.ci95.0) / 2.0;
        assert!((half - 1.96 * 100.0 * (0.96f64 / n as f64).sqrt()).abs() < 0.5, "{p:?}");
    }

    #[test]
    fn mismatched_inputs_are_errors() {
        assert!(paired(&[vec![true]], &[], 10, 0).is_err());
        assert!(paired(&[vec![true]], &[vec![true, false]], 10, 0).is_err());
        assert!(paired(&[vec![]], &[vec![]], 10, 0).is_err());
    }
}
