//! `[limits]`: concurrency, the request rate and its burst, and how long a server may pause us.

use super::*;

#[derive(Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsFile {
    concurrency: Option<Spanned<u64>>,
    requests_per_second: Option<Spanned<f64>>,
    burst: Option<Spanned<u64>>,
    respect_server_limits: Option<bool>,
    max_wait: Option<Spanned<String>>,
}

impl Cx<'_> {
    pub(super) fn limits(&self, l: &LimitsFile) -> R<Limits> {
        let concurrency = match &l.concurrency {
            Some(c) if *c.get_ref() == 0 => return Err(self.err(c.span(), "concurrency must be at least 1")),
            Some(c) => *c.get_ref() as usize,
            None => 8,
        };
        let requests_per_second = match &l.requests_per_second {
            Some(r) if !(*r.get_ref() > 0.0 && r.get_ref().is_finite()) => {
                return Err(self.err(r.span(), "requests_per_second must be a positive number"))
            }
            Some(r) => Some(*r.get_ref()),
            None => None,
        };
        let burst = match &l.burst {
            Some(b) if *b.get_ref() == 0 => return Err(self.err(b.span(), "burst must be at least 1")),
            Some(b) => u32::try_from(*b.get_ref()).unwrap_or(u32::MAX),
            None => concurrency as u32,
        };
        Ok(Limits {
            concurrency,
            requests_per_second,
            burst,
            respect_server_limits: l.respect_server_limits.unwrap_or(true),
            max_wait: self.duration(&l.max_wait, Duration::from_secs(15 * 60))?,
        })
    }
}
