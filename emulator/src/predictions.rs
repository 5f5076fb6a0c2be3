//! Deterministic predictions in the shapes of the default serving containers
//! (docs/contracts/huggingface-endpoints.md, "Response shapes"). The same input always gives
//! the same answer, so tests can assert on values.

use serde_json::{Value, json};

/// The 64-bit FNV-1a hash of `text`: the seed of every deterministic answer.
pub(crate) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stable score in [0.5, 1.0) derived from `text`.
fn score(text: &str) -> f64 {
    0.5 + (fnv1a(text) % 10_000) as f64 / 20_000.0
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The prediction for `task`, or the container's 400 message.
pub fn predict(task: Option<&str>, inputs: &Value, parameters: &Value) -> Result<Value, String> {
    let text = text_of(inputs);
    let answer = match task.unwrap_or("text-classification") {
        "token-classification" => token_classification(&text),
        "text-generation" => text_generation(&text, parameters),
        "feature-extraction" => per_input(inputs, |t| json!(embedding(t))),
        "sentence-embeddings" => json!({"embeddings": per_input(inputs, |t| json!(embedding(t)))}),
        "sentence-similarity" => sentence_similarity(inputs)?,
        "fill-mask" => fill_mask(&text)?,
        "summarization" => json!([{"summary_text": first_words(&text, 8)}]),
        "translation" => json!([{"translation_text": format!("[translated] {text}")}]),
        "zero-shot-classification" => zero_shot(&text, parameters)?,
        "question-answering" => question_answering(inputs)?,
        "image-classification" => json!([{"score": score(&text), "label": "tabby cat"}]),
        _ => per_input_flat(inputs, classification),
    };
    Ok(answer)
}

fn classification(text: &str) -> Value {
    let s = score(text);
    let label = if text.to_lowercase().contains("hate") || s < 0.55 {
        "NEGATIVE"
    } else {
        "POSITIVE"
    };
    json!({"label": label, "score": s})
}

/// One answer per input; a single input gives a one-element list.
fn per_input_flat(inputs: &Value, f: fn(&str) -> Value) -> Value {
    match inputs {
        Value::Array(items) => items.iter().map(|i| f(&text_of(i))).collect(),
        single => json!([f(&text_of(single))]),
    }
}

/// One answer per input in a list (also a list for a single input, like TEI).
fn per_input(inputs: &Value, f: impl Fn(&str) -> Value) -> Value {
    match inputs {
        Value::Array(items) => items.iter().map(|i| f(&text_of(i))).collect(),
        single => json!([f(&text_of(single))]),
    }
}

/// The feature-extraction vector of `text` (8 dimensions), also served by `/v1/embeddings`.
pub(crate) fn embedding(text: &str) -> Vec<f64> {
    (0..8)
        .map(|i| score(&format!("{i}:{text}")) - 0.75)
        .collect()
}

/// Capitalised words after the first one are people (the first is capitalised anyway);
/// `index` counts tokens from 1, after the tokenizer's leading special token.
fn token_classification(text: &str) -> Value {
    let entities: Vec<Value> = text
        .split_whitespace()
        .enumerate()
        .skip(1)
        .filter(|(_, w)| w.starts_with(char::is_uppercase))
        .map(|(i, word)| {
            let start = text.find(word).unwrap_or(0);
            json!({"entity": "I-PER", "score": score(word), "index": i + 1, "word": word,
                   "start": start, "end": start + word.len()})
        })
        .collect();
    Value::Array(entities)
}

fn text_generation(text: &str, parameters: &Value) -> Value {
    let n = parameters["max_new_tokens"].as_u64().unwrap_or(5).min(50) as usize;
    let words = ["and", "the", "model", "says", "hello"];
    let continuation: Vec<&str> = (0..n).map(|i| words[i % words.len()]).collect();
    json!([{"generated_text": format!("{text} {}", continuation.join(" "))}])
}

fn sentence_similarity(inputs: &Value) -> Result<Value, String> {
    let source = inputs["source_sentence"]
        .as_str()
        .ok_or("inputs.source_sentence is required")?;
    let sentences = inputs["sentences"]
        .as_array()
        .ok_or("inputs.sentences must be a list")?;
    let similarities: Vec<f64> = sentences
        .iter()
        .map(|s| {
            if text_of(s) == source {
                1.0
            } else {
                score(&format!("{source}|{}", text_of(s)))
            }
        })
        .collect();
    Ok(json!({"similarities": similarities}))
}

fn fill_mask(text: &str) -> Result<Value, String> {
    if !text.contains("[MASK]") {
        return Err("No mask_token ([MASK]) found on the input".into());
    }
    Ok(
        json!([{"score": score(text), "token": 3007, "token_str": "capital",
               "sequence": text.replace("[MASK]", "capital")}]),
    )
}

fn zero_shot(text: &str, parameters: &Value) -> Result<Value, String> {
    let labels: Vec<String> = match &parameters["candidate_labels"] {
        Value::Array(items) => items.iter().map(text_of).collect(),
        Value::String(s) => s.split(',').map(|l| l.trim().to_owned()).collect(),
        _ => return Err("parameters.candidate_labels is required".into()),
    };
    let raw: Vec<f64> = labels
        .iter()
        .map(|l| score(&format!("{text}|{l}")))
        .collect();
    let total: f64 = raw.iter().sum();
    let mut ranked: Vec<(String, f64)> = labels
        .into_iter()
        .zip(raw.iter().map(|s| s / total))
        .collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    let (labels, scores): (Vec<_>, Vec<_>) = ranked.into_iter().unzip();
    Ok(json!({"sequence": text, "labels": labels, "scores": scores}))
}

fn question_answering(inputs: &Value) -> Result<Value, String> {
    let context = inputs["context"]
        .as_str()
        .ok_or("inputs.context is required")?;
    let question = inputs["question"]
        .as_str()
        .ok_or("inputs.question is required")?;
    let answer = context.split_whitespace().last().unwrap_or("");
    let start = context.rfind(answer).unwrap_or(0);
    Ok(
        json!({"score": score(question), "start": start, "end": start + answer.len(), "answer": answer}),
    )
}

fn first_words(text: &str, n: usize) -> String {
    text.split_whitespace()
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_are_deterministic_and_shaped_per_task() {
        let none = Value::Null;
        let a = predict(Some("text-classification"), &json!("I love you"), &none).unwrap();
        assert_eq!(a, predict(None, &json!("I love you"), &none).unwrap());
        assert_eq!(a[0]["label"], "POSITIVE");
        let batch = predict(None, &json!(["a", "b"]), &none).unwrap();
        assert_eq!(batch.as_array().unwrap().len(), 2);
        let generated = predict(
            Some("text-generation"),
            &json!("Hi"),
            &json!({"max_new_tokens": 2}),
        )
        .unwrap();
        assert_eq!(generated[0]["generated_text"], "Hi and the");
        let emb = predict(Some("feature-extraction"), &json!("x"), &none).unwrap();
        assert_eq!(emb[0].as_array().unwrap().len(), 8);
        let ner = predict(
            Some("token-classification"),
            &json!("My name is Wolfgang"),
            &none,
        )
        .unwrap();
        assert_eq!(ner.as_array().unwrap().len(), 1);
        assert_eq!(
            (
                ner[0]["word"].clone(),
                ner[0]["start"].clone(),
                ner[0]["index"].clone()
            ),
            (json!("Wolfgang"), json!(11), json!(4))
        );
        let zs = predict(
            Some("zero-shot-classification"),
            &json!("x"),
            &json!({"candidate_labels": ["a", "b"]}),
        )
        .unwrap();
        assert_eq!(zs["labels"].as_array().unwrap().len(), 2);
        let qa = predict(
            Some("question-answering"),
            &json!({"question": "q", "context": "in Paris"}),
            &none,
        )
        .unwrap();
        assert_eq!(qa["answer"], "Paris");
        assert!(predict(Some("fill-mask"), &json!("no mask"), &none).is_err());
    }
}
