//! The [`RateLimiter`] conformance suite (feature `test-util`): every check
//! takes a fresh limiter and the [`ManualClock`] it is timed on (showing
//! [`limiter_epoch`] at first); this crate's `tests/limiter.rs` runs them
//! against core's `InMemoryRateLimiter` and [`crate::PgRateLimiter`], so
//! both answer alike, `retry_after` included.
//!
//! Quotas here have windows and intervals in whole microseconds
//! (PostgreSQL's precision).

use std::sync::Arc;
use std::time::Duration;

use bonde_pressure_core::{
    Admission, LimitKey, LimitKind, ManualClock, Quota, RateLimiter, Refill,
};
use chrono::{DateTime, TimeZone, Utc};

/// Invokes `$m` with the name of every check, like
/// [`for_each_conformance_check!`](crate::for_each_conformance_check).
#[macro_export]
macro_rules! for_each_limiter_check {
    ($m:ident) => {
        $m! {
            window_admits_exactly_the_limit,
            window_slides_charge_by_charge,
            window_refund_gives_back_one_charge_never_more,
            window_refund_of_expired_charges_makes_no_room,
            bucket_allows_its_burst_then_refills_one_token_at_a_time,
            bucket_refund_gives_a_token_back_up_to_the_capacity,
            bucket_refills_partially,
            peek_records_nothing,
            keys_and_kinds_are_independent,
            zero_limit_refuses,
            enormous_window_does_not_overflow,
            concurrent_charges_never_exceed_the_quota,
        }
    };
}

/// Where every check's clock starts: a whole second.
pub fn limiter_epoch() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn number(v: &str) -> LimitKey {
    LimitKey::new(LimitKind::TargetDials, v)
}

fn ip(v: &str) -> LimitKey {
    LimitKey::new(LimitKind::ClientIp, v)
}

async fn charged(l: &Arc<dyn RateLimiter>, k: &LimitKey, q: Quota) -> Admission {
    l.charge(k, q).await.expect("charge")
}

async fn admitted(l: &Arc<dyn RateLimiter>, k: &LimitKey, q: Quota) -> bool {
    charged(l, k, q).await.is_admitted()
}

fn exhausted(secs: u64) -> Admission {
    Admission::Exhausted {
        retry_after: Duration::from_secs(secs),
    }
}

/// At most `limit` charges in a window; `retry_after` is when the oldest
/// leaves it.
pub async fn window_admits_exactly_the_limit(l: Arc<dyn RateLimiter>, clock: Arc<ManualClock>) {
    let q = Quota::per_hour(3);
    let k = number("+5561999990000");
    for _ in 0..3 {
        assert!(l.peek(&k, q).await.unwrap().is_admitted());
        assert!(admitted(&l, &k, q).await);
    }
    clock.advance(Duration::from_secs(600));
    assert_eq!(charged(&l, &k, q).await, exhausted(3000));
    assert_eq!(l.peek(&k, q).await.unwrap(), exhausted(3000));
    clock.advance(Duration::from_secs(2999));
    assert_eq!(charged(&l, &k, q).await, exhausted(1));
    // All three were made at once, so all three leave at once.
    clock.advance(Duration::from_secs(1));
    for _ in 0..3 {
        assert!(admitted(&l, &k, q).await);
    }
    assert_eq!(charged(&l, &k, q).await, exhausted(3600));
}

/// Charges leave the window one by one, each `window` after it was made.
pub async fn window_slides_charge_by_charge(l: Arc<dyn RateLimiter>, clock: Arc<ManualClock>) {
    let q = Quota::new(2, Duration::from_secs(100));
    let k = number("+5561999990000");
    assert!(admitted(&l, &k, q).await); // t = 0
    clock.advance(Duration::from_secs(30));
    assert!(admitted(&l, &k, q).await); // t = 30
    clock.advance(Duration::from_secs(10));
    assert_eq!(charged(&l, &k, q).await, exhausted(60));
    clock.advance(Duration::from_secs(60)); // t = 100: the first one left
    assert!(admitted(&l, &k, q).await);
    assert_eq!(charged(&l, &k, q).await, exhausted(30));
    clock.advance(Duration::from_secs(30)); // t = 130: the second one left
    assert!(admitted(&l, &k, q).await);
    assert_eq!(charged(&l, &k, q).await, exhausted(70));
}

/// A refund forgets the latest charge; refunds never make more room than
/// the quota.
pub async fn window_refund_gives_back_one_charge_never_more(
    l: Arc<dyn RateLimiter>,
    clock: Arc<ManualClock>,
) {
    let q = Quota::per_day(2);
    let k = number("a");
    assert!(admitted(&l, &k, q).await);
    clock.advance(Duration::from_secs(10));
    assert!(admitted(&l, &k, q).await);
    assert!(!admitted(&l, &k, q).await);
    l.refund(&k, q).await.unwrap();
    // The latest (t = 10) was given back: the oldest still counts.
    assert!(admitted(&l, &k, q).await);
    assert_eq!(charged(&l, &k, q).await, exhausted(24 * 3600 - 10));
    for _ in 0..5 {
        l.refund(&k, q).await.unwrap();
    }
    assert!(admitted(&l, &k, q).await);
    assert!(admitted(&l, &k, q).await);
    assert!(!admitted(&l, &k, q).await);
    l.refund(&number("unknown"), q).await.unwrap();
    assert!(l.peek(&number("unknown"), q).await.unwrap().is_admitted());
}

/// Refunding after the charges left the window changes nothing.
pub async fn window_refund_of_expired_charges_makes_no_room(
    l: Arc<dyn RateLimiter>,
    clock: Arc<ManualClock>,
) {
    let q = Quota::new(1, Duration::from_secs(60));
    let k = number("b");
    assert!(admitted(&l, &k, q).await);
    clock.advance(Duration::from_secs(60));
    l.refund(&k, q).await.unwrap();
    assert!(admitted(&l, &k, q).await);
    assert_eq!(charged(&l, &k, q).await, exhausted(60));
}

/// A bucket of 2 over 60 s: a burst of 2, then one token every 30 s.
pub async fn bucket_allows_its_burst_then_refills_one_token_at_a_time(
    l: Arc<dyn RateLimiter>,
    clock: Arc<ManualClock>,
) {
    let q = Quota::gradual(2, Duration::from_secs(60));
    let a = ip("203.0.113.1");
    assert!(admitted(&l, &a, q).await);
    assert!(admitted(&l, &a, q).await);
    assert!(!l.peek(&a, q).await.unwrap().is_admitted());
    assert_eq!(charged(&l, &a, q).await, exhausted(30));
    clock.advance(Duration::from_secs(29));
    assert_eq!(charged(&l, &a, q).await, exhausted(1));
    clock.advance(Duration::from_secs(1));
    assert!(l.peek(&a, q).await.unwrap().is_admitted());
    assert!(admitted(&l, &a, q).await);
    assert!(!admitted(&l, &a, q).await);
    // A long pause refills the bucket to its capacity, never beyond.
    clock.advance(Duration::from_secs(3600));
    assert!(admitted(&l, &a, q).await);
    assert!(admitted(&l, &a, q).await);
    assert!(!admitted(&l, &a, q).await);
}

/// A refund puts one token back, never above the capacity.
pub async fn bucket_refund_gives_a_token_back_up_to_the_capacity(
    l: Arc<dyn RateLimiter>,
    _clock: Arc<ManualClock>,
) {
    let q = Quota::gradual(1, Duration::from_secs(3600));
    let a = ip("a");
    assert!(admitted(&l, &a, q).await);
    assert!(!admitted(&l, &a, q).await);
    l.refund(&a, q).await.unwrap();
    assert!(admitted(&l, &a, q).await);
    l.refund(&a, q).await.unwrap();
    l.refund(&a, q).await.unwrap();
    assert!(admitted(&l, &a, q).await);
    assert!(!admitted(&l, &a, q).await, "never above capacity");
    l.refund(&ip("unknown"), q).await.unwrap();
    assert!(admitted(&l, &ip("unknown"), q).await);
}

/// A bucket of 3 over 90 s: spent, then back one token per 30 s.
pub async fn bucket_refills_partially(l: Arc<dyn RateLimiter>, clock: Arc<ManualClock>) {
    let q = Quota::gradual(3, Duration::from_secs(90));
    let a = ip("c");
    for _ in 0..3 {
        assert!(admitted(&l, &a, q).await);
    }
    assert_eq!(charged(&l, &a, q).await, exhausted(30));
    clock.advance(Duration::from_secs(75));
    // Two tokens are back, the third in 15 s.
    assert!(admitted(&l, &a, q).await);
    assert!(admitted(&l, &a, q).await);
    assert_eq!(charged(&l, &a, q).await, exhausted(15));
    clock.advance(Duration::from_millis(14_999));
    assert_eq!(
        charged(&l, &a, q).await,
        Admission::Exhausted {
            retry_after: Duration::from_millis(1)
        }
    );
    clock.advance(Duration::from_millis(1));
    assert!(admitted(&l, &a, q).await);
}

/// Peeking answers as a charge would and takes nothing.
pub async fn peek_records_nothing(l: Arc<dyn RateLimiter>, _clock: Arc<ManualClock>) {
    for q in [
        Quota::per_hour(1),
        Quota::gradual(1, Duration::from_secs(60)),
    ] {
        let k = if q.refill == Refill::Gradual {
            ip("peek")
        } else {
            number("peek")
        };
        for _ in 0..10 {
            assert!(l.peek(&k, q).await.unwrap().is_admitted());
        }
        assert!(admitted(&l, &k, q).await);
        for _ in 0..10 {
            assert!(!l.peek(&k, q).await.unwrap().is_admitted());
        }
    }
}

/// Keys and kinds count apart.
pub async fn keys_and_kinds_are_independent(l: Arc<dyn RateLimiter>, _clock: Arc<ManualClock>) {
    let q = Quota::per_hour(1);
    let k = number("+5561999990000");
    assert!(admitted(&l, &k, q).await);
    assert!(!admitted(&l, &k, q).await);
    assert!(admitted(&l, &number("+5561999990001"), q).await);
    for kind in [
        LimitKind::ActivistCalls,
        LimitKind::ActivistRequests,
        LimitKind::ClientIp,
    ] {
        assert!(admitted(&l, &LimitKey::new(kind, "+5561999990000"), q).await);
    }
    assert!(!admitted(&l, &k, q).await);
}

/// A quota whose limit is 0 refuses everything, never fails or panics.
pub async fn zero_limit_refuses(l: Arc<dyn RateLimiter>, _clock: Arc<ManualClock>) {
    let mut q = Quota::new(1, Duration::from_secs(60));
    q.limit = 0;
    let k = number("+5561999990000");
    for _ in 0..3 {
        assert!(!l.peek(&k, q).await.unwrap().is_admitted());
        assert_eq!(charged(&l, &k, q).await, exhausted(60));
    }
    l.refund(&k, q).await.unwrap();
    assert!(admitted(&l, &k, Quota::per_hour(1)).await);
    let mut bucket = Quota::gradual(1, Duration::from_secs(60));
    bucket.limit = 0;
    assert!(!l.peek(&k, bucket).await.unwrap().is_admitted());
    assert!(!admitted(&l, &k, bucket).await);
    l.refund(&k, bucket).await.unwrap();
}

/// A window of billions of years neither overflows nor fails.
///
/// (A bucket of more than one token over such a window is left out: the
/// in-memory limiter saturates its times at chrono's limits there.)
pub async fn enormous_window_does_not_overflow(l: Arc<dyn RateLimiter>, _clock: Arc<ManualClock>) {
    let q = Quota::new(1, Duration::from_secs(u64::MAX / 4));
    assert!(admitted(&l, &number("a"), q).await);
    assert!(!admitted(&l, &number("a"), q).await);
    let b = Quota::gradual(1, Duration::from_secs(u64::MAX / 4));
    assert!(admitted(&l, &ip("a"), b).await);
    assert!(!admitted(&l, &ip("a"), b).await);
}

/// 64 concurrent charges of one key admit exactly the quota, for both
/// refills.
pub async fn concurrent_charges_never_exceed_the_quota(
    l: Arc<dyn RateLimiter>,
    _clock: Arc<ManualClock>,
) {
    for (k, q) in [
        (number("+5561999990000"), Quota::per_hour(5)),
        (
            ip("203.0.113.7"),
            Quota::gradual(5, Duration::from_secs(3600)),
        ),
    ] {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let l = l.clone();
                let k = k.clone();
                tokio::spawn(async move { l.charge(&k, q).await.unwrap().is_admitted() })
            })
            .collect();
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 5, "{k:?}");
    }
}
