//! Azure VM sizes moat knows, for `instance_type`: vCPUs and memory per instance.

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sku {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
}

const fn sku(name: &'static str, vcpus: u32, memory_mib: u64) -> Sku {
    Sku { name, vcpus, memory_mib }
}

pub const KNOWN: &[Sku] = &[
    sku("Standard_F1s", 1, 2048),
    sku("Standard_F2s", 2, 4096),
    sku("Standard_F2s_v2", 2, 4096),
    sku("Standard_F4s_v2", 4, 8192),
    sku("Standard_F8s_v2", 8, 16384),
    sku("Standard_F16s_v2", 16, 32768),
    sku("Standard_F32s_v2", 32, 65536),
    sku("Standard_DS1_v2", 1, 3584),
    sku("Standard_DS2_v2", 2, 7168),
    sku("Standard_DS3_v2", 4, 14336),
    sku("Standard_DS4_v2", 8, 28672),
    sku("Standard_DS5_v2", 16, 57344),
    sku("Standard_D2as_v4", 2, 8192),
    sku("Standard_D4as_v4", 4, 16384),
    sku("Standard_D8as_v4", 8, 32768),
    sku("Standard_E2s_v3", 2, 16384),
    sku("Standard_E4s_v3", 4, 32768),
    sku("Standard_E8s_v3", 8, 65536),
];

/// The SKU by name, case-insensitively, or an error listing the known ones.
pub fn lookup(name: &str) -> Result<Sku, Error> {
    KNOWN.iter().find(|s| s.name.eq_ignore_ascii_case(name)).copied().ok_or_else(|| {
        let known: Vec<&str> = KNOWN.iter().map(|s| s.name).collect();
        Error::Invalid(format!("instance_type {name:?} is not a known SKU; known: {}", known.join(", ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_ignores_case_and_lists_known_skus_on_a_miss() {
        assert_eq!(lookup("standard_f2s_v2").expect("known").name, "Standard_F2s_v2");
        let e = lookup("Standard_Huge").unwrap_err().to_string();
        assert!(e.contains("Standard_F2s_v2") && e.contains("Standard_DS3_v2"), "{e}");
    }
}
