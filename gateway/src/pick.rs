//! Which deployment takes a request: the one the `azureml-model-deployment` header names
//! (even at 0 % traffic), else a weighted draw over the live traffic split.

use std::sync::Arc;

use http::HeaderName;

use crate::fields::Fields;
use crate::reject::Reject;
use crate::table::{DeploymentRoute, EndpointRoute};

/// A name, not text: a lookup by text parses the name on every request.
pub const DEPLOYMENT: &str = "azureml-model-deployment";
pub const DEPLOYMENT_HEADER: HeaderName = HeaderName::from_static(DEPLOYMENT);

pub fn deployment(endpoint: &EndpointRoute, headers: &impl Fields) -> Result<Arc<DeploymentRoute>, Reject> {
    if let Some(named) = headers.first(&DEPLOYMENT_HEADER) {
        let name = std::str::from_utf8(named).unwrap_or_default().trim();
        return endpoint.deployments.get(name).cloned().ok_or_else(|| Reject::UnknownDeployment {
            endpoint: endpoint.name.to_string(),
            asked: name.to_string(),
        });
    }
    let total: u32 = endpoint.traffic.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return Err(Reject::NoTraffic(endpoint.name.to_string()));
    }
    let name = weighted(&endpoint.traffic, fastrand::u32(0..total))
        .ok_or(Reject::Internal("traffic draw out of range"))?;
    endpoint
        .deployments
        .get(name)
        .cloned()
        .ok_or(Reject::Internal("traffic names a deployment missing from the route table"))
}

/// The mirror deployment when this request is to be copied (never for a request that named
/// its deployment).
pub fn mirror(endpoint: &EndpointRoute, headers: &impl Fields) -> Option<Arc<DeploymentRoute>> {
    let (name, percent) = endpoint.mirror.as_ref()?;
    if headers.first(&DEPLOYMENT_HEADER).is_some() || fastrand::u32(0..100) >= *percent {
        return None;
    }
    endpoint.deployments.get(name).cloned()
}

/// The deployment whose share of `[0, total)` holds `roll`, shares laid out in order.
pub fn weighted(traffic: &[(String, u32)], roll: u32) -> Option<&str> {
    let mut upto = 0;
    for (name, weight) in traffic {
        upto += weight;
        if roll < upto {
            return Some(name);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split() -> Vec<(String, u32)> {
        vec![("blue".into(), 90), ("green".into(), 10)]
    }

    #[test]
    fn each_roll_lands_in_its_deployments_share() {
        let t = split();
        assert_eq!(weighted(&t, 0), Some("blue"));
        assert_eq!(weighted(&t, 89), Some("blue"));
        assert_eq!(weighted(&t, 90), Some("green"));
        assert_eq!(weighted(&t, 99), Some("green"));
        assert_eq!(weighted(&t, 100), None);
    }

    #[test]
    fn every_share_gets_exactly_its_percent_of_rolls() {
        let t = split();
        let green = (0..100).filter(|&r| weighted(&t, r) == Some("green")).count();
        assert_eq!(green, 10);
    }
}
