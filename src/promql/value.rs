//! The values PromQL expressions evaluate to.

use std::sync::Arc;

use crate::model::{Labels, Sample, Timestamp};

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct VSample {
    pub labels: Arc<Labels>,
    pub t: Timestamp,
    pub v: f64,
}

/// A series with its points, for matrices and range query results.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Arc<Labels>,
    pub samples: Vec<Sample>,
}

/// A query result or an intermediate value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar { t: Timestamp, v: f64 },
    String { t: Timestamp, s: String },
    Vector(Vec<VSample>),
    Matrix(Vec<Series>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar { .. } => "scalar",
            Value::String { .. } => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}
