//! Who may score an `aad_token` endpoint, the way Azure ML asks for a role on the endpoint: a
//! valid token of the tenant is not enough, its principal must be one the endpoint allows, by
//! object id (`oid`: a user, group member or service principal), application id (`appid` in
//! v1 tokens, `azp` in v2) or app role (`roles`). An endpoint that allows none admits nobody.

use serde::Deserialize;

/// The claims of a verified token that name its principal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub oid: Option<String>,
    pub appid: Option<String>,
    pub azp: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// An endpoint's allowed principals; ids compared without regard to case (they are GUIDs),
/// roles exactly (app roles are case-sensitive values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Principals {
    object_ids: Vec<String>,
    app_ids: Vec<String>,
    roles: Vec<String>,
}

impl Principals {
    pub fn new(object_ids: &[String], app_ids: &[String], roles: &[String]) -> Principals {
        let lower = |ids: &[String]| ids.iter().map(|id| id.to_ascii_lowercase()).collect();
        Principals { object_ids: lower(object_ids), app_ids: lower(app_ids), roles: roles.to_vec() }
    }

    pub fn admits(&self, claims: &Claims) -> bool {
        let listed = |ids: &[String], claim: &Option<String>| {
            claim.as_deref().is_some_and(|c| ids.iter().any(|id| id.eq_ignore_ascii_case(c)))
        };
        listed(&self.object_ids, &claims.oid)
            || listed(&self.app_ids, &claims.appid)
            || listed(&self.app_ids, &claims.azp)
            || claims.roles.iter().any(|role| self.roles.contains(role))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = "6f1e3a52-5b0f-4d1e-9c59-0b8f6cd0a111";
    const APP: &str = "0c9a44d7-3f4e-4b8e-8d3e-7a6a1b2c3d4e";

    fn claims(oid: Option<&str>, appid: Option<&str>, azp: Option<&str>, roles: &[&str]) -> Claims {
        Claims {
            oid: oid.map(String::from),
            appid: appid.map(String::from),
            azp: azp.map(String::from),
            roles: roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn each_kind_of_principal_admits_and_nothing_else_does() {
        let allowed = Principals::new(&[USER.to_uppercase()], &[APP.into()], &["Endpoint.Score".into()]);
        #[rustfmt::skip]
        let cases = [
            ("the object id, in any case", claims(Some(USER), None, None, &[]), true),
            ("the application id of a v1 token", claims(None, Some(APP), None, &[]), true),
            ("the application id of a v2 token", claims(None, None, Some(&APP.to_uppercase()), &[]), true),
            ("an allowed app role among others", claims(None, None, None, &["Reader", "Endpoint.Score"]), true),
            ("another object id", claims(Some(APP), None, None, &[]), false),
            ("a role that differs in case", claims(None, None, None, &["endpoint.score"]), false),
            ("a role named like an allowed id", claims(None, None, None, &[USER]), false),
            ("no principal claims at all", claims(None, None, None, &[]), false),
        ];
        for (case, token, admitted) in cases {
            assert_eq!(allowed.admits(&token), admitted, "{case}");
        }
    }

    #[test]
    fn an_endpoint_that_allows_none_admits_nobody() {
        assert!(!Principals::default().admits(&claims(
            Some(USER),
            Some(APP),
            Some(APP),
            &["Endpoint.Score"]
        )));
    }
}
