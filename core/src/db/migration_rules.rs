//! The rules for new migrations (`migrations/README.md`): they run while
//! the previous version serves, so none may hold a busy table's writes for
//! long. Migrations up to [`NEWEST_EXEMPT`] were applied before the rules
//! and stay as they are (changing one changes its checksum).

use std::path::Path;

/// The newest migration when the rules came in; later ones follow them.
const NEWEST_EXEMPT: i64 = 20261203100000;

/// What is wrong with a migration's SQL, one line per problem.
///
/// - `CREATE [UNIQUE] INDEX` must be `CONCURRENTLY` (a plain one blocks the
///   table's writes until it is built), in a file starting with sqlx's
///   `-- no-transaction` header that holds that statement alone (PostgreSQL
///   runs the statements of one query string in one transaction, where
///   `CONCURRENTLY` is refused).
/// - `ALTER TABLE` must come after a `SET LOCAL lock_timeout` (not a plain
///   `SET`, which outlives the migration on its pooled connection): waiting
///   for its lock behind a long transaction queues every later query on the
///   table behind it; with a timeout it fails and is tried again instead.
pub fn check_migration(sql: &str) -> Vec<String> {
    let no_transaction = sql.starts_with("-- no-transaction");
    let statements = statements(sql);
    let mut problems = Vec::new();
    let mut lock_timeout = false;
    let mut concurrent = false;
    for statement in &statements {
        let starts = |prefix: &str| statement.starts_with(prefix);
        if starts("SET LOCAL LOCK_TIMEOUT") {
            lock_timeout = true;
        } else if starts("SET LOCK_TIMEOUT") || starts("SET SESSION LOCK_TIMEOUT") {
            problems.push(format!(
                "`{}` must be SET LOCAL: a plain SET stays on the pooled connection the \
                 processes migrate on, timing out their later lock waits",
                short(statement)
            ));
        } else if starts("CREATE INDEX") || starts("CREATE UNIQUE INDEX") {
            if starts("CREATE INDEX CONCURRENTLY ") || starts("CREATE UNIQUE INDEX CONCURRENTLY ") {
                concurrent = true;
            } else {
                problems.push(format!(
                    "`{}` must be CREATE INDEX CONCURRENTLY",
                    short(statement)
                ));
            }
        } else if starts("ALTER TABLE ") && !lock_timeout {
            problems.push(format!(
                "`{}` must come after a `SET LOCAL lock_timeout = '...'`",
                short(statement)
            ));
        }
    }
    if concurrent && !no_transaction {
        problems.push(
            "CREATE INDEX CONCURRENTLY needs a file starting with `-- no-transaction`".to_owned(),
        );
    }
    if concurrent && statements.len() > 1 {
        problems.push(format!(
            "CREATE INDEX CONCURRENTLY must be the file's only statement (it has {}): \
             PostgreSQL runs a file's statements in one transaction",
            statements.len()
        ));
    }
    problems
}

/// The statements of `sql`, upper-cased, without comments, whitespace
/// collapsed. (Splits at every `;`: enough for the rules, which look at
/// statements' first words; a function body's `;` makes extra pieces.)
fn statements(sql: &str) -> Vec<String> {
    let mut text = String::with_capacity(sql.len());
    let mut rest = sql;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.find('\n').map_or("", |end| &after[end..]);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.find("*/").map_or("", |end| &after[end + 2..]);
            text.push(' ');
        } else {
            let c = rest.chars().next().expect("not empty");
            text.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    text.split(';')
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn short(statement: &str) -> String {
    statement.chars().take(60).collect()
}

/// The migrations after [`NEWEST_EXEMPT`] in `dir` with their problems.
fn check_dir(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reading migrations/") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some((version, _)) = name.split_once('_') else {
            continue;
        };
        if !name.ends_with(".sql") {
            continue;
        }
        let version: i64 = version
            .parse()
            .unwrap_or_else(|_| panic!("{name}: no version"));
        if version <= NEWEST_EXEMPT {
            continue;
        }
        let sql = std::fs::read_to_string(dir.join(&name)).unwrap();
        checked.push((name, check_migration(&sql)));
    }
    checked.sort();
    checked
}

#[cfg(test)]
mod tests {
    use super::{NEWEST_EXEMPT, check_dir, check_migration};

    #[test]
    fn a_concurrent_index_alone_in_a_no_transaction_file_passes() {
        let good = "-- no-transaction\n\
                    -- Why: the janitor reads jobs by finished_at.\n\
                    CREATE INDEX CONCURRENTLY jobs_finished ON jobs (finished_at);\n";
        assert_eq!(check_migration(good), Vec::<String>::new());
        let unique =
            "-- no-transaction\ncreate unique index concurrently if not exists a_b on a (b)";
        assert_eq!(check_migration(unique), Vec::<String>::new());
    }

    #[test]
    fn a_plain_index_fails() {
        let problems = check_migration("CREATE INDEX jobs_finished ON jobs (finished_at);");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("CONCURRENTLY"), "{problems:?}");
        // Line breaks, lower case and UNIQUE change nothing.
        assert_eq!(
            check_migration("-- no-transaction\ncreate\n  unique index a_b on a (b);").len(),
            1
        );
    }

    #[test]
    fn a_concurrent_index_needs_the_header_and_a_file_of_its_own() {
        let no_header = "CREATE INDEX CONCURRENTLY a_b ON a (b);";
        assert!(check_migration(no_header)[0].contains("-- no-transaction"));
        // The header must open the file: sqlx looks nowhere else.
        let late_header = "-- Why.\n-- no-transaction\nCREATE INDEX CONCURRENTLY a_b ON a (b);";
        assert_eq!(check_migration(late_header).len(), 1);
        let two = "-- no-transaction\nCREATE INDEX CONCURRENTLY a_b ON a (b);\n\
                   CREATE INDEX CONCURRENTLY a_c ON a (c);";
        assert!(check_migration(two)[0].contains("only statement"));
    }

    #[test]
    fn alter_table_needs_a_lock_timeout_before_it() {
        let good = "SET LOCAL lock_timeout = '5s';\nALTER TABLE jobs ADD COLUMN note text;";
        assert_eq!(check_migration(good), Vec::<String>::new());
        assert_eq!(
            check_migration("set local lock_timeout='5s'; alter table jobs add column note text;"),
            Vec::<String>::new()
        );
        // A plain SET outlives the migration on its pooled connection.
        let plain =
            check_migration("set lock_timeout='5s'; alter table jobs add column note text;");
        assert!(plain[0].contains("must be SET LOCAL"), "{plain:?}");
        let missing = "ALTER TABLE jobs ADD COLUMN note text;";
        assert!(check_migration(missing)[0].contains("lock_timeout"));
        let after = "ALTER TABLE jobs ADD COLUMN note text;\nSET LOCAL lock_timeout = '5s';";
        assert_eq!(check_migration(after).len(), 1);
        // A commented-out SET does not count.
        let commented = "-- SET LOCAL lock_timeout = '5s';\nALTER TABLE jobs ADD COLUMN note text;";
        assert_eq!(check_migration(commented).len(), 1);
        let block = "/* SET LOCAL lock_timeout = '5s'; */ ALTER TABLE jobs ADD COLUMN note text;";
        assert_eq!(check_migration(block).len(), 1);
    }

    #[test]
    fn the_existing_migrations_would_fail_the_rules() {
        // They are exempt; this shows the check reads real files.
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"));
        let sql = std::fs::read_to_string(dir.join(format!(
            "{NEWEST_EXEMPT}_webhook_deliveries_pending_by_job.sql"
        )))
        .unwrap();
        assert_eq!(check_migration(&sql).len(), 1);
    }

    #[test]
    fn new_migrations_follow_the_rules() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations"));
        let failing: Vec<_> = check_dir(dir)
            .into_iter()
            .filter(|(_, problems)| !problems.is_empty())
            .collect();
        assert!(
            failing.is_empty(),
            "migrations breaking the rules of migrations/README.md: {failing:#?}"
        );
    }

    #[test]
    fn only_migrations_after_the_newest_exempt_one_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let bad = "CREATE INDEX a_b ON a (b);";
        std::fs::write(dir.path().join(format!("{NEWEST_EXEMPT}_old.sql")), bad).unwrap();
        std::fs::write(
            dir.path().join(format!("{}_new.sql", NEWEST_EXEMPT + 1)),
            bad,
        )
        .unwrap();
        std::fs::write(dir.path().join("README.md"), bad).unwrap();
        let checked = check_dir(dir.path());
        assert_eq!(checked.len(), 1, "{checked:?}");
        assert_eq!(checked[0].0, format!("{}_new.sql", NEWEST_EXEMPT + 1));
        assert_eq!(checked[0].1.len(), 1);
    }
}
