//! Dialplan core benchmarks: extension matching over a 10,000-extension context,
//! `$[...]` expressions and `${...}` template parsing.
//!
//! Run with `cargo bench --bench dialplan`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use voxpbx::dialplan::expr::evaluate;
use voxpbx::dialplan::pattern::{best_match, compare, first_match, ExtenName};
use voxpbx::dialplan::subst::{parse, split_args};

/// 10,000 extensions: 9,000 literal four/five-digit numbers and 1,000 patterns of
/// assorted specificity, in a deterministic order.
fn context() -> Vec<ExtenName> {
    let mut names = Vec::with_capacity(10_000);
    for i in 0..9_000u32 {
        names.push(format!("{}", 20_000 + i * 3));
    }
    let shapes = [
        "_1{}XX",
        "_9{}NXXXXXX",
        "_0{}[1-5]X.",
        "_8{}ZX!",
        "_7{}XXX-XXXX",
    ];
    for i in 0..1_000usize {
        let shape = shapes[i % shapes.len()];
        names.push(shape.replace("{}", &format!("{:03}", i / shapes.len())));
    }
    // Mix so that literals and patterns interleave before sorting.
    names.sort_by_key(|s| s.bytes().rev().collect::<Vec<u8>>());
    names
        .into_iter()
        .map(|n| ExtenName::parse(&n).expect("generated names are valid"))
        .collect()
}

fn bench_patterns(c: &mut Criterion) {
    let unsorted = context();
    let mut sorted = unsorted.clone();
    sorted.sort_by(compare);

    let mut g = c.benchmark_group("pattern_10k");
    for dialled in [
        "26999",
        "91995551234",
        "00421234",
        "70995551234",
        "112345",
        "805012",
    ] {
        let expected = best_match(unsorted.iter(), dialled);
        assert!(expected.is_some(), "{dialled} should match an extension");
        assert_eq!(first_match(&sorted, dialled), expected);
        g.bench_with_input(BenchmarkId::new("best_match", dialled), dialled, |b, d| {
            b.iter(|| best_match(black_box(&unsorted).iter(), black_box(d)))
        });
        g.bench_with_input(
            BenchmarkId::new("first_match_sorted", dialled),
            dialled,
            |b, d| b.iter(|| first_match(black_box(&sorted), black_box(d))),
        );
    }
    g.bench_function("sort", |b| {
        b.iter_batched(
            || unsorted.clone(),
            |mut v| {
                v.sort_by(compare);
                v
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.bench_function("parse", |b| {
        b.iter(|| {
            unsorted
                .iter()
                .map(|n| ExtenName::parse(black_box(&n.raw)))
                .filter(Result::is_ok)
                .count()
        })
    });
    g.finish();
}

fn bench_expr(c: &mut Criterion) {
    let mut g = c.benchmark_group("expr");
    for (name, text) in [
        ("arith", "1 + 2 * 3 - 4 / 2"),
        ("compare_and", "5551234 >= 5550000 & 5551234 <= 5559999"),
        ("string_cond", "\"${X}\" = \"\" ? empty :: full"),
        ("regex_capture", "5551234 : \"555(.*)\""),
        ("float", "10 / 3 * 7"),
    ] {
        g.bench_function(name, |b| b.iter(|| evaluate(black_box(text))));
    }
    g.finish();
}

fn bench_subst(c: &mut Criterion) {
    let mut g = c.benchmark_group("subst");
    let line = "SIP/${CUT(${DIALSTRING},@,1):1:4}@$[${COUNT} + 1],30,${IF($[${A} = 1]?tT:)}";
    g.bench_function("parse", |b| b.iter(|| parse(black_box(line))));
    let args = "SIP/100&SIP/200,30,\"tT\\,r\",M(macro^a^b)";
    g.bench_function("split_args", |b| b.iter(|| split_args(black_box(args))));
    g.finish();
}

criterion_group!(benches, bench_patterns, bench_expr, bench_subst);
criterion_main!(benches);
