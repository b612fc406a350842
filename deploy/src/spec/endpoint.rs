//! The endpoint YAML (`az ml online-endpoint`): name, auth mode, public network access,
//! traffic split and mirror.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Access, Broken, Document, Text, ensure, names, texts};
use crate::error::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointFile {
    #[serde(rename = "$schema")]
    pub schema: Option<String>,
    pub name: Option<String>,
    pub auth_mode: Option<AuthMode>,
    pub public_network_access: Option<Access>,
    pub traffic: Option<BTreeMap<String, u32>>,
    pub mirror_traffic: Option<BTreeMap<String, u32>>,
    pub description: Option<String>,
    pub tags: Option<BTreeMap<String, Text>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    #[default]
    Key,
    AmlToken,
    AadToken,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSpec {
    pub name: String,
    pub auth_mode: AuthMode,
    pub public_network_access: Access,
    pub traffic: BTreeMap<String, u32>,
    pub mirror_traffic: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// `--name` wins over the file's `name`.
pub fn validate(doc: &Document, name: Option<&str>) -> Result<EndpointSpec, Error> {
    let file: EndpointFile = doc.decode()?;
    let name = match (name, file.name) {
        (Some(flag), _) => flag.to_string(),
        (None, Some(field)) => field,
        (None, None) => {
            return Err(Error::Invalid(doc.locate("", "no endpoint name: give --name or set `name`")));
        }
    };
    let auth_mode = file.auth_mode.unwrap_or_default();
    let public_network_access = file.public_network_access.unwrap_or_default();
    let spec = EndpointSpec {
        name,
        auth_mode,
        public_network_access,
        traffic: file.traffic.unwrap_or_default(),
        mirror_traffic: file.mirror_traffic.unwrap_or_default(),
        description: file.description,
        tags: texts(file.tags),
    };
    spec.check().map_err(|broken| broken.located(doc))?;
    Ok(spec)
}

impl EndpointSpec {
    /// The endpoint's own rules, whoever made the spec: its name, and the traffic rules:
    /// each share 0-100 percent, live shares totalling 0 or 100; a mirror to one deployment
    /// at most, at most 50 percent, and not to one that takes live traffic.
    pub fn check(&self) -> Result<(), Broken> {
        names::check("endpoint", &self.name)
            .map_err(|e| Broken { field: "name".into(), message: e.to_string() })?;
        for (deployment, percent) in self.traffic.iter().chain(&self.mirror_traffic) {
            names::check("deployment", deployment)
                .map_err(|e| Broken { field: "traffic".into(), message: e.to_string() })?;
            ensure(*percent <= 100, &format!("traffic.{deployment}"), "a share is 0 to 100 percent")?;
        }
        let total: u32 = self.traffic.values().sum();
        ensure(
            total == 0 || total == 100,
            "traffic",
            format!("shares add up to {total}; they must total 0 or 100"),
        )?;
        let mirrored: Vec<(&String, &u32)> = self.mirror_traffic.iter().filter(|(_, p)| **p > 0).collect();
        ensure(mirrored.len() <= 1, "mirror_traffic", "mirror traffic goes to one deployment at most")?;
        for (deployment, percent) in mirrored {
            let field = format!("mirror_traffic.{deployment}");
            ensure(*percent <= 50, &field, "a mirror takes at most 50 percent")?;
            let live = self.traffic.get(deployment).copied().unwrap_or(0);
            ensure(
                live == 0,
                &field,
                format!("{deployment} takes {live}% of live traffic; a mirror must take none"),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str, name: Option<&str>) -> Result<EndpointSpec, Error> {
        validate(&Document::parse(Path::new("ep.yml"), text, &[])?, name)
    }

    #[test]
    fn defaults_are_key_auth_and_public_access() {
        let ep = parse("$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\nname: my-endpoint\n", None).expect("valid");
        assert_eq!((ep.auth_mode, ep.public_network_access), (AuthMode::Key, Access::Enabled));
    }

    #[test]
    fn the_name_flag_wins_and_must_follow_the_rule() {
        assert_eq!(parse("name: from-file\n", Some("from-flag")).expect("valid").name, "from-flag");
        let e = parse("name: 9lives\n", None).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        assert!(e.to_string().starts_with("ep.yml:1:7: field `name`"), "{e}");
    }

    #[test]
    fn traffic_must_total_0_or_100() {
        assert!(parse("name: abc\ntraffic: {blue: 90, green: 10}\n", None).is_ok());
        let e = parse("name: abc\ntraffic: {blue: 90, green: 20}\n", None).unwrap_err().to_string();
        assert!(e.contains("add up to 110"), "{e}");
    }

    #[test]
    fn unknown_modes_are_parse_errors() {
        assert_eq!(parse("name: abc\nauth_mode: password\n", None).unwrap_err().exit_code(), 2);
        assert_eq!(parse("name: abc\npublic_network_access: maybe\n", None).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn a_mirror_is_one_deployment_at_most_50_percent_without_live_traffic() {
        assert!(parse("name: abc\ntraffic: {blue: 100}\nmirror_traffic: {green: 50}\n", None).is_ok());
        for (text, why) in [
            ("name: abc\nmirror_traffic: {green: 51}\n", "at most 50 percent"),
            ("name: abc\nmirror_traffic: {green: 10, red: 10}\n", "one deployment at most"),
            ("name: abc\ntraffic: {blue: 100}\nmirror_traffic: {blue: 10}\n", "must take none"),
        ] {
            let e = parse(text, None).unwrap_err().to_string();
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
