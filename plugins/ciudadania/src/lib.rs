//! AGETIC ciudadania plugin for Chasqui (being written).
