//! Invariant 8, checked on the SQL text itself: every statement of every engine (taken from its
//! [`Statements`](super::Statements), so none can be left out) is of a known kind, touches only
//! `webhooks_dispatch_*` tables, calls only vetted functions, and binds every value as a parameter.

/// Every statement of every engine.
fn all() -> Vec<&'static str> {
    let mut all = super::postgres::STATEMENTS.all();
    all.extend(super::sqlite::STATEMENTS.all());
    all
}

/// The statement kinds the library issues (DROP only of an index, ALTER only to add to a table). Anything
/// else — TRUNCATE, COPY, GRANT, VACUUM, ATTACH, DO, CALL, SET … — fails the audit until someone decides what
/// it may touch.
const KINDS: &[&str] = &[
    "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "CREATE", "LISTEN", "PRAGMA", "DROP", "ALTER",
];

/// Words that would make an `ALTER TABLE` take something away or hand the table over, rather than add a
/// column or a constraint: migrations only ever add, except for the columns in [`DROPPED_COLUMNS`].
const ALTER_REFUSED: &[&str] = &["DROP", "RENAME", "OWNER", "DISABLE", "ENABLE", "ATTACH", "DETACH"];

/// The columns a migration removes, each for a reason written here: 0006 moved every endpoint secret into
/// `webhooks_dispatch_endpoint_keys`, where it is sealed; a plaintext copy left behind in its old column would
/// defeat encryption at rest.
const DROPPED_COLUMNS: &[[&str; 6]] = &[[
    "ALTER",
    "TABLE",
    "webhooks_dispatch_endpoints",
    "DROP",
    "COLUMN",
    "secret",
]];

/// What may follow CREATE: tables and indexes, never functions, triggers, extensions or roles.
const CREATABLE: &[&str] = &["TABLE", "INDEX", "UNIQUE"];

/// SQLite settings a connection may change.
const PRAGMAS: &[&str] = &["journal_mode", "synchronous", "foreign_keys"];

/// Functions the statements may call: aggregates, array and JSON helpers, and the two PostgreSQL functions
/// that act beyond a table (the advisory lock that serializes migrations, and NOTIFY). Any other function
/// could reach outside the prefixed tables (dblink, pg_read_file, lo_import, a user's function).
const FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "least",
    "greatest",
    "substr",
    "coalesce",
    "unnest",
    "cardinality",
    "bool_and",
    "bool_or",
    "row_number",
    // Aggregating an endpoint's keys into one column of a claimed row (PostgreSQL, SQLite).
    "string_agg",
    "group_concat",
    "json_each",
    "json_array_length",
    // SQLite: rows the previous statement of a script changed.
    "changes",
    "pg_advisory_xact_lock",
    "pg_notify",
    // The clocks that stamp `webhooks_dispatch_migrations.applied_at` (PostgreSQL, SQLite).
    "now",
    "julianday",
];

/// Keywords that open a parenthesis without calling a function.
const PAREN_KEYWORDS: &[&str] = &[
    "AND",
    "OR",
    "NOT",
    "ANY",
    "ARRAY",
    "ELSE",
    "THEN",
    "WHEN",
    "ALL",
    "AS",
    "CAST",
    "LATERAL",
    "CHECK",
    "CONFLICT",
    "EXISTS",
    "FROM",
    "IN",
    "KEY",
    "OVER",
    "SELECT",
    "UNIQUE",
    "VALUES",
    "WHERE",
    "JOIN",
    "ON",
    "USING",
    "SET",
    "FILTER",
    "DEFAULT",
    "RETURNING",
];

/// Words and the punctuation that matters (parentheses, commas, semicolons, operators), with comments
/// removed.
fn tokens(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in sql.lines() {
        let code = line.split("--").next().unwrap_or("");
        let mut word = String::new();
        for c in code.chars() {
            if c.is_ascii_alphanumeric() || c == '_' || c == '$' {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            // Operators are kept too, so `int8 - (` is not read as a call of `int8`.
            if matches!(
                c,
                '(' | ')' | ',' | ';' | '-' | '+' | '*' | '/' | '=' | '<' | '>' | ':'
            ) {
                out.push(c.to_string());
            }
        }
        if !word.is_empty() {
            out.push(word);
        }
    }
    out
}

fn is_word(w: &str, kw: &str) -> bool {
    w.eq_ignore_ascii_case(kw)
}

/// The statements of a script, each as its tokens.
fn statements(sql: &str) -> Vec<Vec<String>> {
    tokens(sql)
        .split(|t| t == ";")
        .filter(|s| !s.is_empty())
        .map(<[String]>::to_vec)
        .collect()
}

/// Why a statement's kind is refused, if it is.
fn refused_kind(statement: &[String]) -> Option<String> {
    let kind = statement[0].to_ascii_uppercase();
    let next = statement.get(1).map(String::as_str).unwrap_or("");
    if !KINDS.contains(&kind.as_str()) {
        return Some(format!("statement kind {kind}"));
    }
    match kind.as_str() {
        "CREATE" if !CREATABLE.iter().any(|c| is_word(next, c)) => Some(format!("CREATE {next}")),
        // Migrations may replace an index of their own; a table is never dropped.
        "DROP" if !is_word(next, "INDEX") => Some(format!("DROP {next}")),
        "ALTER" if !is_word(next, "TABLE") => Some(format!("ALTER {next}")),
        "ALTER"
            if DROPPED_COLUMNS
                .iter()
                .any(|d| statement.iter().map(String::as_str).eq(d.iter().copied())) =>
        {
            None
        }
        "ALTER" => statement
            .iter()
            .find(|w| ALTER_REFUSED.iter().any(|r| is_word(w, r)))
            .map(|w| format!("ALTER TABLE … {w}")),
        "PRAGMA" if !PRAGMAS.contains(&next) => Some(format!("PRAGMA {next}")),
        "LISTEN" if !next.starts_with("webhooks_dispatch_") => Some(format!("LISTEN {next}")),
        _ => None,
    }
}

/// Names a statement reads or writes: what follows FROM (through comma lists) / JOIN / INTO / UPDATE /
/// TABLE / REFERENCES / TRUNCATE / COPY, and an index's own name and table. Skips `IF NOT EXISTS`, `ONLY`
/// and aliases.
fn relations(sql: &str) -> Vec<String> {
    let t = tokens(sql);
    let is = |i: usize, kw: &str| t.get(i).is_some_and(|w| is_word(w, kw));
    let mut out = Vec::new();
    let mut i = 0;
    while i < t.len() {
        let kw = t[i].to_ascii_uppercase();
        let introduces = matches!(
            kw.as_str(),
            "FROM" | "JOIN" | "INTO" | "TABLE" | "REFERENCES" | "INDEX" | "TRUNCATE" | "COPY"
        ) || (kw == "UPDATE" && !(i > 0 && is(i - 1, "FOR")));
        if !introduces {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while is(j, "IF") || is(j, "NOT") || is(j, "EXISTS") || is(j, "ONLY") || is(j, "TABLE") {
            j += 1;
        }
        if t.get(j).is_some_and(|w| w == "(") {
            // A subquery, not a relation name.
            i = j;
            continue;
        }
        if t.get(j + 1).is_some_and(|w| w == "(") && (kw == "FROM" || kw == "JOIN") {
            // A set-returning function such as unnest(...), not a relation; `calls` vets it.
            i = j + 1;
            continue;
        }
        if let Some(name) = t.get(j) {
            out.push(name.clone());
        }
        j += 1;
        if kw == "INDEX" && is(j, "ON") {
            if let Some(table) = t.get(j + 1) {
                out.push(table.clone());
            }
            j += 2;
        }
        if kw == "FROM" || kw == "TRUNCATE" {
            j = more_relations(&t, j, &mut out);
        }
        i = j;
    }
    out
}

/// After the first relation of a FROM (or TRUNCATE) list: skips its alias and collects the relations that
/// follow commas. Returns the position after the list.
fn more_relations(t: &[String], mut j: usize, out: &mut Vec<String>) -> usize {
    let is = |i: usize, kw: &str| t.get(i).is_some_and(|w| is_word(w, kw));
    loop {
        if is(j, "AS") {
            j += 2;
        } else if t
            .get(j)
            .is_some_and(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            && !matches!(
                t[j].to_ascii_uppercase().as_str(),
                "WHERE" | "JOIN" | "ORDER" | "LIMIT" | "GROUP" | "ON" | "FOR" | "RETURNING"
            )
        {
            j += 1;
        }
        if t.get(j).is_some_and(|w| w == ",") && t.get(j + 1).is_some_and(|w| w != "(") {
            out.push(t[j + 1].clone());
            j += 2;
            continue;
        }
        return j;
    }
}

/// Names defined by `WITH name AS (` / `, name AS (` in the statement itself.
fn ctes(sql: &str) -> Vec<String> {
    let compact: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    compact
        .match_indices(" AS (")
        .filter_map(|(at, _)| compact[..at].rsplit([' ', ',']).next().map(str::to_owned))
        .collect()
}

/// Functions a statement calls: every word directly followed by `(` that is neither a keyword, nor a
/// relation (a column list after a table name), nor a name the statement defines (a CTE, or an alias with
/// column names: `AS t(a, b)`).
fn calls(sql: &str) -> Vec<String> {
    let t = tokens(sql);
    let local = ctes(sql);
    let named = relations(sql);
    (0..t.len().saturating_sub(1))
        .filter(|&i| t[i + 1] == "(" && t[i].chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .filter(|&i| !(i > 0 && is_word(&t[i - 1], "AS")))
        .map(|i| t[i].clone())
        .filter(|w| !PAREN_KEYWORDS.iter().any(|k| is_word(w, k)))
        .filter(|w| !named.contains(w) && !local.contains(w))
        .map(|w| w.to_ascii_lowercase())
        .collect()
}

/// Everything the audit refuses in one statement text.
fn violations(sql: &str) -> Vec<String> {
    let mut found: Vec<String> = statements(sql).iter().filter_map(|s| refused_kind(s)).collect();
    let local = ctes(sql);
    for name in relations(sql) {
        if !name.starts_with("webhooks_dispatch_") && !local.contains(&name) {
            found.push(format!("relation {name}"));
        }
    }
    for call in calls(sql) {
        if !FUNCTIONS.contains(&call.as_str()) {
            found.push(format!("function {call}"));
        }
    }
    found
}

#[test]
fn invariant8_every_statement_touches_only_prefixed_tables_with_known_kinds_and_functions() {
    let mut relations_seen = 0;
    let mut calls_seen = 0;
    for sql in all() {
        assert_eq!(violations(sql), Vec::<String>::new(), "in:\n{sql}");
        relations_seen += relations(sql).len();
        calls_seen += calls(sql).len();
    }
    // Both engines' full sets: enough that a scanner that stopped finding things would show.
    assert!(
        relations_seen >= 40,
        "too few relations found ({relations_seen}) to trust the scanner"
    );
    assert!(
        calls_seen >= 20,
        "too few function calls found ({calls_seen}) to trust the scanner"
    );
    assert!(all().len() >= 28, "{} statements", all().len());
}

#[test]
fn invariant8_scanner_catches_foreign_tables_kinds_and_functions() {
    let names = relations("SELECT a FROM webhooks_dispatch_x AS w, users u JOIN orders ON true");
    assert_eq!(names, ["webhooks_dispatch_x", "users", "orders"]);
    assert_eq!(relations("INSERT INTO audit (x) VALUES ($1)"), ["audit"]);
    assert_eq!(
        relations("CREATE INDEX IF NOT EXISTS i ON other (x)"),
        ["i", "other"]
    );
    assert_eq!(
        relations("SELECT (SELECT 1 FROM a), (SELECT 2 FROM b) FROM c, d"),
        ["a", "b", "c", "d"]
    );
    assert_eq!(relations("SELECT id FROM q FOR UPDATE SKIP LOCKED"), ["q"]);
    assert_eq!(
        relations("SELECT 1 FROM json_each($1) AS i JOIN json_each($2) AS t ON true JOIN x"),
        ["x"]
    );
    assert_eq!(
        relations("TRUNCATE TABLE ONLY users, orders"),
        ["users", "orders"]
    );
    assert_eq!(relations("COPY users TO '/tmp/x'"), ["users"]);
    for (sql, expected) in [
        ("TRUNCATE webhooks_dispatch_outbox", "statement kind TRUNCATE"),
        (
            "COPY webhooks_dispatch_outbox TO PROGRAM 'sh'",
            "statement kind COPY",
        ),
        ("DROP TABLE webhooks_dispatch_outbox", "DROP TABLE"),
        (
            "ALTER TABLE webhooks_dispatch_outbox DROP COLUMN payload",
            "ALTER TABLE … DROP",
        ),
        (
            "ALTER TABLE webhooks_dispatch_endpoints DROP COLUMN url",
            "ALTER TABLE … DROP",
        ),
        (
            "ALTER TABLE webhooks_dispatch_outbox RENAME TO users",
            "ALTER TABLE … RENAME",
        ),
        ("ALTER TABLE users ADD COLUMN x text", "relation users"),
        ("ALTER ROLE postgres SUPERUSER", "ALTER ROLE"),
        ("DROP INDEX IF EXISTS users_idx", "relation users_idx"),
        ("SELECT 1; VACUUM", "statement kind VACUUM"),
        (
            "CREATE FUNCTION webhooks_dispatch_f() RETURNS int",
            "CREATE FUNCTION",
        ),
        ("PRAGMA writable_schema = ON", "PRAGMA writable_schema"),
        ("LISTEN other_channel", "LISTEN other_channel"),
        ("SELECT pg_read_file('/etc/passwd')", "function pg_read_file"),
        (
            "SELECT * FROM dblink('host=x', 'SELECT 1') AS t(a int)",
            "function dblink",
        ),
        (
            "UPDATE webhooks_dispatch_outbox SET payload = lo_import($1::text)",
            "function lo_import",
        ),
    ] {
        assert!(
            violations(sql).iter().any(|v| v == expected),
            "{sql}: {:?}",
            violations(sql)
        );
    }
    // Column lists, CTE names and keywords before a parenthesis are not calls.
    assert_eq!(
        calls("WITH r AS (SELECT count(*) FROM t) INSERT INTO webhooks_dispatch_a (x) VALUES (1)"),
        ["count"]
    );
}

#[test]
fn invariant8_parameters_are_numbered_and_typed() {
    for sql in super::postgres::STATEMENTS.all() {
        // Each placeholder carries an explicit cast at least once, and they are numbered 1..=n with no gap,
        // so every driver binds the same types in the same order.
        let t = tokens(sql);
        let mut max = 0;
        for w in t.iter().filter(|w| w.starts_with('$')) {
            let n: usize = w[1..]
                .parse()
                .unwrap_or_else(|_| panic!("odd placeholder {w} in {sql}"));
            assert!(sql.contains(&format!("{w}::")), "{w} never cast in:\n{sql}");
            max = max.max(n);
        }
        for n in 1..=max {
            assert!(t.iter().any(|w| *w == format!("${n}")), "${n} unused in:\n{sql}");
        }
    }
    for sql in all() {
        assert!(
            !sql.contains("'$"),
            "a placeholder inside a string literal:\n{sql}"
        );
    }
}
