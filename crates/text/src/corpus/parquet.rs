//! Parquet files: one document per row, from a named top-level string column. The
//! column is read page by page with the low-level column reader, so only that one
//! column is decoded and a row group never has to be materialised as records.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::Type as PhysicalType;
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::{Document, Position, Source};
use crate::error::{Result, TextError};

/// Rows decoded per call; small enough to keep the buffers modest for long texts.
const ROWS_PER_READ: usize = 256;

/// Streams one document per row to `emit`; returns the number of null rows.
pub(super) fn read(
    path: &Arc<Path>,
    column: &str,
    emit: &mut dyn FnMut(Document) -> Result<()>,
) -> Result<u64> {
    let parquet_err = |row_group: Option<usize>| {
        move |e: parquet::errors::ParquetError| TextError::Parquet {
            path: path.to_path_buf(),
            row_group,
            message: e.to_string(),
        }
    };
    let file = File::open(path).map_err(|e| TextError::read(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(parquet_err(None))?;
    let meta = reader.metadata();
    let schema = meta.file_metadata().schema_descr();
    let Some(index) = schema
        .columns()
        .iter()
        .position(|c| c.path().parts().len() == 1 && c.name() == column)
    else {
        let available: Vec<String> = schema
            .columns()
            .iter()
            .map(|c| format!("\"{}\"", c.path().string()))
            .collect();
        return Err(TextError::ParquetNoColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            available: available.join(", "),
        });
    };
    let descr = schema.column(index);
    if descr.physical_type() != PhysicalType::BYTE_ARRAY || descr.max_rep_level() > 0 {
        let found = if descr.max_rep_level() > 0 {
            format!("repeated {} values", descr.physical_type())
        } else {
            format!("{} values", descr.physical_type())
        };
        return Err(TextError::ParquetColumnType {
            path: path.to_path_buf(),
            column: column.to_string(),
            found,
        });
    }
    let max_def = descr.max_def_level();

    let mut row = 0u64;
    let mut nulls = 0u64;
    let mut bytes_read = 0u64;
    let mut values: Vec<ByteArray> = Vec::with_capacity(ROWS_PER_READ);
    let mut defs: Vec<i16> = Vec::with_capacity(ROWS_PER_READ);
    for group in 0..reader.num_row_groups() {
        let err = parquet_err(Some(group));
        let group_reader = reader.get_row_group(group).map_err(&err)?;
        let group_bytes = meta.row_group(group).compressed_size().max(0) as u64;
        let ColumnReader::ByteArrayColumnReader(mut col) =
            group_reader.get_column_reader(index).map_err(&err)?
        else {
            return Err(TextError::ParquetColumnType {
                path: path.to_path_buf(),
                column: column.to_string(),
                found: "non-byte-array values".to_string(),
            });
        };
        loop {
            values.clear();
            defs.clear();
            let def_levels = if max_def > 0 { Some(&mut defs) } else { None };
            let (records, _, _) = col
                .read_records(ROWS_PER_READ, def_levels, None, &mut values)
                .map_err(&err)?;
            if records == 0 {
                break;
            }
            let mut next_value = values.drain(..);
            for i in 0..records {
                let present = max_def == 0 || defs.get(i) == Some(&max_def);
                let value = if present { next_value.next() } else { None };
                let Some(value) = value else {
                    nulls += 1;
                    row += 1;
                    continue;
                };
                let text = String::from_utf8(value.data().to_vec()).map_err(|e| {
                    TextError::ParquetNotUtf8 {
                        path: path.to_path_buf(),
                        column: column.to_string(),
                        row_group: group,
                        row,
                        offset: e.utf8_error().valid_up_to(),
                    }
                })?;
                emit(Document {
                    text,
                    source: Source {
                        path: path.clone(),
                        position: Position::Row {
                            row_group: group,
                            row,
                        },
                    },
                    file_bytes_read: bytes_read,
                })?;
                row += 1;
            }
        }
        bytes_read += group_bytes;
    }
    Ok(nulls)
}
