//! `harvest mock-api`: the built-in paginated test API, served until stopped.

use crate::cli::MockApiArgs;

pub async fn mock_api(args: MockApiArgs) -> anyhow::Result<()> {
    let jwt_public_keys = args
        .jwt_public_key
        .iter()
        .map(|path| std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display())))
        .collect::<anyhow::Result<_>>()?;
    let config = harvest_mock::MockConfig {
        records: args.records,
        latency: args.latency.unwrap_or_default(),
        jitter: args.jitter.unwrap_or_default(),
        faults: args.faults.unwrap_or_default(),
        seed: args.seed,
        slow: args.slow,
        retry_after: args.retry_after,
        rate_limit: args.rate_limit,
        secret: args.secret,
        token_lifetime: args.token_lifetime,
        refresh_token: args.refresh_token,
        jwt_public_keys,
    };
    harvest_mock::serve(args.addr, config).await?;
    Ok(())
}
