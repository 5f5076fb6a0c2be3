//! The hardware the emulator offers: `GET /v2/provider` and the create-time check that
//! answers HF's `Instance compute … not found` for anything else.

use serde_json::{Value, json};

/// (vendor, region, instanceType, status, [(size, price)]): the contract's CPU table, plus
/// the deprecated `intel-icl` and one GPU so clients see they must filter.
const OFFERS: &[(&str, &str, &str, &str, Sizes)] = &[
    ("aws", "us-east-1", "intel-spr", "available", AWS_SPR),
    (
        "aws",
        "us-east-1",
        "intel-icl",
        "deprecated",
        &[("x2", 0.067)],
    ),
    ("aws", "us-east-1", "nvidia-t4", "available", &[("x1", 0.5)]),
    ("aws", "eu-west-1", "intel-spr", "available", AWS_SPR),
    (
        "azure",
        "eastus",
        "intel-xeon",
        "available",
        &[("x1", 0.060), ("x2", 0.120), ("x4", 0.240), ("x8", 0.480)],
    ),
    (
        "gcp",
        "us-east4",
        "intel-spr",
        "available",
        &[("x1", 0.050), ("x2", 0.100), ("x4", 0.200), ("x8", 0.400)],
    ),
];
/// Sizes of one instance type with their prices.
type Sizes = &'static [(&'static str, f64)];

const AWS_SPR: Sizes = &[
    ("x1", 0.033),
    ("x2", 0.067),
    ("x4", 0.134),
    ("x8", 0.268),
    ("x16", 0.536),
];

fn accelerator(instance_type: &str) -> &'static str {
    if instance_type.starts_with("nvidia") {
        "gpu"
    } else {
        "cpu"
    }
}

fn vcpus(size: &str) -> u64 {
    size.trim_start_matches('x').parse().unwrap_or(1)
}

/// Checks a create or update against the offers; the error is HF's message.
pub fn check(
    vendor: &str,
    region: &str,
    accel: &str,
    instance_type: &str,
    size: &str,
) -> Result<(), String> {
    let found = OFFERS.iter().any(|(v, r, t, status, sizes)| {
        *v == vendor
            && *r == region
            && *t == instance_type
            && *status != "deprecated"
            && accelerator(t) == accel
            && sizes.iter().any(|(s, _)| *s == size)
    });
    if found {
        return Ok(());
    }
    let mut kind = accel.to_owned();
    if let Some(first) = kind.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    Err(format!(
        "Instance compute '{kind}' - '{instance_type}' - '{size}' in '{vendor}' - '{region}' not found"
    ))
}

/// The `GET /v2/provider` body.
pub fn listing() -> Value {
    let mut vendors: Vec<Value> = Vec::new();
    for (vendor, region, kind, status, sizes) in OFFERS {
        let computes: Vec<Value> = sizes
            .iter()
            .map(|(size, price)| {
                json!({
                    "id": format!("{vendor}-{region}-{kind}-{size}"),
                    "accelerator": accelerator(kind), "instanceType": kind, "instanceSize": size,
                    "architecture": "x86_64", "numAccelerators": vcpus(size),
                    "numCpus": vcpus(size), "memoryGb": vcpus(size) * 2,
                    "pricePerHour": price, "status": status,
                    "quota": {"maxAccelerators": 64, "usedAccelerators": 0},
                })
            })
            .collect();
        let region_json =
            json!({"name": region, "label": region, "status": "available", "computes": computes});
        match vendors.iter_mut().find(|v| v["name"] == *vendor) {
            Some(v) => match v["regions"]
                .as_array_mut()
                .and_then(|rs| rs.iter_mut().find(|r| r["name"] == *region))
            {
                Some(r) => r["computes"].as_array_mut().expect("computes").extend(
                    region_json["computes"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                ),
                None => v["regions"]
                    .as_array_mut()
                    .expect("regions")
                    .push(region_json),
            },
            None => vendors
                .push(json!({"name": vendor, "status": "available", "regions": [region_json]})),
        }
    }
    json!({"vendors": vendors})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_table_is_offered_and_other_hardware_refused_with_hfs_message() {
        assert!(check("aws", "us-east-1", "cpu", "intel-spr", "x2").is_ok());
        assert!(check("gcp", "us-east4", "cpu", "intel-spr", "x8").is_ok());
        assert_eq!(
            check("aws", "us-east-1", "cpu", "c6i", "medium").unwrap_err(),
            "Instance compute 'Cpu' - 'c6i' - 'medium' in 'aws' - 'us-east-1' not found"
        );
        assert!(check("aws", "us-east-1", "cpu", "intel-icl", "x2").is_err());
    }

    #[test]
    fn the_listing_groups_computes_by_vendor_and_region() {
        let listing = listing();
        let aws = &listing["vendors"][0];
        assert_eq!(aws["name"], "aws");
        let us_east = &aws["regions"][0];
        assert_eq!(us_east["computes"].as_array().unwrap().len(), 5 + 1 + 1);
        assert_eq!(listing["vendors"].as_array().unwrap().len(), 3);
    }
}
