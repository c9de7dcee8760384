//! `[notify]`: the webhook a run sends when it ends.

use super::*;
use crate::keys::KeyReader;
use crate::plan::NotifyPlan;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct NotifyFile {
    /// Where the run report is POSTed, as `"${WEBHOOK_URL}"`: a secret, like the URL's token.
    url: Spanned<String>,
    /// Signs each notification with HMAC-SHA256, as `"${WEBHOOK_SECRET}"`.
    secret: Option<Spanned<String>>,
    /// When: `["success", "failure"]` by default; an interrupted run is a failure.
    on: Option<Vec<Spanned<String>>>,
}

impl Cx<'_> {
    pub(super) fn notify(&self, n: &NotifyFile) -> R<NotifyPlan> {
        let text = self.secret(&n.url, "notify.url")?;
        let url = url::Url::parse(&text)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| self.err(n.url.span(), "notify.url must be an http or https URL"))?;
        let secret = n.secret.as_ref().map(|s| self.secret(s, "notify.secret")).transpose()?;
        let (mut on_success, mut on_failure) = (n.on.is_none(), n.on.is_none());
        for when in n.on.iter().flatten() {
            match when.get_ref().as_str() {
                "success" => on_success = true,
                "failure" => on_failure = true,
                other => {
                    return Err(
                        self.err(when.span(), format!("notify.on takes \"success\" and \"failure\", not {other:?}"))
                    )
                }
            }
        }
        Ok(NotifyPlan { url, secret, on_success, on_failure })
    }
}
