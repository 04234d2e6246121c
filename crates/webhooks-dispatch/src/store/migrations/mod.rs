//! The numbered schema migrations of each engine, oldest first.
//!
//! Each is a file `NNNN_name.sql` under `postgres/` and `sqlite/`, embedded at compile time. Every schema
//! change ships as a new file on both engines, with a conformance test that upgrades a database made by the
//! previous schema; a file already released is never edited (databases that ran it keep its old text).
//!
//! The macros wrap each file into the script the runner executes in one transaction: the migration lock
//! (PostgreSQL), then the row recording the version, then the file. Recording first turns the primary key of
//! `webhooks_dispatch_migrations` into the claim on the migration: a second process that raced for it fails
//! on that INSERT and rolls back before any of its schema change ran, and the change never commits without
//! its record, nor the record without the change.

use super::Migration;

/// A migration script: `$lock`, the recording INSERT, then the file `$engine/$name.sql`.
macro_rules! migration {
    ($engine:literal, $lock:literal, $version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: concat!(
                $lock,
                "INSERT INTO webhooks_dispatch_migrations (version, name) VALUES (",
                $version,
                ", '",
                $name,
                "');\n",
                include_str!(concat!($engine, "/", $name, ".sql")),
            ),
        }
    };
}

/// The same advisory lock as `CREATE_MIGRATIONS_TABLE` and the unnumbered migration of earlier releases, so
/// an older process migrating during a rolling deploy is serialized with these too (concurrent `CREATE ...
/// IF NOT EXISTS` race on the catalog).
macro_rules! postgres {
    ($version:literal, $name:literal) => {
        migration!(
            "postgres",
            "SELECT pg_advisory_xact_lock(7305546289152737061);\n",
            $version,
            $name
        )
    };
}

/// SQLite serializes writers itself; the recording INSERT, the script's first statement, takes the write
/// lock for the whole transaction.
macro_rules! sqlite {
    ($version:literal, $name:literal) => {
        migration!("sqlite", "", $version, $name)
    };
}

/// PostgreSQL's migrations.
pub(super) const POSTGRES: &[Migration] = &[
    postgres!(1, "0001_initial"),
    postgres!(2, "0002_endpoint_queue_index"),
    postgres!(3, "0003_events_and_endpoint_status"),
    postgres!(4, "0004_endpoint_lifecycle"),
    postgres!(5, "0005_endpoint_hold_back"),
    postgres!(6, "0006_endpoint_keys"),
];

/// SQLite's migrations: the same versions and names as [`POSTGRES`].
pub(super) const SQLITE: &[Migration] = &[
    sqlite!(1, "0001_initial"),
    sqlite!(2, "0002_endpoint_queue_index"),
    sqlite!(3, "0003_events_and_endpoint_status"),
    sqlite!(4, "0004_endpoint_lifecycle"),
    sqlite!(5, "0005_endpoint_hold_back"),
    sqlite!(6, "0006_endpoint_keys"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_count_up_from_one_and_match_their_file_names_on_both_engines() {
        for migrations in [POSTGRES, SQLITE] {
            for (i, m) in migrations.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1, "{}", m.name);
                assert!(m.name.starts_with(&format!("{:04}_", m.version)), "{}", m.name);
                let record = format!(
                    "INSERT INTO webhooks_dispatch_migrations (version, name) VALUES ({}, '{}');\n",
                    m.version, m.name
                );
                assert!(m.sql.contains(&record), "{} does not record itself", m.name);
            }
        }
        let names = |ms: &[Migration]| ms.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(
            names(POSTGRES),
            names(SQLITE),
            "every schema change ships on both engines"
        );
    }

    #[test]
    fn postgres_migrations_take_the_migration_lock_before_recording() {
        let lock = super::super::postgres::CREATE_MIGRATIONS_TABLE
            .trim_start()
            .lines()
            .next()
            .unwrap();
        assert!(lock.starts_with("SELECT pg_advisory_xact_lock("), "{lock}");
        for m in POSTGRES {
            assert!(m.sql.starts_with(&format!("{lock}\nINSERT")), "{}", m.name);
        }
    }
}
