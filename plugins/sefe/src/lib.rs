//! AGETIC sefe plugin for Chasqui (being written).
