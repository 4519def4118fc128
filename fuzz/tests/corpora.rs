//! Every input in the committed corpora (`fuzz/corpus/<target>/`) and every input that
//! once crashed a target (`fuzz/regressions/<target>/`, named for the finding) runs
//! through its target: fast and deterministic, in every CI run. A target that panics
//! here fails the test with the file that did it.

use std::path::Path;

#[test]
fn every_corpus_and_regression_input_runs_through_its_target_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut ran = 0;
    for target in hale_fuzz::TARGETS {
        let mut inputs = hale_fuzz::corpus(&root.join("corpus").join(target.name));
        assert!(!inputs.is_empty(), "{}: no corpus (run hale-fuzz-seeds)", target.name);
        inputs.extend(hale_fuzz::corpus(&root.join("regressions").join(target.name)));
        for input in inputs {
            let data = std::fs::read(&input).expect("an input");
            let outcome = std::panic::catch_unwind(|| (target.run)(&data));
            assert!(outcome.is_ok(), "{} panicked on {}", target.name, input.display());
            ran += 1;
        }
    }
    println!("{ran} inputs over {} targets", hale_fuzz::TARGETS.len());
}

/// The PromQL target evaluates on data, not on an empty store (where most of the
/// evaluator would never run).
#[test]
fn the_promql_target_has_data_to_evaluate() {
    hale_fuzz::promql(b"up");
    let store = hale_fuzz::promql_store();
    let value = hale_collector::query::instant_query(store, "count(requests_total)", hale_fuzz::PROMQL_AT)
        .expect("a query of the fixed store");
    assert!(format!("{value:?}").contains("4.0"), "{value:?}");
}
