//! The time source: [`Clock`] and its implementations come from `arc-clock`, re-exported here
//! so callers keep naming them `arc_auth::Clock`, `arc_auth::SystemClock` and (feature
//! `testsuite`) `arc_auth::ManualClock`.
//!
//! One clock serves both purposes in this crate: token expiry (wall time, compared with
//! `expires_at` written by other nodes) and cache age. If the wall clock steps backwards, the
//! cache simply counts as stale and reloads.

#[cfg(any(test, feature = "testsuite"))]
pub use arc_clock::ManualClock;
pub use arc_clock::{Clock, SystemClock};
