//! The fields `show` prints that a file cannot set. Users export a resource (`show -o yaml >
//! f.yml`), edit it and apply it (`update -f f.yml`), and Azure's own schemas take these
//! fields on input, so a file may carry them: they are taken out before the file is checked,
//! and never applied. A note on stderr names those that were there (a changed `scoring_uri`
//! has no effect, and the user should know); a value that asks for what moat does not do
//! (`app_insights_enabled: true`, a `scale_settings` other than `default`) is named as one
//! that cannot take effect, and `type` other than `managed` is refused.

use serde_json::Value;

use crate::error::Error;
use crate::spec::Document;

/// Which resource a file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Endpoint,
    Deployment,
}

/// Fields `show` prints, for each resource.
fn printed(resource: Resource) -> &'static [&'static str] {
    match resource {
        Resource::Endpoint => {
            &["id", "provisioning_state", "scoring_uri", "swagger_uri", "openapi_uri", "properties"]
        }
        Resource::Deployment => {
            &["id", "provisioning_state", "health", "instances", "egress", "warnings", "nodes", "properties"]
        }
    }
}

/// Takes the read-only fields out of `doc`; the notes to say about them.
pub fn take(doc: &mut Document, resource: Resource) -> Result<Vec<String>, Error> {
    let Value::Object(map) = &mut doc.value else { return Ok(Vec::new()) };
    let mut notes = Vec::new();
    if let Some(kind) = map.get("type") {
        if kind.as_str() != Some("managed") {
            let message = "moat runs managed online endpoints only: `type` may be `managed` or left out";
            return Err(Error::Invalid(doc.locate("type", message)));
        }
        map.remove("type");
    }
    if resource == Resource::Deployment {
        if let Some(enabled) = map.remove("app_insights_enabled")
            && enabled != Value::Bool(false)
        {
            notes.push(
                "app_insights_enabled cannot take effect: moat sends no telemetry to Application Insights (see tracing.otlp_endpoint and /metrics)"
                    .to_string(),
            );
        }
        if let Some(scale) = map.remove("scale_settings")
            && scale.get("type").and_then(Value::as_str) != Some("default")
        {
            notes.push(
                "scale_settings cannot take effect: only `type: default` (instance_count instances per node)"
                    .to_string(),
            );
        }
    }
    let ignored: Vec<&str> = printed(resource).iter().copied().filter(|f| map.remove(*f).is_some()).collect();
    if !ignored.is_empty() {
        notes.push(format!(
            "read-only fields ignored (show prints them; a file cannot set them): {}",
            ignored.join(", ")
        ));
    }
    let file = doc.file.display();
    Ok(notes.into_iter().map(|n| format!("note: {file}: {n}")).collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn taken(text: &str, resource: Resource) -> (Result<Vec<String>, Error>, Value) {
        let mut doc = Document::parse(Path::new("f.yml"), text, &[]).expect("yaml");
        let notes = take(&mut doc, resource);
        (notes, doc.value)
    }

    #[test]
    fn shows_fields_are_taken_out_and_named_and_what_cannot_take_effect_is_said() {
        let (notes, value) = taken(
            "name: ep\nid: x\ntype: managed\nscoring_uri: http://elsewhere/score\nprovisioning_state: Succeeded\ntraffic: {blue: 100}\n",
            Resource::Endpoint,
        );
        let notes = notes.expect("accepted");
        assert_eq!(value, serde_json::json!({"name": "ep", "traffic": {"blue": 100}}));
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("f.yml") && notes[0].contains("id, provisioning_state, scoring_uri"),
            "{notes:?}"
        );

        let (notes, value) = taken(
            "name: blue\napp_insights_enabled: false\nscale_settings: {type: default}\nhealth: Healthy\ninstances: []\n",
            Resource::Deployment,
        );
        assert_eq!(value, serde_json::json!({"name": "blue"}));
        assert_eq!(notes.expect("accepted").len(), 1, "defaults need no word but the read-only list");

        let (notes, _) = taken(
            "name: blue\napp_insights_enabled: true\nscale_settings: {type: target_utilization}\n",
            Resource::Deployment,
        );
        let notes = notes.expect("accepted");
        assert!(notes.iter().any(|n| n.contains("app_insights_enabled cannot take effect")), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("scale_settings cannot take effect")), "{notes:?}");

        let (refused, _) = taken("name: ep\ntype: kubernetes\n", Resource::Endpoint);
        assert!(refused.expect_err("refused").to_string().contains("managed online endpoints only"));
        let (none, _) = taken("name: ep\n", Resource::Endpoint);
        assert!(none.expect("plain").is_empty());
    }
}
