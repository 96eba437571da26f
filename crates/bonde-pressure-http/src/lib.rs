//! bonde-pressure http adapter (placeholder until its issue lands).
