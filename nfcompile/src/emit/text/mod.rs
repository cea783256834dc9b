//! `nft -f` script text.
//!
//! Each table is declared, deleted and declared again with its full contents in one script:
//! `nft -f` runs a script as one transaction, so the old ruleset is replaced atomically and
//! nothing from a previous layout (an unused chain or map) survives. Names are quoted when
//! they are nft keywords; comments are sanitised so no input can change a script's meaning.

use std::fmt::Write;

use crate::model::*;

mod keywords;
mod limits;

pub use limits::{as_loaded, left_out, unloadable};

/// The longest comment nft accepts (`NFT_USERDATA_MAXLEN` leaves 128 bytes for it).
pub const MAX_COMMENT: usize = 128;

/// Render the whole ruleset as one `nft -f` script.
pub fn write_string(ruleset: &Ruleset) -> String {
    let elements: usize = ruleset
        .tables
        .iter()
        .flat_map(|t| &t.sets)
        .map(|s| s.elements.len())
        .sum();
    let mut out = String::with_capacity(4096 + elements * 48);
    out.push_str("#!/usr/sbin/nft -f\n");
    for table in &ruleset.tables {
        write_table(&mut out, table);
    }
    out
}

fn family_name(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ip",
        Family::Ipv6 => "ip6",
    }
}

fn write_table(out: &mut String, table: &Table) {
    let fam = family_name(table.family);
    let name = quoted_name(&table.name);
    // Declaring first makes the delete valid whether or not the table exists yet.
    let _ = writeln!(
        out,
        "table {fam} {name}\ndelete table {fam} {name}\ntable {fam} {name} {{"
    );
    if let Some(c) = &table.comment {
        let _ = writeln!(out, "\tcomment {}", comment(c));
    }
    for name in &table.counters {
        let _ = writeln!(out, "\tcounter {} {{\n\t}}", counter_name(name));
    }
    for set in &table.sets {
        write_set(out, set);
    }
    for chain in &table.chains {
        write_chain(out, chain);
    }
    out.push_str("}\n");
}

fn write_set(out: &mut String, set: &Set) {
    let kind = if set.is_map() { "map" } else { "set" };
    let _ = writeln!(out, "\t{kind} {} {{", quoted_name(&set.name));
    // `typeof` is needed when a component has no named type (the numgen slot); it also makes
    // `nft list` print keys as the expressions they come from.
    let needs_typeof = set.key.contains(&FieldType::Slot);
    out.push_str("\t\t");
    out.push_str(if needs_typeof { "typeof " } else { "type " });
    write_fields(out, &set.key, needs_typeof);
    match &set.data {
        None => {}
        Some(SetData::Verdict) => out.push_str(" : verdict"),
        Some(SetData::Counter) => out.push_str(" : counter"),
        Some(SetData::Fields(fields)) => {
            out.push_str(" : ");
            write_fields(out, fields, needs_typeof);
        }
    }
    out.push('\n');
    let mut flags = Vec::new();
    if set.flags.contains(SetFlags::INTERVAL) {
        flags.push("interval");
    }
    if set.flags.contains(SetFlags::DYNAMIC) {
        flags.push("dynamic");
    }
    if set.flags.contains(SetFlags::TIMEOUT) {
        flags.push("timeout");
    }
    if !flags.is_empty() {
        let _ = writeln!(out, "\t\tflags {}", flags.join(","));
    }
    if let Some(t) = set.timeout {
        let _ = writeln!(out, "\t\ttimeout {t}s");
    }
    if let Some(size) = set.size {
        let _ = writeln!(out, "\t\tsize {size}");
    }
    if let Some(c) = &set.comment {
        let _ = writeln!(out, "\t\tcomment {}", comment(c));
    }
    if !set.elements.is_empty() {
        out.push_str("\t\telements = {\n");
        write_elements(out, &set.elements, true);
        out.push_str("\t\t}\n");
    }
    out.push_str("\t}\n");
}

/// One element per line; `whole` writes comments and data, otherwise keys only (deletion).
fn write_elements(out: &mut String, elements: &[Element], whole: bool) {
    let last = elements.len().saturating_sub(1);
    for (i, el) in elements.iter().enumerate() {
        out.push_str("\t\t\t");
        write_values(out, &el.key);
        if whole {
            if let Some(c) = &el.comment {
                out.push_str(" comment ");
                write_comment(out, c);
            }
            match &el.data {
                None => {}
                Some(ElementData::Verdict(v)) => {
                    out.push_str(" : ");
                    write_verdict(out, v);
                }
                Some(ElementData::Values(vals)) => {
                    out.push_str(" : ");
                    write_values(out, vals);
                }
                Some(ElementData::Counter(name)) => {
                    let _ = write!(out, " : \"{}\"", counter_name(name));
                }
            }
        }
        out.push_str(if i == last { "\n" } else { ",\n" });
    }
}

/// A transaction (see [`crate::diff`]) from some ruleset to `desired` as `nft -f` commands;
/// one script is one transaction.
///
/// nft 1.0.6 refuses to add a rule that DNATs through a `typeof` map already in the kernel
/// ("conflicting protocols specified"), even with the map declared again in the script. When
/// a transaction needs that, the script replaces the tables whole instead (still atomic).
pub fn write_transaction(tx: &crate::diff::Transaction, desired: &Ruleset) -> String {
    use crate::diff::{Op, TableRef};
    let created: std::collections::HashSet<(&TableRef, &str)> = tx
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::AddSet { table, set } => Some((table, set.name.as_str())),
            _ => None,
        })
        .collect();
    let unsupported = tx.ops.iter().any(|op| match op {
        Op::AddRules { table, rules, .. } => rules.iter().flat_map(|r| &r.statements).any(|st| {
            matches!(st, Statement::DnatMap { map, .. } if !created.contains(&(table, map.as_str())))
        }),
        _ => false,
    });
    if unsupported {
        let mut out = String::from("#!/usr/sbin/nft -f\n# nft cannot add this change's DNAT rules to the existing maps; replacing the tables.\n");
        out.push_str(write_string(desired).trim_start_matches("#!/usr/sbin/nft -f\n"));
        return out;
    }
    let mut out = String::from("#!/usr/sbin/nft -f\n");
    let head = |r: &TableRef| format!("{} {}", family_name(r.family), quoted_name(&r.name));
    for op in &tx.ops {
        match op {
            Op::AddTable { table } => write_table(&mut out, table),
            Op::DeleteTable { table } => {
                let _ = writeln!(out, "delete table {}", head(table));
            }
            Op::FlushChain { table, chain } => {
                let _ = writeln!(out, "flush chain {} {}", head(table), quoted_name(chain));
            }
            Op::DeleteChain { table, chain } => {
                let _ = writeln!(out, "delete chain {} {}", head(table), quoted_name(chain));
            }
            Op::DeleteSet { table, set, map } => {
                let kind = if *map { "map" } else { "set" };
                let _ = writeln!(out, "delete {kind} {} {}", head(table), quoted_name(set));
            }
            Op::DeleteElements {
                table,
                set,
                elements,
            } => {
                let _ = writeln!(
                    out,
                    "delete element {} {} {{",
                    head(table),
                    quoted_name(set)
                );
                write_elements(&mut out, elements, false);
                out.push_str("}\n");
            }
            Op::AddElements {
                table,
                set,
                elements,
            } => {
                let _ = writeln!(out, "add element {} {} {{", head(table), quoted_name(set));
                write_elements(&mut out, elements, true);
                out.push_str("}\n");
            }
            Op::AddSet { table, set } => {
                let _ = writeln!(out, "table {} {{", head(table));
                write_set(&mut out, set);
                out.push_str("}\n");
            }
            Op::AddCounters { table, names } => {
                for n in names {
                    let _ = writeln!(out, "add counter {} {}", head(table), counter_name(n));
                }
            }
            Op::DeleteCounters { table, names } => {
                for n in names {
                    let _ = writeln!(out, "delete counter {} {}", head(table), counter_name(n));
                }
            }
            Op::AddChain { table, chain } => {
                let _ = writeln!(out, "table {} {{", head(table));
                write_chain(&mut out, chain);
                out.push_str("}\n");
            }
            Op::AddRules {
                table,
                chain,
                rules,
            } => {
                // As a block, which appends: nft 1.0.6 refuses some of our rules (a map DNAT
                // with a concatenated key) as standalone `add rule` commands.
                let _ = writeln!(
                    out,
                    "table {} {{\n\tchain {} {{",
                    head(table),
                    quoted_name(chain)
                );
                for rule in rules {
                    out.push_str("\t\t");
                    write_loadable_rule(&mut out, rule);
                    out.push('\n');
                }
                out.push_str("\t}\n}\n");
            }
        }
    }
    out
}

fn write_fields(out: &mut String, fields: &[FieldType], as_typeof: bool) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(" . ");
        }
        out.push_str(match (f, as_typeof) {
            (FieldType::Ipv4Addr, false) => "ipv4_addr",
            (FieldType::Ipv6Addr, false) => "ipv6_addr",
            (FieldType::InetProto, false) => "inet_proto",
            (FieldType::InetService, false) => "inet_service",
            (FieldType::Slot, false) => unreachable!("slots are always written with typeof"),
            (FieldType::Ipv4Addr, true) => "ip daddr",
            (FieldType::Ipv6Addr, true) => "ip6 daddr",
            (FieldType::InetProto, true) => "meta l4proto",
            (FieldType::InetService, true) => "th dport",
            (FieldType::Slot, true) => "numgen random mod 1",
        });
    }
}

fn write_values(out: &mut String, values: &[Value]) {
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push_str(" . ");
        }
        write_value(out, v);
    }
}

fn write_value(out: &mut String, v: &Value) {
    match v {
        Value::Addr(a) => write_addr(out, a),
        Value::Prefix(p) => {
            write_addr(out, &p.network());
            out.push('/');
            write_u32(out, p.prefix().into());
        }
        Value::Proto(p) => out.push_str(p.nft_name()),
        Value::Port(p) => write_u32(out, (*p).into()),
        Value::Integer(i) => write_u32(out, *i),
    }
}

/// Elements are most of a script; `Display` for addresses and integers is several times slower
/// than this.
fn write_addr(out: &mut String, a: &std::net::IpAddr) {
    match a {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            write_u32(out, a.into());
            out.push('.');
            write_u32(out, b.into());
            out.push('.');
            write_u32(out, c.into());
            out.push('.');
            write_u32(out, d.into());
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

fn write_u32(out: &mut String, mut n: u32) {
    let mut buf = [0u8; 10];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
}

fn write_verdict(out: &mut String, v: &Verdict) {
    match v {
        Verdict::Accept => out.push_str("accept"),
        Verdict::Drop => out.push_str("drop"),
        Verdict::Return => out.push_str("return"),
        Verdict::Jump(c) => {
            out.push_str("jump ");
            out.push_str(&quoted_name(c));
        }
        Verdict::Goto(c) => {
            out.push_str("goto ");
            out.push_str(&quoted_name(c));
        }
    }
}

fn write_chain(out: &mut String, chain: &Chain) {
    let _ = writeln!(out, "\tchain {} {{", quoted_name(&chain.name));
    if let Some(b) = &chain.base {
        let kind = match b.kind {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        let hook = match b.hook {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        };
        let _ = writeln!(
            out,
            "\t\ttype {kind} hook {hook} priority {}; policy accept;",
            b.priority
        );
    }
    if let Some(c) = &chain.comment {
        let _ = writeln!(out, "\t\tcomment {}", comment(c));
    }
    for rule in &chain.rules {
        out.push_str("\t\t");
        write_loadable_rule(out, rule);
        out.push('\n');
    }
    out.push_str("\t}\n");
}

/// A rule, or — if nft cannot load it ([`unloadable`]) — the rule as a comment saying why.
fn write_loadable_rule(out: &mut String, rule: &Rule) {
    if let Some(why) = unloadable(rule) {
        let _ = write!(out, "# left out ({why}): ");
    }
    write_rule(out, rule);
}

/// One rule on one line, as `nft list` would print it.
pub fn write_rule(out: &mut String, rule: &Rule) {
    let mut first = true;
    let mut sep = |out: &mut String| {
        if !first {
            out.push(' ');
        }
        first = false;
    };
    for m in &rule.matches {
        sep(out);
        write_match(out, m);
    }
    for s in &rule.statements {
        sep(out);
        write_statement(out, s);
    }
    if let Some(c) = &rule.comment {
        sep(out);
        out.push_str("comment ");
        out.push_str(&comment(c));
    }
}

fn write_exprs(out: &mut String, exprs: &[Expr]) {
    for (i, e) in exprs.iter().enumerate() {
        if i > 0 {
            out.push_str(" . ");
        }
        write_expr(out, e);
    }
}

fn write_expr(out: &mut String, e: &Expr) {
    let _ = match e {
        Expr::Saddr(f) => write!(out, "{} saddr", family_name(*f)),
        Expr::Daddr(f) => write!(out, "{} daddr", family_name(*f)),
        Expr::L4Proto => write!(out, "meta l4proto"),
        Expr::Dport => write!(out, "th dport"),
        Expr::CtOriginalDaddr(f) => write!(out, "ct original {} daddr", family_name(*f)),
        Expr::CtOriginalDport => write!(out, "ct original proto-dst"),
        Expr::NumgenRandom { modulus, offset } | Expr::NumgenInc { modulus, offset } => {
            let mode = if matches!(e, Expr::NumgenInc { .. }) {
                "inc"
            } else {
                "random"
            };
            if *offset == 0 {
                write!(out, "numgen {mode} mod {modulus}")
            } else {
                write!(out, "numgen {mode} mod {modulus} offset {offset}")
            }
        }
        Expr::JhashSaddr {
            family,
            modulus,
            offset,
        } => {
            let f = family_name(*family);
            if *offset == 0 {
                write!(out, "jhash {f} saddr mod {modulus} seed 0x0")
            } else {
                write!(
                    out,
                    "jhash {f} saddr mod {modulus} seed 0x0 offset {offset}"
                )
            }
        }
    };
}

fn write_match(out: &mut String, m: &Match) {
    match m {
        Match::Cmp {
            expr,
            value,
            negate,
        } => {
            write_expr(out, expr);
            out.push_str(if *negate { " != " } else { " " });
            write_value(out, value);
        }
        Match::Lookup { key, set, negate } => {
            write_exprs(out, key);
            out.push_str(if *negate { " != " } else { " " });
            match set {
                SetRef::Named(name) => {
                    out.push('@');
                    out.push_str(&quoted_name(name));
                }
                SetRef::Anonymous(values) => {
                    out.push_str("{ ");
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        write_value(out, v);
                    }
                    out.push_str(" }");
                }
            }
        }
        Match::MarkBitClear { mask, negate } => {
            let op = if *negate { "!=" } else { "==" };
            let _ = write!(out, "meta mark & {mask:#010x} {op} 0x00000000");
        }
        Match::FibLocal { side, negate } => {
            let side = match side {
                AddrSide::Source => "saddr",
                AddrSide::Destination => "daddr",
            };
            let op = if *negate { "!= " } else { "" };
            let _ = write!(out, "fib {side} type {op}local");
        }
        Match::CtStatusDnat => out.push_str("ct status dnat"),
        Match::IifName {
            name,
            prefix,
            negate,
        } => {
            let op = if *negate { "!= " } else { "" };
            let star = if *prefix { "*" } else { "" };
            let _ = write!(out, "iifname {op}\"{}{star}\"", sanitize(name));
        }
    }
}

fn write_statement(out: &mut String, s: &Statement) {
    match s {
        Statement::Verdict(v) => write_verdict(out, v),
        Statement::VerdictMap { key, map } => {
            write_exprs(out, key);
            out.push_str(" vmap @");
            out.push_str(&quoted_name(map));
        }
        Statement::MarkOr(bits) => {
            let _ = write!(out, "meta mark set meta mark | {bits:#010x}");
        }
        Statement::MarkXor(bits) => {
            let _ = write!(out, "meta mark set meta mark ^ {bits:#010x}");
        }
        Statement::DnatMap { family, key, map } => {
            let _ = write!(out, "dnat {} to ", family_name(*family));
            write_exprs(out, key);
            out.push_str(" map @");
            out.push_str(&quoted_name(map));
        }
        Statement::UpdateMap {
            set,
            key,
            data,
            timeout,
        } => {
            let _ = write!(out, "update @{} {{ ", quoted_name(set));
            write_exprs(out, key);
            let _ = write!(out, " timeout {timeout}s : ");
            write_exprs(out, data);
            out.push_str(" }");
        }
        Statement::CounterMap { key, map } => {
            out.push_str("counter name ");
            write_exprs(out, key);
            out.push_str(" map @");
            out.push_str(&quoted_name(map));
        }
        Statement::Masquerade { fully_random } => {
            out.push_str("masquerade");
            if *fully_random {
                out.push_str(" fully-random");
            }
        }
        Statement::Reject => out.push_str("reject"),
    }
}

/// A chain, set or table name, quoted when nft would read it as a keyword.
fn quoted_name(name: &str) -> std::borrow::Cow<'_, str> {
    if keywords::is_keyword(name)
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_/.".contains(&b))
    {
        format!("\"{}\"", sanitize(name)).into()
    } else {
        name.into()
    }
}

/// A counter object's name. nft 1.0.6 reads a declared object's name only unquoted (an
/// identifier: a letter, then letters, digits and `-_/.`), and the lowering only makes such
/// names; anything else in a hand-made model is replaced so it cannot change the script.
fn counter_name(name: &str) -> std::borrow::Cow<'_, str> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_/.".contains(&b);
    let starts_well = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    if starts_well && name.bytes().all(allowed) {
        return name.into();
    }
    let body: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && allowed(c as u8) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if starts_well {
        body.into()
    } else {
        format!("c{body}").into()
    }
}

/// A comment literal: at most [`MAX_COMMENT`] bytes, no character that could end the string.
fn comment(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    write_comment(&mut out, text);
    out
}

fn write_comment(out: &mut String, text: &str) {
    out.push('"');
    let mut len = 0;
    for c in text.chars() {
        let c = if c == '"' || c == '\\' || c.is_control() {
            '_'
        } else {
            c
        };
        len += c.len_utf8();
        if len > MAX_COMMENT {
            break;
        }
        out.push(c);
    }
    out.push('"');
}

/// nft strings have no escapes: replace what would end or break one.
fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_number_formatting_matches_display() {
        for n in [0u32, 7, 10, 99, 255, 65535, 32768, u32::MAX] {
            let mut s = String::new();
            write_u32(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        let mut s = String::new();
        write_value(&mut s, &Value::Prefix("10.1.0.0/16".parse().unwrap()));
        assert_eq!(s, "10.1.0.0/16");
    }

    #[test]
    fn comments_cannot_escape_their_quotes() {
        assert_eq!(
            comment("a\"; flush ruleset; \""),
            "\"a_; flush ruleset; _\""
        );
        assert_eq!(comment("line\nbreak"), "\"line_break\"");
        let long = "é".repeat(100);
        let c = comment(&long);
        assert!(c.len() <= MAX_COMMENT + 2);
        assert!(c.starts_with('"') && c.ends_with('"'));
    }

    #[test]
    fn keywords_are_quoted() {
        assert_eq!(quoted_name("map"), "\"map\"");
        assert_eq!(quoted_name("fwd"), "\"fwd\"");
        assert_eq!(quoted_name("endpoints-3"), "endpoints-3");
        assert_eq!(quoted_name("service-x/web/tcp/80"), "service-x/web/tcp/80");
        assert_eq!(quoted_name("a b"), "\"a b\"");
    }
}
