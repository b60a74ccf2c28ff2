//! How deeply a query nests, checked before anything recurses over it.
//!
//! The parser, the evaluator and the AST's own `Drop` recurse once per
//! level of the tree, so a query nested thousands deep (`((((…1…))))`,
//! `abs(abs(…))`, `1+1+…+1`, `------1`) would overflow a thread's stack
//! and abort the process. Two checks keep every query within
//! [`MAX_DEPTH`] levels:
//!
//! - [`scan`], before parsing, reads the text in one pass and counts the
//!   levels the tree can have at most: each open bracket (`(`, `[`, `{`)
//!   is one, and each operator (`+`, `-`, `*`, `/`, `%`, `^`, comparisons,
//!   `and`, `or`, `unless`, `atan2`) is one within its bracket, since a
//!   chain of them is a chain of nodes. Text past the limit is refused
//!   without being parsed.
//! - [`depth`], after parsing, measures the tree itself without recursion
//!   (a function of a subquery is two nodes inside one bracket).

use promql_parser::parser::Expr;

/// The deepest a query may nest, in levels as [`scan`] and [`depth`]
/// count them. Prometheus has no limit (Go's stacks grow); real queries
/// stay far below this.
pub const MAX_DEPTH: usize = 256;

/// The most levels the text's tree can have: brackets plus the operators
/// chained inside each. Strings and comments are skipped; operators inside
/// label matchers (`{a!="b"}`) and ranges (`[5m:1m]`) are not counted.
pub fn scan(text: &str) -> usize {
    let b = text.as_bytes();
    // Per open bracket: the bracket and operators counted at its level.
    let mut stack: Vec<(u8, usize)> = Vec::new();
    let mut ops = 0usize; // operators at the outermost level
    let mut total = 0usize; // brackets open + operators in them so far
    let mut max = 0usize;
    let mut i = 0;
    let in_braces = |stack: &[(u8, usize)]| matches!(stack.last(), Some((b'{' | b'[', _)));
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' | b'`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    if b[i] == b'\\' && c != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                stack.push((c, 0));
                total += 1;
            }
            b')' | b']' | b'}' => {
                if let Some((_, n)) = stack.pop() {
                    total -= 1 + n;
                }
            }
            b',' => {
                // Arguments and list items are siblings, not a chain.
                let level = stack.last_mut().map_or(&mut ops, |(_, n)| n);
                total -= *level;
                *level = 0;
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'=' | b'!' | b'<' | b'>'
                if !in_braces(&stack) =>
            {
                // Two-byte comparisons count once.
                if matches!(b.get(i + 1), Some(b'=' | b'~')) {
                    i += 1;
                }
                let level = stack.last_mut().map_or(&mut ops, |(_, n)| n);
                *level += 1;
                total += 1;
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b"_.:".contains(&b[i])) {
                    i += 1;
                }
                let word = &text[start..i];
                let number = c.is_ascii_digit() || c == b'.';
                if number
                    && !word.contains(['x', 'X'])
                    && word.ends_with(['e', 'E'])
                    && matches!(b.get(i), Some(b'+' | b'-'))
                {
                    i += 1; // the exponent's sign: `1e-5`
                } else if !number
                    && !in_braces(&stack)
                    && ["and", "or", "unless", "atan2"]
                        .iter()
                        .any(|k| word.eq_ignore_ascii_case(k))
                {
                    let level = stack.last_mut().map_or(&mut ops, |(_, n)| n);
                    *level += 1;
                    total += 1;
                }
                max = max.max(total);
                continue;
            }
            _ => {}
        }
        max = max.max(total);
        i += 1;
    }
    max
}

/// The number of levels of the tree (a lone selector or number is 1).
pub fn depth(e: &Expr) -> usize {
    let mut max = 0;
    let mut stack = vec![(e, 1usize)];
    while let Some((e, d)) = stack.pop() {
        max = max.max(d);
        for_each_child(e, |c| stack.push((c, d + 1)));
    }
    max
}

fn for_each_child<'a>(e: &'a Expr, mut f: impl FnMut(&'a Expr)) {
    match e {
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                f(p);
            }
            f(&a.expr);
        }
        Expr::Unary(u) => f(&u.expr),
        Expr::Binary(b) => {
            f(&b.lhs);
            f(&b.rhs);
        }
        Expr::Paren(p) => f(&p.expr),
        Expr::Subquery(s) => f(&s.expr),
        Expr::Call(c) => c.args.args.iter().for_each(|a| f(a)),
        Expr::MatrixSelector(_)
        | Expr::VectorSelector(_)
        | Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::Extension(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_counts_brackets_and_chains() {
        assert_eq!(scan("up"), 0);
        assert_eq!(scan("(up)"), 1);
        assert_eq!(scan("rate(x[5m])"), 2);
        assert_eq!(scan("a + b + c"), 2);
        assert_eq!(scan("a or b and c unless d"), 3);
        assert_eq!(scan("f(a + b, c + d)"), 2);
        assert_eq!(scan("-(-(1))"), 4);
        assert_eq!(
            scan(&format!("{}1{}", "(".repeat(3000), ")".repeat(3000))),
            3000
        );
    }

    #[test]
    fn scan_skips_strings_matchers_numbers_and_comments() {
        assert_eq!(scan(r#"x{a!="((((", b=~"a|b"}"#), 1);
        assert_eq!(scan(r#"label_replace(x, "a", "$1", "b", "(((")"#), 1);
        assert_eq!(scan("1e-5 * 2"), 1);
        assert_eq!(scan("x # (((((\n"), 0);
        assert_eq!(scan("x[5m:1m]"), 1);
        assert_eq!(scan("`((((`"), 0);
        assert_eq!(scan(r#""\"((""#), 0);
    }

    #[test]
    fn depth_measures_the_tree() {
        let d = |q: &str| depth(&promql_parser::parser::parse(q).unwrap());
        assert_eq!(d("up"), 1);
        assert_eq!(d("rate(x[5m])"), 2);
        assert_eq!(d("sum(rate(x[5m]))"), 3);
        assert_eq!(d("1 + 2 * 3"), 3);
        assert_eq!(d("max_over_time(max_over_time(x[1m:1m])[1m:1m])"), 5);
    }
}
