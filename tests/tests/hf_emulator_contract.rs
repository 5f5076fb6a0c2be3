//! The emulator's own HTTP contract, seen by a plain HTTP client: auth, HF's error shapes,
//! the marker header and the control routes.

use emulator::{Emulator, EmulatorConfig};
use serde_json::{Value, json};

fn body(name: &str) -> Value {
    json!({"name": name, "type": "authenticated",
           "provider": {"vendor": "aws", "region": "us-east-1"},
           "compute": {"accelerator": "cpu", "instanceType": "intel-spr", "instanceSize": "x1",
                       "scaling": {"minReplica": 1, "maxReplica": 1, "scaleToZeroTimeout": null}},
           "model": {"repository": "gpt2", "revision": null, "framework": "pytorch",
                     "task": "text-generation", "image": {"huggingface": {}}}})
}

#[tokio::test]
async fn the_emulator_answers_like_hf_and_says_it_is_an_emulator() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let http = reqwest::Client::new();
    let endpoints = format!("{}/endpoint/ns", emu.v2_url());
    let post = |b: Value| {
        http.post(&endpoints)
            .bearer_auth(&emu.token)
            .json(&b)
            .send()
    };

    let anonymous = http.get(&endpoints).send().await.unwrap();
    let hardware = http
        .get(format!("{}/provider", emu.v2_url()))
        .send()
        .await
        .unwrap();
    let created = post(body("e1")).await.unwrap();
    let duplicate = post(body("e1")).await.unwrap();
    let mut null_task = body("e2");
    null_task["model"]["task"] = Value::Null;
    let null_task = post(null_task).await.unwrap();
    let mut bad_hw = body("e3");
    bad_hw["compute"]["instanceType"] = json!("c6i");
    bad_hw["compute"]["instanceSize"] = json!("medium");
    let bad_hw = post(bad_hw).await.unwrap();
    let missing = http
        .get(format!("{endpoints}/nope"))
        .bearer_auth(&emu.token)
        .send()
        .await
        .unwrap();

    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["x-hokusai-emulator"], "1");
    assert_eq!(hardware.status(), 200);
    assert_eq!(created.status(), 200);
    assert_eq!(
        created.json::<Value>().await.unwrap()["status"]["state"],
        "pending"
    );
    assert_eq!(duplicate.status(), 409);
    assert_eq!(null_task.status(), 400);
    assert!(
        serde_json::from_str::<Value>(&null_task.text().await.unwrap()).is_err(),
        "plain text"
    );
    assert_eq!(bad_hw.status(), 400);
    assert_eq!(
        bad_hw.json::<Value>().await.unwrap()["error"],
        "Instance compute 'Cpu' - 'c6i' - 'medium' in 'aws' - 'us-east-1' not found"
    );
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-hokusai-emulator"], "1");
}

#[tokio::test]
async fn chaos_is_set_by_the_control_route_and_endpoints_are_listed() {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");
    let http = reqwest::Client::new();
    let endpoints = format!("{}/endpoint/ns", emu.v2_url());

    let set = http
        .post(format!("{}/_emulator/chaos", emu.base_url))
        .json(&json!({"server_error_next": 1, "rate_limit_next": 1, "retry_after_secs": 9}))
        .send()
        .await
        .unwrap();
    let limited = http
        .get(&endpoints)
        .bearer_auth(&emu.token)
        .send()
        .await
        .unwrap();
    let broken = http
        .get(&endpoints)
        .bearer_auth(&emu.token)
        .send()
        .await
        .unwrap();
    let fine = http
        .post(&endpoints)
        .bearer_auth(&emu.token)
        .json(&body("e1"))
        .send()
        .await
        .unwrap();
    let listed: Value = http
        .get(format!("{}/_emulator/endpoints", emu.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(set.status(), 200);
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.headers()["retry-after"], "9");
    assert_eq!(broken.status(), 500);
    assert_eq!(fine.status(), 200);
    assert_eq!(listed["items"][0]["name"], "e1");
    assert_eq!(emu.chaos().rate_limit_next, 0);
}
