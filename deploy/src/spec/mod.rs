//! The YAML specs users write (Azure ML CLI v2 shapes), and the validated types they become.
//! A `*File` type mirrors the file (serde, unknown keys refused); `validate` turns it into a
//! `*Spec` whose invariants hold, so an invalid spec cannot exist past this module.
//!
//! - [`yaml`]: reading a file, `--set`, errors at file:line:column.
//! - [`names`]: the endpoint and deployment name rule.
//! - [`sku`]: the VM sizes `instance_type` may name.
//! - [`workspace`], [`endpoint`], [`deployment`]: one resource each.
//! - [`read_only`]: the fields `show` prints, which a file may carry and never sets.

pub mod deployment;
pub mod endpoint;
pub mod names;
pub mod read_only;
pub mod sku;
pub mod workspace;
pub mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::error::Error;
pub use yaml::Document;

/// `enabled | disabled`, for public network access and egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    #[default]
    Enabled,
    Disabled,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Enabled => "enabled",
            Access::Disabled => "disabled",
        })
    }
}

/// A scalar written as a string, a number or a boolean, kept as its text (`tags`,
/// `environment_variables`, `version`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Text, E> {
                Ok(Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

pub fn texts(map: Option<BTreeMap<String, Text>>) -> BTreeMap<String, String> {
    map.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()
}

/// A field written either as a plain string or as a mapping (`model: path/` or `model:
/// {path: ...}`); `From<String>` says what the string means.
pub fn string_or_struct<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
where
    T: Deserialize<'de> + From<String>,
    D: Deserializer<'de>,
{
    struct V<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de> + From<String>> Visitor<'de> for V<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string or a mapping")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<T>, E> {
            Ok(Some(T::from(v.to_string())))
        }
        fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Option<T>, M::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
        }
    }
    d.deserialize_any(V(std::marker::PhantomData))
}

/// A path from a spec file: `azureml:` asset references are refused (moat runs images and
/// local files), relative paths resolve against the file's folder, and the path must exist.
/// What may be mounted is the spec's `check`'s to say.
pub fn local_path(doc: &Document, field: &str, written: &str) -> Result<PathBuf, Error> {
    if written.starts_with("azureml:") {
        return Err(Error::Invalid(doc.locate(
            field,
            &format!("{written:?} is an Azure ML asset reference; moat needs a local path"),
        )));
    }
    let base = match doc.file.parent() {
        Some(dir) if doc.file != Path::new("--set") => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let path = base.join(written);
    path.canonicalize().map_err(|e| Error::Invalid(doc.locate(field, &format!("{}: {e}", path.display()))))
}

/// A rule a spec broke: the field (a dotted path, as `--set` writes it) and what was
/// expected. `validate` locates it in the file; the daemon names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    pub field: String,
    pub message: String,
}

impl Broken {
    /// The daemon's error for a spec that did not come from a file it can point into.
    pub fn into_error(self) -> Error {
        if self.field.is_empty() {
            Error::Invalid(self.message)
        } else {
            Error::Invalid(format!("field `{}`: {}", self.field, self.message))
        }
    }

    /// `validate`'s error, at the field's place in the file.
    pub fn located(self, doc: &Document) -> Error {
        Error::Invalid(doc.locate(&self.field, &self.message))
    }
}

/// Fails with `field` and `message` unless `ok`.
pub fn ensure(ok: bool, field: &str, message: impl Into<String>) -> Result<(), Broken> {
    if ok { Ok(()) } else { Err(Broken { field: field.to_string(), message: message.into() }) }
}

/// A host folder a container may see: absolute and already resolved (so the path checked is
/// the path mounted), and allowed by the mount rule (system folders, the Docker socket). The
/// daemon checks again with its home and `supervisor.model_roots`.
pub fn check_mount_source(field: &str, path: &Path) -> Result<(), Broken> {
    check_mount_with(&moat_supervisor::MountPolicy::default(), field, path)
}

pub fn check_mount_with(
    policy: &moat_supervisor::MountPolicy,
    field: &str,
    path: &Path,
) -> Result<(), Broken> {
    let resolved = path.canonicalize().ok();
    ensure(
        path.is_absolute() && resolved.as_deref() == Some(path),
        field,
        format!("{} must be an existing absolute path with no symbolic links or `..`", path.display()),
    )?;
    policy.check(path).map(drop).map_err(|message| Broken { field: field.to_string(), message })
}

/// "not supported yet" for a feature a later issue brings, never a setting stored and ignored.
pub fn not_yet(doc: &Document, field: &str, what: &str) -> Error {
    Error::Invalid(doc.locate(field, &format!("{what} is not supported yet")))
}

/// Which resource a file describes, for `moat validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Workspace,
    Endpoint,
    Deployment,
}

impl Kind {
    /// By `$schema` when it names one, else by the fields only one kind has.
    pub fn of(doc: &Document) -> Kind {
        let schema =
            doc.value.get("$schema").and_then(|s| s.as_str()).unwrap_or_default().to_ascii_lowercase();
        if schema.contains("deployment") {
            return Kind::Deployment;
        }
        if schema.contains("endpoint") {
            return Kind::Endpoint;
        }
        if schema.contains("workspace") {
            return Kind::Workspace;
        }
        let has = |k: &str| doc.value.get(k).is_some();
        if ["endpoint_name", "model", "environment", "instance_type", "instance_count", "code_configuration"]
            .iter()
            .any(|k| has(k))
        {
            Kind::Deployment
        } else if has("private_endpoints") {
            Kind::Workspace
        } else {
            Kind::Endpoint
        }
    }
}
