//! A capacity meter for DynamoDB clients: an SDK interceptor that asks every call for its
//! consumed capacity (`ReturnConsumedCapacity=INDEXES`) and adds up what the answers report,
//! per table and per index, reads and writes apart. For measuring what a webhook costs on
//! DynamoDB Local; it is never installed in the functions.
//!
//! A write that is refused (a failed condition, a cancelled transaction) reports no capacity in
//! its error, so the meter counts those calls separately: DynamoDB bills them as writes.

use aws_sdk_dynamodb::config::interceptors::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
};
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;
use aws_sdk_dynamodb::operation as op;
use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Units consumed on one table or index.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Units {
    pub read: f64,
    pub write: f64,
}

/// What the meter saw since it was last taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    /// Base table units.
    pub table: Units,
    /// Units per global secondary index, by index name.
    pub indexes: BTreeMap<String, Units>,
    /// Calls made, by operation name.
    pub calls: BTreeMap<&'static str, u64>,
    /// Writes refused by a condition or a cancelled transaction (no capacity reported).
    pub refused_writes: u64,
}

impl Tally {
    pub fn read_units(&self) -> f64 {
        self.table.read + self.indexes.values().map(|u| u.read).sum::<f64>()
    }

    pub fn write_units(&self) -> f64 {
        self.table.write + self.indexes.values().map(|u| u.write).sum::<f64>()
    }

    /// Every figure divided by `n` (per webhook).
    pub fn per(&self, n: f64) -> Tally {
        let div = |u: &Units| Units { read: u.read / n, write: u.write / n };
        Tally {
            table: div(&self.table),
            indexes: self.indexes.iter().map(|(k, u)| (k.clone(), div(u))).collect(),
            calls: self.calls.clone(),
            refused_writes: self.refused_writes,
        }
    }

    fn add(&mut self, c: &ConsumedCapacity, write: bool) {
        let put = |u: &mut Units, v: f64| {
            if write {
                u.write += v;
            } else {
                u.read += v;
            }
        };
        match c.table.as_ref().and_then(|t| t.capacity_units) {
            Some(v) => put(&mut self.table, v),
            // Without a breakdown the total is the table's.
            None if c.global_secondary_indexes.is_none() => {
                put(&mut self.table, c.capacity_units.unwrap_or(0.0))
            }
            None => {}
        }
        for (name, cap) in c.global_secondary_indexes.iter().flatten() {
            put(self.indexes.entry(name.clone()).or_default(), cap.capacity_units.unwrap_or(0.0));
        }
    }
}

/// The interceptor; clone it into a client config and read it with [`CapacityMeter::take`].
#[derive(Clone, Debug, Default)]
pub struct CapacityMeter(Arc<Mutex<Tally>>);

impl CapacityMeter {
    pub fn new() -> Self {
        Self::default()
    }

    /// What was consumed since the last `take`; the meter starts again from zero.
    pub fn take(&self) -> Tally {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn record(&self, f: impl FnOnce(&mut Tally)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Sets `ReturnConsumedCapacity=INDEXES` on each operation's input that has it.
macro_rules! ask_for_capacity {
    ($input:expr; $($module:ident :: $ty:ident),+ $(,)?) => {
        $(
            if let Some(i) = $input.downcast_mut::<op::$module::$ty>() {
                i.return_consumed_capacity = Some(ReturnConsumedCapacity::Indexes);
            }
        )+
    };
}

impl Intercept for CapacityMeter {
    fn name(&self) -> &'static str {
        "CapacityMeter"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let input = context.input_mut();
        ask_for_capacity!(input;
            put_item::PutItemInput,
            update_item::UpdateItemInput,
            delete_item::DeleteItemInput,
            get_item::GetItemInput,
            query::QueryInput,
            scan::ScanInput,
            batch_write_item::BatchWriteItemInput,
            batch_get_item::BatchGetItemInput,
            transact_write_items::TransactWriteItemsInput,
            transact_get_items::TransactGetItemsInput,
        );
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let output = match context.output_or_error() {
            Ok(output) => output,
            Err(_) => {
                self.record(|t| t.refused_writes += 1);
                return Ok(());
            }
        };
        let mut seen: Vec<(&'static str, bool, Vec<ConsumedCapacity>)> = Vec::new();
        if let Some(o) = output.downcast_ref::<op::put_item::PutItemOutput>() {
            seen.push(("PutItem", true, o.consumed_capacity.iter().cloned().collect()));
        } else if let Some(o) = output.downcast_ref::<op::update_item::UpdateItemOutput>() {
            seen.push(("UpdateItem", true, o.consumed_capacity.iter().cloned().collect()));
        } else if let Some(o) = output.downcast_ref::<op::delete_item::DeleteItemOutput>() {
            seen.push(("DeleteItem", true, o.consumed_capacity.iter().cloned().collect()));
        } else if let Some(o) = output.downcast_ref::<op::get_item::GetItemOutput>() {
            seen.push(("GetItem", false, o.consumed_capacity.iter().cloned().collect()));
        } else if let Some(o) = output.downcast_ref::<op::query::QueryOutput>() {
            seen.push(("Query", false, o.consumed_capacity.iter().cloned().collect()));
        } else if let Some(o) = output.downcast_ref::<op::scan::ScanOutput>() {
            seen.push(("Scan", false, o.consumed_capacity.iter().cloned().collect()));
        } else if let Some(o) = output.downcast_ref::<op::batch_write_item::BatchWriteItemOutput>() {
            seen.push(("BatchWriteItem", true, o.consumed_capacity.clone().unwrap_or_default()));
        } else if let Some(o) = output.downcast_ref::<op::batch_get_item::BatchGetItemOutput>() {
            seen.push(("BatchGetItem", false, o.consumed_capacity.clone().unwrap_or_default()));
        } else if let Some(o) = output.downcast_ref::<op::transact_write_items::TransactWriteItemsOutput>() {
            seen.push(("TransactWriteItems", true, o.consumed_capacity.clone().unwrap_or_default()));
        } else if let Some(o) = output.downcast_ref::<op::transact_get_items::TransactGetItemsOutput>() {
            seen.push(("TransactGetItems", false, o.consumed_capacity.clone().unwrap_or_default()));
        }
        self.record(|t| {
            for (name, write, caps) in &seen {
                *t.calls.entry(name).or_default() += 1;
                for c in caps {
                    t.add(c, *write);
                }
            }
        });
        Ok(())
    }
}
