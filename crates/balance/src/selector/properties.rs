//! Property tests every selector must pass (DESIGN.md, "Scheduling").

use proptest::prelude::*;

use super::{Algorithm, LeastConn, PickContext, Selector, SelectorConfig};
use crate::backend::{AdminState, Backend, BackendId, BackendSet};
use crate::load::InFlightGuard;

/// One generated backend: weight, admin state, health, requests in flight.
#[derive(Clone, Debug)]
struct Spec {
    weight: u32,
    admin: AdminState,
    healthy: bool,
    in_flight: u32,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u32..6,
        prop_oneof![
            6 => Just(AdminState::Enabled),
            1 => Just(AdminState::Draining),
            1 => Just(AdminState::Disabled),
        ],
        prop::bool::weighted(0.8),
        0u32..8,
    )
        .prop_map(|(weight, admin, healthy, in_flight)| Spec {
            weight,
            admin,
            healthy,
            in_flight,
        })
}

/// Builds the set and the guards that hold its in-flight counts.
fn build(specs: &[Spec]) -> (BackendSet, Vec<InFlightGuard>) {
    let mut guards = Vec::new();
    let backends = specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut b = Backend::new(format!("10.0.0.{i}:80"), s.weight);
            b.admin = s.admin;
            b.state.set_healthy(s.healthy);
            for _ in 0..s.in_flight {
                guards.push(b.state.load.start());
            }
            b
        })
        .collect();
    (BackendSet::new(backends), guards)
}

fn picks(
    alg: Algorithm,
    set: &BackendSet,
    seed: u64,
    n: usize,
    key: bool,
) -> Vec<Option<BackendId>> {
    let selector = alg.build(set, &SelectorConfig::default());
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut keys = fastrand::Rng::with_seed(seed ^ 0x5eed);
    (0..n)
        .map(|_| {
            let mut ctx = PickContext::new(1, &mut rng);
            ctx.key = key.then(|| keys.u64(..));
            selector.pick(set, &mut ctx)
        })
        .collect()
}

#[test]
fn every_selector_returns_none_on_an_empty_set() {
    let set = BackendSet::default();
    for &alg in Algorithm::ALL {
        assert_eq!(picks(alg, &set, 1, 3, false), [None, None, None], "{alg}");
        assert_eq!(picks(alg, &set, 1, 3, true), [None, None, None], "{alg}");
    }
}

#[test]
fn every_selector_returns_none_when_all_are_unhealthy() {
    let (set, _guards) = build(&[
        Spec {
            weight: 1,
            admin: AdminState::Enabled,
            healthy: false,
            in_flight: 0,
        },
        Spec {
            weight: 1,
            admin: AdminState::Draining,
            healthy: true,
            in_flight: 0,
        },
        Spec {
            weight: 0,
            admin: AdminState::Enabled,
            healthy: true,
            in_flight: 0,
        },
    ]);
    for &alg in Algorithm::ALL {
        assert!(
            picks(alg, &set, 1, 5, false).iter().all(Option::is_none),
            "{alg}"
        );
    }
}

#[test]
fn algorithm_names_round_trip_in_documentation_order() {
    assert_eq!(Algorithm::ALL.len(), Algorithm::NAMES.len());
    for (alg, name) in Algorithm::ALL.iter().zip(Algorithm::NAMES) {
        assert_eq!(alg.name(), *name);
        assert_eq!(name.parse::<Algorithm>(), Ok(*alg));
        assert_eq!(
            alg.build(&BackendSet::default(), &SelectorConfig::default())
                .name(),
            *name
        );
    }
    assert!("nope".parse::<Algorithm>().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn selectors_pick_only_candidates(
        specs in prop::collection::vec(spec(), 0..12),
        exclude in prop::collection::vec(0u32..12, 0..3),
        seed in any::<u64>(),
        key in any::<bool>(),
    ) {
        let (set, _guards) = build(&specs);
        let exclude: Vec<BackendId> = exclude.into_iter().map(BackendId).collect();
        let any_candidate = (0..set.len())
            .any(|i| set.backends()[i].is_usable() && !exclude.contains(&BackendId(i as u32)));
        for &alg in Algorithm::ALL {
            let selector = alg.build(&set, &SelectorConfig::default());
            let mut rng = fastrand::Rng::with_seed(seed);
            for k in 0..50u64 {
                let mut ctx = PickContext::new(1, &mut rng);
                ctx.exclude = &exclude;
                ctx.key = key.then_some(k.wrapping_mul(seed));
                let picked = selector.pick(&set, &mut ctx);
                match picked {
                    Some(id) => prop_assert!(ctx.is_candidate(&set, id), "{} picked {:?}", alg, id),
                    None => prop_assert!(!any_candidate, "{} found nothing", alg),
                }
            }
        }
    }

    #[test]
    fn selectors_are_deterministic_under_a_seed(
        specs in prop::collection::vec(spec(), 1..12),
        seed in any::<u64>(),
        key in any::<bool>(),
    ) {
        let (set, _guards) = build(&specs);
        for &alg in Algorithm::ALL {
            prop_assert_eq!(picks(alg, &set, seed, 40, key), picks(alg, &set, seed, 40, key), "{}", alg);
        }
    }

    #[test]
    fn least_conn_picks_a_minimum_of_in_flight_per_weight(
        specs in prop::collection::vec(spec(), 1..12),
        seed in any::<u64>(),
    ) {
        let (set, _guards) = build(&specs);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut ctx = PickContext::new(1, &mut rng);
        if let Some(id) = LeastConn.pick(&set, &mut ctx) {
            let best = (0..set.len() as u32)
                .map(BackendId)
                .filter(|&b| ctx.is_candidate(&set, b))
                .map(|b| LeastConn::score(&set, b, 1))
                .fold(f64::INFINITY, f64::min);
            prop_assert_eq!(LeastConn::score(&set, id, 1), best);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn weighted_selectors_match_weight_shares_within_two_percent(
        weights in prop::collection::vec(1u32..10, 1..8),
        seed in any::<u64>(),
    ) {
        let set = BackendSet::new(
            weights.iter().enumerate().map(|(i, &w)| Backend::new(format!("b{i}"), w)).collect(),
        );
        let total: u32 = weights.iter().sum();
        for alg in [Algorithm::WeightedRoundRobin, Algorithm::Random] {
            let mut counts = vec![0u32; weights.len()];
            for id in picks(alg, &set, seed, 100_000, false) {
                counts[id.unwrap().index()] += 1;
            }
            for (i, &w) in weights.iter().enumerate() {
                let share = f64::from(counts[i]) / 100_000.0;
                let expected = f64::from(w) / f64::from(total);
                prop_assert!((share - expected).abs() <= 0.02, "{} backend {}: {} vs {}", alg, i, share, expected);
            }
        }
    }
}

#[test]
fn slow_start_lowers_a_ramping_backends_share() {
    let set = BackendSet::new(vec![Backend::new("a", 10), Backend::new("b", 10)])
        .with_slow_start(10 * crate::SECOND);
    set.get(BackendId(1)).state.start_ramp(1);
    // At the start of the ramp b's effective weight is 1 against a's 10, so
    // b should get about 1/11 of the picks.
    for alg in [Algorithm::WeightedRoundRobin, Algorithm::Random] {
        let selector = alg.build(&set, &SelectorConfig::default());
        let mut rng = fastrand::Rng::with_seed(3);
        let mut b = 0;
        for _ in 0..10_000 {
            let mut ctx = PickContext::new(1, &mut rng);
            b += usize::from(selector.pick(&set, &mut ctx) == Some(BackendId(1)));
        }
        assert!(b.abs_diff(909) < 150, "{alg}: {b}");
    }
}
