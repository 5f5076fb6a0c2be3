use chrono::TimeZone;

use super::*;

const SECRET: &str = "s3cr3t";
const DELIVERY: &str = "d5bf0a61-519d-47cd-9423-3a78df085f89";
const TIMESTAMP: &str = "1795802200";
const BODY: &str = r#"{"entity": "model_version", "action": "created", "timestamp": "2026-11-27T17:56:40.697900+00:00", "data": {"name": "fraud-detector", "version": "1", "source": "runs:/c01e2103670b4a63ade565b570bf765c/model", "run_id": "c01e2103670b4a63ade565b570bf765c", "tags": {"framework": "sklearn"}, "description": "first version"}}"#;
const EXPECTED: &str = "v1,KvxkreMWHz40xLdq/Wv8YzsZ3KOchKN+SHcVNi4yPZQ=";

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).single().expect("valid time")
}

fn headers(signature: &str) -> DeliveryHeaders {
    DeliveryHeaders {
        delivery_id: Some(DELIVERY.into()),
        timestamp: Some(TIMESTAMP.into()),
        signature: Some(signature.into()),
    }
}

#[test]
fn the_contract_test_vector_signs_and_verifies() {
    let secret = Secret::new(SECRET);

    let signature = sign(&secret, DELIVERY, TIMESTAMP, BODY.as_bytes());
    let verified = authenticate(
        &secret,
        &headers(EXPECTED),
        BODY.as_bytes(),
        at(1_795_802_210),
    );

    assert_eq!(signature, EXPECTED);
    assert_eq!(verified, Ok(DELIVERY.to_owned()));
}

#[test]
fn a_tampered_body_or_another_secret_is_refused() {
    let now = at(1_795_802_210);
    let tampered = BODY.replace("fraud-detector", "other-model");

    let body = authenticate(
        &Secret::new(SECRET),
        &headers(EXPECTED),
        tampered.as_bytes(),
        now,
    );
    let secret = authenticate(
        &Secret::new("wrong"),
        &headers(EXPECTED),
        BODY.as_bytes(),
        now,
    );
    let garbage = authenticate(
        &Secret::new(SECRET),
        &headers("v1,***"),
        BODY.as_bytes(),
        now,
    );

    assert_eq!(body, Err(WebhookError::BadSignature));
    assert_eq!(secret, Err(WebhookError::BadSignature));
    assert_eq!(garbage, Err(WebhookError::BadSignature));
}

#[test]
fn stale_and_future_timestamps_are_refused_within_the_window_accepted() {
    let secret = Secret::new(SECRET);
    let sent = 1_795_802_200;
    let check = |now| authenticate(&secret, &headers(EXPECTED), BODY.as_bytes(), at(now));

    assert!(check(sent + MAX_AGE_SECONDS).is_ok());
    assert_eq!(
        check(sent + MAX_AGE_SECONDS + 1),
        Err(WebhookError::Timestamp("too old"))
    );
    assert!(check(sent - MAX_SKEW_SECONDS).is_ok());
    assert_eq!(
        check(sent - MAX_SKEW_SECONDS - 1),
        Err(WebhookError::Timestamp("in the future"))
    );
}

#[test]
fn every_header_is_required() {
    let secret = Secret::new(SECRET);
    let now = at(1_795_802_210);
    let without = |f: fn(&mut DeliveryHeaders)| {
        let mut h = headers(EXPECTED);
        f(&mut h);
        authenticate(&secret, &h, BODY.as_bytes(), now).expect_err("refused")
    };

    assert_eq!(
        without(|h| h.signature = None),
        WebhookError::MissingHeader("X-MLflow-Signature")
    );
    assert_eq!(
        without(|h| h.timestamp = None),
        WebhookError::MissingHeader("X-MLflow-Timestamp")
    );
    assert_eq!(
        without(|h| h.delivery_id = None),
        WebhookError::MissingHeader("X-MLflow-Delivery-Id")
    );
}

#[test]
fn payloads_parse_into_events_and_decisions() {
    let created = parse(BODY.as_bytes()).expect("parses");
    let own_tag = parse(br#"{"entity":"model_version_tag","action":"set","data":{"name":"m","version":"2","key":"hokusai.deployment.status","value":"deployed"}}"#).expect("parses");
    let deploy_tag = parse(br#"{"entity":"model_version_tag","action":"set","data":{"name":"m","version":2,"key":"hokusai.deploy","value":"True"}}"#).expect("parses");
    let alias = parse(br#"{"entity":"model_version_alias","action":"created","data":{"name":"m","alias":"production","version":"3"}}"#).expect("parses");
    let unknown = parse(br#"{"entity":"prompt","action":"created","data":{}}"#).expect("parses");

    assert_eq!(created.name, "model_version.created");
    assert_eq!(
        (created.model_name.as_deref(), created.version.as_deref()),
        (Some("fraud-detector"), Some("1"))
    );
    assert_eq!(created.decision(), Decision::Handle);
    assert_eq!(
        own_tag.decision(),
        Decision::Ignore("a tag written by hokusai-serve")
    );
    assert_eq!(deploy_tag.version.as_deref(), Some("2"));
    assert_eq!(deploy_tag.decision(), Decision::Handle);
    assert_eq!(alias.decision(), Decision::Handle);
    assert!(unknown.is_unknown());
}

#[test]
fn malformed_bodies_are_refused() {
    assert!(matches!(
        parse(b"{not json"),
        Err(WebhookError::Malformed(_))
    ));
    assert!(matches!(
        parse(br#"{"data":{}}"#),
        Err(WebhookError::Malformed(_))
    ));
    let no_version = br#"{"entity":"model_version","action":"created","data":{"name":"m"}}"#;
    assert!(matches!(parse(no_version), Err(WebhookError::Malformed(_))));
}
