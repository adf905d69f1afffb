//! Output formats shared by every command: a human table, JSON, or YAML.

use anyhow::Result;
use serde::Serialize;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// Print a machine-readable document in the chosen format; `false` for `Table`, which the
/// caller prints itself.
pub fn print_structured<T: Serialize>(format: Format, value: &T) -> Result<bool> {
    match format {
        Format::Table => Ok(false),
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(value)?);
            Ok(true)
        }
        Format::Yaml => {
            print!("{}", serde_yaml_ng::to_string(value)?);
            Ok(true)
        }
    }
}

/// A plain, borderless table with a header row, in the style of `kubectl get`.
pub fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header);
    for i in 0..N {
        if let Some(column) = table.column_mut(i) {
            column.set_padding((0, 2));
        }
    }
    table
}

/// Print a table without the padding at the end of each line.
pub fn print_table(table: &comfy_table::Table) {
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
}
