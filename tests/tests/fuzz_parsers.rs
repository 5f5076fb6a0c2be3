//! Property tests (issue 11) of the two decoders that read bytes from outside the process:
//! the MLflow webhook parser and signature check (`shared::mlflow::webhook`) and the queue
//! envelope decoder (`Envelope::decode`). Whatever the input, they return a typed error and
//! never panic; a correctly signed delivery always authenticates.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};
use shared::config::Secret;
use shared::domain::DeploymentId;
use shared::mlflow::webhook::{self, DeliveryHeaders, WebhookError};
use shared::queue::{Envelope, EnvelopeError, MessageKind};
use tests::fuzz::{self, names};

/// Field names the decoders look for, mixed with noise.
fn key() -> impl Strategy<Value = String> + Clone {
    names(&[
        "entity",
        "action",
        "data",
        "name",
        "version",
        "key",
        "value",
        "alias",
        "v",
        "message_id",
        "kind",
        "deployment_id",
        "attempt",
        "issued_at",
        "correlation_id",
        "payload",
        "replayed",
    ])
}

/// Bodies: raw bytes, arbitrary JSON, and webhook-shaped objects with arbitrary fields.
fn webhook_body() -> impl Strategy<Value = Vec<u8>> {
    let entity = prop_oneof![
        prop::sample::select(vec![
            "model_version",
            "model_version_tag",
            "model_version_alias",
            "registered_model"
        ])
        .prop_map(str::to_owned),
        "\\PC{0,12}",
    ];
    let action = prop_oneof![
        prop::sample::select(vec!["created", "set", "deleted"]).prop_map(str::to_owned),
        "\\PC{0,12}",
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (
            entity,
            action,
            json_value(),
            json_value(),
            json_value(),
            json_value()
        )
            .prop_map(|(entity, action, name, version, key, value)| {
                json!({"entity": entity, "action": action,
                       "data": {"name": name, "version": version, "key": key, "value": value}})
                .to_string()
                .into_bytes()
            }),
        (1usize..2000).prop_map(
            |d| format!("{{\"entity\":{}1{}}}", "[".repeat(d), "]".repeat(d)).into_bytes()
        ),
    ]
}

/// Header values as a client could send them (visible ASCII and obs-text, or absent).
fn header() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "[ -~]{0,80}",
        "\\PC{0,20}",
        "v1,[A-Za-z0-9+/=]{0,60}"
    ])
}

/// Unix timestamps as text, including the extremes of `i64` and non-numbers.
fn timestamp() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|t| t.to_string()),
        Just(i64::MIN.to_string()),
        Just(i64::MAX.to_string()),
        (-1_000_000i64..1_000_000).prop_map(|d| (1_800_000_000 + d).to_string()),
        "[ -~]{0,24}",
    ]
}

fn now() -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: fuzz::regressions("proptest-regressions/fuzz_parsers.txt"),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_webhook_parser_never_panics(body in webhook_body()) {
        match webhook::parse(&body) {
            Ok(event) => {
                // A known event that needs a version always carries one.
                if matches!(event.name.as_str(), "model_version.created" | "model_version_tag.set") {
                    prop_assert!(event.model_name.is_some() && event.version.is_some());
                }
                let _ = event.decision();
            }
            Err(error) => prop_assert!(matches!(error, WebhookError::Malformed(_)), "{error:?}"),
        }
    }

    #[test]
    fn the_signature_check_never_panics(
        id in header(), ts in header(), sig in header(), body in webhook_body(), secret in "[ -~]{0,40}",
    ) {
        let headers = DeliveryHeaders { delivery_id: id, timestamp: ts, signature: sig };
        let result = webhook::authenticate(&Secret::new(secret), &headers, &body, now());
        if let Err(error) = result {
            prop_assert!(error.is_authentication(), "{error:?}");
        }
    }

    #[test]
    fn a_signed_delivery_authenticates_whatever_its_timestamp(
        id in "[!-~]{1,64}", ts in timestamp(), body in webhook_body(), secret in "[ -~]{1,40}",
    ) {
        let secret = Secret::new(secret);
        let signature = webhook::sign(&secret, &id, &ts, &body);
        let headers = DeliveryHeaders {
            delivery_id: Some(id.clone()), timestamp: Some(ts.clone()), signature: Some(signature),
        };
        match webhook::authenticate(&secret, &headers, &body, now()) {
            Ok(got) => prop_assert_eq!(got, id),
            Err(error) => prop_assert!(matches!(error, WebhookError::Timestamp(_)), "{ts}: {error:?}"),
        }
    }

    #[test]
    fn the_envelope_decoder_never_panics(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        envelope_like().prop_map(|v| v.to_string().into_bytes()),
    ]) {
        match Envelope::decode(&bytes) {
            Ok(envelope) => {
                prop_assert_eq!(envelope.v, Envelope::VERSION);
                // What a consumer does with a decoded command must not panic either.
                let retried = envelope.retry();
                prop_assert!(retried.attempt >= envelope.attempt);
                let _ = envelope.follow_up(MessageKind::CheckStatus);
                // Re-encoding keeps every field (payload floats may lose their last digit in
                // serde_json's fast float parsing, which the envelope does not depend on).
                let again = Envelope::decode(&envelope.to_bytes()).map(|mut e| {
                    e.payload = Value::Null;
                    e
                });
                prop_assert_eq!(again.ok(), Some(Envelope { payload: Value::Null, ..envelope }));
            }
            Err(EnvelopeError::Malformed(_) | EnvelopeError::Version(_)) => {}
        }
    }
}

/// Envelope-shaped objects with each field possibly replaced by an arbitrary value.
fn envelope_like() -> impl Strategy<Value = Value> {
    let valid = Envelope::new(
        MessageKind::Deploy,
        DeploymentId(uuid::Uuid::now_v7()),
        json!({}),
    )
    .to_json();
    (
        prop::sample::select(vec![
            "v",
            "message_id",
            "kind",
            "deployment_id",
            "attempt",
            "issued_at",
            "correlation_id",
            "payload",
            "replayed",
        ]),
        prop_oneof![
            json_value(),
            any::<u32>().prop_map(|n| json!(n)),
            Just(json!(u32::MAX))
        ],
    )
        .prop_map(move |(field, value)| {
            let mut envelope = valid.clone();
            envelope[field] = value;
            envelope
        })
}

/// Arbitrary JSON with the keys of [`key`].
fn json_value() -> impl Strategy<Value = Value> {
    fuzz::json_value(key())
}
