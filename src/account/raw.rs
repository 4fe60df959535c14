//! An account's sections as written (the config file's and an account
//! document's alike): serde structs that refuse unknown keys.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    pub email: Option<RawField>,
    pub first_name: Option<RawField>,
    pub last_name: Option<RawField>,
    pub department: Option<RawField>,
    pub groups: Option<RawField>,
    pub default_license: Option<String>,
    pub default_features: Option<Vec<String>>,
    pub rules: Option<Vec<RawRule>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawField {
    pub from: Option<Vec<String>>,
    pub transforms: Option<Vec<RawTransform>>,
    pub default: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTransform {
    Named(String),
    Table(RawTransformTable),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransformTable {
    pub split: Option<String>,
    pub regex: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    pub attribute: Option<String>,
    pub equals: Option<String>,
    pub contains: Option<String>,
    pub regex: Option<String>,
    pub present: Option<bool>,
    pub negate: Option<bool>,
    pub ignore_case: Option<bool>,
    pub license: Option<String>,
    pub groups: Option<Vec<String>>,
    pub features: Option<Vec<String>>,
    pub role: Option<String>,
}
