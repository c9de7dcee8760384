//! What the command line changes in a validated plan: `--output-dir`, `--format`, the limits,
//! and a shard's share of the job's limits.

use super::*;

/// Apply command-line overrides to a validated plan.
pub(super) fn apply(plan: &mut Plan, o: &Overrides) -> Result<(), String> {
    if let Some(dir) = &o.output_dir {
        plan.output.dir = dir.clone();
    }
    match o.format {
        Some(format) if format != plan.output.format => {
            // The job's compression was chosen for its own format: the other format's default.
            plan.output.format = format;
            plan.output.compression = match format {
                Format::Ndjson => Compression::None,
                Format::Parquet | Format::Delta => Compression::Zstd,
            };
        }
        _ => {}
    }
    if let Some(pages) = o.max_pages {
        plan.pagination.max_pages = Some(pages);
    }
    if let Some(c) = o.concurrency {
        if c == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        plan.limits.concurrency = c;
    }
    if let Some(rps) = o.requests_per_second {
        if !(rps > 0.0 && rps.is_finite()) {
            return Err("--rps must be a positive number".into());
        }
        plan.limits.requests_per_second = Some(rps);
    }
    if let Some(sharded) = &o.shard {
        share_among_shards(plan, sharded)?;
    }
    Ok(())
}

/// A job's limits are the API's for the whole job: each of `count` shards takes its share of
/// the concurrency, the rate and the burst. One rotating refresh token cannot be shared: the
/// first worker to use it kills it for the others.
fn share_among_shards(plan: &mut Plan, sharded: &crate::shard::ShardPlan) -> Result<(), String> {
    let count = sharded.shard.count;
    let rotating = matches!(&plan.auth, crate::auth::AuthPlan::OAuth(grant)
        if matches!(grant.flow, crate::auth::oauth::Flow::RefreshToken { .. }));
    if rotating && count > 1 {
        return Err(format!(
            "kind = \"oauth2_refresh_token\" cannot run as {count} shards: the server may rotate the refresh \
             token on every use, and the first worker to use it would leave the others a dead one"
        ));
    }
    let limits = &mut plan.limits;
    limits.concurrency = (limits.concurrency / count as usize).max(1);
    limits.requests_per_second = limits.requests_per_second.map(|rps| rps / f64::from(count));
    limits.burst = (limits.burst / count).max(1);
    plan.shard = Some(sharded.clone());
    Ok(())
}
