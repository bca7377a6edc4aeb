//! Conformance of the mapping store port: versions, whole sets, refused concurrent pushes.

use crate::ports::commit::{CommitError, Conflict};
use crate::ports::mappings::MappingStore;
use crate::time::UnixMillis;
use std::sync::Arc;

/// Generates one `#[tokio::test]` per check of the mapping store port (see
/// [`storage_conformance!`](crate::storage_conformance) for `make`).
#[macro_export]
macro_rules! mapping_store_conformance {
    ($make:ident) => {
        mod mapping_store {
            $crate::mapping_store_conformance!(@checks super::$make;
                nothing_pushed_is_version_zero,
                a_push_is_the_next_version_and_reads_back_whole,
                a_push_from_an_old_version_is_refused_and_stores_nothing,
            );
        }
    };
    (@checks $make:path; $($check:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let Some((_guard, store)) = $make().await else { return };
                $crate::conformance::mappings::$check(std::sync::Arc::new(store)).await;
            }
        )+
    };
}

fn file(name: &str, text: &str) -> (String, String) {
    (name.to_string(), text.to_string())
}

pub async fn nothing_pushed_is_version_zero<S: MappingStore>(s: Arc<S>) {
    assert_eq!(s.current_version().await.unwrap(), 0);
    assert_eq!(s.current().await.unwrap(), None);
}

pub async fn a_push_is_the_next_version_and_reads_back_whole<S: MappingStore>(s: Arc<S>) {
    let v1 = s.push(&[file("b.yaml", "b1"), file("a.yaml", "a1")], Some(0), UnixMillis(1)).await.unwrap();
    let v2 = s.push(&[file("a.yaml", "a2")], Some(1), UnixMillis(2)).await.unwrap();
    assert_eq!((v1, v2), (1, 2));
    let cur = s.current().await.unwrap().expect("pushed");
    assert_eq!((cur.version, cur.files), (2, vec![file("a.yaml", "a2")]), "no file of version 1 stays");
    assert_eq!(
        s.push(&[file("c.yaml", "c3")], None, UnixMillis(3)).await.unwrap(),
        3,
        "no expectation: next"
    );
    assert_eq!(s.current_version().await.unwrap(), 3);
}

pub async fn a_push_from_an_old_version_is_refused_and_stores_nothing<S: MappingStore>(s: Arc<S>) {
    s.push(&[file("a.yaml", "a1")], Some(0), UnixMillis(1)).await.unwrap();
    s.push(&[file("a.yaml", "a2")], Some(1), UnixMillis(2)).await.unwrap();
    let late = s.push(&[file("z.yaml", "late")], Some(1), UnixMillis(3)).await;
    assert!(matches!(late, Err(CommitError::Conflict(Conflict::AlreadyDone))), "{late:?}");
    let cur = s.current().await.unwrap().expect("pushed");
    assert_eq!((cur.version, cur.files), (2, vec![file("a.yaml", "a2")]));
}
