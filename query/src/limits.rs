//! Bounds on SQL text, checked on the tokens before anything recursive (the parser, the
//! analyzer's visitor, dropping the tree) touches the statement.
//!
//! A chain such as `1+1+…+1` or `a OR b OR …` parses without recursion into a left-deep tree;
//! walking or dropping that tree recurses once per operator, and 50,000 of them overflow a
//! thread's stack and abort the process. The token scan here is a loop, so it can bound the
//! depth of the tree the parser would build: every binary or unary operator in one expression
//! adds a level, every open parenthesis adds one, and set operations (`UNION`, `INTERSECT`,
//! `EXCEPT`) chain the same way. DuckDB refuses expressions deeper than 1000 itself
//! (`max_expression_depth`), so no query it would run is refused here.

use sqlparser::dialect::DuckDbDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::QueryError;

/// Largest SQL statement accepted, in bytes (1 MiB: room for long `IN` lists, none for a
/// statement whose parsing alone costs gigabytes).
pub const MAX_SQL_BYTES: usize = 1 << 20;

/// Deepest expression accepted: DuckDB's own default `max_expression_depth`.
pub const MAX_EXPRESSION_DEPTH: usize = 1000;

/// Operators counted in one parenthesis level.
#[derive(Default)]
struct Level {
    /// Operators of the expression being read; a comma or a clause keyword ends it.
    chain: usize,
    /// Set operations at this level; only the closing parenthesis ends them.
    sets: usize,
}

/// Refuses SQL longer than [`MAX_SQL_BYTES`] or nesting deeper than
/// [`MAX_EXPRESSION_DEPTH`], with an error that gives the size or depth and the limit.
///
/// # Errors
/// [`QueryError::Invalid`] naming the bound; [`QueryError::Parse`] for text that does not
/// tokenize.
pub fn check_bounds(sql: &str) -> Result<(), QueryError> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(QueryError::Invalid(format!(
            "the statement is {} bytes, more than the {MAX_SQL_BYTES} bytes a query may have",
            sql.len()
        )));
    }
    let tokens = Tokenizer::new(&DuckDbDialect {}, sql)
        .tokenize()
        .map_err(|error| QueryError::Parse(error.to_string()))?;
    let mut levels = vec![Level::default()];
    // Sum of every level's chain and sets, kept as the levels change.
    let mut operators = 0usize;
    for token in &tokens {
        match token {
            Token::LParen | Token::LBracket => levels.push(Level::default()),
            Token::RParen | Token::RBracket => {
                if levels.len() > 1
                    && let Some(level) = levels.pop()
                {
                    operators -= level.chain + level.sets;
                }
            }
            Token::Comma | Token::SemiColon => end_chain(&mut levels, &mut operators),
            Token::Word(word) => match word.keyword {
                Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::BETWEEN
                | Keyword::IN => add(&mut levels, &mut operators, false),
                Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT => {
                    end_chain(&mut levels, &mut operators);
                    add(&mut levels, &mut operators, true);
                }
                Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::ON
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::END => end_chain(&mut levels, &mut operators),
                _ => {}
            },
            token if is_operator(token) => add(&mut levels, &mut operators, false),
            _ => {}
        }
        let depth = operators + levels.len();
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(QueryError::Invalid(format!(
                "the statement nests more than {MAX_EXPRESSION_DEPTH} operators or parentheses \
                 deep (long chains such as a+b+c+… or x OR y OR … count one level per \
                 operator); split it or use IN (…)"
            )));
        }
    }
    Ok(())
}

fn add(levels: &mut [Level], operators: &mut usize, set: bool) {
    if let Some(level) = levels.last_mut() {
        if set {
            level.sets += 1;
        } else {
            level.chain += 1;
        }
        *operators += 1;
    }
}

fn end_chain(levels: &mut [Level], operators: &mut usize) {
    if let Some(level) = levels.last_mut() {
        *operators -= level.chain;
        level.chain = 0;
    }
}

fn is_operator(token: &Token) -> bool {
    matches!(
        token,
        Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::DuckIntDiv
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Spaceship
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::ShiftLeft
            | Token::ShiftRight
            | Token::Tilde
            | Token::ExclamationMark
            | Token::DoubleColon
            | Token::Arrow
            | Token::LongArrow
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(operator: &str, terms: usize) -> String {
        vec!["1"; terms].join(operator)
    }

    #[test]
    fn test_should_refuse_long_operator_chains_before_parsing() {
        for operator in ["+", " AND ", " OR ", "||", " UNION ALL SELECT "] {
            let sql = format!("SELECT {}", chain(operator, 50_000));
            let error = check_bounds(&sql).unwrap_err().to_string();
            assert!(error.contains("1000"), "{operator}: {error}");
        }
        let deep_parens = format!("SELECT {}1{}", "(".repeat(2000), ")".repeat(2000));
        assert!(check_bounds(&deep_parens).is_err());
        // Spaced: `--` would start a comment.
        let unary = format!("SELECT {}1", "- ".repeat(5000));
        assert!(check_bounds(&unary).is_err());
    }

    #[test]
    fn test_should_accept_wide_but_shallow_queries() {
        check_bounds(&format!("SELECT {}", chain("+", 900))).unwrap();
        let many_columns = (0..5000)
            .map(|i| format!("a{i} + b{i} * 2"))
            .collect::<Vec<_>>()
            .join(", ");
        check_bounds(&format!("SELECT {many_columns} FROM db.t")).unwrap();
        let in_list = (0..50_000)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        check_bounds(&format!("SELECT * FROM db.t WHERE host IN ({in_list})")).unwrap();
        let case = (0..2000)
            .map(|i| format!("WHEN x = {i} THEN {i} + 1"))
            .collect::<Vec<_>>()
            .join(" ");
        check_bounds(&format!("SELECT CASE {case} END FROM db.t")).unwrap();
        check_bounds(
            "SELECT host, avg(v) FROM db.cpu WHERE time > now() - INTERVAL 1 HOUR AND v >= 0 \
             GROUP BY host ORDER BY 2 DESC LIMIT 10",
        )
        .unwrap();
    }

    #[test]
    fn test_should_refuse_oversized_statements() {
        let literal = format!("SELECT '{}'", "x".repeat(MAX_SQL_BYTES));
        let error = check_bounds(&literal).unwrap_err().to_string();
        assert!(error.contains(&MAX_SQL_BYTES.to_string()), "{error}");
    }

    /// The real parser takes what passes the bound, and the tree it builds drops without
    /// exhausting a test thread's stack.
    #[test]
    fn test_should_let_the_parser_handle_every_accepted_depth() {
        let sql = format!("SELECT {}", chain(" OR ", MAX_EXPRESSION_DEPTH - 10));
        check_bounds(&sql).unwrap();
        let parsed = sqlparser::parser::Parser::parse_sql(&DuckDbDialect {}, &sql).unwrap();
        drop(parsed);
    }
}
