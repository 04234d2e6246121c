//! The fairness settings: caps per owner and per destination host, holding back failing endpoints, and the
//! connect timeout. Resolved here so the main settings stay readable; applied to the dispatcher by `apply`.

use std::time::Duration;

use webhooks_dispatch::{DispatcherBuilder, HoldBack, DEFAULT_CONNECT_TIMEOUT};

use super::duration::{duration, MAX_SHORT};
use super::RawSettings;
use crate::Error;

/// Longest accepted `hold_back_max`: a day (the library's ceiling).
const MAX_HOLD: Duration = Duration::from_secs(24 * 60 * 60);

/// The resolved fairness settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fairness {
    /// Most attempts in flight to one owner's endpoints together; `None`: half the concurrency.
    pub per_owner_concurrency: Option<usize>,
    /// Most attempts in flight to one destination host; `None`: half the concurrency.
    pub per_host_concurrency: Option<usize>,
    /// When an endpoint failing in a row is held back; `None`: never.
    pub hold_back: Option<HoldBack>,
    /// Bound on TCP connect and on the TLS handshake, inside the attempt timeout.
    pub connect_timeout: Duration,
}

impl Fairness {
    /// The settings in `raw`, with defaults; errors name the setting.
    pub fn resolve(raw: &RawSettings) -> Result<Fairness, Error> {
        let bad = |setting: &str, why: &str| Error::Config(format!("{setting}: {why}"));
        let cap = |setting: &str, v: Option<usize>| match v {
            Some(0) => Err(bad(setting, "must be at least 1")),
            v => Ok(v),
        };
        let hold_after = match raw.hold_back_after.as_deref().map(str::trim) {
            None => Some(HoldBack::default().after),
            Some("off") => None,
            Some(n) => match n.parse::<u32>() {
                Ok(n @ 1..=1_000_000) => Some(n),
                _ => {
                    return Err(bad(
                        "hold_back_after",
                        "must be a number of failures from 1 to 1000000, or \"off\"",
                    ))
                }
            },
        };
        let longest = duration(
            "hold_back_max",
            raw.hold_back_max.clone(),
            HoldBack::default().longest,
            MAX_HOLD,
        )?;
        if longest < HoldBack::default().first {
            return Err(bad("hold_back_max", "must be at least 1s (the first hold)"));
        }
        Ok(Fairness {
            per_owner_concurrency: cap("per_owner_concurrency", raw.per_owner_concurrency)?,
            per_host_concurrency: cap("per_host_concurrency", raw.per_host_concurrency)?,
            hold_back: hold_after.map(|after| HoldBack::new(after, HoldBack::default().first, longest)),
            connect_timeout: duration(
                "connect_timeout",
                raw.connect_timeout.clone(),
                DEFAULT_CONNECT_TIMEOUT,
                MAX_SHORT,
            )?,
        })
    }

    /// These settings on a dispatcher being built.
    pub fn apply<E>(&self, mut builder: DispatcherBuilder<E>) -> DispatcherBuilder<E> {
        if let Some(n) = self.per_owner_concurrency {
            builder = builder.per_owner_concurrency(n);
        }
        if let Some(n) = self.per_host_concurrency {
            builder = builder.per_host_concurrency(n);
        }
        builder
            .hold_back(self.hold_back)
            .connect_timeout(self.connect_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(raw: RawSettings) -> Result<Fairness, String> {
        Fairness::resolve(&raw).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_the_library_s_and_each_setting_is_checked() {
        let f = resolve(RawSettings::default()).unwrap();
        assert_eq!(
            f,
            Fairness {
                per_owner_concurrency: None,
                per_host_concurrency: None,
                hold_back: Some(HoldBack::default()),
                connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            }
        );
        let set = |f: fn(&mut RawSettings)| {
            let mut r = RawSettings::default();
            f(&mut r);
            resolve(r)
        };
        assert_eq!(
            set(|r| r.hold_back_after = Some("off".into())).unwrap().hold_back,
            None
        );
        let h = set(|r| {
            r.hold_back_after = Some("5".into());
            r.hold_back_max = Some("10m".into());
        })
        .unwrap()
        .hold_back
        .unwrap();
        assert_eq!((h.after, h.longest), (5, Duration::from_secs(600)));
        assert_eq!(
            set(|r| r.per_owner_concurrency = Some(8))
                .unwrap()
                .per_owner_concurrency,
            Some(8)
        );
        for (setting, err) in [
            (
                "per_owner_concurrency",
                set(|r| r.per_owner_concurrency = Some(0)),
            ),
            ("per_host_concurrency", set(|r| r.per_host_concurrency = Some(0))),
            ("hold_back_after", set(|r| r.hold_back_after = Some("0".into()))),
            (
                "hold_back_after",
                set(|r| r.hold_back_after = Some("often".into())),
            ),
            ("hold_back_max", set(|r| r.hold_back_max = Some("2d".into()))),
            ("hold_back_max", set(|r| r.hold_back_max = Some("10ms".into()))),
            (
                "connect_timeout",
                set(|r| r.connect_timeout = Some("9999999999999999h".into())),
            ),
        ] {
            let err = err.unwrap_err();
            assert!(err.contains(&format!("{setting}: ")), "{err}");
        }
    }
}
