//! For tests: a PostgreSQL database to run the store against, when the environment
//! names a server.

/// `FERROCHAT_TEST_POSTGRES` (a `postgres://` URL) with a fresh schema `test_<name>` as
/// the search path; `None` (said on stderr) when it is not set, unless
/// `FERROCHAT_REQUIRE_POSTGRES` is set, which makes a missing server a failure.
pub fn postgres_url(name: &str) -> Option<String> {
    let Ok(base) = std::env::var("FERROCHAT_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("FERROCHAT_REQUIRE_POSTGRES").is_none(),
            "FERROCHAT_REQUIRE_POSTGRES is set but FERROCHAT_TEST_POSTGRES is not"
        );
        eprintln!("skipped: FERROCHAT_TEST_POSTGRES is not set (the test script starts a PostgreSQL server)");
        return None;
    };
    let schema = format!("test_{name}_{}", std::process::id());
    let mut c = postgres::Client::connect(&base, postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to FERROCHAT_TEST_POSTGRES: {e}"));
    c.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
    ))
    .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-csearch_path%3D{schema}"))
}
