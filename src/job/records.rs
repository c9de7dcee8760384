//! `[records]`: where a page's records are, and where a GraphQL-style API reports errors on a 200.

use super::*;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsFile {
    path: Spanned<String>,
    errors: Option<Spanned<String>>,
}

impl Cx<'_> {
    pub(super) fn records(&self, records: &RecordsFile) -> R<RecordsPlan> {
        Ok(RecordsPlan {
            path: self.path(&records.path)?,
            errors: match &records.errors {
                Some(e) if e.get_ref().trim().is_empty() => None,
                Some(e) => Some(self.path(e)?),
                None => Some(JsonPath::parse("$.errors").expect("a valid path")),
            },
        })
    }
}
