//! AGETIC cgii plugin for Chasqui (being written).
