#[cfg(feature = "python")]
#[pyo3::pymodule]
mod router_core {
    #[pyo3::pyfunction]
    fn hello() -> u32 { 1 }
}
