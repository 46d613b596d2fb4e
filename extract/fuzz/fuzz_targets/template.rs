//! Any bytes as a template, the way the API reads one: a typed error or a
//! valid template, never a panic; a valid template must survive a round
//! trip through its JSON form.
//!
//! `scripts/fuzz.sh template` (see there for the options).

#![no_main]

use libfuzzer_sys::fuzz_target;
use paperhook_extract::Template;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(template) = Template::from_json(json) else {
        return;
    };
    let again = serde_json::to_value(&template).expect("a template serialises");
    let back = Template::from_json(again).expect("a valid template's JSON is valid");
    assert_eq!(back, template);
});
