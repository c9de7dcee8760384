//! The mock's misbehaviour on demand: injected faults and a server-side rate limit.
//!
//! `--faults "503=0.05,reset=0.02,..."` draws one fault per request from a seeded generator
//! (the same run misbehaves the same way); `--rate-limit RPS` answers 429 with Retry-After and
//! X-RateLimit-* headers once a token bucket of RPS per second (burst: one second's worth) is
//! empty, and sends X-RateLimit-Remaining on every response.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A way for one response to go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An error status (500, 502, 503, or 429 with Retry-After).
    Status(u16),
    /// The connection closes before any response.
    Reset,
    /// The head and half the body arrive, then the connection closes.
    Cut,
    /// Half the body, properly framed: not valid JSON.
    Invalid,
    /// The response waits `MockConfig::slow` before it starts.
    Slow,
}

impl Fault {
    pub fn parse(name: &str) -> Option<Fault> {
        Some(match name {
            "reset" => Fault::Reset,
            "cut" => Fault::Cut,
            "invalid" => Fault::Invalid,
            "slow" => Fault::Slow,
            status => Fault::Status(status.parse().ok().filter(|s| (400..=599).contains(s))?),
        })
    }
}

/// Per-request probabilities of each fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    pub odds: Vec<(Fault, f64)>,
}

impl Faults {
    /// `"500=0.05,503=0.05,429=0.02,reset=0.01,cut=0.01,invalid=0.01,slow=0.01"`; `all=P` sets
    /// every kind (500, 502, 503, 429, reset, cut, invalid, slow) to P.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut odds = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, p) = item.split_once('=').ok_or_else(|| format!("{item:?}: write fault=probability"))?;
            let p: f64 = p.trim().parse().map_err(|_| format!("{item:?}: {p:?} is not a probability"))?;
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{item:?}: a probability is between 0 and 1"));
            }
            if name.trim() == "all" {
                for f in ["500", "502", "503", "429", "reset", "cut", "invalid", "slow"] {
                    odds.push((Fault::parse(f).expect("a known fault"), p));
                }
            } else {
                let fault = Fault::parse(name.trim()).ok_or_else(|| {
                    format!("{name:?} is not a fault: use a status (500, 503, 429, ...), reset, cut, invalid or slow")
                })?;
                odds.push((fault, p));
            }
        }
        if odds.iter().map(|(_, p)| p).sum::<f64>() > 1.0 {
            return Err("the fault probabilities add up to more than 1".into());
        }
        Ok(Faults { odds })
    }

    pub fn is_empty(&self) -> bool {
        self.odds.iter().all(|(_, p)| *p == 0.0)
    }
}

/// Draws faults for requests, reproducibly.
pub struct FaultDice {
    faults: Faults,
    rng: Mutex<StdRng>,
}

impl FaultDice {
    pub fn new(faults: Faults, seed: u64) -> Self {
        FaultDice { faults, rng: Mutex::new(StdRng::seed_from_u64(seed)) }
    }

    pub fn draw(&self) -> Option<Fault> {
        if self.faults.is_empty() {
            return None;
        }
        let roll: f64 = self.rng.lock().expect("rng lock").random();
        let mut sum = 0.0;
        for (fault, p) in &self.faults.odds {
            sum += p;
            if roll < sum {
                return Some(*fault);
            }
        }
        None
    }
}

/// A token bucket: `rate` per second, holding at most one second's worth.
pub struct Bucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

/// What the bucket said about one request.
pub struct Verdict {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until a token is back.
    pub reset: f64,
}

impl Bucket {
    pub fn new(rate: f64) -> Self {
        Bucket { rate, state: Mutex::new((rate.max(1.0), Instant::now())) }
    }

    pub fn take(&self) -> Verdict {
        let mut state = self.state.lock().expect("bucket lock");
        let now = Instant::now();
        let capacity = self.rate.max(1.0);
        let (tokens, last) = *state;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(capacity);
        let allowed = tokens >= 1.0;
        let tokens = if allowed { tokens - 1.0 } else { tokens };
        *state = (tokens, now);
        Verdict {
            allowed,
            limit: capacity as u64,
            remaining: tokens.floor() as u64,
            reset: if tokens >= 1.0 { 0.0 } else { (1.0 - tokens) / self.rate },
        }
    }
}

/// Epoch seconds `after` from now, for X-RateLimit-Reset.
pub fn epoch_after(after: Duration) -> u64 {
    (SystemTime::now() + after).duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64().ceil() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let f = Faults::parse("503=0.1, reset=0.05").unwrap();
        assert_eq!(f.odds, vec![(Fault::Status(503), 0.1), (Fault::Reset, 0.05)]);
        assert_eq!(Faults::parse("all=0.05").unwrap().odds.len(), 8);
        assert!(Faults::parse("teapot=0.1").is_err());
        assert!(Faults::parse("500=0.6,503=0.6").is_err());
    }

    #[test]
    fn draws_at_about_the_odds() {
        let dice = FaultDice::new(Faults::parse("500=0.25").unwrap(), 7);
        let hits = (0..10_000).filter(|_| dice.draw().is_some()).count();
        assert!((2200..2800).contains(&hits), "{hits}");
    }
}
