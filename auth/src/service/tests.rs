//! Tests of the token service over real object stores (`InMemory`, and `LocalFileSystem` on a
//! temp dir), with a manual clock instead of sleeps.

use std::time::Duration;

use axum::http::HeaderMap;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

use super::*;
use crate::test_support::*;

const TTL: Duration = crate::settings::DEFAULT_CACHE_TTL;

fn new_token(name: &str, permissions: &[Permission]) -> NewToken {
    NewToken {
        name: name.to_string(),
        description: String::new(),
        permissions: permissions.to_vec(),
        expires_in: None,
    }
}

async fn check(
    service: &AuthService,
    token: &str,
    needed: Permission,
) -> std::result::Result<TokenInfo, AuthRejection> {
    service.authorize(&bearer(token), None, needed).await
}

#[tokio::test]
async fn test_should_generate_bootstrap_token_when_store_is_empty() {
    let store = memory_store();
    let clock = manual_clock();
    let (service, bootstrap) = open_with(&store, &clock, AuthSettings::default()).await;
    assert!(bootstrap.created());
    let secret = bootstrap.generated_token().expect("generated").clone();
    assert!(secret.expose_secret().starts_with("arc_"));
    let admin = check(&service, secret.expose_secret(), Permission::Admin)
        .await
        .expect("bootstrap token is admin");
    assert_eq!(admin.id, BOOTSTRAP_TOKEN_ID);
    assert_eq!(admin.name, BOOTSTRAP_TOKEN_NAME);

    // A second node (or a restart) finds it and creates nothing.
    let (other, again) = open_with(&store, &clock, AuthSettings::default()).await;
    assert_eq!(again, Bootstrap::AlreadyInitialized);
    assert!(
        check(&other, secret.expose_secret(), Permission::Write)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn test_should_bootstrap_from_preset_token_once() {
    let store = memory_store();
    let clock = manual_clock();
    let (service, bootstrap) = open_with(
        &store,
        &clock,
        AuthSettings::with_bootstrap_token(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(bootstrap, Bootstrap::CreatedFromPreset);
    assert_eq!(bootstrap.generated_token(), None);
    assert!(
        check(&service, ADMIN_TOKEN, Permission::Admin)
            .await
            .is_ok()
    );

    // A later start with another preset keeps the existing token and ignores the new value.
    let other_preset = "arc_another-preset-token-value-0123456789";
    let (restarted, again) = open_with(
        &store,
        &clock,
        AuthSettings::with_bootstrap_token(other_preset),
    )
    .await;
    assert_eq!(again, Bootstrap::AlreadyInitialized);
    assert!(
        check(&restarted, ADMIN_TOKEN, Permission::Admin)
            .await
            .is_ok()
    );
    assert_eq!(
        check(&restarted, other_preset, Permission::Read).await,
        Err(AuthRejection::Invalid)
    );
}

#[tokio::test]
async fn test_should_reject_short_preset_bootstrap_token() {
    let store = memory_store();
    let short = "arc_only-31-characters-long-xxx";
    assert_eq!(short.chars().count(), 31);
    let error = AuthService::open_with_clock(
        store.clone(),
        AuthSettings::with_bootstrap_token(short),
        manual_clock(),
    )
    .await
    .expect_err("short preset must be refused");
    assert!(
        matches!(
            error,
            AuthError::BootstrapTokenTooShort {
                length: 31,
                minimum: 32
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("auth.bootstrap_token"), "{message}");
    assert!(
        !message.contains(short),
        "the value must not be echoed: {message}"
    );
    assert!(
        all_objects(&store).await.is_empty(),
        "nothing may be written"
    );

    // Exactly 32 characters is enough.
    let exact = "arc_exactly-32-characters-long-x";
    assert_eq!(exact.chars().count(), 32);
    let (_, bootstrap) = open_with(
        &store,
        &manual_clock(),
        AuthSettings::with_bootstrap_token(exact),
    )
    .await;
    assert_eq!(bootstrap, Bootstrap::CreatedFromPreset);
}

#[tokio::test]
async fn test_should_create_bootstrap_exactly_once_when_nodes_race() {
    // Several rounds, each on a fresh directory, so the race actually interleaves sometimes.
    for _round in 0..8 {
        let (store, _dir) = local_store();
        let clock = manual_clock();
        let opened = futures::future::join_all((0..4).map(|_| {
            AuthService::open_with_clock(store.clone(), AuthSettings::default(), clock.clone())
        }))
        .await;
        let opened: Vec<_> = opened
            .into_iter()
            .map(|result| result.expect("every node opens"))
            .collect();
        let winners: Vec<_> = opened
            .iter()
            .filter(|(_, bootstrap)| bootstrap.created())
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "exactly one node creates the bootstrap token"
        );
        let secret = winners[0].1.generated_token().expect("generated").clone();
        for (service, _) in &opened {
            clock.advance(Duration::from_secs(1));
            assert!(
                check(service, secret.expose_secret(), Permission::Admin)
                    .await
                    .is_ok()
            );
        }
        let records = all_objects(&store).await;
        assert_eq!(records.len(), 1, "one record: {records:?}");
    }
}

#[tokio::test]
async fn test_should_allow_everything_and_skip_bootstrap_when_disabled() {
    let store = memory_store();
    let settings = AuthSettings {
        enabled: false,
        ..AuthSettings::default()
    };
    let (service, bootstrap) = open_with(&store, &manual_clock(), settings).await;
    assert_eq!(bootstrap, Bootstrap::Disabled);
    let info = service
        .authorize(&HeaderMap::new(), None, Permission::Admin)
        .await
        .expect("disabled auth lets everything through");
    assert_eq!(info.id, ANONYMOUS_TOKEN_ID);
    assert!(all_objects(&store).await.is_empty());
}

#[tokio::test]
async fn test_should_check_permissions_of_created_tokens() {
    let service = open_service(&memory_store(), &manual_clock()).await;
    let (info, secret) = service
        .create(new_token("ingest", &[Permission::Write]))
        .await
        .expect("created");
    assert_eq!(info.permissions, vec![Permission::Write]);
    assert!(!info.is_admin);
    let token = secret.expose_secret();
    assert_eq!(
        check(&service, token, Permission::Write)
            .await
            .map(|t| t.id),
        Ok(info.id)
    );
    for needed in [Permission::Read, Permission::Delete, Permission::Admin] {
        assert_eq!(
            check(&service, token, needed).await,
            Err(AuthRejection::Forbidden(needed))
        );
    }
    assert_eq!(
        service
            .authorize(&HeaderMap::new(), None, Permission::Read)
            .await,
        Err(AuthRejection::Missing)
    );
    assert_eq!(
        check(&service, "arc_not-a-real-token", Permission::Read).await,
        Err(AuthRejection::Invalid)
    );
}

#[tokio::test]
async fn test_should_expire_tokens_by_the_injected_clock() {
    let clock = manual_clock();
    let service = open_service(&memory_store(), &clock).await;
    let mut request = new_token("short-lived", &[Permission::Read]);
    request.expires_in = Some(Duration::from_secs(1));
    let (info, secret) = service.create(request).await.expect("created");
    assert_eq!(
        info.expires_at,
        Some(start_time() + chrono::TimeDelta::seconds(1))
    );
    assert!(
        check(&service, secret.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );
    clock.advance(Duration::from_millis(999));
    assert!(
        check(&service, secret.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        check(&service, secret.expose_secret(), Permission::Read).await,
        Err(AuthRejection::Expired)
    );
    assert_eq!(
        service.get(&info.id).await.expect("still listed").status,
        TokenStatus::Expired
    );

    // Extending the expiry revives it.
    let update = TokenUpdate {
        expires_in: Some(Some(Duration::from_secs(3600))),
        ..TokenUpdate::default()
    };
    service.update(&info.id, update).await.expect("updated");
    assert!(
        check(&service, secret.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );
    let never = TokenUpdate {
        expires_in: Some(None),
        ..TokenUpdate::default()
    };
    assert_eq!(
        service
            .update(&info.id, never)
            .await
            .expect("updated")
            .expires_at,
        None
    );
}

#[tokio::test]
async fn test_should_apply_revocation_here_at_once_and_elsewhere_after_ttl() {
    let (store, _dir) = local_store();
    let clock = manual_clock();
    let node_a = open_service(&store, &clock).await;
    let node_b = open_service(&store, &clock).await;
    let (info, secret) = node_a
        .create(new_token("grafana", &[Permission::Read]))
        .await
        .expect("created");
    let token = secret.expose_secret();
    // B learns the new token on its first miss, once a second has passed since its last load.
    clock.advance(Duration::from_secs(1));
    assert!(check(&node_b, token, Permission::Read).await.is_ok());

    let revoked = node_a.revoke(&info.id).await.expect("revoked");
    assert!(revoked.revoked);
    assert_eq!(revoked.status, TokenStatus::Revoked);
    assert_eq!(
        check(&node_a, token, Permission::Read).await,
        Err(AuthRejection::Revoked)
    );
    // B's view is younger than its TTL: the documented staleness window.
    clock.advance(TTL - Duration::from_millis(1));
    assert!(check(&node_b, token, Permission::Read).await.is_ok());
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        check(&node_b, token, Permission::Read).await,
        Err(AuthRejection::Revoked)
    );
    // Revoking again is a no-op.
    let again = node_b.revoke(&info.id).await.expect("idempotent");
    assert_eq!(again.version, revoked.version);
}

#[tokio::test]
async fn test_should_apply_deletion_here_at_once_and_elsewhere_after_ttl() {
    let store = memory_store();
    let clock = manual_clock();
    let node_a = open_service(&store, &clock).await;
    let (info, secret) = node_a
        .create(new_token("old", &[Permission::Write]))
        .await
        .expect("created");
    let node_b = open_service(&store, &clock).await;
    let token = secret.expose_secret();
    assert!(check(&node_b, token, Permission::Write).await.is_ok());

    node_a.delete(&info.id).await.expect("deleted");
    assert_eq!(
        check(&node_a, token, Permission::Write).await,
        Err(AuthRejection::Invalid)
    );
    assert!(matches!(
        node_a.get(&info.id).await,
        Err(AuthError::NotFound { .. })
    ));
    assert!(matches!(
        node_a.delete(&info.id).await,
        Err(AuthError::NotFound { .. })
    ));
    assert!(matches!(
        node_a.revoke(&info.id).await,
        Err(AuthError::NotFound { .. })
    ));
    assert!(
        node_a
            .list()
            .await
            .expect("list")
            .iter()
            .all(|t| t.id != info.id)
    );

    assert!(check(&node_b, token, Permission::Write).await.is_ok());
    clock.advance(TTL);
    assert_eq!(
        check(&node_b, token, Permission::Write).await,
        Err(AuthRejection::Invalid)
    );
}

#[tokio::test]
async fn test_should_apply_rotation_here_at_once_and_elsewhere_after_ttl() {
    let store = memory_store();
    let clock = manual_clock();
    let node_a = open_service(&store, &clock).await;
    let (info, old) = node_a
        .create(new_token("svc", &[Permission::Read, Permission::Write]))
        .await
        .expect("created");
    let node_b = open_service(&store, &clock).await;

    let (rotated, new) = node_a.rotate(&info.id).await.expect("rotated");
    assert_eq!(rotated.id, info.id);
    assert_eq!(rotated.permissions, info.permissions);
    assert_ne!(old, new);
    assert_eq!(
        check(&node_a, old.expose_secret(), Permission::Read).await,
        Err(AuthRejection::Invalid)
    );
    assert!(
        check(&node_a, new.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );

    // B still has the old hash until its TTL; the new value is a miss that reloads (after 1 s).
    assert!(
        check(&node_b, old.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );
    clock.advance(Duration::from_secs(1));
    assert!(
        check(&node_b, new.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );
    clock.advance(TTL);
    assert_eq!(
        check(&node_b, old.expose_secret(), Permission::Read).await,
        Err(AuthRejection::Invalid)
    );

    node_a.revoke(&info.id).await.expect("revoked");
    assert!(matches!(
        node_a.rotate(&info.id).await,
        Err(AuthError::Revoked { .. })
    ));
}

#[tokio::test]
async fn test_should_reload_on_unknown_tokens_at_most_once_per_second() {
    let store = memory_store();
    let clock = manual_clock();
    let node_a = open_service(&store, &clock).await;
    let node_b = open_service(&store, &clock).await;
    let opened_at = node_b.cache_stats().refreshed_at;
    assert_eq!(opened_at, Some(start_time()));

    // Within the first second after the load, unknown tokens do not reload.
    let (_, secret) = node_a
        .create(new_token("new", &[Permission::Read]))
        .await
        .expect("created");
    clock.advance(Duration::from_millis(500));
    assert_eq!(
        check(&node_b, secret.expose_secret(), Permission::Read).await,
        Err(AuthRejection::Invalid)
    );
    assert_eq!(node_b.cache_stats().refreshed_at, opened_at);

    // After a second, the next miss reloads (and finds the token)...
    clock.advance(Duration::from_millis(500));
    assert!(
        check(&node_b, secret.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );
    let reloaded_at = node_b.cache_stats().refreshed_at;
    assert_eq!(
        reloaded_at,
        Some(start_time() + chrono::TimeDelta::seconds(1))
    );

    // ...and a burst of garbage right after does not.
    clock.advance(Duration::from_millis(900));
    for attempt in 0..20 {
        let garbage = format!("arc_garbage-{attempt}");
        assert_eq!(
            check(&node_b, &garbage, Permission::Read).await,
            Err(AuthRejection::Invalid)
        );
    }
    assert_eq!(node_b.cache_stats().refreshed_at, reloaded_at);
}

#[tokio::test]
async fn test_should_not_lose_concurrent_updates_from_two_nodes() {
    let (store, _dir) = local_store();
    let clock = manual_clock();
    let node_a = open_service(&store, &clock).await;
    let node_b = open_service(&store, &clock).await;
    let (info, _) = node_a
        .create(new_token("shared", &[Permission::Read]))
        .await
        .expect("created");
    let rename = TokenUpdate {
        name: Some("renamed".to_string()),
        ..TokenUpdate::default()
    };
    let describe = TokenUpdate {
        description: Some("described".to_string()),
        ..TokenUpdate::default()
    };
    let (renamed, described) = tokio::join!(
        node_a.update(&info.id, rename),
        node_b.update(&info.id, describe)
    );
    renamed.expect("rename lands");
    described.expect("description lands");
    let merged = node_a.get(&info.id).await.expect("exists");
    assert_eq!(merged.name, "renamed");
    assert_eq!(merged.description, "described");
    assert_eq!(merged.version, 3);
}

#[tokio::test]
async fn test_should_validate_token_fields() {
    let service = open_service(&memory_store(), &manual_clock()).await;
    let cases = [
        (new_token("", &[Permission::Read]), "name"),
        (new_token("   ", &[Permission::Read]), "name"),
        (new_token(&"n".repeat(129), &[Permission::Read]), "name"),
        (new_token("tab\there", &[Permission::Read]), "name"),
        (new_token("ok", &[]), "permissions"),
        (
            NewToken {
                description: "d".repeat(1025),
                ..new_token("ok", &[Permission::Read])
            },
            "description",
        ),
        (
            NewToken {
                expires_in: Some(Duration::ZERO),
                ..new_token("ok", &[Permission::Read])
            },
            "expires_in",
        ),
    ];
    for (request, expected_field) in cases {
        match service.create(request).await {
            Err(AuthError::Invalid { field, .. }) => assert_eq!(field, expected_field),
            other => panic!("expected invalid {expected_field}, got {other:?}"),
        }
    }
    let (info, _) = service
        .create(new_token(
            &"n".repeat(128),
            &[Permission::Write, Permission::Read, Permission::Write],
        ))
        .await
        .expect("128 characters is fine");
    assert_eq!(info.permissions, vec![Permission::Read, Permission::Write]);
    let bad_update = TokenUpdate {
        permissions: Some(vec![]),
        ..TokenUpdate::default()
    };
    assert!(matches!(
        service.update(&info.id, bad_update).await,
        Err(AuthError::Invalid {
            field: "permissions",
            ..
        })
    ));
    assert!(matches!(
        service.get("../../etc").await,
        Err(AuthError::NotFound { .. })
    ));
}

#[tokio::test]
async fn test_should_skip_corrupt_records_and_fail_closed_on_them() {
    let (store, _dir) = local_store();
    let clock = manual_clock();
    let node_a = open_service(&store, &clock).await;
    let (healthy, healthy_secret) = node_a
        .create(new_token("healthy", &[Permission::Read]))
        .await
        .expect("created");
    let (damaged, damaged_secret) = node_a
        .create(new_token("damaged", &[Permission::Read]))
        .await
        .expect("created");

    let keys = node_a.store.keys().clone();
    // A newer version of `damaged` that is not JSON, a garbage record of an unknown token,
    // a record whose body names another slot, and a stray object that is not a record key.
    let writes = [
        (keys.record(&damaged.id, 2), b"\x00\xffnot json".to_vec()),
        (keys.record("garbage-token", 1), b"{\"format\":1}".to_vec()),
        (
            keys.record("mismatch", 1),
            TokenRecord {
                id: "someone-else".into(),
                ..node_a
                    .store
                    .read(&healthy.id, 1)
                    .await
                    .expect("read")
                    .expect("exists")
                    .0
            }
            .encode(),
        ),
        (Path::from("_auth/tokens/README.txt"), b"hello".to_vec()),
    ];
    for (key, bytes) in writes {
        store
            .put(&key, PutPayload::from(bytes))
            .await
            .expect("raw write");
    }

    let node_b = open_service(&store, &clock).await;
    assert_eq!(node_b.cache_stats().corrupt, 3);
    assert!(
        check(&node_b, healthy_secret.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );
    assert!(check(&node_b, ADMIN_TOKEN, Permission::Admin).await.is_ok());
    // The token whose latest state is unreadable does not authenticate.
    assert_eq!(
        check(&node_b, damaged_secret.expose_secret(), Permission::Read).await,
        Err(AuthRejection::Invalid)
    );
    assert!(matches!(
        node_b.get(&damaged.id).await,
        Err(AuthError::Corrupt { .. })
    ));
    let listed = node_b.list().await.expect("list");
    assert_eq!(listed.len(), 2, "bootstrap and healthy: {listed:?}");

    // Node A learns of it on its next reload too.
    clock.advance(TTL);
    assert_eq!(
        check(&node_a, damaged_secret.expose_secret(), Permission::Read).await,
        Err(AuthRejection::Invalid)
    );
}

#[tokio::test]
async fn test_should_never_store_a_plaintext() {
    let (store, _dir) = local_store();
    let clock = manual_clock();
    let (service, bootstrap) = open_with(&store, &clock, AuthSettings::default()).await;
    let mut plaintexts = vec![
        bootstrap
            .generated_token()
            .expect("generated")
            .expose_secret()
            .to_string(),
    ];
    for name in ["one", "two"] {
        let (info, secret) = service
            .create(new_token(name, &[Permission::Read]))
            .await
            .expect("created");
        plaintexts.push(secret.expose_secret().to_string());
        let (_, rotated) = service.rotate(&info.id).await.expect("rotated");
        plaintexts.push(rotated.expose_secret().to_string());
        service.revoke(&info.id).await.expect("revoked");
        service.delete(&info.id).await.expect("deleted");
    }
    let objects = all_objects(&store).await;
    assert!(objects.len() >= 9, "{} objects", objects.len());
    for (key, bytes) in &objects {
        let text = String::from_utf8_lossy(bytes);
        for plaintext in &plaintexts {
            assert!(
                !text.contains(plaintext.as_str()),
                "plaintext stored in {key}"
            );
            // Not even the random part without its prefix.
            assert!(!text.contains(&plaintext[4..]), "plaintext stored in {key}");
        }
    }
    // What is stored is the hash.
    let bootstrap_hash = crate::secret::TokenHash::of(&plaintexts[0]).to_hex();
    assert!(
        objects
            .iter()
            .any(|(_, bytes)| { String::from_utf8_lossy(bytes).contains(&bootstrap_hash) })
    );
}

#[tokio::test]
async fn test_should_forget_tokens_whose_records_vanished() {
    let store = memory_store();
    let clock = manual_clock();
    let node_a = open_service(&store, &clock).await;
    let (info, secret) = node_a
        .create(new_token("gone", &[Permission::Read]))
        .await
        .expect("created");
    let node_b = open_service(&store, &clock).await;
    assert!(
        check(&node_b, secret.expose_secret(), Permission::Read)
            .await
            .is_ok()
    );
    store
        .delete(&node_a.store.keys().record(&info.id, 1))
        .await
        .expect("removed by hand");
    clock.advance(TTL);
    assert_eq!(
        check(&node_b, secret.expose_secret(), Permission::Read).await,
        Err(AuthRejection::Invalid)
    );
}

/// Returns a service that has not loaded anything yet, to drive the bootstrap by hand.
fn unopened(store: &Arc<dyn ObjectStore>, settings: AuthSettings) -> AuthService {
    AuthService {
        store: TokenStore::new(store.clone(), &settings.prefix),
        settings,
        clock: manual_clock(),
        cache: RwLock::new(Cache::default()),
        reload_lock: Arc::new(tokio::sync::Mutex::new(())),
        me: Weak::new(),
    }
}

#[tokio::test]
async fn test_should_load_the_winner_when_losing_the_bootstrap_slot() {
    // Both nodes saw an empty store; the second reaches the slot after the first filled it.
    let (store, _dir) = local_store();
    let winner = unopened(&store, AuthSettings::with_bootstrap_token(ADMIN_TOKEN));
    let loser = unopened(&store, AuthSettings::default());
    assert_eq!(
        winner.bootstrap().await.expect("wins"),
        Bootstrap::CreatedFromPreset
    );
    assert_eq!(
        loser.bootstrap().await.expect("loses cleanly"),
        Bootstrap::AlreadyInitialized
    );
    assert!(check(&loser, ADMIN_TOKEN, Permission::Admin).await.is_ok());
    assert_eq!(all_objects(&store).await.len(), 1);
}

#[tokio::test]
async fn test_should_keep_records_under_the_configured_prefix() {
    let store = memory_store();
    let settings = AuthSettings {
        prefix: "/cluster-a/auth/".to_string(),
        ..AuthSettings::with_bootstrap_token(ADMIN_TOKEN)
    };
    let (service, _) = open_with(&store, &manual_clock(), settings).await;
    service
        .create(new_token("x", &[Permission::Read]))
        .await
        .expect("created");
    let keys: Vec<String> = all_objects(&store)
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    assert_eq!(keys.len(), 2);
    assert!(
        keys.contains(&"cluster-a/auth/tokens/bootstrap/00000000000000000001.json".to_string())
    );
    assert!(
        keys.iter()
            .all(|key| key.starts_with("cluster-a/auth/tokens/")),
        "{keys:?}"
    );
    // A service on the default prefix sees none of it.
    let (_, bootstrap) = open_with(&store, &manual_clock(), AuthSettings::default()).await;
    assert!(bootstrap.created());
}

#[tokio::test]
async fn test_should_not_hold_a_request_for_a_reload_the_store_does_not_answer() {
    // The store stops answering LISTs (as when it is unreachable and the client retries for
    // minutes) once the service is open.
    let throttled = Arc::new(object_store::throttle::ThrottledStore::new(
        object_store::memory::InMemory::new(),
        object_store::throttle::ThrottleConfig::default(),
    ));
    let store: Arc<dyn ObjectStore> = throttled.clone();
    let clock = manual_clock();
    let service = open_service(&store, &clock).await;
    throttled.config_mut(|config| config.wait_list_per_call = Duration::from_secs(3600));
    clock.advance(TTL);
    // The request that finds the cache stale waits for its reload a bounded time, then is
    // checked against the current view.
    let started = std::time::Instant::now();
    let checked = tokio::time::timeout(
        Duration::from_secs(30),
        check(&service, ADMIN_TOKEN, Permission::Admin),
    )
    .await
    .expect("answered while the reload hangs");
    assert!(checked.is_ok(), "{checked:?}");
    let waited = started.elapsed();
    assert!(waited < RELOAD_WAIT * 3, "waited {waited:?}");
    // The next request does not wait at all: the reload is still under way.
    let started = std::time::Instant::now();
    assert!(
        check(&service, ADMIN_TOKEN, Permission::Admin)
            .await
            .is_ok()
    );
    assert!(started.elapsed() < RELOAD_WAIT, "{:?}", started.elapsed());
    // An unknown token waits for its turn to reload a bounded time too, and is refused.
    clock.advance(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let unknown = tokio::time::timeout(
        Duration::from_secs(30),
        check(
            &service,
            "arc_unknown-0123456789abcdef0123456789",
            Permission::Read,
        ),
    )
    .await
    .expect("answered while the reload hangs");
    assert_eq!(unknown, Err(AuthRejection::Invalid));
    let waited = started.elapsed();
    assert!(waited < RELOAD_WAIT * 3, "waited {waited:?}");
}
