//! Strategies the property-based tests share (`fuzz_api`, `fuzz_parsers`).

use proptest::prelude::*;
use serde_json::{Value, json};

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
