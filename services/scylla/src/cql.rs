//! CQL helpers shared by the store and the migration runner (which the
//! store calls, so they cannot live in either).

use scylla::response::query_result::QueryResult;

/// Whether a conditional write applied (the `[applied]` column).
pub fn lwt_applied(result: QueryResult) -> Result<bool, String> {
    let rows = result.into_rows_result().map_err(|e| e.to_string())?;
    let row: scylla::value::Row = rows.first_row().map_err(|e| e.to_string())?;
    Ok(matches!(
        row.columns.first(),
        Some(Some(scylla::value::CqlValue::Boolean(true)))
    ))
}
