//! Effective file sets at fleet scale: index N NCIs, then compute the set of every one of M
//! nodes (target: 10,000 nodes x 1,000 NCIs well under a second). Several sizes show how the
//! cost grows with nodes and NCIs.

use std::collections::BTreeMap;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use seccomp_rollout::fileset::Fleet;
use seccomp_rollout::nci::{self, NodeConfigItem, ProfileRef, Target};

/// `n` NCIs: one profile each, selecting a pool (50 pools) and sometimes a zone too; one in
/// ten writes a path another NCI writes too, at another priority.
fn ncis(n: usize) -> Vec<NodeConfigItem> {
    let content = format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":[{}],"action":"SCMP_ACT_ALLOW"}}]}}"#,
        (0..150)
            .map(|i| format!("\"sys{i}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    (0..n)
        .map(|i| {
            let mut selector = BTreeMap::new();
            selector.insert("pool".to_owned(), format!("p{}", i % 50));
            if i % 3 == 0 {
                selector.insert("zone".to_owned(), format!("z{}", i % 3));
            }
            let mut target = Target::new(selector);
            target.priority = (i % 7) as i32;
            let profile = format!("profile-{}", if i % 10 == 0 { i / 10 } else { i });
            let nci_name = format!("nci-{i}");
            nci::render(
                ProfileRef {
                    name: &profile,
                    version: 1,
                    content: content.as_bytes(),
                },
                &target,
                Some(&nci_name),
                None,
            )
            .expect("render")
        })
        .collect()
}

fn nodes(m: usize) -> Vec<(String, BTreeMap<String, String>)> {
    (0..m)
        .map(|i| {
            let name = format!("node-{i:05}");
            let labels = [
                ("kubernetes.io/hostname", name.clone()),
                ("kubernetes.io/os", "linux".to_owned()),
                ("zone", format!("z{}", i % 3)),
                ("pool", format!("p{}", i % 50)),
                ("node.kubernetes.io/instance-type", format!("t{}", i % 5)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            (name, labels)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("effective_all");
    group.sample_size(10);
    for (m, n) in [(1_000, 100), (10_000, 100), (1_000, 1_000), (10_000, 1_000)] {
        let ncis = ncis(n);
        let nodes = nodes(m);
        group.bench_with_input(
            BenchmarkId::new(format!("{m}-nodes"), format!("{n}-ncis")),
            &(),
            |b, ()| {
                b.iter(|| {
                    let fleet = Fleet::new(&ncis).expect("fleet");
                    let sets = fleet.effective_all(nodes.iter().map(|(n, l)| (n.as_str(), l)));
                    assert_eq!(sets.len(), m);
                    sets
                })
            },
        );
    }
    group.finish();

    // Worst case: no two nodes share a computed set (every node resolved on its own).
    let mut group = c.benchmark_group("effective_each_no_sharing");
    group.sample_size(10);
    let (m, n) = (10_000, 1_000);
    let ncis = ncis(n);
    let nodes = nodes(m);
    group.bench_function(format!("{m}-nodes/{n}-ncis"), |b| {
        b.iter(|| {
            let fleet = Fleet::new(&ncis).expect("fleet");
            nodes
                .iter()
                .map(|(_, l)| fleet.effective(l).files.len())
                .sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
