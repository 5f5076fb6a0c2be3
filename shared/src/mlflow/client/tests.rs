use super::*;

#[test]
fn debug_never_shows_credentials() {
    let auth = Auth::Basic {
        username: "ds".into(),
        password: Secret::new("hunter2"),
    };
    let client = MlflowClient::new("http://u:pw@mlflow:5000", auth).expect("client");
    let shown = format!("{client:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains(":pw@"),
        "{shown}"
    );
    assert!(shown.contains("basic"), "{shown}");
}

#[test]
fn urls_keep_the_base_path_and_encode_queries() {
    let client = MlflowClient::new("http://mlflow:5000/prefix/", Auth::None).expect("client");
    let url = client
        .url(
            "api/2.0/mlflow/model-versions/search",
            &[("filter", "tags.`hokusai.deploy` = 'true'")],
        )
        .expect("url");
    assert!(
        url.as_str()
            .starts_with("http://mlflow:5000/prefix/api/2.0/mlflow/model-versions/search?filter=")
    );
    assert!(!url.as_str().contains(' '));
}
