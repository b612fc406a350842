//! The YAML files and `--set` words an operator gives: never a panic, one clear error or a
//! spec that passes its own check.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use moat::spec::deployment::{self, Names};
use moat::spec::{Document, endpoint, workspace};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The first line, if it looks like one, is a `--set` word; the rest the file.
    let (sets, body) = match text.split_once('\n') {
        Some((first, rest)) if first.contains('=') => (vec![first.to_string()], rest),
        _ => (Vec::new(), text),
    };
    let Ok(doc) = Document::parse(Path::new("fuzz.yml"), body, &sets) else { return };
    if let Ok(spec) = workspace::validate(&doc) {
        assert!(spec.check().is_ok());
    }
    if let Ok(spec) = endpoint::validate(&doc, None) {
        assert!(spec.check().is_ok());
    }
    if let Ok(spec) = deployment::validate(&doc, Names { name: None, endpoint_name: None }) {
        assert!(spec.check().is_ok());
    }
});
