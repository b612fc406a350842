//! The endpoint YAML (`az ml online-endpoint`): name, auth mode, public network access,
//! traffic split and mirror; for `aad_token`, the principals allowed to score (moat's stand-in
//! for a role assignment on the endpoint).

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
    pub allowed_principals: Option<AllowedPrincipals>,
}

/// Who may score an `aad_token` endpoint: any one of these object ids, application ids or app
/// roles. None at all: nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowedPrincipals {
    #[serde(default)]
    pub object_ids: Vec<String>,
    #[serde(default)]
    pub app_ids: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl AllowedPrincipals {
    pub fn is_empty(&self) -> bool {
        self.object_ids.is_empty() && self.app_ids.is_empty() && self.roles.is_empty()
    }

    /// The list that holds principals of `kind` (`object_id`, `app_id`, `role`).
    pub fn field(kind: &str) -> Option<&'static str> {
        match kind {
            "object_id" => Some("object_ids"),
            "app_id" => Some("app_ids"),
            "role" => Some("roles"),
            _ => None,
        }
    }
}

/// Entra ids are GUIDs: 8-4-4-4-12 hex digits.
fn is_guid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
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
    #[serde(default, skip_serializing_if = "AllowedPrincipals::is_empty")]
    pub allowed_principals: AllowedPrincipals,
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
        allowed_principals: file.allowed_principals.unwrap_or_default(),
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
        let allowed = &self.allowed_principals;
        ensure(
            allowed.is_empty() || self.auth_mode == AuthMode::AadToken,
            "allowed_principals",
            "applies to auth_mode aad_token only",
        )?;
        for (field, ids) in [("object_ids", &allowed.object_ids), ("app_ids", &allowed.app_ids)] {
            for (i, id) in ids.iter().enumerate() {
                let at = format!("allowed_principals.{field}[{i}]");
                ensure(
                    is_guid(id),
                    &at,
                    format!("{id:?} is not an id like 6f1e3a52-5b0f-4d1e-9c59-0b8f6cd0a111"),
                )?;
            }
        }
        for (i, role) in allowed.roles.iter().enumerate() {
            let plain = !role.is_empty() && role.len() <= 120 && !role.contains(char::is_whitespace);
            ensure(
                plain,
                &format!("allowed_principals.roles[{i}]"),
                "an app role's value: no spaces, 1-120 characters",
            )?;
        }
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
    fn allowed_principals_are_ids_or_roles_of_an_aad_token_endpoint() {
        let ok = "name: abc\nauth_mode: aad_token\nallowed_principals:\n  object_ids: [6F1E3A52-5b0f-4d1e-9c59-0b8f6cd0a111]\n  roles: [Endpoint.Score]\n";
        let ep = parse(ok, None).expect("valid");
        assert_eq!(ep.allowed_principals.roles, ["Endpoint.Score"]);
        for (text, expected) in [
            (
                "name: abc\nallowed_principals: {roles: [Scorer]}\n",
                "field `allowed_principals`: applies to auth_mode aad_token only",
            ),
            (
                "name: abc\nauth_mode: aad_token\nallowed_principals: {app_ids: [not-a-guid]}\n",
                "field `allowed_principals.app_ids[0]`",
            ),
            (
                "name: abc\nauth_mode: aad_token\nallowed_principals: {roles: [two words]}\n",
                "field `allowed_principals.roles[0]`",
            ),
            (
                "name: abc\nauth_mode: aad_token\nallowed_principals: {groups: [x]}\n",
                "unknown field `groups`",
            ),
        ] {
            let e = parse(text, None).unwrap_err().to_string();
            assert!(e.contains(expected), "{text}: {e}");
        }
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
