//! Strategies the property-based tests share (`fuzz_api`, `fuzz_parsers`), and where they
//! keep the seeds of failing cases ([`regressions`]).

use proptest::prelude::*;
use proptest::test_runner::{FailurePersistence, FileFailurePersistence};
use serde_json::{Value, json};

/// proptest's failure persistence at `file`, relative to the `tests` crate (the directory
/// cargo runs its tests in), e.g. `proptest-regressions/fuzz_api.txt`. A failing case's seed
/// is written there; the files are committed (`tests/proptest-regressions/README.md`), and
/// every run replays them before generating new cases.
pub fn regressions(file: &'static str) -> Option<Box<dyn FailurePersistence>> {
    Some(Box::new(FileFailurePersistence::Direct(file)))
}

/// Arbitrary JSON up to 4 levels deep, whose object keys come from `keys` (names the code
/// under test reads, mixed with noise).
pub fn json_value<K>(keys: K) -> impl Strategy<Value = Value>
where
    K: Strategy<Value = String> + Clone + 'static,
{
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Known names, or any short string.
pub fn names(known: &[&'static str]) -> impl Strategy<Value = String> + Clone + use<> {
    prop_oneof![
        prop::sample::select(known.to_vec()).prop_map(str::to_owned),
        "\\PC{0,8}",
    ]
}
