//! The benchmark matrix: one result schema to table, CSV, JSON, plots and outputs.md.
