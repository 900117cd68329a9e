//! AGETIC ppe plugin for Chasqui (being written).
