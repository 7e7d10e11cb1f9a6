//! Phase 1 of a query: checks the SQL, finds the tables it reads and the time bounds in its
//! WHERE clauses, and rewrites it so that it can only read what phase 2 hands it. Pure: no
//! DuckDB, no I/O, no clock (the caller passes `now`).
//!
//! # What the rewrite guarantees
//! Every table reference (`db.measurement` or a bare `measurement`) that is not a CTE in scope
//! is replaced by a generated CTE name (`__arc_t0`, `__arc_t1`, one per distinct table), keeping
//! the user's alias, or adding the measurement name as the alias so that `cpu.usage` still
//! binds. Phase 2 ([`SelectPlan::render`]) defines those CTEs over the table's Parquet files and
//! fresh rows. So the user's SQL never names a DuckDB catalog object, a file, or a replacement
//! scan: whatever it names is one of our CTEs, one of its own CTEs, or an allowed table
//! function (`range`, `generate_series`, `unnest`).
//!
//! # Hazards
//! - The checks are a deny-list of function names plus an allow-list of table functions. They
//!   are the first line of defence only: the engine also locks DuckDB down (no external
//!   access outside the data directories, no extension loading, locked configuration).
//! - CTE scoping follows DuckDB's binder: a CTE sees only the CTEs defined before it (under
//!   RECURSIVE, also itself in the right arm of a UNION body), and an inner query's CTEs
//!   shadow outer ones. A name wrongly taken for a CTE would reach DuckDB unrewritten, so
//!   scoping is tracked exactly rather than by "any CTE name anywhere".
//! - Time pruning must never drop a row the query could return. Bounds come only from
//!   top-level AND-conjuncts of the WHERE of the SELECT whose FROM holds the reference,
//!   compare the table's own `time` column with a constant we can evaluate, and are widened by
//!   a second (DuckDB may round literals to micro- or whole seconds). `now()` stands for "no
//!   earlier than `now_ns`": DuckDB reads the clock later, so it bounds from below only.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::ControlFlow;

use arc_storage::model::{TIME_COLUMN, TableId, TimeRange};
use chrono::NaiveDate;
use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, Function, Ident, JoinOperator, ObjectName,
    ObjectNamePart, Query, Select, SetExpr, SetOperator, Statement, TableAlias, TableFactor,
    TableWithJoins, Value, ValueWithSpan, VisitMut, VisitorMut, With,
};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::error::QueryError;

/// Prefix of the CTE names phase 2 defines; user CTEs may not start with [`RESERVED_PREFIX`].
const CTE_PREFIX: &str = "__arc_t";

/// Names starting with this (any case) are ours; a user CTE may not take one.
const RESERVED_PREFIX: &str = "__arc_";

/// Table functions a query may call in FROM. They compute rows from their arguments alone.
const ALLOWED_TABLE_FUNCTIONS: &[&str] = &["range", "generate_series", "unnest"];

/// Function names (lowercase) that are denied anywhere: they read files, reach the network or
/// the environment, run SQL of their own, read or change settings, or read raw Arrow memory.
const DENIED_FUNCTIONS: &[&str] = &[
    "arrow",
    "current_setting",
    "getenv",
    "glob",
    "load_aws_credentials",
    "query",
    "query_table",
    "set_variable",
    "sniff_csv",
    "which_secret",
];

/// Denied name prefixes (lowercase): file readers and scanners of other systems.
const DENIED_PREFIXES: &[&str] = &[
    "read_",
    "parquet_",
    "iceberg_",
    "delta_",
    "ducklake_",
    "sqlite_",
    "postgres_",
    "mysql_",
    "duckdb_",
    "pg_",
    "pragma_",
    "http",
    "json_execute",
    "st_read",
];

/// Denied name suffixes (lowercase): `parquet_scan`, `csv_scan`, `sqlite_attach`, ...
const DENIED_SUFFIXES: &[&str] = &["_scan", "_attach"];

/// Slack added on both sides of a bound given by a literal: DuckDB may truncate or round a
/// literal to microseconds (`TIMESTAMP`) or seconds (`TIMESTAMP_S`) before comparing.
const LITERAL_SLACK_NS: i128 = 1_000_000_000;

/// Stands for an unbounded end while evaluating bounds in `i128`; far beyond any `i64`, so
/// adding intervals never brings it back into range.
const UNBOUNDED: i128 = i64::MAX as i128 * 4;

const NANOS_PER_SECOND: i128 = 1_000_000_000;
const NANOS_PER_DAY: i128 = 86_400 * NANOS_PER_SECOND;

/// What a SQL text asks for.
// One value per request, moved once: boxing the plan would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Analysis {
    /// `SHOW DATABASES`: answered by the node from its catalog.
    ShowDatabases,
    /// `SHOW TABLES [FROM db]`: answered by the node from its catalog.
    ShowTables {
        /// The database asked about (the default database when none was named).
        database: String,
    },
    /// A query for DuckDB, rewritten to read only generated CTEs.
    Select(SelectPlan),
}

/// A checked and rewritten query, ready for [`crate::QueryEngine::execute`] once the caller has
/// fetched the files of its tables.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectPlan {
    /// The distinct tables the query reads, each with the time range that may hold rows the
    /// query can return (`TimeRange::ALL` when unknown). The position of a table is the `K`
    /// of its CTE `__arc_tK`.
    pub tables: Vec<(TableId, TimeRange)>,
    /// The user's own WITH clause, kept apart so phase 2 can put its CTEs in front.
    user_with: Option<With>,
    /// The rewritten query without its WITH clause.
    body: Query,
}

impl SelectPlan {
    /// Returns the CTE name of the table at `index` in [`SelectPlan::tables`].
    pub(crate) fn cte_name(index: usize) -> String {
        format!("{CTE_PREFIX}{index}")
    }

    /// Renders the final SQL: the generated CTEs (one body per table, in order), then the
    /// user's CTEs, then the rewritten query.
    pub(crate) fn render(&self, cte_bodies: &[String]) -> String {
        debug_assert_eq!(
            cte_bodies.len(),
            self.tables.len(),
            "one CTE body per table"
        );
        let user_ctes = self
            .user_with
            .as_ref()
            .map_or(&[][..], |with| &with.cte_tables);
        let mut sql = String::new();
        if !cte_bodies.is_empty() || !user_ctes.is_empty() {
            sql.push_str("WITH ");
            if self.user_with.as_ref().is_some_and(|with| with.recursive) {
                sql.push_str("RECURSIVE ");
            }
            let generated = cte_bodies
                .iter()
                .enumerate()
                .map(|(index, body)| format!("{} AS ({body})", Self::cte_name(index)));
            let user = user_ctes.iter().map(ToString::to_string);
            let all: Vec<String> = generated.chain(user).collect();
            sql.push_str(&all.join(", "));
            sql.push(' ');
        }
        // Writing into a String cannot fail.
        let _ = write!(sql, "{}", self.body);
        sql
    }
}

/// Checks `sql`, finds its tables and their time bounds, and rewrites it for phase 2.
///
/// `default_database` is the database of bare `FROM measurement` references; `now_ns` is the
/// caller's clock (nanoseconds since the Unix epoch), read before the query runs.
///
/// # Errors
/// [`QueryError::Parse`] when the SQL does not parse; [`QueryError::Forbidden`] for statements
/// other than a query, file/network/environment functions, table functions outside the
/// allow-list, placeholders, and quoted strings used as tables; [`QueryError::Invalid`] for bad
/// table names, more than one statement, and constructs this node does not run.
pub fn analyze(sql: &str, default_database: &str, now_ns: i64) -> Result<Analysis, QueryError> {
    let analysis = analyze_unrecorded(sql, default_database, now_ns);
    if let Err(error) = &analysis {
        crate::metrics::record_failure(error);
    }
    analysis
}

fn analyze_unrecorded(
    sql: &str,
    default_database: &str,
    now_ns: i64,
) -> Result<Analysis, QueryError> {
    // Before anything recursive: a deep tree overflows the stack when walked or dropped.
    crate::limits::check_bounds(sql)?;
    if let Some(show) = parse_show(sql, default_database)? {
        return Ok(show);
    }
    let mut statements = Parser::parse_sql(&DuckDbDialect {}, sql).map_err(parse_error)?;
    if statements.len() != 1 {
        return Err(QueryError::Invalid(format!(
            "expected exactly one statement, found {}",
            statements.len()
        )));
    }
    let statement = statements
        .pop()
        .expect("exactly one statement was just checked");
    let mut query = match statement {
        Statement::Query(query) => *query,
        other => {
            return Err(QueryError::Forbidden(format!(
                "{} statements are not allowed; only queries can run",
                statement_kind(&other)
            )));
        }
    };
    let mut analyzer = Analyzer::new(default_database, now_ns);
    if let ControlFlow::Break(error) = query.visit(&mut analyzer) {
        return Err(error);
    }
    let user_with = query.with.take();
    Ok(Analysis::Select(SelectPlan {
        tables: analyzer.finish(),
        user_with,
        body: query,
    }))
}

/// Recognises `SHOW DATABASES` and `SHOW TABLES [FROM|IN db]` (any case, optional `;`).
fn parse_show(sql: &str, default_database: &str) -> Result<Option<Analysis>, QueryError> {
    let text = sql.trim().trim_end_matches(';').trim_end();
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    let is = |index: usize, keyword: &str| {
        words
            .get(index)
            .is_some_and(|word| word.eq_ignore_ascii_case(keyword))
    };
    if !is(0, "show") {
        return Ok(None);
    }
    match words.len() {
        2 if is(1, "databases") => Ok(Some(Analysis::ShowDatabases)),
        2 if is(1, "tables") => Ok(Some(Analysis::ShowTables {
            database: default_database.to_string(),
        })),
        4 if is(1, "tables") && (is(2, "from") || is(2, "in")) => {
            let quoted = words[3];
            let database = quoted
                .strip_prefix('"')
                .and_then(|rest| rest.strip_suffix('"'))
                .unwrap_or(quoted);
            if !is_valid_database_name(database) {
                return Err(QueryError::Invalid(format!(
                    "invalid database name {database:?}"
                )));
            }
            Ok(Some(Analysis::ShowTables {
                database: database.to_string(),
            }))
        }
        _ => Ok(None),
    }
}

fn parse_error(error: ParserError) -> QueryError {
    match error {
        ParserError::ParserError(message) | ParserError::TokenizerError(message) => {
            QueryError::Parse(message)
        }
        ParserError::RecursionLimitExceeded => {
            QueryError::Parse("query is nested too deeply".to_string())
        }
    }
}

/// Names a statement by its leading keywords (`INSERT`, `CREATE TABLE`, `COPY`, ...).
fn statement_kind(statement: &Statement) -> String {
    let text = statement.to_string();
    let mut words = text.split_ascii_whitespace().map(|word| {
        word.chars()
            .take_while(|c| c.is_ascii_alphabetic() || *c == '_')
            .collect::<String>()
            .to_ascii_uppercase()
    });
    let first = words.next().unwrap_or_default();
    let qualifiers = [
        "OR",
        "REPLACE",
        "TEMP",
        "TEMPORARY",
        "PERSISTENT",
        "UNIQUE",
        "IF",
        "NOT",
        "EXISTS",
    ];
    match first.as_str() {
        "CREATE" | "DROP" | "ALTER" | "SHOW" => {
            match words.find(|word| !qualifiers.contains(&word.as_str())) {
                Some(second) if !second.is_empty() => format!("{first} {second}"),
                _ => first,
            }
        }
        "" => "this kind of".to_string(),
        _ => first,
    }
}

/// Returns whether `name` is a valid database name (`^[A-Za-z][A-Za-z0-9_-]{0,63}$`).
/// Whether a table-name part belongs to DuckDB's own catalog (`pg_settings`,
/// `duckdb_tables()`'s views, `information_schema.*`): never a database or measurement here.
fn is_system_name(part: &str) -> bool {
    let lower = part.to_ascii_lowercase();
    lower.starts_with("pg_")
        || lower.starts_with("duckdb_")
        || lower == "information_schema"
        || lower == "sqlite_master"
}

fn is_valid_database_name(name: &str) -> bool {
    is_valid_name(name, 64)
}

/// Returns whether `name` is a valid measurement name (`^[A-Za-z][A-Za-z0-9_-]*$`, ≤ 128).
fn is_valid_measurement_name(name: &str) -> bool {
    is_valid_name(name, 128)
}

fn is_valid_name(name: &str, max_len: usize) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= max_len
        && bytes[0].is_ascii_alphabetic()
        && bytes
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || *byte == b'_' || *byte == b'-')
}

/// Returns the address of an AST node, to recognise the same node in a later visit. The AST
/// is not moved while it is visited, so addresses are stable for the whole walk.
fn address_of<T>(node: &T) -> usize {
    std::ptr::from_ref(node) as usize
}

/// The CTE names one query defines, and how many of them are visible right now.
struct CteScope {
    /// Lowercase CTE names, in definition order.
    names: Vec<String>,
    /// Only `names[..visible]` resolve: while CTE `i` of a non-recursive WITH is visited,
    /// `visible == i`.
    visible: usize,
}

/// Where a CTE body sits: its query's scope frame and the CTEs visible inside it.
#[derive(Clone, Copy)]
struct CteBody {
    frame: usize,
    visible: usize,
}

/// The visitor that checks and rewrites one query.
struct Analyzer<'a> {
    default_database: &'a str,
    now_ns: i64,
    /// One frame per query being visited (innermost last).
    scopes: Vec<CteScope>,
    /// CTE bodies not yet visited, by the address of their `Query`.
    cte_bodies: HashMap<usize, CteBody>,
    /// The right arms of recursive CTEs (a UNION's right SELECT), by address: inside them the
    /// CTE also sees itself.
    recursive_arms: HashMap<usize, CteBody>,
    /// Time range of each table reference, by the address of its `TableFactor`; filled when
    /// the enclosing SELECT is entered, read when the reference itself is visited.
    reference_ranges: HashMap<usize, TimeRange>,
    /// Distinct tables in order of first reference, with the hull of their ranges.
    tables: Vec<(TableId, TimeRange)>,
    /// Set by a `TableFactor::Table`; any other relation name (`x IN table`, ...) is refused.
    expecting_relation: bool,
}

impl<'a> Analyzer<'a> {
    fn new(default_database: &'a str, now_ns: i64) -> Self {
        Self {
            default_database,
            now_ns,
            scopes: Vec::new(),
            cte_bodies: HashMap::new(),
            recursive_arms: HashMap::new(),
            reference_ranges: HashMap::new(),
            tables: Vec::new(),
            expecting_relation: false,
        }
    }

    fn finish(self) -> Vec<(TableId, TimeRange)> {
        self.tables
            .into_iter()
            .map(|(table, range)| {
                // Contradictory bounds select nothing; keep a well-formed (one-instant) range
                // rather than one whose overlap test would misbehave.
                let end_ns = range.end_ns.max(range.start_ns);
                (
                    table,
                    TimeRange {
                        start_ns: range.start_ns,
                        end_ns,
                    },
                )
            })
            .collect()
    }

    /// Returns whether a single-part table name is a CTE visible at this point.
    fn is_cte_in_scope(&self, name: &str) -> bool {
        self.scopes.iter().rev().any(|scope| {
            scope.names[..scope.visible]
                .iter()
                .any(|cte| cte.eq_ignore_ascii_case(name))
        })
    }

    /// Replaces a table reference by its generated CTE name and records the table.
    fn rewrite_reference(
        &mut self,
        factor_address: usize,
        name: &mut ObjectName,
        alias: &mut Option<TableAlias>,
    ) -> Result<(), QueryError> {
        let mut parts = Vec::with_capacity(name.0.len());
        for part in &name.0 {
            match part {
                ObjectNamePart::Identifier(ident) => parts.push(ident),
                ObjectNamePart::Function(_) => {
                    return Err(QueryError::Invalid(format!(
                        "unsupported table name {name}"
                    )));
                }
            }
        }
        if parts.iter().any(|ident| ident.quote_style == Some('\'')) {
            return Err(QueryError::Forbidden(format!(
                "a quoted string used as a table ({name}) is a file scan; \
                 use database.measurement"
            )));
        }
        if let [single] = parts.as_slice()
            && self.is_cte_in_scope(&single.value)
        {
            return Ok(());
        }
        if let Some(part) = parts.iter().find(|ident| is_system_name(&ident.value)) {
            return Err(QueryError::Forbidden(format!(
                "{name} names DuckDB's catalog ({}); only database.measurement tables can be read",
                part.value
            )));
        }
        let table = match parts.as_slice() {
            [measurement] => TableId::new(self.default_database, measurement.value.as_str()),
            [database, measurement] => {
                TableId::new(database.value.as_str(), measurement.value.as_str())
            }
            _ => {
                return Err(QueryError::Invalid(format!(
                    "table name {name} has more than two parts; use database.measurement"
                )));
            }
        };
        if !is_valid_database_name(&table.database) {
            return Err(QueryError::Invalid(format!(
                "invalid database name {:?} in {name}",
                table.database
            )));
        }
        if !is_valid_measurement_name(&table.measurement) {
            return Err(QueryError::Invalid(format!(
                "invalid measurement name {:?} in {name}",
                table.measurement
            )));
        }
        let range = self
            .reference_ranges
            .get(&factor_address)
            .copied()
            .unwrap_or(TimeRange::ALL);
        let index = match self.tables.iter().position(|(known, _)| *known == table) {
            Some(index) => {
                let hull = &mut self.tables[index].1;
                hull.start_ns = hull.start_ns.min(range.start_ns);
                hull.end_ns = hull.end_ns.max(range.end_ns);
                index
            }
            None => {
                self.tables.push((table.clone(), range));
                self.tables.len() - 1
            }
        };
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: Ident::with_quote('"', table.measurement.as_str()),
                columns: Vec::new(),
                at: None,
            });
        }
        *name = ObjectName::from(vec![Ident::new(SelectPlan::cte_name(index))]);
        Ok(())
    }

    /// Computes the time range of every table reference directly in this SELECT's FROM.
    fn record_reference_ranges(&mut self, select: &Select) {
        let mut relations = Vec::new();
        let mut plain_joins = true;
        for table_with_joins in &select.from {
            plain_joins &= collect_relations(table_with_joins, &mut relations);
        }
        let mut conjuncts = Vec::new();
        // Other joins (semi, anti, positional, ...) get no bounds: a filtered-out row can
        // still shape the output.
        if let (Some(selection), true) = (&select.selection, plain_joins) {
            split_conjuncts(selection, &mut conjuncts);
        }
        // An unqualified `time` is this table's only when nothing else is in the FROM.
        let unqualified_is_ours = relations.len() == 1;
        for relation in relations {
            let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = relation
            else {
                continue;
            };
            let qualifier = match alias {
                Some(alias) => alias.name.value.clone(),
                None => match name.0.last().and_then(ObjectNamePart::as_ident) {
                    Some(ident) => ident.value.clone(),
                    None => continue,
                },
            };
            let column = TimeColumn {
                qualifier: &qualifier,
                unqualified_is_ours,
            };
            let range = self.range_from_conjuncts(&conjuncts, &column);
            self.reference_ranges.insert(address_of(relation), range);
        }
    }

    /// Intersects the bounds that each conjunct puts on the time column.
    fn range_from_conjuncts(&self, conjuncts: &[&Expr], column: &TimeColumn<'_>) -> TimeRange {
        let mut lower = i128::from(i64::MIN);
        let mut upper = i128::from(i64::MAX);
        for conjunct in conjuncts {
            let (low, high) = self.bounds_of(conjunct, column);
            lower = lower.max(low);
            upper = upper.min(high);
        }
        TimeRange {
            start_ns: clamp_to_i64(lower),
            end_ns: clamp_to_i64(upper),
        }
    }

    /// Returns the `(lower, upper)` bound one conjunct puts on the time column; unbounded
    /// ends when it says nothing we can use.
    fn bounds_of(&self, conjunct: &Expr, column: &TimeColumn<'_>) -> (i128, i128) {
        const OPEN: (i128, i128) = (-UNBOUNDED, UNBOUNDED);
        match conjunct {
            Expr::Nested(inner) => self.bounds_of(inner, column),
            Expr::BinaryOp { left, op, right } => {
                let (op, other) = if column.matches(left) {
                    (op.clone(), right)
                } else if column.matches(right) {
                    match flip(op) {
                        Some(flipped) => (flipped, left),
                        None => return OPEN,
                    }
                } else {
                    return OPEN;
                };
                let Some(instant) = self.evaluate(other) else {
                    return OPEN;
                };
                match op {
                    BinaryOperator::Gt | BinaryOperator::GtEq => (instant.earliest, UNBOUNDED),
                    BinaryOperator::Lt | BinaryOperator::LtEq => (-UNBOUNDED, instant.latest),
                    BinaryOperator::Eq => (instant.earliest, instant.latest),
                    _ => OPEN,
                }
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } if column.matches(expr) => {
                let lower = self.evaluate(low).map_or(-UNBOUNDED, |low| low.earliest);
                let upper = self.evaluate(high).map_or(UNBOUNDED, |high| high.latest);
                (lower, upper)
            }
            _ => OPEN,
        }
    }

    /// Evaluates a constant instant expression to the span of instants it may stand for.
    fn evaluate(&self, expr: &Expr) -> Option<Instant> {
        match expr {
            Expr::Nested(inner) => self.evaluate(inner),
            Expr::Value(ValueWithSpan {
                value: Value::SingleQuotedString(text),
                ..
            }) => parse_timestamp(text).map(Instant::literal),
            Expr::TypedString(typed) => {
                let Value::SingleQuotedString(text) = &typed.value.value else {
                    return None;
                };
                literal_of_type(text, &typed.data_type)
            }
            Expr::Cast {
                kind: CastKind::Cast | CastKind::DoubleColon,
                expr,
                data_type,
                format: None,
            } => match expr.as_ref() {
                Expr::Value(ValueWithSpan {
                    value: Value::SingleQuotedString(text),
                    ..
                }) => literal_of_type(text, data_type),
                _ => None,
            },
            Expr::Function(function) if is_now(function) => Some(Instant {
                // DuckDB reads its clock after ours: its `now()` is `now_ns` or later.
                earliest: i128::from(self.now_ns),
                latest: UNBOUNDED,
            }),
            Expr::BinaryOp {
                left,
                op: op @ (BinaryOperator::Plus | BinaryOperator::Minus),
                right,
            } => {
                if let Some(interval) = parse_interval(right) {
                    let base = self.evaluate(left)?;
                    Some(match op {
                        BinaryOperator::Plus => base.plus(interval),
                        _ => base.minus(interval),
                    })
                } else if matches!(op, BinaryOperator::Plus) {
                    let interval = parse_interval(left)?;
                    Some(self.evaluate(right)?.plus(interval))
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

impl VisitorMut for Analyzer<'_> {
    type Break = QueryError;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<QueryError> {
        if let Some(body) = self.cte_bodies.get(&address_of(query)).copied() {
            self.scopes[body.frame].visible = body.visible;
        }
        if let Err(error) = check_query_shape(query) {
            return ControlFlow::Break(error);
        }
        let mut names = Vec::new();
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = cte.alias.name.value.to_ascii_lowercase();
                if name.starts_with(RESERVED_PREFIX) {
                    return ControlFlow::Break(QueryError::Invalid(format!(
                        "CTE name {} is reserved (names starting with {RESERVED_PREFIX} are \
                         used by the node)",
                        cte.alias.name
                    )));
                }
                names.push(name);
            }
            let frame = self.scopes.len();
            for (index, cte) in with.cte_tables.iter().enumerate() {
                // DuckDB binds a name inside CTE `i` only against the CTEs before it (and, under
                // RECURSIVE, itself), never against later ones: a later CTE's name there is a
                // table, and an unknown table can be a file path DuckDB scans. Treating a name
                // as a CTE where DuckDB does not would leave that path unrewritten, so this
                // must never see more than DuckDB does (tested against DuckDB itself).
                //
                // Under RECURSIVE, DuckDB makes a CTE recursive only when its body is a UNION
                // (ALL); then only the UNION's right arm reads the CTE itself. Any other body
                // is an ordinary CTE that does not see its own name. Seeing less than DuckDB
                // is harmless (the name is read as a table, through the rewrite), so a right
                // arm that is not a plain SELECT simply does not see itself.
                self.cte_bodies.insert(
                    address_of(cte.query.as_ref()),
                    CteBody {
                        frame,
                        visible: index,
                    },
                );
                if with.recursive
                    && let SetExpr::SetOperation {
                        op: SetOperator::Union,
                        right,
                        ..
                    } = cte.query.body.as_ref()
                    && let SetExpr::Select(select) = right.as_ref()
                {
                    self.recursive_arms.insert(
                        address_of(select.as_ref()),
                        CteBody {
                            frame,
                            visible: index + 1,
                        },
                    );
                }
            }
        }
        let visible = names.len();
        self.scopes.push(CteScope { names, visible });
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<QueryError> {
        self.scopes.pop();
        if let Some(body) = self.cte_bodies.remove(&address_of(query)) {
            let scope = &mut self.scopes[body.frame];
            scope.visible = scope.names.len();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<QueryError> {
        if let Some(arm) = self.recursive_arms.get(&address_of(select)).copied() {
            self.scopes[arm.frame].visible = arm.visible;
        }
        if select.into.is_some() {
            return ControlFlow::Break(QueryError::Forbidden(
                "SELECT INTO creates a table; only queries can run".to_string(),
            ));
        }
        self.record_reference_ranges(select);
        ControlFlow::Continue(())
    }

    fn post_visit_select(&mut self, select: &mut Select) -> ControlFlow<QueryError> {
        if let Some(arm) = self.recursive_arms.remove(&address_of(select)) {
            // Back to the rest of the CTE's body, which does not see the CTE itself.
            self.scopes[arm.frame].visible = arm.visible - 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<QueryError> {
        let factor_address = address_of(factor);
        let result = match factor {
            TableFactor::Table {
                name, alias, args, ..
            } => {
                self.expecting_relation = true;
                if args.is_some() {
                    check_table_function(name)
                } else {
                    self.rewrite_reference(factor_address, name, alias)
                }
            }
            TableFactor::Function { name, .. } => check_table_function(name),
            TableFactor::TableFunction { .. } => Err(QueryError::Forbidden(
                "TABLE(...) table functions are not allowed".to_string(),
            )),
            _ => Ok(()),
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => ControlFlow::Break(error),
        }
    }

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<QueryError> {
        if std::mem::take(&mut self.expecting_relation) {
            ControlFlow::Continue(())
        } else {
            ControlFlow::Break(QueryError::Invalid(format!(
                "table {relation} is referenced where only FROM may name tables"
            )))
        }
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<QueryError> {
        // DuckDB's `now()` is a TIMESTAMPTZ, and TIMESTAMPTZ arithmetic (`now() - INTERVAL
        // '1 hour'`) needs the ICU extension, which the bundled build lacks. Time columns are
        // UTC timestamps without a zone, so `now()` becomes the query's own clock reading as a
        // plain TIMESTAMP: the everyday `time > now() - INTERVAL '1 hour'` works, and pruning
        // and execution agree on what "now" is.
        if let Expr::Function(function) = expr
            && is_now(function)
        {
            match now_literal(self.now_ns) {
                Some(literal) => *expr = literal,
                None => {
                    return ControlFlow::Break(QueryError::Execution(format!(
                        "cannot express the current time {} as a timestamp",
                        self.now_ns
                    )));
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<QueryError> {
        let result = match expr {
            // Method-call syntax (`'x'.getenv()`) parses to a field access whose chain holds an
            // `Expr::Function`, so it is checked here too.
            Expr::Function(function) => check_function(&function.name),
            _ => Ok(()),
        };
        match result {
            Ok(()) => ControlFlow::Continue(()),
            Err(error) => ControlFlow::Break(error),
        }
    }

    fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<QueryError> {
        match &value.value {
            Value::Placeholder(placeholder) => ControlFlow::Break(QueryError::Forbidden(format!(
                "placeholder {placeholder} is not allowed; write values into the query"
            ))),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_statement(&mut self, statement: &mut Statement) -> ControlFlow<QueryError> {
        // The top-level query is visited as a `Query`, so any statement seen here is nested
        // (`WITH ... INSERT`, ...).
        ControlFlow::Break(QueryError::Forbidden(format!(
            "{} statements are not allowed; only queries can run",
            statement_kind(statement)
        )))
    }
}

/// Refuses query clauses DuckDB does not run or that could hide a write.
fn check_query_shape(query: &Query) -> Result<(), QueryError> {
    let unsupported = if query.settings.is_some() {
        Some("SETTINGS")
    } else if query.format_clause.is_some() {
        Some("FORMAT")
    } else if query.for_clause.is_some() {
        Some("FOR XML/JSON")
    } else if !query.locks.is_empty() {
        Some("FOR UPDATE/SHARE")
    } else if !query.pipe_operators.is_empty() {
        Some("pipe operators")
    } else {
        None
    };
    if let Some(clause) = unsupported {
        return Err(QueryError::Invalid(format!("{clause} is not supported")));
    }
    check_set_expr(&query.body)
}

fn check_set_expr(body: &SetExpr) -> Result<(), QueryError> {
    match body {
        SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) => Ok(()),
        SetExpr::SetOperation { left, right, .. } => {
            check_set_expr(left)?;
            check_set_expr(right)
        }
        SetExpr::Insert(statement)
        | SetExpr::Update(statement)
        | SetExpr::Delete(statement)
        | SetExpr::Merge(statement) => Err(QueryError::Forbidden(format!(
            "{} statements are not allowed; only queries can run",
            statement_kind(statement)
        ))),
        SetExpr::Table(_) => Err(QueryError::Invalid(
            "TABLE name is not supported; use SELECT * FROM name".to_string(),
        )),
    }
}

/// Returns the lowercase last part of a function name (`main.read_csv` → `read_csv`).
fn function_name(name: &ObjectName) -> Result<String, QueryError> {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(ident)) => Ok(ident.value.to_ascii_lowercase()),
        _ => Err(QueryError::Invalid(format!(
            "unsupported function name {name}"
        ))),
    }
}

fn is_denied(function: &str) -> bool {
    DENIED_FUNCTIONS.contains(&function)
        || DENIED_PREFIXES
            .iter()
            .any(|prefix| function.starts_with(prefix))
        || DENIED_SUFFIXES
            .iter()
            .any(|suffix| function.ends_with(suffix))
}

/// Refuses denied functions in scalar position.
fn check_function(name: &ObjectName) -> Result<(), QueryError> {
    let function = function_name(name)?;
    if is_denied(&function) {
        return Err(QueryError::Forbidden(format!(
            "function {name} is not allowed: it reads files, the network or the environment"
        )));
    }
    Ok(())
}

/// Refuses table functions outside the allow-list.
fn check_table_function(name: &ObjectName) -> Result<(), QueryError> {
    check_function(name)?;
    let function = function_name(name)?;
    if name.0.len() != 1 || !ALLOWED_TABLE_FUNCTIONS.contains(&function.as_str()) {
        return Err(QueryError::Forbidden(format!(
            "table function {name} is not allowed; allowed are {}",
            ALLOWED_TABLE_FUNCTIONS.join(", ")
        )));
    }
    Ok(())
}

/// Pushes the leaf relations of a FROM item (through nested joins); returns whether every
/// join is an inner, outer or cross join, the kinds whose output rows each carry the row of
/// every relation they came from, so that a WHERE on a relation's `time` drops exactly the
/// rows built from that relation's filtered-out rows.
fn collect_relations<'s>(
    table_with_joins: &'s TableWithJoins,
    out: &mut Vec<&'s TableFactor>,
) -> bool {
    let mut plain = collect_factor(&table_with_joins.relation, out);
    for join in &table_with_joins.joins {
        plain &= matches!(
            join.join_operator,
            JoinOperator::Join(_)
                | JoinOperator::Inner(_)
                | JoinOperator::Left(_)
                | JoinOperator::LeftOuter(_)
                | JoinOperator::Right(_)
                | JoinOperator::RightOuter(_)
                | JoinOperator::FullOuter(_)
                | JoinOperator::CrossJoin(_)
        );
        plain &= collect_factor(&join.relation, out);
    }
    plain
}

fn collect_factor<'s>(factor: &'s TableFactor, out: &mut Vec<&'s TableFactor>) -> bool {
    match factor {
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => collect_relations(table_with_joins, out),
        other => {
            out.push(other);
            true
        }
    }
}

/// Splits `a AND (b AND c)` into `[a, b, c]`.
fn split_conjuncts<'e>(expr: &'e Expr, out: &mut Vec<&'e Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_conjuncts(left, out);
            split_conjuncts(right, out);
        }
        Expr::Nested(inner) => split_conjuncts(inner, out),
        other => out.push(other),
    }
}

/// How the time column of one table reference can be written in its SELECT.
struct TimeColumn<'q> {
    /// The reference's alias, or its measurement name when it has none.
    qualifier: &'q str,
    /// Whether a bare `time` binds to this reference (it is alone in its FROM).
    unqualified_is_ours: bool,
}

impl TimeColumn<'_> {
    fn matches(&self, expr: &Expr) -> bool {
        match expr {
            Expr::Nested(inner) => self.matches(inner),
            Expr::Identifier(ident) => {
                self.unqualified_is_ours && ident.value.eq_ignore_ascii_case(TIME_COLUMN)
            }
            Expr::CompoundIdentifier(parts) => match parts.as_slice() {
                [table, column] => {
                    table.value.eq_ignore_ascii_case(self.qualifier)
                        && column.value.eq_ignore_ascii_case(TIME_COLUMN)
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// Mirrors a comparison so the time column is on the left (`X < time` → `time > X`).
fn flip(op: &BinaryOperator) -> Option<BinaryOperator> {
    match op {
        BinaryOperator::Gt => Some(BinaryOperator::Lt),
        BinaryOperator::GtEq => Some(BinaryOperator::LtEq),
        BinaryOperator::Lt => Some(BinaryOperator::Gt),
        BinaryOperator::LtEq => Some(BinaryOperator::GtEq),
        BinaryOperator::Eq => Some(BinaryOperator::Eq),
        _ => None,
    }
}

/// The instants a constant expression may stand for, in nanoseconds; `±UNBOUNDED` for an
/// open end.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Instant {
    earliest: i128,
    latest: i128,
}

impl Instant {
    fn literal(nanos: i64) -> Self {
        Self {
            earliest: i128::from(nanos) - LITERAL_SLACK_NS,
            latest: i128::from(nanos) + LITERAL_SLACK_NS,
        }
    }

    fn plus(self, interval: Interval) -> Self {
        Self {
            earliest: self.earliest + interval.shortest,
            latest: self.latest + interval.longest,
        }
    }

    fn minus(self, interval: Interval) -> Self {
        Self {
            earliest: self.earliest - interval.longest,
            latest: self.latest - interval.shortest,
        }
    }
}

/// A duration that may vary (a month is 28 to 31 days), in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Interval {
    shortest: i128,
    longest: i128,
}

fn clamp_to_i64(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

/// `TIMESTAMP '<now, UTC, microseconds>'` as an expression; `None` only for a clock reading
/// chrono cannot represent.
fn now_literal(now_ns: i64) -> Option<Expr> {
    let time = chrono::DateTime::from_timestamp_nanos(now_ns);
    let text = format!("TIMESTAMP '{}'", time.format("%Y-%m-%d %H:%M:%S%.6f"));
    Parser::new(&DuckDbDialect {})
        .try_with_sql(&text)
        .ok()?
        .parse_expr()
        .ok()
}

fn is_now(function: &Function) -> bool {
    let [ObjectNamePart::Identifier(ident)] = function.name.0.as_slice() else {
        return false;
    };
    let name = ident.value.to_ascii_lowercase();
    let no_arguments = match &function.args {
        sqlparser::ast::FunctionArguments::None => true,
        sqlparser::ast::FunctionArguments::List(list) => list.args.is_empty(),
        sqlparser::ast::FunctionArguments::Subquery(_) => false,
    };
    no_arguments
        && function.over.is_none()
        && matches!(
            name.as_str(),
            "now" | "current_timestamp" | "get_current_timestamp" | "transaction_timestamp"
        )
}

/// Evaluates a literal cast to a timestamp or date type.
fn literal_of_type(text: &str, data_type: &DataType) -> Option<Instant> {
    match data_type {
        DataType::Timestamp(..) | DataType::Datetime(_) | DataType::TimestampNtz(_) => {
            parse_timestamp(text).map(Instant::literal)
        }
        DataType::Date => parse_date_only(text).map(Instant::literal),
        DataType::Custom(name, modifiers) if modifiers.is_empty() => {
            let is_timestamp = match name.0.as_slice() {
                [ObjectNamePart::Identifier(ident)] => matches!(
                    ident.value.to_ascii_lowercase().as_str(),
                    "timestamp_ns"
                        | "timestamp_us"
                        | "timestamp_ms"
                        | "timestamp_s"
                        | "timestamptz"
                        | "datetime"
                ),
                _ => false,
            };
            if is_timestamp {
                parse_timestamp(text).map(Instant::literal)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Parses `YYYY-MM-DD` alone, as a date cast sees it, to midnight UTC.
fn parse_date_only(text: &str) -> Option<i64> {
    let mut scanner = Scanner::new(text.trim());
    let date = scanner.date()?;
    if !scanner.at_end() {
        return None;
    }
    date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt()
}

/// Parses the timestamp literals users write: `YYYY-MM-DD`, then optionally `T` or a space
/// and `HH:MM[:SS[.fraction]]`, then optionally `Z` or a `±HH[:MM]` offset. The result is
/// nanoseconds since the epoch, UTC.
///
/// A non-zero offset gives `None` (no bound): the bundled DuckDB has no ICU, and its casts to
/// TIMESTAMP drop the offset and keep the wall-clock time, so any bound we derived from the
/// offset-adjusted instant could disagree with what DuckDB then filters, and pruning must
/// never drop rows the query would return.
fn parse_timestamp(text: &str) -> Option<i64> {
    let mut scanner = Scanner::new(text.trim());
    let date = scanner.date()?;
    if scanner.at_end() {
        return date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_nanos_opt();
    }
    if !scanner.eat(b'T') && !scanner.eat(b't') && !scanner.eat(b' ') {
        return None;
    }
    let hour = scanner.number(1, 2)?;
    if !scanner.eat(b':') {
        return None;
    }
    let minute = scanner.number(2, 2)?;
    let mut second = 0;
    let mut nanos = 0;
    if scanner.eat(b':') {
        second = scanner.number(2, 2)?;
        if scanner.eat(b'.') {
            nanos = scanner.fraction_nanos()?;
        }
    }
    let offset_seconds = scanner.offset_seconds()?;
    if !scanner.at_end() {
        return None;
    }
    if offset_seconds != 0 {
        return None;
    }
    date.and_hms_nano_opt(hour, minute, second, nanos)?
        .and_utc()
        .timestamp_nanos_opt()
}

/// A cursor over the bytes of a literal.
struct Scanner<'t> {
    bytes: &'t [u8],
    position: usize,
}

impl<'t> Scanner<'t> {
    fn new(text: &'t str) -> Self {
        Self {
            bytes: text.as_bytes(),
            position: 0,
        }
    }

    fn at_end(&self) -> bool {
        self.position == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    /// Reads `min..=max` decimal digits.
    fn number(&mut self, min: usize, max: usize) -> Option<u32> {
        let start = self.position;
        let mut value: u32 = 0;
        while self.position - start < max {
            match self.peek() {
                Some(digit @ b'0'..=b'9') => {
                    value = value * 10 + u32::from(digit - b'0');
                    self.position += 1;
                }
                _ => break,
            }
        }
        (self.position - start >= min).then_some(value)
    }

    fn date(&mut self) -> Option<NaiveDate> {
        let year = self.number(4, 4)?;
        if !self.eat(b'-') {
            return None;
        }
        let month = self.number(1, 2)?;
        if !self.eat(b'-') {
            return None;
        }
        let day = self.number(1, 2)?;
        NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
    }

    /// Reads fractional-second digits; digits past nanoseconds are dropped.
    fn fraction_nanos(&mut self) -> Option<u32> {
        let start = self.position;
        let mut nanos: u32 = 0;
        let mut scale: u32 = 100_000_000;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            nanos += u32::from(digit - b'0') * scale;
            scale /= 10;
            self.position += 1;
        }
        (self.position > start).then_some(nanos)
    }

    /// Reads an optional `Z` or `±HH[[:]MM]` suffix; returns the offset east of UTC.
    fn offset_seconds(&mut self) -> Option<i32> {
        if self.eat(b'Z') || self.eat(b'z') {
            return Some(0);
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return Some(0);
        };
        let hours = self.number(2, 2)?;
        self.eat(b':');
        let minutes = if self.at_end() { 0 } else { self.number(2, 2)? };
        if hours > 23 || minutes > 59 {
            return None;
        }
        Some(sign * i32::try_from(hours * 3600 + minutes * 60).ok()?)
    }
}

/// Reads an `INTERVAL '2 hours'`, `INTERVAL '2' HOUR` or `INTERVAL 2 HOUR` expression.
fn parse_interval(expr: &Expr) -> Option<Interval> {
    let Expr::Interval(interval) = expr else {
        return None;
    };
    if interval.last_field.is_some() || interval.fractional_seconds_precision.is_some() {
        return None;
    }
    let text = match interval.value.as_ref() {
        Expr::Value(ValueWithSpan {
            value: Value::SingleQuotedString(text) | Value::Number(text, _),
            ..
        }) => text.as_str(),
        _ => return None,
    };
    match &interval.leading_field {
        Some(unit) => {
            let count: i128 = text.trim().parse().ok()?;
            let (shortest, longest) = unit_nanos(&unit.to_string())?;
            Some(scale_interval(count, shortest, longest))
        }
        None => parse_interval_text(text),
    }
}

/// Parses `N unit [N unit ...]` (`'1 hour'`, `'1 day 2 hours'`, `'-30 minutes'`).
fn parse_interval_text(text: &str) -> Option<Interval> {
    let words: Vec<&str> = text.split_ascii_whitespace().collect();
    if words.is_empty() || !words.len().is_multiple_of(2) {
        return None;
    }
    let mut total = Interval {
        shortest: 0,
        longest: 0,
    };
    for pair in words.chunks(2) {
        let count: i128 = pair[0].parse().ok()?;
        let (shortest, longest) = unit_nanos(pair[1])?;
        let part = scale_interval(count, shortest, longest);
        total.shortest += part.shortest;
        total.longest += part.longest;
    }
    Some(total)
}

fn scale_interval(count: i128, shortest: i128, longest: i128) -> Interval {
    // Counts are bounded by parsing into i128 from short words; saturate anyway.
    let a = count.saturating_mul(shortest);
    let b = count.saturating_mul(longest);
    Interval {
        shortest: a.min(b).clamp(-UNBOUNDED, UNBOUNDED),
        longest: a.max(b).clamp(-UNBOUNDED, UNBOUNDED),
    }
}

/// Returns the shortest and longest length of one `unit`, in nanoseconds.
fn unit_nanos(unit: &str) -> Option<(i128, i128)> {
    let unit = unit.to_ascii_lowercase();
    let fixed = |nanos: i128| Some((nanos, nanos));
    match unit.as_str() {
        "ns" | "nanosecond" | "nanoseconds" => fixed(1),
        "us" | "microsecond" | "microseconds" => fixed(1_000),
        "ms" | "millisecond" | "milliseconds" => fixed(1_000_000),
        "s" | "sec" | "secs" | "second" | "seconds" => fixed(NANOS_PER_SECOND),
        "min" | "mins" | "minute" | "minutes" => fixed(60 * NANOS_PER_SECOND),
        "h" | "hr" | "hrs" | "hour" | "hours" => fixed(3_600 * NANOS_PER_SECOND),
        "d" | "day" | "days" => fixed(NANOS_PER_DAY),
        "w" | "week" | "weeks" => fixed(7 * NANOS_PER_DAY),
        "mon" | "mons" | "month" | "months" => Some((28 * NANOS_PER_DAY, 31 * NANOS_PER_DAY)),
        "y" | "yr" | "yrs" | "year" | "years" => Some((365 * NANOS_PER_DAY, 366 * NANOS_PER_DAY)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_785_542_400_000_000_000; // 2026-08-01T00:00:00Z
    const HOUR: i64 = 3_600_000_000_000;
    const SECOND: i64 = 1_000_000_000;

    fn plan(sql: &str) -> SelectPlan {
        match analyze(sql, "default", NOW) {
            Ok(Analysis::Select(plan)) => plan,
            other => panic!("expected a select plan for {sql}, got {other:?}"),
        }
    }

    fn rendered(sql: &str) -> String {
        let checked = plan(sql);
        let bodies: Vec<String> = (0..checked.tables.len())
            .map(|index| format!("BODY{index}"))
            .collect();
        checked.render(&bodies)
    }

    fn range(sql: &str) -> TimeRange {
        let checked = plan(sql);
        assert_eq!(checked.tables.len(), 1, "one table expected in {sql}");
        checked.tables[0].1
    }

    fn forbidden(sql: &str) -> String {
        match analyze(sql, "default", NOW) {
            Err(QueryError::Forbidden(message)) => message,
            other => panic!("expected Forbidden for {sql}, got {other:?}"),
        }
    }

    fn invalid(sql: &str) -> String {
        match analyze(sql, "default", NOW) {
            Err(QueryError::Invalid(message)) => message,
            other => panic!("expected Invalid for {sql}, got {other:?}"),
        }
    }

    // SHOW

    #[test]
    fn test_should_answer_show_statements_without_the_parser() {
        assert_eq!(
            analyze("SHOW DATABASES", "default", NOW),
            Ok(Analysis::ShowDatabases)
        );
        assert_eq!(
            analyze("  show   databases ; ", "default", NOW),
            Ok(Analysis::ShowDatabases)
        );
        assert_eq!(
            analyze("SHOW TABLES", "metrics", NOW),
            Ok(Analysis::ShowTables {
                database: "metrics".into()
            })
        );
        assert_eq!(
            analyze("Show Tables From prod;", "default", NOW),
            Ok(Analysis::ShowTables {
                database: "prod".into()
            })
        );
        assert_eq!(
            analyze("SHOW TABLES IN \"prod\"", "default", NOW),
            Ok(Analysis::ShowTables {
                database: "prod".into()
            })
        );
    }

    #[test]
    fn test_should_reject_show_tables_of_an_invalid_database() {
        invalid("SHOW TABLES FROM '../etc'");
    }

    #[test]
    fn test_should_forbid_other_show_statements() {
        let message = forbidden("SHOW COLUMNS FROM cpu");
        assert!(message.contains("SHOW"), "{message}");
    }

    // Statements

    #[test]
    fn test_should_forbid_every_statement_that_is_not_a_query() {
        let cases = [
            ("INSERT INTO cpu VALUES (1)", "INSERT"),
            ("UPDATE cpu SET x = 1", "UPDATE"),
            ("DELETE FROM cpu", "DELETE"),
            ("COPY cpu TO '/tmp/x.csv'", "COPY"),
            (
                "COPY (SELECT 1) TO '/tmp/x.parquet' (FORMAT parquet)",
                "COPY",
            ),
            ("ATTACH 'other.db' AS other", "ATTACH"),
            ("DETACH other", "DETACH"),
            ("INSTALL httpfs", "INSTALL"),
            ("LOAD httpfs", "LOAD"),
            ("SET enable_external_access = true", "SET"),
            ("SET threads TO 1", "SET"),
            ("RESET threads", "RESET"),
            ("PRAGMA enable_profiling", "PRAGMA"),
            ("CREATE TABLE t (a INT)", "CREATE TABLE"),
            ("CREATE OR REPLACE VIEW v AS SELECT 1", "CREATE VIEW"),
            ("CREATE MACRO m(a) AS a", "CREATE"),
            (
                "CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')",
                "CREATE",
            ),
            ("DROP TABLE cpu", "DROP TABLE"),
            ("ALTER TABLE cpu ADD COLUMN x INT", "ALTER TABLE"),
            ("EXPORT DATABASE '/tmp/out'", "EXPORT"),
            ("CALL pragma_version()", "CALL"),
            ("EXPLAIN SELECT 1", "EXPLAIN"),
            ("DESCRIBE cpu", "DESCRIBE"),
            ("BEGIN TRANSACTION", "BEGIN"),
            ("CHECKPOINT", "CHECKPOINT"),
            ("USE other", "USE"),
        ];
        for (sql, kind) in cases {
            match analyze(sql, "default", NOW) {
                Err(QueryError::Forbidden(message)) => {
                    assert!(message.starts_with(kind), "{sql}: {message}")
                }
                // A few DuckDB statements are unknown to the parser; refusing them is enough.
                Err(QueryError::Parse(_)) => {}
                other => panic!("expected {sql} to be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn test_should_forbid_writes_hidden_behind_a_with_clause() {
        forbidden("WITH x AS (SELECT 1) INSERT INTO cpu SELECT * FROM x");
        forbidden("WITH x AS (SELECT 1) DELETE FROM cpu");
    }

    #[test]
    fn test_should_forbid_select_into() {
        let result = analyze("SELECT * INTO newtable FROM cpu", "default", NOW);
        assert!(
            matches!(result, Err(QueryError::Forbidden(_) | QueryError::Parse(_))),
            "{result:?}"
        );
    }

    #[test]
    fn test_should_require_exactly_one_statement() {
        invalid("SELECT 1; SELECT 2");
        invalid("SELECT 1; DROP TABLE cpu");
        assert!(matches!(
            analyze("", "default", NOW),
            Err(QueryError::Invalid(_))
        ));
        assert!(matches!(
            analyze("SELECT 1;", "default", NOW),
            Ok(Analysis::Select(_))
        ));
    }

    #[test]
    fn test_should_report_parse_errors() {
        assert!(matches!(
            analyze("SELEC 1", "default", NOW),
            Err(QueryError::Parse(_))
        ));
        assert!(matches!(
            analyze("SELECT FROM WHERE", "default", NOW),
            Err(QueryError::Parse(_))
        ));
    }

    #[test]
    fn test_should_forbid_placeholders() {
        forbidden("SELECT * FROM cpu WHERE host = ?");
        forbidden("SELECT * FROM cpu WHERE host = $1");
        forbidden("SELECT * FROM cpu LIMIT $2");
    }

    // Functions

    #[test]
    fn test_should_forbid_file_functions_in_table_position() {
        let cases = [
            "SELECT * FROM read_parquet('/etc/passwd')",
            "SELECT * FROM READ_PARQUET('x.parquet')",
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM read_csv_auto('/etc/passwd')",
            "SELECT * FROM read_json('x')",
            "SELECT * FROM read_json_auto('x')",
            "SELECT * FROM read_ndjson('x')",
            "SELECT * FROM read_text('/etc/passwd')",
            "SELECT * FROM read_blob('/etc/passwd')",
            "SELECT * FROM parquet_scan('x')",
            "SELECT * FROM Parquet_Metadata('x')",
            "SELECT * FROM parquet_schema('x')",
            "SELECT * FROM csv_scan('x')",
            "SELECT * FROM glob('/*')",
            "SELECT * FROM query('SELECT 1')",
            "SELECT * FROM query_table('t')",
            "SELECT * FROM sniff_csv('x')",
            "SELECT * FROM arrow(1)",
            "SELECT * FROM iceberg_scan('x')",
            "SELECT * FROM delta_scan('x')",
            "SELECT * FROM sqlite_scan('x', 't')",
            "SELECT * FROM postgres_scan('dsn', 'public', 't')",
            "SELECT * FROM mysql_query('x', 'SELECT 1')",
            "SELECT * FROM duckdb_settings()",
            "SELECT * FROM pragma_version()",
            "SELECT * FROM main.read_csv('x')",
        ];
        for sql in cases {
            forbidden(sql);
        }
    }

    #[test]
    fn test_should_forbid_table_functions_outside_the_allow_list() {
        let message = forbidden("SELECT * FROM checkpoint()");
        assert!(message.contains("range"), "{message}");
        forbidden("SELECT * FROM test_all_types()");
        forbidden("SELECT * FROM cpu(1)");
        forbidden("SELECT * FROM main.range(3)");
    }

    #[test]
    fn test_should_forbid_denied_functions_in_scalar_position() {
        let cases = [
            "SELECT getenv('HOME')",
            "SELECT GETENV('HOME')",
            "SELECT 'HOME'.getenv()",
            "SELECT current_setting('allowed_directories')",
            "SELECT * FROM cpu WHERE host = getenv('USER')",
            "SELECT (SELECT count(*) FROM read_csv('/etc/passwd'))",
            "SELECT * FROM cpu WHERE host IN (SELECT * FROM read_text('/etc/hostname'))",
            "SELECT * FROM cpu WHERE EXISTS (SELECT 1 FROM glob('/*'))",
            "WITH x AS (SELECT * FROM read_parquet('/data/*.parquet')) SELECT * FROM x",
            "SELECT * FROM (SELECT * FROM (SELECT * FROM parquet_scan('x')))",
            "SELECT * FROM cpu JOIN read_csv('x') r ON true",
            "SELECT max(usage) OVER (PARTITION BY getenv('x')) FROM cpu",
            "SELECT list_transform([1], x -> getenv('HOME'))",
            "SELECT http_get('http://example.com')",
            "SELECT set_variable('x', 1)",
        ];
        for sql in cases {
            forbidden(sql);
        }
    }

    #[test]
    fn test_should_forbid_quoted_strings_used_as_tables() {
        let message = forbidden("SELECT * FROM 'data.parquet'");
        assert!(message.contains("file scan"), "{message}");
        forbidden("SELECT * FROM '/etc/passwd' AS p");
        forbidden("FROM 'x.csv'");
    }

    #[test]
    fn test_should_reject_file_like_identifiers_as_table_names() {
        invalid("SELECT * FROM \"data.parquet\"");
        invalid("SELECT * FROM \"/etc/passwd\"");
        invalid("SELECT * FROM \"../x\".cpu");
    }

    #[test]
    fn test_should_reject_table_names_in_other_positions() {
        let result = analyze("SELECT * FROM cpu WHERE host IN other", "default", NOW);
        assert!(
            matches!(result, Err(QueryError::Invalid(_) | QueryError::Parse(_))),
            "{result:?}"
        );
        let result = analyze("TABLE cpu", "default", NOW);
        assert!(
            matches!(result, Err(QueryError::Invalid(_) | QueryError::Parse(_))),
            "{result:?}"
        );
    }

    #[test]
    fn test_should_allow_ordinary_functions_and_allowed_table_functions() {
        for sql in [
            "SELECT * FROM range(10)",
            "SELECT * FROM generate_series(1, 3) AS g(n)",
            "SELECT unnest([1, 2, 3])",
            "SELECT * FROM unnest([1, 2])",
            "SELECT time_bucket(INTERVAL '1 hour', time) AS hour, avg(usage) FROM cpu GROUP BY 1",
            "SELECT date_trunc('hour', time), count(*) FROM cpu GROUP BY ALL ORDER BY ALL",
            "SELECT upper(host), length(host), regexp_matches(host, 'h.*') FROM cpu",
            "SELECT host, avg(usage) FILTER (WHERE usage > 1) FROM cpu GROUP BY host",
            "SELECT epoch_ns(time), strftime(time, '%Y') FROM cpu",
        ] {
            plan(sql);
        }
    }

    // Table references and rewriting

    #[test]
    fn test_should_rewrite_references_and_keep_or_add_aliases() {
        let checked = plan("SELECT cpu.usage FROM cpu");
        assert_eq!(
            checked.tables,
            vec![(TableId::new("default", "cpu"), TimeRange::ALL)]
        );
        assert_eq!(
            checked.render(&["BODY".into()]),
            "WITH __arc_t0 AS (BODY) SELECT cpu.usage FROM __arc_t0 AS \"cpu\""
        );
        assert_eq!(
            rendered("SELECT c.usage FROM prod.cpu AS c"),
            "WITH __arc_t0 AS (BODY0) SELECT c.usage FROM __arc_t0 AS c"
        );
        // The user's own spelling of the alias (with or without AS) is kept.
        assert_eq!(
            rendered("SELECT c.usage FROM prod.cpu c"),
            "WITH __arc_t0 AS (BODY0) SELECT c.usage FROM __arc_t0 c"
        );
    }

    #[test]
    fn test_should_resolve_bare_and_qualified_names() {
        let checked = plan("SELECT * FROM cpu, prod.mem, \"default\".cpu AS c2");
        let tables: Vec<TableId> = checked.tables.iter().map(|(t, _)| t.clone()).collect();
        assert_eq!(
            tables,
            vec![TableId::new("default", "cpu"), TableId::new("prod", "mem")]
        );
        invalid("SELECT * FROM a.b.c");
        let other_default = analyze("SELECT * FROM cpu", "metrics", NOW);
        let Ok(Analysis::Select(other_default)) = other_default else {
            panic!("expected a plan");
        };
        assert_eq!(other_default.tables[0].0, TableId::new("metrics", "cpu"));
    }

    #[test]
    fn test_should_give_one_cte_per_distinct_table() {
        let sql = rendered(
            "SELECT a.host FROM cpu a JOIN mem m ON a.host = m.host \
             WHERE a.host IN (SELECT host FROM cpu)",
        );
        assert_eq!(
            sql,
            "WITH __arc_t0 AS (BODY0), __arc_t1 AS (BODY1) SELECT a.host FROM __arc_t0 a JOIN \
             __arc_t1 m ON a.host = m.host WHERE a.host IN (SELECT host FROM __arc_t0 \
             AS \"cpu\")"
        );
    }

    #[test]
    fn test_should_merge_generated_ctes_with_the_users_with_clause() {
        let sql = rendered(
            "WITH hot AS (SELECT * FROM cpu WHERE usage > 90) SELECT host FROM hot ORDER BY host",
        );
        assert_eq!(
            sql,
            "WITH __arc_t0 AS (BODY0), hot AS (SELECT * FROM __arc_t0 AS \"cpu\" WHERE usage > \
             90) SELECT host FROM hot ORDER BY host"
        );
        let recursive = rendered(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
             SELECT * FROM r, cpu",
        );
        assert!(
            recursive.starts_with("WITH RECURSIVE __arc_t0 AS (BODY0), r (n) AS"),
            "{recursive}"
        );
        assert!(recursive.contains("FROM r WHERE n < 3"), "{recursive}");
    }

    #[test]
    fn test_should_leave_a_query_without_tables_alone() {
        assert_eq!(rendered("SELECT 1 + 1"), "SELECT 1 + 1");
        assert_eq!(
            rendered("WITH x AS (SELECT 1 AS a) SELECT a FROM x"),
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x"
        );
    }

    #[test]
    fn test_should_scope_cte_names_like_sql() {
        // The CTE body's `cpu` is the table; the outer `cpu` is the CTE.
        let sql = rendered("WITH cpu AS (SELECT * FROM cpu WHERE usage > 1) SELECT * FROM cpu");
        assert_eq!(
            sql,
            "WITH __arc_t0 AS (BODY0), cpu AS (SELECT * FROM __arc_t0 AS \"cpu\" WHERE usage > \
             1) SELECT * FROM cpu"
        );
        // A later CTE sees an earlier one; an earlier one does not see a later one.
        let checked = plan("WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT * FROM b");
        assert_eq!(
            checked.tables,
            vec![(TableId::new("default", "b"), TimeRange::ALL)]
        );
        // A CTE defined in a subquery is not visible outside it.
        let checked = plan("SELECT * FROM (WITH mem AS (SELECT 1) SELECT * FROM mem) s, mem");
        assert_eq!(
            checked.tables,
            vec![(TableId::new("default", "mem"), TimeRange::ALL)]
        );
        // CTE names match case-insensitively, as DuckDB binds them.
        let checked = plan("WITH Hot AS (SELECT 1) SELECT * FROM HOT");
        assert!(checked.tables.is_empty());
    }

    #[test]
    fn test_should_reserve_the_generated_cte_prefix() {
        invalid("WITH __arc_t0 AS (SELECT 1) SELECT * FROM __arc_t0");
        invalid("WITH __ARC_x AS (SELECT 1) SELECT 1");
        // As a table name it fails name validation instead.
        invalid("SELECT * FROM __arc_t0");
    }

    #[test]
    fn test_should_accept_the_queries_users_write() {
        let cases = [
            "SELECT * FROM cpu ORDER BY time DESC LIMIT 10",
            "FROM cpu",
            "FROM cpu SELECT host",
            "SELECT host, count(*) FROM cpu GROUP BY host HAVING count(*) > 1",
            "SELECT host, usage, avg(usage) OVER (PARTITION BY host ORDER BY time ROWS BETWEEN \
             2 PRECEDING AND CURRENT ROW) FROM cpu",
            "SELECT * FROM cpu QUALIFY row_number() OVER (PARTITION BY host ORDER BY time DESC) = 1",
            "SELECT * EXCLUDE (usage) FROM cpu",
            "SELECT c.host, m.free FROM cpu c LEFT JOIN mem m USING (host, time)",
            "SELECT host FROM cpu UNION ALL SELECT host FROM mem",
            "SELECT * FROM (SELECT host, max(usage) AS peak FROM cpu GROUP BY host) t WHERE peak > 1",
            "SELECT * FROM cpu WHERE time > now() - INTERVAL '1 hour' AND host LIKE 'web%'",
            "SELECT time::DATE AS day, sum(usage) FROM cpu GROUP BY day",
            "SELECT {'a': 1} AS s, [1, 2, 3][1] AS l",
            "SELECT * FROM cpu, LATERAL (SELECT usage * 2 AS doubled) d",
            "SELECT DISTINCT ON (host) host, usage FROM cpu ORDER BY host, time DESC",
            "VALUES (1, 'a'), (2, 'b')",
        ];
        for sql in cases {
            plan(sql);
        }
    }

    #[test]
    fn test_should_quote_measurement_aliases_that_need_it() {
        assert_eq!(
            rendered("SELECT * FROM \"disk-io\""),
            "WITH __arc_t0 AS (BODY0) SELECT * FROM __arc_t0 AS \"disk-io\""
        );
    }

    // Time bounds

    #[test]
    fn test_should_parse_timestamp_literal_forms() {
        let midnight = NOW;
        assert_eq!(parse_timestamp("2026-08-01"), Some(midnight));
        assert_eq!(parse_timestamp("2026-08-01T00:00:00Z"), Some(midnight));
        assert_eq!(parse_timestamp("2026-08-01 00:00:00"), Some(midnight));
        assert_eq!(parse_timestamp("2026-08-01 00:00"), Some(midnight));
        assert_eq!(
            parse_timestamp("2026-08-01T00:00:00.000000001Z"),
            Some(midnight + 1)
        );
        assert_eq!(
            parse_timestamp("2026-08-01T00:00:00.5"),
            Some(midnight + SECOND / 2)
        );
        assert_eq!(parse_timestamp("2026-08-01T00:00:00+00:00"), Some(midnight));
        // DuckDB (no ICU) drops offsets; such literals give no bound rather than a wrong one.
        assert_eq!(parse_timestamp("2026-08-01T02:00:00+02:00"), None);
        assert_eq!(parse_timestamp("2026-07-31T22:00:00-0200"), None);
        assert_eq!(parse_timestamp("2026-08-01T01:00:00+01"), None);
        assert_eq!(parse_timestamp("2026-13-01"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2026-08-01 00:00:00 nonsense"), None);
        assert_eq!(parse_timestamp(""), None);
    }

    #[test]
    fn test_should_extract_bounds_for_each_literal_form() {
        let t = NOW;
        let cases = [
            "SELECT * FROM cpu WHERE time >= '2026-08-01T00:00:00Z'",
            "SELECT * FROM cpu WHERE time >= '2026-08-01 00:00:00'",
            "SELECT * FROM cpu WHERE time >= '2026-08-01'",
            "SELECT * FROM cpu WHERE time >= TIMESTAMP '2026-08-01 00:00:00'",
            "SELECT * FROM cpu WHERE time >= '2026-08-01'::TIMESTAMP",
            "SELECT * FROM cpu WHERE time >= '2026-08-01'::TIMESTAMP_NS",
            "SELECT * FROM cpu WHERE time >= CAST('2026-08-01' AS TIMESTAMP)",
            "SELECT * FROM cpu WHERE time >= DATE '2026-08-01'",
            "SELECT * FROM cpu WHERE time > '2026-08-01T00:00:00Z'",
            "SELECT * FROM cpu WHERE '2026-08-01' <= time",
            "SELECT * FROM cpu WHERE ('2026-08-01' < (time))",
        ];
        for sql in cases {
            assert_eq!(
                range(sql),
                TimeRange {
                    start_ns: t - SECOND,
                    end_ns: i64::MAX
                },
                "{sql}"
            );
        }
    }

    #[test]
    fn test_should_extract_upper_equal_and_between_bounds() {
        let t = NOW;
        assert_eq!(
            range("SELECT * FROM cpu WHERE time < '2026-08-01'"),
            TimeRange {
                start_ns: i64::MIN,
                end_ns: t + SECOND
            }
        );
        assert_eq!(
            range("SELECT * FROM cpu WHERE time = '2026-08-01'"),
            TimeRange {
                start_ns: t - SECOND,
                end_ns: t + SECOND
            }
        );
        assert_eq!(
            range(
                "SELECT * FROM cpu WHERE time BETWEEN '2026-08-01' AND '2026-08-01T01:00:00Z' \
                 AND host = 'a'"
            ),
            TimeRange {
                start_ns: t - SECOND,
                end_ns: t + HOUR + SECOND
            }
        );
        assert_eq!(
            range(
                "SELECT * FROM cpu WHERE host = 'a' AND (time >= '2026-08-01' AND time < \
                 '2026-08-02')"
            ),
            TimeRange {
                start_ns: t - SECOND,
                end_ns: t + 24 * HOUR + SECOND
            }
        );
    }

    #[test]
    fn test_should_bound_now_relative_times_from_below_only() {
        let cases = [
            (
                "SELECT * FROM cpu WHERE time > now() - INTERVAL '1 hour'",
                NOW - HOUR,
            ),
            (
                "SELECT * FROM cpu WHERE time > now() - INTERVAL 1 HOUR",
                NOW - HOUR,
            ),
            (
                "SELECT * FROM cpu WHERE time > now() - INTERVAL '1' HOUR",
                NOW - HOUR,
            ),
            (
                "SELECT * FROM cpu WHERE time >= current_timestamp - INTERVAL '90 minutes'",
                NOW - 90 * 60 * SECOND,
            ),
            (
                "SELECT * FROM cpu WHERE time >= NOW() - INTERVAL '1 day 2 hours'",
                NOW - 26 * HOUR,
            ),
            ("SELECT * FROM cpu WHERE time > now()", NOW),
            (
                "SELECT * FROM cpu WHERE time > now() - INTERVAL '1 month'",
                NOW - 31 * 24 * HOUR,
            ),
            (
                "SELECT * FROM cpu WHERE time > now() + INTERVAL '-2 hours'",
                NOW - 2 * HOUR,
            ),
            (
                "SELECT * FROM cpu WHERE time > INTERVAL '1 hour' + now()",
                NOW + HOUR,
            ),
        ];
        for (sql, start_ns) in cases {
            assert_eq!(
                range(sql),
                TimeRange {
                    start_ns,
                    end_ns: i64::MAX
                },
                "{sql}"
            );
        }
        // An upper bound from now() is not trusted: DuckDB's clock reads later than ours.
        assert_eq!(
            range("SELECT * FROM cpu WHERE time < now() - INTERVAL '1 day'"),
            TimeRange::ALL
        );
    }

    #[test]
    fn test_should_not_bound_under_or_not_or_functions_of_time() {
        let cases = [
            "SELECT * FROM cpu WHERE time > '2026-08-01' OR host = 'a'",
            "SELECT * FROM cpu WHERE NOT (time < '2026-08-01')",
            "SELECT * FROM cpu WHERE time NOT BETWEEN '2026-08-01' AND '2026-08-02'",
            "SELECT * FROM cpu WHERE date_trunc('day', time) >= '2026-08-01'",
            "SELECT * FROM cpu WHERE time + INTERVAL '1 day' > '2026-08-01'",
            "SELECT * FROM cpu WHERE time > (SELECT max(time) FROM mem)",
            "SELECT * FROM cpu WHERE time > '1 hour ago'",
            "SELECT * FROM cpu WHERE time > now() - INTERVAL '1 fortnight'",
            "SELECT * FROM cpu WHERE time != '2026-08-01'",
            "SELECT * FROM cpu WHERE time IS NOT NULL",
            "SELECT * FROM cpu WHERE time > TRY_CAST('2026-08-01' AS TIMESTAMP) OR false",
            "SELECT * FROM cpu WHERE other.time > '2026-08-01'",
            "SELECT * FROM (SELECT * FROM cpu) s WHERE s.time > '2026-08-01'",
            "SELECT * FROM cpu HAVING max(time) > '2026-08-01'",
        ];
        for sql in cases {
            let checked = plan(sql);
            let cpu = checked
                .tables
                .iter()
                .find(|(table, _)| table.measurement == "cpu")
                .expect("cpu is referenced");
            assert_eq!(cpu.1, TimeRange::ALL, "{sql}");
        }
    }

    #[test]
    fn test_should_bound_qualified_time_in_joins_and_unqualified_only_when_alone() {
        let checked = plan(
            "SELECT * FROM cpu c JOIN mem m ON c.host = m.host \
             WHERE c.time > '2026-08-01' AND time < '2026-08-02'",
        );
        assert_eq!(checked.tables[0].1.start_ns, NOW - SECOND);
        assert_eq!(
            checked.tables[0].1.end_ns,
            i64::MAX,
            "bare time is ambiguous in a join"
        );
        assert_eq!(checked.tables[1].1, TimeRange::ALL);

        let checked = plan("SELECT * FROM prod.cpu WHERE cpu.time >= '2026-08-01'");
        assert_eq!(checked.tables[0].1.start_ns, NOW - SECOND);

        let checked = plan("SELECT * FROM cpu AS x WHERE X.TIME >= '2026-08-01'");
        assert_eq!(checked.tables[0].1.start_ns, NOW - SECOND);
    }

    #[test]
    fn test_should_not_bound_through_semi_or_anti_joins() {
        let checked = plan(
            "SELECT * FROM mem m SEMI JOIN cpu c ON m.host = c.host WHERE m.time > '2026-08-01'",
        );
        assert!(
            checked
                .tables
                .iter()
                .all(|(_, range)| *range == TimeRange::ALL)
        );
    }

    #[test]
    fn test_should_take_the_hull_over_several_references() {
        let checked = plan(
            "SELECT * FROM cpu WHERE time >= '2026-08-01' \
             UNION ALL SELECT * FROM cpu WHERE time >= '2026-08-02'",
        );
        assert_eq!(checked.tables.len(), 1);
        assert_eq!(checked.tables[0].1.start_ns, NOW - SECOND);

        let checked =
            plan("SELECT * FROM cpu WHERE time >= '2026-08-01' UNION ALL SELECT * FROM cpu");
        assert_eq!(checked.tables[0].1, TimeRange::ALL);
    }

    #[test]
    fn test_should_bound_references_in_subqueries_and_ctes() {
        let checked = plan(
            "WITH recent AS (SELECT * FROM cpu WHERE time > '2026-08-01') \
             SELECT host FROM recent",
        );
        assert_eq!(checked.tables[0].1.start_ns, NOW - SECOND);
        let checked =
            plan("SELECT * FROM (SELECT * FROM cpu WHERE time > '2026-08-01') s WHERE s.usage > 1");
        assert_eq!(checked.tables[0].1.start_ns, NOW - SECOND);
    }

    #[test]
    fn test_should_keep_contradictory_bounds_well_formed() {
        let range = range("SELECT * FROM cpu WHERE time > '2026-08-02' AND time < '2026-08-01'");
        assert!(range.start_ns <= range.end_ns);
    }

    #[test]
    fn test_should_name_statement_kinds() {
        let statement = |sql: &str| {
            Parser::parse_sql(&DuckDbDialect {}, sql)
                .expect("parses")
                .pop()
                .expect("one statement")
        };
        assert_eq!(
            statement_kind(&statement("INSERT INTO t VALUES (1)")),
            "INSERT"
        );
        assert_eq!(
            statement_kind(&statement("CREATE OR REPLACE TABLE t (a INT)")),
            "CREATE TABLE"
        );
        assert_eq!(
            statement_kind(&statement("DROP TABLE IF EXISTS t")),
            "DROP TABLE"
        );
    }

    proptest::proptest! {
        #[test]
        fn test_should_never_panic_on_arbitrary_text(sql in "\\PC{0,200}") {
            let _ = analyze(&sql, "default", NOW);
        }

        #[test]
        fn test_should_never_panic_on_sql_shaped_text(
            sql in "(SELECT|FROM|WHERE|time|cpu|db\\.cpu|>|<|=|AND|OR|NOT|\\(|\\)|'2026-08-01'|now\\(\\)|INTERVAL|'1 hour'|-|\\+|,|\\*|WITH|AS|x| ){0,40}"
        ) {
            let _ = analyze(&sql, "default", NOW);
        }

        #[test]
        fn test_should_never_panic_parsing_timestamps(text in "[0-9T:+ Z.-]{0,40}") {
            let _ = parse_timestamp(&text);
            let _ = parse_interval_text(&text);
        }
    }
}
