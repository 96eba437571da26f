//! The [`DoNotCallList`] conformance suite (feature `test-util`): every
//! check takes a fresh, empty list; this crate's `tests/conformance.rs` runs
//! them against core's in-memory list, SQLite and PostgreSQL.

use std::sync::Arc;

use bonde_pressure_core::PhoneNumber;
use bonde_pressure_core::do_not_call::{DoNotCallHasher, DoNotCallList, DoNotCallSource};

use crate::conformance::at;

/// Invokes `$m` with the name of every check, like
/// [`for_each_conformance_check!`](crate::for_each_conformance_check).
#[macro_export]
macro_rules! for_each_do_not_call_check {
    ($m:ident) => {
        $m! {
            do_not_call_add_is_idempotent_and_visible,
            do_not_call_entries_are_independent,
        }
    };
}

fn number(e164: &str) -> PhoneNumber {
    PhoneNumber::parse_e164(e164).expect("valid number")
}

/// Adding lists the hash once; adding again returns `false`; `contains` sees it.
pub async fn do_not_call_add_is_idempotent_and_visible(list: Arc<dyn DoNotCallList>) {
    let hash = DoNotCallHasher::new(b"test key").hash(&number("+5511912345678"));
    assert!(!list.contains(&hash).await.unwrap());
    assert!(
        list.add(&hash, DoNotCallSource::Keypress, at(0))
            .await
            .unwrap()
    );
    assert!(list.contains(&hash).await.unwrap());
    for source in [
        DoNotCallSource::File,
        DoNotCallSource::Admin,
        DoNotCallSource::Keypress,
    ] {
        assert!(!list.add(&hash, source, at(1)).await.unwrap());
    }
    assert!(list.contains(&hash).await.unwrap());
}

/// Other numbers, and the same number under another key, are not listed.
pub async fn do_not_call_entries_are_independent(list: Arc<dyn DoNotCallList>) {
    let hasher = DoNotCallHasher::new(b"test key");
    let listed = number("+5511912345678");
    assert!(
        list.add(&hasher.hash(&listed), DoNotCallSource::File, at(0))
            .await
            .unwrap()
    );
    assert!(
        !list
            .contains(&hasher.hash(&number("+5511912345679")))
            .await
            .unwrap()
    );
    assert!(
        !list
            .contains(&DoNotCallHasher::new(b"other key").hash(&listed))
            .await
            .unwrap()
    );
    let many: Vec<_> = (0..50)
        .map(|i| hasher.hash(&number(&format!("+55119123456{i:02}"))))
        .collect();
    for h in &many {
        list.add(h, DoNotCallSource::Admin, at(1)).await.unwrap();
    }
    for h in &many {
        assert!(list.contains(h).await.unwrap());
    }
}
