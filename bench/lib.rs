//! Criterion micro-benchmarks live in `benches/`; the load harness that
//! compares Chasqui with nginx is `run.sh`. This library is empty.
