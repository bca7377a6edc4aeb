//! The Handlebars built-ins a mapping template may use, as they are.

use super::{HelperDecl, Run, VARIADIC};

pub(super) const HELPERS: &[HelperDecl] = &[
    HelperDecl::new(
        "if",
        "value",
        1,
        1,
        Run::Block,
        "Block: renders when the value is truthy (`{{else}}` otherwise).",
    )
    .named(&["includeZero"]),
    HelperDecl::new("unless", "value", 1, 1, Run::Block, "Block: renders when the value is falsy.")
        .named(&["includeZero"]),
    HelperDecl::new(
        "each",
        "list",
        1,
        1,
        Run::Block,
        "Block: renders once per item (`this`, `@index`, `@key`).",
    ),
    HelperDecl::new("with", "value", 1, 1, Run::Block, "Block: renders with the value as its context."),
    HelperDecl::new(
        "log",
        "[value…]",
        0,
        VARIADIC,
        Run::Builtin,
        "Writes its arguments to the log; renders nothing.",
    )
    .named(&["level"]),
    HelperDecl::new("eq", "a b", 2, 2, Run::Builtin, "Whether `a` equals `b`."),
    HelperDecl::new("ne", "a b", 2, 2, Run::Builtin, "Whether `a` differs from `b`."),
    HelperDecl::new("gt", "a b", 2, 2, Run::Builtin, "Whether `a > b`."),
    HelperDecl::new("gte", "a b", 2, 2, Run::Builtin, "Whether `a >= b`."),
    HelperDecl::new("lt", "a b", 2, 2, Run::Builtin, "Whether `a < b`."),
    HelperDecl::new("lte", "a b", 2, 2, Run::Builtin, "Whether `a <= b`."),
    HelperDecl::new("and", "value…", 1, VARIADIC, Run::Builtin, "Whether every argument is truthy."),
    HelperDecl::new("or", "value…", 1, VARIADIC, Run::Builtin, "Whether any argument is truthy."),
    HelperDecl::new("not", "value", 1, 1, Run::Builtin, "Whether the value is falsy."),
    HelperDecl::new("len", "value", 1, 1, Run::Builtin, "The length of an array, object or string."),
];
