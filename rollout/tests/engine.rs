//! Property tests of the rollout engine's decisions (`engine::step`) over simulated fleets:
//! nodes are targeted in the stable zone-then-name order, each exactly once; a wave never
//! reaches past its cumulative share; Applying + Failed nodes never exceed
//! `max_unavailable`; healthy fleets complete; and a bad node fails the rollout in the wave
//! that reaches it, which rolls back without having reached any later node.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use seccomp_rollout::engine::{Live, step};
use seccomp_rollout::nci::{self, ProfileRef, Target};
use seccomp_rollout::node::NodeState;
use seccomp_rollout::record::{Content, RolloutRecord, RolloutState};
use seccomp_rollout::strategy::{MaxUnavailable, Pause, Strategy as Plan, WaveSpec, order_nodes};

fn record(strategy: Plan) -> RolloutRecord {
    let nci = nci::render(
        ProfileRef {
            name: "web",
            version: 2,
            content: b"{}",
        },
        &Target::new(BTreeMap::new()),
        None,
        Some("r2"),
    )
    .unwrap();
    let content = Content {
        profile: "web".into(),
        version: 2,
        digest: "sha256:x".into(),
        nci,
    };
    let mut r = RolloutRecord::new("r2".into(), content, strategy, "test", 0);
    r.revision = 2;
    r.stable_id = Some("r1".into());
    r.stable_version = Some(1);
    r
}

/// Valid wave lists: strictly increasing counts or percentages, ending with 100%.
fn waves() -> impl Strategy<Value = Vec<WaveSpec>> {
    (
        proptest::collection::btree_set(1u32..30, 0..3),
        proptest::collection::btree_set(1u8..100, 0..3),
        any::<bool>(),
    )
        .prop_map(|(counts, percents, counts_first)| {
            let counts = counts.into_iter().map(WaveSpec::Count);
            let percents = percents.into_iter().map(WaveSpec::Percent);
            let mut waves: Vec<WaveSpec> = if counts_first {
                counts.chain(percents).collect()
            } else {
                percents.chain(counts).collect()
            };
            waves.push(WaveSpec::Percent(100));
            waves
        })
}

struct Sim {
    names: Vec<(String, BTreeMap<String, String>)>,
    state: BTreeMap<String, NodeState>,
}

impl Sim {
    fn new(n: usize) -> Self {
        let names = (0..n)
            .map(|i| {
                let zone = ["b", "a", "c"][i % 3];
                (
                    format!("node-{i:02}"),
                    [("zone".to_owned(), zone.to_owned())].into(),
                )
            })
            .collect();
        Sim {
            names,
            state: BTreeMap::new(),
        }
    }

    fn live(&self) -> Vec<Live> {
        self.names
            .iter()
            .map(|(name, labels)| Live {
                name: name.clone(),
                labels: labels.clone().into(),
                // Untargeted nodes have the stable version: Applied as far as the hub knows.
                state: *self.state.get(name).unwrap_or(&NodeState::Applied),
                message: String::new(),
                removal: false,
            })
            .collect()
    }
}

fn strategy(waves: Vec<WaveSpec>, max_unavailable: u32, failure_threshold: u32) -> Plan {
    Plan {
        waves,
        max_unavailable: MaxUnavailable::Count(max_unavailable),
        failure_threshold,
        pause: Pause::None,
        ..Plan::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn healthy_fleets_complete_in_order_within_their_limits(
        n in 0usize..40,
        waves in waves(),
        max_unavailable in 1u32..8,
        seed in any::<u64>(),
    ) {
        let s = strategy(waves, max_unavailable, 0);
        let plan = s.plan(n);
        let limit = s.max_unavailable.resolve(n);
        let mut r = record(s);
        let mut sim = Sim::new(n);
        let order = order_nodes(&sim.names);
        let mut rng = seed;
        let mut wave = 0;
        for tick in 0..10_000u64 {
            step(&mut r, &sim.live(), tick * 10, true);
            // Targeted nodes are a prefix of the stable order, each once.
            let targeted: BTreeSet<&String> = r.nodes.keys().collect();
            let prefix: BTreeSet<&String> = order.iter().take(r.nodes.len()).collect();
            prop_assert_eq!(&targeted, &prefix);
            prop_assert!(r.current_wave >= wave, "waves go forward");
            wave = r.current_wave;
            if n > 0 {
                prop_assert!(r.nodes.len() <= plan[wave as usize - 1], "wave {} past its share", wave);
            }
            for name in r.nodes.keys() {
                sim.state.entry(name.clone()).or_insert(NodeState::Applying);
            }
            let busy = sim.state.values().filter(|s| **s == NodeState::Applying).count();
            prop_assert!(busy <= limit, "{} applying, max_unavailable {}", busy, limit);
            if r.state == RolloutState::Completed {
                break;
            }
            // Some applying nodes confirm.
            for s in sim.state.values_mut() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if *s == NodeState::Applying && (rng >> 33) % 3 == 0 {
                    *s = NodeState::Applied;
                }
            }
        }
        prop_assert_eq!(r.state, RolloutState::Completed, "{:#?}", r.history);
        prop_assert_eq!(r.nodes.len(), n);
        prop_assert_eq!(r.current_wave as usize, r.strategy.waves.len());
    }

    #[test]
    fn a_bad_node_rolls_back_without_spreading(
        n in 1usize..40,
        bad in any::<prop::sample::Index>(),
        waves in waves(),
        max_unavailable in 1u32..8,
    ) {
        let s = strategy(waves, max_unavailable, 0);
        let limit = s.max_unavailable.resolve(n);
        let mut r = record(s);
        let mut sim = Sim::new(n);
        let order = order_nodes(&sim.names);
        let bad = bad.index(n);
        let bad_name = order[bad].clone();
        for tick in 0..10_000u64 {
            step(&mut r, &sim.live(), tick * 10, true);
            match r.state {
                RolloutState::RollingBack => {
                    // The touched nodes get the stable version back and confirm it.
                    for name in r.nodes.keys() {
                        sim.state.insert(name.clone(), NodeState::Applied);
                    }
                    continue;
                }
                RolloutState::RolledBack => break,
                _ => {}
            }
            for name in r.nodes.keys() {
                // Everyone confirms at once except the bad node, which refuses.
                let s = if *name == bad_name { NodeState::Failed } else { NodeState::Applied };
                sim.state.insert(name.clone(), s);
            }
        }
        prop_assert_eq!(r.state, RolloutState::RolledBack, "{:#?}", r.history);
        prop_assert!(r.nodes.contains_key(&bad_name));
        // Nothing past the bad node's batch: at most max_unavailable nodes after it.
        prop_assert!(r.nodes.len() <= bad + limit, "{} targeted, bad at {}, limit {}", r.nodes.len(), bad, limit);
        let reason = &r.history.iter().find(|t| t.state == "RollingBack").unwrap().reason;
        prop_assert!(reason.contains(&bad_name), "{}", reason);
    }
}

fn live(nodes: &[(&str, NodeState)]) -> Vec<Live> {
    nodes
        .iter()
        .map(|(name, state)| Live {
            name: (*name).to_owned(),
            labels: BTreeMap::new().into(),
            state: *state,
            message: String::new(),
            removal: false,
        })
        .collect()
}

#[test]
fn nodes_that_lose_the_file_go_through_the_waves_and_are_marked_as_removals() {
    let mut r = record(strategy(
        vec![WaveSpec::Count(1), WaveSpec::Percent(100)],
        10,
        0,
    ));
    let mut fleet = live(&[("a", NodeState::Applied), ("b", NodeState::Applied)]);
    fleet[0].removal = true;
    step(&mut r, &fleet, 0, true);
    // Wave 1 takes one node in name order: the removal `a`, marked as one.
    assert_eq!(r.nodes.keys().collect::<Vec<_>>(), ["a"]);
    assert!(r.nodes["a"].removal);
    step(&mut r, &fleet, 1, true);
    assert_eq!(r.nodes.len(), 2);
    assert!(!r.nodes["b"].removal);
    step(&mut r, &fleet, 2, true);
    assert_eq!(r.state, RolloutState::Completed);
}

#[test]
fn nothing_moves_until_settled() {
    let mut r = record(strategy(vec![WaveSpec::Percent(100)], 10, 0));
    let fleet = live(&[("a", NodeState::Applied), ("b", NodeState::Applied)]);
    step(&mut r, &fleet, 1_000_000, false);
    assert_eq!(r.state, RolloutState::Pending, "no wave on a partial fleet");
    // A node Applying since long before the restart is not failed while settling.
    let mut r = record(strategy(vec![WaveSpec::Percent(100)], 10, 0));
    step(&mut r, &fleet, 0, true);
    assert_eq!(r.nodes.len(), 2);
    let waiting = live(&[("a", NodeState::Applying), ("b", NodeState::Applied)]);
    let late = 10 * 60 * 1000;
    step(&mut r, &waiting, late, false);
    assert_eq!(r.nodes["a"].state, NodeState::Applying);
    assert_eq!(r.state, RolloutState::Progressing);
    step(&mut r, &waiting, late, true);
    assert_eq!(
        r.nodes["a"].state,
        NodeState::Failed,
        "once settled, the deadline runs"
    );
}

#[test]
fn a_rollback_ends_without_unknown_nodes_and_gives_up_on_stuck_ones() {
    let mut r = record(strategy(vec![WaveSpec::Percent(100)], 10, 0));
    let fleet = live(&[("a", NodeState::Applied), ("b", NodeState::Applied)]);
    step(&mut r, &fleet, 0, true);
    step(
        &mut r,
        &live(&[("a", NodeState::Failed), ("b", NodeState::Applying)]),
        10,
        true,
    );
    assert_eq!(r.state, RolloutState::RollingBack);
    let mut stuck = r.clone();
    // b's agent is gone; a is back on the stable version: rolled back.
    step(
        &mut r,
        &live(&[("a", NodeState::Applied), ("b", NodeState::Unknown)]),
        20,
        true,
    );
    assert_eq!(r.state, RolloutState::RolledBack);
    let reason = &r.history.last().unwrap().reason;
    assert!(reason.contains("b unknown"), "{reason}");
    // a keeps refusing: after the deadline the rollback gives up, saying which node.
    let deadline = 5 * 60 * 1000;
    let refusing = live(&[("a", NodeState::Failed), ("b", NodeState::Applied)]);
    step(&mut stuck, &refusing, 30, true);
    assert_eq!(stuck.state, RolloutState::RollingBack);
    step(&mut stuck, &refusing, 30 + deadline + 1, true);
    assert_eq!(stuck.state, RolloutState::Aborted);
    assert!(stuck.history.last().unwrap().reason.contains("a not back"));
}

#[test]
fn nodes_already_unknown_are_left_out_of_the_waves() {
    let mut r = record(strategy(vec![WaveSpec::Percent(100)], 10, 0));
    let fleet = live(&[("a", NodeState::Applied), ("gone", NodeState::Unknown)]);
    step(&mut r, &fleet, 0, true);
    assert_eq!(r.nodes.keys().collect::<Vec<_>>(), ["a"]);
    step(
        &mut r,
        &live(&[("a", NodeState::Applied), ("gone", NodeState::Unknown)]),
        10,
        true,
    );
    assert_eq!(r.state, RolloutState::Completed, "{:#?}", r.history);
}
