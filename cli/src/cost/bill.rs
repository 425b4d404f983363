//! From units to dollars. Both designs are described the same way (per
//! period: each table's units, each function's invocations and compute,
//! the S3 and SNS requests) and priced by the same functions, so the two
//! columns of the report differ only where the designs do.

use serde::Serialize;

use super::inputs::Inputs;
use super::prices::{Billing, HOURS_PER_MONTH, MONTHS_PER_YEAR};

/// One period's or one month's use of the billed services.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    pub uploads: f64,
    pub write_units: f64,
    pub read_units: f64,
    pub lambda_invocations: f64,
    pub lambda_gb_seconds: f64,
    pub sns_publishes: f64,
    pub s3_gets: f64,
    pub s3_puts: f64,
}

impl Usage {
    fn scaled(&self, by: f64) -> Usage {
        Usage {
            uploads: self.uploads * by,
            write_units: self.write_units * by,
            read_units: self.read_units * by,
            lambda_invocations: self.lambda_invocations * by,
            lambda_gb_seconds: self.lambda_gb_seconds * by,
            sns_publishes: self.sns_publishes * by,
            s3_gets: self.s3_gets * by,
            s3_puts: self.s3_puts * by,
        }
    }
}

/// A table's (or index's) units per period, and the capacity that would be
/// provisioned for them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Table {
    pub name: &'static str,
    pub write_units_per_period: f64,
    pub read_units_per_period: f64,
    pub provisioned_wcu: u64,
    pub provisioned_rcu: u64,
}

/// A Lambda function's invocations and compute per period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Function {
    pub name: &'static str,
    pub invocations_per_period: f64,
    pub memory_mb: u64,
    pub duration_ms: f64,
    /// Where the duration and memory come from.
    pub source: &'static str,
    pub gb_seconds_per_period: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dollars {
    pub dynamodb: f64,
    pub lambda: f64,
    pub sns: f64,
    pub s3: f64,
    pub total: f64,
}

/// One design's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesignCost {
    pub design: &'static str,
    pub per_period: Usage,
    pub per_month: Usage,
    pub tables: Vec<Table>,
    pub functions: Vec<Function>,
    /// Dollars per month with the chosen billing mode.
    pub per_month_usd: Dollars,
    pub per_year_usd: f64,
    /// Dollars per year under each DynamoDB billing mode.
    pub per_year_on_demand_usd: f64,
    pub per_year_provisioned_usd: f64,
}

/// A design's units per period: the totals, per table, per function.
pub type Parts = (Usage, Vec<Table>, Vec<Function>);

pub fn function(
    name: &'static str,
    invocations: f64,
    memory_mb: u64,
    duration_ms: f64,
    source: &'static str,
) -> Function {
    Function {
        name,
        invocations_per_period: invocations,
        memory_mb,
        duration_ms,
        source,
        gb_seconds_per_period: invocations * duration_ms / 1000.0 * memory_mb as f64 / 1024.0,
    }
}

pub fn table(name: &'static str, write_units: f64, read_units: f64, inputs: &Inputs) -> Table {
    // Provisioned capacity is per second; a table or index needs at least one unit of each.
    let per_second = |units: f64| {
        let needed = units
            / inputs.workload.period_seconds as f64
            / (inputs.prices.utilization_percent / 100.0);
        ((needed - 1e-9).ceil() as u64).max(1)
    };
    Table {
        name,
        write_units_per_period: write_units,
        read_units_per_period: read_units,
        provisioned_wcu: per_second(write_units),
        provisioned_rcu: per_second(read_units),
    }
}

/// Dollars for one design's units.
fn dollars(inputs: &Inputs, usage: &Usage, tables: &[Table], billing: Billing) -> Dollars {
    let p = &inputs.prices;
    let per_month = usage.scaled(inputs.periods_per_month());
    let dynamodb = match billing {
        Billing::OnDemand => {
            per_month.write_units / 1e6 * p.write_per_million
                + per_month.read_units / 1e6 * p.read_per_million
        }
        Billing::Provisioned => {
            tables
                .iter()
                .map(|t| {
                    t.provisioned_wcu as f64 * p.wcu_hour + t.provisioned_rcu as f64 * p.rcu_hour
                })
                .sum::<f64>()
                * HOURS_PER_MONTH
        }
    };
    let lambda = per_month.lambda_invocations / 1e6 * p.lambda_per_million
        + per_month.lambda_gb_seconds * p.gb_second;
    let sns = per_month.sns_publishes / 1e6 * p.sns_per_million;
    let s3 = per_month.s3_gets / 1000.0 * p.s3_get_per_thousand
        + per_month.s3_puts / 1000.0 * p.s3_put_per_thousand;
    Dollars {
        dynamodb,
        lambda,
        sns,
        s3,
        total: dynamodb + lambda + sns + s3,
    }
}

/// Prices a design's units per period, per month and per year, under the
/// chosen billing mode and under both.
pub fn design(
    name: &'static str,
    inputs: &Inputs,
    (per_period, tables, functions): Parts,
) -> DesignCost {
    let chosen = dollars(inputs, &per_period, &tables, inputs.prices.billing);
    let on_demand = dollars(inputs, &per_period, &tables, Billing::OnDemand);
    let provisioned = dollars(inputs, &per_period, &tables, Billing::Provisioned);
    DesignCost {
        design: name,
        per_month: per_period.scaled(inputs.periods_per_month()),
        per_period,
        tables,
        functions,
        per_year_usd: chosen.total * MONTHS_PER_YEAR,
        per_month_usd: chosen,
        per_year_on_demand_usd: on_demand.total * MONTHS_PER_YEAR,
        per_year_provisioned_usd: provisioned.total * MONTHS_PER_YEAR,
    }
}
