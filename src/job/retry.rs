//! `[retry]`: attempts, backoff, and the statuses worth another try.

use super::*;

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RetryFile {
    max_attempts: Option<Spanned<u64>>,
    initial_backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    on_status: Option<Spanned<Vec<u16>>>,
}

impl Cx<'_> {
    pub(super) fn retry(&self, r: &RetryFile) -> R<RetryPlan> {
        let max_attempts = match &r.max_attempts {
            Some(m) if *m.get_ref() == 0 => return Err(self.err(m.span(), "max_attempts must be at least 1")),
            Some(m) => u32::try_from(*m.get_ref()).unwrap_or(u32::MAX),
            None => 6,
        };
        let initial_backoff = self.duration(&r.initial_backoff, Duration::from_millis(500))?;
        let max_backoff = self.duration(&r.max_backoff, Duration::from_secs(60))?;
        let on_status = match &r.on_status {
            Some(codes) => {
                if let Some(bad) = codes.get_ref().iter().find(|c| !(100..=599).contains(*c)) {
                    return Err(self.err(codes.span(), format!("{bad} is not an HTTP status")));
                }
                codes.get_ref().clone()
            }
            None => vec![408, 425, 429, 500, 502, 503, 504],
        };
        Ok(RetryPlan { max_attempts, initial_backoff, max_backoff: max_backoff.max(initial_backoff), on_status })
    }
}
