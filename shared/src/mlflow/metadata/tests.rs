use super::*;

const MLMODEL: &str = "artifact_path: model
flavors:
  python_function:
    loader_module: mlflow.transformers
  transformers:
    task: text-classification
    source_model_name: distilbert/distilbert-base-uncased-finetuned-sst-2-english
    source_model_revision: 714eb0f
    framework: pt
    instance_type: TextClassificationPipeline
    pipeline_model_type: DistilBertForSequenceClassification
mlflow_version: 3.17.2
";

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.into(),
        value: value.into(),
    }
}

fn facts(version_tags: Vec<Tag>, model_tags: Vec<Tag>, flavor: Option<&str>) -> VersionFacts {
    VersionFacts {
        version: ModelVersion {
            name: "sentiment".into(),
            version: "4".into(),
            source: Some("mlflow-artifacts:/0/models/m-1/artifacts".into()),
            run_id: Some(String::new()),
            tags: version_tags,
            aliases: vec![],
        },
        model: RegisteredModel {
            name: "sentiment".into(),
            tags: model_tags,
        },
        flavor: flavor.and_then(parse_mlmodel),
    }
}

#[test]
fn the_transformers_flavor_fills_the_request() {
    let request = describe(&facts(vec![], vec![], Some(MLMODEL))).expect("describable");

    assert_eq!(request.model_id.expect("id").as_str(), "sentiment");
    assert_eq!(request.model_version.as_deref(), Some("4"));
    assert_eq!(
        request.repository.as_deref(),
        Some("distilbert/distilbert-base-uncased-finetuned-sst-2-english")
    );
    assert_eq!(request.revision.as_deref(), Some("714eb0f"));
    assert_eq!(request.task.as_deref(), Some("text-classification"));
    assert_eq!(request.framework.as_deref(), Some("pytorch"));
    assert_eq!(request.instance, InstanceRequest::default());
    assert_eq!(request.scaling, None);
    assert_eq!(request.metadata["source"], "mlflow");
    assert_eq!(request.metadata["mlflow"]["run_id"], Value::Null);
}

#[test]
fn version_tags_override_model_tags_which_override_the_flavor() {
    let version_tags = vec![
        tag(tags::TASK, "fill-mask"),
        tag(tags::INSTANCE_SIZE, "x4"),
        tag(tags::MAX_REPLICA, "3"),
    ];
    let model_tags = vec![
        tag(tags::TASK, "summarization"),
        tag(tags::HF_REPOSITORY, "org/override"),
        tag(tags::INSTANCE_TYPE, "intel-icl"),
    ];

    let request = describe(&facts(version_tags, model_tags, Some(MLMODEL))).expect("ok");

    assert_eq!(request.task.as_deref(), Some("fill-mask"));
    assert_eq!(request.repository.as_deref(), Some("org/override"));
    assert_eq!(request.instance.instance_type.as_deref(), Some("intel-icl"));
    assert_eq!(request.instance.size.as_deref(), Some("x4"));
    let scaling = request.scaling.expect("scaling");
    assert_eq!((scaling.min_replica, scaling.max_replica), (1, 3));
}

#[test]
fn without_flavor_or_tags_nothing_is_invented_and_bad_numbers_are_rejected() {
    let bare = describe(&facts(vec![], vec![], None)).expect("describable");
    let bad = describe(&facts(vec![tag(tags::MIN_REPLICA, "two")], vec![], None));

    assert_eq!((bare.repository, bare.task), (None, None));
    assert_eq!(
        bad.expect_err("rejected").0,
        "hokusai.min_replica: `two` is not a whole number"
    );
}

#[test]
fn deploy_wish_comes_from_the_version_or_its_model() {
    let on_version = facts(vec![tag(tags::DEPLOY, "true")], vec![], None);
    let on_model = facts(vec![], vec![tag(tags::DEPLOY, "TRUE")], None);
    let off = facts(vec![tag(tags::DEPLOY, "false")], vec![], None);

    assert!(on_version.wants_deploy());
    assert!(on_model.wants_deploy());
    assert!(!off.wants_deploy());
}

#[test]
fn artifact_uris_map_to_proxy_paths_and_yaml_without_flavor_is_none() {
    assert_eq!(
        artifact_proxy_path("mlflow-artifacts:/0/models/m-1/artifacts").as_deref(),
        Some("0/models/m-1/artifacts")
    );
    assert_eq!(
        artifact_proxy_path("mlflow-artifacts://host:5000/0/r/artifacts").as_deref(),
        Some("0/r/artifacts")
    );
    assert_eq!(artifact_proxy_path("s3://bucket/model"), None);
    assert_eq!(
        parse_mlmodel("flavors:\n  sklearn:\n    pickled_model: m.pkl\n"),
        None
    );
    assert_eq!(parse_mlmodel(": not yaml: ["), None);
}
