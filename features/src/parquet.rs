//! Materializing from Parquet: read row group by row group through the `parquet` crate's row
//! API (no Arrow), so memory stays at about one row group whatever the file's size. The entity
//! key may be a string or an integer column; features are numbers or booleans, nulls missing.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use ::parquet::file::reader::{FileReader, SerializedFileReader};
use ::parquet::record::Field;
use ferry_api::features::{FeatureDtype, FeatureViewRecord};
use ferry_api::skew::OfflineSample;

use crate::encoding::Value;
use crate::materialize::{MaterializeError, Sink, view_columns};

/// Whether `path` is a Parquet file: it starts with the `PAR1` magic.
pub(crate) fn is_parquet(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"PAR1")
}

/// Reads every row of the file at `path` into `sink`; the sample. `line` in errors is the row
/// number, from 1.
pub(crate) fn read(
    view: &FeatureViewRecord,
    path: &Path,
    mut sink: Sink<'_>,
) -> Result<OfflineSample, MaterializeError> {
    let file =
        File::open(path).map_err(|e| MaterializeError::Read(format!("{}: {e}", path.display())))?;
    let reader = SerializedFileReader::new(file).map_err(|e| {
        MaterializeError::Read(format!("{} is not readable Parquet: {e}", path.display()))
    })?;
    let fields = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema()
        .get_fields()
        .to_vec();
    let (entity, columns) = view_columns(view, fields.iter().map(|f| f.name()))?;
    let dtypes: Vec<FeatureDtype> = sink.dtypes().to_vec();
    let mut values = Vec::with_capacity(columns.len());
    let mut line = 0u64;
    for row in reader.into_iter() {
        line += 1;
        let row = row.map_err(|e| MaterializeError::Row {
            line,
            problem: format!("cannot be read: {e}"),
        })?;
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, f)| f).collect();
        let key = match fields.get(entity) {
            Some(Field::Str(s)) => s.clone(),
            Some(Field::Int(n)) => n.to_string(),
            Some(Field::Long(n)) => n.to_string(),
            Some(Field::UInt(n)) => n.to_string(),
            Some(Field::ULong(n)) => n.to_string(),
            other => {
                return Err(MaterializeError::Row {
                    line,
                    problem: format!(
                        "the entity key `{}` must be a string or an integer, got {}",
                        view.spec.entity,
                        other.map_or_else(|| "nothing".to_string(), |f| f.to_string())
                    ),
                });
            }
        };
        values.clear();
        for (i, col) in columns.iter().enumerate() {
            let field = fields.get(*col).copied().unwrap_or(&Field::Null);
            let value = value(field, dtypes[i]).map_err(|got| MaterializeError::Row {
                line,
                problem: format!(
                    "column `{}`: {got} is not {}",
                    view.spec.features[i].name,
                    dtypes[i].as_str()
                ),
            })?;
            values.push(value);
        }
        if !sink.push(line, &key, &values)? {
            return Ok(OfflineSample::default());
        }
    }
    Ok(sink.finish())
}

/// A cell as a value of `dtype` (`None` for null); the cell's text when it is not one.
fn value(field: &Field, dtype: FeatureDtype) -> Result<Option<Value>, String> {
    let float = matches!(dtype, FeatureDtype::Fp32 | FeatureDtype::Fp64);
    Ok(Some(match field {
        Field::Null => return Ok(None),
        Field::Bool(b) if dtype == FeatureDtype::Bool => Value::Bool(*b),
        Field::Byte(x) => Value::Int(i64::from(*x)),
        Field::Short(x) => Value::Int(i64::from(*x)),
        Field::Int(x) => Value::Int(i64::from(*x)),
        Field::Long(x) => Value::Int(*x),
        Field::UByte(x) => Value::Int(i64::from(*x)),
        Field::UShort(x) => Value::Int(i64::from(*x)),
        Field::UInt(x) => Value::Int(i64::from(*x)),
        Field::Float(x) if float => Value::Float(f64::from(*x)),
        Field::Double(x) if float => Value::Float(*x),
        other => return Err(other.to_string()),
    }))
    .and_then(|v| match (v, dtype) {
        // Integers are what INT32 must hold.
        (Some(Value::Int(n)), FeatureDtype::Int32) if i32::try_from(n).is_err() => {
            Err(n.to_string())
        }
        (Some(Value::Int(n)), FeatureDtype::Bool) if n != 0 && n != 1 => Err(n.to_string()),
        _ => Ok(v),
    })
}
