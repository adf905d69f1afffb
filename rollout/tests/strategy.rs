#![allow(clippy::unwrap_used)]
//! Strategy parsing and validation, node order and wave arithmetic.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use seccomp_rollout::Error;
use seccomp_rollout::selector::Labels;
use seccomp_rollout::strategy::{
    DEFAULT_MAX_UNAVAILABLE, DEFAULT_WAVES, MaxUnavailable, Pause, Strategy as RolloutStrategy,
    WaveSpec, default_waves, format_waves, order_nodes, parse_waves, parse_waves_list, plan,
    validate_waves, wave_of,
};

use WaveSpec::{Count, Percent};

/// `parse_waves(text)` fails with a bad-input error whose message contains `expected`.
fn check_wave_error(text: &str, expected: &str) {
    match parse_waves(text) {
        Err(Error::Invalid(message)) => assert!(
            message.contains(expected),
            "{text:?}: {message:?} does not contain {expected:?}"
        ),
        other => panic!("{text:?}: expected an invalid-input error, got {other:?}"),
    }
}

fn check_max_unavailable_error(text: &str, expected: &str) {
    match MaxUnavailable::parse(text) {
        Err(Error::Invalid(message)) => assert!(
            message.contains(expected),
            "{text:?}: {message:?} does not contain {expected:?}"
        ),
        other => panic!("{text:?}: expected an invalid-input error, got {other:?}"),
    }
}

fn node(name: &str, labels: &[(&str, &str)]) -> (String, Labels) {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

// ---- defaults ----

#[test]
fn defaults() {
    assert_eq!(default_waves(), vec![Count(1), Percent(25), Percent(100)]);
    assert_eq!(parse_waves(DEFAULT_WAVES).unwrap(), default_waves());
    assert_eq!(format_waves(&default_waves()), "1,25%,100%");
    assert_eq!(MaxUnavailable::default(), MaxUnavailable::Percent(25));
    assert_eq!(
        MaxUnavailable::parse(DEFAULT_MAX_UNAVAILABLE).unwrap(),
        MaxUnavailable::default()
    );
    let strategy = RolloutStrategy::default();
    assert_eq!(strategy.waves, default_waves());
    assert_eq!(strategy.max_unavailable, MaxUnavailable::Percent(25));
    assert_eq!(strategy.failure_threshold, 0);
    assert_eq!(strategy.progress_deadline, Duration::from_secs(300));
    assert_eq!(strategy.pause, Pause::None);
    assert!(strategy.auto_rollback);
    strategy.validate().unwrap();
}

// ---- wave parsing ----

#[test]
fn parses_waves() {
    assert_eq!(parse_waves("100%").unwrap(), vec![Percent(100)]);
    assert_eq!(
        parse_waves("1, 5 ,10%,50%,100%").unwrap(),
        vec![Count(1), Count(5), Percent(10), Percent(50), Percent(100)]
    );
    // A count after a percentage is fine at parse time: it is resolved by `plan`.
    assert_eq!(
        parse_waves("10%,3,100%").unwrap(),
        vec![Percent(10), Count(3), Percent(100)]
    );
    let list = vec!["1".to_owned(), "25%".to_owned(), "100%".to_owned()];
    assert_eq!(parse_waves_list(&list).unwrap(), default_waves());
}

#[test]
fn wave_errors() {
    check_wave_error("", "waves: empty list");
    check_wave_error("  ", "waves: empty list");
    check_wave_error("1,,100%", "waves: item 2 is empty");
    check_wave_error("1,100%,", "waves: item 3 is empty");
    check_wave_error("0,100%", "wave \"0\" reaches no node");
    check_wave_error("0%,100%", "wave \"0%\" reaches no node");
    check_wave_error("1,101%", "wave \"101%\" is over 100%");
    check_wave_error("1,1000%", "wave \"1000%\" is over 100%");
    check_wave_error("abc,100%", "wave \"abc\" is not a node count");
    check_wave_error("-1,100%", "wave \"-1\" is not a node count");
    check_wave_error("+1,100%", "wave \"+1\" is not a node count");
    check_wave_error("%,100%", "wave \"%\" is not a node count");
    check_wave_error("1.5,100%", "wave \"1.5\" is not a node count");
    check_wave_error("99999999999,100%", "wave \"99999999999\" is too large");
    check_wave_error(
        "12.5%,100%",
        "wave \"12.5%\": fractional percentages are not supported",
    );
    check_wave_error(
        "50%,25%,100%",
        "wave \"25%\" does not increase on the earlier wave \"50%\"",
    );
    check_wave_error(
        "25%,25%,100%",
        "wave \"25%\" does not increase on the earlier wave \"25%\"",
    );
    check_wave_error(
        "5,10%,3,100%",
        "wave \"3\" does not increase on the earlier wave \"5\"",
    );
    check_wave_error(
        "100%,100%",
        "wave \"100%\" does not increase on the earlier wave \"100%\"",
    );
    check_wave_error("1,25%", "the last wave must be \"100%\", not \"25%\"");
    check_wave_error("1,25%,100%,5", "the last wave must be \"100%\", not \"5\"");
    check_wave_error("10", "the last wave must be \"100%\", not \"10\"");

    match parse_waves_list(&[]) {
        Err(Error::Invalid(message)) => assert_eq!(message, "waves: empty list"),
        other => panic!("expected an invalid-input error, got {other:?}"),
    }
    match parse_waves_list(&["1".to_owned(), String::new(), "100%".to_owned()]) {
        Err(Error::Invalid(message)) => assert_eq!(message, "waves: item 2 is empty"),
        other => panic!("expected an invalid-input error, got {other:?}"),
    }
    // Hand-built lists go through the same checks.
    assert!(validate_waves(&[]).is_err());
    assert!(validate_waves(&[Percent(200)]).is_err());
    assert!(validate_waves(&[Count(0), Percent(100)]).is_err());
}

// ---- max_unavailable ----

#[test]
fn max_unavailable() {
    assert_eq!(
        MaxUnavailable::parse("2").unwrap(),
        MaxUnavailable::Count(2)
    );
    assert_eq!(
        MaxUnavailable::parse(" 10% ").unwrap(),
        MaxUnavailable::Percent(10)
    );
    assert_eq!(MaxUnavailable::Percent(10).to_string(), "10%");
    assert_eq!(MaxUnavailable::Count(2).to_string(), "2");

    // Rounded up, at least 1, at most the fleet.
    assert_eq!(MaxUnavailable::Percent(25).resolve(10), 3);
    assert_eq!(MaxUnavailable::Percent(25).resolve(8), 2);
    assert_eq!(MaxUnavailable::Percent(1).resolve(3), 1);
    assert_eq!(MaxUnavailable::Percent(25).resolve(0), 1);
    assert_eq!(MaxUnavailable::Count(2).resolve(10), 2);
    assert_eq!(MaxUnavailable::Count(20).resolve(10), 10);
    assert_eq!(MaxUnavailable::Count(5).resolve(0), 1);
    assert_eq!(MaxUnavailable::Percent(100).resolve(7), 7);
}

#[test]
fn max_unavailable_errors() {
    check_max_unavailable_error("", "max_unavailable is empty");
    check_max_unavailable_error("0", "max_unavailable \"0\" would stall every rollout");
    check_max_unavailable_error("0%", "max_unavailable \"0%\" would stall every rollout");
    check_max_unavailable_error("101%", "max_unavailable \"101%\" is over 100%");
    check_max_unavailable_error("300%", "max_unavailable \"300%\" is over 100%");
    check_max_unavailable_error("x", "max_unavailable \"x\" is not a count");
    check_max_unavailable_error(
        "2.5%",
        "max_unavailable \"2.5%\": fractional percentages are not supported",
    );
    check_max_unavailable_error(
        "99999999999",
        "max_unavailable \"99999999999\" is too large",
    );
}

// ---- strategy ----

#[test]
fn strategy_validation() {
    let ok = RolloutStrategy {
        pause: Pause::Duration(Duration::from_secs(30)),
        ..RolloutStrategy::default()
    };
    ok.validate().unwrap();
    RolloutStrategy {
        pause: Pause::Manual,
        ..RolloutStrategy::default()
    }
    .validate()
    .unwrap();

    let cases = [
        (
            RolloutStrategy {
                waves: vec![],
                ..RolloutStrategy::default()
            },
            "waves: empty list",
        ),
        (
            RolloutStrategy {
                waves: vec![Count(1), Percent(50)],
                ..RolloutStrategy::default()
            },
            "the last wave must be \"100%\"",
        ),
        (
            RolloutStrategy {
                max_unavailable: MaxUnavailable::Count(0),
                ..RolloutStrategy::default()
            },
            "max_unavailable \"0\" would stall",
        ),
        (
            RolloutStrategy {
                max_unavailable: MaxUnavailable::Percent(150),
                ..RolloutStrategy::default()
            },
            "max_unavailable \"150%\" is over 100%",
        ),
        (
            RolloutStrategy {
                progress_deadline: Duration::ZERO,
                ..RolloutStrategy::default()
            },
            "progress_deadline must be at least 1ms",
        ),
        (
            RolloutStrategy {
                progress_deadline: Duration::from_micros(500),
                ..RolloutStrategy::default()
            },
            "progress_deadline must be at least 1ms",
        ),
        (
            RolloutStrategy {
                pause: Pause::Duration(Duration::ZERO),
                ..RolloutStrategy::default()
            },
            "pause duration must be at least 1ms",
        ),
        (
            RolloutStrategy {
                pause: Pause::Duration(Duration::from_nanos(1)),
                ..RolloutStrategy::default()
            },
            "pause duration must be at least 1ms",
        ),
    ];
    for (strategy, expected) in cases {
        match strategy.validate() {
            Err(Error::Invalid(message)) => {
                assert!(message.contains(expected), "{message:?} vs {expected:?}");
            }
            other => panic!("{strategy:?}: expected an invalid-input error, got {other:?}"),
        }
    }
}

#[test]
fn stored_strategies_always_load() {
    // Written by hand (or by an older version): out-of-range durations load clamped, so one
    // record can never make the distributor's database unreadable.
    let stored = r#"{"waves":"1,100%","max_unavailable":"1","failure_threshold":0,
        "progress_deadline_ms":0,"pause_ms":0,"pause_manual":false,"auto_rollback":true}"#;
    let s: RolloutStrategy = serde_json::from_str(stored).unwrap();
    assert_eq!(s.progress_deadline, Duration::from_millis(1));
    assert_eq!(s.pause, Pause::Duration(Duration::from_millis(1)));
    let again: RolloutStrategy = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(again, s);
}

// ---- plan ----

#[test]
fn plan_examples() {
    let default = default_waves();
    assert_eq!(plan(100, &default), vec![1, 25, 100]);
    assert_eq!(plan(10, &default), vec![1, 3, 10]);
    assert_eq!(plan(3, &default), vec![1, 1, 3]);
    // Equal sizes are kept as empty waves, never collapsed.
    assert_eq!(plan(1, &default), vec![1, 1, 1]);
    assert_eq!(plan(0, &default), vec![0, 0, 0]);
    // A count after a larger percentage reaches no new node.
    assert_eq!(
        plan(100, &[Percent(25), Count(2), Percent(100)]),
        vec![25, 25, 100]
    );
    // A count larger than the fleet stops at the fleet.
    assert_eq!(plan(4, &[Count(10), Percent(100)]), vec![4, 4]);
    assert_eq!(RolloutStrategy::default().plan(10), vec![1, 3, 10]);
}

#[test]
fn wave_of_examples() {
    let cumulative = plan(10, &default_waves()); // 1, 3, 10
    let waves: Vec<Option<usize>> = (0..11).map(|i| wave_of(&cumulative, i)).collect();
    assert_eq!(
        waves,
        vec![
            Some(0),
            Some(1),
            Some(1),
            Some(2),
            Some(2),
            Some(2),
            Some(2),
            Some(2),
            Some(2),
            Some(2),
            None
        ]
    );
    // Empty waves are skipped: with 1 node, wave 0 takes it.
    assert_eq!(wave_of(&[1, 1, 1], 0), Some(0));
    assert_eq!(wave_of(&[0, 0, 2], 1), Some(2));
    assert_eq!(wave_of(&[], 0), None);
}

// ---- node order ----

#[test]
fn order_examples() {
    let nodes = vec![
        node("c", &[("topology.kubernetes.io/zone", "b")]),
        node("a", &[("zone", "b")]),
        node("z", &[]),
        node("b", &[("topology.kubernetes.io/zone", "a"), ("zone", "z")]),
        node("y", &[("zone", "")]),
        node("d", &[("topology.kubernetes.io/zone", "b")]),
        node("e", &[("zone", "a")]),
    ];
    // Zone a: b, e; zone b: a, c, d; then no zone: y, z.
    assert_eq!(order_nodes(&nodes), vec!["b", "e", "a", "c", "d", "y", "z"]);
    assert!(order_nodes(&[]).is_empty());
}

// ---- properties ----

fn wave_strategy() -> impl Strategy<Value = WaveSpec> {
    prop_oneof![(1u32..200).prop_map(Count), (1u8..=100).prop_map(Percent),]
}

/// Any valid wave list: counts and percentages, each strictly increasing, ending at 100%.
fn waves_strategy() -> impl Strategy<Value = Vec<WaveSpec>> {
    proptest::collection::vec(wave_strategy(), 0..6).prop_map(|raw| {
        let mut waves = Vec::new();
        let (mut count, mut percent) = (0u32, 0u8);
        for wave in raw {
            match wave {
                Count(n) if n > count => {
                    count = n;
                    waves.push(wave);
                }
                Percent(p) if p > percent && p < 100 => {
                    percent = p;
                    waves.push(wave);
                }
                _ => {}
            }
        }
        waves.push(Percent(100));
        waves
    })
}

fn nodes_strategy() -> impl Strategy<Value = Vec<(String, Labels)>> {
    let labels = proptest::collection::btree_map(
        proptest::sample::select(vec!["topology.kubernetes.io/zone", "zone", "other"])
            .prop_map(str::to_owned),
        proptest::sample::select(vec!["", "a", "b", "c"]).prop_map(str::to_owned),
        0..3,
    );
    // Unique names, as in a cluster.
    proptest::collection::btree_map("[a-z]{1,4}", labels, 0..30)
        .prop_map(|nodes: BTreeMap<String, Labels>| nodes.into_iter().collect())
}

/// `ceil(total * p / 100)`, the reference the plan is checked against.
fn share(total: usize, p: u8) -> usize {
    (total * usize::from(p)).div_ceil(100)
}

proptest! {
    #[test]
    fn every_node_is_targeted_exactly_once(total in 0usize..500, waves in waves_strategy()) {
        let cumulative = plan(total, &waves);
        prop_assert_eq!(cumulative.len(), waves.len());
        let mut per_wave = vec![0usize; waves.len()];
        for i in 0..total {
            let wave = wave_of(&cumulative, i);
            prop_assert!(wave.is_some(), "node {} is never targeted", i);
            per_wave[wave.unwrap()] += 1;
        }
        prop_assert_eq!(wave_of(&cumulative, total), None);
        // Each wave targets exactly its increment, so no node is targeted twice.
        let mut before = 0;
        for (w, &reached) in cumulative.iter().enumerate() {
            prop_assert_eq!(per_wave[w], reached - before);
            before = reached;
        }
    }

    #[test]
    fn cumulative_sizes_never_decrease_and_end_at_total(
        total in 0usize..5000,
        waves in waves_strategy(),
    ) {
        let cumulative = plan(total, &waves);
        prop_assert!(cumulative.windows(2).all(|w| w[0] <= w[1]), "{:?}", cumulative);
        prop_assert_eq!(cumulative.last().copied(), Some(total));
    }

    #[test]
    fn waves_never_exceed_their_share(total in 0usize..5000, waves in waves_strategy()) {
        let cumulative = plan(total, &waves);
        let mut before = 0;
        for (wave, &reached) in waves.iter().zip(&cumulative) {
            let bound = match *wave {
                Percent(p) => share(total, p),
                Count(n) => (n as usize).min(total),
            };
            // A wave either adds nothing (an earlier wave already went further) or stops
            // exactly at its own bound.
            if reached > before {
                prop_assert_eq!(reached, bound, "{} on {} nodes", wave, total);
            } else {
                prop_assert!(before >= bound);
            }
            before = reached;
        }
        // Percentage-only lists never go past any percentage's share.
        let percents: Vec<WaveSpec> =
            waves.iter().copied().filter(|w| matches!(w, Percent(_))).collect();
        for (wave, reached) in percents.iter().zip(plan(total, &percents)) {
            if let Percent(p) = *wave {
                prop_assert!(reached <= share(total, p));
            }
        }
    }

    #[test]
    fn order_is_a_stable_permutation(
        nodes in nodes_strategy(),
        seed in any::<u64>(),
    ) {
        let ordered = order_nodes(&nodes);
        let mut names: Vec<String> = nodes.iter().map(|(n, _)| n.clone()).collect();
        let mut sorted = ordered.clone();
        names.sort();
        sorted.sort();
        prop_assert_eq!(&sorted, &names);

        // Any other input order gives the same output.
        let mut shuffled = nodes.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        shuffled.reverse();
        prop_assert_eq!(order_nodes(&shuffled), ordered);
    }

    #[test]
    fn waves_round_trip(waves in waves_strategy()) {
        let text = format_waves(&waves);
        prop_assert_eq!(parse_waves(&text).unwrap(), waves.clone());
        let items: Vec<String> = waves.iter().map(ToString::to_string).collect();
        prop_assert_eq!(parse_waves_list(&items).unwrap(), waves);
    }

    #[test]
    fn max_unavailable_round_trips_and_resolves(
        value in prop_oneof![
            (1u32..10_000).prop_map(MaxUnavailable::Count),
            (1u8..=100).prop_map(MaxUnavailable::Percent),
        ],
        total in 0usize..5000,
    ) {
        prop_assert_eq!(MaxUnavailable::parse(&value.to_string()).unwrap(), value);
        let n = value.resolve(total);
        prop_assert!(n >= 1);
        prop_assert!(n <= total.max(1));
    }
}
