//! Ops' rules: the file format, loading with precise errors, expressions,
//! templates, evaluation, alert state, and ops' own rule tests.
//!
//! - [`spec`]: the YAML shape and its JSON Schema;
//! - [`load`]: files to a checked [`RuleSet`], or every problem with its
//!   file, line and column;
//! - [`expr`]: evalexpr expressions over a day's totals;
//! - [`template`]: `{{field}}` summaries;
//! - [`duration`]: `10m`, `4h`, `1h30m` as ops write them;
//! - [`evaluate`]: which rules a change or a tick concerns, and what each
//!   found;
//! - [`alert`]: each alert's state machine and record;
//! - [`message`]: the message on-call get;
//! - [`unit`]: `rules-config/tests/*.yaml`, "given these totals, expect these
//!   alerts", in the spirit of `promtool test rules`.

pub mod alert;
pub mod duration;
pub mod evaluate;
pub mod expr;
pub mod load;
pub mod message;
pub mod spec;
pub mod template;
pub mod unit;

pub use load::{Location, Problem, Problems, Rule, RuleSet};
pub use spec::Severity;
