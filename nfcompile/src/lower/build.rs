//! Small constructors of model pieces the lowering assembles.

use super::*;

pub(super) fn addr_key(ip: IpAddr, proto: Protocol, port: u16) -> Vec<Value> {
    vec![Value::Addr(ip), Value::Proto(proto), Value::Port(port)]
}

pub(super) fn target_data(t: &Target) -> ElementData {
    ElementData::Values(vec![Value::Addr(t.addr), Value::Port(t.port)])
}

pub(super) fn element(
    key: Vec<Value>,
    data: Option<ElementData>,
    comment: Option<&str>,
) -> Element {
    Element {
        key,
        data,
        comment: comment.map(str::to_string),
    }
}

pub(super) fn base_chain(
    name: &str,
    kind: ChainType,
    hook: Hook,
    priority: i32,
    rules: Vec<Rule>,
) -> Chain {
    Chain {
        name: name.to_string(),
        base: Some(BaseChain {
            kind,
            hook,
            priority,
        }),
        comment: None,
        rules,
    }
}

pub(super) fn jump_to(chain: &str) -> Rule {
    rule(
        vec![],
        vec![Statement::Verdict(Verdict::Jump(chain.to_string()))],
        None,
    )
}

pub(super) fn rule(matches: Vec<Match>, statements: Vec<Statement>, comment: Option<&str>) -> Rule {
    Rule {
        matches,
        statements,
        comment: comment.map(str::to_string),
    }
}

pub(super) fn set(
    name: &str,
    key: Vec<FieldType>,
    data: Option<SetData>,
    elements: Vec<Element>,
    comment: &str,
) -> Set {
    Set {
        name: name.to_string(),
        key,
        data,
        flags: SetFlags::empty(),
        timeout: None,
        size: None,
        comment: Some(comment.to_string()),
        elements,
    }
}

pub(super) fn negate(m: Match) -> Match {
    match m {
        Match::Cmp {
            expr,
            value,
            negate,
        } => Match::Cmp {
            expr,
            value,
            negate: !negate,
        },
        Match::Lookup { key, set, negate } => Match::Lookup {
            key,
            set,
            negate: !negate,
        },
        Match::IifName {
            name,
            prefix,
            negate,
        } => Match::IifName {
            name,
            prefix,
            negate: !negate,
        },
        Match::FibLocal { side, negate } => Match::FibLocal {
            side,
            negate: !negate,
        },
        Match::MarkBitClear { mask, negate } => Match::MarkBitClear {
            mask,
            negate: !negate,
        },
        Match::CtStatusDnat => unreachable!("never negated"),
    }
}
