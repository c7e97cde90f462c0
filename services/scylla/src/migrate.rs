//! The CQL migration runner behind `chatd migrate`.
//!
//! Migrations are the files of `cql/migrations/`, compiled in. Applied
//! versions are recorded in `schema_migrations` with a checksum, so an
//! edited released file is refused rather than silently skipped. Several
//! nodes may start at once: they take turns through a lease row claimed
//! with `IF NOT EXISTS … USING TTL` (a crashed holder's lease expires),
//! and every statement is itself `IF NOT EXISTS`.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::statement::Statement;

use crate::config::ScyllaConfig;

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub cql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_init.cql",
        cql: include_str!("../../../cql/migrations/0001_init.cql"),
    },
    Migration {
        version: 2,
        name: "0002_devices.cql",
        cql: include_str!("../../../cql/migrations/0002_devices.cql"),
    },
    Migration {
        version: 3,
        name: "0003_notification_log.cql",
        cql: include_str!("../../../cql/migrations/0003_notification_log.cql"),
    },
    Migration {
        version: 4,
        name: "0004_notified_marks.cql",
        cql: include_str!("../../../cql/migrations/0004_notified_marks.cql"),
    },
    Migration {
        version: 5,
        name: "0005_moderation.cql",
        cql: include_str!("../../../cql/migrations/0005_moderation.cql"),
    },
    Migration {
        version: 6,
        name: "0006_blocks_and_audit.cql",
        cql: include_str!("../../../cql/migrations/0006_blocks_and_audit.cql"),
    },
    Migration {
        version: 7,
        name: "0007_uploads.cql",
        cql: include_str!("../../../cql/migrations/0007_uploads.cql"),
    },
    Migration {
        version: 8,
        name: "0008_sellers.cql",
        cql: include_str!("../../../cql/migrations/0008_sellers.cql"),
    },
];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("CQL failed during {step}: {message}")]
    Cql { step: String, message: String },
    #[error(
        "migration {version} ({name}) changed after it was applied; add a new migration instead"
    )]
    Edited { version: i32, name: String },
    #[error("another node holds the migration lease for longer than {0:?}")]
    LeaseTimeout(Duration),
}

fn cql_error(
    step: impl Into<String>,
) -> impl FnOnce(scylla::errors::ExecutionError) -> MigrateError {
    let step = step.into();
    move |e| MigrateError::Cql {
        step,
        message: e.to_string(),
    }
}

/// What `migrate` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub applied: Vec<i32>,
    pub already: Vec<i32>,
}

pub fn valid_keyspace(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && name.len() <= 48
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The statements of a migration file: `--` comments dropped, split at a
/// `;` that ends a line.
pub fn statements(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in cql.lines() {
        let code = line.split("--").next().unwrap_or("").trim_end();
        if code.trim().is_empty() {
            continue;
        }
        current.push_str(code);
        current.push('\n');
        if code.ends_with(';') {
            let statement = current.trim().trim_end_matches(';').trim().to_owned();
            if !statement.is_empty() {
                out.push(statement);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// FNV-1a over the statements, so whitespace and comments may change.
fn checksum(cql: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in statements(cql).join("\n").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

async fn run(session: &Session, cql: &str, step: &str) -> Result<(), MigrateError> {
    // The driver waits for schema agreement after each DDL statement.
    session
        .query_unpaged(Statement::new(cql), ())
        .await
        .map_err(cql_error(step))?;
    Ok(())
}

const LEASE_TTL_SECS: u32 = 120;
const LEASE_WAIT: Duration = Duration::from_secs(300);

/// Creates the keyspace if needed and applies pending migrations.
pub async fn migrate(session: &Session, config: &ScyllaConfig) -> Result<Report, MigrateError> {
    let ks = &config.keyspace;
    if !valid_keyspace(ks) {
        return Err(MigrateError::Config(format!(
            "keyspace {ks:?} must match [a-z][a-z0-9_]{{0,47}}"
        )));
    }
    let replication = config.replication.to_cql().map_err(MigrateError::Config)?;
    run(
        session,
        &format!("CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication}"),
        "create keyspace",
    )
    .await?;
    run(
        session,
        &format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, \
             name text, checksum text, applied_at bigint)"
        ),
        "create schema_migrations",
    )
    .await?;
    run(
        session,
        &format!(
            "CREATE TABLE IF NOT EXISTS {ks}.schema_lease (name text PRIMARY KEY, owner text)"
        ),
        "create schema_lease",
    )
    .await?;

    let owner = uuid::Uuid::new_v4().to_string();
    acquire_lease(session, ks, &owner).await?;
    let result = apply_pending(session, ks).await;
    let release = session
        .query_unpaged(
            format!("DELETE FROM {ks}.schema_lease WHERE name = 'migrate' IF owner = ?"),
            (&owner,),
        )
        .await;
    if let Err(e) = release {
        tracing::warn!(error = %e, "could not release the migration lease; it expires by itself");
    }
    result
}

async fn acquire_lease(session: &Session, ks: &str, owner: &str) -> Result<(), MigrateError> {
    let started = std::time::Instant::now();
    loop {
        let result = session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_lease (name, owner) VALUES ('migrate', ?) \
                     IF NOT EXISTS USING TTL {LEASE_TTL_SECS}"
                ),
                (owner,),
            )
            .await
            .map_err(cql_error("claim the migration lease"))?;
        if crate::cql::lwt_applied(result).map_err(|message| MigrateError::Cql {
            step: "claim the migration lease".into(),
            message,
        })? {
            return Ok(());
        }
        if started.elapsed() > LEASE_WAIT {
            return Err(MigrateError::LeaseTimeout(LEASE_WAIT));
        }
        tracing::info!("another node is migrating; waiting for its lease");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn apply_pending(session: &Session, ks: &str) -> Result<Report, MigrateError> {
    let rows = session
        .query_unpaged(
            format!("SELECT version, name, checksum FROM {ks}.schema_migrations"),
            (),
        )
        .await
        .map_err(cql_error("read schema_migrations"))?;
    let applied: Vec<(i32, String, String)> = rows
        .into_rows_result()
        .map_err(|e| MigrateError::Cql {
            step: "read schema_migrations".into(),
            message: e.to_string(),
        })?
        .rows::<(i32, String, String)>()
        .map_err(|e| MigrateError::Cql {
            step: "read schema_migrations".into(),
            message: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| MigrateError::Cql {
            step: "read schema_migrations".into(),
            message: e.to_string(),
        })?;
    let mut report = Report::default();
    for migration in MIGRATIONS {
        let sum = checksum(migration.cql);
        if let Some((_, name, recorded)) = applied.iter().find(|(v, _, _)| *v == migration.version)
        {
            if *recorded != sum {
                return Err(MigrateError::Edited {
                    version: migration.version,
                    name: name.clone(),
                });
            }
            report.already.push(migration.version);
            continue;
        }
        for (i, statement) in statements(migration.cql).iter().enumerate() {
            let qualified = qualify(statement, ks);
            run(
                session,
                &qualified,
                &format!("{} statement {}", migration.name, i + 1),
            )
            .await?;
        }
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {ks}.schema_migrations (version, name, checksum, applied_at) \
                     VALUES (?, ?, ?, ?)"
                ),
                (
                    migration.version,
                    migration.name,
                    &sum,
                    chat_core::now_millis(),
                ),
            )
            .await
            .map_err(cql_error("record the migration"))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "migration applied"
        );
        report.applied.push(migration.version);
    }
    Ok(report)
}

/// Prefixes the table of a `CREATE TABLE [IF NOT EXISTS] name` or
/// `ALTER TABLE name` statement with the keyspace, so migration files stay
/// keyspace-neutral.
fn qualify(statement: &str, ks: &str) -> String {
    for prefix in [
        "CREATE TABLE IF NOT EXISTS ",
        "CREATE TABLE ",
        "ALTER TABLE ",
        "DROP TABLE IF EXISTS ",
    ] {
        if let Some(rest) = statement.strip_prefix(prefix) {
            return format!("{prefix}{ks}.{rest}");
        }
    }
    statement.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_qualifies_the_shipped_migrations() {
        let init = statements(MIGRATIONS[0].cql);
        assert_eq!(init.len(), 10, "{init:#?}");
        assert!(init.iter().all(|s| !s.contains("--") && !s.ends_with(';')));
        assert_eq!(
            qualify(
                "CREATE TABLE IF NOT EXISTS users (\nid text PRIMARY KEY\n)",
                "chat"
            ),
            "CREATE TABLE IF NOT EXISTS chat.users (\nid text PRIMARY KEY\n)"
        );
        for migration in MIGRATIONS {
            for s in statements(migration.cql) {
                assert!(
                    qualify(&s, "k").contains("k."),
                    "unqualified statement: {s}"
                );
            }
        }
    }

    #[test]
    fn checksum_ignores_comments_but_not_code() {
        let a = "-- one\nCREATE TABLE t (a int PRIMARY KEY);\n";
        let b = "CREATE TABLE t (a int PRIMARY KEY); -- other\n\n";
        let c = "CREATE TABLE t (a bigint PRIMARY KEY);\n";
        assert_eq!(checksum(a), checksum(b));
        assert_ne!(checksum(a), checksum(c));
    }

    #[test]
    fn keyspace_names() {
        assert!(valid_keyspace("chat_test"));
        assert!(!valid_keyspace("Chat"));
        assert!(!valid_keyspace("chat; DROP"));
        assert!(!valid_keyspace(""));
    }
}
