//! `[incremental]`: the field whose newest value is the next sync's mark, and how it is sent.

use super::*;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct IncrementalFile {
    field: Spanned<String>,
    param: Spanned<String>,
    start: Option<Spanned<String>>,
    lookback: Option<Spanned<String>>,
}

impl Cx<'_> {
    pub(super) fn incremental(&self, i: &IncrementalFile) -> R<IncrementalPlan> {
        let field = JsonPath::parse(i.field.get_ref())
            .map_err(|e| self.err(i.field.span(), format!("incremental.field is not a valid JSONPath: {e}")))?;
        let param = i.param.get_ref().trim().to_string();
        if param.is_empty() {
            return Err(self.err(i.param.span(), "incremental.param names the parameter the mark is sent as"));
        }
        let start = match &i.start {
            Some(s) => Some(self.interpolate(s.get_ref(), &s.span(), false)?),
            None => None,
        };
        let lookback = match &i.lookback {
            Some(_) => Some(self.duration(&i.lookback, Duration::ZERO)?),
            None => None,
        };
        // Whether the request places it is known once the request is read.
        Ok(IncrementalPlan { field, param, start, lookback, placeholder: false })
    }
}
