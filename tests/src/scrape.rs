//! Reading a Prometheus text exposition (`GET /metrics`) in tests.

use std::collections::BTreeMap;

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series name (with `_bucket`, `_count`, `_sum` suffixes as written).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// The `# TYPE` of each family.
    pub types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses the text format; panics on a line it cannot read (the test fails on a
    /// malformed exposition).
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("a number in `{line}`")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => (name.to_owned(), labels(rest.trim_end_matches('}'))),
            };
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        Scrape { samples, types }
    }

    /// Samples of `name` whose labels include every pair of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The sum of the matching samples' values (`None` when no sample matches).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.find(name, labels);
        (!found.is_empty()).then(|| found.iter().map(|s| s.value).sum())
    }
}

fn labels(raw: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = raw;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(match escaped {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').to_owned(), value);
        rest = after[end..].trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_with_escapes_and_braces() {
        let scrape =
            Scrape::parse("# TYPE x counter\nx{route=\"/a/{id}\",q=\"say \\\"hi\\\"\"} 3\ny 1.5\n");
        assert_eq!(scrape.value("x", &[("route", "/a/{id}")]), Some(3.0));
        assert_eq!(scrape.find("x", &[])[0].labels["q"], "say \"hi\"");
        assert_eq!(scrape.value("y", &[]), Some(1.5));
        assert_eq!(scrape.types["x"], "counter");
        assert_eq!(scrape.value("z", &[]), None);
    }
}
