//! Differential tests of the analyzer's CTE scoping against DuckDB's own binding.
//!
//! A name the analyzer takes for a CTE is left as it is; DuckDB then binds it. If DuckDB binds
//! it to a table instead (a CTE defined later, say), a file path or a catalog view would be
//! read behind the analyzer's back. So for random nests of WITH clauses, the original query
//! runs against real tables named like the CTEs, and the rewritten query runs where those
//! tables do not exist and only the analyzer's generated CTEs do. Where the scoping agrees
//! with DuckDB's, both give the same rows; where the analyzer sees a CTE DuckDB does not, the
//! rewritten query fails on the missing table; where it misses one DuckDB sees, the rows differ.

use duckdb::Connection;
use proptest::prelude::*;

use crate::sql::{Analysis, analyze};

/// Names used both as CTEs and as tables.
const NAMES: [&str; 3] = ["c0", "c1", "c2"];

/// One generated query: a WITH clause whose bodies read a name or a nested query.
#[derive(Debug, Clone)]
enum Source {
    Name(usize),
    Nested(Box<Query>),
}

#[derive(Debug, Clone)]
struct Query {
    recursive: bool,
    /// (CTE name index, what its body reads, what a UNION's right arm reads if it has one)
    ctes: Vec<(usize, Source, Option<Source>)>,
    main: Source,
}

fn source(depth: u32) -> BoxedStrategy<Source> {
    let name = (0..NAMES.len()).prop_map(Source::Name);
    if depth == 0 {
        name.boxed()
    } else {
        prop_oneof![
            3 => name,
            1 => query(depth - 1).prop_map(|query| Source::Nested(Box::new(query))),
        ]
        .boxed()
    }
}

fn query(depth: u32) -> BoxedStrategy<Query> {
    (
        any::<bool>(),
        proptest::collection::vec(
            (
                0..NAMES.len(),
                source(depth),
                proptest::option::of(source(depth)),
            ),
            0..=3,
        ),
        source(depth),
    )
        .prop_map(|(recursive, ctes, main)| Query {
            recursive,
            ctes,
            main,
        })
        .boxed()
}

fn render_source(source: &Source) -> String {
    match source {
        Source::Name(index) => NAMES[*index].to_string(),
        Source::Nested(query) => format!("({})", render(query)),
    }
}

/// Every body tags what it read, so the result shows which binding each reference took.
fn render(query: &Query) -> String {
    let mut sql = String::new();
    if !query.ctes.is_empty() {
        sql.push_str("WITH ");
        if query.recursive {
            sql.push_str("RECURSIVE ");
        }
        let ctes: Vec<String> = query
            .ctes
            .iter()
            .map(|(name, source, union)| {
                let mut body = format!(
                    "SELECT 'C{name}(' || v || ')' AS v FROM {} AS s",
                    render_source(source)
                );
                if let Some(right) = union {
                    // Bounded, so a recursive arm reading itself ends.
                    body.push_str(&format!(
                        " UNION SELECT 'R{name}(' || v || ')' AS v FROM {} AS s WHERE length(v) < 24",
                        render_source(right)
                    ));
                }
                format!("{} AS ({body})", NAMES[*name])
            })
            .collect();
        sql.push_str(&ctes.join(", "));
        sql.push(' ');
    }
    sql.push_str(&format!(
        "SELECT v FROM {} AS m",
        render_source(&query.main)
    ));
    sql
}

fn rows(connection: &Connection, sql: &str) -> Result<Vec<String>, String> {
    let mut statement = connection.prepare(sql).map_err(|error| error.to_string())?;
    let mut rows: Vec<String> = statement
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(|error| error.to_string())?
        .collect::<Result<_, _>>()
        .map_err(|error| error.to_string())?;
    rows.sort();
    Ok(rows)
}

/// The original query's rows with real tables named like the CTEs, and the rewritten query's
/// rows with only the generated CTEs (each table body tagged the same way).
/// A query's sorted rows, or DuckDB's error.
type Rows = Result<Vec<String>, String>;

fn both(sql: &str) -> Option<(Rows, Rows)> {
    let Ok(Analysis::Select(plan)) = analyze(sql, "db", 0) else {
        // Refused by the analyzer: nothing reaches DuckDB.
        return None;
    };
    let with_tables = Connection::open_in_memory().expect("duckdb");
    for name in NAMES {
        with_tables
            .execute_batch(&format!("CREATE TABLE {name} AS SELECT 'T:{name}' AS v"))
            .expect("create table");
    }
    let original = rows(&with_tables, sql);
    let bodies: Vec<String> = plan
        .tables
        .iter()
        .map(|(table, _)| format!("SELECT 'T:{}' AS v", table.measurement))
        .collect();
    let rewritten_sql = plan.render(&bodies);
    let without_tables = Connection::open_in_memory().expect("duckdb");
    let rewritten = rows(&without_tables, &rewritten_sql);
    Some((original, rewritten))
}

fn agree(sql: &str) -> Result<(), String> {
    let Some((original, rewritten)) = both(sql) else {
        return Ok(());
    };
    match (&original, &rewritten) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        // DuckDB refuses the query either way (e.g. a recursive CTE without UNION): nothing
        // is read.
        (Err(_), Err(_)) => Ok(()),
        _ => Err(format!(
            "scoping differs from DuckDB's for {sql}\n  duckdb: {original:?}\n  analyzer: {rewritten:?}"
        )),
    }
}

#[test]
fn test_should_bind_a_later_cte_name_as_a_table_like_duckdb() {
    // The reported bypass: under RECURSIVE, `c1` inside `c0` is the table, not the later CTE.
    let sql = "WITH RECURSIVE c0 AS (SELECT v FROM c1), c1 AS (SELECT 'x' AS v) SELECT v FROM c0";
    agree(sql).unwrap();
    let (original, _) = both(sql).unwrap();
    assert_eq!(original.unwrap(), vec!["T:c1".to_string()]);
}

#[test]
fn test_should_scope_ctes_like_duckdb_in_fixed_cases() {
    for sql in [
        "WITH c0 AS (SELECT v FROM c0) SELECT v FROM c0",
        "WITH RECURSIVE c0 AS (SELECT v FROM c0) SELECT v FROM c0",
        "WITH RECURSIVE c0 AS (SELECT v FROM c1 UNION SELECT v || 'x' FROM c0 WHERE length(v) < 9) SELECT v FROM c0",
        "WITH RECURSIVE c0 AS (SELECT v FROM c0 UNION SELECT v || 'x' FROM c0 WHERE length(v) < 9) SELECT v FROM c0",
        "WITH RECURSIVE c0 AS (SELECT v FROM c1 UNION ALL SELECT v FROM c0 WHERE false), c1 AS (SELECT v FROM c0) SELECT v FROM c1",
        "WITH c0 AS (SELECT v FROM c1), c1 AS (SELECT v FROM c0) SELECT v FROM c1",
        "WITH c0 AS (SELECT 'a' AS v) SELECT v FROM (WITH c1 AS (SELECT v FROM c0) SELECT v FROM c1)",
        "WITH c0 AS (SELECT v FROM (WITH c1 AS (SELECT 'n' AS v) SELECT v FROM c1)) SELECT v FROM c1",
    ] {
        agree(sql).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn test_should_scope_ctes_exactly_as_duckdb_binds_them(query in query(2)) {
        let sql = render(&query);
        prop_assert!(agree(&sql).is_ok(), "{}", agree(&sql).unwrap_err());
    }
}
