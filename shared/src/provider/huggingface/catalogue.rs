//! The CPU instance catalogue and its prices (USD per replica-hour).
//!
//! It ships as data (the contract's price table) so a spec is validated and priced before
//! any network call, and it is refreshed from `GET /v2/provider` when that answers. Unknown
//! hardware is [`ProviderError::Invalid`]: retrying cannot fix it.

use serde::Deserialize;

use crate::provider::ProviderError;
use crate::provider::types::{DeploymentSpec, InstanceSpec};

/// One purchasable CPU configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeOffer {
    /// Cloud vendor.
    pub vendor: String,
    /// Cloud region.
    pub region: String,
    /// Instance type.
    pub instance_type: String,
    /// Instance size.
    pub instance_size: String,
    /// USD per replica-hour.
    pub price_per_hour: f64,
    /// HF's availability (`available`, `low_availability`, `not_available`, `reserved`,
    /// `deprecated`).
    pub status: String,
}

/// Sizes of one instance type with their prices.
type Sizes = &'static [(&'static str, f64)];

/// The contract's table: (vendor, region, type, [(size, price)]).
const BUILTIN: &[(&str, &str, &str, Sizes)] = &[
    ("aws", "us-east-1", "intel-spr", AWS_SPR),
    ("aws", "eu-west-1", "intel-spr", AWS_SPR),
    (
        "azure",
        "eastus",
        "intel-xeon",
        &[("x1", 0.060), ("x2", 0.120), ("x4", 0.240), ("x8", 0.480)],
    ),
    (
        "gcp",
        "us-east4",
        "intel-spr",
        &[("x1", 0.050), ("x2", 0.100), ("x4", 0.200), ("x8", 0.400)],
    ),
];
const AWS_SPR: Sizes = &[
    ("x1", 0.033),
    ("x2", 0.067),
    ("x4", 0.134),
    ("x8", 0.268),
    ("x16", 0.536),
];

/// The offers hokusai-serve may deploy on.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalogue {
    offers: Vec<ComputeOffer>,
}

impl Catalogue {
    /// The table shipped with the code.
    pub fn builtin() -> Self {
        let offers = BUILTIN
            .iter()
            .flat_map(|(vendor, region, kind, sizes)| {
                sizes.iter().map(move |(size, price)| ComputeOffer {
                    vendor: (*vendor).to_owned(),
                    region: (*region).to_owned(),
                    instance_type: (*kind).to_owned(),
                    instance_size: (*size).to_owned(),
                    price_per_hour: *price,
                    status: "available".to_owned(),
                })
            })
            .collect();
        Self { offers }
    }

    /// The CPU offers of a `GET /v2/provider` body; `None` when it holds none.
    pub fn from_provider_listing(body: &serde_json::Value) -> Option<Self> {
        let listing: Listing = serde_json::from_value(body.clone()).ok()?;
        let offers: Vec<ComputeOffer> = listing
            .vendors
            .into_iter()
            .flat_map(|v| {
                let vendor = v.name;
                v.regions.into_iter().flat_map(move |r| {
                    let (vendor, region) = (vendor.clone(), r.name);
                    r.computes
                        .into_iter()
                        .filter_map(move |c| c.offer(&vendor, &region))
                })
            })
            .collect();
        (!offers.is_empty()).then_some(Self { offers })
    }

    /// Every offer.
    pub fn offers(&self) -> &[ComputeOffer] {
        &self.offers
    }

    /// The offer for `instance`, or `Invalid` naming what is wrong.
    pub fn lookup(&self, instance: &InstanceSpec) -> Result<&ComputeOffer, ProviderError> {
        let offer = self.offers.iter().find(|o| {
            o.vendor == instance.vendor
                && o.region == instance.region
                && o.instance_type == instance.instance_type
                && o.instance_size == instance.instance_size
        });
        let Some(offer) = offer else {
            return Err(ProviderError::invalid(format!(
                "Instance compute 'Cpu' - '{}' - '{}' in '{}' - '{}' not found",
                instance.instance_type, instance.instance_size, instance.vendor, instance.region
            )));
        };
        if matches!(offer.status.as_str(), "not_available" | "deprecated") {
            return Err(ProviderError::invalid(format!(
                "Instance compute '{}' - '{}' in '{}' - '{}' is {}",
                offer.instance_type, offer.instance_size, offer.vendor, offer.region, offer.status
            )));
        }
        Ok(offer)
    }

    /// Price per hour of `spec` at its most: price × `max_replica`.
    pub fn hourly_cost_usd(&self, spec: &DeploymentSpec) -> Result<f64, ProviderError> {
        let offer = self.lookup(&spec.instance)?;
        Ok(offer.price_per_hour * f64::from(spec.scaling.max_replica))
    }
}

#[derive(Deserialize)]
struct Listing {
    vendors: Vec<ListedVendor>,
}

#[derive(Deserialize)]
struct ListedVendor {
    name: String,
    #[serde(default)]
    regions: Vec<ListedRegion>,
}

#[derive(Deserialize)]
struct ListedRegion {
    name: String,
    #[serde(default)]
    computes: Vec<ListedCompute>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListedCompute {
    accelerator: String,
    instance_type: String,
    instance_size: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    price_per_hour: Option<f64>,
}

impl ListedCompute {
    fn offer(self, vendor: &str, region: &str) -> Option<ComputeOffer> {
        (self.accelerator == "cpu").then(|| ComputeOffer {
            vendor: vendor.to_owned(),
            region: region.to_owned(),
            instance_type: self.instance_type,
            instance_size: self.instance_size,
            price_per_hour: self.price_per_hour.unwrap_or(0.0),
            status: self.status.unwrap_or_else(|| "available".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(vendor: &str, region: &str, kind: &str, size: &str) -> InstanceSpec {
        InstanceSpec {
            vendor: vendor.into(),
            region: region.into(),
            instance_type: kind.into(),
            instance_size: size.into(),
        }
    }

    #[test]
    fn builtin_prices_are_the_contract_table() {
        let catalogue = Catalogue::builtin();
        let price = |v, r, t, s| {
            catalogue
                .lookup(&instance(v, r, t, s))
                .unwrap()
                .price_per_hour
        };
        assert_eq!(price("aws", "us-east-1", "intel-spr", "x2"), 0.067);
        assert_eq!(price("aws", "eu-west-1", "intel-spr", "x16"), 0.536);
        assert_eq!(price("azure", "eastus", "intel-xeon", "x8"), 0.480);
        assert_eq!(price("gcp", "us-east4", "intel-spr", "x1"), 0.050);
        assert_eq!(catalogue.offers().len(), 5 + 5 + 4 + 4);
    }

    #[test]
    fn unknown_hardware_is_invalid_and_names_it() {
        let catalogue = Catalogue::builtin();
        for bad in [
            instance("aws", "us-east-1", "c6i", "medium"),
            instance("ovh", "us-east-1", "intel-spr", "x2"),
            instance("aws", "mars-1", "intel-spr", "x2"),
            instance("azure", "eastus", "intel-xeon", "x16"),
            instance("aws", "us-east-1", "intel-icl", "x2"),
        ] {
            let err = catalogue.lookup(&bad).unwrap_err();
            assert_eq!(err.kind(), "invalid");
            assert!(err.message().contains(&bad.instance_type), "{err}");
        }
    }

    #[test]
    fn the_provider_listing_replaces_prices_and_keeps_cpu_only() {
        let body = serde_json::json!({"vendors":[{"name":"aws","regions":[{"name":"us-east-1",
            "computes":[
              {"id":"aws-us-east-1-intel-spr-x2","accelerator":"cpu","instanceType":"intel-spr",
               "instanceSize":"x2","memoryGb":8,"status":"available","pricePerHour":0.07},
              {"id":"aws-us-east-1-intel-icl-x2","accelerator":"cpu","instanceType":"intel-icl",
               "instanceSize":"x2","status":"deprecated","pricePerHour":0.06},
              {"id":"aws-us-east-1-nvidia-t4-x1","accelerator":"gpu","instanceType":"nvidia-t4",
               "instanceSize":"x1","status":"available","pricePerHour":0.5}]}]}]});
        let catalogue = Catalogue::from_provider_listing(&body).expect("cpu offers");
        assert_eq!(catalogue.offers().len(), 2);
        let spr = instance("aws", "us-east-1", "intel-spr", "x2");
        assert_eq!(catalogue.lookup(&spr).unwrap().price_per_hour, 0.07);
        let icl = instance("aws", "us-east-1", "intel-icl", "x2");
        assert!(
            catalogue
                .lookup(&icl)
                .unwrap_err()
                .message()
                .contains("deprecated")
        );
        assert!(Catalogue::from_provider_listing(&serde_json::json!({"vendors":[]})).is_none());
    }
}
